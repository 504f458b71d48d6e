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

/// Runs the landmark model; one per thread (it keeps its buffers). It
/// holds the model twice: a view and its mirror image run side by side.
pub struct Landmarker {
    direct: Eye,
    mirrored: Eye,
    anchors: Vec<(f32, f32)>,
    /// `detect.landmark_min_score` as a logit, what the model outputs.
    logit_min: f32,
}

/// One planned copy of the model and its input.
struct Eye {
    net: Net,
    input: Vec<f32>,
}

impl std::fmt::Debug for Landmarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Landmarker")
            .field("logit_min", &self.logit_min)
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
        let eye = |net| Eye {
            net,
            input: vec![0.0; SIDE * SIDE * 3],
        };
        Ok(Landmarker {
            mirrored: eye(net.clone()),
            direct: eye(net),
            anchors: anchors(),
            logit_min: {
                let p = min_score.clamp(0.01, 0.99) as f32;
                (p / (1.0 - p)).ln()
            },
        })
    }

    /// Frees the models' working buffers (about 3 MB each) until the next
    /// look: an idle daemon keeps only the weights.
    pub fn release(&mut self) {
        self.direct.net.release();
        self.mirrored.net.release();
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

    /// Runs the model on one view and on its mirror image; the face in the
    /// middle of the view, in frame pixels. The mirror's points, mirrored
    /// back (right and left swapped), are averaged in: the model's own
    /// left-right bias cancels, so a mirrored photo gives the mirrored pose.
    fn look(&mut self, rgb: &RgbImage, view: View) -> Option<Located> {
        sample(rgb, &view, &mut self.direct.input);
        self.mirrored.input.copy_from_slice(&self.direct.input);
        mirror(&mut self.mirrored.input);
        let logit_min = self.logit_min;
        let anchors = &self.anchors;
        let (direct, mirrored) = (&mut self.direct, &mut self.mirrored);
        // The mirror image on a thread of its own: the two runs take the
        // time of one where there is a second core.
        let (direct, mirrored) = std::thread::scope(|s| {
            let other = std::thread::Builder::new()
                .name("landmarks".into())
                .spawn_scoped(s, || mirrored.infer(anchors, logit_min));
            let found = direct.infer(anchors, logit_min);
            // No thread to be had (a process at its limit): the view alone.
            let other = other.ok().and_then(|h| h.join().ok().flatten());
            (found, other)
        });
        let direct = direct?;
        let Some(mirrored) = mirrored else {
            return Some(direct.in_frame(&view));
        };
        let back = |k: usize| {
            let (x, y) = mirrored.points[MIRROR[k]];
            (SIDE as f32 - x, y)
        };
        let (wd, wm) = (direct.score, mirrored.score);
        let mut points = direct.points;
        for (k, p) in points.iter_mut().enumerate() {
            let (mx, my) = back(k);
            *p = (
                (p.0 * wd + mx * wm) / (wd + wm),
                (p.1 * wd + my * wm) / (wd + wm),
            );
        }
        Some(
            Raw {
                score: wd.min(wm),
                points,
                ..direct
            }
            .in_frame(&view),
        )
    }
}

impl Eye {
    /// The model on its input: the most confident detection whose centre
    /// lies in the middle half of the view (not a neighbour's face), its
    /// points the score-weighted mean of the detections overlapping it.
    fn infer(&mut self, anchors: &[(f32, f32)], logit_min: f32) -> Option<Raw> {
        let outputs = self.net.run(&self.input).ok()?;
        let [scores16, scores8, boxes16, boxes8] = outputs.as_slice() else {
            return None;
        };
        let mut found: Vec<Raw> = Vec::new();
        let all = scores16.iter().chain(scores8.iter());
        let regs = boxes16.chunks_exact(16).chain(boxes8.chunks_exact(16));
        for ((&logit, r), &(ax, ay)) in all.zip(regs).zip(anchors) {
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
        let middle = |d: &&Raw| {
            let quarter = SIDE as f32 / 4.0;
            (d.cx - SIDE as f32 / 2.0).abs() <= quarter
                && (d.cy - SIDE as f32 / 2.0).abs() <= quarter
        };
        let best = *found
            .iter()
            .filter(middle)
            .max_by(|a, b| a.score.total_cmp(&b.score))?;
        let (mut total, mut points) = (0.0f32, [(0.0f32, 0.0f32); 6]);
        for d in found.iter().filter(|d| iou(d, &best) >= BLEND_IOU) {
            total += d.score;
            for (acc, p) in points.iter_mut().zip(&d.points) {
                acc.0 += p.0 * d.score;
                acc.1 += p.1 * d.score;
            }
        }
        for p in points.iter_mut() {
            *p = (p.0 / total, p.1 / total);
        }
        Some(Raw { points, ..best })
    }
}

/// Which point a point becomes in the mirror image: the eyes and the ears
/// trade sides, the nose and the mouth stay.
const MIRROR: [usize; 6] = [1, 0, 2, 3, 5, 4];

/// Mirrors the model's input (NHWC) left to right, in place.
fn mirror(input: &mut [f32]) {
    for row in input.chunks_exact_mut(SIDE * 3) {
        for x in 0..SIDE / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (SIDE - 1 - x) * 3 + c);
            }
        }
    }
}

