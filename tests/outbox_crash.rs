//! SIGKILL at random moments: every acknowledged enrollment survives byte for
//! byte, the database always opens, and interrupted uploads become pending.

mod support;

use enrolld::clock::SystemClock;
use enrolld::model::Provider;
use enrolld::model::{EntryState, Group};
use enrolld::queue::outbox::{NewEnrollment, NewImage, Outbox, OutboxLimits};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const LIMITS: OutboxLimits = OutboxLimits {
    max_entries: 100_000,
    max_bytes: 1 << 34,
    reserve_bytes: 0,
};

/// A small deterministic pseudo-random sequence for kill points.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// Set in the child: the test binary re-executes itself as the writer.
const WRITER_ENV: &str = "ENROLLD_TEST_OUTBOX_WRITER";

/// Deterministic image bytes for a sequence number.
fn payload(seq: u64) -> Vec<u8> {
    let len = 1_000 + (seq.wrapping_mul(7919) % 300_000) as usize;
    noise(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15), len)
}

/// The child's job: enqueue (and claim every third) as fast as possible,
/// printing `ACK <id> <seq>` once an enqueue returned and `CLAIM <id>` once
/// a claim returned, until it is killed.
fn run_writer(dir: &str, start: u64) -> ! {
    let (outbox, _) = Outbox::open(
        std::path::Path::new(dir),
        LIMITS,
        Arc::new(SystemClock),
        support::queue_key(),
    )
    .expect("writer opens");
    let mut out = std::io::stdout().lock();
    for seq in start.. {
        let new = NewEnrollment {
            person_id: format!("person-{seq}"),
            person_name: None,
            provider: Provider::Tencent,
            group: Group::default(),
            images: vec![NewImage {
                bytes: payload(seq),
                width: 1,
                height: 1,
            }],
            scores: Vec::new(),
            consent: None,
        };
        let id = outbox.enqueue(new).expect("enqueue").id;
        writeln!(out, "ACK {id} {seq}")
            .and_then(|_| out.flush())
            .expect("stdout");
        if seq % 3 == 0 {
            outbox.claim(id).expect("claim");
            writeln!(out, "CLAIM {id}")
                .and_then(|_| out.flush())
                .expect("stdout");
        }
    }
    unreachable!("the writer runs until it is killed")
}

