//! The trusted time floor: the earliest the true time can be.
//!
//! A board without a battery-backed clock boots at 1970 and keeps that time
//! until NTP runs, which a site network may block. Certificates would then
//! be "not valid yet" and nothing could be uploaded. The floor is the latest
//! of three times the device has good reason to believe have passed:
//!
//! - the build's own time (`BUILD_FLOOR_MS`, from build.rs);
//! - the last `Date` a cloud sent over a verified TLS session, kept in
//!   `state_dir/time-floor` across restarts and power cuts;
//! - the system clock itself: the floor never sets the time back.
//!
//! Certificates are checked at the floor; request signatures keep using the
//! cloud's time from `Date` ([`super::SkewClock`]). The floor only moves
//! forward, so a forged `Date` could at most make a certificate expire
//! early; and only verified sessions can deliver one.

use crate::clock::{BootStamp, Clock, UnixMillis};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When this build was made (its commit's time), in ms since the epoch.
pub const BUILD_FLOOR_MS: UnixMillis = parse_seconds(env!("ENROLLD_BUILD_FLOOR_S")) * 1000;

const fn parse_seconds(s: &str) -> i64 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n: i64 = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "ENROLLD_BUILD_FLOOR_S: digits only");
        n = n * 10 + (b[i] - b'0') as i64;
        i += 1;
    }
    n
}

/// The file in `state_dir` that keeps the last verified `Date`.
pub const FILE: &str = "time-floor";

/// The file is written again when the floor has moved this far, so a
/// steady stream of uploads does not write it on every answer.
const SAVE_EVERY_MS: i64 = 3_600_000;

pub struct TimeFloor {
    clock: Arc<dyn Clock>,
    file: Option<PathBuf>,
    /// The latest verified `Date`, or 0.
    seen_ms: AtomicI64,
    saved_ms: AtomicI64,
    /// A `Date` seen in this process, with the boot clock at that moment:
    /// the true time now is that `Date` plus the time since.
    anchor: Mutex<Option<(UnixMillis, BootStamp)>>,
}

impl std::fmt::Debug for TimeFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TimeFloor({} ms)", self.floor_ms())
    }
}

impl TimeFloor {
    /// A floor kept in `file` (read now; missing or unreadable counts as
    /// none), or only in memory.
    pub fn new(clock: Arc<dyn Clock>, file: Option<PathBuf>) -> Self {
        let seen = file.as_deref().map_or(0, read_floor);
        Self {
            clock,
            file,
            seen_ms: AtomicI64::new(seen),
            saved_ms: AtomicI64::new(seen),
            anchor: Mutex::new(None),
        }
    }

    pub fn in_state_dir(state_dir: &Path, clock: Arc<dyn Clock>) -> Self {
        Self::new(clock, Some(state_dir.join(FILE)))
    }

    /// The earliest the true time can be.
    pub fn floor_ms(&self) -> UnixMillis {
        BUILD_FLOOR_MS.max(self.seen_ms.load(Ordering::SeqCst))
    }

    /// The time certificates are checked at: never before the system clock.
    pub fn cert_time_ms(&self) -> UnixMillis {
        self.clock.now_ms().max(self.floor_ms())
    }

    /// The floor, when the system clock is before it (the clock is wrong).
    pub fn clock_behind(&self) -> Option<UnixMillis> {
        let floor = self.floor_ms();
        (self.clock.now_ms() < floor).then_some(floor)
    }

    /// The true time, when it is known: the system clock once it is past
    /// the floor, or a `Date` seen in this process plus the time since.
    pub fn true_now_ms(&self) -> Option<UnixMillis> {
        if self.clock_behind().is_none() {
            return Some(self.clock.now_ms());
        }
        let anchor = self.anchor.lock().ok()?.clone()?;
        let now = BootStamp::now()?;
        (now.boot_id == anchor.1.boot_id).then(|| anchor.0 + (now.boot_ms - anchor.1.boot_ms))
    }

    /// A cloud's `Date`, from an answer on a verified TLS session.
    pub fn observe(&self, server_ms: UnixMillis) {
        if let (Ok(mut a), Some(stamp)) = (self.anchor.lock(), BootStamp::now()) {
            *a = Some((server_ms, stamp));
        }
        let old = self.seen_ms.fetch_max(server_ms, Ordering::SeqCst);
        if server_ms <= old {
            return;
        }
        let saved = self.saved_ms.load(Ordering::SeqCst);
        if server_ms - saved < SAVE_EVERY_MS {
            return;
        }
        self.saved_ms.store(server_ms, Ordering::SeqCst);
        if let Some(file) = &self.file {
            if let Err(e) = write_floor(file, server_ms) {
                log::warn!("time floor {}: {e}", file.display());
            }
        }
    }

