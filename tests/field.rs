//! Field hardening, tried as a careless operator or a local attacker would,
//! on the real binary: files enrolld must never delete, file modes it must
//! refuse, what `config check` must predict, and the small mistakes a
//! technician makes at the command line.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_control_socket_path_naming_another_file_never_deletes_it() {
    // The socket pointed at the queue key, then at the config itself.
    for victim in ["queue-key", "enrolld.toml"] {
        let e = Enrolld::new("");
        let target = e.path(victim);
        let config = std::fs::read_to_string(e.path("enrolld.toml")).expect("config");
        let config = format!(
            "{config}\n[control]\nsocket = {:?}\n",
            target.display().to_string()
        );
        write_private(&e.path("enrolld.toml"), &config);
        let before = std::fs::read(&target).expect("read");

        let out = e.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("is not a socket"), "{}", stderr(&out));

        let mut child = e.command().arg("run").spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "run did not refuse");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success());
        assert_eq!(
            std::fs::read(&target).expect("still there"),
            before,
            "{victim}"
        );
    }
}

#[test]
fn files_others_can_write_are_refused_with_the_chmod_to_run() {
    let cloud = Cloud::start(enrolld::model::Provider::Jd);
    let e = Enrolld::new(&cloud.config("", ""));
    let ok = e.run(&["config", "check"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    // The config at 602, the secret at 620, the key inside a 777 directory,
    // the CA file writable by others: each refused, each named.
    let config = e.path("enrolld.toml");
    chmod(&config, 0o602);
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("writable by other users (mode 602)")
            && stderr(&out).contains("chmod go-w"),
        "{}",
        stderr(&out)
    );
    chmod(&config, 0o600);

    let secret = cloud.dir.path().join("secret");
    chmod(&secret, 0o620);
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("jd.secret_key_file") && stderr(&out).contains("mode 620"),
        "{}",
        stderr(&out)
    );
    chmod(&secret, 0o600);

    chmod(&cloud.ca_path(), 0o646);
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("tls.extra_ca_file"),
        "{}",
        stderr(&out)
    );
    chmod(&cloud.ca_path(), 0o644);

    chmod(e.dir.path(), 0o777);
    let out = e.run(&["status"]);
    chmod(e.dir.path(), 0o700);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "directory {} is writable by other users",
            e.dir.path().display()
        )),
        "{}",
        stderr(&out)
    );
    let ok = e.run(&["config", "check"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
}

#[test]
fn the_state_dir_is_private_and_so_is_every_file_of_the_queue() {
    let e = Enrolld::new("[quality]\nmin_face_px = 40\n");
    let (code, v) = e.enroll_portrait("emp-1", 0, &[]);
    assert_eq!(code, 0, "{v}");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&e.state_dir()), 0o700);
    let mut files = 0;
    let mut stack = vec![e.state_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
                files += 1;
            }
        }
    }
    assert!(files >= 2, "sled's conf and log at least");
}

#[test]
fn config_check_finds_what_start_up_and_the_first_upload_would() {
    let cloud = Cloud::start(enrolld::model::Provider::Tencent);
    let base = cloud.config("", "group_id = \"g\"");
    let e = Enrolld::new(&base);
    let check = |e: &Enrolld| {
        let out = e.run(&["config", "check"]);
        (out.status.code(), stderr(&out))
    };
    assert_eq!(check(&e).0, Some(0), "{}", check(&e).1);

    // The queue key: missing, then readable by others.
    let key = e.path("queue-key");
    std::fs::rename(&key, e.path("key.away")).expect("mv");
    let (code, err) = check(&e);
    assert_eq!(code, Some(2));
    assert!(err.contains("queue.key_file"), "{err}");
    std::fs::rename(e.path("key.away"), &key).expect("mv");
    chmod(&key, 0o644);
    let (code, err) = check(&e);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("queue.key_file") && err.contains("readable by other users"),
        "{err}"
    );
    chmod(&key, 0o600);

    // The secret: empty, a directory, missing.
    let secret = cloud.dir.path().join("secret");
    write_private(&secret, "");
    let (code, err) = check(&e);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("tencent.secret_key_file") && err.contains("empty"),
        "{err}"
    );
    std::fs::remove_file(&secret).expect("rm");
    std::fs::create_dir(&secret).expect("mkdir");
    let (code, err) = check(&e);
    assert_eq!(code, Some(2));
    assert!(err.contains("is a directory"), "{err}");
    std::fs::remove_dir(&secret).expect("rmdir");
    let (code, err) = check(&e);
    assert_eq!(code, Some(2));
    assert!(err.contains("No such file"), "{err}");
    assert!(!err.contains(SECRET));
    write_private(&secret, format!("{SECRET}\n"));

    // The extra CA file: not PEM.
    std::fs::write(cloud.ca_path(), "not a certificate\n").expect("write");
    let (code, err) = check(&e);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("tls.extra_ca_file") && err.contains("no PEM"),
        "{err}"
    );
    cloud.emulator.write_ca(&cloud.ca_path()).expect("write ca");

    // A socket path longer than a socket address; a region with CR/LF;
    // an endpoint carrying a password.
    for (extra, key, leak) in [
        (
            format!("[control]\nsocket = \"/run/{}\"\n", "s".repeat(120)),
            "control.socket",
            None,
        ),
        (String::new(), "tencent.region", None),
        (String::new(), "tencent.endpoint", Some("hunter2pass")),
    ] {
        let config = match key {
            "tencent.region" => config_with(&base, &[("tencent.region", text("ap-x\r\n"))]),
            "tencent.endpoint" => config_with(
                &base,
                &[(
                    "tencent.endpoint",
                    text("https://admin:hunter2pass@127.0.0.1:1"),
                )],
            ),
            _ => format!("{base}{extra}"),
        };
        let e = Enrolld::new(&config);
        let (code, err) = check(&e);
        assert_eq!(code, Some(2), "{key}: {err}");
        assert!(err.contains(key), "{key}: {err}");
        if let Some(leak) = leak {
            assert!(!err.contains(leak), "{err}");
        }
    }
}

