//! A local stand-in for the vendors' clouds, so a technician can test a
//! device without credentials and the tests have a real HTTPS peer:
//! `enrolld-emulator serve jd|tencent --listen 127.0.0.1:PORT`. A crate of
//! its own: the device binary carries no HTTPS server or CA generator.
//!
//! It serves HTTPS with a certificate from a CA it generates (written to a file
//! for `[tls] extra_ca_file`), verifies signatures and timestamps, enforces the
//! vendors' image limits (and, by default, that the image holds a face), and
//! answers with the vendors' shapes and codes. It can be told to misbehave:
//! `--fault` at start, or `POST /__emulator/faults` while running.
//!
//! Admin endpoints (same port): `GET /__emulator/state`,
//! `POST /__emulator/faults` `{"fault": "rate-limit", "count": 2}` or
//! `{"clear": true}`, `POST /__emulator/skew` `{"seconds": -10800}`.
//! It only listens on loopback addresses.

pub mod demo;
mod http;
pub mod jd;
pub mod tencent;

use enrolld::capture::detect::{FaceDetector, SeetaDetector};
use enrolld::capture::frame::{decode_untrusted, DecodeLimits};
use enrolld::clock::{Clock, SystemClock, UnixMillis};
use enrolld::config::DetectConfig;
use enrolld::model::Provider;
use http::{read_request, write_response, Request};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// A misbehaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "ms")]
pub enum FaultKind {
    /// The vendor's rate-limit answer (JD 10043, Tencent RequestLimitExceeded).
    RateLimit,
    /// The vendor's busy answer (JD 10020, Tencent InternalError).
    Busy,
    /// HTTP 502 from a gateway, no vendor body.
    ServerError,
    /// Apply the request, then close the connection without answering.
    Drop,
    /// Close the connection after reading the request, without applying it.
    DropUnapplied,
    /// Apply the request, wait this many milliseconds, then answer.
    Slow(u64),
    /// Apply the request and never answer: hold the connection until the
    /// client gives up (tests of a client's receive timeout).
    Hang,
    /// Bad credentials (JD 10001, Tencent AuthFailure.SecretIdNotFound).
    BadCredentials,
    /// JD's daily quota (10040); Tencent LimitExceeded.
    Quota,
    /// Billing (JD 10010, Tencent ResourceUnavailable.InArrears).
    Billing,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::RateLimit => "rate-limit",
            Self::Busy => "busy",
            Self::ServerError => "5xx",
            Self::Drop => "drop",
            Self::DropUnapplied => "drop-unapplied",
            Self::Slow(_) => "slow",
            Self::Hang => "hang",
            Self::BadCredentials => "bad-credentials",
            Self::Quota => "quota",
            Self::Billing => "billing",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "rate-limit" => Self::RateLimit,
            "busy" => Self::Busy,
            "5xx" | "server-error" => Self::ServerError,
            "drop" => Self::Drop,
            "drop-unapplied" => Self::DropUnapplied,
            "hang" => Self::Hang,
            "bad-credentials" => Self::BadCredentials,
            "quota" => Self::Quota,
            "billing" => Self::Billing,
            other => match other.strip_prefix("slow:").and_then(|ms| ms.parse().ok()) {
                Some(ms) => Self::Slow(ms),
                None => {
                    return Err(format!(
                        "unknown fault {other:?}: rate-limit, busy, 5xx, drop, drop-unapplied, slow:MS, hang, bad-credentials, quota, billing"
                    ))
                }
            },
        })
    }
}

/// A fault that hits the next `remaining` vendor requests (of `action` only,
/// when set: `faceCreate`, `CreateFace`, `CreatePerson`, `GetPersonBaseInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub remaining: u32,
    pub action: Option<String>,
}

impl FromStr for Fault {
    type Err = String;
    /// `KIND[@ACTION][*COUNT]`, e.g. `slow:3000@CreateFace*2`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, count) = match s.rsplit_once('*') {
            Some((k, n)) => (
                k,
                n.parse::<u32>()
                    .map_err(|_| format!("bad count in {s:?}"))?,
            ),
            None => (s, 1),
        };
        let (kind, action) = match rest.split_once('@') {
            Some((k, a)) if !a.is_empty() => (k, Some(a.to_string())),
            Some(_) => return Err(format!("empty action in {s:?}")),
            None => (rest, None),
        };
        Ok(Fault {
            kind: kind.parse()?,
            remaining: count,
            action,
        })
    }
}

