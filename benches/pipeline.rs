//! `cargo bench --bench pipeline`: median time per enrollment stage and peak
//! RSS, for 640x480, 1280x720 and 1920x1080 frames holding one real face.
//!
//! Stages: decode (an MJPEG frame, as a camera sends it), detect (grey
//! conversion + SeetaFace), select (choose, score, crop), encode (JPEG within
//! JD's limits), enqueue+flush (durable sled write). Then a whole enrollment
//! from a 1280x720 frame to a durable entry, and enqueue+flush of a 300 KB image.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{ms, peak_rss_mib, reset_peak_rss, time_n};

use enrolld::capture::detect::{FaceDetector, SeetaDetector};
use enrolld::capture::encode::encode_for;
use enrolld::capture::frame::{decode_untrusted, raw_to_rgb, rgb_to_yuyv, DecodeLimits};
use enrolld::capture::quality;
use enrolld::clock::SystemClock;
use enrolld::config::{DetectConfig, EncodeConfig, QualityConfig};
use enrolld::model::Group;
use enrolld::model::PixelFormat;
use enrolld::model::Provider;
use enrolld::queue::outbox::{NewEnrollment, NewImage, Outbox, OutboxLimits};
use image::ImageFormat;
use std::sync::Arc;
use std::time::Duration;

const ITERATIONS: usize = 21;

fn time<T>(f: impl FnMut() -> T) -> Duration {
    time_n(ITERATIONS, f)
}

fn new_entry(bytes: Vec<u8>, w: u32, h: u32) -> NewEnrollment {
    NewEnrollment {
        person_id: "bench".into(),
        person_name: None,
        provider: Provider::Jd,
        group: Group::default(),
        images: vec![NewImage {
            bytes,
            width: w,
            height: h,
        }],
        scores: Vec::new(),
        consent: None,
    }
}

