//! Face detection behind a trait; the default is rustface (SeetaFace) with its
//! model embedded in the binary at build time.

use crate::capture::landmarks::{Landmarker, Located};
use crate::config::DetectConfig;
use crate::model::{Landmarks, Pose};
use image::{GrayImage, RgbImage};
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// The SeetaFace frontal model from the rustface package (see build.rs).
static EMBEDDED_MODEL: &[u8] = include_bytes!(env!("ENROLLD_SEETA_MODEL_PATH"));

/// A face found in a frame, in frame pixels. `x`/`y` may be negative or the
/// box may extend past the frame: detectors report what they matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct FaceBox {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    /// Detector confidence (unit depends on the detector).
    pub score: f64,
    /// The landmark model's points; `None` from a detector without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landmarks: Option<Landmarks>,
    /// Between the eye centres, in frame pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eye_distance: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pose: Option<Pose>,
}

impl FaceBox {
    /// This box with what the landmark model found in it.
    fn judged(self, found: &Located) -> FaceBox {
        FaceBox {
            landmarks: Some(found.landmarks),
            eye_distance: Some(found.eye_distance()),
            pose: Some(found.pose()),
            ..self
        }
    }

    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
    /// Shorter side, the figure face-size limits are stated in.
    pub fn size(&self) -> u32 {
        self.width.min(self.height)
    }
}

/// Finds faces in a grey-scale frame.
pub trait FaceDetector {
    /// Every face of at least the configured size in the whole frame.
    fn detect(&mut self, gray: &GrayImage) -> Vec<FaceBox>;

    /// The faces near `around`, a face found in the previous frame of a
    /// burst (tracking): searched only in the region around it and only for
    /// faces of about its size, so it costs a fraction of [`Self::detect`].
    /// Empty when the face is lost; the caller then searches the frame.
    fn detect_near(&mut self, gray: &GrayImage, around: &FaceBox) -> Vec<FaceBox> {
        let region = near_region(around, gray.width(), gray.height());
        self.detect(gray)
            .into_iter()
            .filter(|f| region.is_some_and(|r| r.contains_centre(f)))
            .collect()
    }

    /// The box of `face` made exact at full resolution: a dense search of
    /// its region for a face of about its size. `face` itself when none is
    /// found there.
    fn refine(&mut self, _gray: &GrayImage, face: &FaceBox) -> FaceBox {
        *face
    }

    /// Follows a face into this frame through the landmark model alone, with
    /// no detection: the model looks at the view around `previous` (the face
    /// of the previous frame), and the box is `anchor` (the face as the
    /// detector last boxed it, with its landmarks) moved, turned and scaled
    /// as its landmarks moved (see [`follow`]). `None` when the model does
    /// not find a face there or finds it changed more than a burst's motion
    /// explains; the caller then searches with the detector. A detector
    /// without a landmark model never follows.
    fn track(
        &mut self,
        _rgb: &RgbImage,
        _previous: &FaceBox,
        _anchor: &FaceBox,
    ) -> Option<FaceBox> {
        None
    }

    /// The faces the landmark model confirms, each with its landmarks, eye
    /// distance and pose; the others are not faces. `faces` is largest
    /// first; at most [`MAX_LANDMARKED`] are looked at, the rest kept as
    /// they are. A detector without a landmark model keeps every face.
    fn landmarks(&mut self, _rgb: &RgbImage, faces: Vec<FaceBox>) -> Vec<FaceBox> {
        faces
    }

    /// Gives back working memory between bursts (the models stay loaded).
    fn release(&mut self) {}
}

/// Faces of one frame given landmarks (largest first): bounds the time a
/// crowd costs (each is about a millisecond or two).
pub const MAX_LANDMARKED: usize = 64;

/// Tracking: how far around the previous face the next frame is searched,
/// as a fraction of its size on each side (a face moves far less than this
/// between frames 33-100 ms apart), and the sizes it may have there.
const NEAR_MARGIN: f32 = 0.6;
const NEAR_MIN_SIZE: f32 = 0.7;
const NEAR_MAX_SIZE: f32 = 1.45;
/// Refinement: the sizes searched around the chosen face.
const REFINE_MIN_SIZE: f32 = 0.8;
const REFINE_MAX_SIZE: f32 = 1.25;

