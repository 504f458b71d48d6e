//! `cargo bench --bench detect`: the face detector's speed and recall.
//!
//! For 640x480, 1280x720 and 1920x1080 frames with one real face: the
//! first frame of a burst (the whole frame searched), a following frame
//! (searched around the face of the one before: tracking), the refinement of
//! the chosen box, a whole 8-frame burst (decode, detect, score, the best
//! crop kept) and the peak RSS.
//!
//! Then recall and false faces on a labelled set this benchmark makes: the
//! faces of the rustface package's sample photo pasted at known places and
//! sizes (30 to 110 px), mirrored, re-lit, softened and turned up to 13
//! degrees, on a background with no face,
//! searched with `detect.min_face_px = 30` at several detector densities.

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
    speed();
    largest();
    recall();
}

fn speed() {
    let cfg = DetectConfig::default();
    let mut detector = SeetaDetector::new(&cfg).expect("detector");
    println!(
        "enrolld detection benchmark: median of {ITERATIONS} runs, detect.min_face_px {}, pyramid {} / step {}",
        cfg.min_face_px, cfg.pyramid_scale, cfg.window_step
    );
    println!(
        "{:<10} {:>5} {:>12} {:>12} {:>9} {:>14} {:>9}",
        "frame", "face", "first ms", "tracked ms", "refine", "8-frame burst", "peak MiB"
    );
    for (w, h) in [(640u32, 480u32), (1280, 720), (1920, 1080)] {
        reset_peak_rss();
        let face_px = h * 3 / 10;
        let first = image::imageops::grayscale(&frame_with_face_at(w, h, 0, face_px, 0));
        let next = image::imageops::grayscale(&frame_with_face_at(w, h, 0, face_px, 12));
        let found = detector.detect(&first);
        let Some(face) = found.iter().max_by_key(|f| f.area()).copied() else {
            panic!("{w}x{h}: no face in the first frame");
        };
        let t_first = time_n(ITERATIONS, || detector.detect(&first));
        let near = detector.detect_near(&next, &face);
        assert!(!near.is_empty(), "{w}x{h}: the face was lost when tracked");
        let t_near = time_n(ITERATIONS, || detector.detect_near(&next, &face));
        let t_refine = time_n(ITERATIONS, || detector.refine(&next, &near[0]));

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
        let quality_cfg = QualityConfig::default();
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
            "{:<10} {:>5} {:>12} {:>12} {:>9} {:>9} ms {}/8 {:>7.1}",
            format!("{w}x{h}"),
            face.size(),
            ms(t_first),
            ms(t_near),
            ms(t_refine),
            ms(t_burst),
            tracked,
            peak_rss_mib()
        );
    }
}

/// The 29 people of the rustface sample photo (the 1927 Solvay conference,
/// 1666x1136): one box (x, y, size) on each face, checked by eye against
/// the photo and the names printed under it.
const SOLVAY: [(i32, i32, u32); 29] = [
    (240, 40, 53),
    (1373, 41, 50),
    (374, 82, 48),
    (615, 97, 54),
    (896, 95, 47),
    (1011, 97, 61),
    (1139, 98, 47),
    (1285, 99, 42),
    (1439, 97, 51),
    (467, 127, 50),
    (761, 121, 58),
    (47, 195, 56),
    (211, 215, 58),
    (382, 199, 54),
    (564, 199, 61),
    (764, 190, 56),
    (921, 190, 55),
    (1084, 201, 53),
    (1263, 208, 58),
    (1424, 216, 54),
    (104, 249, 57),
    (282, 259, 61),
    (465, 253, 58),
    (663, 264, 61),
    (866, 250, 62),
    (1042, 250, 59),
    (1167, 252, 56),
    (1359, 260, 53),
    (1488, 277, 57),
];

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
                let patch = roll(&patch, [0.0, -7.0, 7.0, -13.0, 13.0][v % 5]);
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
                faces,
            }
        })
        .collect()
}

/// `img` turned `degrees` about its centre (bilinear); what comes in from
/// outside is the nearest edge pixel.
fn roll(img: &RgbImage, degrees: f32) -> RgbImage {
    if degrees == 0.0 {
        return img.clone();
    }
    let (w, h) = img.dimensions();
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        let sx = (cos * dx + sin * dy + cx - 0.5).clamp(0.0, (w - 1) as f32);
        let sy = (-sin * dx + cos * dy + cy - 0.5).clamp(0.0, (h - 1) as f32);
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let mix = |c: usize| {
            let p = |x, y| f32::from(img.get_pixel(x, y)[c]);
            let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
            let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
            (top * (1.0 - fy) + bottom * fy).round() as u8
        };
        image::Rgb([mix(0), mix(1), mix(2)])
    })
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
        faces: SOLVAY
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
        let (found, false_faces) = count(scenes, |gray| {
            let (img, s) = shrink(gray);
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
        let (found, false_faces) = count(scenes, |gray| detector.detect(gray));
        row(
            &format!("pyramid {pyramid} / step {step}"),
            found,
            labels,
            false_faces,
            started.elapsed() / scenes.len() as u32,
        );
    }
}

/// Labelled faces found, and detections that are no labelled face.
fn count(scenes: &[Scene], mut detect: impl FnMut(&GrayImage) -> Vec<FaceBox>) -> (usize, usize) {
    let (mut found, mut false_faces) = (0, 0);
    for scene in scenes {
        let mut taken = vec![false; scene.faces.len()];
        for d in &detect(&scene.gray) {
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