    /// For rustls: certificates are checked at [`Self::cert_time_ms`].
    pub fn time_provider(self: &Arc<Self>) -> Arc<dyn rustls::time_provider::TimeProvider> {
        Arc::new(FloorTime(self.clone()))
    }

    /// What `status` and the journal say while the clock is before the floor.
    pub fn warning(&self) -> Option<String> {
        self.clock_behind().map(|floor| {
            format!(
                "clock is before {} (it reads {}); check NTP or the RTC. Uploads go on, \
                 certificates are checked at that time and requests signed with the cloud's",
                crate::clock::rfc3339(floor),
                crate::clock::rfc3339(self.clock.now_ms())
            )
        })
    }
}

#[derive(Debug)]
struct FloorTime(Arc<TimeFloor>);

impl rustls::time_provider::TimeProvider for FloorTime {
    fn current_time(&self) -> Option<rustls_pki_types::UnixTime> {
        let ms = u64::try_from(self.0.cert_time_ms()).ok()?;
        Some(rustls_pki_types::UnixTime::since_unix_epoch(
            Duration::from_millis(ms),
        ))
    }
}

fn read_floor(path: &Path) -> UnixMillis {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            log::warn!("time floor {}: not a number; ignored", path.display());
            0
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            log::warn!("time floor {}: {e}; ignored", path.display());
            0
        }
    }
}

/// Written whole (temporary file, fsync, rename): a power cut leaves the old
/// floor or the new one.
fn write_floor(path: &Path, ms: UnixMillis) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{ms}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    const DAY: i64 = 86_400_000;

    #[test]
    fn the_build_time_is_a_floor_and_the_clock_is_never_set_back() {
        let clock = FakeClock::new(DAY);
        let floor = TimeFloor::new(Arc::new(clock.clone()), None);
        const { assert!(BUILD_FLOOR_MS > 1_750_000_000_000, "a 2025 or later build") };
        assert_eq!(floor.cert_time_ms(), BUILD_FLOOR_MS);
        assert_eq!(floor.clock_behind(), Some(BUILD_FLOOR_MS));
        let warning = floor.warning().expect("warned");
        assert!(warning.contains("check NTP or the RTC"), "{warning}");
        assert!(warning.contains("1970-01-02"), "{warning}");
        clock.set(BUILD_FLOOR_MS + DAY);
        assert_eq!(floor.cert_time_ms(), BUILD_FLOOR_MS + DAY);
        assert_eq!(floor.clock_behind(), None);
        assert_eq!(floor.warning(), None);
        assert_eq!(floor.true_now_ms(), Some(BUILD_FLOOR_MS + DAY));
    }

    #[test]
    fn a_verified_date_raises_the_floor_survives_a_restart_and_never_lowers_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(DAY);
        let later = BUILD_FLOOR_MS + 30 * DAY;
        let floor = TimeFloor::in_state_dir(dir.path(), Arc::new(clock.clone()));
        floor.observe(later);
        assert_eq!(floor.floor_ms(), later);
        let t = floor.true_now_ms().expect("known from the Date");
        assert!((later..later + 5_000).contains(&t), "{t}");
        floor.observe(later - DAY);
        assert_eq!(floor.floor_ms(), later, "an older Date does not lower it");
        // Power cut, reboot at 1970: the floor is read back.
        let again = TimeFloor::in_state_dir(dir.path(), Arc::new(clock.clone()));
        assert_eq!(again.floor_ms(), later);
        assert_eq!(again.true_now_ms(), None, "no Date in this process yet");
        // A small advance is kept in memory; a large one is written.
        again.observe(later + 60_000);
        assert_eq!(read_floor(&dir.path().join(FILE)), later);
        again.observe(later + 2 * SAVE_EVERY_MS);
        assert_eq!(
            read_floor(&dir.path().join(FILE)),
            later + 2 * SAVE_EVERY_MS
        );
    }

    #[test]
    fn a_damaged_floor_file_counts_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), "garbage\u{0}").expect("write");
        let floor = TimeFloor::in_state_dir(dir.path(), Arc::new(FakeClock::new(DAY)));
        assert_eq!(floor.floor_ms(), BUILD_FLOOR_MS);
    }
}
