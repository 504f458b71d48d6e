//! Uploads through the real binary (`enrolld drain`) to the emulator over
//! real TLS on 127.0.0.1: success for both vendors, every error class, an
//! unanswered upload that must not be duplicated, a wrong CA, and secrets
//! kept out of every output.

mod support;

use enrolld::model::Provider;
use enrolld_emulator::JdShape;
use serde_json::Value;
use support::*;

/// Enrolls a portrait of face `i` for `person`; returns the entry id and the
/// SHA-256 of the queued image(s).
fn enroll(e: &Enrolld, person: &str, i: usize) -> (u64, Vec<String>) {
    let (code, v) = e.enroll_portrait(person, i, &[]);
    assert_eq!(code, 0, "{v:#}");
    let hashes = v["entry"]["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["sha256"].as_str().expect("sha").to_string())
        .collect();
    (v["entry"]["id"].as_u64().expect("id"), hashes)
}

fn drain(e: &Enrolld) -> (i32, Value) {
    e.json(&["drain"])
}

fn entry(e: &Enrolld, id: u64) -> Value {
    e.json(&["queue", "show", &id.to_string()]).1
}

#[test]
fn jd_uploads_in_every_answer_shape_and_keeps_a_receipt() {
    for shape in [
        JdShape::CodeObject,
        JdShape::CodeString,
        JdShape::StatusString,
    ] {
        let cloud = Cloud::start_with(Provider::Jd, shape, 0);
        let e = Enrolld::new(&cloud.config("", ""));
        let (id, hashes) = enroll(&e, "工号-0042", 0);
        let (code, s) = drain(&e);
        assert_eq!(code, 0, "{shape:?}: {s:#}");
        assert_eq!(s["uploaded"], 1);
        // The cloud got exactly the queued image, and it holds a face.
        assert_eq!(cloud.faces("工号-0042"), hashes, "{shape:?}");
        let detected = cloud
            .emulator
            .with_state(|st| st.persons["工号-0042"].faces[0].faces_detected);
        assert!(detected >= Some(1));
        // The image is gone from the device; a receipt with the face id stays.
        assert_eq!(entry(&e, id)["error"], "not_found");
        let (_, r) = e.json(&["queue", "receipts"]);
        let face_id = r["receipts"][0]["face_ids"][0].as_str().expect("face id");
        assert!(face_id.starts_with("28751865"), "{shape:?}: {r:#}");
    }
}

#[test]
fn tencent_creates_the_person_then_adds_more_faces() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = Enrolld::new(&cloud.config(
        "",
        "group_id = \"kiosk-group\"\nversion = \"2020-03-03\"\nregion = \"ap-guangzhou\"",
    ));
    let (_, first) = enroll(&e, "p-1001", 1);
    let (code, s) = drain(&e);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(cloud.requests("CreatePerson"), 1);
    assert_eq!(cloud.faces("p-1001"), first);
    // A second enrollment of the same person adds a face with CreateFace.
    let (_, second) = enroll(&e, "p-1001", 1);
    // A drain says what it uploads as it goes, on stderr.
    let out = e.run(&["drain"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("uploaded to tencent (person \"p-1001\"): face "),
        "{said}"
    );
    assert_eq!(
        cloud.requests("CreateFace"),
        1,
        "the new person was created with CreatePerson directly; one CreateFace added the second face"
    );
    assert_eq!(cloud.faces("p-1001"), [first, second].concat());
}

#[test]
fn tencent_sends_several_distinct_frames_in_one_call() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = Enrolld::new(&format!(
        "{}[burst]\nkeep = 3\n",
        cloud.config("", "group_id = \"g\"")
    ));
    let dir = e.path("frames");
    std::fs::create_dir(&dir).expect("mkdir");
    for (i, scale) in [3.0f32, 3.4, 2.6].iter().enumerate() {
        write_jpeg(
            &exposure(&portrait(4, *scale), 0.8 + 0.1 * i as f32),
            &dir.join(format!("{i}.jpg")),
        );
    }
    let (code, v) = e.json(&[
        "enroll",
        "--person",
        "multi",
        "--source",
        &format!("file:{}", dir.display()),
    ]);
    assert_eq!(code, 0, "{v:#}");
    let n = v["entry"]["images"].as_array().expect("images").len();
    assert!(n >= 2, "{v:#}");
    let (code, s) = drain(&e);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(cloud.faces("multi").len(), n);
}