fn main() {
    // `cargo test` runs benches with --bench absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let detect_cfg = DetectConfig::default();
    let quality_cfg = QualityConfig::default();
    let encode_cfg = EncodeConfig::default();
    let limits = Provider::Jd.limits();
    let state = tempfile::tempdir().expect("tempdir");
    let (outbox, _) = Outbox::open(
        state.path(),
        OutboxLimits {
            max_entries: 1_000_000,
            max_bytes: 1 << 40,
            reserve_bytes: 0,
        },
        Arc::new(SystemClock),
        enrolld::queue::seal::QueueKey::generate().0,
    )
    .expect("outbox");
    let mut detector = SeetaDetector::new(&detect_cfg).expect("detector");
    let decode_limits = DecodeLimits::default();

    println!(
        "enrolld pipeline benchmark: median of {ITERATIONS} runs, min face {} px",
        detect_cfg.min_face_px
    );
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>9}",
        "frame",
        "face",
        "decode",
        "yuyv->rgb",
        "detect",
        "select",
        "encode",
        "enqueue+fl",
        "crop KB",
        "peak MiB"
    );
    for (w, h) in [(640u32, 480u32), (1280, 720), (1920, 1080)] {
        reset_peak_rss();
        let face_px = h * 3 / 10;
        let frame = support::frame_with_face(w, h, 0, face_px);
        let mjpeg = support::encode(&frame, ImageFormat::Jpeg);
        let yuyv = rgb_to_yuyv(&frame);
        let decode = time(|| decode_untrusted(&mjpeg, &decode_limits).expect("decode"));
        let yuyv_t =
            time(|| raw_to_rgb(PixelFormat::Yuyv, w, h, &yuyv, &decode_limits).expect("yuyv"));
        let rgb = decode_untrusted(&mjpeg, &decode_limits).expect("decode");
        let detect = time(|| {
            let gray = enrolld::capture::scale::grey(&rgb);
            detector.detect(&gray)
        });
        let gray = enrolld::capture::scale::grey(&rgb);
        let faces = detector.detect(&gray);
        assert!(!faces.is_empty(), "{w}x{h}: no face found");
        let select = time(|| {
            let a = quality::assess(&gray, &faces, &quality_cfg);
            assert!(a.decision.is_ok(), "{w}x{h}: {:?}", a.decision);
            quality::crop(&rgb, a.crop.expect("crop"))
        });
        let a = quality::assess(&gray, &faces, &quality_cfg);
        let crop = quality::crop(&rgb, a.crop.expect("crop"));
        let encode = time(|| encode_for(&crop, &limits, &encode_cfg).expect("encode"));
        let encoded = encode_for(&crop, &limits, &encode_cfg).expect("encode");
        let enqueue = time(|| {
            outbox
                .enqueue(new_entry(
                    encoded.bytes.clone(),
                    encoded.width,
                    encoded.height,
                ))
                .expect("enqueue")
        });
        println!(
            "{:<10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10.1} {:>9.1}",
            format!("{w}x{h}"),
            faces[0].width,
            ms(decode),
            ms(yuyv_t),
            ms(detect),
            ms(select),
            ms(encode),
            ms(enqueue),
            encoded.len as f64 / 1024.0,
            peak_rss_mib()
        );
    }

    // One whole enrollment: MJPEG 1280x720 frame in, durable entry out.
    let frame = support::frame_with_face(1280, 720, 0, 216);
    let mjpeg = support::encode(&frame, ImageFormat::Jpeg);
    let whole = time(|| {
        let rgb = decode_untrusted(&mjpeg, &decode_limits).expect("decode");
        let gray = enrolld::capture::scale::grey(&rgb);
        let faces = detector.detect(&gray);
        let a = quality::assess(&gray, &faces, &quality_cfg);
        let crop = quality::crop(&rgb, a.crop.expect("face"));
        let enc = encode_for(&crop, &limits, &encode_cfg).expect("encode");
        outbox
            .enqueue(new_entry(enc.bytes, enc.width, enc.height))
            .expect("enqueue")
    });
    println!(
        "whole enrollment, 1280x720 frame -> durable entry: {} ms (target < 120)",
        ms(whole)
    );

    // Durable write of a 300 KB image.
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let flush = time(|| {
        outbox
            .enqueue(new_entry(big.clone(), 800, 800))
            .expect("enqueue")
    });
    println!(
        "enqueue+flush of a 300 KB image: {} ms (target < 10)",
        ms(flush)
    );
    // The whole 8-frame burst, first and tracked frames: `cargo bench --bench detect`.

    // `enrolld detect` over 20 portraits, whole process (decode, detect,
    // crop, encode), one worker against one per core.
    let dir = tempfile::tempdir().expect("tempdir");
    let photos: Vec<String> = (0..20)
        .map(|i| {
            let p = dir.path().join(format!("portrait{i}.jpg"));
            support::write_jpeg(&support::portrait(i % support::FACES.len(), 3.0), &p);
            p.display().to_string()
        })
        .collect();
    let out_dir = dir.path().join("crops");
    let config = dir.path().join("enrolld.toml");
    support::write_private(&config, "# built-in defaults\n");
    let detect_run = |jobs: &str| {
        time_n(5, || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_enrolld"))
                .arg("--config")
                .arg(&config)
                .args(["detect", "--jobs", jobs])
                .arg("--out-dir")
                .arg(&out_dir)
                .args(&photos)
                .output()
                .expect("run enrolld detect");
            assert_eq!(out.status.code(), Some(0), "{out:?}");
        })
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = detect_run("1");
    let all = detect_run(&cores.to_string());
    println!(
        "enrolld detect, 20 portraits, whole process: {} ms with 1 worker, {} ms with {cores} ({:.2}x)",
        ms(one),
        ms(all),
        one.as_secs_f64() / all.as_secs_f64()
    );
    println!("peak RSS of the whole run: {:.1} MiB", peak_rss_mib());
}
