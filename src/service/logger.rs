//! A small `log` backend for stderr. Under systemd (`JOURNAL_STREAM` set)
//! each line carries a `<N>` syslog priority prefix that journald parses.
//!
//! Only enrolld's own records (and the emulator's) go below `warn`:
//! libraries log at debug level what enrolld must never print (ureq logs whole request URIs, which carry
//! JD's appkey and signature, and request headers, which carry Tencent's
//! Authorization).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct StderrLogger {
    journald: bool,
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // The daemon's crate and the emulator's (`enrolld-emulator`).
        let ours = matches!(
            metadata.target().split("::").next(),
            Some("enrolld" | "enrolld_emulator")
        );
        let cap = if ours {
            self.level
        } else {
            self.level.min(LevelFilter::Warn)
        };
        metadata.level() <= cap
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.journald {
            let prio = match record.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            writeln!(err, "<{prio}>{}", record.args())
        } else {
            writeln!(
                err,
                "enrolld: {}: {}",
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            )
        };
    }

    fn flush(&self) {}
}

/// Installs the logger. Level from `ENROLLD_LOG` (`error`..`trace`), default `info`.
pub fn init(default: LevelFilter) {
    let level = std::env::var("ENROLLD_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let logger = StderrLogger {
        journald: std::env::var_os("JOURNAL_STREAM").is_some(),
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
