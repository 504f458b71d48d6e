//! The control socket protocol: one JSON object per line, both ways.
//!
//! A client sends one request line; the daemon answers with zero or more
//! `event` lines and ends with exactly one `answer` or `error` line. Example:
//!
//! ```text
//! > {"cmd":"enroll","person":"10042"}
//! < {"type":"event","event":"capturing","source":"/dev/video0 1280x720 MJPG 30 fps"}
//! < {"type":"event","event":"face_found","frame":0,"face_px":212,"scores":{...}}
//! < {"type":"event","event":"queued","id":42}
//! < {"type":"answer","result":{"queued":42,"person":"10042"}}
//! ```
//!
//! Lines are at most [`MAX_LINE_BYTES`]; longer or malformed input gets an
//! `error` line, never a crash.

use crate::cloud::provider::Provider;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::BufRead;

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

impl From<Failure> for Reply {
    fn from(f: Failure) -> Reply {
        Reply::Error {
            code: f.code,
            message: f.message,
        }
    }
}

/// Longest request line accepted.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Capture and queue an enrollment now.
    Enroll {
        person: String,
        /// Tencent `PersonName`; none derives it from `person`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<Provider>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frames: Option<u32>,
        /// Keep the connection until the upload is confirmed (or 60 s).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        follow_upload: bool,
        /// Enroll from the photo file whose descriptor comes with this
        /// request (`SCM_RIGHTS`), not from the camera.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        photo: Option<String>,
    },
    /// The next button press within `ttl_s` seconds enrolls this person.
    Arm {
        person: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        ttl_s: u64,
    },
    /// Daemon state: queue, last result, pauses, clock skew.
    // Empty struct variants, not unit ones: serde only rejects unknown
    // fields on struct variants of an internally tagged enum.
    Status {},
    /// Every queued entry.
    QueueList {},
    /// One queued entry.
    QueueShow { id: u64 },
    /// Make an entry due now (a dead entry becomes pending).
    Retry { id: u64 },
    /// Delete an entry, or every dead entry with `dead: true`.
    Purge {
        #[serde(default)]
        id: Option<u64>,
        #[serde(default)]
        dead: bool,
    },
    /// Stop the enrollment in progress, and disarm.
    Cancel {},
    /// The receipts of uploaded enrollments.
    QueueReceipts {},
    /// Read back every entry, image, spool copy and receipt.
    QueueCheck {},
    /// Upload every due enrollment now; the answer is the pass's summary.
    Drain {},
}

/// One line from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Progress; more lines follow.
    Event {
        event: String,
        #[serde(flatten)]
        data: serde_json::Map<String, Value>,
    },
    /// The request succeeded; the last line.
    Answer { result: Value },
    /// The request failed; the last line.
    Error { code: ErrorCode, message: String },
}

impl Reply {
    pub fn event(event: &str, data: Value) -> Reply {
        Reply::Event {
            event: event.into(),
            data: match data {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::Error {
            code,
            message: message.into(),
        }
    }

    pub fn is_last(&self) -> bool {
        !matches!(self, Reply::Event { .. })
    }

    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"unserializable reply"}"#.into()
        });
        s.push('\n');
        s
    }
}

/// Why a request line could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection.
    Closed,
    /// Longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// Not a request: the reply to send.
    Malformed(String),
    /// No complete line within the read deadline.
    Timeout,
}

/// Reads one request line (bounded) and parses it.
pub fn read_request(reader: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut line = Vec::new();
    loop {
        let (done, used) = {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadError::Timeout)
                }
                Err(_) => return Err(ReadError::Closed),
            };
            if buf.is_empty() {
                return if line.is_empty() {
                    Err(ReadError::Closed)
                } else {
                    Err(ReadError::Malformed("the line has no end".into()))
                };
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    (true, i + 1)
                }
                None => {
                    line.extend_from_slice(buf);
                    (false, buf.len())
                }
            }
        };
        reader.consume(used);
        if line.len() > MAX_LINE_BYTES {
            return Err(ReadError::TooLong);
        }
        if done {
            break;
        }
    }
    let text = std::str::from_utf8(&line)
        .map_err(|_| ReadError::Malformed("the line is not UTF-8".into()))?;
    serde_json::from_str(text.trim())
        .map_err(|e| ReadError::Malformed(format!("not a request: {e}")))
}