impl Raw {
    /// Its points in the frame the view was cut from.
    fn in_frame(&self, view: &View) -> Located {
        let at = |k: usize| view.to_frame(self.points[k].0, self.points[k].1);
        Located {
            landmarks: Landmarks {
                right_eye: at(0),
                left_eye: at(1),
                nose: at(2),
                mouth: at(3),
                right_ear: at(4),
                left_ear: at(5),
            },
            score: self.score,
        }
    }
}

/// Fills the model's input (NHWC, RGB scaled to -1..1) with the view's
/// square of the frame: bilinear samples, several per model pixel when the
/// square is more than twice the input's size (a box filter against
/// aliasing), grey outside the frame.
fn sample(rgb: &RgbImage, view: &View, out: &mut [f32]) {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let raw = rgb.as_raw();
    let k = (view.side / SIDE as f32 / 2.0).ceil().clamp(1.0, 3.0) as usize;
    let scale = 1.0 / (k * k) as f32 / 127.5;
    // The view is affine: a model position (fx, fy) is at o + fx*u + fy*v.
    let o = view.to_frame(0.0, 0.0);
    let (eu, ev) = (view.to_frame(1.0, 0.0), view.to_frame(0.0, 1.0));
    let (u, v) = ((eu.x - o.x, eu.y - o.y), (ev.x - o.x, ev.y - o.y));
    let texel = |x: isize, y: isize, c: usize| -> f32 {
        if x < 0 || y < 0 || x as usize >= w || y as usize >= h {
            127.5
        } else {
            f32::from(raw[(y as usize * w + x as usize) * 3 + c])
        }
    };
    for (i, o_px) in out.chunks_exact_mut(3).enumerate() {
        let (px, py) = ((i % SIDE) as f32, (i / SIDE) as f32);
        let mut acc = [0.0f32; 3];
        for sy in 0..k {
            for sx in 0..k {
                let fx = px + (sx as f32 + 0.5) / k as f32;
                let fy = py + (sy as f32 + 0.5) / k as f32;
                // Pixel centres are at +0.5.
                let x = o.x + fx * u.0 + fy * v.0 - 0.5;
                let y = o.y + fx * u.1 + fy * v.1 - 0.5;
                let (xf, yf) = (x.floor(), y.floor());
                let (tx, ty) = (x - xf, y - yf);
                let (x0, y0) = (xf as isize, yf as isize);
                if x0 >= 0 && y0 >= 0 && (x0 as usize) + 1 < w && (y0 as usize) + 1 < h {
                    let at = (y0 as usize * w + x0 as usize) * 3;
                    let (top, bottom) = (&raw[at..at + 6], &raw[at + w * 3..at + w * 3 + 6]);
                    for (c, a) in acc.iter_mut().enumerate() {
                        let t = f32::from(top[c]) * (1.0 - tx) + f32::from(top[c + 3]) * tx;
                        let b = f32::from(bottom[c]) * (1.0 - tx) + f32::from(bottom[c + 3]) * tx;
                        *a += t * (1.0 - ty) + b * ty;
                    }
                } else {
                    for (c, a) in acc.iter_mut().enumerate() {
                        let t = texel(x0, y0, c) * (1.0 - tx) + texel(x0 + 1, y0, c) * tx;
                        let b = texel(x0, y0 + 1, c) * (1.0 - tx) + texel(x0 + 1, y0 + 1, c) * tx;
                        *a += t * (1.0 - ty) + b * ty;
                    }
                }
            }
        }
        for (o, a) in o_px.iter_mut().zip(acc) {
            *o = a * scale - 1.0;
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
        let outputs = |net: &mut Net| -> Vec<Vec<f32>> {
            let out = net.run(&input).expect("runs");
            out.iter().map(|o| o.to_vec()).collect()
        };
        let first = outputs(&mut net);
        let sizes: Vec<usize> = first.iter().map(Vec::len).collect();
        assert_eq!(sizes, [512, 384, 512 * 16, 384 * 16]);
        let bytes = net.buffer_bytes();
        let again = outputs(&mut net);
        assert_eq!(first, again, "a run depends on its input only");
        assert_eq!(net.buffer_bytes(), bytes, "no buffer grew");
        assert!(bytes < 3 << 20, "tensors share buffers: {bytes} bytes");
        assert!(net.run(&input[1..]).is_err(), "a short input is an error");
        net.release();
        assert!(
            net.buffer_bytes() < 1 << 20,
            "released: {} bytes",
            net.buffer_bytes()
        );
        let after = outputs(&mut net);
        assert_eq!(first, after, "a released net runs as before");
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
