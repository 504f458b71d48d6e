//! One renderer: an [`Answer`] becomes text for a technician or one JSON
//! document for a script, and an exit code. The same answer prints the same
//! whether the daemon or the command itself produced it.

use enrolld::capture::enroll::EnrollOutcome;
use enrolld::clock::rfc3339;
use enrolld::config::Config;
use enrolld::control::answer::{Answer, Enrolled, OpenedConsent, StatusReport, UploadFollowed};
use enrolld::model::rules::BrokenRule;
use enrolld::model::{exit, ErrorCode};
use enrolld::model::{ConsentVia, Enrollment, EntryState, Provider};
use enrolld::queue::drain::{DrainSummary, EntryReport};
use enrolld::queue::ledger::{LedgerEvent, LedgerRead};
use enrolld::queue::outbox::ForgetReport;
use enrolld::queue::outbox::{HealthReport, SalvageReport};

/// Prints `answer` on stdout and returns the command's exit code.
pub fn render(answer: &Answer, cfg: &Config, json: bool) -> u8 {
    if json {
        println!("{}", json_text(answer, cfg));
    } else {
        print!("{}", text(answer, cfg));
    }
    exit_code(answer)
}

/// The `--json` form of `answer`: the answer as the socket carries it. A
/// failing exit has an error's shape too (`status` with no daemon).
pub fn json_text(answer: &Answer, cfg: &Config) -> String {
    #[derive(serde::Serialize)]
    struct Failing<'a> {
        #[serde(flatten)]
        answer: &'a Answer,
        error: ErrorCode,
        message: String,
    }
    let text = match answer {
        Answer::Status(s) if !s.running() => serde_json::to_string(&Failing {
            answer,
            error: ErrorCode::NotRunning,
            message: not_running(cfg),
        }),
        _ => serde_json::to_string(answer),
    };
    text.unwrap_or_else(|e| {
        format!(r#"{{"error":"internal","message":"the answer cannot be printed: {e}"}}"#)
    })
}

/// Why `status` fails when no daemon runs.
pub fn not_running(cfg: &Config) -> String {
    format!("no daemon answers on {}", cfg.control.socket.display())
}

/// The exit code of a command that got `answer`.
pub fn exit_code(answer: &Answer) -> u8 {
    match answer {
        Answer::Status(s) if !s.running() => exit::FAILURE,
        Answer::Health(h) if !h.problems.is_empty() => exit::FAILURE,
        Answer::Drained(s) => drain_exit(s),
        Answer::Rejected(_) => exit::REJECTED,
        _ => exit::OK,
    }
}

fn drain_exit(s: &DrainSummary) -> u8 {
    if !s.paused.is_empty() {
        exit::PAUSED
    } else if s.dead > 0 {
        exit::DEAD
    } else if s.retried > 0 || s.pending_failed > 0 {
        // Pending entries that have not failed (not due yet, or queued
        // during the pass) are no failure.
        exit::RETRY_PENDING
    } else {
        exit::OK
    }
}

