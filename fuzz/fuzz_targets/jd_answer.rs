//! JD NeuHub answers: any body the network returns. Parsing and
//! classification must not panic, and a success must carry a face id.
#![no_main]

use enrolld::cloud::jd::{classify, parse_answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = parse_answer(data) {
        if let Ok(Some(face_id)) = classify(&answer, 1_700_000_000_000) {
            assert!(!face_id.is_empty());
        }
    }
});
