//! Prometheus text-format metrics for node_exporter's textfile collector.
//! Written atomically (a temporary file renamed over the target), so the
//! collector never reads half a file.

use crate::queue::drain::Pause;
use crate::queue::outbox::Usage;
use std::fmt::Write as _;
use std::path::Path;

/// Upload counters since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub uploads: u64,
    pub retries: u64,
    pub dead: u64,
    pub pauses: u64,
    pub last_success_ms: Option<i64>,
    /// Entries lost when a damaged store was last rebuilt.
    pub salvage_lost: u64,
    /// Distinct persons in the ledger.
    pub persons: u64,
}

/// Renders the metrics.
pub fn render(
    usage: &Usage,
    counters: &Counters,
    now_ms: i64,
    clock_skew_ms: i64,
    pauses: &[Pause],
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "enrolld_queue_pending",
        "gauge",
        "Enrollments waiting to be uploaded.",
        &[("", usage.pending as f64)],
    );
    metric(
        "enrolld_queue_dead",
        "gauge",
        "Enrollments the cloud refused, kept until purged.",
        &[("", usage.dead as f64)],
    );
    metric(
        "enrolld_persons",
        "gauge",
        "Distinct persons whose faces this device processed (in the ledger).",
        &[("", counters.persons as f64)],
    );
    metric(
        "enrolld_queue_bytes",
        "gauge",
        "Image bytes held in the queue.",
        &[("", usage.bytes as f64)],
    );
    let age = usage
        .oldest_pending_ms
        .map_or(0.0, |t| ((now_ms - t).max(0) as f64) / 1000.0);
    metric(
        "enrolld_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest pending enrollment.",
        &[("", age)],
    );
    metric(
        "enrolld_uploads_total",
        "counter",
        "Enrollments uploaded since start.",
        &[("", counters.uploads as f64)],
    );
    metric(
        "enrolld_upload_failures_total",
        "counter",
        "Failed upload attempts since start, by class.",
        &[
            ("{class=\"retry\"}", counters.retries as f64),
            ("{class=\"never\"}", counters.dead as f64),
            ("{class=\"operator\"}", counters.pauses as f64),
        ],
    );
    let last = counters.last_success_ms.map_or(0.0, |t| t as f64 / 1000.0);
    metric(
        "enrolld_last_upload_success_timestamp_seconds",
        "gauge",
        "Time of the last confirmed upload (0: none yet).",
        &[("", last)],
    );
    metric(
        "enrolld_clock_skew_seconds",
        "gauge",
        "Cloud time minus device time.",
        &[("", clock_skew_ms as f64 / 1000.0)],
    );
    metric(
        "enrolld_queue_lost_entries",
        "gauge",
        "Entries lost when a damaged queue store was last rebuilt (see enrolld queue check).",
        &[("", counters.salvage_lost as f64)],
    );
    metric(
        "enrolld_uploads_paused",
        "gauge",
        "1 while uploads wait for an operator.",
        &[("", f64::from(u8::from(!pauses.is_empty())))],
    );
    // The code is the vendor's or enrolld's (a short token), never a message.
    let since: Vec<(String, f64)> = pauses
        .iter()
        .map(|p| {
            (
                format!(
                    "{{provider=\"{}\",code=\"{}\"}}",
                    p.provider,
                    label(&p.code)
                ),
                p.since_ms as f64 / 1000.0,
            )
        })
        .collect();
    let next: Vec<(String, f64)> = pauses
        .iter()
        .map(|p| {
            (
                format!("{{provider=\"{}\"}}", p.provider),
                p.next_check_ms as f64 / 1000.0,
            )
        })
        .collect();
    metric(
        "enrolld_upload_paused_since_timestamp_seconds",
        "gauge",
        "When uploads to a provider paused, and the code that paused them.",
        &borrow(&since),
    );
    metric(
        "enrolld_upload_pause_next_check_timestamp_seconds",
        "gauge",
        "When a paused provider is checked again by itself.",
        &borrow(&next),
    );
    out
}

fn borrow(v: &[(String, f64)]) -> Vec<(&str, f64)> {
    v.iter().map(|(l, x)| (l.as_str(), *x)).collect()
}

/// A label value with only characters that need no escaping.
fn label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `text` to `path` atomically.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let usage = Usage {
            entries: 3,
            bytes: 1000,
            pending: 2,
            in_flight: 0,
            dead: 1,
            corrupt: 0,
            oldest_pending_ms: Some(10_000),
            forget_tasks: 0,
        };
        let c = Counters {
            uploads: 5,
            retries: 2,
            dead: 1,
            pauses: 0,
            last_success_ms: Some(20_000),
            salvage_lost: 1,
            persons: 4,
        };
        let pause = Pause {
            provider: crate::model::Provider::Jd,
            code: "10010".into(),
            message: "arrears \"x\"".into(),
            since_ms: 30_000,
            next_check_ms: 330_000,
            checks: 0,
        };
        let text = render(&usage, &c, 70_000, -3_000, &[pause]);
        assert!(text.contains("enrolld_uploads_paused 1\n"), "{text}");
        assert!(
            text.contains(
                "enrolld_upload_paused_since_timestamp_seconds{provider=\"jd\",code=\"10010\"} 30\n"
            ),
            "{text}"
        );
        assert!(text
            .contains("enrolld_upload_pause_next_check_timestamp_seconds{provider=\"jd\"} 330\n"));
        assert!(!text.contains("arrears"), "messages stay out of labels");
        assert!(text.contains("enrolld_queue_lost_entries 1\n"), "{text}");
        assert!(text.contains("enrolld_queue_pending 2\n"), "{text}");
        assert!(text.contains("enrolld_persons 4\n"), "{text}");
        assert!(text.contains("enrolld_oldest_pending_age_seconds 60\n"));
        assert!(text.contains("enrolld_upload_failures_total{class=\"retry\"} 2\n"));
        assert!(text.contains("enrolld_last_upload_success_timestamp_seconds 20\n"));
        assert!(text.contains("enrolld_clock_skew_seconds -3\n"));
        assert!(text.contains("# TYPE enrolld_uploads_total counter\n"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("enrolld.prom");
        write_atomic(&path, &text).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    }
}
