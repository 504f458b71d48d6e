//! One answer per question: the requests about the queue are answered here,
//! from an [`Outbox`], both by the daemon for its socket clients and by the
//! commands when no daemon runs. What they print is rendered from the same
//! [`Answer`](super::answer::Answer), so a command prints the same thing and exits the same way
//! with or without a daemon.

use super::answer::{Answer, QueueBounds, QueueListing, ShownEntry, StatusReport};
use super::protocol::Request;
use crate::config::Config;
use crate::model::rules::broken_rules;
use crate::model::{ErrorCode, Failure};
use crate::queue::outbox::Outbox;

/// The queue's part of `status`, and the clock's; the daemon adds its
/// [`DaemonState`].
pub fn status(outbox: &Outbox, state_dir: &std::path::Path) -> StatusReport {
    let broken = outbox
        .list()
        .map(|entries| broken_rules(&entries))
        .unwrap_or_default();
    StatusReport {
        daemon: "not running".into(),
        queue: outbox.usage(),
        rule_violations: broken,
        storage_salvage: outbox.last_salvage(),
        clock_warning: crate::cloud::timefloor::TimeFloor::in_state_dir(
            state_dir,
            std::sync::Arc::new(crate::clock::SystemClock),
        )
        .warning(),
        persons: outbox.ledger().persons().ok(),
        state: None,
    }
}

/// Answers a request about the queue; `None` for the requests only the
/// daemon answers (enroll, arm, cancel, drain, and the daemon's status).
pub fn handle(outbox: &Outbox, cfg: &Config, req: &Request) -> Option<Result<Answer, Failure>> {
    let answer = match req {
        Request::QueueList {} => outbox.list().map(|entries| {
            Answer::Queue(Box::new(QueueListing {
                usage: outbox.usage(),
                limits: QueueBounds {
                    max_entries: cfg.queue.max_entries,
                    max_bytes: cfg.queue.max_bytes,
                },
                rule_violations: broken_rules(&entries),
                entries,
            }))
        }),
        Request::QueueShow { id } => outbox.get(*id).map(|e| {
            let consent_record = e.consent.as_ref().map(|c| {
                outbox
                    .open_consent(e.id, c)
                    .map_err(|x| x.to_string())
                    .into()
            });
            Answer::Entry(Box::new(ShownEntry {
                entry: e,
                consent_record,
            }))
        }),
        Request::Retry { id } => outbox.retry(*id).map(|e| Answer::Retried { retried: e.id }),
        Request::Purge { id, dead } => match (id, dead) {
            (Some(id), false) => outbox
                .purge(*id)
                .map(|e| Answer::Purged { purged: vec![e.id] }),
            (None, true) => outbox.purge_dead().map(|purged| Answer::Purged { purged }),
            _ => {
                return Some(Err(Failure::new(
                    ErrorCode::InvalidRequest,
                    "purge takes an id, or dead: true",
                )))
            }
        },
        Request::QueueReceipts {} => outbox
            .receipts()
            .map(|receipts| Answer::Receipts { receipts }),
        Request::QueueCheck {} => outbox.check().map(|r| Answer::Health(Box::new(r))),
        Request::Forget { person } => {
            // An id no vendor takes was never enrolled: say why, as enroll would.
            let valid = crate::model::Provider::ALL
                .iter()
                .any(|p| p.check_person_id(person).is_ok());
            if let (false, Err(e)) = (valid, cfg.upload.provider.check_person_id(person)) {
                return Some(Err(Failure::new(e.code(), format!("invalid {e}"))));
            }
            outbox
                .forget(person)
                .map(|r| Answer::Forgotten(Box::new(r)))
        }
        Request::Ledger { person, since_ms } => {
            let filter = crate::queue::ledger::LedgerFilter {
                person: person.clone(),
                since_ms: *since_ms,
            };
            return Some(
                outbox
                    .ledger()
                    .read(&filter)
                    .map(|r| Answer::Ledger(Box::new(r)))
                    .map_err(|e| {
                        Failure::new(
                            ErrorCode::StorageError,
                            format!("{}: {e}", outbox.ledger().path().display()),
                        )
                    }),
            );
        }
        Request::Status {}
        | Request::Enroll { .. }
        | Request::Arm { .. }
        | Request::Cancel {}
        | Request::Drain {} => return None,
    };
    Some(answer.map_err(Failure::from))
}