#[test]
fn small_operator_mistakes_get_clear_answers() {
    let e = Enrolld::new("[quality]\nmin_face_px = 40\n");
    let photo = e.path("p.jpg");
    write_jpeg(&portrait(0, 3.0), &photo);
    let source = format!("file:{}", photo.display());

    // --frames outside 1..=100 is a usage error, before anything runs.
    for frames in ["0", "101"] {
        let out = e.run(&[
            "enroll", "--person", "p", "--source", &source, "--frames", frames,
        ]);
        assert_eq!(out.status.code(), Some(2), "--frames {frames}");
        assert!(stderr(&out).contains("1..=100"), "{}", stderr(&out));
    }

    // A missing photo is a missing file, not a camera to plug in.
    let out = e.run(&[
        "enroll",
        "--person",
        "p",
        "--source",
        "file:/nonexistent/p.jpg",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("no such file") && !stderr(&out).contains("camera"),
        "{}",
        stderr(&out)
    );

    // A FIFO as the source answers at once instead of blocking forever.
    let fifo = e.path("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("mkfifo");
    let started = Instant::now();
    let mut child = e
        .command()
        .args(["enroll", "--person", "p", "--source"])
        .arg(format!("file:{}", fifo.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("enroll from a FIFO did not return");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(5));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );

    // Queue ids: small and increasing from one process to the next.
    let ids: Vec<u64> = (0..2)
        .map(|_| {
            let (code, v) = e.json(&["enroll", "--person", "p", "--source", &source]);
            assert_eq!(code, 0, "{v}");
            v["entry"]["id"].as_u64().expect("id")
        })
        .collect();
    assert_eq!(ids, [1, 2]);

    // A state_dir that cannot be made names the path.
    let blocker = e.path("plain-file");
    std::fs::write(&blocker, "x").expect("write");
    let bad_state = blocker.join("state");
    let out = e
        .command()
        .arg("--state-dir")
        .arg(&bad_state)
        .args(["queue", "list"])
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains(&blocker.display().to_string()),
        "{}",
        stderr(&out)
    );

    // A fresh device with no key: `status` says no daemon runs.
    std::fs::remove_file(e.path("queue-key")).expect("rm key");
    let out = e.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("daemon: not running"), "{stdout}");
}

/// A queue of seven live entries (five small, two large enough for sled to
/// put in blob files) and one receipt, in `dir`.
fn rot_fixture(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    use enrolld::model::Group;
    use enrolld::queue::outbox::{NewEnrollment, NewImage};
    let ob = open_queue(dir).expect("open");
    let mut live = Vec::new();
    for (i, len) in [
        20_000, 30_000, 700_000, 25_000, 600_000, 15_000, 40_000, 10_000,
    ]
    .into_iter()
    .enumerate()
    {
        let image = noise(0x2545_f491_4f6c_dd1d + i as u64, len);
        let e = ob
            .enqueue(NewEnrollment {
                person_id: format!("rot-{i}"),
                person_name: None,
                provider: enrolld::model::Provider::Jd,
                group: Group {
                    id: "g".into(),
                    name: String::new(),
                },
                images: vec![NewImage {
                    bytes: image.clone(),
                    width: 100,
                    height: 100,
                }],
                scores: Vec::new(),
                consent: None,
            })
            .expect("enqueue");
        live.push((e.id, image));
    }
    // The first is uploaded: a receipt.
    ob.complete(live[0].0, &["face-0".into()])
        .expect("complete");
    live.remove(0);
    live
}

