//! systemd's notify protocol: `READY=1`, `STATUS=...`, `WATCHDOG=1`,
//! `STOPPING=1`, sent as datagrams to `$NOTIFY_SOCKET`. Without that
//! variable every call is a no-op, so one binary works in and out of systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager (or nothing, outside systemd).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
    pub fn from_env() -> Self {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").and_then(|p| p.into_string().ok())
        else {
            return Self { target: None };
        };
        // Non-blocking: if the receiver's queue is full, a notification is
        // dropped rather than stalling the main loop (and with it the watchdog).
        match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(sock) => Self {
                target: Some((sock, path)),
            },
            Err(e) => {
                log::warn!("NOTIFY_SOCKET set but no socket could be made: {e}");
                Self { target: None }
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (lines such as `READY=1\nSTATUS=...`).
    pub fn notify(&self, state: &str) {
        let Some((sock, path)) = &self.target else {
            return;
        };
        let result = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
        } else {
            sock.send_to(state.as_bytes(), path)
        };
        if let Err(e) = result {
            log::debug!("sd_notify: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    pub fn reloading(&self) {
        self.notify("RELOADING=1");
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// The watchdog interval systemd asks for (`WatchdogSec=`), if it is for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_real_datagram_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().expect("sock"),
                path.display().to_string(),
            )),
        };
        assert!(n.enabled());
        n.ready("queue 0\nok");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=queue 0 ok");
        n.watchdog();
        let len = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_full_receiver_never_blocks_the_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let _listener = UnixDatagram::bind(&path).expect("bind");
        let sock = UnixDatagram::unbound().expect("sock");
        sock.set_nonblocking(true).expect("nonblocking");
        let n = Notifier {
            target: Some((sock, path.display().to_string())),
        };
        // Nobody reads: the queue fills up, and every call still returns
        // (a blocking send would hang here, however fast the machine).
        for _ in 0..10_000 {
            n.watchdog();
        }
        let Some((sock, path)) = &n.target else {
            panic!("target kept")
        };
        let full = sock.send_to(b"WATCHDOG=1", path).map_err(|e| e.kind());
        assert_eq!(
            full,
            Err(std::io::ErrorKind::WouldBlock),
            "the queue is full"
        );
    }

    #[test]
    fn without_notify_socket_nothing_happens() {
        let n = Notifier { target: None };
        assert!(!n.enabled());
        n.ready("x");
    }
}