/// One face the emulator holds.
#[derive(Debug, Clone, Serialize)]
pub struct StoredFace {
    pub face_id: String,
    pub image_sha256: String,
    pub width: u32,
    pub height: u32,
    /// Faces the emulator's detector found in the image (None: not checked).
    pub faces_detected: Option<usize>,
}

impl StoredFace {
    /// A face the emulator accepted (signature, limits and face check
    /// passed); logged, so a test that only sees the log (a VM console) can
    /// tell what the cloud got.
    pub(crate) fn accepted(person: &str, face_id: String, c: ImageCheck) -> StoredFace {
        log::info!(
            "emulator: accepted a signed upload for {person:?}: face {face_id}, {}x{} JPEG, sha256 {}, faces detected: {}",
            c.width,
            c.height,
            c.sha256,
            c.faces.map_or("not checked".to_string(), |n| n.to_string())
        );
        StoredFace {
            face_id,
            image_sha256: c.sha256,
            width: c.width,
            height: c.height,
            faces_detected: c.faces,
        }
    }
}

/// A person (Tencent) or an outerId (JD) and its faces.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Person {
    pub name: String,
    pub groups: Vec<String>,
    pub faces: Vec<StoredFace>,
}

/// Everything the emulator has seen and holds; `GET /__emulator/state`.
#[derive(Debug, Default, Serialize)]
pub struct State {
    pub persons: BTreeMap<String, Person>,
    /// Requests by action (`faceCreate`, `CreateFace`, ...).
    pub requests: BTreeMap<String, u64>,
    /// Error answers by code.
    pub errors: BTreeMap<String, u64>,
    pub faults: VecDeque<Fault>,
    pub skew_ms: i64,
    next_face: u64,
}

impl State {
    fn new_face_id(&mut self) -> String {
        self.next_face += 1;
        format!("{}", 2_875_186_538_564_559_000u64 + self.next_face)
    }

    /// The first queued fault for `action`, used up by one.
    fn take_fault(&mut self, action: &str) -> Option<FaultKind> {
        let i = self
            .faults
            .iter()
            .position(|f| f.action.as_deref().is_none_or(|a| a == action))?;
        let fault = &mut self.faults[i];
        let kind = fault.kind;
        fault.remaining = fault.remaining.saturating_sub(1);
        if fault.remaining == 0 {
            self.faults.remove(i);
        }
        Some(kind)
    }
}

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub vendor: Provider,
    pub listen: SocketAddr,
    /// JD appkey or Tencent SecretId the requests must carry.
    pub key_id: String,
    /// The secret signatures are checked with.
    pub secret: Vec<u8>,
    pub faults: Vec<Fault>,
    pub skew_s: i64,
    /// Run the face detector on every image (vendors refuse faceless ones).
    pub check_faces: bool,
    /// JD success answer style: `code` envelope with object result, `code`
    /// with a JSON-like string result, or the seed page's `status` envelope.
    pub jd_shape: JdShape,
    /// When the server certificate becomes valid (ms since the epoch); it
    /// stays valid for 90 days after that or after now, as a public CA's
    /// would. `None`: three days ago, so a device whose clock reads 1970 or
    /// last week is refused unless it checks certificates at a true time.
    pub cert_not_before_ms: Option<i64>,
}

/// The documented JD answer envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JdShape {
    CodeObject,
    CodeString,
    StatusString,
}

impl FromStr for JdShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "object" => Ok(Self::CodeObject),
            "string" => Ok(Self::CodeString),
            "status" => Ok(Self::StatusString),
            other => Err(format!(
                "unknown JD answer shape {other:?}: object, string, status"
            )),
        }
    }
}

/// Why the emulator could not start.
#[derive(Debug)]
pub struct EmulatorError(pub String);

impl fmt::Display for EmulatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EmulatorError {}

/// What a vendor handler decided.
pub(crate) enum Outcome {
    /// Answer with this status and JSON body.
    Answer(u16, Value),
    /// Apply happened; close without answering.
    Drop,
    /// Apply happened; never answer, wait for the client to close.
    Hang,
}