/// Whether a peer (from `SO_PEERCRED`) may use the socket. With both lists
/// empty, whoever the socket's file mode (0660, group `enrolld`) lets connect
/// may; otherwise only root, the daemon's own user, a listed uid or a listed
/// primary gid. (`SO_PEERCRED` carries the primary gid only.)
pub fn peer_allowed(
    peer_uid: u32,
    peer_gid: u32,
    own_uid: u32,
    allowed_uids: &[u32],
    allowed_gids: &[u32],
) -> bool {
    if allowed_uids.is_empty() && allowed_gids.is_empty() {
        return true;
    }
    peer_uid == 0
        || peer_uid == own_uid
        || allowed_uids.contains(&peer_uid)
        || allowed_gids.contains(&peer_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &[u8]) -> Result<Request, ReadError> {
        read_request(&mut std::io::BufReader::new(s))
    }

    #[test]
    fn requests_round_trip() {
        let cases = [
            (
                r#"{"cmd":"enroll","person":"10042"}"#,
                Request::Enroll {
                    person: "10042".into(),
                    name: None,
                    provider: None,
                    frames: None,
                    follow_upload: false,
                    photo: None,
                },
            ),
            (
                r#"{"cmd":"arm","person":"p","ttl_s":60}"#,
                Request::Arm {
                    person: "p".into(),
                    name: None,
                    ttl_s: 60,
                },
            ),
            (r#"{"cmd":"status"}"#, Request::Status {}),
            (r#"{"cmd":"queue_list"}"#, Request::QueueList {}),
            (r#"{"cmd":"retry","id":7}"#, Request::Retry { id: 7 }),
            (
                r#"{"cmd":"purge","dead":true}"#,
                Request::Purge {
                    id: None,
                    dead: true,
                },
            ),
            (r#"{"cmd":"cancel"}"#, Request::Cancel {}),
        ];
        for (text, want) in cases {
            assert_eq!(
                read(format!("{text}\n").as_bytes()),
                Ok(want.clone()),
                "{text}"
            );
            let again = serde_json::to_string(&want).expect("ser");
            assert_eq!(read(format!("{again}\n").as_bytes()), Ok(want));
        }
    }

    #[test]
    fn bad_lines_are_errors() {
        assert_eq!(read(b""), Err(ReadError::Closed));
        assert!(matches!(read(b"garbage\n"), Err(ReadError::Malformed(_))));
        assert!(matches!(
            read(b"{\"cmd\":\"explode\"}\n"),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read(b"{\"cmd\":\"status\",\"extra\":1}\n"),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(read(b"\xff\xfe\n"), Err(ReadError::Malformed(_))));
        assert!(
            matches!(read(b"{\"cmd\":\"status\"}"), Err(ReadError::Malformed(_))),
            "no newline"
        );
        let long = vec![b'a'; MAX_LINE_BYTES + 10];
        assert_eq!(read(&long), Err(ReadError::TooLong));
    }

    #[test]
    fn replies_serialize_as_documented() {
        assert_eq!(
            Reply::event("queued", serde_json::json!({"id": 42})).to_line(),
            "{\"type\":\"event\",\"event\":\"queued\",\"id\":42}\n"
        );
        assert_eq!(
            Reply::error(ErrorCode::Busy, "x").to_line(),
            "{\"type\":\"error\",\"code\":\"busy\",\"message\":\"x\"}\n"
        );
    }

    /// The README's table of error codes is this enum's, row for row.
    #[test]
    fn the_readme_lists_every_error_code_with_its_exit_status() {
        let readme = include_str!("../../README.md");
        let mut table = String::from("| code | exit | meaning |\n|---|---|---|\n");
        for code in ErrorCode::ALL {
            table.push_str(&format!(
                "| `{}` | {} | {} |\n",
                code.as_str(),
                code.exit(),
                code.meaning()
            ));
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(*code));
            let wire = serde_json::to_string(code).expect("ser");
            assert_eq!(serde_json::from_str::<ErrorCode>(&wire).ok(), Some(*code));
        }
        assert!(
            readme.contains(&table),
            "README.md's error table is out of date; it should read:\n{table}"
        );
    }

    /// Every request has a row in the README's protocol table.
    #[test]
    fn the_readme_documents_every_request() {
        let readme = include_str!("../../README.md");
        let all = [
            Request::Enroll {
                person: "p".into(),
                name: None,
                provider: None,
                frames: None,
                follow_upload: false,
                photo: None,
            },
            Request::Arm {
                person: "p".into(),
                name: None,
                ttl_s: 60,
            },
            Request::Status {},
            Request::QueueList {},
            Request::QueueShow { id: 7 },
            Request::Retry { id: 7 },
            Request::Purge {
                id: Some(7),
                dead: false,
            },
            Request::Cancel {},
            Request::QueueReceipts {},
            Request::QueueCheck {},
            Request::Drain {},
        ];
        for req in all {
            // A new variant must be added above (and to the README).
            match req {
                Request::Enroll { .. }
                | Request::Arm { .. }
                | Request::Status {}
                | Request::QueueList {}
                | Request::QueueShow { .. }
                | Request::Retry { .. }
                | Request::Purge { .. }
                | Request::Cancel {}
                | Request::QueueReceipts {}
                | Request::QueueCheck {}
                | Request::Drain {} => {}
            }
            let wire = serde_json::to_value(&req).expect("ser");
            let cmd = format!("{{\"cmd\":{}", wire["cmd"]);
            assert!(readme.contains(&cmd), "README.md does not document {cmd}");
        }
    }

    #[test]
    fn peers() {
        assert!(
            peer_allowed(1234, 1234, 999, &[], &[]),
            "no lists: the file mode decides"
        );
        assert!(peer_allowed(0, 0, 999, &[5], &[]));
        assert!(peer_allowed(999, 5, 999, &[5], &[]));
        assert!(peer_allowed(1000, 5, 999, &[1000], &[]));
        assert!(peer_allowed(1001, 44, 999, &[], &[44]));
        assert!(!peer_allowed(1001, 5, 999, &[1000], &[44]));
    }
}