/// Following through landmarks ([`follow`]): the face's size may change
/// by at most this factor either way from its anchor, and its roll by at
/// most this many degrees, before the detector boxes it again.
const FOLLOW_MAX_SCALE: f32 = 1.25;
const FOLLOW_MAX_TURN_DEG: f32 = 20.0;

/// The box of a face whose landmarks moved from `from` to those `to` found,
/// given its box `anchor` when its landmarks were `from`: the similarity
/// (shift, turn in the image plane, scale) that takes the eyes, nose and
/// mouth of `from` onto those of `to`, applied to the anchor's centre and
/// size, with `to`'s landmarks, eye distance and pose. The
/// ears are left out: the model places them least surely. `None` when the
/// face grew or shrank by more than [`FOLLOW_MAX_SCALE`] or turned by more
/// than [`FOLLOW_MAX_TURN_DEG`]: then the detector should box it again.
pub fn follow(anchor: &FaceBox, from: &Landmarks, to: &Located) -> Option<FaceBox> {
    let points = |l: &Landmarks| [l.right_eye, l.left_eye, l.nose, l.mouth];
    let (a, b) = (points(from), points(&to.landmarks));
    let centroid = |p: &[crate::model::Point; 4]| {
        (
            p.iter().map(|q| q.x).sum::<f32>() / 4.0,
            p.iter().map(|q| q.y).sum::<f32>() / 4.0,
        )
    };
    let (ma, mb) = (centroid(&a), centroid(&b));
    // Least squares: b - mb = s R (a - ma), with s R = [[p, -q], [q, p]].
    let (mut num_p, mut num_q, mut den) = (0.0f32, 0.0f32, 0.0f32);
    for (pa, pb) in a.iter().zip(&b) {
        let (ax, ay) = (pa.x - ma.0, pa.y - ma.1);
        let (bx, by) = (pb.x - mb.0, pb.y - mb.1);
        num_p += ax * bx + ay * by;
        num_q += ax * by - ay * bx;
        den += ax * ax + ay * ay;
    }
    if den <= f32::EPSILON {
        return None;
    }
    let (p, q) = (num_p / den, num_q / den);
    let scale = p.hypot(q);
    let turn = q.atan2(p).to_degrees();
    if !(1.0 / FOLLOW_MAX_SCALE..=FOLLOW_MAX_SCALE).contains(&scale)
        || turn.abs() > FOLLOW_MAX_TURN_DEG
    {
        return None;
    }
    let cx = anchor.x as f32 + anchor.width as f32 / 2.0 - ma.0;
    let cy = anchor.y as f32 + anchor.height as f32 / 2.0 - ma.1;
    let (nx, ny) = (mb.0 + p * cx - q * cy, mb.1 + q * cx + p * cy);
    let (w, h) = (anchor.width as f32 * scale, anchor.height as f32 * scale);
    let moved = FaceBox {
        x: (nx - w / 2.0).round() as i32,
        y: (ny - h / 2.0).round() as i32,
        width: w.round() as u32,
        height: h.round() as u32,
        score: anchor.score,
        ..FaceBox::default()
    };
    Some(moved.judged(to))
}

/// A region of a frame, in its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    fn contains_centre(&self, f: &FaceBox) -> bool {
        let cx = i64::from(f.x) + i64::from(f.width / 2);
        let cy = i64::from(f.y) + i64::from(f.height / 2);
        cx >= i64::from(self.x)
            && cy >= i64::from(self.y)
            && cx < i64::from(self.x + self.width)
            && cy < i64::from(self.y + self.height)
    }
}

