//! Best shot: score every frame of a burst and keep the best (distinct) ones.

use crate::capture::detect::{FaceBox, FaceDetector};
use crate::capture::frame::Frame;
use crate::capture::quality::{self, Rect, Rejection};
use crate::capture::source::{FrameSource, SourceError};
use crate::clock::Timer;
use crate::config::{BurstConfig, QualityConfig};
use crate::model::FaceScores;
use image::{GrayImage, RgbImage};
use serde::Serialize;
use std::time::Duration;

/// What happened to one frame.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FrameReport {
    pub index: u32,
    pub origin: String,
    pub width: u32,
    pub height: u32,
    pub faces_seen: u32,
    /// Every face found, largest first.
    pub faces: Vec<FaceBox>,
    /// The face judged (the largest).
    pub chosen: Option<FaceBox>,
    pub crop: Option<Rect>,
    pub scores: Option<FaceScores>,
    pub accepted: bool,
    pub rejection: Option<Rejection>,
    /// Searched only around the face of the previous frame (tracking).
    #[serde(default)]
    pub tracked: bool,
    /// Boxed through the landmark model alone, from the face as the
    /// detector last boxed it ([`FaceDetector::track`]); the burst's own
    /// bookkeeping, not reported.
    #[serde(skip)]
    pub followed: bool,
}

/// The face a burst follows into its next frame.
#[derive(Debug, Clone, Copy)]
pub struct Followed {
    /// Where it was in the previous frame.
    pub previous: FaceBox,
    /// As the detector last boxed it, with its landmarks.
    pub anchor: FaceBox,
}

/// An acceptable face crop from one frame.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub frame_index: u32,
    pub crop: RgbImage,
    pub scores: FaceScores,
    thumb: GrayImage,
}

/// Detects, chooses and scores the face of one frame. With `near` (the face
/// of the previous frame) the face is first followed through the landmark
/// model ([`FaceDetector::track`]); failing that, only its region is
/// searched, and the whole frame when the face is not found there either.
/// A box the detector found is then refined at full resolution.
pub fn assess_frame(
    frame: &Frame,
    detector: &mut dyn FaceDetector,
    qcfg: &QualityConfig,
    near: Option<&Followed>,
) -> (FrameReport, Option<Candidate>) {
    let gray = crate::capture::scale::grey(&frame.image);
    let followed_face = near.and_then(|n| detector.track(&frame.image, &n.previous, &n.anchor));
    let followed = followed_face.is_some();
    let (faces, tracked) = match followed_face {
        Some(face) => (vec![face], true),
        None => {
            let tracked_faces = near
                .map(|n| detector.detect_near(&gray, &n.previous))
                .filter(|found| !found.is_empty());
            let tracked = tracked_faces.is_some();
            let mut faces = tracked_faces.unwrap_or_else(|| detector.detect(&gray));
            // Detectors promise no order; reports list the largest first.
            faces.sort_by_key(|f| std::cmp::Reverse(f.area()));
            if let Some(largest) = faces.first_mut() {
                *largest = detector.refine(&gray, largest);
                faces.sort_by_key(|f| std::cmp::Reverse(f.area()));
            }
            (detector.landmarks(&frame.image, faces), tracked)
        }
    };
    let a = quality::assess(&gray, &faces, qcfg);
    let candidate = match (&a.decision, a.crop, a.scores, a.thumb) {
        (Ok(()), Some(rect), Some(scores), Some(thumb)) => Some(Candidate {
            frame_index: frame.index,
            crop: quality::crop_levelled(&frame.image, rect, scores.pose.map_or(0.0, |p| p.roll)),
            scores,
            thumb,
        }),
        _ => None,
    };
    let report = FrameReport {
        index: frame.index,
        origin: frame.origin.clone(),
        width: frame.image.width(),
        height: frame.image.height(),
        faces_seen: a.faces_seen,
        faces,
        chosen: a.chosen,
        crop: a.crop,
        scores: a.scores,
        accepted: a.decision.is_ok(),
        rejection: a.decision.err(),
        tracked,
        followed,
    };
    (report, candidate)
}