#[test]
fn retryable_errors_keep_the_entry_and_succeed_later() {
    for (vendor, fault, code) in [
        (Provider::Jd, "rate-limit", "10043"),
        (Provider::Jd, "busy", "10020"),
        (Provider::Jd, "5xx", "http_502"),
        (Provider::Jd, "drop-unapplied", "no_answer"),
        (Provider::Tencent, "rate-limit", "RequestLimitExceeded"),
        (Provider::Tencent, "busy", "InternalError"),
        (Provider::Tencent, "5xx", "http_502"),
    ] {
        let cloud = Cloud::start(vendor);
        let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
        let (id, _) = enroll(&e, "r1", 2);
        cloud.push_fault(fault);
        let (exit, s) = drain(&e);
        assert_eq!(exit, 7, "{vendor} {fault}: {s:#}");
        assert_eq!(s["retried"], 1);
        let kept = entry(&e, id);
        assert_eq!(kept["state"], "pending", "{kept:#}");
        assert_eq!(kept["last_error"]["code"], code, "{vendor} {fault}");
        assert_eq!(kept["last_error"]["class"], "retry");
        // Due again (as after the backoff): it goes through.
        assert_eq!(e.json(&["queue", "retry", &id.to_string()]).0, 0);
        let (exit, s) = drain(&e);
        assert_eq!(exit, 0, "{vendor} {fault}: {s:#}");
        assert_eq!(
            cloud.faces("r1").len(),
            1,
            "{vendor} {fault}: exactly one face"
        );
    }
}

#[test]
fn jd_daily_quota_waits_for_midnight_in_china() {
    let cloud = Cloud::start(Provider::Jd);
    let e = Enrolld::new(&cloud.config("", ""));
    let (id, _) = enroll(&e, "q1", 0);
    cloud.push_fault("quota");
    let (exit, s) = drain(&e);
    assert_eq!(exit, 7, "{s:#}");
    let next = entry(&e, id)["next_attempt_at_ms"].as_i64().expect("next");
    assert_eq!((next + 8 * 3_600_000) % 86_400_000, 0, "midnight in UTC+8");
    let now = enrolld::clock::Clock::now_ms(&enrolld::clock::SystemClock);
    assert!(next > now && next <= now + 86_400_000);
}

#[test]
fn a_clock_hours_off_is_corrected_from_the_cloud_and_retried_at_once() {
    for vendor in [Provider::Jd, Provider::Tencent] {
        // The cloud's clock is 3 hours behind the device's.
        let cloud = Cloud::start_with(vendor, JdShape::CodeObject, -3 * 3600);
        let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
        enroll(&e, "c1", 3);
        let (exit, s) = drain(&e);
        assert_eq!(exit, 0, "{vendor}: {s:#}");
        let skew = s["clock_skew_ms"].as_i64().expect("skew");
        assert!(
            (skew + 3 * 3_600_000).abs() < 5_000,
            "{vendor}: measured skew {skew}"
        );
        let expired = cloud.emulator.with_state(|st| {
            st.errors
                .keys()
                .filter(|k| k.contains("10045") || k.contains("SignatureExpire"))
                .count()
        });
        assert_eq!(
            expired, 1,
            "{vendor}: exactly one clock rejection before the correction"
        );
        assert_eq!(cloud.faces("c1").len(), 1);
    }
}

