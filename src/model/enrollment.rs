//! The enrollment as every layer sees it: the queued record, its state and
//! upload progress, the receipt kept once the cloud has it, and the classes
//! of upload failure that decide what happens next.

use crate::clock::{BootStamp, UnixMillis};
use crate::model::{FaceScores, Provider, Sealed};
use serde::{Deserialize, Serialize};

/// Most images one enrollment may hold (Tencent takes 4 per call).
pub const MAX_IMAGES: usize = 4;

/// What the drain loop should do about a failed upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Network errors, timeouts, 5xx, rate limits, busy: try again later.
    Retry,
    /// The device clock is too far off (Tencent `AuthFailure.SignatureExpire`, JD 10045/10046).
    Clock,
    /// Credentials, billing, quota, API not ordered: uploads pause until an operator acts.
    Operator,
    /// The image or request can never succeed: the entry goes to dead.
    Never,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retry => "retry",
            ErrorClass::Clock => "clock",
            ErrorClass::Operator => "operator",
            ErrorClass::Never => "never",
        }
    }
}

/// What the uploads of one entry have learned so far, kept with the entry
/// between attempts so that a retry sends only what is missing and never
/// adds a face twice. The JD and Tencent clients read and write it; the
/// queue stores it without looking inside, except to mark an upload that a
/// crash interrupted ([`UploadProgress::outcome_unknown`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadProgress {
    /// An upload may have reached the cloud without an answer (crash,
    /// timeout): check the cloud before sending again.
    #[serde(default)]
    pub outcome_unknown: bool,
    /// Face ids the cloud already confirmed for some of the images.
    #[serde(default)]
    pub uploaded_face_ids: Vec<String>,
    /// Indexes of the images that need no more sending (uploaded, or refused
    /// for good while others succeeded).
    #[serde(default)]
    pub done_images: Vec<u8>,
    /// The person's face ids in the cloud before the first send (Tencent),
    /// to tell after an unanswered upload whether it landed.
    #[serde(default)]
    pub face_ids_before: Option<Vec<String>>,
    /// This device created the person in the cloud (Tencent
    /// `CreatePerson`): a withdrawal deletes the whole person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created_person: bool,
}

/// What an entry asks of the cloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Upload its images.
    #[default]
    Enroll,
    /// Delete what this device uploaded of the person (`person forget`):
    /// no images; what to delete is read from the person's receipts when
    /// the delete is sent, so an upload that was in flight is included.
    Forget,
}

impl Task {
    pub fn is_enroll(&self) -> bool {
        *self == Task::Enroll
    }
}

/// Where the enrollment should go in the provider's account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// JD `groupId` / Tencent `GroupId`; may be empty.
    pub id: String,
    /// JD `groupName`; may be empty.
    pub name: String,
}

/// Life-cycle state of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// Waiting for `next_attempt_at_ms`.
    Pending,
    /// An upload is under way since `since_ms`.
    InFlight { since_ms: UnixMillis },
    /// Will never be uploaded without an operator: kept until purged.
    Dead {
        reason: String,
        since_ms: UnixMillis,
    },
}

impl EntryState {
    pub fn name(&self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::InFlight { .. } => "in_flight",
            EntryState::Dead { .. } => "dead",
        }
    }
}

/// The last failure of an entry, as the uploader classified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// What the drain decided about it (`retry`, `clock`, `operator`, `never`).
    pub class: crate::model::ErrorClass,
    /// The vendor's or enrolld's error code.
    pub code: String,
    pub message: String,
    pub at_ms: UnixMillis,
}

/// Facts about one stored image; the bytes live in the `images` tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub len: u64,
    pub width: u32,
    pub height: u32,
    /// Always `jpeg` today.
    pub format: String,
    /// Hex SHA-256 of the bytes, checked on every read.
    pub sha256: String,
}

