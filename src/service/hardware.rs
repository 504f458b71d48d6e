//! The technician's hardware: an enrollment button (a Linux input device,
//! as the gpio-keys driver makes) and a feedback LED (sysfs LED class).
//!
//! Every sysfs path is built from one root, `$ENROLLD_SYSFS_ROOT` (default
//! `/sys`), so tests run against a fake tree.

use crate::capture::quality::Rejection;
use crate::clock::Stop;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// The root sysfs paths are built from.
pub fn sysfs_root() -> PathBuf {
    std::env::var_os("ENROLLD_SYSFS_ROOT").map_or_else(|| PathBuf::from("/sys"), PathBuf::from)
}

/// `struct input_event`: two `long`s of time, then type, code and value.
const EVENT_SIZE: usize = 2 * std::mem::size_of::<usize>() + 8;
const EV_KEY: u16 = 1;
const KEY_PRESS: i32 = 1;

/// A key press decoded from an input event, if `bytes` holds one for `key`.
pub fn key_pressed(bytes: &[u8; EVENT_SIZE], key: u16) -> bool {
    let base = EVENT_SIZE - 8;
    let kind = u16::from_ne_bytes([bytes[base], bytes[base + 1]]);
    let code = u16::from_ne_bytes([bytes[base + 2], bytes[base + 3]]);
    let value = i32::from_ne_bytes([
        bytes[base + 4],
        bytes[base + 5],
        bytes[base + 6],
        bytes[base + 7],
    ]);
    kind == EV_KEY && code == key && value == KEY_PRESS
}

/// Encodes a key event as the kernel would (tests write these into a fake device).
pub fn key_event(key: u16, value: i32) -> [u8; EVENT_SIZE] {
    let mut out = [0u8; EVENT_SIZE];
    let base = EVENT_SIZE - 8;
    out[base..base + 2].copy_from_slice(&EV_KEY.to_ne_bytes());
    out[base + 2..base + 4].copy_from_slice(&key.to_ne_bytes());
    out[base + 4..].copy_from_slice(&value.to_ne_bytes());
    out
}

/// Waits until `fd` is readable or the daemon stops (then false), with no
/// timeout: an idle button costs no wakeups.
fn readable_or_stop(fd: std::os::fd::BorrowedFd<'_>, stop: &Stop) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let Some(stop_fd) = stop.fd() else {
        return !stop.is_set();
    };
    let mut fds = [
        PollFd::new(&fd, PollFlags::IN),
        PollFd::new(&stop_fd, PollFlags::IN),
    ];
    loop {
        match poll(&mut fds, None) {
            Ok(_) if !fds[1].revents().is_empty() || stop.is_set() => return false,
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return !stop.is_set(),
        }
    }
}

/// How long a button that failed waits before it is opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Reads button presses from an input device until `stop`; calls `pressed`
/// once per debounced press. Reopens the device if it goes away (or, for a
/// regular file, once it has been read to its end).
pub fn watch_button(
    path: &Path,
    key: u16,
    debounce: Duration,
    stop: &Stop,
    pressed: &mut dyn FnMut(),
) {
    use std::os::fd::AsFd;
    let mut last: Option<Instant> = None;
    let mut warned = false;
    while !stop.is_set() {
        // A FIFO (tests) would block open() for reading until a writer
        // comes; opening it read-write does not.
        let is_fifo = std::fs::metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_fifo()
        });
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(is_fifo)
            .open(path);
        let mut file = match file {
            Ok(f) => {
                warned = false;
                f
            }
            Err(e) => {
                if !warned {
                    log::error!("button {}: {e}; retrying", path.display());
                    warned = true;
                }
                if stop.wait(REOPEN_AFTER) {
                    return;
                }
                continue;
            }
        };
        let mut event = [0u8; EVENT_SIZE];
        while readable_or_stop(file.as_fd(), stop) {
            match file.read_exact(&mut event) {
                Ok(()) => {
                    if key_pressed(&event, key) {
                        let now = Instant::now();
                        if last.is_none_or(|t| now.duration_since(t) >= debounce) {
                            last = Some(now);
                            pressed();
                        }
                    }
                }
                // A regular file ends (a device or FIFO does not): read
                // what is appended after a while, from where it was.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    if stop.wait(REOPEN_AFTER) {
                        return;
                    }
                }
                Err(e) => {
                    log::error!("button {}: {e}", path.display());
                    if stop.wait(REOPEN_AFTER) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// What the LED shows; see README's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    Off,
    /// Fast blink (100 ms on, 100 ms off) until the next pattern.
    Capturing,
    /// On for 1 s.
    Queued,
    /// Two short blinks.
    Uploaded,
    /// N slow blinks (400 ms), N = the reason's number.
    Rejected(Rejection),
    /// On for 3 s: camera, storage or queue problem.
    Error,
    /// Five very fast flickers: busy, or a press with nobody armed.
    Refused,
}

