//! The real daemon (`enrolld run`) under a fake systemd: READY/STATUS/
//! WATCHDOG on a fake NOTIFY_SOCKET, a file camera, a button written into a
//! fake input device, a fake sysfs LED, the emulator as the cloud.

mod support;

use enrolld::control::{Client, Request};
use enrolld::model::ErrorCode;
use enrolld::model::Provider;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A reply line as the socket carries it: these tests read the protocol
/// itself, as a script on the socket would.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Reply {
    Event {
        event: String,
        #[serde(flatten)]
        #[allow(dead_code)]
        data: serde_json::Map<String, serde_json::Value>,
    },
    Answer {
        result: serde_json::Value,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Makes a FIFO (mode 0600) at `path`.
fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
}

/// The typed reply as its line on the wire.
fn wire(r: &enrolld::control::Reply) -> Reply {
    serde_json::from_str(&r.to_line()).expect("a reply reads back from its line")
}

struct Daemon {
    child: Child,
    notify: UnixDatagram,
    socket: PathBuf,
    config: PathBuf,
    messages: Vec<String>,
    /// How long it took from spawn to READY=1: this machine's speed now.
    startup: Duration,
}

impl Daemon {
    /// Starts `enrolld run` with `e`'s config and waits for READY=1.
    fn start(e: &Enrolld, sysfs: Option<&Path>) -> Daemon {
        let notify_path = e.path(&format!("notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut cmd = e.command();
        cmd.arg("run")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "400000")
            .env("ENROLLD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(e.path("daemon.log")).expect("log file"));
        if let Some(root) = sysfs {
            cmd.env("ENROLLD_SYSFS_ROOT", root);
        }
        let child = cmd.spawn().expect("spawn daemon");
        // The WATCHDOG_PID check: systemd sets it to the service's pid.
        let started = Instant::now();
        let mut d = Daemon {
            child,
            notify,
            socket: e.path("control.sock"),
            config: e.path("enrolld.toml"),
            messages: Vec::new(),
            startup: Duration::ZERO,
        };
        d.wait_for("READY=1", EVENTUALLY);
        d.startup = started.elapsed();
        d
    }

    /// A margin for "promptly" that grows with how slow this machine is
    /// now (qemu-user, a loaded CI host): 20 start-ups, at least 3 s.
    fn prompt(&self) -> Duration {
        (self.startup * 20).max(Duration::from_secs(3))
    }

    /// Reads notifications until one contains `what`.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.messages.push(m.clone());
                if m.contains(what) {
                    return m;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited ({status}) before sending {what:?}; got {:?}",
                    self.messages
                );
            }
        }
        panic!("no {what:?} within {timeout:?}; got {:?}", self.messages);
    }

    fn call(&self, req: &Request) -> (Vec<Reply>, Reply) {
        let mut client = Client::connect(&self.socket, EVENTUALLY)
            .expect("connect")
            .expect("daemon listening");
        let mut events = Vec::new();
        let last = client
            .call(req, &mut |r| events.push(wire(r)))
            .expect("call");
        (events, wire(&last))
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// SIGTERM, then the exit status within `timeout`.
    fn terminate(mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        self.signal(rustix::process::Signal::TERM);
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the daemon did not stop within {timeout:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for the daemon: file camera with one portrait, control socket in the work dir.
fn daemon_config(e_dir: &Path, cloud: &Cloud, extra: &str) -> String {
    let photo = e_dir.join("camera.jpg");
    write_jpeg(&portrait(0, 3.0), &photo);
    format!(
        "{}[camera]\nsource = \"file:{}\"\n[control]\nsocket = {:?}\n{extra}\n",
        cloud.config("retry_base_ms = 200", "group_id = \"g\""),
        photo.display(),
        e_dir.join("control.sock").display().to_string()
    )
}

fn setup(vendor: Provider, extra: &str) -> (Cloud, Enrolld) {
    let cloud = Cloud::start(vendor);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = daemon_config(dir.path(), &cloud, extra);
    let e = Enrolld::new(&config);
    // Move the camera photo next to the config the daemon reads.
    std::fs::copy(dir.path().join("camera.jpg"), e.path("camera.jpg")).expect("copy");
    let text = std::fs::read_to_string(e.path("enrolld.toml"))
        .expect("read")
        .replace(
            &dir.path().display().to_string(),
            &e.dir.path().display().to_string(),
        );
    std::fs::write(e.path("enrolld.toml"), text).expect("write");
    (cloud, e)
}

/// How long a test waits for something that should happen before it calls
/// it lost, and a client for the daemon's next line. It is not a speed
/// target: each wait ends on its event, and only one that never comes costs
/// this long. qemu-user on a loaded host is many times slower than an idle
/// x86 machine: there, one 6400x6250 frame took over a minute to decode and
/// search, between two progress lines.
const EVENTUALLY: Duration = Duration::from_secs(300);

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn ready_status_and_watchdog_reach_the_notify_socket() {
    let (_cloud, e) = setup(Provider::Jd, "");
    let mut d = Daemon::start(&e, None);
    let ready = d.messages.last().cloned().unwrap_or_default();
    assert!(ready.contains("STATUS="), "{ready}");
    d.wait_for("WATCHDOG=1", EVENTUALLY);
    let (_, status) = d.call(&Request::Status {});
    let Reply::Answer { result } = status else {
        panic!("{status:?}")
    };
    assert_eq!(result["enrolling"], false);
    assert_eq!(result["queue"]["pending"], 0);
    let (prompt, startup) = (d.prompt(), d.startup);
    let (code, took) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
    // An idle daemon stops within a tick or two, whatever the machine.
    assert!(took < prompt, "{took:?}, start-up took {startup:?}");
    assert!(
        !e.path("control.sock").exists(),
        "the socket file is removed"
    );
}

#[test]
fn an_enrollment_over_the_socket_streams_progress_until_uploaded() {
    let (cloud, e) = setup(Provider::Jd, "");
    let mut text = std::fs::read_to_string(e.path("enrolld.toml")).expect("read");
    text.push_str(&format!(
        "[metrics]\ntextfile = {:?}\n",
        e.path("enrolld.prom").display().to_string()
    ));
    std::fs::write(e.path("enrolld.toml"), text).expect("write");
    let mut d = Daemon::start(&e, None);
    let (events, last) = d.call(&Request::Enroll {
        person: "sock-1".into(),
        name: None,
        provider: None,
        frames: None,
        follow_upload: true,
        photo: None,
        consent: None,
        peer_uid: None,
    });
    let names: Vec<String> = events
        .iter()
        .filter_map(|r| match r {
            Reply::Event { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        ["capturing", "face_found", "queued", "uploaded"],
        "{events:?}"
    );
    let Reply::Answer { result } = last else {
        panic!("{last:?}")
    };
    assert_eq!(result["uploaded"], true, "{result}");
    assert_eq!(cloud.faces("sock-1").len(), 1);
    d.wait_for("STATUS=queue 0 pending", EVENTUALLY);
    let prom = e.path("enrolld.prom");
    assert!(
        wait_until(EVENTUALLY, || std::fs::read_to_string(&prom)
            .is_ok_and(|t| t.contains("enrolld_uploads_total 1\n"))),
        "metrics: {:?}",
        std::fs::read_to_string(&prom)
    );
    // The CLI goes through the daemon too (it holds the queue).
    let out = e.run(&["enroll", "--person", "cli-1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(EVENTUALLY, || cloud.faces("cli-1").len() == 1));
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn a_button_press_enrolls_the_armed_person_and_the_led_shows_it() {
    let (cloud, e) = setup(Provider::Jd, "[consent]\nrequired = true\n");
    let sysfs = e.path("sys");
    let led_dir = sysfs.join("class/leds/enrolld");
    std::fs::create_dir_all(&led_dir).expect("mkdir");
    std::fs::write(led_dir.join("max_brightness"), "1\n").expect("write");
    std::fs::write(led_dir.join("brightness"), "0").expect("write");
    // A FIFO stands for the input device: like a character device, it
    // blocks until a press comes (the daemon polls it with no timeout).
    let input = e.path("event0");
    mkfifo(&input);
    let mut text = std::fs::read_to_string(e.path("enrolld.toml")).expect("read");
    text.push_str(&format!("[button]\ninput_device = {:?}\nkey_code = 28\ndebounce_ms = 0\n[led]\nname = \"enrolld\"\n", input.display().to_string()));
    std::fs::write(e.path("enrolld.toml"), &text).expect("write");
    // Consent is required and a press names none: the one verdict of
    // `config check` and start-up refuses the configuration.
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("button.consent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With button.consent the press is the consent, given to the kiosk's notice.
    e.configure(&[("button.consent", true.into())]);
    let d = Daemon::start(&e, Some(&sysfs));
    let press = || {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .expect("open input");
        f.write_all(&enrolld::service::hardware::key_event(28, 1))
            .expect("press");
        f.write_all(&enrolld::service::hardware::key_event(28, 0))
            .expect("release");
    };
    // Nobody armed: the press is refused (button.unarmed = "reject").
    // No debounce here (hardware.rs tests it): the next press counts
    // however soon it follows.
    press();
    let mut last = serde_json::Value::Null;
    let refused = wait_until(EVENTUALLY, || {
        if let (_, Reply::Answer { result }) = d.call(&Request::Status {}) {
            last = result;
        }
        last["last_result"]
            .as_str()
            .unwrap_or("")
            .contains("nobody armed")
    });
    assert!(refused, "{last}");
    // Armed: the next press enrolls that person.
    let (_, armed) = d.call(&Request::Arm {
        person: "btn-7".into(),
        name: None,
        ttl_s: 60,
    });
    assert!(matches!(armed, Reply::Answer { .. }), "{armed:?}");
    let mut lit = false;
    press();
    let uploaded = wait_until(EVENTUALLY, || {
        lit |= std::fs::read_to_string(led_dir.join("brightness")).is_ok_and(|b| b.trim() == "1");
        cloud.faces("btn-7").len() == 1
    });
    assert!(uploaded, "the press was enrolled and uploaded");
    assert!(
        lit || wait_until(EVENTUALLY, || std::fs::read_to_string(
            led_dir.join("brightness")
        )
        .is_ok_and(|b| b.trim() == "1")),
        "the LED lit"
    );
    let (code, ledger) = e.json(&["ledger", "--person", "btn-7"]);
    assert_eq!(code, 0, "{ledger}");
    let consent = &ledger["records"][0];
    assert_eq!(
        (
            consent["event"].as_str(),
            consent["consent"]["via"].as_str()
        ),
        (Some("consent_given"), Some("button")),
        "{ledger}"
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn sigterm_during_an_upload_then_restart_loses_nothing_and_adds_no_duplicate() {
    let (cloud, e) = setup(Provider::Tencent, "");
    e.configure(&[("upload.recv_timeout_ms", 60000.into())]);
    // The person exists, so the upload is a CreateFace; the cloud applies it
    // and never answers, so only the daemon's 10 s shutdown grace ends it.
    let d = Daemon::start(&e, None);
    let (_, first) = d.call(&Request::Enroll {
        person: "term-1".into(),
        name: None,
        provider: None,
        frames: None,
        follow_upload: true,
        photo: None,
        consent: None,
        peer_uid: None,
    });
    assert!(matches!(first, Reply::Answer { .. }), "{first:?}");
    cloud.push_fault("hang@CreateFace");
    // This client follows the upload: SIGTERM must still give it a last line.
    let socket = d.socket.clone();
    let follower = std::thread::spawn(move || {
        let mut client = Client::connect(&socket, EVENTUALLY)
            .expect("connect")
            .expect("daemon listening");
        let mut events = Vec::new();
        let last = client.call(
            &Request::Enroll {
                person: "term-1".into(),
                name: None,
                provider: None,
                frames: None,
                follow_upload: true,
                photo: None,
                consent: None,
                peer_uid: None,
            },
            &mut |r| events.push(wire(r)),
        );
        (events, last.map(|r| wire(&r)))
    });
    assert!(
        wait_until(EVENTUALLY, || cloud.requests("CreateFace") == 1),
        "the upload started"
    );
    let (prompt, startup) = (d.prompt(), d.startup);
    let (code, took) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0), "a clean exit after {took:?}");
    assert!(
        took < Duration::from_secs(10) + prompt,
        "bounded by the grace period: {took:?} (start-up took {startup:?})"
    );
    let (events, last) = follower.join().expect("follower thread");
    assert!(
        events
            .iter()
            .any(|r| matches!(r, Reply::Event { event, .. } if event == "queued")),
        "{events:?}"
    );
    match last {
        Ok(Reply::Error { code, message }) => {
            assert_eq!(code, "stopping", "{message}");
            assert!(message.contains("stays queued"), "{message}");
        }
        other => panic!("the follower's last line: {other:?}"),
    }
    // The cloud applied it; the device does not know yet.
    assert_eq!(cloud.faces("term-1").len(), 2);
    let mut d = Daemon::start(&e, None);
    let ok = wait_until(EVENTUALLY, || {
        let (_, r) = d.call(&Request::Status {});
        matches!(&r, Reply::Answer { result } if result["queue"]["entries"] == 0)
    });
    assert!(ok, "the entry was resolved after the restart");
    assert_eq!(cloud.faces("term-1").len(), 2, "no duplicate face");
    assert_eq!(
        cloud.requests("CreateFace"),
        1,
        "the restart checked with GetPersonBaseInfo instead of resending"
    );
    d.wait_for("STATUS=", EVENTUALLY);
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let (cloud, e) = setup(Provider::Jd, "");
    let mut d = Daemon::start(&e, None);
    let good = std::fs::read_to_string(&d.config).expect("read");
    std::fs::write(&d.config, format!("{good}\n[camera]\nwidth = \"wide\"\n")).expect("break it");
    d.signal(rustix::process::Signal::HUP);
    let m = d.wait_for("reload failed", EVENTUALLY);
    assert!(m.contains("old configuration kept"), "{m}");
    // Still running, still working on the old configuration.
    let (_, r) = d.call(&Request::Enroll {
        person: "hup-1".into(),
        name: None,
        provider: None,
        frames: None,
        follow_upload: true,
        photo: None,
        consent: None,
        peer_uid: None,
    });
    assert!(matches!(r, Reply::Answer { .. }), "{r:?}");
    assert_eq!(cloud.faces("hup-1").len(), 1);
    std::fs::write(&d.config, good).expect("fix it");
    d.signal(rustix::process::Signal::HUP);
    d.wait_for(
        "STATUS=queue 0 pending, 0 dead; last: configuration reloaded",
        EVENTUALLY,
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn random_and_oversized_input_never_kills_it() {
    let (_cloud, e) = setup(Provider::Jd, "");
    e.configure(&[
        ("control.read_timeout_ms", 2000.into()),
        ("control.max_clients", 4.into()),
    ]);
    let d = Daemon::start(&e, None);
    let send = |bytes: &[u8]| -> String {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&d.socket) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(EVENTUALLY));
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        out
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0;
    for i in 0..10_000 {
        let len = (next() % 200) as usize;
        let mut line: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 {
            line = format!(
                "{{\"cmd\":\"{}\",\"person\":{}}}",
                ["enroll", "arm", "purge", "nope"][i % 4],
                next()
            )
            .into_bytes();
        }
        line.push(b'\n');
        if send(&line).contains("\"type\":\"error\"") {
            errors += 1;
        }
    }
    assert!(
        errors >= 250,
        "malformed input gets error answers: {errors}"
    );
    let huge = send(&vec![b'x'; 1024 * 1024]);
    assert!(huge.contains("too_long"), "{huge}");
    // A client that says nothing is timed out.
    let silent = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    silent.set_read_timeout(Some(EVENTUALLY)).expect("timeout");
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut &silent, &mut out);
    assert!(out.contains("timeout"), "{out}");
    // Still alive and answering.
    let (_, r) = d.call(&Request::Status {});
    assert!(matches!(r, Reply::Answer { .. }), "{r:?}");
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn silent_clients_do_not_keep_a_technician_out() {
    let (_cloud, e) = setup(Provider::Jd, "");
    e.configure(&[("control.read_timeout_ms", 300000.into())]);
    let d = Daemon::start(&e, None);
    // Three times max_clients (8) connect and send nothing; none of them
    // times out during the test (5 minutes to send a line).
    let silent: Vec<_> = (0..24)
        .map(|_| std::os::unix::net::UnixStream::connect(&d.socket).expect("connect"))
        .collect();
    let out = e.run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(silent);
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn a_second_trigger_while_enrolling_is_busy_and_cancel_stops_the_first() {
    let (_cloud, e) = setup(Provider::Jd, "");
    // A long burst: 100 frames of a 1920x1080 camera (seconds of work even
    // on a fast machine), so the second trigger and the cancel both come
    // while the first enrollment runs; one enrollment at a time.
    let frames = e.path("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    let frame = encode(
        &frame_with_face(1920, 1080, 0, 200),
        image::ImageFormat::Jpeg,
    );
    for i in 0..100 {
        std::fs::write(frames.join(format!("{i:03}.jpg")), &frame).expect("write");
    }
    e.configure(&[
        ("camera.source", text(format!("file:{}", frames.display()))),
        ("burst.frames", 100.into()),
        ("burst.time_budget_ms", 0.into()),
    ]);
    let d = Daemon::start(&e, None);
    let socket = d.socket.clone();
    let first = std::thread::spawn(move || {
        let mut c = Client::connect(&socket, EVENTUALLY)
            .expect("connect")
            .expect("listening");
        c.call(
            &Request::Enroll {
                person: "slow".into(),
                name: None,
                provider: None,
                frames: None,
                follow_upload: false,
                photo: None,
                consent: None,
                peer_uid: None,
            },
            &mut |_| {},
        )
        .map(|r| wire(&r))
        .expect("call")
    });
    assert!(
        wait_until(EVENTUALLY, || {
            let (_, r) = d.call(&Request::Status {});
            matches!(&r, Reply::Answer { result } if result["enrolling"] == true)
        }),
        "the first enrollment is running"
    );
    let (_, second) = d.call(&Request::Enroll {
        person: "other".into(),
        name: None,
        provider: None,
        frames: None,
        follow_upload: false,
        photo: None,
        consent: None,
        peer_uid: None,
    });
    assert!(
        matches!(&second, Reply::Error { code, .. } if *code == ErrorCode::Busy),
        "{second:?}"
    );
    let (_, cancelled) = d.call(&Request::Cancel {});
    assert!(
        matches!(&cancelled, Reply::Answer { result } if result["cancelled_enrollment"] == true),
        "{cancelled:?}"
    );
    let first = first.join().expect("join");
    assert!(
        matches!(&first, Reply::Error { code, .. } if *code == ErrorCode::Cancelled),
        "{first:?}"
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn a_socket_passed_by_systemd_is_used() {
    // systemd-socket-activate binds the socket, waits for the first client,
    // then starts enrolld with LISTEN_FDS=1 and LISTEN_PID set, as systemd does.
    let (_cloud, e) = setup(Provider::Jd, "");
    let activated = e.path("activated.sock");
    let mut activate = std::process::Command::new("systemd-socket-activate");
    activate
        .arg("-l")
        .arg(&activated)
        .args(["-E", "ENROLLD_LOG=info"]);
    // It passes on only the environment named with -E; under qemu-user (the
    // ARM test runs) the loader prefix must reach the daemon too.
    if std::env::var_os("QEMU_LD_PREFIX").is_some() {
        activate.args(["-E", "QEMU_LD_PREFIX"]);
    }
    let mut child = activate
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_enrolld"))
        .arg("--config")
        .arg(e.path("enrolld.toml"))
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd) runs");
    // The socket file appears at bind(), a moment before listen(): until
    // then a connection is refused, so wait for one that is accepted.
    let mut client = None;
    assert!(
        wait_until(EVENTUALLY, || {
            client = Client::connect(&activated, Duration::from_secs(30)).expect("connect");
            client.is_some()
        }),
        "the socket is bound and listened on by the activator"
    );
    let mut client = client.expect("listening");
    let last = wire(&client.call(&Request::Status {}, &mut |_| {}).expect("call"));
    assert!(
        matches!(&last, Reply::Answer { result } if result["enrolling"] == false),
        "{last:?}"
    );
    assert!(
        !e.path("control.sock").exists(),
        "the daemon used the passed socket, not its own path"
    );
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("term");
    assert!(
        wait_until(EVENTUALLY, || matches!(child.try_wait(), Ok(Some(_)))),
        "stops on SIGTERM"
    );
}

/// Set in the child: the test binary re-executes itself as another user.
const PEER_CLIENT_ENV: &str = "ENROLLD_TEST_PEER_CLIENT";

#[test]
fn a_client_whose_uid_is_not_allowed_is_refused_and_logged() {
    if let Ok(socket) = std::env::var(PEER_CLIENT_ENV) {
        // Child, running as uid 65534: ask for the status and print the answer.
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect as nobody");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The daemon may refuse (and half-close) before this is written.
        let _ = s.write_all(b"{\"cmd\":\"status\"}\n");
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        println!("PEER-REPLY {}", out.trim());
        return;
    }
    if !rustix::process::getuid().is_root() {
        panic!("this test needs root, to run a client as another uid (CI runs as root)");
    }
    let (_cloud, e) = setup(Provider::Jd, "");
    // A socket another user can reach, so only SO_PEERCRED decides.
    let open_dir = tempfile::Builder::new()
        .prefix("enrolld-peer")
        .tempdir_in("/tmp")
        .expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    let socket = open_dir.path().join("control.sock");
    e.configure(&[
        ("control.socket", text(socket.display().to_string())),
        (
            "control.allowed_uids",
            toml::Value::Array(vec![4242.into()]),
        ),
    ]);
    let mut d = Daemon::start(&e, None);
    d.socket = socket.clone();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let out = std::os::unix::process::CommandExt::uid(
        &mut std::process::Command::new(std::env::current_exe().expect("test exe")),
        65534,
    )
    .args([
        "--exact",
        "a_client_whose_uid_is_not_allowed_is_refused_and_logged",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(PEER_CLIENT_ENV, &socket)
    .output()
    .expect("run the client as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reply = stdout
        .lines()
        .find_map(|l| l.split_once("PEER-REPLY ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no reply: {stdout}"));
    assert!(reply.contains("\"code\":\"forbidden\""), "{reply}");
    assert!(
        !reply.contains("queue"),
        "no state leaks to a refused peer: {reply}"
    );
    let log = std::fs::read_to_string(e.path("daemon.log")).expect("log");
    assert!(log.contains("refused uid 65534"), "{log}");
    // Root (allowed) still gets answers.
    let (_, r) = d.call(&Request::Status {});
    assert!(matches!(r, Reply::Answer { .. }), "{r:?}");
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// Crash loop: enroll continuously over the socket while the daemon drains
/// to the (Tencent) emulator, SIGKILL it at random moments, restart, repeat.
/// Every acknowledged enrollment must reach the cloud, none twice.
/// `ENROLLD_CRASH_CYCLES` (default 200) sets the cycles; more by hand, fewer
/// in the ARM suites under qemu-user (`scripts/test-arm`).
#[test]
fn sigkill_loop_loses_no_acknowledged_enrollment_and_adds_no_face_twice() {
    let cycles: u32 = std::env::var("ENROLLD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (cloud, e) = setup(Provider::Tencent, "");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("crash loop: seed {seed}");
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    // Kill within a window of a few enrollments: calibrated on this machine
    // (an ARM build under qemu-user is many times slower than native).
    let one = {
        let d = Daemon::start(&e, None);
        let t = Instant::now();
        let (_, last) = d.call(&Request::Enroll {
            person: "calibration".into(),
            name: None,
            provider: None,
            frames: Some(1),
            follow_upload: false,
            photo: None,
            consent: None,
            peer_uid: None,
        });
        assert!(matches!(last, Reply::Answer { .. }), "{last:?}");
        let took = t.elapsed();
        let (code, _) = d.terminate(EVENTUALLY);
        assert_eq!(code, Some(0));
        took
    };
    // The window then follows the machine's speed now: it grows after a
    // cycle that acknowledged nothing and shrinks after one that
    // acknowledged many, so a machine that becomes busier (or idler) than
    // it was at calibration still kills before, during and after enqueues.
    let mut window_ms = (one.as_millis() as u64 * 4).max(600);
    println!("crash loop: one enrollment takes {one:.0?}; kills within {window_ms} ms of READY");
    let (mut widest, mut narrowest) = (window_ms, window_ms);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut attempted = 0u64;
    let started = Instant::now();
    for cycle in 0..cycles {
        let acked_before = acked.lock().expect("lock").len();
        let d = Daemon::start(&e, None);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = {
            let (socket, acked, stop) = (d.socket.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(Some(mut c)) = Client::connect(&socket, Duration::from_secs(5)) else {
                        break;
                    };
                    let person = format!("c{cycle}-{sent}");
                    sent += 1;
                    let req = Request::Enroll {
                        person: person.clone(),
                        name: None,
                        provider: None,
                        frames: Some(1),
                        follow_upload: false,
                        photo: None,
                        consent: None,
                        peer_uid: None,
                    };
                    let mut queued = false;
                    let outcome = c
                        .call(&req, &mut |r| {
                            if matches!(wire(r), Reply::Event { event, .. } if event == "queued") {
                                queued = true;
                            }
                        })
                        .map(|r| wire(&r));
                    if queued {
                        acked.lock().expect("lock").push(person);
                    }
                    match outcome {
                        Ok(Reply::Answer { .. }) => {}
                        Ok(Reply::Error { code, .. }) if code == "busy" => {}
                        Ok(other) => panic!("cycle {cycle}: unexpected answer {other:?}"),
                        Err(_) => break, // killed mid-call
                    }
                }
                sent
            })
        };
        std::thread::sleep(Duration::from_millis(50 + random(window_ms)));
        d.signal(rustix::process::Signal::KILL);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        attempted += client.join().expect("client thread");
        drop(d);
        let acked_now = acked.lock().expect("lock").len();
        match acked_now - acked_before {
            0 => window_ms = (window_ms * 3 / 2).min(120_000),
            n if n > 4 => window_ms = (window_ms * 4 / 5).max(300),
            _ => {}
        }
        widest = widest.max(window_ms);
        narrowest = narrowest.min(window_ms);
    }
    let loop_time = started.elapsed();

    // A last run drains everything, then stops cleanly.
    let d = Daemon::start(&e, None);
    let drained = wait_until(Duration::from_secs(300), || {
        let (_, status) = d.call(&Request::Status {});
        let Reply::Answer { result } = status else {
            return false;
        };
        result["queue"]["pending"] == 0 && result["queue"]["in_flight"] == 0
    });
    let (_, status) = d.call(&Request::Status {});
    assert!(drained, "the queue did not drain: {status:?}");
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));

    let acked = acked.lock().expect("lock").clone();
    let mut missing = Vec::new();
    let mut duplicates = Vec::new();
    let mut uploaded = 0usize;
    for person in &acked {
        match cloud.faces(person).len() {
            0 => missing.push(person.clone()),
            1 => uploaded += 1,
            n => {
                uploaded += 1;
                duplicates.push((person.clone(), n));
            }
        }
    }
    let dead = e.open_outbox().usage().dead;
    println!(
        "crash loop: {cycles} cycles in {:.0?} (kill windows {narrowest}-{widest} ms), \
         {attempted} enrollments attempted, {} acknowledged, \
         {uploaded} uploaded, {} duplicates, {} missing, {dead} dead",
        loop_time,
        acked.len(),
        duplicates.len(),
        missing.len()
    );
    assert!(
        acked.len() as u32 >= cycles / 2,
        "too few acknowledged enrollments to mean anything: {}",
        acked.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but never uploaded: {missing:?}"
    );
    assert!(duplicates.is_empty(), "faces added twice: {duplicates:?}");
    assert_eq!(dead, 0);
}

/// Each pixel repeated `factor` times in both directions.
fn upscale(img: &image::RgbImage, factor: u32) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let mut out = Vec::with_capacity((w * factor * h * factor * 3) as usize);
    for row in img.rows() {
        let line: Vec<u8> = row
            .flat_map(|p| std::iter::repeat_n(p.0, factor as usize))
            .flatten()
            .collect();
        for _ in 0..factor {
            out.extend_from_slice(&line);
        }
    }
    image::RgbImage::from_raw(w * factor, h * factor, out).expect("size")
}

/// A line of `/proc/PID/status` (e.g. `VmHWM`), in KiB.
fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// The unit's `MemoryMax=256M` holds for the largest frames the decode limits
/// allow: 40-megapixel JPEGs (colour and grey, worked on at half size) and a
/// 16-megapixel PNG (the PNG limit), in one Tencent burst that keeps 4 crops.
#[test]
fn the_largest_frames_allowed_fit_the_units_memory_max() {
    let (_cloud, e) = setup(Provider::Tencent, "");
    let frames = e.path("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    // Made small and scaled up 10 times: the memory is in the pixel count,
    // and a large frame drawn at full size takes half a minute.
    let t0 = Instant::now();
    let jpeg = encode(
        &upscale(&frame_with_face(640, 625, 0, 240), 10),
        image::ImageFormat::Jpeg,
    );
    for i in 0..2 {
        std::fs::write(frames.join(format!("{i}.jpg")), &jpeg).expect("write");
    }
    // A grey JPEG decodes to a third of the bytes, then becomes RGB: after
    // shrinking, not at full size.
    let grey = image::DynamicImage::ImageRgb8(upscale(&frame_with_face(640, 625, 2, 240), 10));
    let mut bytes = std::io::Cursor::new(Vec::new());
    grey.into_luma8()
        .write_to(&mut bytes, image::ImageFormat::Jpeg)
        .expect("encode grey");
    std::fs::write(frames.join("2.jpg"), bytes.into_inner()).expect("write");
    let png = encode(
        &upscale(&frame_with_face(400, 400, 1, 150), 10),
        image::ImageFormat::Png,
    );
    std::fs::write(frames.join("3.png"), &png).expect("write");
    println!("frames made in {:?}", t0.elapsed());
    e.configure(&[
        ("camera.source", text(format!("file:{}", frames.display()))),
        ("burst.frames", 4.into()),
        ("burst.keep", 4.into()),
        ("burst.time_budget_ms", 0.into()),
        ("burst.distinct_min_diff", 0.0.into()),
        // The smallest minimum face: the first frame is searched as large
        // as detect.max_edge allows.
        ("detect.min_face_px", 20.into()),
    ]);
    let mut d = Daemon::start(&e, None);
    let pid = d.child.id();
    let idle = proc_status_kib(pid, "VmHWM");
    let (events, last) = d.call(&Request::Enroll {
        person: "big-photos".into(),
        name: None,
        provider: None,
        frames: None,
        follow_upload: false,
        photo: None,
        consent: None,
        peer_uid: None,
    });
    let Reply::Answer { result } = &last else {
        panic!("{last:?} after {events:?}")
    };
    // Every frame decoded and its face seen (the PNG's may be too soft).
    let seen = events
        .iter()
        .filter(|r| matches!(r, Reply::Event { data, .. }
            if data.get("scores").and_then(|s| s.get("faces_seen")).and_then(|n| n.as_u64()) == Some(1)))
        .count();
    assert_eq!(seen, 4, "a face in every frame: {events:?}");
    d.wait_for("STATUS=queue", EVENTUALLY);
    let peak = proc_status_kib(pid, "VmHWM");
    let after = proc_status_kib(pid, "VmRSS");
    println!(
        "largest frames (3 x 6400x6250 JPEG of which 1 grey, 1 x 4000x4000 PNG, keep 4): \
         peak {} MiB (idle {} MiB), {} MiB resident after; queued {}",
        peak / 1024,
        idle / 1024,
        after / 1024,
        result["queued"]
    );
    assert!(peak < 256 * 1024, "VmHWM {peak} KiB is over MemoryMax=256M");
    // The frames' buffers go back to the system once the enrollment is done
    // (measured from idle: under qemu-user the emulator's own memory counts).
    assert!(
        after.saturating_sub(idle) < 48 * 1024,
        "{after} KiB still resident after the enrollment, {idle} KiB idle"
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// Runs `args` (once as text, once with `--json`): exit code, stdout, stderr.
fn outputs(e: &Enrolld, args: &[&str]) -> Vec<(Option<i32>, String, String)> {
    [false, true]
        .into_iter()
        .map(|json| {
            let mut cmd = e.command();
            if json {
                cmd.arg("--json");
            }
            let out = cmd.args(args).output().expect("run enrolld");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

#[test]
fn every_queue_command_prints_and_exits_the_same_with_or_without_a_daemon() {
    let (cloud, e) = setup(Provider::Jd, "");
    // Uploads fail (HTTP 500) and are retried in an hour: the queue holds
    // still while the same commands run through the daemon and without it.
    e.configure(&[
        ("upload.retry_base_ms", 3600000.into()),
        ("upload.retry_max_ms", 7200000.into()),
    ]);
    cloud.push_fault("5xx*1000");
    for (i, person) in ["p-1", "p-2"].into_iter().enumerate() {
        assert_eq!(e.enroll_portrait(person, i, &[]).0, 0);
    }
    let first = e.open_outbox().list().expect("list")[0].id.to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["queue", "list"],
        vec!["queue", "show", &first],
        vec!["queue", "receipts"],
        vec!["queue", "check"],
        vec!["drain"],
        vec!["queue", "show", "999"],
        vec!["queue", "retry", "999"],
        vec!["queue", "purge", "999"],
        vec!["ledger"],
        vec!["ledger", "--person", "p-1", "--since", "2020-01-01"],
        // Usage errors and refusals before anything is asked of a daemon:
        // the same text, JSON and exit code whether one runs or not.
        vec!["--bogus"],
        vec!["queue", "show", "abc"],
        vec!["queue", "purge"],
        vec!["enroll", "--person", "p-9", "--frames", "0"],
        vec!["enroll", "--person", "p-9", "--frames", "101"],
        vec!["enroll", "--person", "p-9", "--provider", "tencent"],
        vec!["enroll", "--person", "bad id with spaces\u{7}"],
        vec!["ledger", "--since", "tomorrow"],
    ];
    let d = Daemon::start(&e, None);
    // The start-up pass has tried both entries once.
    assert!(wait_until(EVENTUALLY, || {
        let (_, r) = d.call(&Request::Status {});
        matches!(&r, Reply::Answer { result } if !result["last_drain"].is_null())
    }));
    let through_daemon: Vec<_> = commands.iter().map(|c| outputs(&e, c)).collect();
    let status_running = outputs(&e, &["status"]);
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
    let without: Vec<_> = commands.iter().map(|c| outputs(&e, c)).collect();
    for ((args, a), b) in commands.iter().zip(&through_daemon).zip(&without) {
        assert_eq!(
            a,
            b,
            "`enrolld {}`: through the daemon, then without",
            args.join(" ")
        );
    }
    // What each printed, so a regression shows what changed.
    let list = &without[0][0];
    assert_eq!(list.0, Some(0));
    assert!(list.1.starts_with("2 entries (2 pending"), "{}", list.1);
    assert!(list.1.contains("last error: "), "{}", list.1);
    let list_json: serde_json::Value = serde_json::from_str(&without[0][1].1).expect("json");
    assert_eq!(list_json["limits"]["max_entries"], 1000, "{list_json}");
    assert_eq!(
        without[4][0].0,
        Some(7),
        "drain: still pending, retried later"
    );
    for (i, code) in [(5, 6), (6, 6), (7, 6)] {
        assert_eq!(without[i][0].0, Some(code), "{:?}", without[i]);
        assert_eq!(without[i][0].2, "enrolld: no queue entry 999\n");
        let err: serde_json::Value = serde_json::from_str(&without[i][1].1).expect("json");
        assert_eq!(err["error"], "not_found", "{err}");
    }
    // Every refusal exits 2 and, with --json, is one error document on stdout.
    for (args, out) in commands.iter().zip(&without).skip(10) {
        assert_eq!(
            out[0].0,
            Some(2),
            "`enrolld {}`: {:?}",
            args.join(" "),
            out[0]
        );
        let err: serde_json::Value = serde_json::from_str(&out[1].1)
            .unwrap_or_else(|e| panic!("`enrolld --json {}`: {e}: {:?}", args.join(" "), out[1]));
        assert!(
            err["error"].is_string() && err["message"].is_string(),
            "{err}"
        );
    }
    // status says whether a daemon runs (exit 0) or not (exit 1); the
    // queue's part is rendered by the same code.
    let status_stopped = outputs(&e, &["status"]);
    assert_eq!(status_running[0].0, Some(0), "{:?}", status_running);
    assert_eq!(status_stopped[0].0, Some(1), "{:?}", status_stopped);
    let queue_line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("queue: "))
            .map(str::to_owned)
    };
    assert_eq!(
        queue_line(&status_running[0].1),
        queue_line(&status_stopped[0].1)
    );
    assert!(
        status_running[0].1.starts_with("daemon: running"),
        "{:?}",
        status_running
    );
}

#[test]
fn a_photo_is_enrolled_through_a_running_daemon_which_reads_what_the_client_opened() {
    let (_cloud, e) = setup(Provider::Jd, "");
    let photo = e.path("visitor.jpg");
    write_jpeg(&portrait(1, 3.0), &photo);
    let d = Daemon::start(&e, None);
    let source = format!("file:{}", photo.display());
    let out = e.run(&["enroll", "--person", "visitor-1", "--source", &source]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("queued enrollment ")
            && stdout.contains("\"visitor-1\" (jd, 1 image(s): "),
        "{stdout}"
    );
    // The daemon queued it (the queue is its own while it runs: the
    // command could not have opened it).
    let (_, list) = d.call(&Request::QueueList {});
    let Reply::Answer { result } = list else {
        panic!("queue_list: {list:?}")
    };
    assert_eq!(result["entries"][0]["person_id"], "visitor-1", "{result}");

    // A device or a missing photo is named as such, not as a busy queue.
    for (source, code) in [
        ("file:/dev/zero", "not_a_file"),
        ("file:/nowhere.jpg", "file_not_found"),
    ] {
        let (exit, v) = e.json(&["enroll", "--person", "visitor-3", "--source", source]);
        assert_eq!(
            (exit, v["error"].as_str()),
            (5, Some(code)),
            "{source}: {v}"
        );
    }

    // A client that passes a FIFO, or names a photo and passes nothing, is
    // refused; the daemon reads neither and goes on.
    let fifo = e.path("fifo.jpg");
    mkfifo(&fifo);
    let opened = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .expect("open fifo")
    };
    let req = Request::Enroll {
        person: "visitor-2".into(),
        name: None,
        provider: None,
        frames: None,
        follow_upload: false,
        photo: Some("fifo.jpg".into()),
        consent: None,
        peer_uid: None,
    };
    let mut client = Client::connect(&d.socket, EVENTUALLY)
        .expect("connect")
        .expect("listening");
    let last = wire(
        &client
            .call_with(&req, Some(&opened), &mut |_| {})
            .expect("call"),
    );
    assert!(
        matches!(&last, Reply::Error { code, .. } if *code == ErrorCode::NotAFile),
        "{last:?}"
    );
    let (_, last) = d.call(&req);
    assert!(
        matches!(&last, Reply::Error { code, .. } if *code == ErrorCode::Malformed),
        "{last:?}"
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn drain_through_the_daemon_reports_a_pause_and_tries_again_when_asked() {
    let (cloud, e) = setup(Provider::Jd, "");
    // The start-up pass meets a credentials refusal: uploads to JD pause.
    cloud.push_fault("bad-credentials");
    assert_eq!(e.enroll_portrait("p-paused", 0, &[]).0, 0);
    let d = Daemon::start(&e, None);
    assert!(wait_until(EVENTUALLY, || {
        let (_, r) = d.call(&Request::Status {});
        matches!(&r, Reply::Answer { result } if !result["last_drain"]["paused"].as_array().is_none_or(|p| p.is_empty()))
    }));
    assert!(cloud.faces("p-paused").is_empty());
    // The operator fixed it (here: the emulator refuses no more) and asks
    // for a pass: the pause is lifted for it, and the entry goes up.
    let out = e.run(&["drain"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("uploaded 1, will retry 0, dead 0, still pending 0"),
        "{stdout}"
    );
    assert_eq!(cloud.faces("p-paused").len(), 1);
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// The daemon's log (stderr, the journal under systemd).
fn journal(e: &Enrolld) -> String {
    std::fs::read_to_string(e.path("daemon.log")).unwrap_or_default()
}

#[test]
fn a_billing_lapse_fixed_in_the_console_is_uploaded_with_nobody_at_the_device() {
    let (cloud, e) = setup(Provider::Jd, "");
    let metrics = e.path("enrolld.prom");
    e.configure(&[
        ("upload.pause_recheck_min_ms", 1_000.into()),
        ("upload.pause_recheck_max_ms", 2_000.into()),
        ("metrics.textfile", text(metrics.display().to_string())),
    ]);
    // The bill lapsed: JD answers 10010 to everything until it is paid.
    cloud.push_fault("billing*1000000");
    assert_eq!(e.enroll_portrait("p-arrears", 0, &[]).0, 0);
    let d = Daemon::start(&e, None);
    let mut paused = serde_json::Value::Null;
    assert!(wait_until(EVENTUALLY, || {
        let (_, r) = d.call(&Request::Status {});
        if let Reply::Answer { result } = r {
            paused = result["last_drain"]["paused"][0].clone();
        }
        paused["checks"].as_u64().is_some_and(|c| c >= 1)
    }));
    // Paused, why, since when and when it checks next: in status, the
    // metrics and the journal.
    assert_eq!(paused["code"], "10010", "{paused:#}");
    let since = paused["since_ms"].as_i64().expect("since");
    let next = paused["next_check_ms"].as_i64().expect("next check");
    assert!(next > since, "{paused:#}");
    assert!(wait_until(EVENTUALLY, || std::fs::read_to_string(&metrics)
        .is_ok_and(|m| m.contains(
            "enrolld_upload_pause_next_check_timestamp_seconds{provider=\"jd\"}"
        ))));
    let log = journal(&e);
    assert!(log.contains("uploads to jd paused"), "{log}");
    assert!(log.contains("checking uploads to jd again"), "{log}");
    assert!(log.contains("checking again in"), "{log}");
    assert!(cloud.faces("p-arrears").is_empty());
    // The bill is paid in the console. Nobody touches the device.
    cloud.emulator.clear_faults();
    assert!(
        wait_until(EVENTUALLY, || cloud.faces("p-arrears").len() == 1),
        "{}",
        journal(&e)
    );
    assert!(wait_until(EVENTUALLY, || journal(&e).contains("uploads to jd resumed")));
    // The journal tells what was uploaded, with the cloud's face id.
    let log = journal(&e);
    assert!(
        log.lines()
            .any(|l| l.contains("uploaded to jd (person p-arrears") && l.contains("face id(s) ")),
        "{log}"
    );
    assert!(wait_until(EVENTUALLY, || {
        let (_, r) = d.call(&Request::Status {});
        matches!(&r, Reply::Answer { result } if result["last_drain"]["paused"].as_array().is_some_and(|p| p.is_empty()))
    }));
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn a_secret_file_replaced_while_paused_is_read_at_the_next_check() {
    let (cloud, e) = setup(Provider::Jd, "");
    e.configure(&[
        ("upload.pause_recheck_min_ms", 1_000.into()),
        ("upload.pause_recheck_max_ms", 2_000.into()),
    ]);
    // The device was given an old secret: every request's signature is wrong.
    let secret = cloud.dir.path().join("secret");
    write_private(&secret, "an-old-rotated-secret\n");
    assert_eq!(e.enroll_portrait("p-rotated", 0, &[]).0, 0);
    let d = Daemon::start(&e, None);
    assert!(wait_until(EVENTUALLY, || journal(&e).contains("uploads to jd paused")));
    assert!(cloud.faces("p-rotated").is_empty());
    // The new secret is put in place (as a provisioning agent would): no
    // reload, no command.
    write_private(&secret, format!("{SECRET}\n"));
    assert!(
        wait_until(EVENTUALLY, || cloud.faces("p-rotated").len() == 1),
        "{}",
        journal(&e)
    );
    let log = journal(&e);
    for leaked in [SECRET, "an-old-rotated-secret"] {
        assert!(!log.contains(leaked), "{leaked} leaked into the journal");
    }
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn a_rejected_enrollment_ends_the_same_with_or_without_a_daemon() {
    let (_cloud, e) = setup(Provider::Jd, "");
    let camera = e.path("empty-room.jpg");
    write_jpeg(&no_face_photo(), &camera);
    e.configure(&[("camera.source", text(format!("file:{}", camera.display())))]);
    let enroll = || {
        let out = e.run(&["enroll", "--person", "nobody-here"]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let d = Daemon::start(&e, None);
    let through_daemon = enroll();
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
    let without = enroll();
    assert_eq!(through_daemon, without);
    assert_eq!(without.0, Some(3));
    // Progress, then the verdict, line for line the same both ways.
    let lines: Vec<&str> = without.2.lines().collect();
    assert!(lines[0].starts_with("capturing from file:"), "{without:?}");
    assert!(
        lines[1].starts_with("  frame 0: 0 face(s): rejected: no_face"),
        "{without:?}"
    );
    assert!(
        lines[lines.len() - 1].starts_with("enrolld: no_face: "),
        "{without:?}"
    );
}

/// The socket takes an enrollment on the command line's terms: a burst of 1
/// to 100 frames, and only for a provider that could upload it. Nothing is
/// captured or queued otherwise, and the answer says what is missing.
#[test]
fn the_socket_refuses_what_the_command_line_refuses() {
    let (_cloud, e) = setup(Provider::Jd, "");
    let d = Daemon::start(&e, None);
    let enroll = |provider: Option<Provider>, frames: Option<u32>| Request::Enroll {
        person: "sock-check".into(),
        name: None,
        provider,
        frames,
        follow_upload: false,
        photo: None,
        consent: None,
        peer_uid: None,
    };
    for (req, code, says) in [
        (enroll(None, Some(0)), "invalid_request", "1 to 100 frames"),
        (
            enroll(None, Some(101)),
            "invalid_request",
            "1 to 100 frames",
        ),
        (
            enroll(Some(Provider::Tencent), None),
            "config_invalid",
            "tencent.secret_id",
        ),
    ] {
        let (events, last) = d.call(&req);
        assert_eq!(events, vec![last.clone()], "no capture events");
        match &last {
            Reply::Error { code: c, message } => {
                assert_eq!(c.as_str(), code, "{req:?}: {message}");
                assert!(message.contains(says), "{req:?}: {message}");
            }
            other => panic!("{req:?}: {other:?}"),
        }
    }
    // The command line, through the daemon, says the same.
    let out = e.run(&["enroll", "--person", "sock-check", "--provider", "tencent"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tencent.secret_id"),
        "{out:?}"
    );
    let (_, r) = d.call(&Request::QueueList {});
    assert!(
        matches!(&r, Reply::Answer { result } if result["entries"].as_array().is_some_and(|a| a.is_empty())),
        "nothing queued: {r:?}"
    );
}

/// A stopped (SIGSTOP) or hung daemon still has its socket accept
/// connections: `status` says so after 15 s of silence instead of waiting
/// two minutes, and works again once the daemon runs on.
#[test]
fn a_stopped_daemon_is_named_as_such_and_not_waited_for() {
    let (_cloud, e) = setup(Provider::Jd, "");
    let d = Daemon::start(&e, None);
    d.signal(rustix::process::Signal::STOP);
    let started = Instant::now();
    let out = e.run(&["status"]);
    let waited = started.elapsed();
    d.signal(rustix::process::Signal::CONT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("stopped or hung"), "{stderr}");
    assert!(
        waited < Duration::from_secs(100),
        "gave up after the first-line wait, not the whole answer's: {waited:?}"
    );
    let out = e.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// `--state-dir` names a queue of its own: with a daemon running, the
/// command works on that directory, not on the daemon's queue; the daemon's
/// own directory is refused as held.
#[test]
fn state_dir_on_the_command_line_is_not_the_daemons_queue() {
    let (_cloud, e) = setup(Provider::Jd, "");
    let d = Daemon::start(&e, None);
    assert_eq!(e.enroll_portrait("in-daemon", 0, &[]).0, 0);
    let other = e.path("other-state");
    let other_arg = other.display().to_string();
    let (code, v) = e.json(&["--state-dir", &other_arg, "queue", "list"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["usage"]["entries"], 0, "the other queue is empty: {v:#}");
    let photo = e.path("portrait-0.jpg");
    let source = format!("file:{}", photo.display());
    let (code, v) = e.json(&[
        "--state-dir",
        &other_arg,
        "enroll",
        "--person",
        "in-other",
        "--source",
        &source,
    ]);
    assert_eq!(code, 0, "{v:#}");
    let (_, r) = d.call(&Request::QueueList {});
    let Reply::Answer { result } = &r else {
        panic!("{r:?}")
    };
    let persons: Vec<&str> = result["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["person_id"].as_str())
        .collect();
    assert!(
        !persons.contains(&"in-other"),
        "not in the daemon's queue: {persons:?}"
    );
    let own = e.state_dir().display().to_string();
    let (code, v) = e.json(&["--state-dir", &own, "queue", "list"]);
    assert_eq!(
        (code, v["error"].as_str()),
        (1, Some("queue_locked")),
        "{v:#}"
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// Drains waiting on a cloud that does not answer take at most
/// `control.max_clients - 2` slots: `status` still gets in, and the drain
/// that is refused is told why.
#[test]
fn drains_waiting_on_a_hung_cloud_leave_room_for_status() {
    let (cloud, e) = setup(Provider::Jd, "max_clients = 4");
    let d = Daemon::start(&e, None);
    cloud.push_fault("hang");
    assert_eq!(e.enroll_portrait("p-hung", 0, &[]).0, 0);
    let socket = e.path("control.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..3 {
        let (socket, tx) = (socket.clone(), tx.clone());
        std::thread::spawn(move || {
            let Ok(Some(mut c)) = Client::connect(&socket, EVENTUALLY) else {
                return;
            };
            let _ = tx.send(
                c.call(&Request::Drain {}, &mut |_| {})
                    .ok()
                    .map(|r| wire(&r)),
            );
        });
    }
    // Two wait on the cloud; the third is refused at once.
    let refused = rx.recv_timeout(EVENTUALLY).expect("one drain answered");
    match &refused {
        Some(Reply::Error { code, message }) => {
            assert_eq!(*code, ErrorCode::TooManyClients, "{message}");
            assert!(message.contains("waiting on the cloud"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let (_, r) = d.call(&Request::Status {});
    assert!(matches!(r, Reply::Answer { .. }), "status gets in: {r:?}");
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// A rejected enrollment prints the same with and without a daemon: the
/// whole outcome with every frame's report under `--json`, exit 3.
#[test]
fn a_rejection_prints_the_same_with_or_without_a_daemon() {
    let (_cloud, e) = setup(Provider::Jd, "");
    let photo = e.path("no-face.jpg");
    write_jpeg(&no_face_photo(), &photo);
    let source = format!("file:{}", photo.display());
    let args = ["enroll", "--person", "nf-1", "--source", &source];
    let (alone_code, alone) = e.json(&args);
    let d = Daemon::start(&e, None);
    let (daemon_code, daemon) = e.json(&args);
    assert_eq!((alone_code, daemon_code), (3, 3), "{alone:#}\n{daemon:#}");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&alone), keys(&daemon), "{alone:#}\n{daemon:#}");
    assert_eq!(alone["result"], "rejected");
    assert_eq!(alone["reason"], daemon["reason"]);
    assert_eq!(alone["advice"], daemon["advice"]);
    assert_eq!(
        alone["frames"].as_array().map(Vec::len),
        daemon["frames"].as_array().map(Vec::len)
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// `drain` through a daemon tells what happened, not only what its own pass
/// did: entries due at start-up that the background pass uploads while the
/// request waits are counted in its answer.
#[test]
fn drain_through_the_daemon_counts_the_pass_that_was_under_way() {
    let (cloud, e) = setup(Provider::Jd, "");
    for i in 0..4 {
        assert_eq!(e.enroll_portrait(&format!("due-{i}"), i % 3, &[]).0, 0);
    }
    // Each upload takes 1.5 s: the start-up pass is under way when asked.
    cloud.push_fault("slow:1500*4");
    let d = Daemon::start(&e, None);
    let (code, s) = e.json(&["drain"]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["uploaded"], 4, "{s:#}");
    assert_eq!(s["pending"], 0, "{s:#}");
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

/// RFC 3339 times (`2026-12-02T18:13:25Z`, with or without milliseconds)
/// and JSON times in ms (`"next_due_ms":1796241034647`) as `<time>`: what
/// differs between two runs of the same story.
fn without_times(text: &str) -> String {
    let text = rfc3339_masked(text);
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("_ms\":") {
        let (head, tail) = rest.split_at(at + 5);
        out.push_str(head);
        let digits = tail
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(tail.len());
        if digits > 0 {
            out.push_str("<time>");
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

fn rfc3339_masked(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let digits = |from: usize, n: usize| {
        b.len() >= from + n && b[from..from + n].iter().all(u8::is_ascii_digit)
    };
    while i < b.len() {
        let stamp = digits(i, 4)
            && b.get(i + 4) == Some(&b'-')
            && digits(i + 5, 2)
            && b.get(i + 10) == Some(&b'T')
            && digits(i + 11, 2)
            && b.get(i + 13) == Some(&b':');
        if stamp {
            let mut j = i + 19;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            if b.get(j) == Some(&b'Z') {
                j += 1;
            }
            out.push_str("<time>");
            i = j;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// `drain` streams one line per entry as it goes (stderr; with `--json`,
/// one event per entry), whichever of the daemon's passes uploaded it, and
/// ends with the summary and exit code the README gives: the same, times
/// aside, with a daemon as without one.
#[test]
fn drain_streams_every_entry_and_tells_the_same_story_with_or_without_a_daemon() {
    let story = |with_daemon: bool, json: bool| {
        let (cloud, e) = setup(Provider::Jd, "");
        e.configure(&[
            ("upload.retry_base_ms", 3600000.into()),
            ("upload.retry_max_ms", 7200000.into()),
        ]);
        for (i, person) in ["s-1", "s-2", "s-3"].into_iter().enumerate() {
            assert_eq!(e.enroll_portrait(person, i, &[]).0, 0);
        }
        // The first upload is slow: a daemon's start-up pass is still under
        // way when `drain` is asked. The second fails and waits an hour.
        cloud.push_fault("slow:3000@faceCreate*1");
        cloud.push_fault("5xx@faceCreate*1");
        let d = with_daemon.then(|| Daemon::start(&e, None));
        let mut cmd = e.command();
        if json {
            cmd.arg("--json");
        }
        let out = cmd.arg("drain").output().expect("run enrolld");
        if let Some(d) = d {
            assert_eq!(d.terminate(EVENTUALLY).0, Some(0));
        }
        assert_eq!(cloud.faces("s-1").len(), 1);
        assert_eq!(cloud.faces("s-3").len(), 1);
        (
            out.status.code(),
            without_times(&String::from_utf8_lossy(&out.stdout)),
            without_times(&String::from_utf8_lossy(&out.stderr)),
        )
    };
    for json in [false, true] {
        let alone = story(false, json);
        let through = story(true, json);
        assert_eq!(
            alone, through,
            "--json {json}: without a daemon, then with one"
        );
        assert_eq!(alone.0, Some(7), "one upload failed and will be retried");
        let lines: Vec<&str> = alone.2.lines().collect();
        assert_eq!(lines.len(), 3, "one line per entry: {lines:?}");
        if json {
            let events: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| {
                    serde_json::from_str(&l.replace("<time>", "0"))
                        .expect("one JSON event per line")
                })
                .collect();
            let outcomes: Vec<&str> = events
                .iter()
                .map(|e| e["outcome"].as_str().unwrap_or("?"))
                .collect();
            assert_eq!(outcomes, ["uploaded", "retry", "uploaded"], "{events:?}");
            assert!(events.iter().all(|e| e["event"] == "drain_entry"));
            let summary: serde_json::Value =
                serde_json::from_str(&alone.1.replace("<time>", "0")).expect("summary");
            assert_eq!(summary["uploaded"], 2, "{summary}");
            assert_eq!(summary["retried"], 1, "{summary}");
        } else {
            assert!(
                lines[0].starts_with("entry 1 uploaded to jd (person \"s-1\"): face "),
                "{lines:?}"
            );
            assert!(
                lines[1].starts_with("entry 2 to jd (person \"s-2\") will be retried <time>: "),
                "{lines:?}"
            );
            assert!(
                alone
                    .1
                    .starts_with("uploaded 2, will retry 1, dead 0, still pending 1\n"),
                "{}",
                alone.1
            );
        }
    }
}

#[test]
fn the_socket_asks_for_consent_and_a_withdrawal_during_the_upload_deletes_the_person_in_the_cloud()
{
    let (cloud, e) = setup(Provider::Tencent, "[consent]\nrequired = true\n");
    let d = Daemon::start(&e, None);
    let enroll = |person: &str, consent: Option<&str>| Request::Enroll {
        person: person.into(),
        name: None,
        provider: None,
        frames: None,
        follow_upload: false,
        photo: None,
        consent: consent.map(str::to_string),
        peer_uid: None,
    };
    // No consent: refused before anything is captured, nothing queued.
    let (events, last) = d.call(&enroll("sock-1", None));
    let Reply::Error { code, message } = &last else {
        panic!("{last:?}");
    };
    assert_eq!(*code, ErrorCode::ConsentRequired);
    assert!(
        message.contains("--consent") && message.contains("\"consent\""),
        "{message}"
    );
    assert!(
        !events.iter().any(|r| matches!(r, Reply::Event { .. })),
        "nothing captured: {events:?}"
    );
    let (_, list) = e.json(&["queue", "list"]);
    assert_eq!(list["entries"], serde_json::json!([]), "{list}");
    // With consent, while the cloud is slow to answer CreatePerson: the
    // person withdraws during the upload. The upload stays in flight for
    // as long as this machine takes for 20 start-ups (at least 3 s), well
    // under the upload's receive timeout (30 s).
    let slow_ms = d.prompt().as_millis().min(25_000);
    cloud.push_fault(&format!("slow:{slow_ms}@CreatePerson"));
    let (_, last) = d.call(&enroll("sock-1", Some("HR-2291")));
    let Reply::Answer { result } = last else {
        panic!("{last:?}");
    };
    let id = result["queued"].as_u64().expect("queued id");
    let in_flight = wait_until(EVENTUALLY, || {
        let (_, list) = e.json(&["queue", "list"]);
        list["entries"][0]["state"] == "in_flight"
    });
    assert!(in_flight, "the upload started");
    let (_, shown) = e.json(&["queue", "show", &id.to_string()]);
    let record = &shown["consent_record"];
    assert_eq!(record["reference"], "HR-2291", "{shown}");
    assert_eq!(record["via"], "socket");
    assert_eq!(record["uid"], rustix::process::getuid().as_raw());
    assert_eq!(record["scope"]["provider"], "tencent");
    let (code, forgot) = e.json(&["person", "forget", "sock-1"]);
    assert_eq!(code, 0, "{forgot}");
    assert_eq!(forgot["in_flight"], serde_json::json!([id]), "{forgot}");
    assert_eq!(forgot["cloud_outcome"][0]["state"], "deleted", "{forgot}");
    assert_eq!(
        forgot["cloud_outcome"][0]["how"], "DeletePerson",
        "{forgot}"
    );
    // The upload landed, then the person was deleted with it.
    assert_eq!(cloud.requests("CreatePerson"), 1);
    assert_eq!(cloud.requests("DeletePerson"), 1);
    assert!(cloud
        .emulator
        .with_state(|s| !s.persons.contains_key("sock-1")));
    let (_, list) = e.json(&["queue", "list"]);
    assert_eq!(list["entries"], serde_json::json!([]), "{list}");
    let (_, receipts) = e.json(&["queue", "receipts"]);
    assert_eq!(receipts["receipts"], serde_json::json!([]), "{receipts}");
    let (_, ledger) = e.json(&["ledger", "--person", "sock-1"]);
    let events: Vec<&str> = ledger["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert_eq!(
        events,
        [
            "consent_given",
            "queued",
            "withdrawn",
            "uploaded",
            "deleted_in_cloud"
        ],
        "{ledger}"
    );
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}

#[test]
fn a_daemon_killed_between_the_shred_and_the_cloud_delete_sends_the_delete_after_restart() {
    let (cloud, e) = setup(Provider::Tencent, "");
    assert_eq!(e.enroll_portrait("kill-1", 0, &[]).0, 0);
    assert_eq!(e.json(&["drain"]).0, 0);
    assert_eq!(cloud.faces("kill-1").len(), 1);
    // The cloud cannot be reached: the withdrawal is done on the device
    // and its delete waits, queued.
    let endpoint = cloud.emulator.endpoint();
    e.configure(&[("tencent.endpoint", text("https://127.0.0.1:9"))]);
    let d = Daemon::start(&e, None);
    let (code, forgot) = e.json(&["person", "forget", "kill-1"]);
    assert_eq!(code, 7, "{forgot}");
    assert_eq!(forgot["cloud_outcome"][0]["state"], "pending", "{forgot}");
    // Power cut: SIGKILL, no shutdown.
    d.signal(rustix::process::Signal::KILL);
    drop(d);
    e.configure(&[("tencent.endpoint", text(endpoint))]);
    let d = Daemon::start(&e, None);
    let gone = wait_until(EVENTUALLY, || {
        cloud
            .emulator
            .with_state(|s| !s.persons.contains_key("kill-1"))
    });
    assert!(gone, "the delete was sent after the restart");
    let (_, ledger) = e.json(&["ledger", "--person", "kill-1"]);
    let last = ledger["records"]
        .as_array()
        .and_then(|r| r.last())
        .expect("records");
    assert_eq!(last["event"], "deleted_in_cloud", "{ledger}");
    let (code, _) = d.terminate(EVENTUALLY);
    assert_eq!(code, Some(0));
}
