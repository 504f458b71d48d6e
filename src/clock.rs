//! Time as an injectable edge, so queue and retry decisions are testable.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMillis = i64;

/// Wall-clock time source.
pub trait Clock: Send + Sync {
    /// Current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> UnixMillis;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMillis {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A clock set before 1970 is broken; report it as negative time
            // instead of panicking.
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// Where in this boot something happened: the kernel's boot id and the
/// time since boot (CLOCK_BOOTTIME, which counts suspend and which no one
/// sets). Two stamps of one boot give the true time between them even
/// while the wall clock is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootStamp {
    pub boot_id: String,
    pub boot_ms: i64,
}

impl BootStamp {
    /// The boot id is read once per process (it cannot change under it);
    /// every enqueue, upload and answer takes a stamp.
    pub fn now() -> Option<Self> {
        static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let id = BOOT_ID.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
        });
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Some(Self {
            boot_id: id.clone()?,
            boot_ms: t.tv_sec * 1000 + t.tv_nsec / 1_000_000,
        })
    }
}

/// A clock tests can set and advance; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    pub fn new(start: UnixMillis) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }
    pub fn set(&self, t: UnixMillis) {
        self.0.store(t, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Monotonic time for the daemon's deadlines (an armed person's TTL, how
/// long a `follow_upload` client waits, the shutdown grace, the watchdog):
/// never moved by NTP or an operator setting the date, and faked in tests so
/// deadlines are tested without sleeping.
pub trait Timer: Send + Sync {
    /// Time since an arbitrary origin.
    fn elapsed(&self) -> Duration;
    /// Waits `d`; a fake timer moves its time on instead.
    fn sleep(&self, d: Duration);
}

/// The daemon's stop, as something its threads wait on rather than look at:
/// a wait for a deadline (a retry, a rate limit, an LED step) is
/// [`Stop::wait`], which ends at the deadline or at once when the daemon
/// stops; a thread blocked on a descriptor polls [`Stop::fd`] beside it. No
/// thread wakes on a tick to read a flag.
#[derive(Debug)]
pub struct Stop {
    stopped: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
    /// Readable once stopped (an eventfd); `None` where none could be made.
    fd: Option<std::os::fd::OwnedFd>,
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    pub fn new() -> Self {
        use rustix::event::{eventfd, EventfdFlags};
        Self {
            stopped: std::sync::Mutex::new(false),
            changed: std::sync::Condvar::new(),
            fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok(),
        }
    }

    /// Stops: every wait ends, now and later.
    pub fn set(&self) {
        let mut stopped = self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stopped = true;
        self.changed.notify_all();
        if let Some(fd) = &self.fd {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    pub fn is_set(&self) -> bool {
        *self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits `d`, or less if the daemon stops; true when it has stopped.
    pub fn wait(&self, d: Duration) -> bool {
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stopped, _) = self
            .changed
            .wait_timeout_while(stopped, d, |stopped| !*stopped)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stopped
    }

    /// A descriptor that becomes readable when the daemon stops, to poll
    /// beside a device's.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

/// The system's monotonic clock (`CLOCK_MONOTONIC`).
#[derive(Debug, Clone, Copy)]
pub struct SystemTimer(Instant);

impl SystemTimer {
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for SystemTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer for SystemTimer {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A fake clock is also a fake timer: its milliseconds, and sleeping
/// advances them.
impl Timer for FakeClock {
    fn elapsed(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
    }
    fn sleep(&self, d: Duration) {
        self.advance(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    }
}

/// Formats a Unix time in milliseconds as RFC 3339 UTC (`2026-11-21T09:15:00.123Z`).
pub fn rfc3339(ms: UnixMillis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats an HTTP `Date` header value (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(ms: UnixMillis) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Parses an IMF-fixdate HTTP `Date` header; `None` for anything else.
pub fn parse_http_date(s: &str) -> Option<UnixMillis> {
    let rest = s.trim().split_once(", ")?.1;
    let mut parts = rest.split_ascii_whitespace();
    let d: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let m = MONTHS.iter().position(|&n| n.eq_ignore_ascii_case(month))? as u32 + 1;
    let y: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, se) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some((days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + se) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_ends_every_wait_at_once_and_readies_its_descriptor() {
        let stop = Arc::new(Stop::new());
        assert!(
            !stop.wait(Duration::from_millis(1)),
            "not stopped: the wait times out"
        );
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                (stop.wait(Duration::from_secs(600)), started.elapsed())
            })
        };
        stop.set();
        let (stopped, took) = waiter.join().expect("join");
        assert!(stopped);
        assert!(took < Duration::from_secs(60), "{took:?}");
        assert!(stop.is_set() && stop.wait(Duration::from_secs(600)));
        let fd = stop.fd().expect("eventfd");
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ready = rustix::event::poll(&mut fds, None).expect("poll");
        assert_eq!(ready, 1, "readable once stopped");
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // Tencent's signing example: 1551113065 is 2019-02-25 UTC.
        assert_eq!(rfc3339(1_551_113_065_000), "2019-02-25T16:44:25.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        for t in [0, 951_782_400_000, 1_551_113_065_000, 4_102_444_799_000] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t));
            assert_eq!(
                days_from_civil(
                    civil_from_days(t / 86_400_000).0,
                    civil_from_days(t / 86_400_000).1,
                    civil_from_days(t / 86_400_000).2
                ),
                t / 86_400_000
            );
        }
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
    }

    #[test]
    fn fake_clock_is_shared_between_clones() {
        let c = FakeClock::new(10);
        let c2 = c.clone();
        c.advance(5);
        assert_eq!(c2.now_ms(), 15);
        c2.set(100);
        assert_eq!(c.now_ms(), 100);
    }
}
