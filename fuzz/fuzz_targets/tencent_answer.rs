//! Tencent IAI answers: any body and status the network returns, then a
//! CreateFace result applied to an entry of two images. No panic; only the
//! images that were sent can be marked done.
#![no_main]

use enrolld::cloud::tencent::{apply_create_face, parse_answer};
use enrolld::model::Enrollment;
use libfuzzer_sys::fuzz_target;

fn entry() -> Enrollment {
    let image = serde_json::json!({"len": 1, "width": 1, "height": 1, "format": "jpeg", "sha256": ""});
    serde_json::from_value(serde_json::json!({
        "format_version": 2, "id": 1, "person_id": "p", "provider": "tencent",
        "group": {"id": "g", "name": ""}, "created_at_ms": 0, "attempts": 1,
        "next_attempt_at_ms": 0, "state": "in_flight", "since_ms": 0, "last_error": null,
        "images": [image.clone(), image],
    }))
    .expect("a valid entry")
}

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 128 { 200 } else { 400 + u16::from(*s) }, rest),
        None => (200, data),
    };
    if let Ok(response) = parse_answer("CreateFace", status, body) {
        let mut e = entry();
        let _ = apply_create_face(&mut e, &[1], &response);
        assert!(e.progress.done_images.iter().all(|i| *i == 1), "{:?}", e.progress.done_images);
    }
});
