//! A full disk: the state directory on a small tmpfs of the test's own.
//! New enrollments are refused with `storage_full`, what is queued stays
//! intact, draining goes on and makes room, and enrolling works again.

mod support;

use enrolld::model::Provider;
use std::path::{Path, PathBuf};
use support::*;

/// A size-limited tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root, to mount a small tmpfs: it was built by root but runs as another user"
        );
        std::fs::create_dir_all(at).expect("mkdir");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    fn free_bytes(&self) -> u64 {
        let v = rustix::fs::statvfs(&self.0).expect("statvfs");
        v.f_bavail * v.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
#[cfg_attr(
    not(enrolld_root),
    ignore = "needs root to mount a small tmpfs: build and run the tests as root (CI does)"
)]
fn a_full_disk_refuses_new_enrollments_keeps_the_queue_and_recovers_after_draining() {
    let cloud = Cloud::start(Provider::Jd);
    let e = Enrolld::new(&format!(
        "[queue]\nreserve_bytes = 1048576\n{}",
        cloud.config("", "")
    ));
    let fs = Tmpfs::mount(&e.state_dir(), "4m");

    // Enroll until the disk refuses; portraits of six people, large crops.
    let mut acked = Vec::new();
    let refusal = loop {
        let n = acked.len();
        assert!(n < 300, "4 MiB never filled up");
        let (code, v) = e.enroll_portrait(&format!("person-{n}"), n % FACES.len(), &[]);
        if code != 0 {
            break (code, v);
        }
        acked.push(v["entry"]["id"].as_u64().expect("id"));
    };
    let (code, v) = refusal;
    assert_eq!(code, 4, "{v:#}");
    assert_eq!(v["error"], "storage_full", "{v:#}");
    let msg = v["message"].as_str().expect("message");
    assert!(msg.contains("reserve_bytes"), "{msg}");
    assert!(acked.len() >= 5, "only {} enrollments fitted", acked.len());
    println!(
        "disk full after {} enrollments; {} KiB left free on the 4 MiB filesystem",
        acked.len(),
        fs.free_bytes() / 1024
    );

    // Nothing queued was lost or damaged (images open and match their checksums).
    {
        let outbox = e.open_outbox();
        let entries = outbox.list().expect("list");
        assert_eq!(
            entries.iter().map(|x| x.id).collect::<Vec<_>>(),
            acked,
            "the refusal changed the queue"
        );
        for id in &acked {
            assert_eq!(outbox.images(*id).expect("intact").len(), 1);
        }
    }

    // The refusal is stable: asking again changes nothing.
    let (code, _) = e.enroll_portrait("one-more", 0, &[]);
    assert_eq!(code, 4);

    // Draining goes on with the disk full, and every entry reaches the cloud.
    let (code, v) = e.json(&["drain"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["uploaded"], acked.len(), "{v:#}");
    for n in 0..acked.len() {
        assert_eq!(cloud.faces(&format!("person-{n}")).len(), 1, "person-{n}");
    }

    // With the queue empty, enrolling works again.
    let (code, v) = e.enroll_portrait("after-drain", 1, &[]);
    assert_eq!(code, 0, "{v:#}");
    let (code, v) = e.json(&["drain"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(cloud.faces("after-drain").len(), 1);
}