/// The blink number of each rejection reason (README's table).
pub fn rejection_blinks(r: Rejection) -> u32 {
    match r {
        Rejection::NoFace => 1,
        Rejection::FaceTooSmall => 2,
        Rejection::TooDark => 3,
        Rejection::TooBright => 4,
        Rejection::LowContrast => 5,
        Rejection::Blurry => 6,
        Rejection::TooManyFaces => 7,
        Rejection::FaceCutOff => 8,
        Rejection::EyesTooClose => 9,
        Rejection::Pose => 10,
        Rejection::Tilted => 11,
    }
}

/// The (on, milliseconds) steps of a pattern, and whether it repeats.
pub fn steps(p: LedPattern) -> (Vec<(bool, u64)>, bool) {
    let blinks = |n: u32, on: u64, off: u64| {
        (0..n)
            .flat_map(|_| [(true, on), (false, off)])
            .collect::<Vec<_>>()
    };
    match p {
        LedPattern::Off => (vec![(false, 0)], false),
        LedPattern::Capturing => (vec![(true, 100), (false, 100)], true),
        LedPattern::Queued => (vec![(true, 1000), (false, 0)], false),
        LedPattern::Uploaded => (blinks(2, 150, 150), false),
        LedPattern::Rejected(r) => (blinks(rejection_blinks(r), 400, 400), false),
        LedPattern::Error => (vec![(true, 3000), (false, 0)], false),
        LedPattern::Refused => (blinks(5, 50, 50), false),
    }
}

/// Something that can be on or off.
pub trait LedOutput: Send {
    fn set(&self, on: bool);
}

