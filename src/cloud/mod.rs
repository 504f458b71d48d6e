//! Uploading enrollments to the cloud, with one error taxonomy for both
//! vendors. Classes are decided from vendor codes, never from message text.

pub mod http;
pub mod jd;
pub mod sign;
pub mod tencent;
pub mod timefloor;
pub mod tls;

use crate::clock::{Clock, UnixMillis};
use crate::cloud::http::{HttpError, HttpErrorKind};
use crate::model::{CloudDeletion, Enrollment, ErrorClass, Provider, UploadCode};
use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A failed upload, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadError {
    pub class: ErrorClass,
    /// The vendor's code (`10043`, `AuthFailure.SecretIdNotFound`, `RetCode:-1101`)
    /// or enrolld's (`network`, `tls`, `http_503`, `bad_answer`).
    pub code: String,
    pub message: String,
    /// The request may have been applied without our knowing (timeout after
    /// sending, connection lost): check before sending again.
    pub outcome_unknown: bool,
    /// Do not try before this time (JD's daily quota).
    pub not_before_ms: Option<UnixMillis>,
}

impl UploadError {
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            code: code.into(),
            message: message.into(),
            outcome_unknown: false,
            not_before_ms: None,
        }
    }
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.class.as_str(),
            self.message
        )
    }
}

impl std::error::Error for UploadError {}

impl From<HttpError> for UploadError {
    fn from(e: HttpError) -> Self {
        let (class, code) = match e.kind {
            HttpErrorKind::Connect | HttpErrorKind::Send => {
                (ErrorClass::Retry, UploadCode::Network)
            }
            HttpErrorKind::Unknown => (ErrorClass::Retry, UploadCode::NoAnswer),
            // An untrusted certificate is a configuration problem (or an
            // attack): keep everything queued and tell the operator.
            HttpErrorKind::Tls => (ErrorClass::Operator, UploadCode::Tls),
            HttpErrorKind::Config => (ErrorClass::Operator, UploadCode::Config),
        };
        let mut u = UploadError::new(class, code, e.message.clone());
        u.outcome_unknown = e.maybe_applied();
        u
    }
}

/// Classifies an HTTP status that carried no vendor answer.
pub fn classify_http_status(status: u16) -> UploadError {
    let class = match status {
        408 | 425 | 429 | 500..=599 => ErrorClass::Retry,
        _ => ErrorClass::Operator,
    };
    UploadError::new(
        class,
        format!("http_{status}"),
        format!("HTTP status {status}"),
    )
}

/// A 404 or 405, whatever the body says: the server has no such API at
/// this address (a wrong host or port, a proxy or portal in the way).
/// Retrying cannot help, so it pauses for the operator, naming `key`.
pub fn no_such_api(status: u16, key: &str, url: &str) -> Option<UploadError> {
    matches!(status, 404 | 405).then(|| {
        UploadError::new(
            ErrorClass::Operator,
            format!("http_{status}"),
            format!(
                "HTTP status {status} from {}: no such API there; check {key}",
                crate::cloud::http::host_of(url)
            ),
        )
    })
}

/// A confirmed upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uploaded {
    /// Face ids the cloud assigned (may be empty when the vendor gives none).
    pub face_ids: Vec<String>,
}

/// A vendor's enrollment API.
///
/// The drain loop calls `prepare`, claims the entry with what `prepare`
/// learned (one durable write, so it survives a crash), then calls `send`,
/// and stores the entry again whatever the result: both may record progress
/// in it.
pub trait Uploader: Send {
    fn provider(&self) -> Provider;

    /// Whether `prepare` looks every interrupted or unanswered upload up in
    /// the cloud before it is sent again, so that no crash can make it a
    /// duplicate. Then the drain claims several entries in one durable write
    /// and leaves their outcomes to the next one (a crash costs lookups).
    /// A vendor without such a lookup (JD) has each claim and each outcome
    /// durable before the next send.
    fn looks_up_before_resend(&self) -> bool {
        false
    }

    /// Work that must happen before sending, so a resend cannot duplicate a
    /// face. May find that an earlier, unanswered upload did land.
    fn prepare(&mut self, entry: &mut Enrollment) -> Result<Option<Uploaded>, UploadError> {
        let _ = entry;
        Ok(None)
    }

    /// Uploads the entry's images that are not done yet.
    fn send(&mut self, entry: &mut Enrollment, images: &[Vec<u8>])
        -> Result<Uploaded, UploadError>;

    /// Deletes what this device uploaded of a person who withdrew. A
    /// person or face the cloud no longer has counts as deleted. The
    /// default is a vendor with no documented delete: the faces are for an
    /// operator to delete by hand.
    fn forget(&mut self, req: &ForgetRequest) -> Result<CloudDeletion, UploadError> {
        Ok(CloudDeletion {
            how: format!(
                "{} documents no delete call for these faces: delete them by hand in its console",
                self.provider()
            ),
            face_ids: req.face_ids.clone(),
            manual: true,
        })
    }
}