/// Every file of the state dir, relative to it.
fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for rel in files_under(from) {
        let target = to.join(&rel);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from.join(&rel), target).expect("copy");
    }
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0xff;
    std::fs::write(path, bytes).expect("write");
}

/// Opens a (possibly damaged) queue; the live entries whose images read
/// back exactly.
fn kept(dir: &Path, live: &[(u64, Vec<u8>)]) -> (Vec<u64>, enrolld::queue::outbox::Outbox) {
    let ob = open_queue(dir).unwrap_or_else(|e| panic!("a damaged queue still opens: {e}"));
    let ids = live
        .iter()
        .filter(|(id, image)| match ob.images(*id) {
            Ok(i) => i == vec![image.clone()],
            Err(e) => {
                println!("entry {id}: {e}");
                false
            }
        })
        .map(|(id, _)| *id)
        .collect();
    (ids, ob)
}

#[test]
fn a_flipped_byte_in_any_file_of_the_queue_loses_no_entry() {
    let good = tempfile::tempdir().expect("tempdir");
    let live = rot_fixture(good.path());
    let files = files_under(good.path());
    let kinds = |prefix: &str| files.iter().filter(|f| f.starts_with(prefix)).count();
    assert!(
        kinds("outbox/db") == 1 && kinds("spool") == live.len() && kinds("images") == live.len(),
        "premise: sled's log, one spool file and one image file per entry: {files:?}"
    );
    let mut trials = 0;
    let mut rebuilt = 0;
    for rel in &files {
        let len = std::fs::metadata(good.path().join(rel))
            .expect("stat")
            .len();
        // Each spool file is sealed whole, each image too: two places tell
        // as much as eight.
        let mut offsets = if rel.starts_with("spool") || rel.starts_with("images") {
            vec![0, len / 2]
        } else {
            vec![0, 1, 20, 100, len / 4, len / 2, 3 * len / 4, len - 1]
        };
        offsets.retain(|o| *o < len);
        offsets.dedup();
        for offset in offsets {
            let work = tempfile::tempdir().expect("tempdir");
            copy_tree(good.path(), work.path());
            flip(&work.path().join(rel), offset);
            let (ids, ob) = kept(work.path(), &live);
            trials += 1;
            assert_eq!(
                ids.len(),
                live.len(),
                "{} byte {offset}: kept {ids:?} of {:?}",
                rel.display(),
                live.iter().map(|(id, _)| *id).collect::<Vec<_>>()
            );
            if let Some(s) = ob.last_salvage() {
                rebuilt += 1;
                assert!(s.lost.is_empty(), "{s:?}");
                assert!(s.moved_to.exists(), "the damaged store is kept: {s:?}");
            }
        }
    }
    println!(
        "byte flips: {trials} trials over {} files (store log, snapshot, settings, blobs if any, spool): \
         every live entry kept in each; {rebuilt} opened by rebuilding a damaged store",
        files.len()
    );
    assert!(rebuilt > 0, "some flips damage what sled checks");
}

#[test]
fn when_both_copies_of_an_entry_rot_only_that_entry_is_lost_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = rot_fixture(dir.path());
    // sled's log damaged near its start (everything after is unreadable to
    // sled), and the spool copy of one entry damaged too.
    flip(&dir.path().join("outbox/db"), 20);
    let victim = live[2].0;
    let copy = dir.path().join(format!("spool/{victim}.entry"));
    let len = std::fs::metadata(&copy).expect("stat").len();
    flip(&copy, len / 2);
    let (ids, ob) = kept(dir.path(), &live);
    let expected: Vec<u64> = live
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != victim)
        .collect();
    assert_eq!(ids, expected);
    let report = ob.last_salvage().expect("rebuilt");
    assert_eq!(report.lost, vec![victim]);
    let health = ob.check().expect("check");
    assert_eq!(
        health.last_salvage.as_ref().map(|s| s.lost.clone()),
        Some(vec![victim])
    );
    drop(ob);

    // The device keeps enrolling, and the CLI names the loss.
    let e = Enrolld::new("[quality]\nmin_face_px = 40\n");
    copy_tree(dir.path(), &e.state_dir());
    let (code, v) = e.enroll_portrait("after-rot", 0, &[]);
    assert_eq!(code, 0, "{v}");
    let out = e.run(&["queue", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // Where the flip lands decides how sled takes it: it refuses the log
    // (the store is rebuilt, its files moved to `damaged-*`) or reads it up
    // to the damage and drops the rest (the spool fills in). Either way the
    // loss is named with where the damaged files are.
    assert!(
        text.contains(&format!("lost 1 [{victim}]")) && text.contains("the damaged files are in"),
        "{text}"
    );
    let out = e.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("lost 1 [{victim}]")), "{text}");
}