/// `face` grown by `margin` of its size on each side, within a `w`x`h`
/// frame; `None` when nothing of it is inside.
fn grown_region(face: &FaceBox, margin: f32, w: u32, h: u32) -> Option<Region> {
    let grow = (face.size() as f32 * margin).round() as i64;
    let x0 = (i64::from(face.x) - grow).clamp(0, i64::from(w));
    let y0 = (i64::from(face.y) - grow).clamp(0, i64::from(h));
    let x1 = (i64::from(face.x) + i64::from(face.width) + grow).clamp(0, i64::from(w));
    let y1 = (i64::from(face.y) + i64::from(face.height) + grow).clamp(0, i64::from(h));
    (x1 > x0 && y1 > y0).then(|| Region {
        x: x0 as u32,
        y: y0 as u32,
        width: (x1 - x0) as u32,
        height: (y1 - y0) as u32,
    })
}

/// Where [`FaceDetector::detect_near`] looks for the face of the previous frame.
pub fn near_region(face: &FaceBox, w: u32, h: u32) -> Option<Region> {
    grown_region(face, NEAR_MARGIN, w, h)
}

/// Why a detector could not be built.
#[derive(Debug)]
pub struct ModelError(pub String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "face model: {}", self.0)
    }
}

impl std::error::Error for ModelError {}

/// The face rustface's window spans: at each scale of its pyramid it finds
/// faces of 40 px there. rustface 0.1.7 starts the pyramid at the image's
/// own scale and does not use `set_min_face_size`, so the image it is given
/// is scaled first to make the smallest face asked for 40 px: a larger
/// minimum is searched on a smaller image (faster), a smaller one on an
/// enlarged image (without it, faces under 40 px were never found).
const WINDOW_PX: f32 = 40.0;
/// The smallest image rustface can search.
const MIN_SEARCH_PX: u32 = 40;

/// How densely a search samples positions and sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Density {
    pyramid_scale: f32,
    window_step: u32,
}

/// rustface keeps buffers of 13 bytes a pixel of the largest image it has
/// searched, for as long as it lives: after a search larger than this it is
/// made again, so a daemon that searched one large frame goes back to its
/// idle size (a 2048x1536 search would keep 40 MB).
const KEEP_BUFFERS_PX: u64 = 1 << 20;

/// rustface's SeetaFace funnel-structured cascade detector.
pub struct SeetaDetector {
    inner: Box<dyn rustface::Detector>,
    /// To make `inner` again, without its buffers.
    model: rustface::Model,
    score_threshold: f64,
    min_face_px: u32,
    max_edge: u32,
    /// The configured density (`detect.pyramid_scale`, `detect.window_step`).
    density: Density,
    applied: Density,
    /// Sizes in pixels of the searched image; 0 for none.
    applied_max_face: u32,
    landmarker: Landmarker,
}

impl SeetaDetector {
    /// Builds the detector from `cfg.model`, or the embedded model.
    pub fn new(cfg: &DetectConfig) -> Result<Self, ModelError> {
        let model = match &cfg.model {
            Some(path) => load_model_file(path)?,
            None => rustface::read_model(std::io::Cursor::new(EMBEDDED_MODEL))
                .map_err(|e| ModelError(format!("embedded model: {e}")))?,
        };
        // All values were validated by Config::problems; clamp anyway since
        // rustface panics on out-of-range settings.
        let score_threshold = cfg.score_threshold.max(0.01);
        let density = Density {
            pyramid_scale: cfg.pyramid_scale.clamp(0.11, 0.98) as f32,
            window_step: cfg.window_step.max(1),
        };
        Ok(Self {
            inner: make_inner(model.clone(), score_threshold, density),
            model,
            score_threshold,
            min_face_px: cfg.min_face_px.max(20),
            max_edge: cfg.max_edge.max(160),
            density,
            applied: density,
            applied_max_face: 0,
            landmarker: Landmarker::new(cfg.landmark_min_score).map_err(ModelError)?,
        })
    }

    /// Makes rustface's detector again, dropping the buffers it grew.
    fn renew(&mut self) {
        self.inner = make_inner(self.model.clone(), self.score_threshold, self.density);
        self.applied = self.density;
        self.applied_max_face = 0;
    }