/// What a withdrawal asks a vendor to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetRequest {
    pub person_id: String,
    /// The faces this device uploaded (receipts and interrupted uploads).
    pub face_ids: Vec<String>,
    /// This device created the person: delete the person, all faces.
    pub created_person: bool,
    /// An upload's outcome is unknown: the person's faces before it. Any
    /// face not among them may be that upload's and is deleted too.
    pub faces_before: Option<Vec<String>>,
}

/// The device clock corrected by what the servers' `Date` headers say.
pub struct SkewClock {
    clock: Arc<dyn Clock>,
    offset_ms: AtomicI64,
}

impl fmt::Debug for SkewClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SkewClock({} ms)", self.offset_ms())
    }
}

/// Offsets up to this are treated as none: `Date` has one-second resolution.
const SKEW_DEADBAND_MS: i64 = 2_000;

impl SkewClock {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// The device's own time.
    pub fn local_ms(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    /// The corrected time requests are signed with.
    pub fn now_ms(&self) -> UnixMillis {
        self.clock.now_ms() + self.offset_ms()
    }

    /// Server time minus device time, as last measured (0 within a 2 s deadband).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Learns from a server's `Date` (whole seconds) seen at device time `local_ms`.
    pub fn observe(&self, server_ms: UnixMillis, local_ms: UnixMillis) {
        let offset = server_ms + 500 - local_ms;
        let offset = if offset.abs() <= SKEW_DEADBAND_MS {
            0
        } else {
            offset
        };
        let old = self.offset_ms.swap(offset, Ordering::SeqCst);
        if (old - offset).abs() > SKEW_DEADBAND_MS {
            log::warn!(
                "device clock is {} s off the cloud's; signing with the cloud's time",
                -offset / 1000
            );
        }
    }
}

/// The HTTP settings of `[upload]` and `[tls]`.
pub fn http_config(cfg: &crate::config::Config) -> crate::cloud::http::HttpConfig {
    use std::time::Duration;
    crate::cloud::http::HttpConfig {
        connect_timeout: Duration::from_millis(cfg.upload.connect_timeout_ms),
        send_timeout: Duration::from_millis(cfg.upload.send_timeout_ms),
        recv_timeout: Duration::from_millis(cfg.upload.recv_timeout_ms),
        max_body_bytes: cfg.upload.max_answer_bytes,
        extra_ca_file: cfg.tls.extra_ca_file.clone(),
        time_floor: None,
    }
}

/// Builds the uploader of `provider` from the configuration. Missing
/// credentials are an `Operator` error: uploads to that provider pause and
/// nothing is dropped.
pub fn build_uploader(
    cfg: &crate::config::Config,
    provider: Provider,
    http: Arc<crate::cloud::http::HttpClient>,
    clock: Arc<SkewClock>,
) -> Result<Box<dyn Uploader>, UploadError> {
    use crate::config::Secret;
    let missing = |key: &str, why: String| {
        UploadError::new(
            ErrorClass::Operator,
            UploadCode::Credentials,
            format!("{key}: {why}"),
        )
    };
    match provider {
        Provider::Jd => {
            if cfg.jd.appkey.is_empty() {
                return Err(missing("jd.appkey", "not set".into()));
            }
            let secret = Secret::from_file(&cfg.jd.secret_key_file)
                .map_err(|e| missing("jd.secret_key_file", e))?;
            Ok(Box::new(jd::JdClient::new(
                http,
                &cfg.jd.endpoint,
                &cfg.jd.appkey,
                secret,
                clock,
            )))
        }
        Provider::Tencent => {
            if cfg.tencent.secret_id.is_empty() {
                return Err(missing("tencent.secret_id", "not set".into()));
            }
            let secret = Secret::from_file(&cfg.tencent.secret_key_file)
                .map_err(|e| missing("tencent.secret_key_file", e))?;
            let settings = tencent::TencentSettings {
                endpoint: cfg.tencent.endpoint.clone(),
                secret_id: cfg.tencent.secret_id.clone(),
                region: cfg.tencent.region.clone(),
                version: cfg.tencent.version.clone(),
                group_id: cfg.tencent.group_id.clone(),
                gates: tencent::TencentGates {
                    unique_person_control: cfg.tencent.unique_person_control,
                    quality_control: cfg.tencent.quality_control,
                    face_match_threshold: cfg.tencent.face_match_threshold,
                },
            };
            Ok(Box::new(tencent::TencentClient::new(
                http, &settings, secret, clock,
            )))
        }
    }
}

/// The JSON object `params` with one more member, `key`: the base64 of
/// `images[0]`, or (`array`) an array of every image's. The base64 is
/// written straight into the body: it needs no JSON escaping, so the
/// image's ~110 KB are neither copied from a `String` nor scanned for
/// characters to escape.
pub fn json_with_base64(
    params: &impl serde::Serialize,
    key: &str,
    images: &[&[u8]],
    array: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    let engine = base64_simd::STANDARD;
    let mut body = serde_json::to_vec(params)?;
    let encoded: usize = images
        .iter()
        .map(|i| engine.encoded_length(i.len()) + 3)
        .sum();
    body.reserve(key.len() + encoded + 8);
    // `{...}`: the closing brace goes, a comma if there is a member.
    if !array && images.len() != 1 {
        return Err(serde::ser::Error::custom("one image, not an array"));
    }
    if body.pop() != Some(b'}') {
        return Err(serde::ser::Error::custom(
            "the parameters are not a JSON object",
        ));
    }
    if body.len() > 1 {
        body.push(b',');
    }
    serde_json::to_writer(&mut body, key)?;
    body.push(b':');
    if array {
        body.push(b'[');
    }
    for (n, image) in images.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.push(b'"');
        let start = body.len();
        body.resize(start + engine.encoded_length(image.len()), 0);
        // SIMD where the CPU has it (SSE4.1/AVX2, NEON on aarch64): the
        // encoding is the body's largest part, a few times faster than
        // `base64`'s scalar engine. Same alphabet, same padding.
        let written = engine
            .encode(image, base64_simd::Out::from_slice(&mut body[start..]))
            .len();
        body.truncate(start + written);
        body.push(b'"');
    }
    if array {
        body.push(b']');
    }
    body.push(b'}');
    Ok(body)
}