/// The result of a burst.
#[derive(Debug, Clone)]
pub struct BurstResult {
    pub frames: Vec<FrameReport>,
    /// Best distinct candidates, best first (at most `keep`); empty when rejected.
    pub chosen: Vec<Candidate>,
    /// Why nothing was chosen (the verdict on the most promising frame).
    pub rejection: Option<Rejection>,
    /// Frames that could not be read or decoded, with the reason.
    pub unreadable: Vec<String>,
}

/// Captures up to `cfg.frames` frames within `cfg.time_budget_ms` (read on
/// `timer`; a frame is never started once the budget is spent, and the
/// first frame always is; 0 is no budget: every frame is judged), scores each
/// and keeps the best `keep` distinct ones. `on_frame` sees every report as it
/// is made (progress for the socket and the LED).
///
/// After a frame with a face, the face is followed into the next through
/// the landmark model ([`FaceDetector::track`]), searched around its old
/// place when that fails ([`FaceDetector::detect_near`]), and in the whole
/// frame when it is lost; never when `quality.max_faces` is set, which
/// needs every face counted.
///
/// Memory: one frame at a time; a candidate keeps only its crop, scaled so
/// its long edge is at most `crop_max_edge` (the encoder would scale it so
/// anyway), and at most `4 * keep` candidates are held.
#[allow(clippy::too_many_arguments)]
pub fn run_burst(
    source: &mut dyn FrameSource,
    detector: &mut dyn FaceDetector,
    cfg: &BurstConfig,
    qcfg: &QualityConfig,
    keep: usize,
    crop_max_edge: u32,
    timer: &dyn Timer,
    cancel: &std::sync::atomic::AtomicBool,
    on_frame: &mut dyn FnMut(&FrameReport),
) -> Result<BurstResult, SourceError> {
    let started = timer.elapsed();
    let budget = Duration::from_millis(cfg.time_budget_ms);
    let mut frames = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut unreadable = Vec::new();
    let mut last_error = None;
    let keep = keep.clamp(1, 4);
    let track = qcfg.max_faces == 0;
    let mut previous: Option<Followed> = None;
    let mut device_failed = false;
    let mut cancelled = false;
    read_frames(source, cfg.frames, &mut |read| {
        if cancel.load(std::sync::atomic::Ordering::SeqCst) {
            cancelled = true;
            return Err(());
        }
        if cfg.time_budget_ms > 0
            && timer.elapsed().saturating_sub(started) > budget
            && !frames.is_empty()
        {
            return Err(());
        }
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) => return Err(()),
            // A file that does not decode is skipped; the next may be fine.
            Err(e @ SourceError::Decode { .. }) => {
                unreadable.push(e.to_string());
                last_error = Some(e);
                return Ok(());
            }
            // The device itself failed: nothing more will come.
            Err(e) => {
                if frames.is_empty() {
                    last_error = Some(e);
                    device_failed = true;
                } else {
                    unreadable.push(e.to_string());
                }
                return Err(());
            }
        };
        let near = previous.as_ref().filter(|_| track);
        let (report, candidate) = assess_frame(&frame, detector, qcfg, near);
        drop(frame);
        previous = report.chosen.map(|face| Followed {
            previous: face,
            anchor: match previous {
                Some(p) if report.followed => p.anchor,
                _ => face,
            },
        });
        on_frame(&report);
        frames.push(report);
        if let Some(mut c) = candidate {
            c.crop = shrink(c.crop, crop_max_edge);
            candidates.push(c);
            // Bound memory: only the best few crops can matter.
            candidates.sort_by(|a, b| b.scores.overall.total_cmp(&a.scores.overall));
            candidates.truncate(keep * 4);
        }
        Ok(())
    });
    if cancelled {
        return Err(SourceError::Cancelled);
    }
    if device_failed {
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    if frames.is_empty() {
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    let chosen = pick_distinct(candidates, keep, cfg.distinct_min_diff);
    let rejection = if chosen.is_empty() {
        Some(most_promising_rejection(&frames))
    } else {
        None
    };
    Ok(BurstResult {
        frames,
        chosen,
        rejection,
        unreadable,
    })
}

/// Hands `each` the results of up to `n` reads of `source`, until it
/// returns `Err(())`. When the source [reads ahead](FrameSource::reads_ahead),
/// the next frame is captured and decoded on a second thread while `each`
/// works on this one (a rendezvous channel: at most the frame being worked
/// on and the one read next are alive); otherwise one read follows the other.
fn read_frames(
    source: &mut dyn FrameSource,
    n: u32,
    each: &mut dyn FnMut(Result<Option<Frame>, SourceError>) -> Result<(), ()>,
) {
    /// The last read of a source: no frame will follow.
    fn ends(read: &Result<Option<Frame>, SourceError>) -> bool {
        matches!(read, Ok(None))
            || matches!(read, Err(e) if !matches!(e, SourceError::Decode { .. }))
    }
    if source.reads_ahead() {
        let read_ahead = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(0);
            let src = &mut *source;
            let reader = std::thread::Builder::new()
                .name("read-ahead".into())
                .spawn_scoped(scope, move || {
                    for _ in 0..n {
                        let read = src.next_frame();
                        let last = ends(&read);
                        // The burst stopped taking frames: stop reading.
                        if tx.send(read).is_err() || last {
                            return;
                        }
                    }
                });
            if let Err(e) = reader {
                log::warn!("no read-ahead thread ({e}); reading frames one after the other");
                return false;
            }
            for read in rx {
                if each(read).is_err() {
                    break;
                }
            }
            true
        });
        if read_ahead {
            return;
        }
    }
    for _ in 0..n {
        let read = source.next_frame();
        let last = ends(&read);
        if each(read).is_err() || last {
            return;
        }
    }
}