#[test]
fn operator_errors_pause_uploads_and_keep_everything() {
    for (vendor, fault, code) in [
        (Provider::Jd, "bad-credentials", "10001"),
        (Provider::Jd, "billing", "10010"),
        (
            Provider::Tencent,
            "bad-credentials",
            "AuthFailure.SecretIdNotFound",
        ),
        (
            Provider::Tencent,
            "billing",
            "ResourceUnavailable.InArrears",
        ),
    ] {
        let cloud = Cloud::start(vendor);
        let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
        let (a, _) = enroll(&e, "o1", 0);
        let (b, _) = enroll(&e, "o2", 1);
        cloud.push_fault(fault);
        let (exit, s) = drain(&e);
        assert_eq!(exit, 8, "{vendor} {fault}: {s:#}");
        assert_eq!(s["paused"][0]["code"], code);
        for id in [a, b] {
            assert_eq!(entry(&e, id)["state"], "pending");
        }
        assert!(
            cloud.faces("o2").is_empty(),
            "{vendor}: nothing more is sent once paused"
        );
        let text = e.run(&["drain"]);
        assert_eq!(
            text.status.code(),
            Some(0),
            "after the fault is gone the next drain uploads both"
        );
        assert_eq!(cloud.faces("o1").len() + cloud.faces("o2").len(), 2);
    }
}

