//! Five (six) landmarks of a face, its eye distance and head pose, from
//! MediaPipe BlazeFace run on a square around a detected face.
//!
//! BlazeFace is itself a face detector: a box the detector reports where
//! BlazeFace finds no face with at least `detect.landmark_min_score` is
//! not a face. A head rolled by more than [`REFINE_ROLL_DEG`] is looked at
//! a second time, turned upright, since the model is most exact on upright
//! faces; its points are then mapped back into the frame.

use crate::model::{Landmarks, Point, Pose};
use enrolld_nn::Net;
use image::RgbImage;

/// MediaPipe BlazeFace (front, 128x128) as ONNX, placed by
/// `scripts/setup-models` and embedded by build.rs.
static BLAZEFACE: &[u8] = include_bytes!(env!("ENROLLD_BLAZEFACE_MODEL_PATH"));

pub fn blazeface_model() -> &'static [u8] {
    BLAZEFACE
}

/// The model's input side, in pixels.
const SIDE: usize = 128;
/// The square looked at, as a multiple of the detector's face size: the
/// face then spans about 45% of the model's input, where it was trained.
const CROP_SCALE: f32 = 2.0;
/// Heads rolled more than this are looked at again, turned upright.
pub const REFINE_ROLL_DEG: f32 = 10.0;
/// Detections overlapping the best by this much are averaged into it
/// (MediaPipe's weighted suppression), which steadies the points.
const BLEND_IOU: f32 = 0.3;
/// How far the nose tip stands in front of the eyes and the mouth, over the
/// eye distance, for a generic adult head: turns offsets into angles.
const NOSE_DEPTH: f32 = 0.5;
/// Where the nose tip sits between the eye line (0) and the mouth (1) in a
/// frontal face, as BlazeFace places them (mean of the sample photo's faces).
const FRONTAL_NOSE_HEIGHT: f32 = 0.53;

/// A face the landmark model confirmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    pub landmarks: Landmarks,
    /// BlazeFace's confidence, 0-1.
    pub score: f32,
}

impl Located {
    pub fn eye_distance(&self) -> f32 {
        self.landmarks.right_eye.distance(self.landmarks.left_eye)
    }
    pub fn pose(&self) -> Pose {
        pose(&self.landmarks)
    }
}

/// Eye distance and pose of a set of landmarks (pure geometry).
pub fn pose(l: &Landmarks) -> Pose {
    let (dx, dy) = (l.left_eye.x - l.right_eye.x, l.left_eye.y - l.right_eye.y);
    let d = dx.hypot(dy).max(1e-3);
    let roll = dy.atan2(dx);
    // Axes of the face: u along the eye line, v down the face.
    let (u, v) = ((dx / d, dy / d), (-dy / d, dx / d));
    let mid = Point {
        x: (l.left_eye.x + l.right_eye.x) / 2.0,
        y: (l.left_eye.y + l.right_eye.y) / 2.0,
    };
    let along = |p: Point| (p.x - mid.x) * u.0 + (p.y - mid.y) * u.1;
    let down = |p: Point| (p.x - mid.x) * v.0 + (p.y - mid.y) * v.1;
    // Turned heads move the nose tip toward one eye.
    let yaw = (along(l.nose) / d / NOSE_DEPTH).atan();
    // Nodding moves it toward the eye line or the mouth.
    let mouth_down = down(l.mouth).max(1e-3);
    let height = down(l.nose) / mouth_down;
    let pitch = ((height - FRONTAL_NOSE_HEIGHT) * (mouth_down / d) / NOSE_DEPTH).atan();
    Pose {
        yaw: yaw.to_degrees(),
        pitch: pitch.to_degrees(),
        roll: roll.to_degrees(),
    }
}

/// Runs the landmark model; one per thread (it keeps its buffers).
pub struct Landmarker {
    net: Net,
    input: Vec<f32>,
    anchors: Vec<(f32, f32)>,
    min_score: f32,
}

impl std::fmt::Debug for Landmarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Landmarker")
            .field("min_score", &self.min_score)
            .finish()
    }
}

/// The anchor centres of BlazeFace front, in model pixels: 2 a cell on a
/// 16x16 grid, then 6 a cell on an 8x8 grid.
fn anchors() -> Vec<(f32, f32)> {
    let mut a = Vec::with_capacity(896);
    for (cells, per) in [(16usize, 2usize), (8, 6)] {
        for y in 0..cells {
            for x in 0..cells {
                let c = (
                    (x as f32 + 0.5) / cells as f32 * SIDE as f32,
                    (y as f32 + 0.5) / cells as f32 * SIDE as f32,
                );
                a.extend(std::iter::repeat_n(c, per));
            }
        }
    }
    a
}

/// One detection in model pixels: box centre and size, six points.
#[derive(Debug, Clone, Copy)]
struct Raw {
    score: f32,
    cx: f32,
    cy: f32,
    w: f32,
    h: f32,
    points: [(f32, f32); 6],
}