/// Scales `img` down so its long edge is at most `max_edge`.
fn shrink(img: RgbImage, max_edge: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= max_edge || max_edge == 0 {
        return img;
    }
    let scale = f64::from(max_edge) / f64::from(long);
    let sw = ((f64::from(w) * scale).round() as u32).max(1);
    let sh = ((f64::from(h) * scale).round() as u32).max(1);
    image::imageops::resize(&img, sw, sh, image::imageops::FilterType::CatmullRom)
}

/// Greedy: best first, skipping any too similar to one already kept.
fn pick_distinct(mut candidates: Vec<Candidate>, keep: usize, min_diff: f64) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.scores.overall.total_cmp(&a.scores.overall));
    let mut chosen: Vec<Candidate> = Vec::new();
    for c in candidates {
        if chosen.len() >= keep {
            break;
        }
        if chosen
            .iter()
            .all(|k| quality::thumb_difference(&k.thumb, &c.thumb) >= min_diff)
        {
            chosen.push(c);
        }
    }
    chosen
}

/// The rejection of the frame that came closest: a face beats no face, then
/// the higher overall score wins.
fn most_promising_rejection(frames: &[FrameReport]) -> Rejection {
    frames
        .iter()
        .filter_map(|f| Some((f.scores?.overall, f.rejection?)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, r)| r)
        .unwrap_or(Rejection::NoFace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::detect::FixedDetector;
    use crate::capture::source::MemorySource;
    use image::Rgb;

    fn textured(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            // Texture plus a per-frame brightness step, so frames differ
            // even in a 16 px thumbnail.
            let v = ((x * 7 + y * 13) % 97) as u8 + 40 + (seed * 12) as u8;
            Rgb([v, v, v])
        })
    }

    fn frames(n: u32) -> MemorySource {
        let mut s = MemorySource::default();
        for i in 0..n {
            s.frames.push_back(Ok(Frame {
                image: textured(320, 240, i),
                index: i,
                origin: "mem".into(),
            }));
        }
        s
    }

    static NO_CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn face() -> FaceBox {
        FaceBox {
            x: 100,
            y: 60,
            width: 100,
            height: 100,
            score: 3.0,
            ..Default::default()
        }
    }

    #[test]
    fn no_face_in_any_frame_is_rejected_with_no_face() {
        let mut src = frames(3);
        let mut det = FixedDetector(vec![]);
        let mut seen = 0;
        let r = run_burst(
            &mut src,
            &mut det,
            &BurstConfig::default(),
            &QualityConfig::default(),
            1,
            u32::MAX,
            &crate::clock::SystemTimer::new(),
            &NO_CANCEL,
            &mut |_| seen += 1,
        )
        .expect("burst");
        assert_eq!(seen, 3);
        assert!(r.chosen.is_empty());
        assert_eq!(r.rejection, Some(Rejection::NoFace));
    }

    #[test]
    fn keeps_at_most_keep_and_only_distinct_frames() {
        let mut det = FixedDetector(vec![face()]);
        let cfg = BurstConfig {
            frames: 6,
            keep: 3,
            ..BurstConfig::default()
        };
        let q = QualityConfig {
            min_sharpness: 0.0,
            min_contrast: 0.0,
            ..QualityConfig::default()
        };
        let r = run_burst(
            &mut frames(6),
            &mut det,
            &cfg,
            &q,
            3,
            u32::MAX,
            &crate::clock::SystemTimer::new(),
            &NO_CANCEL,
            &mut |_| {},
        )
        .expect("burst");
        assert_eq!(r.chosen.len(), 3);
        // Identical frames are not distinct: only one survives.
        let mut same = MemorySource::default();
        for i in 0..4 {
            same.frames.push_back(Ok(Frame {
                image: textured(320, 240, 0),
                index: i,
                origin: "m".into(),
            }));
        }
        let r = run_burst(
            &mut same,
            &mut det,
            &cfg,
            &q,
            3,
            64,
            &crate::clock::SystemTimer::new(),
            &NO_CANCEL,
            &mut |_| {},
        )
        .expect("burst");
        assert_eq!(r.chosen.len(), 1);
        // Crops are kept no larger than the encoder would send them.
        let crop = &r.chosen[0].crop;
        assert_eq!(
            crop.width().max(crop.height()),
            64,
            "{:?}",
            crop.dimensions()
        );
    }

    /// Each detection takes `ms` of fake time.
    struct TakesTime {
        clock: crate::clock::FakeClock,
        ms: i64,
    }

    impl FaceDetector for TakesTime {
        fn detect(&mut self, _gray: &GrayImage) -> Vec<FaceBox> {
            self.clock.advance(self.ms);
            vec![face()]
        }
    }

    #[test]
    fn the_time_budget_ends_a_burst_before_the_next_frame_but_never_the_first() {
        let q = QualityConfig {
            min_sharpness: 0.0,
            min_contrast: 0.0,
            max_faces: 1, // every frame searched whole: one detect call each
            ..QualityConfig::default()
        };
        let clock = crate::clock::FakeClock::new(0);
        // (frames judged, frames chosen) when each detection takes `ms`.
        let burst_within = |budget_ms, ms| {
            let cfg = BurstConfig {
                frames: 10,
                time_budget_ms: budget_ms,
                ..BurstConfig::default()
            };
            let mut det = TakesTime {
                clock: clock.clone(),
                ms,
            };
            let r = run_burst(
                &mut frames(10),
                &mut det,
                &cfg,
                &q,
                1,
                u32::MAX,
                &clock,
                &NO_CANCEL,
                &mut |_| {},
            )
            .expect("burst");
            (r.frames.len(), r.chosen.len())
        };
        let burst = |ms| burst_within(4000, ms);
        // 1.5 s a frame: frames start at 0, 1.5 and 3 s; at 4.5 s the
        // budget is spent and no fourth frame is read.
        assert_eq!(burst(1500), (3, 1));
        // A first frame slower than the whole budget is still judged.
        assert_eq!(burst(60_000), (1, 1));
        // No budget: every frame is judged however long each takes.
        assert_eq!(burst_within(0, 60_000), (10, 1));
    }

    #[test]
    fn device_errors_before_any_frame_are_returned() {
        let mut src = MemorySource::default();
        src.frames.push_back(Err(SourceError::Timeout {
            what: "/dev/video9".into(),
            ms: 100,
        }));
        let err = run_burst(
            &mut src,
            &mut FixedDetector(vec![]),
            &BurstConfig::default(),
            &QualityConfig::default(),
            1,
            u32::MAX,
            &crate::clock::SystemTimer::new(),
            &NO_CANCEL,
            &mut |_| {},
        )
        .expect_err("timeout");
        assert_eq!(err.code(), "camera_timeout");
    }
}