#[test]
fn wrong_secret_or_missing_credentials_pause_without_leaking_them() {
    let cloud = Cloud::start(Provider::Jd);
    // A wrong secret: JD answers 10047 (bad sign).
    let wrong = cloud.dir.path().join("wrong-secret");
    write_private(&wrong, "not-the-secret-9a8b7c\n");
    let config = config_with(
        &cloud.config("", ""),
        &[("jd.secret_key_file", text(wrong.display().to_string()))],
    );
    let e = Enrolld::new(&config);
    let (id, _) = enroll(&e, "s1", 0);
    let out = e
        .command()
        .env("ENROLLD_LOG", "trace")
        .args(["drain"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(8));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("10047"), "{all}");
    for secret in ["not-the-secret-9a8b7c", SECRET, KEY_ID] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    assert_eq!(entry(&e, id)["state"], "pending");

    // No appkey configured at all: paused with the key named.
    let e = Enrolld::new("[jd]\ngroup_name = \"g\"\nsecret_key_file = \"/nonexistent/secret\"\n");
    enroll(&e, "s2", 0);
    let (exit, s) = drain(&e);
    assert_eq!(exit, 8, "{s:#}");
    assert!(
        s["paused"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("jd.appkey"),
        "{s:#}"
    );
}

/// Queues raw image bytes directly, as a faulty camera frame could end up.
fn enqueue_raw(e: &Enrolld, person: &str, provider: Provider, bytes: Vec<u8>) -> u64 {
    use enrolld::model::Group;
    use enrolld::queue::outbox::{NewEnrollment, NewImage};
    e.open_outbox()
        .enqueue(NewEnrollment {
            person_id: person.into(),
            person_name: None,
            provider,
            group: Group {
                id: "g".into(),
                name: "kiosk".into(),
            },
            images: vec![NewImage {
                bytes,
                width: 1000,
                height: 400,
            }],
            scores: vec![],
            consent: None,
        })
        .expect("enqueue")
        .id
}

#[test]
fn images_the_cloud_refuses_go_dead_and_stay_until_purged() {
    for (vendor, reason) in [
        (Provider::Jd, "status:1"),
        (Provider::Tencent, "RetCode:-1101"),
    ] {
        let cloud = Cloud::start(vendor);
        let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
        // Tencent: the person exists, so the faceless image meets CreateFace,
        // which answers RetCode -1101 for it.
        enroll(&e, "nf", 0);
        assert_eq!(drain(&e).0, 0);
        let id = enqueue_raw(
            &e,
            "nf",
            vendor,
            encode(&no_face_photo(), image::ImageFormat::Jpeg),
        );
        let (exit, s) = drain(&e);
        assert_eq!(exit, 9, "{vendor}: {s:#}");
        let dead = entry(&e, id);
        assert_eq!(dead["state"], "dead", "{dead:#}");
        assert_eq!(dead["reason"], reason, "{vendor}");
        assert_eq!(dead["last_error"]["class"], "never");
        assert_eq!(
            cloud.faces("nf").len(),
            1,
            "{vendor}: only the good enrollment is in the cloud"
        );
        // Kept, with its image, until an operator purges it.
        assert_eq!(e.json(&["queue", "purge", "--dead"]).1["purged"][0], id);
    }
}

#[test]
fn tencent_without_a_group_cannot_create_the_person() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = Enrolld::new(&cloud.config("", ""));
    let (id, _) = enroll(&e, "nobody", 0);
    let (exit, s) = drain(&e);
    assert_eq!(exit, 9, "{s:#}");
    let dead = entry(&e, id);
    assert_eq!(dead["reason"], "InvalidParameterValue.PersonIdNotExist");
    assert!(dead["last_error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("tencent.group_id"));
}

#[test]
fn an_unanswered_tencent_upload_is_checked_and_not_sent_twice() {
    // The cloud applies the CreateFace, then never answers it (the client
    // gives up after its receive timeout) or closes the connection. Not a
    // slow answer: how fast the machine is must not decide the verdict.
    for fault in ["hang@CreateFace", "drop@CreateFace"] {
        let cloud = Cloud::start(Provider::Tencent);
        let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
        // The person exists with one face already.
        let (_, first) = enroll(&e, "t1", 0);
        let started = std::time::Instant::now();
        assert_eq!(drain(&e).0, 0);
        let whole_drain = started.elapsed().as_millis() as i64;
        let (id, second) = enroll(&e, "t1", 0);
        cloud.push_fault(fault);
        // Only this drain has a short receive timeout: its GetPersonBaseInfo
        // (a few hundred bytes) must be answered within it, the hung
        // CreateFace never is. It is five times a whole drain just measured
        // (process start, TLS, three requests), at least 5 s, so a slow or
        // busy machine still gets its answers in time.
        let short_ms = (whole_drain * 5).max(5000);
        let patient = std::fs::read_to_string(e.path("enrolld.toml")).expect("config");
        let short = config_with(&patient, &[("upload.recv_timeout_ms", short_ms.into())]);
        write_private(&e.path("enrolld.toml"), &short);
        let (exit, s) = drain(&e);
        write_private(&e.path("enrolld.toml"), &patient);
        assert_eq!(exit, 7, "{fault}: {s:#}");
        let pending = entry(&e, id);
        assert_eq!(pending["outcome_unknown"], true, "{fault}: {pending:#}");
        // The cloud did apply it.
        assert_eq!(cloud.faces("t1").len(), 2);
        assert_eq!(e.json(&["queue", "retry", &id.to_string()]).0, 0);
        let (exit, s) = drain(&e);
        assert_eq!(exit, 0, "{fault}: {s:#}");
        assert_eq!(
            cloud.faces("t1"),
            [first.clone(), second.clone()].concat(),
            "{fault}: no duplicate face"
        );
        assert_eq!(
            cloud.requests("CreateFace"),
            1,
            "{fault}: one CreateFace (unanswered); the retry only asked GetPersonBaseInfo"
        );
        let (_, r) = e.json(&["queue", "receipts"]);
        assert_eq!(r["receipts"].as_array().map(Vec::len), Some(2));
    }
}

#[test]
fn an_untrusted_certificate_pauses_with_a_clear_error() {
    let cloud = Cloud::start(Provider::Jd);
    let other = Cloud::start(Provider::Jd);
    let config = config_with(
        &cloud.config("", ""),
        &[(
            "tls.extra_ca_file",
            text(other.ca_path().display().to_string()),
        )],
    );
    let e = Enrolld::new(&config);
    let (id, _) = enroll(&e, "tls1", 0);
    let (exit, s) = drain(&e);
    assert_eq!(exit, 8, "{s:#}");
    assert_eq!(s["paused"][0]["code"], "tls");
    let msg = s["paused"][0]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("127.0.0.1") && msg.to_lowercase().contains("certificate"),
        "{msg}"
    );
    assert_eq!(entry(&e, id)["state"], "pending");
    assert_eq!(cloud.requests("faceCreate"), 0);
}

#[test]
fn a_dead_network_retries_later() {
    let mut cloud = Cloud::start(Provider::Jd);
    let config = cloud.config("", "");
    let port = cloud.emulator.addr().port();
    cloud.emulator.stop();
    let e = Enrolld::new(&config);
    let (id, _) = enroll(&e, "n1", 0);
    let (exit, s) = drain(&e);
    assert_eq!(exit, 7, "{s:#}");
    let kept = entry(&e, id);
    assert_eq!(kept["last_error"]["code"], "network", "{kept:#}");
    assert!(kept["last_error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains(&port.to_string()));
    assert_eq!(kept["outcome_unknown"], false, "nothing was sent");
}

#[test]
fn a_person_created_elsewhere_after_the_snapshot_gets_a_face_added() {
    use enrolld::cloud::Uploader;
    let cloud = Cloud::start(Provider::Tencent);
    let mut client = cloud.tencent_client();
    let image = encode(&portrait(2, 3.0), image::ImageFormat::Jpeg);
    let mut entry: enrolld::model::Enrollment = serde_json::from_value(serde_json::json!({
        "format_version": 1, "id": 1, "person_id": "race", "provider": "tencent",
        "group": {"id": "g", "name": ""}, "created_at_ms": 0, "attempts": 1,
        "next_attempt_at_ms": 0, "state": "in_flight", "since_ms": 0, "last_error": null,
        "images": [{"len": image.len(), "width": 1, "height": 1, "format": "jpeg", "sha256": ""}]
    }))
    .expect("entry");
    assert_eq!(client.prepare(&mut entry).expect("snapshot"), None);
    assert_eq!(
        entry.progress.face_ids_before,
        Some(vec![]),
        "the person does not exist yet"
    );
    // Another device creates the person now.
    client
        .call(
            "CreatePerson",
            &serde_json::json!({"GroupId": "g", "PersonId": "race", "PersonName": "race",
                                 "Image": enrolld::cloud::base64(&encode(&portrait(1, 3.0), image::ImageFormat::Jpeg))}),
        )
        .expect("created elsewhere");
    let done = client.send(&mut entry, &[image]).expect("uploaded");
    assert_eq!(done.face_ids.len(), 1);
    assert_eq!(
        cloud.faces("race").len(),
        2,
        "ours was added next to the other device's"
    );
    assert_eq!(cloud.requests("CreateFace"), 1);
}

/// The emulator's person names and error counts.
fn person_name(cloud: &Cloud, person: &str) -> Option<String> {
    cloud
        .emulator
        .with_state(|s| s.persons.get(person).map(|p| p.name.clone()))
}

#[test]
fn tencent_ids_the_cloud_refuses_are_refused_at_enroll_and_nothing_is_queued() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
    let long = "x".repeat(65);
    for (person, name) in [
        ("emp 42", None),
        ("张三", None),
        ("a/b", None),
        ("emp.42", None),
        ("emp😀", None),
        (long.as_str(), None),
        ("emp-42", Some("a b")),
        ("emp-42", Some("emp#42")),
    ] {
        let mut extra = vec!["--provider", "tencent"];
        if let Some(n) = name {
            extra.extend(["--name", n]);
        }
        let (code, v) = e.enroll_portrait(person, 0, &extra);
        assert_eq!(code, 2, "{person:?} {name:?}: {v:#}");
        assert_eq!(v["error"], "invalid_person", "{v:#}");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("InvalidParameterValue.Person"),
            "the message names the rule and the vendor's code: {v:#}"
        );
    }
    let (_, list) = e.json(&["queue", "list"]);
    assert_eq!(list["usage"]["entries"], 0, "{list:#}");
    // JD's outerId may be Chinese (given JD's credentials: an entry for a
    // provider other than upload.provider needs them).
    e.configure(&[
        ("jd.appkey", text("k")),
        (
            "jd.secret_key_file",
            text(cloud.dir.path().join("secret").display().to_string()),
        ),
    ]);
    let (code, v) = e.enroll_portrait("张三", 0, &["--provider", "jd"]);
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn tencent_ids_with_every_allowed_mark_upload_on_the_first_try() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = Enrolld::new(&cloud.config("", "group_id = \"g-%@#&_1\""));
    let longest: String = "emp-%@#&_".chars().cycle().take(64).collect();
    enroll(&e, "emp#42@hq", 0);
    enroll(&e, &longest, 1);
    let (code, v) = e.enroll_portrait("a&b%c", 2, &["--name", "张三"]);
    assert_eq!(code, 0, "{v:#}");
    let (code, s) = drain(&e);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["uploaded"], 3, "{s:#}");
    assert_eq!(cloud.requests("CreatePerson"), 3);
    let errors = cloud.emulator.with_state(|s| s.errors.clone());
    assert_eq!(
        errors.keys().collect::<Vec<_>>(),
        vec!["InvalidParameterValue.PersonIdNotExist"],
        "only the snapshots' 'no such person yet'"
    );
    assert_eq!(
        person_name(&cloud, "emp#42@hq").as_deref(),
        Some("emp_42_hq")
    );
    assert_eq!(
        person_name(&cloud, &longest).map(|n| n.chars().count()),
        Some(60)
    );
    assert_eq!(person_name(&cloud, "a&b%c").as_deref(), Some("张三"));
}