    fn set_density(&mut self, d: Density) {
        if d != self.applied {
            self.inner.set_pyramid_scale_factor(d.pyramid_scale);
            self.inner
                .set_slide_window_step(d.window_step, d.window_step);
            self.applied = d;
        }
    }

    /// Searches `region` of `gray` for faces of `min_face` to `max_face`
    /// (0: any) pixels, at the scale that makes `min_face` the window's
    /// size, with at most `max_edge` pixels on the searched image's long
    /// edge. Boxes are in `gray`'s pixels.
    fn search(
        &mut self,
        gray: &GrayImage,
        region: Region,
        min_face: u32,
        max_face: u32,
        max_edge: u32,
    ) -> Vec<FaceBox> {
        let long = region.width.max(region.height);
        let scale = (WINDOW_PX / min_face.max(1) as f32).min(max_edge as f32 / long.max(1) as f32);
        let sw = (region.width as f32 * scale).round() as u32;
        let sh = (region.height as f32 * scale).round() as u32;
        if sw < MIN_SEARCH_PX || sh < MIN_SEARCH_PX {
            return Vec::new();
        }
        let whole = region.x == 0
            && region.y == 0
            && region.width == gray.width()
            && region.height == gray.height();
        let cropped;
        let area = if whole {
            gray
        } else {
            cropped =
                image::imageops::crop_imm(gray, region.x, region.y, region.width, region.height)
                    .to_image();
            &cropped
        };
        let resized;
        let img = if (sw, sh) == area.dimensions() {
            area
        } else {
            resized = crate::capture::scale::resize_gray(area, sw, sh);
            &resized
        };
        let max_scaled = if max_face == 0 {
            0
        } else {
            ((max_face as f32 * scale).round() as u32).max(MIN_SEARCH_PX)
        };
        if max_scaled != self.applied_max_face {
            self.inner.set_max_face_size(max_scaled);
            self.applied_max_face = max_scaled;
        }
        let data = rustface::ImageData::new(img.as_raw(), img.width(), img.height());
        let (sx, sy) = (
            region.width as f32 / img.width() as f32,
            region.height as f32 / img.height() as f32,
        );
        let found = self.inner.detect(&data);
        if u64::from(img.width()) * u64::from(img.height()) > KEEP_BUFFERS_PX {
            self.renew();
        }
        found
            .into_iter()
            .map(|f| {
                let b = f.bbox();
                FaceBox {
                    x: region.x as i32 + (b.x() as f32 * sx).round() as i32,
                    y: region.y as i32 + (b.y() as f32 * sy).round() as i32,
                    width: (b.width() as f32 * sx).round() as u32,
                    height: (b.height() as f32 * sy).round() as u32,
                    score: f.score(),
                    ..Default::default()
                }
            })
            .collect()
    }
}

fn make_inner(model: rustface::Model, score: f64, d: Density) -> Box<dyn rustface::Detector> {
    let mut inner = rustface::create_detector_with_model(model);
    inner.set_score_thresh(score);
    inner.set_pyramid_scale_factor(d.pyramid_scale);
    inner.set_slide_window_step(d.window_step, d.window_step);
    inner.set_max_face_size(0);
    inner
}

fn load_model_file(path: &Path) -> Result<rustface::Model, ModelError> {
    let file =
        std::fs::File::open(path).map_err(|e| ModelError(format!("{}: {e}", path.display())))?;
    rustface::read_model(std::io::BufReader::new(file))
        .map_err(|e| ModelError(format!("{}: not a SeetaFace model: {e}", path.display())))
}

impl FaceDetector for SeetaDetector {
    fn detect(&mut self, gray: &GrayImage) -> Vec<FaceBox> {
        let (w, h) = gray.dimensions();
        let whole = Region {
            x: 0,
            y: 0,
            width: w,
            height: h,
        };
        self.set_density(self.density);
        self.search(gray, whole, self.min_face_px, 0, self.max_edge)
    }

