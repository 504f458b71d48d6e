//! The person's lifecycle through the real binary, without a daemon:
//! consent before the photo, the ledger, withdrawal offline then online
//! with the process gone between the shred and the cloud delete, a vendor
//! with no delete, and a ledger with a flipped byte. (The socket and the
//! button, and a withdrawal during an upload: tests/daemon.rs.)

mod support;

use enrolld::model::Provider;
use serde_json::Value;
use support::*;

fn events(ledger: &Value) -> Vec<String> {
    ledger["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["event"].as_str().map(str::to_string))
        .collect()
}

/// A device with `[consent] required = true` and a notice, uploading to `cloud`.
fn device(cloud: &Cloud) -> Enrolld {
    let e = Enrolld::new(&format!(
        "{}[consent]\nrequired = true\n",
        cloud.config("retry_base_ms = 200", "group_id = \"g\"")
    ));
    write_private(
        &e.path("notice.txt"),
        "我同意 / I agree to the kiosk's notice v3\n",
    );
    e.configure(&[(
        "consent.notice_file",
        text(e.path("notice.txt").display().to_string()),
    )]);
    e
}

#[test]
fn without_consent_nothing_is_captured_and_with_it_the_record_travels_to_the_receipt() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = device(&cloud);
    let (code, v) = e.enroll_portrait("anna-1", 0, &[]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["error"], "consent_required");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("--consent REF")),
        "{v}"
    );
    let (_, list) = e.json(&["queue", "list"]);
    assert_eq!(list["entries"], serde_json::json!([]));
    let (_, ledger) = e.json(&["ledger"]);
    assert!(events(&ledger).is_empty(), "{ledger}");
    // Hostile references are refused the same way, before any capture.
    for bad in ["", "line\nbreak", &"x".repeat(129)] {
        let (code, v) = e.enroll_portrait("anna-1", 0, &["--consent", bad]);
        assert_eq!(
            (code, v["error"].as_str()),
            (2, Some("invalid_request")),
            "{bad:?}: {v}"
        );
    }
    let (code, v) = e.enroll_portrait("anna-1", 0, &["--consent", "form 2026/118"]);
    assert_eq!(code, 0, "{v}");
    let id = v["queued"].as_u64().expect("id");
    let (_, shown) = e.json(&["queue", "show", &id.to_string()]);
    let record = &shown["consent_record"];
    assert_eq!(record["reference"], "form 2026/118");
    assert_eq!(record["via"], "command_line");
    use sha2::Digest;
    let notice = std::fs::read(e.path("notice.txt")).expect("notice");
    assert_eq!(
        record["notice_sha256"],
        format!("{:x}", sha2::Sha256::digest(&notice))
    );
    assert_eq!(
        record["scope"],
        serde_json::json!({"provider": "tencent", "region": "", "group": "g"})
    );
    // The record is sealed in the store and the receipt: not in the clear.
    assert!(!shown["consent"]
        .as_str()
        .expect("sealed")
        .contains("2026/118"));
    let (code, _) = e.json(&["drain"]);
    assert_eq!(code, 0);
    let (_, receipts) = e.json(&["queue", "receipts"]);
    assert!(receipts["receipts"][0]["consent"].is_string(), "{receipts}");
    let (_, ledger) = e.json(&["ledger", "--person", "anna-1"]);
    assert_eq!(events(&ledger), ["consent_given", "queued", "uploaded"]);
    assert_eq!(ledger["persons"], 1);
    // --since far ahead: nothing; a malformed time is a usage error.
    let (_, later) = e.json(&["ledger", "--since", "2999-01-01"]);
    assert!(events(&later).is_empty(), "{later}");
    assert_eq!(
        e.run(&["ledger", "--since", "yesterday"]).status.code(),
        Some(2)
    );
}

