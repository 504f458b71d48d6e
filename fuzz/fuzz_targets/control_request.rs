//! The control socket's request reader: any bytes a local client sends.
//! It must return a request or an error, never panic, and never accept a
//! line longer than the protocol's limit.
#![no_main]

use enrolld::control::read_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = std::io::BufReader::new(data);
    // A client may send several lines on one connection; read until done.
    for _ in 0..8 {
        match read_request(&mut reader) {
            Ok(request) => {
                // What was accepted serialises back into a valid request.
                let line = serde_json::to_string(&request).expect("serialises") + "\n";
                let mut again = std::io::BufReader::new(line.as_bytes());
                assert!(read_request(&mut again).is_ok(), "{line}");
            }
            Err(_) => break,
        }
    }
});