/// The text form of `answer`, each line ending in a newline.
pub fn text(answer: &Answer, cfg: &Config) -> String {
    let mut out = Vec::new();
    match answer {
        Answer::Status(s) => status(&mut out, s, cfg),
        Answer::Queue(q) => {
            let u = &q.usage;
            out.push(format!(
                "{} entries ({} pending, {} in flight, {} dead), {} of {} bytes",
                u.entries, u.pending, u.in_flight, u.dead, u.bytes, q.limits.max_bytes
            ));
            if u.corrupt > 0 {
                out.push(format!("{} unreadable record(s) left in place", u.corrupt));
            }
            out.extend(q.entries.iter().map(entry_line));
            broken_rules(&mut out, &q.rule_violations);
        }
        Answer::Entry(e) => {
            out.push(serde_json::to_string_pretty(e).unwrap_or_default());
            out.push(format!("created {}", rfc3339(e.entry.created_at_ms)));
            if let Some(OpenedConsent::Record(c)) = &e.consent_record {
                out.push(format!(
                    "consent {:?} given {} ({}) for {} group {:?}",
                    c.reference,
                    rfc3339(c.at_ms),
                    via(&c.via),
                    c.scope.provider,
                    c.scope.group
                ));
            }
        }
        Answer::Forgotten(r) => out.push(format!(
            "person {:?}: {} entr(ies) destroyed on the device; cloud deletes queued: {}",
            r.person,
            r.destroyed.len() + r.in_flight.len(),
            r.cloud.len()
        )),
        Answer::Ledger(l) => ledger(&mut out, l),
        Answer::Retried { retried } => out.push(format!("entry {retried} is pending and due now")),
        Answer::Purged { purged } => out.push(match purged.as_slice() {
            [id] => format!("purged entry {id} and its images"),
            ids => format!(
                "purged {} entr{}",
                ids.len(),
                if ids.len() == 1 { "y" } else { "ies" }
            ),
        }),
        Answer::Receipts { receipts } => {
            out.push(format!("{} receipt(s)", receipts.len()));
            out.extend(receipts.iter().map(|r| {
                format!(
                    "{:>8}  uploaded {}  {:<8} {}  face {}",
                    r.id,
                    rfc3339(r.uploaded_at_ms),
                    r.provider,
                    r.person_id,
                    r.face_ids.join(",")
                )
            }));
        }
        Answer::Health(h) => health(&mut out, h),
        Answer::Drained(s) => drained(&mut out, s),
        Answer::Enrolled(e) => out.push(enrolled(e)),
        Answer::Followed(f) => out.push(followed(f)),
        Answer::Rejected(outcome) => {
            if let EnrollOutcome::Rejected { reason, advice, .. } = &**outcome {
                out.push(format!("rejected: {reason}: {advice}"));
            }
        }
        Answer::Armed {
            armed,
            expires_in_s,
        } => out.push(format!(
            "armed: the next button press within {expires_in_s} s enrolls {armed}"
        )),
        Answer::Cancelled {
            cancelled_enrollment,
            disarmed,
        } => {
            out.push(if *cancelled_enrollment {
                "cancelled the enrollment in progress".to_string()
            } else {
                "no enrollment was in progress".to_string()
            });
            if let Some(person) = disarmed {
                out.push(format!("disarmed: the button no longer enrolls {person}"));
            }
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn via(v: &ConsentVia) -> String {
    match v {
        ConsentVia::CommandLine { uid } => format!("command line, uid {uid}"),
        ConsentVia::Socket { uid } => format!("control socket, uid {uid}"),
        ConsentVia::Button => "button press".into(),
    }
}

fn ledger(out: &mut Vec<String>, l: &LedgerRead) {
    out.push(format!(
        "{} record(s), {} distinct person(s) in the ledger",
        l.records.len(),
        l.persons
    ));
    if l.left_out > 0 {
        out.push(format!(
            "{} older matching record(s) left out (narrow with --person or --since)",
            l.left_out
        ));
    }
    if l.unreadable > 0 {
        out.push(format!(
            "{} damaged record(s) cannot be read; the others are intact",
            l.unreadable
        ));
    }
    for r in &l.records {
        let what = match &r.event {
            LedgerEvent::ConsentGiven { consent } => format!(
                "consent {:?} ({}) for {} group {:?}",
                consent.reference,
                via(&consent.via),
                consent.scope.provider,
                consent.scope.group
            ),
            LedgerEvent::Queued { images } => format!("queued, {images} image(s)"),
            LedgerEvent::Uploaded { face_ids } => format!("uploaded: face {}", face_ids.join(",")),
            LedgerEvent::Dead { code, reason } => format!("dead: {code} {reason}"),
            LedgerEvent::Purged { why } => format!("purged ({why})"),
            LedgerEvent::Withdrawn { destroyed, cloud } => format!(
                "withdrawn: {} entr(ies) destroyed on the device; cloud deletes for {}",
                destroyed.len(),
                if cloud.is_empty() {
                    "none (nothing was uploaded)".to_string()
                } else {
                    cloud
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            LedgerEvent::DeletedInCloud { how, face_ids } => {
                format!("deleted in the cloud ({how}): face {}", face_ids.join(","))
            }
            LedgerEvent::DeleteByHand { how, .. } => format!("delete by hand: {how}"),
        };
        out.push(format!(
            "{}  {:<8} {:<16} {}{}",
            rfc3339(r.at_ms),
            r.provider.map_or("-", |p| p.as_str()),
            r.person,
            r.entry.map_or(String::new(), |e| format!("entry {e}: ")),
            what
        ));
    }
}

/// What became of one vendor's delete, after `person forget`'s drain pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CloudOutcome {
    pub provider: Provider,
    pub entry: u64,
    /// `deleted`, `pending` (queued; the drain retries it) or `by_hand`.
    pub state: &'static str,
    pub how: String,
    pub face_ids: Vec<String>,
}

/// `person forget`'s whole answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetOutcome {
    #[serde(flatten)]
    pub device: ForgetReport,
    pub cloud_outcome: Vec<CloudOutcome>,
}

/// Joins the withdrawal's report with what the ledger says of each delete.
pub fn forget_outcome(device: ForgetReport, ledger: &LedgerRead) -> ForgetOutcome {
    let cloud_outcome = device
        .cloud
        .iter()
        .map(|d| {
            let done = ledger.records.iter().rev().find_map(|r| {
                (r.entry == Some(d.entry))
                    .then_some(&r.event)
                    .and_then(|e| match e {
                        LedgerEvent::DeletedInCloud { how, face_ids } => {
                            Some(("deleted", how.clone(), face_ids.clone()))
                        }
                        LedgerEvent::DeleteByHand { how, face_ids } => {
                            Some(("by_hand", how.clone(), face_ids.clone()))
                        }
                        _ => None,
                    })
            });
            let (state, how, face_ids) = done.unwrap_or((
                "pending",
                format!(
                    "queued as entry {}: the drain sends it, with retries (enrolld queue show {})",
                    d.entry, d.entry
                ),
                Vec::new(),
            ));
            CloudOutcome {
                provider: d.provider,
                entry: d.entry,
                state,
                how,
                face_ids,
            }
        })
        .collect();
    ForgetOutcome {
        device,
        cloud_outcome,
    }
}

/// Prints `person forget`'s outcome; exit 0 when the cloud side is done,
/// 7 when a delete is pending, 11 when faces must be deleted by hand.
pub fn render_forget(o: &ForgetOutcome, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::to_string(o).unwrap_or_else(|e| format!(
                r#"{{"error":"internal","message":"the answer cannot be printed: {e}"}}"#
            ))
        );
    } else {
        let d = &o.device;
        let mut destroyed: Vec<u64> = d.destroyed.clone();
        destroyed.extend(&d.in_flight);
        println!(
            "person {:?} withdrawn: {} on this device",
            d.person,
            if destroyed.is_empty() {
                "nothing was queued".to_string()
            } else {
                format!(
                    "entr(ies) {} destroyed with their images",
                    destroyed
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        if o.cloud_outcome.is_empty() {
            println!("cloud: nothing of this person was uploaded from this device");
        }
        for c in &o.cloud_outcome {
            println!(
                "{}: {}: {}",
                c.provider,
                match c.state {
                    "deleted" => "deleted in the cloud",
                    "by_hand" => "DELETE BY HAND",
                    _ => "delete pending",
                },
                c.how
            );
        }
    }
    if o.cloud_outcome.iter().any(|c| c.state == "pending") {
        exit::RETRY_PENDING
    } else if o.cloud_outcome.iter().any(|c| c.state == "by_hand") {
        exit::MANUAL
    } else {
        exit::OK
    }
}

/// "queued enrollment 7 for person "p" (jd, 1 image(s): 380x380 31522 bytes q92)".
fn enrolled(e: &Enrolled) -> String {
    let EnrollOutcome::Queued { entry, images, .. } = &e.outcome else {
        return format!("queued enrollment {} for person {:?}", e.queued, e.person);
    };
    let sizes: Vec<String> = images
        .iter()
        .map(|i| format!("{}x{} {} bytes q{}", i.width, i.height, i.len, i.quality))
        .collect();
    format!(
        "queued enrollment {} for person {:?} ({}, {} image(s): {})",
        e.queued,
        e.person,
        entry.provider,
        sizes.len(),
        sizes.join(", ")
    )
}

/// The end of an enrollment whose upload was followed.
fn followed(f: &UploadFollowed) -> String {
    if f.uploaded {
        format!("entry {} uploaded: face {}", f.queued, f.face_ids.join(","))
    } else {
        format!(
            "entry {} is queued; its upload was not confirmed in time (see `enrolld queue show {}`)",
            f.queued, f.queued
        )
    }
}

fn status(out: &mut Vec<String>, s: &StatusReport, cfg: &Config) {
    match &s.state {
        None => out.push(format!(
            "daemon: not running ({} does not answer)",
            cfg.control.socket.display()
        )),
        Some(d) => {
            out.push(format!("daemon: running, uploads to {}", d.provider));
            out.push(format!(
                "enrolling: {}",
                if d.enrolling { "yes" } else { "no" }
            ));
            if let Some(a) = &d.armed {
                out.push(format!(
                    "armed: {} (for {} s more)",
                    a.person, a.expires_in_s
                ));
            }
            out.push(format!("last result: {}", d.last_result));
            if let Some(last) = &d.last_drain {
                let mut lines = drain_lines(last).into_iter();
                if let Some(counts) = lines.next() {
                    out.push(format!("last drain: {counts}"));
                }
                out.extend(lines);
            }
            if d.clock_skew_ms != 0 {
                out.push(format!(
                    "clock: the cloud's time is {:+} s from this device's",
                    d.clock_skew_ms / 1000
                ));
            }
        }
    }
    if let Some(w) = &s.clock_warning {
        out.push(format!("clock: {w}"));
    }
    let u = &s.queue;
    out.push(format!(
        "queue: {} pending, {} in flight, {} dead, {} bytes",
        u.pending, u.in_flight, u.dead, u.bytes
    ));
    if let Some(n) = s.persons {
        out.push(format!("persons: {n} in the ledger (enrolld ledger)"));
    }
    broken_rules(out, &s.rule_violations);
    if let Some(salvage) = &s.storage_salvage {
        out.push(salvage_line(salvage));
    }
}

fn health(out: &mut Vec<String>, h: &HealthReport) {
    out.push(format!(
        "{} entries: {} intact (store and spool copy), {} with problems; {} receipts",
        h.entries,
        h.healthy,
        h.problems.len(),
        h.receipts
    ));
    out.extend(h.problems.iter().map(|p| format!("problem: {p}")));
    if let Some(s) = &h.last_salvage {
        out.push(salvage_line(s));
    }
}

/// A pass's counts, then one line per paused provider.
fn drain_lines(s: &DrainSummary) -> Vec<String> {
    let mut lines = vec![format!(
        "uploaded {}, will retry {}, dead {}, still pending {}",
        s.uploaded, s.retried, s.dead, s.pending
    )];
    lines.extend(s.paused.iter().map(|p| {
        format!(
            "paused: uploads to {} stopped: {} {} (since {}; checked again by itself at {}, or now with `enrolld drain`)",
            p.provider,
            p.code,
            p.message,
            rfc3339(p.since_ms),
            rfc3339(p.next_check_ms)
        )
    }));
    lines
}

fn drained(out: &mut Vec<String>, s: &DrainSummary) {
    for line in drain_lines(s) {
        let paused = line.starts_with("paused: ");
        out.push(line);
        if paused {
            out.push("        fix the cause (credentials, billing, clock, CA), then run `enrolld drain` again; nothing was dropped".into());
        }
    }
    for f in &s.failures {
        out.push(format!(
            "  entry {}: {} ({}) {}",
            f.id,
            f.code,
            f.class.as_str(),
            f.message
        ));
    }
    if let Some(t) = s.next_due_ms {
        out.push(format!("next attempt due {}", rfc3339(t)));
    }
    if s.clock_skew_ms != 0 {
        out.push(format!(
            "clock: the cloud's time is {:+} s from this device's; requests were signed with the cloud's time",
            s.clock_skew_ms / 1000
        ));
    }
    if s.dead_expired > 0 {
        out.push(format!(
            "{} dead entr(ies) expired (queue.dead_retention_days)",
            s.dead_expired
        ));
    }
    if s.receipts_expired > 0 {
        out.push(format!("{} old receipt(s) expired", s.receipts_expired));
    }
}

/// What became of one entry in a drain, in one line, as `drain` streams it
/// (on stderr; the summary follows on stdout). With `--json`, the event as
/// the socket carries it.
pub fn entry_report(r: &EntryReport, json: bool) -> String {
    if json {
        let event = enrolld::control::answer::Event::DrainEntry(r.clone());
        return serde_json::to_string(&event).unwrap_or_default();
    }
    match r {
        EntryReport::Uploaded {
            id,
            person,
            provider,
            face_ids,
        } => format!(
            "entry {id} uploaded to {provider} (person {person:?}): face {}",
            face_ids.join(",")
        ),
        EntryReport::Deleted {
            id,
            person,
            provider,
            how,
            face_ids,
            by_hand,
        } => {
            if *by_hand {
                format!("entry {id}: person {person:?} withdrew; {provider}: {how}")
            } else {
                format!(
                    "entry {id}: person {person:?} withdrew; deleted in {provider} ({how}): face {}",
                    face_ids.join(",")
                )
            }
        }
        EntryReport::Retry {
            id,
            person,
            provider,
            class,
            code,
            message,
            next_attempt_ms,
        } => format!(
            "entry {id} to {provider} (person {person:?}) will be retried {}: {code} ({}) {message}",
            rfc3339(*next_attempt_ms),
            class.as_str()
        ),
        EntryReport::Dead {
            id,
            person,
            provider,
            code,
            message,
        }
        | EntryReport::Paused {
            id,
            person,
            provider,
            code,
            message,
        } => {
            let what = if matches!(r, EntryReport::Dead { .. }) {
                format!("is dead: {code} {message}; kept with its images (enrolld queue show {id})")
            } else {
                format!("paused uploads to {provider}: {code} {message}; it stays queued")
            };
            format!("entry {id} to {provider} (person {person:?}) {what}")
        }
    }
}

/// One queue entry in one line; times are absolute, so the line is the same
/// whoever prints it and whenever.
fn entry_line(e: &Enrollment) -> String {
    let state = match &e.state {
        EntryState::Dead { reason, .. } => format!("dead ({reason})"),
        s => s.name().to_string(),
    };
    let mut line = format!(
        "{:>8}  {:<16} {:<8} {:>3} att  {:>7} B  created {}  {}",
        e.id,
        state,
        e.provider,
        e.attempts,
        e.image_bytes(),
        rfc3339(e.created_at_ms),
        e.person_id
    );
    if let Some(err) = &e.last_error {
        line.push_str(&format!("  last error: {} {}", err.code, err.message));
    }
    line
}

/// The last rebuild of a damaged store, in one line.
fn salvage_line(s: &SalvageReport) -> String {
    format!(
        "damaged store rebuilt {}: kept {} entries from the store, {} from the spool, {} receipts; \
         lost {} {:?}; the damaged files are in {}",
        rfc3339(s.at_ms),
        s.kept_from_store,
        s.kept_from_spool,
        s.receipts_kept,
        s.lost.len(),
        s.lost,
        s.moved_to.display()
    )
}

/// Entries that the next drain will turn dead unsent, one line each.
fn broken_rules(out: &mut Vec<String>, broken: &[BrokenRule]) {
    out.extend(broken.iter().map(|b| {
        format!(
            "entry {} breaks a vendor rule and will be dead at the next drain, unsent: {}",
            b.id, b.problem
        )
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_exits_7_only_when_something_failed_and_waits_to_be_retried() {
        let s = |retried, pending, pending_failed| DrainSummary {
            retried,
            pending,
            pending_failed,
            ..DrainSummary::default()
        };
        // Entries still pending that never failed (not due yet, or queued
        // during the pass): nothing failed.
        assert_eq!(drain_exit(&s(0, 3, 0)), exit::OK);
        assert_eq!(drain_exit(&s(0, 0, 0)), exit::OK);
        assert_eq!(drain_exit(&s(1, 1, 1)), exit::RETRY_PENDING);
        // Waiting after an earlier pass's failure.
        assert_eq!(drain_exit(&s(0, 2, 1)), exit::RETRY_PENDING);
    }
}
