//! `enrolld enroll`, `queue ...` and `config check` through the real binary.

mod support;

use serde_json::Value;
use support::*;

fn queue_list(e: &Enrolld) -> Value {
    let (code, v) = e.json(&["queue", "list"]);
    assert_eq!(code, 0, "{v:#}");
    v
}

#[test]
fn a_photo_is_enrolled_durably_and_listed() {
    let e = Enrolld::new("");
    let p = e.path("alice.jpg");
    write_jpeg(&portrait(0, 3.0), &p);
    let source = format!("file:{}", p.display());
    let (code, v) = e.json(&["enroll", "--person", "alice-01", "--source", &source]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["result"], "queued");
    let id = v["entry"]["id"].as_u64().expect("id");
    assert_eq!(v["entry"]["person_id"], "alice-01");
    assert_eq!(v["entry"]["provider"], "jd");
    assert_eq!(v["entry"]["state"], "pending");
    assert_eq!(v["entry"]["format_version"], 3);
    let list = queue_list(&e);
    assert_eq!(list["usage"]["entries"], 1);
    assert_eq!(list["entries"][0]["id"], id);
    let (code, shown) = e.json(&["queue", "show", &id.to_string()]);
    assert_eq!(code, 0);
    assert_eq!(shown["images"][0]["len"], v["images"][0]["len"]);
    // Text listing for technicians.
    let out = e.run(&["queue", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alice-01") && text.contains("pending"),
        "{text}"
    );
}

#[test]
fn a_burst_from_a_directory_keeps_the_best_frame() {
    let e = Enrolld::new("");
    let dir = e.path("frames");
    std::fs::create_dir(&dir).expect("mkdir");
    // Frame 0: no face. Frame 1: badly blurred. Frame 2: good. Frame 3: the
    // same framing slightly blurred (still acceptable, but worse).
    write_jpeg(&no_face_photo(), &dir.join("0.jpg"));
    write_jpeg(
        &image::imageops::blur(&portrait(3, 3.0), 6.0),
        &dir.join("1.jpg"),
    );
    write_jpeg(&portrait(3, 2.0), &dir.join("2.jpg"));
    write_jpeg(&soften(&portrait(3, 2.0), 0.85), &dir.join("3.jpg"));
    std::fs::write(dir.join("README.txt"), "not a frame").expect("write");
    let source = format!("file:{}", dir.display());
    let (code, v) = e.json(&["enroll", "--person", "bob", "--source", &source]);
    assert_eq!(code, 0, "{v:#}");
    let frames = v["frames"].as_array().expect("frames");
    assert_eq!(frames.len(), 4, "the text file is not a frame");
    assert_eq!(frames[0]["rejection"], "no_face");
    let best = frames
        .iter()
        .filter(|f| f["accepted"] == true)
        .max_by(|a, b| {
            a["scores"]["overall"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["scores"]["overall"].as_f64().unwrap_or(0.0))
        })
        .expect("an accepted frame");
    assert_eq!(best["index"], 2, "{v:#}");
    assert!(
        frames[2]["scores"]["sharpness"].as_f64() > frames[3]["scores"]["sharpness"].as_f64(),
        "the blurred copy is less sharp: {v:#}"
    );
    assert_eq!(
        frames[3]["accepted"], true,
        "the softened frame is acceptable, just worse"
    );
    assert_eq!(
        v["entry"]["scores"][0]["overall"],
        best["scores"]["overall"]
    );
}

#[test]
fn tencent_keeps_up_to_k_distinct_frames() {
    let e = Enrolld::new("[burst]\nkeep = 3\n[upload]\nprovider = \"tencent\"\n");
    let dir = e.path("frames");
    std::fs::create_dir(&dir).expect("mkdir");
    for (i, scale) in [3.0f32, 3.4, 2.6, 3.0].iter().enumerate() {
        write_jpeg(
            &exposure(&portrait(4, *scale), 0.8 + 0.1 * i as f32),
            &dir.join(format!("{i}.jpg")),
        );
    }
    let source = format!("file:{}", dir.display());
    let (code, v) = e.json(&["enroll", "--person", "carol", "--source", &source]);
    assert_eq!(code, 0, "{v:#}");
    let n = v["entry"]["images"].as_array().expect("images").len();
    assert!((2..=3).contains(&n), "kept {n} images: {v:#}");
    // JD takes one image per call: keep is capped at 1 for it. (An entry for
    // a provider other than upload.provider needs that one's credentials.)
    write_private(&e.path("jd-secret"), "s\n");
    e.configure(&[
        ("jd.appkey", text("k")),
        (
            "jd.secret_key_file",
            text(e.path("jd-secret").display().to_string()),
        ),
    ]);
    let (code, v) = e.json(&[
        "enroll",
        "--person",
        "carol2",
        "--provider",
        "jd",
        "--source",
        &source,
    ]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["entry"]["images"].as_array().expect("images").len(), 1);
}

#[test]
fn jd_enrollments_need_a_group_before_anything_is_queued() {
    let e = Enrolld::new("[jd]\nappkey = \"k\"\n");
    let (code, v) = e.enroll_portrait("x", 0, &[]);
    assert_eq!(
        (code, v["error"].as_str()),
        (2, Some("group_missing")),
        "{v:#}"
    );
    assert!(v["message"]
        .as_str()
        .unwrap_or("")
        .contains("jd.group_name"));
    assert_eq!(queue_list(&e)["usage"]["entries"], 0);
}

#[test]
fn rejected_enrollments_queue_nothing() {
    let e = Enrolld::new("");
    let p = e.path("street.jpg");
    write_jpeg(&no_face_photo(), &p);
    let (code, v) = e.json(&[
        "enroll",
        "--person",
        "dave",
        "--source",
        &format!("file:{}", p.display()),
    ]);
    assert_eq!(code, 3, "{v:#}");
    assert_eq!(v["result"], "rejected");
    assert_eq!(v["reason"], "no_face");
    assert_eq!(queue_list(&e)["usage"]["entries"], 0);
}

#[test]
fn a_full_queue_refuses_with_queue_full_and_keeps_what_it_has() {
    let e = Enrolld::new("[queue]\nmax_entries = 2\n");
    let p = e.path("p.jpg");
    write_jpeg(&portrait(5, 3.0), &p);
    let source = format!("file:{}", p.display());
    for person in ["p1", "p2"] {
        let (code, v) = e.json(&["enroll", "--person", person, "--source", &source]);
        assert_eq!(code, 0, "{v:#}");
    }
    let before = queue_list(&e);
    let (code, v) = e.json(&["enroll", "--person", "p3", "--source", &source]);
    assert_eq!(code, 4, "{v:#}");
    assert_eq!(v["error"], "queue_full");
    assert_eq!(
        queue_list(&e)["entries"],
        before["entries"],
        "nothing queued was touched"
    );
    // Purging makes room again.
    let first = before["entries"][0]["id"].as_u64().expect("id").to_string();
    assert_eq!(e.json(&["queue", "purge", &first]).0, 0);
    assert_eq!(
        e.json(&["enroll", "--person", "p3", "--source", &source]).0,
        0
    );
}

#[test]
fn bad_requests_have_documented_exit_codes() {
    let e = Enrolld::new("");
    let p = e.path("p.jpg");
    write_jpeg(&portrait(0, 3.0), &p);
    let source = format!("file:{}", p.display());
    // Invalid person id: usage error, nothing captured.
    let (code, v) = e.json(&["enroll", "--person", "", "--source", &source]);
    assert_eq!(
        (code, v["error"].as_str()),
        (2, Some("invalid_person")),
        "{v:#}"
    );
    // A camera that is not there.
    let (code, v) = e.json(&[
        "enroll",
        "--person",
        "x",
        "--source",
        "v4l2:/dev/video-enrolld-none",
    ]);
    assert_eq!(
        (code, v["error"].as_str()),
        (5, Some("camera_not_found")),
        "{v:#}"
    );
    assert!(v["message"]
        .as_str()
        .unwrap_or("")
        .contains("/dev/video-enrolld-none"));
    // An unknown source scheme.
    let (code, v) = e.json(&["enroll", "--person", "x", "--source", "usb:0"]);
    assert_eq!(
        (code, v["error"].as_str()),
        (2, Some("invalid_source")),
        "{v:#}"
    );
    // A missing entry.
    let (code, v) = e.json(&["queue", "show", "999999"]);
    assert_eq!((code, v["error"].as_str()), (6, Some("not_found")), "{v:#}");
    // A corrupt frame file.
    let bad = e.path("bad.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really").expect("write");
    let (code, v) = e.json(&[
        "enroll",
        "--person",
        "x",
        "--source",
        &format!("file:{}", bad.display()),
    ]);
    assert_eq!((code, v["error"].as_str()), (5, Some("bad_image")), "{v:#}");
    assert_eq!(queue_list(&e)["usage"]["entries"], 0);
}

#[test]
fn queue_retry_and_purge_dead() {
    let e = Enrolld::new("");
    let (_, v) = e.enroll_portrait("eve", 1, &[]);
    let id = v["entry"]["id"].as_u64().expect("id");
    // Mark it dead through the library, as the uploader will.
    e.open_outbox()
        .mark_dead(id, "no_face", None)
        .expect("dead");
    assert_eq!(queue_list(&e)["usage"]["dead"], 1);
    assert_eq!(e.json(&["queue", "retry", &id.to_string()]).0, 0);
    assert_eq!(queue_list(&e)["entries"][0]["state"], "pending");
    e.open_outbox()
        .mark_dead(id, "no_face", None)
        .expect("dead");
    let (code, v) = e.json(&["queue", "purge", "--dead"]);
    assert_eq!(code, 0);
    assert_eq!(v["purged"], serde_json::json!([id]));
    assert_eq!(queue_list(&e)["usage"]["entries"], 0);
}

#[test]
fn config_errors_name_the_key_and_check_masks_identifiers() {
    let e = Enrolld::new("[camera]\nsorce = \"file:/x\"\n");
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sorce") && err.contains("enrolld.toml"),
        "{err}"
    );

    let e = Enrolld::new("[burst]\nframes = 0\n");
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("burst.frames"));

    let secret = tempfile::NamedTempFile::new().expect("tmp");
    write_private(secret.path(), "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE\n");
    let e = Enrolld::new(&format!(
        "[upload]\nprovider = \"tencent\"\n[tencent]\nsecret_id = \"AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE\"\ngroup_id = \"g\"\nsecret_key_file = {:?}\n",
        secret.path().display().to_string()
    ));
    let out = e.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("z8krbsJ5yKBZ"), "secret id printed: {all}");
    assert!(!all.contains("Gu5t9xGARNpq"), "secret key printed: {all}");
    assert!(all.contains("AK****LE"), "{all}");
    let (code, v) = e.json(&["config", "check"]);
    assert_eq!(code, 0);
    assert_eq!(v["config"]["tencent"]["secret_id"], "AK****LE");
}

