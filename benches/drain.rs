//! `cargo bench --bench drain`: uploads per second and CPU time per upload
//! when draining 200 queued enrollments of about 150 KB to the local
//! emulator, for both vendors.
//!
//! The emulator runs in a separate process, this benchmark started again
//! as `enrolld-emulator serve` would run (it still
//! verifies every signature and decodes every image, but skips face
//! detection), so this process's CPU time is the client's own: signing,
//! base64, TLS, JSON, and the durable outbox updates of every attempt.

#[path = "../tests/support/mod.rs"]
mod support;

use enrolld::clock::{Clock, SystemClock};
use enrolld::cloud::http::HttpClient;
use enrolld::cloud::{build_uploader, http_config, SkewClock};
use enrolld::config::Config;
use enrolld::model::Group;
use enrolld::model::Provider;
use enrolld::queue::drain::{Drainer, ProviderLimits};
use enrolld::queue::outbox::{NewEnrollment, NewImage, Outbox, OutboxLimits};
use enrolld::queue::retry::RetryPolicy;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

const ENTRIES: usize = 200;

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// A real photo, JPEG-encoded to about 150 KB.
fn image_150k() -> (Vec<u8>, u32, u32) {
    let photo = support::group_photo();
    let crop = image::imageops::crop_imm(photo, 300, 0, 700, 560).to_image();
    let mut best = Vec::new();
    for q in (50..=98).rev() {
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q);
        crop.write_with_encoder(enc).expect("encode");
        best = out;
        if best.len() <= 160_000 {
            break;
        }
    }
    (best, crop.width(), crop.height())
}

/// Set in the emulator's process: `VENDOR CA_PATH SECRET_PATH`.
const SERVE_ENV: &str = "ENROLLD_BENCH_SERVE";

/// The emulator's process: serves until killed.
fn serve(args: &str) {
    let mut words = args.split(' ');
    let (Some(vendor), Some(ca), Some(secret)) = (words.next(), words.next(), words.next()) else {
        panic!("{SERVE_ENV}={args:?}: expected VENDOR CA SECRET");
    };
    let config = enrolld_emulator::EmulatorConfig {
        vendor: vendor.parse().expect("vendor"),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        key_id: support::KEY_ID.into(),
        secret: enrolld::config::Secret::from_file(std::path::Path::new(secret))
            .expect("secret")
            .expose()
            .to_vec(),
        faults: Vec::new(),
        skew_s: 0,
        check_faces: false,
        jd_shape: enrolld_emulator::JdShape::CodeObject,
        cert_not_before_ms: None,
    };
    enrolld_emulator::serve(config, std::path::Path::new(ca), false).expect("serve");
}

fn main() {
    if let Ok(args) = std::env::var(SERVE_ENV) {
        return serve(&args);
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (image, w, h) = image_150k();
    println!("enrolld drain benchmark: {ENTRIES} enrollments of {} KB each, emulator in a separate process", image.len() / 1024);
    for vendor in [Provider::Jd, Provider::Tencent] {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        support::write_private(&secret, support::SECRET);
        let ca = dir.path().join("ca.pem");
        let mut emulator = Command::new(std::env::current_exe().expect("current_exe"))
            .env(
                SERVE_ENV,
                format!("{} {} {}", vendor.as_str(), ca.display(), secret.display()),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the emulator");
        let mut line = String::new();
        BufReader::new(emulator.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("emulator banner");
        let endpoint = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .expect("endpoint")
            .to_string();

        let mut cfg = Config {
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        cfg.tls.extra_ca_file = Some(ca);
        cfg.jd.endpoint = endpoint.clone();
        cfg.jd.appkey = support::KEY_ID.into();
        cfg.jd.secret_key_file = secret.clone();
        cfg.tencent.endpoint = endpoint;
        cfg.tencent.secret_id = support::KEY_ID.into();
        cfg.tencent.secret_key_file = secret;
        cfg.tencent.group_id = "bench".into();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let outbox = Arc::new(
            Outbox::open(
                &cfg.state_dir,
                OutboxLimits {
                    max_entries: 10_000,
                    max_bytes: 1 << 32,
                    reserve_bytes: 0,
                },
                clock.clone(),
                enrolld::queue::seal::QueueKey::generate().0,
            )
            .expect("outbox")
            .0,
        );
        for i in 0..ENTRIES {
            outbox
                .enqueue(NewEnrollment {
                    person_id: format!("bench-{i}"),
                    person_name: None,
                    provider: vendor,
                    group: Group {
                        id: "bench".into(),
                        name: "bench".into(),
                    },
                    images: vec![NewImage {
                        bytes: image.clone(),
                        width: w,
                        height: h,
                    }],
                    scores: vec![],
                    consent: None,
                })
                .expect("enqueue");
        }
        let skew = Arc::new(SkewClock::new(clock.clone()));
        let http = Arc::new(HttpClient::new(&http_config(&cfg)).expect("http"));
        let mut drainer = Drainer::new(
            outbox.clone(),
            RetryPolicy::default(),
            clock,
            skew.clone(),
            enrolld::queue::drain::Retention::default(),
        );
        drainer.set_uploader(
            vendor,
            build_uploader(&cfg, vendor, http, skew),
            ProviderLimits { qps: 10_000.0 },
        );

        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let summary = drainer.drain(&mut |d| {
            std::thread::sleep(d);
            true
        });
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
        let _ = emulator.kill();
        let _ = emulator.wait();
        let summary = summary.expect("drain");
        assert_eq!(summary.uploaded as usize, ENTRIES, "{summary:?}");
        let calls = if vendor == Provider::Tencent {
            "GetPersonBaseInfo + CreatePerson each"
        } else {
            "faceCreate each"
        };
        println!(
            "{:<8} {ENTRIES} uploads in {wall:.2} s: {:.1} uploads/s, client CPU {:.2} ms per upload ({:.0}% of one core), {calls}",
            vendor.as_str(),
            ENTRIES as f64 / wall,
            cpu * 1000.0 / ENTRIES as f64,
            100.0 * cpu / wall
        );
    }
}