fn iou(a: &Raw, b: &Raw) -> f32 {
    let x0 = (a.cx - a.w / 2.0).max(b.cx - b.w / 2.0);
    let x1 = (a.cx + a.w / 2.0).min(b.cx + b.w / 2.0);
    let y0 = (a.cy - a.h / 2.0).max(b.cy - b.h / 2.0);
    let y1 = (a.cy + a.h / 2.0).min(b.cy + b.h / 2.0);
    let inner = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
    inner / (a.w * a.h + b.w * b.h - inner).max(1e-6)
}

/// Where the model looks: a square of `side` frame pixels around `(cx,
/// cy)`, turned by `roll` degrees.
#[derive(Debug, Clone, Copy)]
struct View {
    cx: f32,
    cy: f32,
    side: f32,
    cos: f32,
    sin: f32,
}

impl View {
    fn new(cx: f32, cy: f32, side: f32, roll_deg: f32) -> Self {
        let r = roll_deg.to_radians();
        View {
            cx,
            cy,
            side,
            cos: r.cos(),
            sin: r.sin(),
        }
    }
    /// A model pixel position in the frame.
    fn to_frame(self, px: f32, py: f32) -> Point {
        let s = self.side / SIDE as f32;
        let (dx, dy) = ((px - SIDE as f32 / 2.0) * s, (py - SIDE as f32 / 2.0) * s);
        Point {
            x: self.cx + dx * self.cos - dy * self.sin,
            y: self.cy + dx * self.sin + dy * self.cos,
        }
    }
}

impl Landmarker {
    /// Plans the embedded model; the error says why it cannot run.
    pub fn new(min_score: f64) -> Result<Self, String> {
        let net = Net::from_onnx(blazeface_model(), &[1, SIDE, SIDE, 3])
            .map_err(|e| format!("landmark model: {e}"))?;
        Ok(Landmarker {
            net,
            input: vec![0.0; SIDE * SIDE * 3],
            anchors: anchors(),
            min_score: min_score.clamp(0.01, 0.99) as f32,
        })
    }

    /// The landmarks of the face a detector boxed at `(x, y)`, `width` by
    /// `height` frame pixels, or `None` when the model finds no face there.
    pub fn locate(
        &mut self,
        rgb: &RgbImage,
        (x, y, width, height): (i32, i32, u32, u32),
    ) -> Option<Located> {
        let cx = x as f32 + width as f32 / 2.0;
        let cy = y as f32 + height as f32 / 2.0;
        let side = width.max(height) as f32 * CROP_SCALE;
        let first = self.look(rgb, View::new(cx, cy, side, 0.0))?;
        let roll = first.pose().roll;
        if roll.abs() <= REFINE_ROLL_DEG {
            return Some(first);
        }
        // Upright, around the face the first look found.
        let l = &first.landmarks;
        let (mx, my) = (
            (l.right_eye.x + l.left_eye.x + l.mouth.x * 2.0) / 4.0,
            (l.right_eye.y + l.left_eye.y + l.mouth.y * 2.0) / 4.0,
        );
        Some(
            self.look(rgb, View::new(mx, my, side, roll))
                .unwrap_or(first),
        )
    }

    /// Runs the model on one view; the best detection, in frame pixels.
    fn look(&mut self, rgb: &RgbImage, view: View) -> Option<Located> {
        sample(rgb, &view, &mut self.input);
        let outputs = self.net.run(&self.input).ok()?;
        let [scores16, scores8, boxes16, boxes8] = outputs.as_slice() else {
            return None;
        };
        let logit_min = (self.min_score / (1.0 - self.min_score)).ln();
        let mut found: Vec<Raw> = Vec::new();
        let all = scores16.iter().chain(scores8.iter());
        let regs = boxes16.chunks_exact(16).chain(boxes8.chunks_exact(16));
        for ((&logit, r), &(ax, ay)) in all.zip(regs).zip(&self.anchors) {
            if logit < logit_min {
                continue;
            }
            let mut points = [(0.0, 0.0); 6];
            for (k, p) in points.iter_mut().enumerate() {
                *p = (ax + r[4 + 2 * k], ay + r[5 + 2 * k]);
            }
            found.push(Raw {
                score: 1.0 / (1.0 + (-logit).exp()),
                cx: ax + r[0],
                cy: ay + r[1],
                w: r[2],
                h: r[3],
                points,
            });
        }
        let best = *found.iter().max_by(|a, b| a.score.total_cmp(&b.score))?;
        // Score-weighted mean of the detections overlapping the best.
        let (mut total, mut points) = (0.0f32, [(0.0f32, 0.0f32); 6]);
        for d in found.iter().filter(|d| iou(d, &best) >= BLEND_IOU) {
            total += d.score;
            for (acc, p) in points.iter_mut().zip(&d.points) {
                acc.0 += p.0 * d.score;
                acc.1 += p.1 * d.score;
            }
        }
        let at = |k: usize| view.to_frame(points[k].0 / total, points[k].1 / total);
        Some(Located {
            landmarks: Landmarks {
                right_eye: at(0),
                left_eye: at(1),
                nose: at(2),
                mouth: at(3),
                right_ear: at(4),
                left_ear: at(5),
            },
            score: best.score,
        })
    }
}