#[test]
fn an_explicit_missing_config_is_an_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enrolld"))
        .args(["--config", "/nonexistent/enrolld.toml", "config", "check"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/enrolld.toml"));
}

/// Every file of the state directory, read whole.
fn state_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(state_files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("read")));
        }
    }
    out
}

#[test]
fn queued_images_are_sealed_at_rest() {
    let e = Enrolld::new("");
    for (i, person) in ["alice", "bob"].iter().enumerate() {
        let (code, v) = e.enroll_portrait(person, i, &[]);
        assert_eq!(code, 0, "{v:#}");
    }
    let outbox = e.open_outbox();
    let queued: Vec<Vec<u8>> = outbox
        .list()
        .expect("list")
        .iter()
        .flat_map(|entry| outbox.images(entry.id).expect("images open with the key"))
        .collect();
    drop(outbox);
    assert_eq!(queued.len(), 2);
    let files = state_files(&e.state_dir());
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert!(total > 2 * 10_000, "the queue is on disk ({total} bytes)");
    for (path, bytes) in &files {
        // No 32-byte run of any queued JPEG appears in any file...
        for image in &queued {
            for run in image.chunks(32).filter(|r| r.len() == 32) {
                assert!(
                    !bytes.windows(32).any(|w| w == run),
                    "{} holds image bytes in the clear",
                    path.display()
                );
            }
        }
        // ...and nothing in them decodes as an image from a JPEG marker.
        for at in 0..bytes.len().saturating_sub(3) {
            if bytes[at..at + 3] == [0xff, 0xd8, 0xff] {
                assert!(
                    image::load_from_memory(&bytes[at..]).is_err(),
                    "{} holds a decodable JPEG at {at}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn a_missing_or_wrong_queue_key_is_a_clear_error_that_keeps_the_queue() {
    // Credentials that start-up accepts, so `run` meets the key first.
    let e = Enrolld::new(
        "[jd]\nendpoint = \"https://127.0.0.1:9\"\nappkey = \"k\"\ngroup_name = \"g\"\n",
    );
    write_private(&e.path("jd-secret"), "s\n");
    e.configure(&[(
        "jd.secret_key_file",
        text(e.path("jd-secret").display().to_string()),
    )]);
    let (code, v) = e.enroll_portrait("carol", 2, &[]);
    assert_eq!(code, 0, "{v:#}");
    let key = e.path("queue-key");
    let good = std::fs::read(&key).expect("key");

    std::fs::remove_file(&key).expect("rm");
    let (code, v) = e.json(&["queue", "list"]);
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(v["error"], "queue_key", "{v:#}");
    let msg = v["message"].as_str().expect("message");
    assert!(msg.contains("queue-key") && msg.contains("keygen"), "{msg}");

    let out = e.run(&["keygen", "--output", key.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0));
    let (code, v) = e.json(&["queue", "list"]);
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(v["error"], "wrong_queue_key", "{v:#}");
    // The daemon refuses to start on it the same way (the code decides
    // the exit status, not the command).
    let (code, v) = e.json(&["run"]);
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(v["error"], "wrong_queue_key", "{v:#}");
    // keygen never overwrites a key.
    let out = e.run(&["keygen", "--output", key.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));

    std::fs::remove_file(&key).expect("rm");
    write_private(&key, &good);
    let list = queue_list(&e);
    assert_eq!(list["entries"][0]["person_id"], "carol");
    let outbox = e.open_outbox();
    let id = list["entries"][0]["id"].as_u64().expect("id");
    assert_eq!(outbox.images(id).expect("intact").len(), 1);
}

/// A photo over the working size is averaged down, and its EXIF
/// orientation still applies: the same upright picture as a small photo.
#[test]
fn a_large_phone_portrait_decodes_scaled_and_upright() {
    use enrolld::capture::frame::{decode_untrusted, DecodeLimits};
    let upright = portrait(0, 3.0);
    let (w, h) = upright.dimensions();
    let (w, h) = (w / 2, h / 2);
    let limits = DecodeLimits {
        working_pixels: u64::from(w) * u64::from(h),
        ..DecodeLimits::default()
    };
    let decoded = decode_untrusted(&phone_portrait_jpeg(&upright), &limits).expect("decodes");
    assert_eq!(decoded.dimensions(), (w, h), "half scale, upright");
    let want = image::imageops::resize(&upright, w, h, image::imageops::Triangle);
    let diff = |a: &image::RgbImage, b: &image::RgbImage| {
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum / a.as_raw().len() as u64
    };
    let upside_down = image::imageops::rotate180(&want);
    assert!(
        diff(&decoded, &want) < 12 && diff(&decoded, &upside_down) > 2 * diff(&decoded, &want),
        "upright: {} against the expected picture, {} against it upside down",
        diff(&decoded, &want),
        diff(&decoded, &upside_down)
    );
}

#[test]
fn a_phone_portrait_is_turned_upright_by_its_exif_orientation() {
    let e = Enrolld::new("");
    let upright = portrait(0, 3.0);
    let p = e.path("phone.jpg");
    std::fs::write(&p, phone_portrait_jpeg(&upright)).expect("write");
    let source = format!("file:{}", p.display());
    let (code, v) = e.json(&["enroll", "--person", "phone-1", "--source", &source]);
    assert_eq!(
        code, 0,
        "the face is found once the photo is upright: {v:#}"
    );
    // The frame is the photo as shown: portrait, not the stored landscape.
    assert_eq!(v["frames"][0]["width"], upright.width());
    assert_eq!(v["frames"][0]["height"], upright.height());

    // The same pixels without the EXIF tag: sideways, and no face is found.
    let sideways = e.path("sideways.jpg");
    write_jpeg(&image::imageops::rotate270(&upright), &sideways);
    let (code, v) = e.json(&[
        "enroll",
        "--person",
        "phone-2",
        "--source",
        &format!("file:{}", sideways.display()),
    ]);
    assert_eq!(code, 3, "{v:#}");
}

/// With `--json`, a command line clap refuses is an error on stdout like
/// any other (`usage`, exit 2); `queue purge` with nothing to purge names
/// both ways; `--help` describes the environment.
#[test]
fn usage_errors_are_json_with_json_and_name_what_is_missing() {
    let e = Enrolld::new("");
    for (args, says) in [
        (&["--bogus", "status"][..], "--bogus"),
        (&["queue", "show", "abc"][..], "abc"),
        (&["enroll", "--person", "x", "--frames", "0"][..], "1..=100"),
        (&["queue", "purge"][..], "<ID|--dead>"),
    ] {
        let (code, v) = e.json(args);
        assert_eq!(code, 2, "{args:?}: {v:#}");
        assert_eq!(v["error"], "usage", "{args:?}: {v:#}");
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{args:?}: {v:#}"
        );
    }
    let out = e.run(&["queue", "purge"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--dead"),
        "{out:?}"
    );
    // status without a daemon fails (exit 1) with an error's shape, and
    // still shows the queue.
    let (code, v) = e.json(&["status"]);
    assert_eq!(
        (code, v["error"].as_str()),
        (1, Some("not_running")),
        "{v:#}"
    );
    assert!(v["queue"].is_object(), "{v:#}");
    let help = e.run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "ENROLLD_LOG",
        "HTTPS_PROXY",
        "CREDENTIALS_DIRECTORY",
        "Exit codes",
    ] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
}