#[test]
fn config_check_refuses_what_the_cloud_would_refuse() {
    for (section, line, key) in [
        (
            "tencent",
            "group_id = \"my group/中文\"",
            "tencent.group_id",
        ),
        ("tencent", "group_id = \"{}\"", "tencent.group_id"),
        (
            "tencent",
            "region = \"ap-guangzhou\\r\\nX-Evil: 1\"",
            "tencent.region",
        ),
        ("jd", "group_name = \"门禁\"", "jd.group_name"),
        (
            "button",
            "id_template = \"{device}.{unix_time}\"",
            "button.id_template",
        ),
    ] {
        let line = line.replace("{}", &"g".repeat(65));
        let e = Enrolld::new(&format!("[{section}]\n{line}\n"));
        let out = e.run(&["config", "check"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
        assert!(stderr.contains(key), "{line}: {stderr}");
    }
}

#[test]
fn an_entry_an_older_release_queued_against_the_rules_is_reported_then_dies_unsent() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
    let (id, _) = enroll(&e, "emp-42", 0);
    // An older release accepted "emp 42" for Tencent: write its record so.
    {
        let db = sled::open(e.state_dir().join("outbox")).expect("sled");
        let entries = db.open_tree("entries").expect("tree");
        let key = id.to_be_bytes();
        let mut record: Value =
            serde_json::from_slice(&entries.get(key).expect("get").expect("record")).expect("json");
        record["person_id"] = "emp 42".into();
        entries
            .insert(key, serde_json::to_vec(&record).expect("json"))
            .expect("insert");
        db.flush().expect("flush");
    }
    for args in [&["queue", "list"][..], &["status"][..]] {
        let (_, v) = e.json(args);
        let broken = &v["rule_violations"];
        assert_eq!(broken[0]["id"], id, "{args:?}: {v:#}");
        assert_eq!(broken[0]["code"], "invalid_person", "{v:#}");
    }
    let out = e.run(&["queue", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("will be dead at the next drain"),
        "{out:?}"
    );
    let (code, s) = drain(&e);
    assert_eq!(code, 9, "{s:#}");
    assert_eq!(s["dead"], 1);
    assert_eq!(
        cloud
            .emulator
            .with_state(|s| s.requests.values().sum::<u64>()),
        0,
        "no request"
    );
    let dead = entry(&e, id);
    assert_eq!(dead["last_error"]["code"], "invalid_person", "{dead:#}");
}

#[test]
fn uploads_go_through_an_https_proxy_and_config_check_shows_it_masked() {
    let cloud = Cloud::start(Provider::Jd);
    let proxy = ConnectProxy::start();
    let e = Enrolld::new(&cloud.config("", ""));
    let proxy_url = format!("http://site:pr0xy-pa55@{}", proxy.addr);
    let with_proxy = |args: &[&str], no_proxy: Option<&str>| {
        let mut c = e.command();
        c.env("HTTPS_PROXY", &proxy_url);
        if let Some(n) = no_proxy {
            c.env("NO_PROXY", n);
        }
        c.arg("--json").args(args).output().expect("run")
    };
    // config check names the proxy, its password masked.
    let out = with_proxy(&["config", "check"], None);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["proxy"]["variable"], "HTTPS_PROXY", "{v:#}");
    assert_eq!(
        v["proxy"]["url"],
        format!("http://***@{}", proxy.addr),
        "{v:#}"
    );
    let text = e
        .command()
        .env("HTTPS_PROXY", &proxy_url)
        .args(["config", "check"])
        .output()
        .expect("run");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&text.stdout),
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(
        all.contains("uploads go through the proxy http://***@"),
        "{all}"
    );
    assert!(
        !all.contains("pr0xy-pa55") && !String::from_utf8_lossy(&out.stdout).contains("pr0xy-pa55")
    );
    // The upload goes through a CONNECT tunnel to the cloud.
    enroll(&e, "via-proxy", 0);
    let out = with_proxy(&["drain"], None);
    let s: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(0), "{s:#}");
    assert_eq!(s["uploaded"], 1, "{s:#}");
    assert_eq!(cloud.faces("via-proxy").len(), 1);
    let tunnels = proxy.tunnels();
    let cloud_addr = cloud
        .emulator
        .endpoint()
        .trim_start_matches("https://")
        .to_string();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(tunnels[0].0, cloud_addr);
    assert!(
        tunnels[0]
            .1
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "{tunnels:?}"
    );
    // NO_PROXY naming the cloud's host: straight there, no tunnel.
    enroll(&e, "no-proxy", 1);
    let out = with_proxy(&["drain"], Some("127.0.0.1"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(cloud.faces("no-proxy").len(), 1);
    assert_eq!(proxy.tunnels().len(), 1, "NO_PROXY was not honoured");
}

/// A board without a battery-backed clock boots at 1970 and NTP may never
/// run. Certificates are checked at the trusted time floor (the build's
/// time, then the last `Date` a verified session carried), requests are
/// signed with the cloud's time, and the records stamped 1970 get their
/// true times once the cloud has told it. The emulator's certificate is
/// valid from a few days ago only, as a public CA's would be.
#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "libfaketime is installed for the host only"
)]
fn a_device_booted_at_1970_uploads_before_ntp_and_its_records_get_the_true_time() {
    use enrolld::cloud::timefloor::{BUILD_FLOOR_MS, FILE};
    const DAY: i64 = 86_400_000;
    let now = || enrolld::clock::Clock::now_ms(&enrolld::clock::SystemClock);
    let json_of = |out: std::process::Output| -> (i32, Value) {
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), v)
    };
    let drain_1970 = |e: &Enrolld| {
        json_of(
            e.at_1970()
                .args(["--json", "drain"])
                .output()
                .expect("drain"),
        )
    };
    let enroll_1970 = |e: &Enrolld, person: &str, i: usize| -> u64 {
        let photo = e.path(&format!("p{i}.jpg"));
        write_jpeg(&portrait(i, 3.0), &photo);
        let source = format!("file:{}", photo.display());
        let (code, v) = json_of(
            e.at_1970()
                .args(["--json", "enroll", "--person", person, "--source", &source])
                .output()
                .expect("run"),
        );
        assert_eq!(code, 0, "{v:#}");
        let created = v["entry"]["created_at_ms"].as_i64().expect("created");
        assert!(
            created < DAY + 3_600_000,
            "stamped by the 1970 clock: {created}"
        );
        v["entry"]["id"].as_u64().expect("id")
    };

    // A fresh device: the build's time is the only floor, and the
    // certificate has been valid since the day before the build.
    for vendor in [Provider::Jd, Provider::Tencent] {
        let cloud = Cloud::start_valid_from(vendor, BUILD_FLOOR_MS - DAY);
        let e = Enrolld::new(&cloud.config("", "group_id = \"g\""));
        let id = enroll_1970(&e, "rtc1", 0);
        let out = e.at_1970().args(["status"]).output().expect("status");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("clock is before") && text.contains("check NTP or the RTC"),
            "{vendor}: {text}"
        );
        let (code, s) = json_of(
            e.at_1970()
                .args(["--json", "drain"])
                .output()
                .expect("drain"),
        );
        assert_eq!(code, 0, "{vendor}: {s:#}");
        assert_eq!(s["uploaded"], 1, "{vendor}: {s:#}");
        assert_eq!(cloud.faces("rtc1").len(), 1, "{vendor}");
        // The cloud's Date is now the floor, kept across restarts.
        let floor: i64 = std::fs::read_to_string(e.state_dir().join(FILE))
            .expect("time floor written")
            .trim()
            .parse()
            .expect("a number");
        assert!((now() - floor).abs() < 60_000, "{vendor}: floor {floor}");
        // The receipt carries the true times, not 1970's.
        let receipts = e.open_outbox().receipts().expect("receipts");
        let r = receipts.iter().find(|r| r.id == id).expect("receipt");
        for t in [r.created_at_ms, r.uploaded_at_ms] {
            assert!((now() - t).abs() < 120_000, "{vendor}: {r:?}");
        }
    }

    // The certificate became valid after the build: only the Date floor
    // of a device that once talked to the cloud lets it through.
    let fresh_cert = (now() - 3 * DAY).max(BUILD_FLOOR_MS + 1_000);
    let cloud = Cloud::start_valid_from(Provider::Jd, fresh_cert);
    let never_online = Enrolld::new(&cloud.config("", ""));
    enroll_1970(&never_online, "rtc2", 1);
    let (code, s) = drain_1970(&never_online);
    assert_eq!(code, 8, "paused: {s:#}");
    assert_eq!(s["paused"][0]["code"], "tls", "{s:#}");
    let why = s["paused"][0]["message"].as_str().unwrap_or("");
    assert!(
        why.contains("not valid yet") && why.contains("check NTP or the RTC"),
        "the pause says the clock is the cause: {why}"
    );
    assert!(cloud.faces("rtc2").is_empty());

    // The same device after it has talked to the cloud once (a minute ago,
    // before a power cut): the Date it recorded is its floor.
    let once_online = Enrolld::new(&cloud.config("", ""));
    let id = enroll_1970(&once_online, "rtc3", 2);
    support::write_private(
        &once_online.state_dir().join(FILE),
        format!("{}\n", now() - 60_000),
    );
    let (code, s) = drain_1970(&once_online);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(cloud.faces("rtc3").len(), 1);
    let receipts = once_online.open_outbox().receipts().expect("receipts");
    let r = receipts.iter().find(|r| r.id == id).expect("receipt");
    assert!((now() - r.created_at_ms).abs() < 120_000, "{r:?}");
}

