//! Untrusted image decoding (`enroll --source file:`, `detect`): any bytes.
//! Must not panic, and never return an image over the limits.
#![no_main]

use enrolld::capture::frame::{decode_untrusted, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Smaller limits than the daemon's so the fuzzer stays fast; the checks
    // are the same code.
    let limits = DecodeLimits {
        max_input_bytes: 1 << 20,
        max_edge: 2048,
        max_pixels: 1 << 20,
        max_alloc: 64 << 20,
        max_lossless_pixels: 1 << 20,
        // Small, so the scaled JPEG decoding path is fuzzed as well.
        working_pixels: 1 << 16,
    };
    if let Ok(img) = decode_untrusted(data, &limits) {
        assert!(img.width() <= limits.max_edge && img.height() <= limits.max_edge);
        assert!(u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels);
    }
});
