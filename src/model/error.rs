//! The errors every layer reports: one [`ErrorCode`] per kind, its stable
//! name on the wire, its exit code, and a [`Failure`] that carries the
//! technician's message.

use serde::{Deserialize, Serialize};

/// Exit codes of `enrolld` commands: fixed meanings, documented in
/// README.md and `--help`. [`ErrorCode::exit`] is the only mapping from an
/// error to one of them.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const REJECTED: u8 = 3;
    pub const QUEUE_FULL: u8 = 4;
    pub const INPUT: u8 = 5;
    pub const NOT_FOUND: u8 = 6;
    pub const RETRY_PENDING: u8 = 7;
    pub const PAUSED: u8 = 8;
    pub const DEAD: u8 = 9;
    pub const BUSY: u8 = 10;
    /// `person forget`: what the cloud holds must be deleted by hand (JD).
    pub const MANUAL: u8 = 11;
}

macro_rules! error_codes {
    ($($name:ident $text:literal $exit:ident $meaning:literal,)*) => {
        /// Every error enrolld reports, on the socket (`"code"`), in
        /// `--json` output (`"error"`) and as an exit code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $meaning] $name,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the README's table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The stable name on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$name => $text,)* }
            }

            /// The exit code of a command that ends with this error.
            pub fn exit(self) -> u8 {
                match self { $(ErrorCode::$name => exit::$exit,)* }
            }

            /// What it means, for the README's table.
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$name => $meaning,)* }
            }
        }
    };
}

error_codes! {
    Internal "internal" FAILURE "a bug in enrolld: please report it",
    StorageError "storage_error" FAILURE "the queue's storage failed to read or write",
    StorageDamaged "storage_damaged" FAILURE "a queued image is damaged on the storage",
    CorruptEntry "corrupt_entry" FAILURE "a queue record cannot be read",
    UnsupportedFormat "unsupported_format" FAILURE "the queue was written by a newer enrolld",
    QueueLocked "queue_locked" FAILURE "another enrolld process holds the queue",
    EncodeFailed "encode_failed" FAILURE "the face crop could not be encoded within the vendor's limits",
    OutputFailed "output_failed" FAILURE "an output file could not be written",
    Cancelled "cancelled" FAILURE "the enrollment was cancelled (`cancel`, or the daemon is stopping)",
    Stopping "stopping" FAILURE "the daemon is stopping; a queued entry stays queued",
    Timeout "timeout" FAILURE "no request line within `control.read_timeout_ms`",
    NotRunning "not_running" FAILURE "`status`: no daemon answers on the control socket (the queue is shown)",
    DaemonUnreachable "daemon_unreachable" FAILURE "the daemon's socket exists but the daemon did not answer",
    DaemonFailed "daemon_failed" FAILURE "the daemon could not start or stopped on an error",
    KeygenFailed "keygen_failed" FAILURE "the key file could not be created",
    Usage "usage" USAGE "the command line is not valid (`enrolld --help`)",
    ConfigInvalid "config_invalid" USAGE "the configuration file is invalid",
    InvalidConfig "invalid_config" USAGE "a configured value breaks a vendor rule",
    ConsentRequired "consent_required" USAGE "`consent.required`: the enrollment names no consent (`--consent REF`, socket `consent`, `button.consent`)",
    InvalidPerson "invalid_person" USAGE "the person id or name breaks the vendor's rules",
    InvalidImages "invalid_images" USAGE "the images break the vendor's rules",
    InvalidSource "invalid_source" USAGE "the frame source is not a valid `file:` or `v4l2:` source",
    InvalidRequest "invalid_request" USAGE "the request is not valid (e.g. purge with neither an id nor dead)",
    InvalidState "invalid_state" USAGE "the entry is in a state that does not allow this",
    GroupMissing "group_missing" USAGE "the provider needs a group and none is configured",
    WrongQueueKey "wrong_queue_key" USAGE "the queue key does not open this queue",
    QueueKey "queue_key" USAGE "the queue key file is missing or invalid",
    ModelInvalid "model_invalid" USAGE "the face detection model cannot be loaded",
    TlsConfig "tls_config" USAGE "the TLS settings (extra CA file) are invalid",
    SecretUnreadable "secret_unreadable" USAGE "a secret key file cannot be read",
    Forbidden "forbidden" USAGE "this user may not use the control socket",
    Malformed "malformed" USAGE "the request line is not a valid request",
    TooLong "too_long" USAGE "the request line is longer than 64 KiB",
    Rejected "rejected" REJECTED "no acceptable face (the `rejected` event has the reason)",
    QueueFull "queue_full" QUEUE_FULL "the queue is at `queue.max_entries` or `queue.max_bytes`",
    StorageFull "storage_full" QUEUE_FULL "the file system is full",
    CameraNotFound "camera_not_found" INPUT "the camera is not there",
    CameraPermissionDenied "camera_permission_denied" INPUT "the camera may not be opened by this user",
    CameraBusy "camera_busy" INPUT "another program uses the camera",
    CameraOpenFailed "camera_open_failed" INPUT "the camera cannot be set up",
    CameraTimeout "camera_timeout" INPUT "the camera gave no frame in time",
    CameraReadFailed "camera_read_failed" INPUT "reading a frame failed",
    BadImage "bad_image" INPUT "an image or frame cannot be decoded",
    NoImages "no_images" INPUT "a `file:` directory holds no images",
    FileNotFound "file_not_found" INPUT "a `file:` photo is not there",
    NotAFile "not_a_file" INPUT "a `file:` source is not a regular file or directory",
    NotFound "not_found" NOT_FOUND "no such queue entry",
    UploadRefused "upload_refused" DEAD "the cloud refused the enrollment for good; the entry is dead",
    Busy "busy" BUSY "an enrollment is in progress",
    TooManyClients "too_many_clients" BUSY "`control.max_clients` clients are being served",
}

impl ErrorCode {
    /// The code of a name on the wire; `None` for a name this enrolld does
    /// not know (a newer daemon's).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == name)
    }
}

/// Lets tests and callers compare with the name on the wire.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    /// A code this enrolld does not know reads as `internal`: the message
    /// that comes with it still says what happened.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(ErrorCode::from_name(&name).unwrap_or(ErrorCode::Internal))
    }
}

/// An error as a command or the daemon reports it: the code decides the
/// exit status, the message tells the technician what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn exit(&self) -> u8 {
        self.code.exit()
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