#[cfg(test)]
mod read_ahead_tests {
    use super::*;
    use crate::capture::detect::FaceDetector;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
    use std::time::Duration;

    /// A camera-like source: says when it starts reading each frame.
    struct Camera {
        next: u32,
        started: SyncSender<u32>,
    }

    impl FrameSource for Camera {
        fn describe(&self) -> String {
            "camera".into()
        }
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            let _ = self.started.try_send(self.next);
            self.next += 1;
            Ok(Some(Frame {
                image: RgbImage::new(64, 64),
                index: self.next - 1,
                origin: "camera".into(),
            }))
        }
        fn reads_ahead(&self) -> bool {
            true
        }
    }

    /// Detects in frame k only once the source has started reading frame
    /// k + 1 (or gives up after 10 s): it records whether reading overlapped.
    /// The last of `frames` has no next read to wait for.
    struct WaitsForNextRead {
        started: Receiver<u32>,
        frame: u32,
        frames: u32,
        overlapped: Vec<bool>,
    }

    impl FaceDetector for WaitsForNextRead {
        fn detect(&mut self, _gray: &GrayImage) -> Vec<FaceBox> {
            let wanted = self.frame + 1;
            self.frame += 1;
            if wanted == self.frames {
                return Vec::new();
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut seen = false;
            while !seen && std::time::Instant::now() < deadline {
                if let Ok(k) = self.started.recv_timeout(Duration::from_millis(100)) {
                    seen = k >= wanted;
                }
            }
            self.overlapped.push(seen);
            Vec::new()
        }
    }

    #[test]
    fn a_camera_burst_reads_the_next_frame_while_it_detects_in_this_one() {
        let (tx, rx) = sync_channel(16);
        let mut camera = Camera {
            next: 0,
            started: tx,
        };
        let mut detector = WaitsForNextRead {
            started: rx,
            frame: 0,
            frames: 4,
            overlapped: Vec::new(),
        };
        let cfg = BurstConfig {
            frames: 4,
            time_budget_ms: 600_000,
            ..BurstConfig::default()
        };
        let r = run_burst(
            &mut camera,
            &mut detector,
            &cfg,
            &QualityConfig::default(),
            1,
            u32::MAX,
            &crate::clock::SystemTimer::new(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("burst");
        assert_eq!(r.frames.len(), 4);
        // Frames 0-2: the next read had started (frame 3 is the last).
        assert_eq!(detector.overlapped, vec![true, true, true]);
        assert_eq!(camera.next, 4, "no frame read beyond the burst");
    }

    #[test]
    fn a_cancelled_camera_burst_stops_its_reader() {
        let (tx, _rx) = sync_channel(1);
        let mut camera = Camera {
            next: 0,
            started: tx,
        };
        let cfg = BurstConfig {
            frames: 100,
            time_budget_ms: 600_000,
            ..BurstConfig::default()
        };
        crate::capture::burst::cancel_tests::cancelled_after_two_frames(&mut camera, &cfg);
        assert!(camera.next <= 4, "read {} frames", camera.next);
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;
    use crate::capture::detect::FixedDetector;
    use crate::capture::source::MemorySource;
    use std::sync::atomic::AtomicBool;

    /// Runs a burst that is cancelled once two frames were reported, and
    /// checks it ends `Cancelled` with no third frame assessed.
    pub(super) fn cancelled_after_two_frames(src: &mut dyn FrameSource, cfg: &BurstConfig) {
        let cancel = AtomicBool::new(false);
        let mut seen = 0;
        let err = run_burst(
            src,
            &mut FixedDetector(vec![]),
            cfg,
            &QualityConfig::default(),
            1,
            u32::MAX,
            &crate::clock::SystemTimer::new(),
            &cancel,
            &mut |_| {
                seen += 1;
                if seen == 2 {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            },
        )
        .expect_err("cancelled");
        assert_eq!(err, SourceError::Cancelled);
        assert_eq!(seen, 2);
    }

    #[test]
    fn a_cancelled_burst_stops_before_the_next_frame() {
        let mut src = MemorySource::default();
        for i in 0..5 {
            src.frames.push_back(Ok(Frame {
                image: RgbImage::new(64, 64),
                index: i,
                origin: "m".into(),
            }));
        }
        cancelled_after_two_frames(&mut src, &BurstConfig::default());
    }
}
