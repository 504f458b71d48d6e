//! `cargo bench --bench idle`: resident memory and CPU use of an idle
//! `enrolld run` (release build): file camera, JD configured, a fake
//! NOTIFY_SOCKET with a 1 s watchdog; once with an empty queue and once with
//! 800 entries pending (real crops of about 85 KB; the endpoint is a closed
//! port, so the drain loop keeps retrying them).

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    t(11) + t(12)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    measure("empty queue", 0);
    let (crop, _, _) = crop_85k();
    measure(&format!("800 pending of {} bytes each", crop.len()), 800);
}

/// A real face crop as the daemon queues one: about 85 KB of JPEG.
fn crop_85k() -> (Vec<u8>, u32, u32) {
    let photo = support::group_photo();
    let crop = image::imageops::crop_imm(photo, 300, 0, 560, 560).to_image();
    let mut best = Vec::new();
    for q in (40..=95).rev().step_by(5) {
        best.clear();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut best, q);
        crop.write_with_encoder(enc).expect("encode");
        if best.len() <= 90_000 {
            break;
        }
    }
    (best, crop.width(), crop.height())
}

/// Queues `n` entries the way `enroll` does, before the daemon starts.
fn prefill(config: &std::path::Path, n: usize) {
    use enrolld::model::Group;
    use enrolld::queue::outbox::{NewEnrollment, NewImage, Outbox, OutboxLimits};
    let (cfg, _) = enrolld::config::Config::load(Some(config)).expect("config");
    let key = enrolld::queue::seal::QueueKey::from_file(&cfg.queue.key_file).expect("key");
    let clock: std::sync::Arc<dyn enrolld::clock::Clock> =
        std::sync::Arc::new(enrolld::clock::SystemClock);
    let (outbox, _) = Outbox::open(
        &cfg.state_dir,
        OutboxLimits::from_config(&cfg.queue),
        clock,
        key,
    )
    .expect("outbox");
    let (bytes, width, height) = crop_85k();
    for i in 0..n {
        outbox
            .enqueue(NewEnrollment {
                person_id: format!("idle-{i}"),
                person_name: None,
                provider: enrolld::model::Provider::Jd,
                group: Group {
                    id: "g".into(),
                    name: "g".into(),
                },
                images: vec![NewImage {
                    bytes: bytes.clone(),
                    width,
                    height,
                }],
                scores: vec![],
                consent: None,
            })
            .expect("enqueue");
    }
}

fn measure(label: &str, entries: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let photo = dir.path().join("camera.png");
    std::fs::write(&photo, []).expect("placeholder");
    let config = dir.path().join("enrolld.toml");
    // A configuration start-up accepts (enrolld run refuses one that could
    // never upload); the endpoint is a closed port on this machine and the
    // queue is empty, so nothing is sent.
    let (key, secret) = (dir.path().join("queue-key"), dir.path().join("jd-secret"));
    support::write_private(&key, format!("{}\n", "5f".repeat(32)));
    support::write_private(&secret, "bench-secret\n");
    support::write_private(
        &config,
        format!(
            "state_dir = {:?}\n[camera]\nsource = \"file:{}\"\n[queue]\nkey_file = {:?}\n\
             [jd]\nendpoint = \"https://127.0.0.1:9\"\nappkey = \"bench\"\nsecret_key_file = {:?}\n\
             group_name = \"g\"\n[control]\nsocket = {:?}\n",
            dir.path().join("state").display().to_string(),
            photo.display(),
            key.display().to_string(),
            secret.display().to_string(),
            dir.path().join("control.sock").display().to_string()
        ),
    );
    if entries > 0 {
        prefill(&config, entries);
    }
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notify");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_enrolld"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(if std::env::var_os("ENROLLD_BENCH_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut buf = [0u8; 512];
    let started = Instant::now();
    loop {
        if let Ok(n) = notify.recv(&mut buf) {
            if buf[..n].starts_with(b"READY=1") {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no READY=1");
    }
    std::thread::sleep(Duration::from_secs(2));
    let ticks_per_s = 100.0;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let sample = Duration::from_secs(20);
    let mut watchdogs = 0;
    while t0.elapsed() < sample {
        if let Ok(n) = notify.recv(&mut buf) {
            watchdogs += usize::from(buf[..n].starts_with(b"WATCHDOG=1"));
        }
    }
    let cpu = (cpu_ticks(pid) - c0) as f64 / ticks_per_s;
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "idle enrolld run, {label}, over {wall:.0} s: RSS {:.1} MiB (peak {:.1} MiB; anonymous {:.1} MiB, file {:.1} MiB), CPU {:.2}% of one core, {watchdogs} watchdog pings, {} threads",
        status_kb(pid, "VmRSS:") as f64 / 1024.0,
        status_kb(pid, "VmHWM:") as f64 / 1024.0,
        status_kb(pid, "RssAnon:") as f64 / 1024.0,
        status_kb(pid, "RssFile:") as f64 / 1024.0,
        100.0 * cpu / wall,
        std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
    );
    let _ = child.kill();
    let _ = child.wait();
}