#[test]
fn sigkill_during_enqueue_and_claim_loses_nothing_acknowledged() {
    if let Ok(spec) = std::env::var(WRITER_ENV) {
        let (dir, start) = spec.split_once('|').expect("dir|seq");
        run_writer(dir, start.parse().expect("seq"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut claimed: HashSet<u64> = HashSet::new();
    let mut seed = 0x5eed_u64;
    let mut next_seq = 0u64;
    let cycles = 12;
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().expect("test exe"))
            .args([
                "--exact",
                "sigkill_during_enqueue_and_claim_loses_nothing_acknowledged",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, format!("{}|{next_seq}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Let it acknowledge a varying number of records, then kill it
        // while it is in the middle of the next write.
        let target = 3 + lcg(&mut seed) % 25;
        let mut seen = 0;
        while seen < target {
            let Some(Ok(line)) = lines.next() else { break };
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["ACK", id, seq] => {
                    let (id, seq) = (id.parse().expect("id"), seq.parse().expect("seq"));
                    acked.insert(id, seq);
                    next_seq = next_seq.max(seq + 1);
                    seen += 1;
                }
                ["CLAIM", id] => {
                    claimed.insert(id.parse().expect("id"));
                }
                _ => {} // libtest's own output
            }
        }
        std::thread::sleep(Duration::from_micros(lcg(&mut seed) % 3000));
        child.kill().expect("SIGKILL");
        // Lines written before the kill are acknowledgements too.
        for line in lines.map_while(Result::ok) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["ACK", id, seq] => {
                    let seq: u64 = seq.parse().expect("seq");
                    acked.insert(id.parse().expect("id"), seq);
                    next_seq = next_seq.max(seq + 1);
                }
                ["CLAIM", id] => {
                    claimed.insert(id.parse().expect("id"));
                }
                _ => {}
            }
        }
        let status = child.wait().expect("wait");
        assert!(!status.success(), "cycle {cycle}: the writer was killed");
        next_seq += 1; // a record may have been written but not acknowledged

        let (outbox, recovery) = Outbox::open(
            dir.path(),
            LIMITS,
            Arc::new(SystemClock),
            support::queue_key(),
        )
        .expect("the database opens after SIGKILL");
        for (&id, &seq) in &acked {
            let entry = outbox
                .get(id)
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged entry {id} lost: {e}"));
            assert_eq!(entry.person_id, format!("person-{seq}"));
            let images = outbox.images(id).expect("images readable");
            assert_eq!(images, vec![payload(seq)], "entry {id} differs");
            assert_ne!(
                entry.state.name(),
                "in_flight",
                "recovery leaves nothing in flight"
            );
            if claimed.contains(&id) {
                assert_eq!(entry.state, EntryState::Pending);
                assert!(
                    entry.progress.outcome_unknown,
                    "an interrupted upload must be checked before resending"
                );
            }
        }
        assert_eq!(recovery.corrupt, 0);
        assert_eq!(outbox.usage().in_flight, 0);
    }
    eprintln!(
        "{cycles} SIGKILL cycles: {} acknowledged, {} claimed, all present",
        acked.len(),
        claimed.len()
    );
    assert!(acked.len() >= cycles * 3);
}

#[test]
fn sigkill_of_the_real_binary_keeps_every_acknowledged_enrollment() {
    let e = Enrolld::new("");
    let photo = e.path("p.jpg");
    write_jpeg(&portrait(0, 3.0), &photo);
    // The crop the pipeline produces for this photo, byte for byte.
    let crops = e.path("crops");
    let (code, v) = e.json(&[
        "detect",
        "--out-dir",
        crops.to_str().expect("utf8"),
        photo.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{v:#}");
    let expected = std::fs::read(v[0]["output"]["path"].as_str().expect("path")).expect("crop");
    let source = format!("file:{}", photo.display());
    // Kill points spread over the run time of an enrollment, so some land
    // before, during and after the enqueue (also under QEMU). The window
    // starts at twice one undisturbed run and then follows the machine's
    // speed now: it shrinks after a run that finished and grows after one
    // that was killed first, which holds it near twice the time to the
    // acknowledgement however busy the machine becomes.
    let started = std::time::Instant::now();
    assert_eq!(
        e.json(&["enroll", "--person", "warmup", "--source", &source])
            .0,
        0
    );
    let run_ms = started.elapsed().as_millis() as u64 + 1;
    let mut window_ms = run_ms * 2;
    let mut seed = 42u64;
    let mut acked = Vec::new();
    let mut killed = 0;
    let mut runs = 0;
    // At least 16 runs; more (up to 64) until both sides have been seen.
    while runs < 16 || ((acked.is_empty() || acked.len() == runs) && runs < 64) {
        let mut child = e
            .command()
            .args([
                "--json",
                "enroll",
                "--person",
                &format!("p{runs}"),
                "--source",
                &source,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(lcg(&mut seed) % window_ms));
        let _ = child.kill(); // may already have exited
        let out = child.wait_with_output().expect("wait");
        if std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(9) {
            killed += 1;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let queued = serde_json::from_str::<serde_json::Value>(text.trim())
            .ok()
            .filter(|v| v["result"] == "queued");
        if let Some(v) = queued {
            acked.push((v["entry"]["id"].as_u64().expect("id"), format!("p{runs}")));
            window_ms = (window_ms * 4 / 5).max(2);
        } else {
            window_ms = window_ms * 5 / 4 + 1;
        }
        runs += 1;
    }
    let (outbox, _) = Outbox::open(
        &e.state_dir(),
        LIMITS,
        Arc::new(SystemClock),
        support::queue_key(),
    )
    .expect("opens");
    for (id, person) in &acked {
        let entry = outbox.get(*id).expect("acknowledged entry present");
        assert_eq!(&entry.person_id, person);
        assert_eq!(outbox.images(*id).expect("images"), vec![expected.clone()]);
    }
    eprintln!(
        "{runs} runs (one undisturbed: {run_ms} ms, last window {window_ms} ms), \
         {killed} killed, {} acknowledged, all present",
        acked.len()
    );
    assert!(
        !acked.is_empty() && acked.len() < runs,
        "kill points should fall on both sides of the acknowledgement"
    );
}