/// Fills the model's input (NHWC, RGB scaled to -1..1) with the view's
/// square of the frame: bilinear samples, several per model pixel when the
/// square is more than twice the input's size (a box filter against
/// aliasing), grey outside the frame.
fn sample(rgb: &RgbImage, view: &View, out: &mut [f32]) {
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    let raw = rgb.as_raw();
    let step = view.side / SIDE as f32;
    let k = (step / 2.0).ceil().clamp(1.0, 3.0) as usize;
    let texel = |x: i64, y: i64, c: usize| -> f32 {
        if x < 0 || y < 0 || x >= w || y >= h {
            127.5
        } else {
            f32::from(raw[((y * w + x) * 3) as usize + c])
        }
    };
    for py in 0..SIDE {
        for px in 0..SIDE {
            let mut acc = [0.0f32; 3];
            for sy in 0..k {
                for sx in 0..k {
                    let fx = px as f32 + (sx as f32 + 0.5) / k as f32;
                    let fy = py as f32 + (sy as f32 + 0.5) / k as f32;
                    let p = view.to_frame(fx, fy);
                    let (x, y) = (p.x - 0.5, p.y - 0.5);
                    let (x0, y0) = (x.floor(), y.floor());
                    let (tx, ty) = (x - x0, y - y0);
                    let (x0, y0) = (x0 as i64, y0 as i64);
                    for (c, a) in acc.iter_mut().enumerate() {
                        let top = texel(x0, y0, c) * (1.0 - tx) + texel(x0 + 1, y0, c) * tx;
                        let bottom =
                            texel(x0, y0 + 1, c) * (1.0 - tx) + texel(x0 + 1, y0 + 1, c) * tx;
                        *a += top * (1.0 - ty) + bottom * ty;
                    }
                }
            }
            let o = &mut out[(py * SIDE + px) * 3..][..3];
            for (o, a) in o.iter_mut().zip(acc) {
                *o = a / (k * k) as f32 / 127.5 - 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_plans_and_its_buffers_are_reused() {
        let mut net = Net::from_onnx(blazeface_model(), &[1, 128, 128, 3]).expect("loads");
        let input = vec![0.25; 128 * 128 * 3];
        let first: Vec<Vec<f32>> = net
            .run(&input)
            .expect("runs")
            .iter()
            .map(|o| o.to_vec())
            .collect();
        let sizes: Vec<usize> = first.iter().map(Vec::len).collect();
        assert_eq!(sizes, [512, 384, 512 * 16, 384 * 16]);
        let bytes = net.buffer_bytes();
        let again: Vec<Vec<f32>> = net
            .run(&input)
            .expect("runs")
            .iter()
            .map(|o| o.to_vec())
            .collect();
        assert_eq!(first, again, "a run depends on its input only");
        assert_eq!(net.buffer_bytes(), bytes, "no buffer grew");
        assert!(bytes < 3 << 20, "tensors share buffers: {bytes} bytes");
        assert!(net.run(&input[1..]).is_err(), "a short input is an error");
    }

    #[test]
    fn a_cut_model_is_an_error_not_a_panic() {
        let model = blazeface_model();
        for cut in [1, 100, model.len() / 2, model.len() - 3] {
            assert!(
                Net::from_onnx(&model[..cut], &[1, 128, 128, 3]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn the_points_of_the_sample_faces_are_where_the_eyes_nose_and_mouth_are() {
        let photo = image::open(crate::capture::SAMPLE_PHOTO)
            .expect("photo")
            .into_rgb8();
        let mut lm = Landmarker::new(0.5).expect("model");
        for (x, y, s) in [(863, 250, 62), (1165, 250, 60), (1263, 208, 59)] {
            let l = lm
                .locate(&photo, (x, y, s as u32, s as u32))
                .expect("a face")
                .landmarks;
            let (x, y, s) = (x as f32, y as f32, s as f32);
            // Eyes in the upper half of the box, the right one on the left,
            // the nose below them, the mouth below the nose.
            assert!(l.right_eye.x < l.left_eye.x);
            for e in [l.right_eye, l.left_eye] {
                assert!(
                    e.x > x && e.x < x + s && e.y > y && e.y < y + s * 0.6,
                    "{l:?}"
                );
            }
            assert!(l.nose.y > l.right_eye.y && l.mouth.y > l.nose.y, "{l:?}");
            let d = l.right_eye.distance(l.left_eye);
            assert!(
                (0.3..0.45).contains(&(d / s)),
                "eye distance {d} for a {s} px face"
            );
        }
    }
}