    fn detect_near(&mut self, gray: &GrayImage, around: &FaceBox) -> Vec<FaceBox> {
        let Some(region) = near_region(around, gray.width(), gray.height()) else {
            return Vec::new();
        };
        let size = around.size() as f32;
        let min = ((size * NEAR_MIN_SIZE).round() as u32).max(self.min_face_px);
        let max = ((size * NEAR_MAX_SIZE).round() as u32).max(min);
        self.set_density(self.density);
        self.search(gray, region, min, max, u32::MAX)
    }

    fn release(&mut self) {
        self.landmarker.release();
    }

    fn landmarks(&mut self, rgb: &RgbImage, faces: Vec<FaceBox>) -> Vec<FaceBox> {
        let mut kept = Vec::with_capacity(faces.len());
        for (i, face) in faces.into_iter().enumerate() {
            if i >= MAX_LANDMARKED {
                kept.push(face);
                continue;
            }
            if let Some(found) = self
                .landmarker
                .locate(rgb, (face.x, face.y, face.width, face.height))
            {
                kept.push(face.judged(&found));
            }
        }
        kept
    }

    fn track(&mut self, rgb: &RgbImage, previous: &FaceBox, anchor: &FaceBox) -> Option<FaceBox> {
        let from = anchor.landmarks?;
        let found = self.landmarker.locate(
            rgb,
            (previous.x, previous.y, previous.width, previous.height),
        )?;
        follow(anchor, &from, &found)
    }

    fn refine(&mut self, gray: &GrayImage, face: &FaceBox) -> FaceBox {
        let Some(region) = grown_region(face, 0.35, gray.width(), gray.height()) else {
            return *face;
        };
        let size = face.size() as f32;
        let min = ((size * REFINE_MIN_SIZE).round() as u32).max(20);
        let max = ((size * REFINE_MAX_SIZE).round() as u32).max(min);
        self.set_density(Density {
            pyramid_scale: 0.9,
            window_step: 2,
        });
        let found = self.search(gray, region, min, max, u32::MAX);
        self.set_density(self.density);
        // The boxes of the same face at the many positions and sizes of the
        // dense search, and the face as found, averaged by confidence.
        let same: Vec<FaceBox> = found
            .into_iter()
            .filter(|f| overlap(face, f) > 0.3)
            .chain(std::iter::once(*face))
            .collect();
        let weight: f64 = same.iter().map(|f| f.score.max(0.0)).sum();
        if weight <= 0.0 {
            return *face;
        }
        let mean = |v: &dyn Fn(&FaceBox) -> f64| {
            same.iter().map(|f| v(f) * f.score.max(0.0)).sum::<f64>() / weight
        };
        let cx = mean(&|f| f64::from(f.x) + f64::from(f.width) / 2.0);
        let cy = mean(&|f| f64::from(f.y) + f64::from(f.height) / 2.0);
        let side = mean(&|f| f64::from(f.size()));
        FaceBox {
            x: (cx - side / 2.0).round() as i32,
            y: (cy - side / 2.0).round() as i32,
            width: side.round() as u32,
            height: side.round() as u32,
            score: same.iter().map(|f| f.score).fold(face.score, f64::max),
            ..*face
        }
    }
}

/// Intersection over union of two boxes.
pub fn overlap(a: &FaceBox, b: &FaceBox) -> f64 {
    let x0 = i64::from(a.x).max(i64::from(b.x));
    let y0 = i64::from(a.y).max(i64::from(b.y));
    let x1 = (i64::from(a.x) + i64::from(a.width)).min(i64::from(b.x) + i64::from(b.width));
    let y1 = (i64::from(a.y) + i64::from(a.height)).min(i64::from(b.y) + i64::from(b.height));
    if x1 <= x0 || y1 <= y0 {
        return 0.0;
    }
    let inter = ((x1 - x0) * (y1 - y0)) as f64;
    inter / (a.area() as f64 + b.area() as f64 - inter)
}

/// A detector that returns fixed boxes, for tests of the code around detection.
#[derive(Debug, Clone, Default)]
pub struct FixedDetector(pub Vec<FaceBox>);

impl FaceDetector for FixedDetector {
    fn detect(&mut self, _gray: &GrayImage) -> Vec<FaceBox> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Point;