/// Reads presses of a button on a GPIO line (character device, uAPI v2)
/// until `stop`, with the kernel's debounce; reopens the line on errors.
pub fn watch_gpio_button(
    chip: &Path,
    line: u32,
    active_low: bool,
    debounce: Duration,
    stop: &Stop,
    pressed: &mut dyn FnMut(),
) {
    use gpiocdev::line::EdgeDetection;
    use std::os::fd::AsFd;
    let mut warned = false;
    while !stop.is_set() {
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(chip)
            .with_consumer("enrolld-button")
            .with_line(line)
            .as_input()
            .with_edge_detection(EdgeDetection::RisingEdge)
            .with_debounce_period(debounce);
        if active_low {
            builder.as_active_low();
        }
        let request = match builder.request() {
            Ok(r) => {
                warned = false;
                r
            }
            Err(e) => {
                if !warned {
                    log::error!("button {} line {line}: {e}; retrying", chip.display());
                    warned = true;
                }
                if stop.wait(REOPEN_AFTER) {
                    return;
                }
                continue;
            }
        };
        let mut last: Option<Instant> = None;
        while readable_or_stop(request.as_fd(), stop) {
            match request.read_edge_event() {
                Ok(_) => {
                    let now = Instant::now();
                    if last.is_none_or(|t| now.duration_since(t) >= debounce) {
                        last = Some(now);
                        pressed();
                    }
                }
                Err(e) => {
                    log::error!("button {} line {line}: {e}", chip.display());
                    if stop.wait(REOPEN_AFTER) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// An LED on a GPIO line.
pub struct GpioLed {
    request: gpiocdev::Request,
    line: u32,
}

impl GpioLed {
    pub fn new(chip: &Path, line: u32) -> Result<GpioLed, String> {
        let request = gpiocdev::Request::builder()
            .on_chip(chip)
            .with_consumer("enrolld-led")
            .with_line(line)
            .as_output(gpiocdev::line::Value::Inactive)
            .request()
            .map_err(|e| format!("{} line {line}: {e}", chip.display()))?;
        Ok(GpioLed { request, line })
    }
}

impl LedOutput for GpioLed {
    fn set(&self, on: bool) {
        let value = if on {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        if let Err(e) = self.request.set_value(self.line, value) {
            log::debug!("led line {}: {e}", self.line);
        }
    }
}

/// Writes brightness to `{root}/class/leds/{name}/brightness`.
pub struct Led {
    brightness: PathBuf,
    max: String,
}

impl Led {
    pub fn new(root: &Path, name: &str) -> std::io::Result<Led> {
        let dir = root.join("class").join("leds").join(name);
        let max = std::fs::read_to_string(dir.join("max_brightness"))
            .map_or_else(|_| "1".to_string(), |s| s.trim().to_string());
        let brightness = dir.join("brightness");
        std::fs::OpenOptions::new().write(true).open(&brightness)?;
        Ok(Led { brightness, max })
    }
}

impl LedOutput for Led {
    fn set(&self, on: bool) {
        let value = if on { self.max.as_str() } else { "0" };
        // sysfs ignores truncation; a fake tree's regular file needs it.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.brightness)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        if let Err(e) = written {
            log::debug!("led {}: {e}", self.brightness.display());
        }
    }
}

/// Runs patterns on an LED until the channel closes; a new pattern replaces
/// the one playing. It wakes only for the next step of a pattern, or for a
/// new one: an LED that shows nothing new costs no wakeups.
pub fn run_led(led: &dyn LedOutput, patterns: &Receiver<LedPattern>) {
    let mut current: (Vec<(bool, u64)>, bool) = (vec![(false, 0)], false);
    let mut step = 0;
    loop {
        let (on, ms) = current.0.get(step).copied().unwrap_or((false, 0));
        led.set(on);
        let next = if step < current.0.len() {
            patterns.recv_timeout(Duration::from_millis(ms.max(1)))
        } else {
            patterns.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(p) => {
                current = steps(p);
                step = 0;
            }
            Err(RecvTimeoutError::Timeout) => {
                if step < current.0.len() {
                    step += 1;
                    if step == current.0.len() && current.1 {
                        step = 0;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                led.set(false);
                return;
            }
        }
    }
}

/// A sender for LED patterns that never blocks and works without an LED.
#[derive(Clone, Default)]
pub struct LedHandle(Option<SyncSender<LedPattern>>);

impl LedHandle {
    pub fn new(tx: SyncSender<LedPattern>) -> Self {
        Self(Some(tx))
    }

    pub fn show(&self, p: LedPattern) {
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_events_round_trip() {
        let e = key_event(28, 1);
        assert_eq!(
            e.len(),
            if cfg!(target_pointer_width = "64") {
                24
            } else {
                16
            }
        );
        assert!(key_pressed(&e, 28));
        assert!(!key_pressed(&e, 29));
        assert!(!key_pressed(&key_event(28, 0), 28), "release");
        assert!(!key_pressed(&key_event(28, 2), 28), "auto-repeat");
    }

    #[test]
    fn every_rejection_has_its_own_blink_count() {
        let all = [
            Rejection::NoFace,
            Rejection::FaceTooSmall,
            Rejection::TooDark,
            Rejection::TooBright,
            Rejection::LowContrast,
            Rejection::Blurry,
            Rejection::TooManyFaces,
        ];
        let mut counts: Vec<u32> = all.iter().map(|&r| rejection_blinks(r)).collect();
        counts.dedup();
        assert_eq!(counts, vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            steps(LedPattern::Rejected(Rejection::TooDark))
                .0
                .iter()
                .filter(|s| s.0)
                .count(),
            3
        );
    }

    #[test]
    fn presses_in_a_file_are_read_and_debounced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("event0");
        let mut bytes = Vec::new();
        for (code, value) in [(28, 1), (28, 0), (28, 1), (30, 1)] {
            bytes.extend_from_slice(&key_event(code, value));
        }
        std::fs::write(&dev, bytes).expect("write");
        let stop = Stop::new();
        let mut n = 0;
        // Two presses of key 28 in a row: debounced to one.
        watch_button(&dev, 28, Duration::from_secs(10), &stop, &mut || {
            n += 1;
            stop.set();
        });
        assert_eq!(n, 1);
    }

    #[test]
    fn a_missing_gpio_chip_is_a_clear_error() {
        let err = GpioLed::new(Path::new("/dev/gpiochip-enrolld-missing"), 3)
            .err()
            .expect("missing");
        assert!(
            err.contains("/dev/gpiochip-enrolld-missing") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn the_led_is_written_under_the_sysfs_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("class/leds/status");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("max_brightness"), "255\n").expect("write");
        std::fs::write(dir.join("brightness"), "0").expect("write");
        let led = Led::new(root.path(), "status").expect("led");
        led.set(true);
        assert_eq!(
            std::fs::read_to_string(dir.join("brightness")).expect("read"),
            "255"
        );
        led.set(false);
        assert_eq!(
            std::fs::read_to_string(dir.join("brightness")).expect("read"),
            "0"
        );
        assert!(Led::new(root.path(), "missing").is_err());
    }
}
