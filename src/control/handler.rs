//! One answer per question: the requests about the queue are answered here,
//! from an [`Outbox`], both by the daemon for its socket clients and by the
//! commands when no daemon runs. What they print is rendered from the same
//! [`Answer`], so a command prints the same thing and exits the same way
//! with or without a daemon.

use super::protocol::Request;
use crate::capture::enroll::EnrollOutcome;
use crate::config::Config;
use crate::model::rules::{broken_rules, BrokenRule};
use crate::model::Provider;
use crate::model::{Enrollment, Receipt};
use crate::model::{ErrorCode, Failure};
use crate::queue::drain::DrainSummary;
use crate::queue::outbox::{HealthReport, Outbox, SalvageReport, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The configured bounds of the queue, shown with its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueBounds {
    pub max_entries: u64,
    pub max_bytes: u64,
}

/// `queue list`: every entry, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueListing {
    pub usage: Usage,
    pub limits: QueueBounds,
    /// Live entries the next drain will turn dead unsent.
    pub rule_violations: Vec<BrokenRule>,
    pub entries: Vec<Enrollment>,
}

/// A person armed for the next button press.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    pub person: String,
    pub expires_in_s: u64,
}

/// What only a running daemon knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    pub enrolling: bool,
    pub armed: Option<Armed>,
    pub last_result: String,
    pub last_drain: Option<DrainSummary>,
    /// Cloud time minus device time, as measured from answers.
    pub clock_skew_ms: i64,
    pub provider: Provider,
}

/// `status`: the queue, and the daemon's state when one runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `"running"` or `"not running"`.
    pub daemon: String,
    pub queue: Usage,
    pub rule_violations: Vec<BrokenRule>,
    pub storage_salvage: Option<SalvageReport>,
    /// Set while the wall clock is before the trusted time floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_warning: Option<String>,
    /// Present when the daemon runs.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DaemonState>,
}

impl StatusReport {
    pub fn running(&self) -> bool {
        self.state.is_some()
    }
}

/// The answer to a request, as the daemon sends it (`result`) and as the
/// commands render it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<StatusReport>),
    Queue(Box<QueueListing>),
    Entry(Box<Enrollment>),
    Retried {
        retried: u64,
    },
    Purged {
        purged: Vec<u64>,
    },
    Receipts {
        receipts: Vec<Receipt>,
    },
    Health(Box<HealthReport>),
    Drained(Box<DrainSummary>),
    /// An enrollment was queued: see [`enrolled`].
    Enrolled(Value),
    /// An enrollment was rejected: the whole outcome, every frame's report
    /// with it (`enroll --json`, with or without a daemon; exit 3).
    Rejected(Value),
    /// Answers with no fixed shape yet (arm, cancel).
    Other(Value),
}

impl Answer {
    /// Reads the `result` of an answer to `req`.
    pub fn from_result(req: &Request, result: Value) -> Result<Answer, Failure> {
        let bad = |e: serde_json::Error| {
            Failure::new(
                ErrorCode::Internal,
                format!("the daemon's answer cannot be read: {e}"),
            )
        };
        Ok(match req {
            Request::Status {} => {
                Answer::Status(Box::new(serde_json::from_value(result).map_err(bad)?))
            }
            Request::QueueList {} => {
                Answer::Queue(Box::new(serde_json::from_value(result).map_err(bad)?))
            }
            Request::QueueShow { .. } => {
                Answer::Entry(Box::new(serde_json::from_value(result).map_err(bad)?))
            }
            Request::QueueCheck {} => {
                Answer::Health(Box::new(serde_json::from_value(result).map_err(bad)?))
            }
            Request::Drain {} => {
                Answer::Drained(Box::new(serde_json::from_value(result).map_err(bad)?))
            }
            Request::Retry { .. } | Request::Purge { .. } | Request::QueueReceipts {} => {
                serde_json::from_value::<Plain>(result).map_err(bad)?.into()
            }
            Request::Enroll { .. } => Answer::Enrolled(result),
            Request::Arm { .. } | Request::Cancel {} => Answer::Other(result),
        })
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The answers that are one field, read back.
#[derive(Deserialize)]
#[serde(untagged)]
enum Plain {
    Retried { retried: u64 },
    Purged { purged: Vec<u64> },
    Receipts { receipts: Vec<Receipt> },
}

impl From<Plain> for Answer {
    fn from(p: Plain) -> Answer {
        match p {
            Plain::Retried { retried } => Answer::Retried { retried },
            Plain::Purged { purged } => Answer::Purged { purged },
            Plain::Receipts { receipts } => Answer::Receipts { receipts },
        }
    }
}

/// The answer to an enrollment that was queued: the whole outcome (entry,
/// images, the report of every frame) with `queued` (the entry's id) and
/// `person` on top. `None` for a rejection, which is an error.
pub fn enrolled(outcome: &EnrollOutcome) -> Option<Answer> {
    let EnrollOutcome::Queued { entry, .. } = outcome else {
        return None;
    };
    let mut value = serde_json::to_value(outcome).ok()?;
    if let Value::Object(map) = &mut value {
        map.insert("queued".into(), entry.id.into());
        map.insert("person".into(), entry.person_id.clone().into());
    }
    Some(Answer::Enrolled(value))
}

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
        Request::QueueShow { id } => outbox.get(*id).map(|e| Answer::Entry(Box::new(e))),
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
        Request::Status {}
        | Request::Enroll { .. }
        | Request::Arm { .. }
        | Request::Cancel {}
        | Request::Drain {} => return None,
    };
    Some(answer.map_err(Failure::from))
}