    fn found(landmarks: Landmarks) -> Located {
        Located {
            landmarks,
            score: 0.9,
        }
    }

    fn points(centre: (f32, f32), scale: f32, turn_deg: f32) -> Landmarks {
        let (s, c) = turn_deg.to_radians().sin_cos();
        let at = |x: f32, y: f32| Point {
            x: centre.0 + scale * (c * x - s * y),
            y: centre.1 + scale * (s * x + c * y),
        };
        Landmarks {
            right_eye: at(-30.0, -20.0),
            left_eye: at(30.0, -20.0),
            nose: at(2.0, 8.0),
            mouth: at(0.0, 35.0),
            right_ear: at(-70.0, 0.0),
            left_ear: at(70.0, 0.0),
        }
    }

    #[test]
    fn a_followed_box_moves_turns_and_scales_with_the_landmarks() {
        let anchor = FaceBox {
            x: 100,
            y: 50,
            width: 200,
            height: 200,
            score: 7.5,
            ..Default::default()
        };
        // The eyes, nose and mouth of `from` centre on (210.5, 130.75): the
        // box's centre (200, 150) is (-10.5, 19.25) from them.
        let from = points((210.0, 130.0), 1.0, 0.0);
        // Moved by (40, -10) and 1.2 times larger: their centre is at
        // (250.6, 120.9), the box's 1.2 times as far from it, at (238, 144).
        let moved =
            follow(&anchor, &from, &found(points((250.0, 120.0), 1.2, 0.0))).expect("followed");
        assert_eq!(
            (moved.x, moved.y, moved.width, moved.height),
            (118, 24, 240, 240)
        );
        assert_eq!(moved.score, 7.5, "the detector's confidence in the anchor");
        assert!(moved.landmarks.is_some() && moved.eye_distance.is_some() && moved.pose.is_some());
        // Turned by 15 degrees about (210, 130): the offset turns with them.
        let turned =
            follow(&anchor, &from, &found(points((210.0, 130.0), 1.0, 15.0))).expect("followed");
        let (s, c) = 15f32.to_radians().sin_cos();
        let turn = |x: f32, y: f32| (c * x - s * y, s * x + c * y);
        let (mx, my) = turn(0.5, 0.75);
        let (ox, oy) = turn(-10.5, 19.25);
        let (ex, ey) = (210.0 + mx + ox, 130.0 + my + oy);
        let (cx, cy) = (turned.x as f32 + 100.0, turned.y as f32 + 100.0);
        assert!(
            (cx - ex).abs() <= 0.5 && (cy - ey).abs() <= 0.5,
            "({cx}, {cy}) vs ({ex}, {ey})"
        );
        assert_eq!((turned.width, turned.height), (200, 200));
    }

    #[test]
    fn a_face_that_changed_more_than_a_burst_explains_is_not_followed() {
        let anchor = FaceBox {
            x: 0,
            y: 0,
            width: 100,
            height: 100,
            ..Default::default()
        };
        let from = points((50.0, 50.0), 1.0, 0.0);
        for (scale, turn) in [(1.3, 0.0), (0.75, 0.0), (1.0, 25.0), (1.0, -25.0)] {
            assert!(
                follow(&anchor, &from, &found(points((50.0, 50.0), scale, turn))).is_none(),
                "scale {scale}, turn {turn}"
            );
        }
        for (scale, turn) in [(1.2, 0.0), (0.82, 0.0), (1.0, 18.0), (1.1, -15.0)] {
            assert!(
                follow(&anchor, &from, &found(points((50.0, 50.0), scale, turn))).is_some(),
                "scale {scale}, turn {turn}"
            );
        }
        // All points in one place: no scale to be had.
        let p = Point { x: 5.0, y: 5.0 };
        let flat = Landmarks {
            right_eye: p,
            left_eye: p,
            nose: p,
            mouth: p,
            right_ear: p,
            left_ear: p,
        };
        assert!(follow(&anchor, &flat, &found(from)).is_none());
    }
}
