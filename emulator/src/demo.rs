//! The demo: the main job on built-in defaults, with no camera and no
//! credentials. It runs the real `enrolld` commands a technician would type
//! (`enroll --source file:...`, `queue list`, `drain`, `queue receipts`)
//! against a config of its own that points at a JD emulator it runs here.

use crate::{Emulator, EmulatorConfig, JdShape};
use enrolld::model::Provider;
use enrolld::queue::seal::QueueKey;
use enrolld::trust::write_new_private;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const APPKEY: &str = "demo-appkey";
const SECRET: &[u8] = b"demo-secret-key";

/// What `enrolld-emulator demo` was asked.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The photo to enroll; `None` is the rustface package's sample.
    pub photo: Option<PathBuf>,
    pub person: String,
    /// Holds the demo's queue, key, secret, CA and config.
    pub state_dir: PathBuf,
    /// The `enrolld` binary; `None` is the one beside this program, else PATH.
    pub enrolld: Option<PathBuf>,
}

/// Runs the demo; the exit code is that of the last `enrolld` command that
/// failed, or 0.
pub fn run(opts: &DemoOptions) -> Result<u8, String> {
    let photo = match &opts.photo {
        Some(p) => p.clone(),
        None => {
            let built_in = enrolld::capture::SAMPLE_PHOTO;
            if built_in.is_empty() || !Path::new(built_in).is_file() {
                return Err("the sample photo of the rustface package is not on this machine; pass --photo PATH".into());
            }
            PathBuf::from(built_in)
        }
    };
    let enrolld = opts.enrolld.clone().unwrap_or_else(beside_this_program);
    // Before anything is written: is there an enrolld to run?
    run_enrolld_quietly(&enrolld, &["--version"])?;
    std::fs::create_dir_all(&opts.state_dir).map_err(io(&opts.state_dir))?;
    let dir = std::fs::canonicalize(&opts.state_dir).map_err(io(&opts.state_dir))?;

    // A demo device key and demo credentials, private to the demo's folder.
    let key = dir.join("demo-queue-key");
    if !key.exists() {
        write_new_private(&key, QueueKey::generate().1.as_bytes()).map_err(io(&key))?;
    }
    let secret = dir.join("demo-jd-secret");
    if !secret.exists() {
        write_new_private(&secret, SECRET).map_err(io(&secret))?;
    }

    // A local JD emulator with the demo credentials stands in for the cloud.
    let emulator = Emulator::start(EmulatorConfig {
        vendor: Provider::Jd,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        key_id: APPKEY.into(),
        secret: SECRET.to_vec(),
        faults: Vec::new(),
        skew_s: 0,
        check_faces: true,
        jd_shape: JdShape::StatusString,
        cert_not_before_ms: None,
    })
    .map_err(|e| e.to_string())?;
    let ca = dir.join("demo-emulator-ca.pem");
    emulator.write_ca(&ca).map_err(io(&ca))?;

    // The sample is a group photo with ~50 px faces: search and accept
    // smaller faces than the kiosk defaults (80 px).
    let config = dir.join("demo.toml");
    let text = config_text(&dir, &key, &secret, &ca, &emulator.endpoint());
    match std::fs::remove_file(&config) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&config)(e)),
        _ => {}
    }
    write_new_private(&config, text.as_bytes()).map_err(io(&config))?;

    println!(
        "demo: enrolling {} as person {:?} with {}",
        photo.display(),
        opts.person,
        enrolld.display()
    );
    println!(
        "demo: queue and config in {}/ (minimum face size lowered to 40 px and eye distance to 12 px for the group photo)",
        dir.display()
    );
    let source = format!("file:{}", photo.display());
    let enroll = [
        "enroll",
        "--person",
        opts.person.as_str(),
        "--source",
        source.as_str(),
        // Consent is required (the default): the demo names its form.
        "--consent",
        "demo consent form 1",
    ];
    let code = run_enrolld(&enrolld, &config, &enroll)?;
    if code != 0 {
        return Ok(code);
    }
    println!("demo: the queue now holds:  (enrolld queue list)");
    run_enrolld(&enrolld, &config, &["queue", "list"])?;
    println!(
        "demo: uploading to a local JD emulator at {} (signed, over TLS):  (enrolld drain)",
        emulator.endpoint()
    );
    let code = run_enrolld(&enrolld, &config, &["drain"])?;
    let stored = emulator.with_state(|s| s.persons.get(&opts.person).map_or(0, |p| p.faces.len()));
    println!(
        "demo: the emulator now holds {stored} face(s) for {:?}; receipts kept on the device:  (enrolld queue receipts)",
        opts.person
    );
    run_enrolld(&enrolld, &config, &["queue", "receipts"])?;
    println!("demo: what happened to the person, as the ledger keeps it:  (enrolld ledger)");
    run_enrolld(&enrolld, &config, &["ledger"])?;
    Ok(code)
}

/// The demo's enrolld.toml.
fn config_text(dir: &Path, key: &Path, secret: &Path, ca: &Path, endpoint: &str) -> String {
    let mut t = toml::Table::new();
    let path = |p: &Path| toml::Value::String(p.display().to_string());
    let table = |pairs: Vec<(&str, toml::Value)>| {
        toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    };
    t.insert("state_dir".into(), path(dir));
    t.insert("queue".into(), table(vec![("key_file", path(key))]));
    t.insert("detect".into(), table(vec![("min_face_px", 40.into())]));
    t.insert(
        "quality".into(),
        table(vec![
            ("min_face_px", 40.into()),
            ("min_eye_distance_px", 12.0.into()),
        ]),
    );
    t.insert("burst".into(), table(vec![("frames", 1.into())]));
    t.insert("tls".into(), table(vec![("extra_ca_file", path(ca))]));
    t.insert(
        "jd".into(),
        table(vec![
            ("endpoint", endpoint.into()),
            ("appkey", APPKEY.into()),
            ("secret_key_file", path(secret)),
            ("group_name", "demo".into()),
        ]),
    );
    format!(
        "# Written by enrolld-emulator demo: a JD emulator on loopback.\n{}",
        toml::to_string(&t).unwrap_or_default()
    )
}

/// Runs `enrolld ARGS...` with its output discarded; an error if it fails.
fn run_enrolld_quietly(enrolld: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(enrolld)
        .args(args)
        .output()
        .map_err(|e| cannot_run(enrolld, &e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {}: {}",
            enrolld.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn cannot_run(enrolld: &Path, e: &std::io::Error) -> String {
    format!(
        "{}: {e} (build it with `cargo build -p enrolld`, or pass --enrolld PATH)",
        enrolld.display()
    )
}

/// Runs `enrolld --config CONFIG ARGS...` with its output on ours.
fn run_enrolld(enrolld: &Path, config: &Path, args: &[&str]) -> Result<u8, String> {
    let _ = std::io::stdout().flush();
    let status = Command::new(enrolld)
        .arg("--config")
        .arg(config)
        .args(args)
        .status()
        .map_err(|e| cannot_run(enrolld, &e))?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1))
}

/// `enrolld` in this program's folder (both are built into target/*/), else
/// whatever PATH finds.
fn beside_this_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("enrolld")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("enrolld"))
}

/// An I/O error on `path`, as the demo reports it.
fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}
