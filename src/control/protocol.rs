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

pub use super::answer::{Answer, Event};
use crate::model::{ErrorCode, Failure, Provider, Receipt};
use serde::{Deserialize, Serialize};
use std::io::BufRead;

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
        /// The person's consent: the signed form or the HR system's record
        /// (needed with `consent.required`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consent: Option<String>,
        /// Who asked, from the socket's peer credentials: set by the
        /// daemon, never read from the request.
        #[serde(skip)]
        peer_uid: Option<u32>,
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
    /// The person withdrew consent: destroy their entries and images on the
    /// device, queue the deletes in the cloud.
    Forget { person: String },
    /// The ledger's records, of one person or all, since a time.
    Ledger {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        person: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<i64>,
    },
}

/// One line from the daemon.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Progress; more lines follow.
    Event(Event),
    /// The request succeeded; the last line.
    Answer { result: Answer },
    /// The request failed; the last line.
    Error { code: ErrorCode, message: String },
}

impl Reply {
    pub fn answer(result: Answer) -> Reply {
        Reply::Answer { result }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::Error {
            code,
            message: message.into(),
        }
    }

    pub fn is_last(&self) -> bool {
        !matches!(self, Reply::Event(_))
    }

    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"unserializable reply"}"#.into()
        });
        s.push('\n');
        s
    }

    /// Reads one line of the daemon's reply to `req`: an answer's `result`
    /// is read as the answer to that request kind.
    pub fn from_line(line: &str, req: &Request) -> Result<Reply, serde_json::Error> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "type")]
            kind: String,
            #[serde(borrow, default)]
            result: Option<&'a serde_json::value::RawValue>,
        }
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Other {
            Event(Event),
            Error { code: ErrorCode, message: String },
        }
        let head: Head = serde_json::from_str(line)?;
        if head.kind == "answer" {
            let result = head
                .result
                .ok_or_else(|| serde::de::Error::missing_field("result"))?;
            return Ok(Reply::Answer {
                result: decode_answer(req, result.get())?,
            });
        }
        Ok(match serde_json::from_str(line)? {
            Other::Event(e) => Reply::Event(e),
            Other::Error { code, message } => Reply::Error { code, message },
        })
    }
}

/// Reads the `result` of the answer to `req` (its JSON text): the request
/// decides the answer's shape.
pub fn decode_answer(req: &Request, result: &str) -> Result<Answer, serde_json::Error> {
    use serde_json::from_str as read;
    #[derive(Deserialize)]
    struct Retried {
        retried: u64,
    }
    #[derive(Deserialize)]
    struct Purged {
        purged: Vec<u64>,
    }
    #[derive(Deserialize)]
    struct Receipts {
        receipts: Vec<Receipt>,
    }
    #[derive(Deserialize)]
    struct Armed {
        armed: String,
        expires_in_s: u64,
    }
    #[derive(Deserialize)]
    struct Cancelled {
        cancelled_enrollment: bool,
        disarmed: Option<String>,
    }
    Ok(match req {
        Request::Status {} => Answer::Status(read(result)?),
        Request::QueueList {} => Answer::Queue(read(result)?),
        Request::QueueShow { .. } => Answer::Entry(read(result)?),
        Request::QueueCheck {} => Answer::Health(read(result)?),
        Request::Drain {} => Answer::Drained(read(result)?),
        Request::Forget { .. } => Answer::Forgotten(read(result)?),
        Request::Ledger { .. } => Answer::Ledger(read(result)?),
        Request::Retry { .. } => Answer::Retried {
            retried: read::<Retried>(result)?.retried,
        },
        Request::Purge { .. } => Answer::Purged {
            purged: read::<Purged>(result)?.purged,
        },
        Request::QueueReceipts {} => Answer::Receipts {
            receipts: read::<Receipts>(result)?.receipts,
        },
        Request::Enroll {
            follow_upload: true,
            ..
        } => Answer::Followed(read(result)?),
        Request::Enroll { .. } => Answer::Enrolled(read(result)?),
        Request::Arm { .. } => {
            let a: Armed = read(result)?;
            Answer::Armed {
                armed: a.armed,
                expires_in_s: a.expires_in_s,
            }
        }
        Request::Cancel {} => {
            let c: Cancelled = read(result)?;
            Answer::Cancelled {
                cancelled_enrollment: c.cancelled_enrollment,
                disarmed: c.disarmed,
            }
        }
    })
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
                    consent: None,
                    peer_uid: None,
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
            Reply::Event(Event::Uploaded {
                id: 42,
                face_ids: vec!["f1".into()]
            })
            .to_line(),
            "{\"type\":\"event\",\"event\":\"uploaded\",\"id\":42,\"face_ids\":[\"f1\"]}\n"
        );
        assert_eq!(
            Reply::answer(Answer::Retried { retried: 7 }).to_line(),
            "{\"type\":\"answer\",\"result\":{\"retried\":7}}\n"
        );
        assert_eq!(
            Reply::error(ErrorCode::Busy, "x").to_line(),
            "{\"type\":\"error\",\"code\":\"busy\",\"message\":\"x\"}\n"
        );
    }

    /// Every reply reads back as what was sent, by the request it answers;
    /// an event of a newer daemon reads as `Unknown`, not as an error.
    #[test]
    fn replies_read_back_typed() {
        let req = Request::Purge {
            id: None,
            dead: true,
        };
        let sent = Reply::answer(Answer::Purged { purged: vec![3, 4] });
        let back = Reply::from_line(sent.to_line().trim(), &req).expect("read");
        assert!(
            matches!(&back, Reply::Answer { result: Answer::Purged { purged } } if purged == &[3, 4]),
            "{back:?}"
        );
        let err = Reply::from_line(r#"{"type":"error","code":"busy","message":"m"}"#, &req);
        assert!(matches!(
            err,
            Ok(Reply::Error {
                code: ErrorCode::Busy,
                ..
            })
        ));
        let newer = Reply::from_line(r#"{"type":"event","event":"teleported","x":1}"#, &req);
        assert!(
            matches!(newer, Ok(Reply::Event(Event::Unknown))),
            "{newer:?}"
        );
        // An answer of the wrong shape for the request is an error, not a guess.
        let wrong = Reply::from_line(r#"{"type":"answer","result":{"retried":1}}"#, &req);
        assert!(wrong.is_err(), "{wrong:?}");
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
                consent: None,
                peer_uid: None,
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
                | Request::Drain {}
                | Request::Forget { .. }
                | Request::Ledger { .. } => {}
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
