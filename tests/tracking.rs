//! The detector on real faces: the scale searched follows `min_face_px`, a
//! burst tracks the face from frame to frame, and a lost face is searched
//! for in the whole frame again.

mod support;

use enrolld::capture::burst::run_burst;
use enrolld::capture::detect::{FaceBox, FaceDetector, SeetaDetector};
use enrolld::capture::frame::Frame;
use enrolld::capture::source::MemorySource;
use enrolld::config::{BurstConfig, DetectConfig, QualityConfig};
use image::imageops::FilterType;
use image::RgbImage;
use std::sync::atomic::AtomicBool;
use support::*;

/// A `w`x`h` frame with face `i` of `face_px` pixels, its portrait's
/// top-left corner at (`x`, `y`); returns the frame and where the face is.
fn scene(w: u32, h: u32, i: usize, face_px: u32, x: i64, y: i64) -> (RgbImage, FaceBox) {
    let scale = face_px as f32 / FACES[i].2 as f32;
    let p = portrait(i, scale);
    let mut frame = image::imageops::resize(&no_face_photo(), w, h, FilterType::Triangle);
    image::imageops::overlay(&mut frame, &p, x, y);
    // Where portrait() cut the photo: the face's margin is 6/10 of its size.
    let (fx, fy, fs) = FACES[i];
    let m = fs * 6 / 10;
    let (dx, dy) = (fx - fx.saturating_sub(m), fy - fy.saturating_sub(m));
    let face = FaceBox {
        x: (x + (dx as f32 * scale) as i64) as i32,
        y: (y + (dy as f32 * scale) as i64) as i32,
        width: face_px,
        height: face_px,
        score: 0.0,
        ..Default::default()
    };
    (frame, face)
}

fn centre(f: &FaceBox) -> (f64, f64) {
    (
        f64::from(f.x) + f64::from(f.width) / 2.0,
        f64::from(f.y) + f64::from(f.height) / 2.0,
    )
}

fn frames(images: Vec<RgbImage>) -> MemorySource {
    let mut s = MemorySource::default();
    for (i, image) in images.into_iter().enumerate() {
        s.frames.push_back(Ok(Frame {
            image,
            index: i as u32,
            origin: format!("frame{i}"),
        }));
    }
    s
}