/// Base64 of an image, as both vendors want it.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn a_body_with_base64_is_the_json_serde_would_write() {
        #[derive(serde::Serialize)]
        struct P<'a> {
            a: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Empty {}
        let (x, y): (&[u8], &[u8]) = (b"\xff\x00 \"quoted\"", b"ab");
        for (params, key, images, array, want) in [
            (
                serde_json::to_value(P { a: "\"q\"\n" }).expect("value"),
                "Image",
                vec![x],
                false,
                serde_json::json!({"a": "\"q\"\n", "Image": base64(x)}),
            ),
            (
                serde_json::to_value(Empty {}).expect("value"),
                "Images",
                vec![x, y],
                true,
                serde_json::json!({"Images": [base64(x), base64(y)]}),
            ),
            (
                serde_json::to_value(Empty {}).expect("value"),
                "Images",
                vec![],
                true,
                serde_json::json!({"Images": []}),
            ),
        ] {
            let body = json_with_base64(&params, key, &images, array).expect("body");
            let got: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(got, want);
        }
        assert!(json_with_base64(&[1], "Image", &[x], false).is_err());
        assert!(json_with_base64(&Empty {}, "Image", &[x, y], false).is_err());
    }

    #[test]
    fn skew_is_learned_outside_the_deadband() {
        let clock = FakeClock::new(1_000_000);
        let skew = SkewClock::new(Arc::new(clock.clone()));
        skew.observe(1_000_000 - 1_000, 1_000_000);
        assert_eq!(skew.offset_ms(), 0);
        // The device is 3 hours fast.
        skew.observe(1_000_000 - 3 * 3_600_000, 1_000_000);
        assert_eq!(skew.offset_ms(), -3 * 3_600_000 + 500);
        assert_eq!(skew.now_ms(), 1_000_000 - 3 * 3_600_000 + 500);
    }

    #[test]
    fn http_failures_map_to_classes() {
        let e: UploadError = HttpError {
            kind: HttpErrorKind::Unknown,
            message: "x".into(),
        }
        .into();
        assert_eq!((e.class, e.outcome_unknown), (ErrorClass::Retry, true));
        let e: UploadError = HttpError {
            kind: HttpErrorKind::Tls,
            message: "x".into(),
        }
        .into();
        assert_eq!((e.class, e.outcome_unknown), (ErrorClass::Operator, false));
        assert_eq!(classify_http_status(503).class, ErrorClass::Retry);
        assert_eq!(classify_http_status(429).class, ErrorClass::Retry);
        assert_eq!(classify_http_status(401).class, ErrorClass::Operator);
    }

    #[test]
    fn no_such_api_is_for_the_operator_whatever_the_body() {
        let e = no_such_api(404, "jd.endpoint", "https://h:1/x/jdai/faceCreate").expect("404");
        assert_eq!(
            (e.class, e.code.as_str()),
            (ErrorClass::Operator, "http_404")
        );
        assert!(
            e.message.contains("jd.endpoint") && e.message.contains("h:1"),
            "{e}"
        );
        assert!(no_such_api(405, "k", "https://h/").is_some());
        for ok in [200, 400, 429, 500] {
            assert!(no_such_api(ok, "k", "https://h/").is_none(), "{ok}");
        }
    }
}
