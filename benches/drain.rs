//! `cargo bench --bench drain`: uploads per second and CPU time per upload
//! when draining 100 queued enrollments of about 85 KB (a face crop as
//! enrolld sends it) to the local emulator, for both vendors; and, when
//! Tencent's official Python SDK is installed (`scripts/setup-bench` puts
//! it in target/bench-data/venv), the same 100 crops uploaded by a script
//! on that SDK (`benches/tencent_sdk.py`) to a fresh emulator, side by
//! side, with the ratio of the two CPU figures.
//!
//! The emulator runs in a separate process, this benchmark started again
//! as `enrolld-emulator serve` would run (it still
//! verifies every signature and decodes every image, but skips face
//! detection), so this process's CPU time is the client's own: signing,
//! base64, TLS, JSON, and the durable outbox updates of every attempt.
//!
//! `ENROLLD_BENCH_CLI_WRAP` runs the whole-process `enrolld drain` under a
//! command, to see where its time goes, e.g.
//! `ENROLLD_BENCH_CLI_WRAP="strace -f -c -o /tmp/drain.strace"` or
//! `"perf record --call-graph dwarf -o /tmp/drain.perf"` (its CPU figure
//! then includes the wrapper's).

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

const ENTRIES: usize = 100;

/// User and system CPU time of this process, in seconds (getrusage:
/// microseconds, where /proc's ticks are 10 ms, a tenth of a millisecond per
/// upload over 100 uploads).
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// A real photo, JPEG-encoded to about 85 KB.
fn image_85k() -> (Vec<u8>, u32, u32) {
    let photo = support::group_photo();
    let crop = image::imageops::crop_imm(photo, 300, 0, 700, 560).to_image();
    let mut best = Vec::new();
    for q in (30..=98).rev() {
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q);
        crop.write_with_encoder(enc).expect("encode");
        best = out;
        if best.len() <= 87_000 {
            break;
        }
    }
    (best, crop.width(), crop.height())
}

/// Starts the emulator process for `vendor`; its https:// endpoint.
fn start_emulator(
    vendor: Provider,
    ca: &std::path::Path,
    secret: &std::path::Path,
) -> (std::process::Child, String) {
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
    (emulator, endpoint)
}