#[test]
fn a_withdrawal_offline_is_pending_then_deleted_once_the_cloud_answers() {
    let cloud = Cloud::start(Provider::Tencent);
    let e = device(&cloud);
    for i in 0..2 {
        let (code, v) = e.enroll_portrait("ben-2", i, &["--consent", "HR-77"]);
        assert_eq!(code, 0, "{v}");
    }
    assert_eq!(e.json(&["drain"]).0, 0);
    assert_eq!(cloud.faces("ben-2").len(), 2);
    // A third enrollment waits in the queue when the person withdraws,
    // with the network down.
    let (code, v) = e.enroll_portrait("ben-2", 2, &["--consent", "HR-77"]);
    assert_eq!(code, 0, "{v}");
    let queued = v["queued"].as_u64().expect("id");
    let endpoint = cloud.emulator.endpoint();
    e.configure(&[("tencent.endpoint", text("https://127.0.0.1:9"))]);
    let (code, forgot) = e.json(&["person", "forget", "ben-2"]);
    assert_eq!(code, 7, "pending: {forgot}");
    assert_eq!(forgot["destroyed"], serde_json::json!([queued]));
    assert_eq!(forgot["cloud_outcome"][0]["state"], "pending");
    let task = forgot["cloud_outcome"][0]["entry"].as_u64().expect("task");
    // Gone from the device at once: no entry, no image, no spool copy.
    let (_, list) = e.json(&["queue", "list"]);
    let ids: Vec<u64> = list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|x| x["id"].as_u64())
        .collect();
    assert_eq!(ids, [task], "only the delete is left: {list}");
    assert!(!e.state_dir().join(format!("spool/{queued}")).exists());
    assert_eq!(cloud.faces("ben-2").len(), 2, "the cloud still has them");
    // The process is gone between the shred and the cloud delete; the
    // next command finds the delete queued and sends it.
    e.configure(&[("tencent.endpoint", text(endpoint))]);
    // It waits its backoff; the technician makes it due now.
    assert_eq!(e.json(&["queue", "retry", &task.to_string()]).0, 0);
    let (code, drained) = e.json(&["drain"]);
    assert_eq!(code, 0, "{drained}");
    assert_eq!(drained["deleted"], 1, "{drained}");
    assert!(cloud
        .emulator
        .with_state(|s| !s.persons.contains_key("ben-2")));
    assert_eq!(cloud.requests("DeletePerson"), 1);
    let (_, ledger) = e.json(&["ledger", "--person", "ben-2"]);
    let ev = events(&ledger);
    assert_eq!(ev.iter().filter(|x| *x == "consent_given").count(), 3);
    assert_eq!(
        &ev[ev.len() - 2..],
        ["withdrawn", "deleted_in_cloud"],
        "{ledger}"
    );
    // Forgetting again: nothing left anywhere, done at once.
    let (code, again) = e.json(&["person", "forget", "ben-2"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["cloud_outcome"], serde_json::json!([]));
}

#[test]
fn a_person_this_device_did_not_create_loses_only_the_faces_it_uploaded() {
    let cloud = Cloud::start(Provider::Tencent);
    let c = cloud.tencent_client();
    // Someone else created the person with a face of their own.
    c.call(
        "CreatePerson",
        &serde_json::json!({"GroupId": "g", "PersonId": "cai-3", "PersonName": "cai", "Image": enrolld::cloud::base64(&encode(&portrait(4, 3.0), image::ImageFormat::Jpeg))}),
    )
    .expect("person");
    let e = device(&cloud);
    let (code, v) = e.enroll_portrait("cai-3", 0, &["--consent", "HR-1"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(e.json(&["drain"]).0, 0);
    assert_eq!(cloud.faces("cai-3").len(), 2);
    let (code, forgot) = e.json(&["person", "forget", "cai-3"]);
    assert_eq!(code, 0, "{forgot}");
    assert_eq!(forgot["cloud_outcome"][0]["how"], "DeleteFace", "{forgot}");
    assert_eq!(cloud.faces("cai-3").len(), 1, "the other face stays");
}

#[test]
fn jd_faces_are_recorded_for_deletion_by_hand_and_the_answer_says_so() {
    let cloud = Cloud::start(Provider::Jd);
    let e = device(&cloud);
    let (code, v) = e.enroll_portrait("dora-4", 0, &["--consent", "HR-9"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(e.json(&["drain"]).0, 0);
    let face = e.json(&["queue", "receipts"]).1["receipts"][0]["face_ids"][0]
        .as_str()
        .expect("face id")
        .to_string();
    let out = e.run(&["person", "forget", "dora-4"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(11), "{stdout}");
    assert!(
        stdout.contains("DELETE BY HAND") && stdout.contains(&face),
        "{stdout}"
    );
    let (_, ledger) = e.json(&["ledger", "--person", "dora-4"]);
    let last = ledger["records"]
        .as_array()
        .and_then(|r| r.last())
        .expect("record");
    assert_eq!(last["event"], "delete_by_hand");
    assert_eq!(last["face_ids"], serde_json::json!([face]));
}

#[test]
fn a_flipped_byte_in_the_ledger_costs_one_record_and_purge_leaves_the_ledger() {
    let cloud = Cloud::start(Provider::Jd);
    let e = device(&cloud);
    for (i, person) in ["eva-5", "fay-6", "gus-7"].iter().enumerate() {
        let (code, v) = e.enroll_portrait(person, i, &["--consent", "HR-2"]);
        assert_eq!(code, 0, "{v}");
    }
    let (_, purged) = e.json(&["queue", "purge", "1"]);
    assert_eq!(purged["purged"], serde_json::json!([1]));
    let path = e.state_dir().join("ledger");
    let mut bytes = std::fs::read(&path).expect("ledger");
    let lines = bytes.iter().filter(|b| **b == b'\n').count();
    assert_eq!(lines, 7, "3 x (consent, queued) and the purge");
    // A byte in the middle of the third line (fay-6's consent).
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    bytes[starts[2] + 20] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let (code, ledger) = e.json(&["ledger"]);
    assert_eq!(code, 0, "{ledger}");
    assert_eq!(ledger["unreadable"], 1, "{ledger}");
    assert_eq!(
        events(&ledger),
        [
            "consent_given",
            "queued",
            "queued",
            "consent_given",
            "queued",
            "purged"
        ]
    );
    let text = String::from_utf8_lossy(&e.run(&["ledger"]).stdout).into_owned();
    assert!(text.contains("1 damaged record(s)"), "{text}");
}