/// `tencent.unique_person_control`: the same face enrolled under a second
/// person id creates nobody; the entry is dead with `duplicate_person`,
/// naming the person the cloud matched and what to do. The quality gates
/// are sent and accepted; a value Tencent would refuse is refused by
/// `config check` before anything runs.
#[test]
fn tencent_refuses_a_person_enrolled_twice_and_the_entry_says_who() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = Enrolld::new(&cloud.config(
        "",
        "group_id = \"kiosk-group\"\nunique_person_control = 2\nquality_control = 4\nface_match_threshold = 80.0",
    ));
    let (_, first) = enroll(&e, "p-2001", 3);
    let (code, s) = drain(&e);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(cloud.faces("p-2001"), first);
    // The same photo, under another id.
    let (id, _) = enroll(&e, "p-2002", 3);
    let (code, s) = drain(&e);
    assert_eq!(code, 9, "dead: {s:#}");
    assert_eq!(s["failures"][0]["code"], "duplicate_person", "{s:#}");
    assert!(cloud.faces("p-2002").is_empty(), "nobody was created");
    let dead = entry(&e, id);
    assert_eq!(dead["state"], "dead", "{dead:#}");
    let message = dead["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"p-2001\"") && message.contains("enroll more faces under"),
        "{message}"
    );
    // A different face under the second id is a person of its own.
    enroll(&e, "p-2002", 4);
    assert_eq!(
        drain(&e).0,
        0,
        "{}",
        "this pass uploaded and refused nothing"
    );
    assert_eq!(cloud.faces("p-2002").len(), 1);
    assert_eq!(entry(&e, id)["state"], "dead", "kept until purged");

    for (key, value) in [
        ("tencent.unique_person_control", toml::Value::Integer(5)),
        ("tencent.quality_control", toml::Value::Integer(9)),
        ("tencent.face_match_threshold", toml::Value::Float(101.0)),
    ] {
        let bad = Enrolld::new(&config_with(&cloud.config("", ""), &[(key, value)]));
        let out = bad.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(2), "{key}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(key), "{key}: {said}");
    }
}