/// The Python SDK script's CPU per upload (ms) on the same crops, or why
/// it did not run.
fn sdk_cpu_ms(
    image: &[u8],
    dir: &std::path::Path,
    secret: &std::path::Path,
) -> Result<f64, String> {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/venv/bin/python");
    let has_sdk = Command::new(&python)
        .args(["-c", "import tencentcloud.iai"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_sdk {
        return Err(format!(
            "not measured: Tencent's Python SDK is not installed in {} (scripts/setup-bench installs it)",
            python.display()
        ));
    }
    let ca = dir.join("sdk-ca.pem");
    let (mut emulator, endpoint) = start_emulator(Provider::Tencent, &ca, secret);
    let files: Vec<String> = (0..ENTRIES)
        .map(|i| {
            let p = dir.join(format!("crop-{i}.jpg"));
            std::fs::write(&p, image).expect("write crop");
            p.display().to_string()
        })
        .collect();
    let out = Command::new(&python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/tencent_sdk.py"))
        .arg(endpoint.trim_start_matches("https://"))
        .arg(&ca)
        .arg(support::KEY_ID)
        .arg(secret)
        .arg("bench")
        .args(&files)
        .output()
        .map_err(|e| e.to_string());
    let _ = emulator.kill();
    let _ = emulator.wait();
    let out = out?;
    if !out.status.success() {
        return Err(format!(
            "not measured: the SDK script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let n = v["uploads"].as_f64().unwrap_or(0.0);
    let cpu = v["cpu_s"].as_f64().unwrap_or(0.0);
    println!(
        "sdk      {n} uploads in {:.2} s: client CPU {:.2} ms per upload (user {:.2}, system {:.2}; {}, tencentcloud-sdk-python-iai, CreatePerson each, after start-up)",
        v["wall_s"].as_f64().unwrap_or(0.0),
        cpu * 1000.0 / n.max(1.0),
        v["user_s"].as_f64().unwrap_or(0.0) * 1000.0 / n.max(1.0),
        v["system_s"].as_f64().unwrap_or(0.0) * 1000.0 / n.max(1.0),
        String::from_utf8_lossy(&Command::new(&python).arg("--version").output().map(|o| o.stdout).unwrap_or_default()).trim()
    );
    let machine = Command::new(&python)
        .args(["-c", "import platform; print(platform.machine())"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let ours = std::env::consts::ARCH;
    let same = machine == ours || (ours == "arm" && machine.starts_with("armv"));
    if !same {
        return Err(format!(
            "not compared: the SDK ran natively on {machine}, enrolld on {ours} (under emulation?)"
        ));
    }
    Ok(cpu * 1000.0 / n.max(1.0))
}

/// The whole `enrolld drain` process (start-up included: config, key,
/// store, TLS roots) on `ENTRIES` crops queued for persons `cli-N`: its CPU
/// per upload in ms, (user, system), or why it did not run.
fn cli_cpu_ms(
    image: &[u8],
    (w, h): (u32, u32),
    dir: &std::path::Path,
    endpoint: &str,
    ca: &std::path::Path,
    secret: &std::path::Path,
) -> Result<(f64, f64), String> {
    let state = dir.join("cli-state");
    let key = dir.join("cli-queue-key");
    support::write_private(&key, format!("{}\n", support::QUEUE_KEY_HEX));
    let config = dir.join("cli.toml");
    support::write_private(
        &config,
        format!(
            "state_dir = {state:?}\n[upload]\nprovider = \"tencent\"\n[tencent]\nendpoint = {endpoint:?}\nsecret_id = {:?}\nsecret_key_file = {secret:?}\ngroup_id = \"bench\"\nqps = 1000.0\n[tls]\nextra_ca_file = {ca:?}\n[queue]\nkey_file = {key:?}\n[consent]\nrequired = false\n",
            support::KEY_ID
        ),
    );
    {
        let outbox = support::open_queue(&state).map_err(|e| e.to_string())?;
        for i in 0..ENTRIES {
            outbox
                .enqueue(new_enrollment(
                    format!("cli-{i}"),
                    Provider::Tencent,
                    image,
                    (w, h),
                ))
                .map_err(|e| e.to_string())?;
        }
    }
    let mut wrapper = std::env::var("ENROLLD_BENCH_CLI_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect::<Vec<_>>();
    wrapper.push(env!("CARGO_BIN_EXE_enrolld").to_string());
    let child = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg("--config")
        .arg(&config)
        .arg("drain")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // SAFETY: wait4 only writes the status and the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    if unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) } < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("enrolld drain failed (wait status {status})"));
    }
    let ms = |t: libc::timeval| (t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3) / ENTRIES as f64;
    Ok((ms(ru.ru_utime), ms(ru.ru_stime)))
}

fn new_enrollment(
    person: String,
    vendor: Provider,
    image: &[u8],
    (w, h): (u32, u32),
) -> NewEnrollment {
    NewEnrollment {
        person_id: person,
        person_name: None,
        provider: vendor,
        group: Group {
            id: "bench".into(),
            name: "bench".into(),
        },
        images: vec![NewImage {
            bytes: image.to_vec(),
            width: w,
            height: h,
        }],
        scores: vec![],
        consent: None,
    }
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
    let (image, w, h) = image_85k();
    println!("enrolld drain benchmark: {ENTRIES} enrollments of {} KB each, emulator in a separate process", image.len() / 1024);
    for vendor in [Provider::Jd, Provider::Tencent] {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        support::write_private(&secret, support::SECRET);
        let ca = dir.path().join("ca.pem");
        let (mut emulator, endpoint) = start_emulator(vendor, &ca, &secret);

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
        cfg.tencent.secret_key_file = secret.clone();
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
                .enqueue(new_enrollment(format!("bench-{i}"), vendor, &image, (w, h)))
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
        let cpu1 = cpu_seconds();
        let (user, sys) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), user + sys);
        let cli = (vendor == Provider::Tencent).then(|| {
            let ca = cfg.tls.extra_ca_file.clone().unwrap_or_default();
            cli_cpu_ms(
                &image,
                (w, h),
                dir.path(),
                &cfg.tencent.endpoint,
                &ca,
                &secret,
            )
        });
        let _ = emulator.kill();
        let _ = emulator.wait();
        let summary = summary.expect("drain");
        assert_eq!(summary.uploaded as usize, ENTRIES, "{summary:?}");
        println!(
            "{:<8} {ENTRIES} uploads in {wall:.2} s: {:.1} uploads/s, client CPU {:.2} ms per upload (user {:.2}, system {:.2}; {:.0}% of one core)",
            vendor.as_str(),
            ENTRIES as f64 / wall,
            cpu * 1000.0 / ENTRIES as f64,
            user * 1000.0 / ENTRIES as f64,
            sys * 1000.0 / ENTRIES as f64,
            100.0 * cpu / wall
        );
        if let Some(cli) = cli {
            let ours = cpu * 1000.0 / ENTRIES as f64;
            let cli = match cli {
                Ok((user, sys)) => {
                    println!(
                        "cli      `enrolld drain`, whole process, start-up included: CPU {:.2} ms per upload (user {user:.2}, system {sys:.2})",
                        user + sys
                    );
                    Some(user + sys)
                }
                Err(why) => {
                    println!("cli      not measured: {why}");
                    None
                }
            };
            match sdk_cpu_ms(&image, dir.path(), &secret) {
                Ok(sdk) => {
                    println!(
                        "tencent: enrolld's CPU per upload is {:.2}x the SDK script's ({ours:.2} ms / {sdk:.2} ms)",
                        ours / sdk
                    );
                    if let Some(cli) = cli {
                        println!(
                            "tencent: the whole `enrolld drain` process is {:.2}x the SDK script's uploads ({cli:.2} ms / {sdk:.2} ms)",
                            cli / sdk
                        );
                    }
                }
                Err(why) => println!("sdk      {why}"),
            }
        }
    }
}