/// Shared between connections.
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub state: Mutex<State>,
    clock: SystemClock,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The emulator's (possibly skewed) time.
    pub fn now_ms(&self) -> UnixMillis {
        self.clock.now_ms() + self.lock().skew_ms
    }

    pub fn count_error(&self, code: &str) {
        *self.lock().errors.entry(code.to_string()).or_default() += 1;
    }
}

/// Checks an uploaded image like the vendors do; `Err` names what is wrong.
pub(crate) struct ImageCheck {
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    pub faces: Option<usize>,
    /// Mean and standard deviation of the image's luma (0-255).
    pub luma_mean: f64,
    pub luma_std: f64,
}

impl ImageCheck {
    /// Tencent's `QualityControl` (0 none, 1-4 ever stricter), as this
    /// emulator stands in for it: light and contrast. Level L wants a mean
    /// luma within 10+5L..=245-5L and a deviation of at least 10+3L, so
    /// a dark, washed-out or flat photo fails where a fair portrait passes.
    pub fn meets_quality(&self, level: u64) -> bool {
        let l = level.min(4) as f64;
        level == 0
            || ((10.0 + 5.0 * l..=245.0 - 5.0 * l).contains(&self.luma_mean)
                && self.luma_std >= 10.0 + 3.0 * l)
    }
}

pub(crate) enum ImageProblem {
    Decode,
    TooSmall,
    TooLarge,
    NoFace,
}

/// A vendor's pixel limits: shortest edge, longest edge of a JPEG and of
/// any other format (Tencent: 4000 px for JPEG, 2000 px for PNG and BMP).
#[derive(Clone, Copy)]
pub(crate) struct Edges {
    pub min: u32,
    pub max_jpeg: u32,
    pub max_other: u32,
}

