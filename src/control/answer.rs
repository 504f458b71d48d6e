//! What the daemon and the commands answer, as types both ways: one
//! [`Answer`] per request kind and one [`Event`] per kind of progress. The
//! daemon serializes them onto the socket; a command reads them back with
//! [`super::protocol::decode_answer`], knowing what it asked, and renders them exactly as it
//! renders the answers it computes itself (src/cli/render.rs). Nothing on
//! the wire is an untyped JSON value.

use crate::capture::burst::FrameReport;
use crate::capture::encode::EncodedImage;
use crate::capture::enroll::{EnrollOutcome, Progress};
use crate::capture::quality::Rejection;
use crate::model::rules::BrokenRule;
use crate::model::{Consent, Enrollment, FaceScores, Provider, Receipt};
use crate::queue::drain::{DrainSummary, EntryReport};
use crate::queue::ledger::LedgerRead;
use crate::queue::outbox::{ForgetReport, HealthReport, SalvageReport, Usage};
use serde::{Deserialize, Serialize};

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
    /// Distinct persons in the ledger (the CAC's measures ask for a filing
    /// at 100,000); absent when the ledger cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persons: Option<u64>,
    /// Present when the daemon runs.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DaemonState>,
}

impl StatusReport {
    pub fn running(&self) -> bool {
        self.state.is_some()
    }
}

/// `enroll`: the entry was queued. The whole outcome (entry, images, the
/// report of every frame) with `queued` (the entry's id) and `person` on top.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub queued: u64,
    pub person: String,
    #[serde(flatten)]
    pub outcome: EnrollOutcome,
}

impl Enrolled {
    /// The answer to an enrollment that was queued; `None` for a rejection,
    /// which is answered as [`Answer::Rejected`].
    pub fn from_outcome(outcome: EnrollOutcome) -> Result<Enrolled, EnrollOutcome> {
        match &outcome {
            EnrollOutcome::Queued { entry, .. } => Ok(Enrolled {
                queued: entry.id,
                person: entry.person_id.clone(),
                outcome,
            }),
            EnrollOutcome::Rejected { .. } => Err(outcome),
        }
    }
}

/// `enroll` with `follow_upload`: whether the cloud confirmed the upload
/// before the wait ended (the entry stays queued either way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadFollowed {
    pub queued: u64,
    pub uploaded: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub face_ids: Vec<String>,
}

/// `queue show`: the entry, and its consent record opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShownEntry {
    #[serde(flatten)]
    pub entry: Enrollment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_record: Option<OpenedConsent>,
}

/// A consent record as read back: the record, or why it cannot be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OpenedConsent {
    Record(Consent),
    Unreadable { unreadable: String },
}

impl From<Result<Consent, String>> for OpenedConsent {
    fn from(r: Result<Consent, String>) -> Self {
        match r {
            Ok(c) => OpenedConsent::Record(c),
            Err(unreadable) => OpenedConsent::Unreadable { unreadable },
        }
    }
}

/// The answer to a request, as the daemon sends it (`result`) and as the
/// commands render it. Serialized without a tag: each request kind has one
/// answer shape, and [`super::protocol::decode_answer`] reads it by the
/// request.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<StatusReport>),
    Queue(Box<QueueListing>),
    Entry(Box<ShownEntry>),
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
    /// `person forget`: what was destroyed on the device, which deletes
    /// were queued for the cloud.
    Forgotten(Box<ForgetReport>),
    /// The ledger's records.
    Ledger(Box<LedgerRead>),
    /// An enrollment was queued.
    Enrolled(Box<Enrolled>),
    /// An enrollment was queued and its upload followed.
    Followed(UploadFollowed),
    /// An enrollment was rejected: the whole outcome, every frame's report
    /// with it (`enroll --json`, with or without a daemon; exit 3).
    Rejected(Box<EnrollOutcome>),
    /// The next button press enrolls `armed`.
    Armed {
        armed: String,
        expires_in_s: u64,
    },
    /// What `cancel` stopped: an enrollment in progress, and the person
    /// armed for the button, if any.
    Cancelled {
        cancelled_enrollment: bool,
        disarmed: Option<String>,
    },
}

impl Answer {
    /// The answer to a finished enrollment: queued or rejected.
    pub fn of_enrollment(outcome: EnrollOutcome) -> Answer {
        match Enrolled::from_outcome(outcome) {
            Ok(e) => Answer::Enrolled(Box::new(e)),
            Err(rejected) => Answer::Rejected(Box::new(rejected)),
        }
    }
}

/// Progress the daemon streams before its answer (`{"type":"event",
/// "event":...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An enrollment started reading frames from `source`.
    Capturing { source: String },
    /// A frame had an acceptable face.
    FaceFound {
        frame: u32,
        face_px: u32,
        scores: FaceScores,
        report: Box<FrameReport>,
    },
    /// A frame had no acceptable face.
    FrameRejected {
        frame: u32,
        reason: Option<Rejection>,
        faces_seen: u32,
        scores: Option<FaceScores>,
        report: Box<FrameReport>,
    },
    /// The enrollment is durably queued.
    Queued {
        id: u64,
        person: String,
        images: Vec<EncodedImage>,
    },
    /// No frame was good enough: the whole outcome (the answer is the
    /// `rejected` error).
    Rejected {
        reason: Rejection,
        advice: String,
        outcome: Box<EnrollOutcome>,
    },
    /// A followed upload was confirmed.
    Uploaded { id: u64, face_ids: Vec<String> },
    /// A drain: what became of one entry, as it happened (whichever pass
    /// of the daemon's did it).
    DrainEntry(EntryReport),
    /// An event this enrolld does not know (a newer daemon's).
    #[serde(other)]
    Unknown,
}

impl Event {
    /// The event of an enrollment's progress.
    pub fn of_progress(p: Progress) -> Event {
        match p {
            Progress::Capturing { source } => Event::Capturing { source },
            Progress::Frame { report } => match (report.accepted, report.scores) {
                (true, Some(scores)) => Event::FaceFound {
                    frame: report.index,
                    face_px: scores.face_px,
                    scores,
                    report,
                },
                _ => Event::FrameRejected {
                    frame: report.index,
                    reason: report.rejection,
                    faces_seen: report.faces_seen,
                    scores: report.scores,
                    report,
                },
            },
        }
    }

    /// The enrollment progress it reports, if it is one.
    pub fn progress(&self) -> Option<Progress> {
        match self {
            Event::Capturing { source } => Some(Progress::Capturing {
                source: source.clone(),
            }),
            Event::FaceFound { report, .. } | Event::FrameRejected { report, .. } => {
                Some(Progress::Frame {
                    report: report.clone(),
                })
            }
            _ => None,
        }
    }
}