/// What `enrolld run` did with a configuration: refused it (the exit code
/// and stderr) or started (its control socket answered), then stopped.
#[derive(Debug)]
enum RunVerdict {
    Refused(Option<i32>, String),
    Started(std::process::Child),
}

fn run_verdict(e: &Enrolld, socket: &Path) -> RunVerdict {
    let log = e.path("run.log");
    let mut child = e
        .command()
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    // Either it exits or its socket answers; the cap is for neither.
    let until = Instant::now() + Duration::from_secs(300);
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            return RunVerdict::Refused(status.code(), err);
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return RunVerdict::Started(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("run neither exited nor listened");
}

/// SIGTERM to a daemon that started, and its exit.
fn stop_daemon(mut child: std::process::Child) {
    let pid = rustix::process::Pid::from_child(&child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = child.wait();
}

/// Each broken configuration: what `config check` says and what `run`
/// does must agree (both refuse, naming the same key), and what check
/// accepts must start and upload. The first cases are the ones a site
/// reported; the rest are more of the same kind.
#[test]
fn config_check_and_run_agree_on_every_broken_config() {
    let cloud = Cloud::start(enrolld::model::Provider::Jd);
    let endpoint = cloud.emulator.endpoint();
    let port = endpoint.rsplit(':').next().expect("port").to_string();
    type Break = Box<dyn Fn(&Enrolld) -> Vec<(&'static str, toml::Value)>>;
    let set =
        |pairs: Vec<(&'static str, toml::Value)>| -> Break { Box::new(move |_| pairs.clone()) };
    let cases: Vec<(&str, &str, Break)> = vec![
        (
            "state_dir that cannot be created",
            "state_dir",
            set(vec![("state_dir", text("/sys/enrolld-test/state"))]),
        ),
        (
            "socket whose parent is a regular file",
            "control.socket",
            Box::new(|e| {
                std::fs::write(e.path("plain"), "x").expect("write");
                vec![(
                    "control.socket",
                    text(e.path("plain/control.sock").display().to_string()),
                )]
            }),
        ),
        (
            "empty appkey",
            "jd.appkey",
            set(vec![("jd.appkey", text(""))]),
        ),
        (
            "non-numeric port",
            "jd.endpoint",
            set(vec![("jd.endpoint", text("https://127.0.0.1:notaport"))]),
        ),
        (
            "endpoint with a path",
            "jd.endpoint",
            set(vec![(
                "jd.endpoint",
                text(format!("{endpoint}/some/path?x=1")),
            )]),
        ),
        (
            "missing secret",
            "jd.secret_key_file",
            set(vec![("jd.secret_key_file", text("/nonexistent/jd-secret"))]),
        ),
        (
            "empty secret",
            "jd.secret_key_file",
            Box::new(|e| {
                write_private(&e.path("secret"), "");
                vec![]
            }),
        ),
        (
            "secret readable by others",
            "jd.secret_key_file",
            Box::new(|e| {
                chmod(&e.path("secret"), 0o644);
                vec![]
            }),
        ),
        (
            "secret is a directory",
            "jd.secret_key_file",
            Box::new(|e| {
                std::fs::remove_file(e.path("secret")).expect("rm");
                std::fs::create_dir(e.path("secret")).expect("mkdir");
                vec![]
            }),
        ),
        (
            "missing CA file",
            "tls.extra_ca_file",
            set(vec![("tls.extra_ca_file", text("/nonexistent/ca.pem"))]),
        ),
        (
            "CA file that is not PEM",
            "tls.extra_ca_file",
            Box::new(|e| {
                std::fs::write(e.path("ca.pem"), "not a certificate\n").expect("write");
                vec![]
            }),
        ),
        // More of the same kind.
        (
            "port 0",
            "jd.endpoint",
            set(vec![("jd.endpoint", text("https://127.0.0.1:0"))]),
        ),
        (
            "port past 65535",
            "jd.endpoint",
            set(vec![("jd.endpoint", text("https://127.0.0.1:70000"))]),
        ),
        (
            "endpoint with a query only",
            "jd.endpoint",
            set(vec![("jd.endpoint", text(format!("{endpoint}?debug=1")))]),
        ),
        (
            "no group",
            "jd.group_id",
            set(vec![("jd.group_name", text(""))]),
        ),
        (
            "state_dir is a file",
            "state_dir",
            Box::new(|e| {
                std::fs::write(e.path("state-file"), "x").expect("write");
                vec![(
                    "state_dir",
                    text(e.path("state-file").display().to_string()),
                )]
            }),
        ),
        (
            "relative secret without systemd credentials",
            "jd.secret_key_file",
            set(vec![("jd.secret_key_file", text("jd-secret-key"))]),
        ),
        (
            "missing queue key",
            "queue.key_file",
            Box::new(|e| {
                std::fs::remove_file(e.path("queue-key")).expect("rm");
                vec![]
            }),
        ),
    ];
    let accepted: Vec<(&str, Break)> = vec![
        ("the configuration as given", set(vec![])),
        (
            "an endpoint ending in /",
            set(vec![("jd.endpoint", text(format!("{endpoint}/")))]),
        ),
        (
            "an endpoint named by host name",
            set(vec![(
                "jd.endpoint",
                text(format!("https://localhost:{port}")),
            )]),
        ),
    ];
    let fresh = || {
        let e = Enrolld::new("");
        write_private(&e.path("secret"), format!("{SECRET}\n"));
        std::fs::copy(cloud.ca_path(), e.path("ca.pem")).expect("ca");
        e.configure(&[
            ("jd.endpoint", text(endpoint.clone())),
            ("jd.appkey", text(KEY_ID)),
            (
                "jd.secret_key_file",
                text(e.path("secret").display().to_string()),
            ),
            ("jd.group_name", text("kiosk")),
            ("jd.qps", 1000.0.into()),
            (
                "tls.extra_ca_file",
                text(e.path("ca.pem").display().to_string()),
            ),
            (
                "control.socket",
                text(e.path("control.sock").display().to_string()),
            ),
        ]);
        e
    };
    let mut table = Vec::new();
    for (name, key, breaks) in &cases {
        let e = fresh();
        let settings = breaks(&e);
        e.configure(&settings);
        let check = e.run(&["config", "check"]);
        let socket = e.path("control.sock");
        let socket = settings
            .iter()
            .find(|(k, _)| *k == "control.socket")
            .and_then(|(_, v)| v.as_str().map(std::path::PathBuf::from))
            .unwrap_or(socket);
        let run = run_verdict(&e, &socket);
        table.push(format!(
            "{name:<45} check: {:?}  run: {}",
            check.status.code(),
            match &run {
                RunVerdict::Refused(code, _) => format!("refused ({code:?})"),
                RunVerdict::Started(_) => "started".into(),
            }
        ));
        assert_eq!(check.status.code(), Some(2), "{name}: check accepted it");
        assert!(stderr(&check).contains(key), "{name}: {}", stderr(&check));
        match run {
            RunVerdict::Refused(code, err) => {
                assert_eq!(code, Some(2), "{name}: {err}");
                assert!(err.contains(key), "{name}: run names {key}: {err}");
            }
            RunVerdict::Started(child) => {
                stop_daemon(child);
                panic!("{name}: check refuses it, run started");
            }
        }
    }
    for (i, (name, change)) in accepted.iter().enumerate() {
        let e = fresh();
        e.configure(&change(&e));
        let check = e.run(&["config", "check"]);
        assert_eq!(check.status.code(), Some(0), "{name}: {}", stderr(&check));
        let socket = e.path("control.sock");
        let child = match run_verdict(&e, &socket) {
            RunVerdict::Started(child) => child,
            RunVerdict::Refused(code, err) => {
                panic!("{name}: check accepts it, run {code:?}: {err}")
            }
        };
        let person = format!("accepted-{i}");
        let (code, v) = e.enroll_portrait(&person, 0, &[]);
        assert_eq!(code, 0, "{name}: {v:#}");
        let until = Instant::now() + Duration::from_secs(300);
        while cloud.faces(&person).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_daemon(child);
        assert_eq!(cloud.faces(&person).len(), 1, "{name}: not uploaded");
        table.push(format!("{name:<45} check: Some(0)  run: started, uploaded"));
    }
    println!("{}", table.join("\n"));
}
