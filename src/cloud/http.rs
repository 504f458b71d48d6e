//! The one HTTPS client both vendors use: a shared `ureq` agent with
//! keep-alive, an explicit deadline on every phase, HTTPS only, response
//! bodies capped, and trust in Mozilla's roots plus `[tls] extra_ca_file`.
//!
//! Errors say whether the request may have reached the server: the uploader
//! must not blindly resend something the cloud may already have applied.
//! Messages never contain the URL (JD puts the appkey and signature there).

use crate::clock::parse_http_date;
use crate::clock::UnixMillis;
use crate::cloud::timefloor::TimeFloor;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, PemItem};
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};

/// Deadlines and limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// DNS, TCP and TLS handshake.
    pub connect_timeout: Duration,
    /// Sending the request, headers and body.
    pub send_timeout: Duration,
    /// Waiting for and reading the whole answer.
    pub recv_timeout: Duration,
    /// Largest answer body read.
    pub max_body_bytes: u64,
    /// Extra trusted CA certificates (PEM).
    pub extra_ca_file: Option<PathBuf>,
    /// The time certificates are checked at, raised by each answer's
    /// `Date`; `None`: the build's time and the system clock only.
    pub time_floor: Option<Arc<TimeFloor>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            recv_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            extra_ca_file: None,
            time_floor: None,
        }
    }
}

/// An answer, whatever its status.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The server's `Date` header, if it sent a valid one.
    pub date_ms: Option<UnixMillis>,
    pub body: Vec<u8>,
}

/// What went wrong, in the terms the uploader decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpErrorKind {
    /// Nothing reached the server: DNS, connection refused, unreachable.
    Connect,
    /// The TLS handshake failed (untrusted certificate, wrong host name).
    Tls,
    /// The request was not sent completely.
    Send,
    /// The request was sent; the answer did not arrive (timeout, connection
    /// lost, malformed or oversized answer). The server may have applied it.
    Unknown,
    /// The configuration is wrong (not https, bad URL, bad CA file).
    Config,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub kind: HttpErrorKind,
    pub message: String,
}

impl HttpError {
    /// Whether the server may have received and applied the request.
    pub fn maybe_applied(&self) -> bool {
        self.kind == HttpErrorKind::Unknown
    }

    fn new(kind: HttpErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

/// The shared HTTPS client.
/// ureq's resolver, which answers a lookup with a deadline from a thread
/// of its own (one thread per request, even on a kept-alive connection),
/// with an IP address answered at once and a host's addresses kept for
/// [`RESOLVED_TTL`]: one thread per host and half minute, not per upload.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    cache: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (
                std::time::Instant,
                ureq::unversioned::resolver::ResolvedSocketAddrs,
            ),
        >,
    >,
}

