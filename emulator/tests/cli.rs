//! The `enrolld-emulator` program: `serve` as the systemd VM test and the
//! drain benchmark run it, and the demo end to end with the real `enrolld`.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The `enrolld` binary of the same build (`cargo test --workspace` builds
/// every member's binaries into the folder above this test's).
fn enrolld_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("enrolld");
    assert!(
        bin.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The emulator runs as root in the systemd VM test while the daemon runs as
/// `enrolld`: the CA certificate it writes is public and must be readable by
/// all, whatever the process umask (0077) would make of it.
#[test]
fn the_emulators_ca_certificate_is_readable_by_the_daemons_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    write_private(&secret, "s3cret\n");
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_enrolld-emulator"))
        .args([
            "serve",
            "jd",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--key-id",
            "k",
        ])
        .arg("--ca-out")
        .arg(&ca)
        .arg("--secret-key-file")
        .arg(&secret)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the emulator");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the emulator's first line");
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON line");
    assert!(
        v["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("https://127.0.0.1:")),
        "{v}"
    );
    let mode = std::fs::metadata(&ca).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the CA certificate is {mode:o}");
    let pem = std::fs::read_to_string(&ca).expect("read");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
}

/// An emulator refuses to listen beyond loopback, and says so.
#[test]
fn the_emulator_refuses_an_address_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    write_private(&secret, "s3cret\n");
    let out = Command::new(env!("CARGO_BIN_EXE_enrolld-emulator"))
        .args(["serve", "tencent", "--listen", "0.0.0.0:0", "--key-id", "k"])
        .arg("--ca-out")
        .arg(dir.path().join("ca.pem"))
        .arg("--secret-key-file")
        .arg(&secret)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    assert!(!dir.path().join("ca.pem").exists());
}

#[test]
fn the_demo_runs_without_camera_or_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_enrolld-emulator"))
            .current_dir(dir.path())
            .arg("demo")
            .arg("--enrolld")
            .arg(enrolld_binary())
            .output()
            .expect("run")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("queued enrollment 1"), "{stdout}");
    assert!(stdout.contains("uploaded 1,"), "{stdout}");
    assert!(
        stdout.contains("the emulator now holds 1 face(s) for \"demo-person\""),
        "{stdout}"
    );
    // The emulator says what it accepted (the VM tests look for this line).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("emulator: accepted a signed upload for \"demo-person\""),
        "{stderr}"
    );
    // Its state is in ./enrolld-demo-state, private; a second run reuses
    // the key and enrolls again into the same queue.
    let state = dir.path().join("enrolld-demo-state");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    for f in ["demo.toml", "demo-queue-key", "demo-jd-secret"] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    let again = run();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("queued enrollment 2"), "{stdout}");
}

#[test]
fn the_demo_without_enrolld_says_how_to_get_it_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_enrolld-emulator"))
        .current_dir(dir.path())
        .args(["demo", "--enrolld", "/nonexistent/enrolld"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cargo build -p enrolld"), "{err}");
    assert!(!dir.path().join("enrolld-demo-state").exists());
}