/// One queued enrollment (without its image bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub format_version: u32,
    pub id: u64,
    /// JD `outerId` / Tencent `PersonId`, legal for `provider`.
    pub person_id: String,
    /// Tencent `PersonName` as the technician gave it; none sends the name
    /// derived from the person id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_name: Option<String>,
    pub provider: Provider,
    pub group: Group,
    pub created_at_ms: UnixMillis,
    /// Where in which boot it was queued: its time can be corrected when
    /// the wall clock was wrong then ([`Outbox::correct_times`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_boot: Option<BootStamp>,
    pub attempts: u32,
    pub next_attempt_at_ms: UnixMillis,
    #[serde(flatten)]
    pub state: EntryState,
    pub last_error: Option<LastError>,
    /// What the uploads so far learned: the cloud clients' to read and
    /// write; the store keeps it as it is given (flattened: the record's
    /// fields are those of earlier releases).
    #[serde(flatten)]
    pub progress: UploadProgress,
    pub images: Vec<ImageMeta>,
    /// Scores of the chosen faces, for audit.
    #[serde(default)]
    pub scores: Vec<FaceScores>,
    /// An upload (absent in records of earlier releases) or a delete.
    #[serde(default, skip_serializing_if = "Task::is_enroll")]
    pub task: Task,
    /// The person's consent ([`crate::model::Consent`]), sealed with the
    /// queue key and bound to this entry's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Sealed>,
    /// The person withdrew while this upload was in flight: when the
    /// attempt ends it is not tried again (a success is kept as a receipt,
    /// for the delete that follows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
}

impl Enrollment {
    pub fn image_bytes(&self) -> u64 {
        self.images.iter().map(|i| i.len).sum()
    }
}

/// What became of a withdrawn person's faces at one vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudDeletion {
    /// The call that deleted them (`DeletePerson`, `DeleteFace`), or why
    /// they must be deleted by hand.
    pub how: String,
    /// The faces this device had uploaded.
    pub face_ids: Vec<String>,
    /// The vendor documents no delete: an operator must delete them in its console.
    pub manual: bool,
}

/// What is kept of an enrollment once the cloud has it: no image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: u64,
    pub person_id: String,
    pub provider: Provider,
    pub group: Group,
    pub face_ids: Vec<String>,
    pub created_at_ms: UnixMillis,
    pub uploaded_at_ms: UnixMillis,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_boot: Option<BootStamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_boot: Option<BootStamp>,
    /// The entry's consent record, still sealed to the entry's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Sealed>,
    /// This device created the person in the cloud.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created_person: bool,
}

/// enrolld's own codes for a failed upload, beside the vendors' (which stay
/// text: `10043`, `AuthFailure.SecretIdNotFound`). Stable names: they are in
/// `LastError::code`, `queue show` and the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadCode {
    /// The host could not be reached or the request not sent.
    Network,
    /// Sent, and no answer came (it may have been applied).
    NoAnswer,
    /// The endpoint's certificate is not trusted.
    Tls,
    /// The TLS settings (extra CA file) cannot be used.
    TlsConfig,
    /// An endpoint or proxy that cannot be used.
    Config,
    /// The credentials are missing or unreadable.
    Credentials,
    /// The request could not be encoded.
    Encode,
    /// An answer that is not the vendor's (a captive portal, a proxy).
    BadAnswer,
    /// The entry's record or images cannot be read.
    CorruptEntry,
    /// No uploader for the entry's vendor.
    NoUploader,
    /// Tencent's UniquePersonControl found the face in another person.
    DuplicatePerson,
}

impl UploadCode {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadCode::Network => "network",
            UploadCode::NoAnswer => "no_answer",
            UploadCode::Tls => "tls",
            UploadCode::TlsConfig => "tls_config",
            UploadCode::Config => "config",
            UploadCode::Credentials => "credentials",
            UploadCode::Encode => "encode",
            UploadCode::BadAnswer => "bad_answer",
            UploadCode::CorruptEntry => "corrupt_entry",
            UploadCode::NoUploader => "no_uploader",
            UploadCode::DuplicatePerson => "duplicate_person",
        }
    }
}

impl From<UploadCode> for String {
    fn from(c: UploadCode) -> String {
        c.as_str().to_string()
    }
}

impl PartialEq<UploadCode> for String {
    fn eq(&self, other: &UploadCode) -> bool {
        self == other.as_str()
    }
}