pub(crate) fn check_image(
    bytes: &[u8],
    edges: Edges,
    detector: &mut Option<SeetaDetector>,
    check_faces: bool,
) -> Result<ImageCheck, ImageProblem> {
    let img =
        decode_untrusted(bytes, &DecodeLimits::default()).map_err(|_| ImageProblem::Decode)?;
    let (w, h) = img.dimensions();
    let max_edge = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => edges.max_jpeg,
        _ => edges.max_other,
    };
    if w.min(h) < edges.min {
        return Err(ImageProblem::TooSmall);
    }
    if w.max(h) > max_edge {
        return Err(ImageProblem::TooLarge);
    }
    let gray = image::imageops::grayscale(&img);
    let n = gray.len().max(1) as f64;
    let luma_mean = gray.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let luma_std = (gray
        .iter()
        .map(|&v| (f64::from(v) - luma_mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let faces = if check_faces {
        if detector.is_none() {
            let cfg = DetectConfig {
                min_face_px: 34,
                ..DetectConfig::default()
            };
            *detector = SeetaDetector::new(&cfg).ok();
        }
        let n = detector.as_mut().map_or(0, |d| d.detect(&gray).len());
        if n == 0 {
            return Err(ImageProblem::NoFace);
        }
        Some(n)
    } else {
        None
    };
    Ok(ImageCheck {
        sha256: enrolld::cloud::sign::sha256_hex(bytes),
        width: w,
        height: h,
        faces,
        luma_mean,
        luma_std,
    })
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Generates the CA and server certificate, binds and starts serving.
    pub fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        if !config.listen.ip().is_loopback() {
            return Err(EmulatorError(format!(
                "{}: the emulator only listens on loopback addresses (127.0.0.1, ::1)",
                config.listen
            )));
        }
        let (ca_pem, tls) = make_tls(config.cert_not_before_ms).map_err(EmulatorError)?;
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| EmulatorError(format!("{}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| EmulatorError(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| EmulatorError(e.to_string()))?;
        let state = State {
            faults: config.faults.iter().cloned().collect(),
            skew_ms: config.skew_s * 1000,
            ..State::default()
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            clock: SystemClock,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("emulator".into())
                .spawn(move || accept_loop(&listener, &shared, &tls, &stop))
                .map_err(|e| EmulatorError(e.to_string()))?
        };
        Ok(Emulator {
            shared,
            addr,
            ca_pem,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`, for `[jd] endpoint` / `[tencent] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate (PEM) to trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the emulator's CA certificate, readable by all (mode 0644):
    /// a certificate is public, and the daemon that trusts it usually runs
    /// as another user than the emulator, whose umask (0077) would otherwise
    /// leave the file unreadable to it.
    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, &self.ca_pem)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
    }

    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    pub fn set_skew(&self, seconds: i64) {
        self.shared.lock().skew_ms = seconds * 1000;
    }

    /// A JSON snapshot of the state (as `GET /__emulator/state`).
    pub fn state(&self) -> Value {
        serde_json::to_value(&*self.shared.lock()).unwrap_or(Value::Null)
    }

    /// Runs `f` on the state.
    /// Lifts every fault still pending: the operator fixed it in the
    /// console (paid the bill, restored the key).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.shared.lock())
    }

    /// Stops accepting and waits for the accept loop to end.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs an emulator until SIGTERM or SIGINT (`enrolld-emulator serve`):
/// writes its CA certificate to `ca_out`, then prints one banner line on
/// stdout (JSON with `json`) naming its endpoint, for scripts to read.
pub fn serve(config: EmulatorConfig, ca_out: &Path, json: bool) -> Result<(), String> {
    use std::io::Write;
    let vendor = config.vendor;
    let mut emulator = Emulator::start(config).map_err(|e| e.to_string())?;
    emulator
        .write_ca(ca_out)
        .map_err(|e| format!("{}: {e}", ca_out.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| format!("signals: {e}"))?;
    }
    let banner = if json {
        json!({"vendor": vendor, "endpoint": emulator.endpoint(), "ca": ca_out}).to_string()
    } else {
        format!(
            "emulating {vendor} at {} (CA certificate in {})",
            emulator.endpoint(),
            ca_out.display()
        )
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{banner}").and_then(|()| out.flush());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    emulator.stop();
    Ok(())
}

fn make_tls(not_before_ms: Option<i64>) -> Result<(String, Arc<rustls::ServerConfig>), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let err = |e: rcgen::Error| format!("certificate: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "enrolld emulator CA");
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let leaf_key = KeyPair::generate().map_err(err)?;
    let mut leaf_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "enrolld emulator");
    let now_ms = enrolld::clock::Clock::now_ms(&enrolld::clock::SystemClock);
    let from_ms = not_before_ms.unwrap_or(now_ms - 3 * 86_400_000);
    let until_ms = from_ms.max(now_ms) + 90 * 86_400_000;
    let at = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .map_err(|e| format!("certificate validity: {e}"))
    };
    leaf_params.not_before = at(from_ms)?;
    leaf_params.not_after = at(until_ms)?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .map_err(err)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(leaf.der().to_vec()),
                CertificateDer::from(ca.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    Ok((ca.pem(), Arc::new(config)))
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: &Arc<rustls::ServerConfig>,
    stop: &Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (shared, tls, stop, active) =
                    (shared.clone(), tls.clone(), stop.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("emulator-conn".into())
                    .spawn(move || {
                        serve_connection(stream, &shared, tls, &stop);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    log::error!("emulator: cannot start a connection thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => {
                log::warn!("emulator: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    shared: &Shared,
    tls: Arc<rustls::ServerConfig>,
    stop: &AtomicBool,
) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    let mut tls_stream = rustls::StreamOwned::new(conn, stream);
    let mut detector: Option<SeetaDetector> = None;
    while !stop.load(Ordering::SeqCst) {
        let req = match read_request(&mut tls_stream) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = write_response(
                    &mut tls_stream,
                    e.status,
                    &json!({"error": e.message}),
                    shared.now_ms(),
                    false,
                );
                return;
            }
        };
        let keep_alive = req.keep_alive;
        match handle(shared, &req, &mut detector) {
            Outcome::Drop => return,
            Outcome::Hang => {
                // Until the client closes, the read deadline (30 s) passes
                // or the emulator stops.
                let mut sink = [0u8; 256];
                while !stop.load(Ordering::SeqCst) {
                    match std::io::Read::read(&mut tls_stream, &mut sink) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                return;
            }
            Outcome::Answer(status, body) => {
                if write_response(&mut tls_stream, status, &body, shared.now_ms(), keep_alive)
                    .is_err()
                    || !keep_alive
                {
                    return;
                }
            }
        }
    }
}

fn handle(shared: &Shared, req: &Request, detector: &mut Option<SeetaDetector>) -> Outcome {
    if let Some(admin) = req.path.strip_prefix("/__emulator/") {
        return admin_request(shared, admin, req);
    }
    match shared.config.vendor {
        Provider::Jd => jd::handle(shared, req, detector),
        Provider::Tencent => tencent::handle(shared, req, detector),
    }
}

/// Applies the fault at the front of the queue around a vendor handler.
pub(crate) fn with_faults(
    shared: &Shared,
    action: &str,
    vendor_answer: impl FnOnce(FaultKind) -> Option<Outcome>,
    apply: impl FnOnce() -> Outcome,
) -> Outcome {
    let fault = shared.lock().take_fault(action);
    let Some(kind) = fault else {
        return apply();
    };
    shared.count_error(&format!("fault:{}", kind.name()));
    match kind {
        FaultKind::ServerError => Outcome::Answer(502, json!({"message": "bad gateway"})),
        FaultKind::DropUnapplied => Outcome::Drop,
        FaultKind::Drop => {
            let _ = apply();
            Outcome::Drop
        }
        FaultKind::Hang => {
            let _ = apply();
            Outcome::Hang
        }
        FaultKind::Slow(ms) => {
            let answer = apply();
            std::thread::sleep(Duration::from_millis(ms));
            answer
        }
        other => vendor_answer(other).unwrap_or_else(apply),
    }
}

fn admin_request(shared: &Shared, what: &str, req: &Request) -> Outcome {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    match (req.method.as_str(), what) {
        ("GET", "state") => Outcome::Answer(
            200,
            serde_json::to_value(&*shared.lock()).unwrap_or(Value::Null),
        ),
        ("POST", "faults") => {
            let mut state = shared.lock();
            if body.get("clear").and_then(Value::as_bool) == Some(true) {
                state.faults.clear();
            }
            if let Some(kind) = body.get("fault").and_then(Value::as_str) {
                let count = body.get("count").and_then(Value::as_u64).unwrap_or(1) as u32;
                let action = body
                    .get("action")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match kind.parse::<FaultKind>() {
                    Ok(kind) => state.faults.push_back(Fault {
                        kind,
                        remaining: count,
                        action,
                    }),
                    Err(e) => return Outcome::Answer(400, json!({"error": e})),
                }
            }
            Outcome::Answer(200, json!({"faults": state.faults}))
        }
        ("POST", "skew") => match body.get("seconds").and_then(Value::as_i64) {
            Some(s) => {
                shared.lock().skew_ms = s * 1000;
                Outcome::Answer(200, json!({"skew_s": s}))
            }
            None => Outcome::Answer(400, json!({"error": "expected {\"seconds\": N}"})),
        },
        _ => Outcome::Answer(404, json!({"error": "unknown admin request"})),
    }
}

/// A request id in Tencent's format.
pub(crate) fn request_id(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        n as u32,
        (n >> 32) as u16,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        let f = |kind, remaining, action: Option<&str>| Fault {
            kind,
            remaining,
            action: action.map(str::to_string),
        };
        assert_eq!(
            "rate-limit".parse::<Fault>(),
            Ok(f(FaultKind::RateLimit, 1, None))
        );
        assert_eq!(
            "slow:1500*3".parse::<Fault>(),
            Ok(f(FaultKind::Slow(1500), 3, None))
        );
        assert_eq!(
            "drop@CreateFace*2".parse::<Fault>(),
            Ok(f(FaultKind::Drop, 2, Some("CreateFace")))
        );
        assert!("drop@".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
        assert!("drop*x".parse::<Fault>().is_err());
    }

    #[test]
    fn refuses_non_loopback_addresses() {
        let config = EmulatorConfig {
            vendor: Provider::Jd,
            listen: "0.0.0.0:0".parse().expect("addr"),
            key_id: "k".into(),
            secret: b"s".to_vec(),
            faults: vec![],
            skew_s: 0,
            check_faces: false,
            jd_shape: JdShape::CodeObject,
            cert_not_before_ms: None,
        };
        let err = Emulator::start(config).err().expect("refused");
        assert!(err.0.contains("loopback"), "{err}");
    }
}