/// How long resolved addresses are used again.
const RESOLVED_TTL: Duration = Duration::from_secs(30);
/// Hosts remembered at most (a device talks to one or two).
const RESOLVED_MAX: usize = 16;

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return self.inner.resolve(uri, config, timeout);
        };
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            let mut out = self.empty();
            out.push(std::net::SocketAddr::new(ip, port));
            return Ok(out);
        }
        let key = format!("{scheme}://{host}:{port}");
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, addrs)) = cache.get(&key) {
            if at.elapsed() < RESOLVED_TTL {
                return Ok(addrs.clone());
            }
        }
        drop(cache);
        let addrs = self.inner.resolve(uri, config, timeout)?;
        cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= RESOLVED_MAX {
            cache.clear();
        }
        cache.insert(key, (std::time::Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

pub struct HttpClient {
    agent: ureq::Agent,
    max_body: u64,
    floor: Arc<TimeFloor>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// Reads the PEM certificates of a CA file.
pub fn load_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, HttpError> {
    let bad = |why: String| {
        HttpError::new(
            HttpErrorKind::Config,
            format!("tls.extra_ca_file {}: {why}", path.display()),
        )
    };
    let pem =
        crate::trust::read(path, crate::trust::Privacy::Public).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(e.to_string()))? {
            PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

impl HttpClient {
    pub fn new(cfg: &HttpConfig) -> Result<Self, HttpError> {
        let mut roots: Vec<rustls_pki_types::CertificateDer<'static>> =
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
        if let Some(path) = &cfg.extra_ca_file {
            roots.extend(
                load_ca_file(path)?
                    .iter()
                    .map(|c| rustls_pki_types::CertificateDer::from(c.der().to_vec())),
            );
        }
        let floor = cfg
            .time_floor
            .clone()
            .unwrap_or_else(|| Arc::new(TimeFloor::new(Arc::new(crate::clock::SystemClock), None)));
        let tls = crate::cloud::tls::client_config(&roots, &floor)
            .map_err(|e| HttpError::new(HttpErrorKind::Config, format!("TLS: {e}")))?;
        let config = ureq::Agent::config_builder()
            .https_only(true)
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("enrolld/", env!("CARGO_PKG_VERSION")))
            .timeout_resolve(Some(cfg.connect_timeout))
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_send_request(Some(cfg.send_timeout))
            .timeout_send_body(Some(cfg.send_timeout))
            .timeout_recv_response(Some(cfg.recv_timeout))
            .timeout_recv_body(Some(cfg.recv_timeout))
            .timeout_global(Some(
                cfg.connect_timeout + cfg.send_timeout + cfg.recv_timeout,
            ))
            .max_idle_connections(8)
            .max_idle_connections_per_host(4)
            .max_idle_age(Duration::from_secs(50))
            // HTTPS_PROXY / ALL_PROXY and NO_PROXY, as `config check` shows.
            .proxy(ureq::Proxy::try_from_env())
            .build();
        // ureq's own chain, with enrolld's TLS in place of its rustls.
        let connector = ()
            .chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(crate::cloud::tls::FloorTlsConnector { config: tls });
        let agent = ureq::Agent::with_parts(config, connector, CachingResolver::default());
        Ok(Self {
            agent,
            max_body: cfg.max_body_bytes,
            floor,
        })
    }

    /// POSTs `body`; any HTTP status is an answer, not an error.
    pub fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, HttpError> {
        if !url.starts_with("https://") {
            return Err(HttpError::new(
                HttpErrorKind::Config,
                "only https:// endpoints are allowed",
            ));
        }
        let host = host_of(url);
        let (started, sent) = (std::time::Instant::now(), body.len());
        let mut req = self.agent.post(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).map_err(|e| {
            let mut err = classify(e, host);
            // A certificate "not valid yet" on a device whose clock is wrong.
            if err.kind == HttpErrorKind::Tls {
                if let Some(w) = self.floor.warning() {
                    err.message = format!("{}; {w}", err.message);
                }
            }
            err
        })?;
        let status = resp.status().as_u16();
        let date_ms = resp
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        // Every session is verified: its Date raises the floor.
        if let Some(d) = date_ms {
            self.floor.observe(d);
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.max_body)
            .read_to_vec()
            .map_err(|e| classify(e, host))?;
        // The host and the path only: JD's query carries the appkey and sign.
        log::debug!(
            "POST {}: {status} in {} ms ({} bytes sent, {} received)",
            crate::config::mask_userinfo(url.split('?').next().unwrap_or_default()),
            started.elapsed().as_millis(),
            sent,
            body.len()
        );
        Ok(HttpResponse {
            status,
            date_ms,
            body,
        })
    }
}

/// The proxy the uploads go through, from the environment, as `config
/// check` shows it: the variable, its URL with any user:password masked,
/// and NO_PROXY.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxyInfo {
    pub variable: String,
    pub url: String,
    pub no_proxy: Option<String>,
}

/// The variables ureq reads, in its order (the first one set that parses wins).
pub const PROXY_VARIABLES: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// The proxy ureq will use, or `None` when no variable names one it accepts.
pub fn proxy_from_env() -> Option<ProxyInfo> {
    let no_proxy = ["NO_PROXY", "no_proxy"]
        .iter()
        .find_map(|v| std::env::var(v).ok());
    PROXY_VARIABLES.iter().find_map(|v| {
        let value = std::env::var(v).ok()?;
        ureq::Proxy::new(&value).ok()?;
        Some(ProxyInfo {
            variable: (*v).to_string(),
            // ureq takes a bare host:port as http://; mask user:password
            // there too.
            url: crate::config::mask_userinfo(&if value.contains("://") {
                value.clone()
            } else {
                format!("http://{value}")
            }),
            no_proxy: no_proxy.clone(),
        })
    })
}

/// `https://host:port/path?query` -> `host:port`, for messages.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

fn classify(e: ureq::Error, host: &str) -> HttpError {
    use ureq::{Error as E, Timeout as T};
    use HttpErrorKind as K;
    let (kind, what) = match e {
        E::Timeout(t) => match t {
            T::Resolve | T::Connect => (K::Connect, format!("connecting timed out ({t})")),
            T::SendRequest | T::SendBody | T::PerWrite => {
                (K::Send, format!("sending timed out ({t})"))
            }
            _ => (K::Unknown, format!("no answer in time ({t})")),
        },
        E::HostNotFound => (K::Connect, "host not found".into()),
        E::ConnectionFailed => (K::Connect, "connection failed".into()),
        E::Tls(why) => (K::Tls, format!("TLS: {why}")),
        E::Rustls(why) => (K::Tls, format!("TLS: {why}")),
        E::Pem(why) => (K::Config, format!("certificate: {why}")),
        E::BadUri(_) | E::RequireHttpsOnly(_) | E::TlsRequired => {
            (K::Config, "invalid endpoint URL".into())
        }
        E::BodyExceedsLimit(n) => (K::Unknown, format!("answer larger than {n} bytes")),
        // ureq hands rustls' certificate errors over inside an io::Error.
        E::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            (K::Tls, format!("TLS: {io}"))
        }
        E::Io(io) => {
            use std::io::ErrorKind as I;
            match io.kind() {
                // Nothing was sent on these.
                I::ConnectionRefused
                | I::AddrNotAvailable
                | I::NetworkUnreachable
                | I::HostUnreachable
                | I::NetworkDown => (K::Connect, format!("cannot connect: {io}")),
                _ => (K::Unknown, format!("connection lost: {io}")),
            }
        }
        other => (K::Unknown, format!("{other}")),
    };
    HttpError::new(kind, format!("{host}: {}", without_links(&what)))
}

/// A library's message less the documentation links some carry (rustls
/// appends one to "peer closed connection without sending TLS
/// close_notify"): a technician reads the log, not the library's manual.
fn without_links(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for word in message.split(' ') {
        if word.starts_with("https://") || word.starts_with("http://") {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.trim_end_matches([':', ' ']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_documentation_links_are_left_out_of_messages() {
        let m = "connection lost: peer closed connection without sending TLS close_notify: \
                 https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof";
        assert_eq!(
            without_links(m),
            "connection lost: peer closed connection without sending TLS close_notify"
        );
        assert_eq!(without_links("host not found"), "host not found");
    }

    #[test]
    fn hosts_are_shown_without_path_or_query() {
        assert_eq!(
            host_of("https://aiapi.jd.com/jdai/faceCreate?appkey=k&sign=s"),
            "aiapi.jd.com"
        );
        assert_eq!(host_of("https://127.0.0.1:8443/"), "127.0.0.1:8443");
    }

    #[test]
    fn plain_http_is_refused_before_any_traffic() {
        let client = HttpClient::new(&HttpConfig::default()).expect("client");
        let err = client
            .post("http://127.0.0.1:9/", &[], b"{}")
            .expect_err("http");
        assert_eq!(err.kind, HttpErrorKind::Config);
    }

    #[test]
    fn a_closed_port_is_a_connect_error_not_an_unknown_outcome() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = HttpClient::new(&HttpConfig::default()).expect("client");
        let err = client
            .post(&format!("https://127.0.0.1:{port}/"), &[], b"{}")
            .expect_err("closed");
        assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
        assert!(!err.maybe_applied());
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_config_error() {
        let f = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(f.path(), "not a pem").expect("write");
        let cfg = HttpConfig {
            extra_ca_file: Some(f.path().to_path_buf()),
            ..HttpConfig::default()
        };
        let err = HttpClient::new(&cfg).expect_err("bad ca");
        assert_eq!(err.kind, HttpErrorKind::Config);
        assert!(err.message.contains("tls.extra_ca_file"));
    }
}