fn burst(
    detector: &mut SeetaDetector,
    source: &mut MemorySource,
    qcfg: &QualityConfig,
) -> enrolld::capture::burst::BurstResult {
    let n = source.frames.len() as u32;
    let cfg = BurstConfig {
        frames: n,
        time_budget_ms: 600_000,
        ..BurstConfig::default()
    };
    run_burst(
        source,
        detector,
        &cfg,
        qcfg,
        1,
        1024,
        &enrolld::clock::SystemTimer::new(),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .expect("burst")
}

/// A burst over `images` with the default detector and quality settings.
fn default_burst(images: Vec<RgbImage>) -> enrolld::capture::burst::BurstResult {
    let mut detector = SeetaDetector::new(&DetectConfig::default()).expect("detector");
    burst(
        &mut detector,
        &mut frames(images),
        &QualityConfig::default(),
    )
}

#[test]
fn a_face_smaller_than_the_detectors_window_is_found_when_asked_for() {
    // rustface's window is 40 px: a 28 px face is found only because the
    // frame is enlarged so that min_face_px spans it.
    let (frame, truth) = scene(640, 480, 1, 28, 200, 150);
    let gray = image::imageops::grayscale(&frame);
    let cfg = DetectConfig {
        min_face_px: 24,
        ..DetectConfig::default()
    };
    let found = SeetaDetector::new(&cfg).expect("detector").detect(&gray);
    let (tx, ty) = centre(&truth);
    let hit = found.iter().find(|f| {
        let (cx, cy) = centre(f);
        (cx - tx).abs() < 10.0 && (cy - ty).abs() < 10.0
    });
    let Some(hit) = hit else {
        panic!("the 28 px face at {truth:?} was not found: {found:?}");
    };
    assert!(
        (20..=36).contains(&hit.size()),
        "found as {} px, not 28: {hit:?}",
        hit.size()
    );
    // With the default minimum (80 px) the same face is not searched for.
    let found = SeetaDetector::new(&DetectConfig::default())
        .expect("detector")
        .detect(&gray);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_burst_follows_the_face_as_it_moves_and_keeps_its_box() {
    // The person drifts 15 px right and 5 px down per frame.
    let shots: Vec<(RgbImage, FaceBox)> = (0..6)
        .map(|k| scene(1280, 720, 0, 200, 420 + k * 15, 60 + k * 5))
        .collect();
    let truths: Vec<FaceBox> = shots.iter().map(|(_, f)| *f).collect();
    let mut detector = SeetaDetector::new(&DetectConfig::default()).expect("detector");
    let r = burst(
        &mut detector,
        &mut frames(shots.into_iter().map(|(f, _)| f).collect()),
        &QualityConfig::default(),
    );
    assert_eq!(r.frames.len(), 6);
    assert!(!r.frames[0].tracked, "the first frame is searched whole");
    let mut sizes = Vec::new();
    for (report, truth) in r.frames.iter().zip(&truths) {
        let chosen = report.chosen.expect("a face in every frame");
        let (cx, cy) = centre(&chosen);
        let (tx, ty) = centre(truth);
        assert!(
            (cx - tx).abs() < 25.0 && (cy - ty).abs() < 35.0,
            "frame {}: face at ({cx}, {cy}), the person at ({tx}, {ty})",
            report.index
        );
        sizes.push(chosen.size());
    }
    for report in &r.frames[1..] {
        assert!(report.tracked, "frame {} was searched whole", report.index);
        assert!(
            report.followed,
            "frame {} was not followed through its landmarks",
            report.index
        );
    }
    // The box keeps its size from frame to frame, tracked or not.
    let (min, max) = (
        *sizes.iter().min().expect("sizes"),
        *sizes.iter().max().expect("sizes"),
    );
    assert!(max - min <= max / 8, "box sizes {sizes:?}");
    assert!(!r.chosen.is_empty(), "{:?}", r.rejection);
}

#[test]
fn a_face_that_jumped_away_is_searched_for_in_the_whole_frame() {
    let (a, _) = scene(1280, 720, 2, 180, 60, 60);
    let (b, far) = scene(1280, 720, 2, 180, 820, 200);
    let r = default_burst(vec![a, b]);
    let second = &r.frames[1];
    assert!(!second.tracked, "lost near the old place: searched whole");
    let chosen = second.chosen.expect("found in the whole frame");
    let (cx, _) = centre(&chosen);
    assert!((cx - centre(&far).0).abs() < 30.0, "{chosen:?} vs {far:?}");
}

#[test]
fn counting_faces_turns_tracking_off() {
    let shots: Vec<RgbImage> = (0..3)
        .map(|k| scene(1280, 720, 0, 200, 420 + k * 10, 60).0)
        .collect();
    let mut detector = SeetaDetector::new(&DetectConfig::default()).expect("detector");
    let q = QualityConfig {
        max_faces: 1,
        ..QualityConfig::default()
    };
    let r = burst(&mut detector, &mut frames(shots), &q);
    assert!(r.frames.iter().all(|f| !f.tracked && f.chosen.is_some()));
}

#[test]
fn the_refined_box_is_where_the_whole_frame_search_puts_it() {
    let (frame, _) = scene(1280, 720, 3, 220, 500, 80);
    let gray = image::imageops::grayscale(&frame);
    let mut detector = SeetaDetector::new(&DetectConfig::default()).expect("detector");
    let found = detector.detect(&gray);
    let face = found.iter().max_by_key(|f| f.area()).expect("a face");
    let refined = detector.refine(&gray, face);
    let iou = enrolld::capture::detect::overlap(face, &refined);
    assert!(iou > 0.7, "{face:?} refined to {refined:?} (IoU {iou:.2})");
    // Refining twice changes little: the box has settled.
    let again = detector.refine(&gray, &refined);
    let iou = enrolld::capture::detect::overlap(&refined, &again);
    assert!(iou > 0.85, "{refined:?} then {again:?}");
}

#[test]
fn a_box_followed_through_the_landmarks_is_where_the_detector_puts_it() {
    // Two people of the sample set, each drifting across a burst: the box
    // each followed frame reports against the detector's refined box on
    // the same frame, as if that frame had been searched whole.
    for (i, size) in [(0usize, 200u32), (3, 220)] {
        let shots: Vec<RgbImage> = (0..5)
            .map(|k| scene(1280, 720, i, size, 380 + k * 20, 70 + k * 6).0)
            .collect();
        let mut detector = SeetaDetector::new(&DetectConfig::default()).expect("detector");
        let r = burst(
            &mut detector,
            &mut frames(shots.clone()),
            &QualityConfig::default(),
        );
        for (report, shot) in r.frames.iter().zip(&shots).skip(1) {
            assert!(report.followed, "face {i}, frame {}", report.index);
            let followed = report.chosen.expect("a face");
            assert!(followed.landmarks.is_some() && followed.pose.is_some());
            let gray = image::imageops::grayscale(shot);
            let found = detector.detect(&gray);
            let face = found.iter().max_by_key(|f| f.area()).expect("a face");
            let boxed = detector.refine(&gray, face);
            let iou = enrolld::capture::detect::overlap(&followed, &boxed);
            assert!(
                iou > 0.8,
                "face {i}, frame {}: followed {followed:?}, detector {boxed:?} (IoU {iou:.2})",
                report.index
            );
        }
    }
}

#[test]
fn a_face_that_grew_past_what_following_allows_is_boxed_by_the_detector_again() {
    // The person steps closer: 180 px, then 250 px around the same place
    // (1.39 times, past the 1.25 that following allows).
    let (a, _) = scene(1280, 720, 2, 180, 460, 120);
    let (b, near) = scene(1280, 720, 2, 250, 420, 60);
    let r = default_burst(vec![a, b]);
    let second = &r.frames[1];
    assert!(!second.followed, "{second:?}");
    let chosen = second.chosen.expect("boxed again");
    assert!(
        chosen.size() * 10 >= near.size() * 8,
        "{chosen:?} for a {} px face",
        near.size()
    );
}
