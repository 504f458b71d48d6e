//! Choosing the face to enroll and judging whether it is good enough.
//!
//! Pure functions over pixels: no camera, no detector, no clock.

use crate::capture::detect::FaceBox;
use crate::config::QualityConfig;
use crate::model::FaceScores;
#[cfg(test)]
use crate::model::Pose;
use image::{GrayImage, RgbImage};
use serde::Serialize;
use std::fmt;

/// Side of the normalised face thumbnail the scores are measured on, so that
/// thresholds mean the same for near and far faces.
const NORM_SIDE: u32 = 128;
/// Side of the thumbnail used to tell frames apart.
const THUMB_SIDE: u32 = 16;

/// Why a frame or an enrollment was not accepted. The `snake_case` names are
/// part of the interface (CLI `--json`, socket protocol, LED patterns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// No face in the frame.
    NoFace,
    /// The largest face is smaller than `quality.min_face_px`.
    FaceTooSmall,
    /// The face is darker than `quality.min_brightness`.
    TooDark,
    /// The face is brighter than `quality.max_brightness`.
    TooBright,
    /// The face has less contrast than `quality.min_contrast`.
    LowContrast,
    /// The face is less sharp than `quality.min_sharpness`.
    Blurry,
    /// More faces than `quality.max_faces`.
    TooManyFaces,
    /// The face, or its margin, crosses the frame's edge.
    FaceCutOff,
    /// The eye distance is under `quality.min_eye_distance_px`.
    EyesTooClose,
    /// Yaw or pitch beyond `quality.max_yaw_deg` / `max_pitch_deg`.
    Pose,
    /// Roll beyond `quality.max_roll_deg`.
    Tilted,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NoFace => "no_face",
            Rejection::FaceTooSmall => "face_too_small",
            Rejection::TooDark => "too_dark",
            Rejection::TooBright => "too_bright",
            Rejection::LowContrast => "low_contrast",
            Rejection::Blurry => "blurry",
            Rejection::TooManyFaces => "too_many_faces",
            Rejection::FaceCutOff => "face_cut_off",
            Rejection::EyesTooClose => "eyes_too_close",
            Rejection::Pose => "pose",
            Rejection::Tilted => "tilted",
        }
    }

    /// What the technician should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Rejection::NoFace => {
                "no face found: face the camera, remove anything covering the face"
            }
            Rejection::FaceTooSmall => "face too small: step closer to the camera",
            Rejection::TooDark => "too dark: add light in front of the face",
            Rejection::TooBright => "too bright: avoid direct light or glare on the face",
            Rejection::LowContrast => "low contrast: improve lighting, clean the lens",
            Rejection::Blurry => "blurry: hold still, clean or focus the lens",
            Rejection::TooManyFaces => "too many faces: only one person in front of the camera",
            Rejection::FaceCutOff => {
                "face cut off by the edge of the picture: step into the middle of the camera's view"
            }
            Rejection::EyesTooClose => "eyes too close together in the picture: step closer",
            Rejection::Pose => "head turned or nodding: face the camera, look straight into it",
            Rejection::Tilted => "head tilted: hold the head straight, eyes level",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pixel rectangle inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The verdict on one frame.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub faces_seen: u32,
    /// The largest face, when there is one.
    pub chosen: Option<FaceBox>,
    pub scores: Option<FaceScores>,
    /// `Ok` when the face is good enough to enroll.
    pub decision: Result<(), Rejection>,
    /// The crop rectangle (face plus margin, clamped to the frame).
    pub crop: Option<Rect>,
    /// Small grey thumbnail of the face, to tell frames apart.
    pub thumb: Option<GrayImage>,
}

/// The face with the largest box (what the vendors enroll too).
pub fn largest_face(faces: &[FaceBox]) -> Option<FaceBox> {
    faces.iter().copied().max_by_key(|f| f.area())
}

/// Intersection of a face box with the frame.
pub fn clamp_box(face: &FaceBox, width: u32, height: u32) -> Option<Rect> {
    let x0 = i64::from(face.x).clamp(0, i64::from(width));
    let y0 = i64::from(face.y).clamp(0, i64::from(height));
    let x1 = (i64::from(face.x) + i64::from(face.width)).clamp(0, i64::from(width));
    let y1 = (i64::from(face.y) + i64::from(face.height)).clamp(0, i64::from(height));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    Some(Rect {
        x: x0 as u32,
        y: y0 as u32,
        width: (x1 - x0) as u32,
        height: (y1 - y0) as u32,
    })
}

/// The face box grown by `margin` (a fraction of its size) on each side,
/// clamped to the frame.
pub fn crop_rect(face: &FaceBox, margin: f64, width: u32, height: u32) -> Option<Rect> {
    let mx = (face.width as f64 * margin).round() as i64;
    let my = (face.height as f64 * margin).round() as i64;
    let grown = FaceBox {
        x: (i64::from(face.x) - mx).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        y: (i64::from(face.y) - my).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        width: (i64::from(face.width) + 2 * mx).clamp(0, i64::from(u32::MAX)) as u32,
        height: (i64::from(face.height) + 2 * my).clamp(0, i64::from(u32::MAX)) as u32,
        score: face.score,
        ..Default::default()
    };
    clamp_box(&grown, width, height)
}

/// How far a face or its margin may cross the frame's edge, as a fraction
/// of the face's size (rounding, and detector boxes that differ by a few
/// pixels from frame to frame).
const CUT_TOLERANCE: f64 = 0.05;

/// Whether the face, grown by `margin`, or any of its landmarks, lies
/// partly outside a `w`x`h` frame.
pub fn cut_off(face: &FaceBox, margin: f64, w: u32, h: u32) -> bool {
    let size = f64::from(face.size().max(1));
    let slack = size * CUT_TOLERANCE;
    let (mx, my) = (
        f64::from(face.width) * margin,
        f64::from(face.height) * margin,
    );
    let x0 = f64::from(face.x) - mx;
    let y0 = f64::from(face.y) - my;
    let x1 = f64::from(face.x) + f64::from(face.width) + mx;
    let y1 = f64::from(face.y) + f64::from(face.height) + my;
    let (w, h) = (f64::from(w), f64::from(h));
    if x0 < -slack || y0 < -slack || x1 > w + slack || y1 > h + slack {
        return true;
    }
    face.landmarks.is_some_and(|l| {
        [l.right_eye, l.left_eye, l.nose, l.mouth].iter().any(|p| {
            let (x, y) = (f64::from(p.x), f64::from(p.y));
            x < 0.0 || y < 0.0 || x >= w || y >= h
        })
    })
}

/// Cuts `rect` out of an image, turned by `roll` degrees about its centre
/// so that a tilted head comes out level (bilinear; pixels beyond the frame
/// repeat its edge). No turn under half a degree: a plain copy.
pub fn crop_levelled(img: &RgbImage, rect: Rect, roll: f32) -> RgbImage {
    if roll.abs() < 0.5 {
        return crop(img, rect);
    }
    let (cx, cy) = (
        rect.x as f32 + rect.width as f32 / 2.0,
        rect.y as f32 + rect.height as f32 / 2.0,
    );
    let (sin, cos) = roll.to_radians().sin_cos();
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let stride = iw as usize * 3;
    // Bilinear weights in 8 fractional bits; the four corner pixels read
    // straight from the buffer (a clamped index where a corner is outside).
    let at =
        |x: i64, y: i64| y.clamp(0, ih - 1) as usize * stride + x.clamp(0, iw - 1) as usize * 3;
    let (rw, rh) = (rect.width as usize, rect.height as usize);
    let mut out = vec![0u8; rw * rh * 3];
    // Source positions in 16.16 fixed point, stepped along each row (no
    // float rounding per pixel: `floor` and `round` are calls into libm on
    // x86-64's baseline, and were most of this crop's time).
    const FIX: f32 = 65536.0;
    let (step_x, step_y) = ((cos * FIX).round() as i64, (sin * FIX).round() as i64);
    // Each row starts at its first pixel's centre.
    let dx = 0.5 - rect.width as f32 / 2.0;
    for (v, line) in out.chunks_exact_mut(rw * 3).enumerate() {
        let dy = v as f32 + 0.5 - rect.height as f32 / 2.0;
        let mut fx = ((cx + dx * cos - dy * sin - 0.5) * FIX).round() as i64;
        let mut fy = ((cy + dx * sin + dy * cos - 0.5) * FIX).round() as i64;
        for p in line.chunks_exact_mut(3) {
            let (x0, y0) = (fx >> 16, fy >> 16);
            // Weights in 8 bits, rounded: 0-256.
            let tx = (((fx & 0xffff) + 128) >> 8) as u32;
            let ty = (((fy & 0xffff) + 128) >> 8) as u32;
            fx += step_x;
            fy += step_y;
            let (a, b, c, d) = if x0 >= 0 && y0 >= 0 && x0 + 1 < iw && y0 + 1 < ih {
                let a = y0 as usize * stride + x0 as usize * 3;
                (a, a + 3, a + stride, a + stride + 3)
            } else {
                (
                    at(x0, y0),
                    at(x0 + 1, y0),
                    at(x0, y0 + 1),
                    at(x0 + 1, y0 + 1),
                )
            };
            for (k, o) in p.iter_mut().enumerate() {
                let top = u32::from(raw[a + k]) * (256 - tx) + u32::from(raw[b + k]) * tx;
                let bottom = u32::from(raw[c + k]) * (256 - tx) + u32::from(raw[d + k]) * tx;
                *o = ((top * (256 - ty) + bottom * ty + (1 << 15)) >> 16).min(255) as u8;
            }
        }
    }
    RgbImage::from_raw(rect.width, rect.height, out).unwrap_or_else(|| crop(img, rect))
}

/// Cuts `rect` out of an image.
pub fn crop(img: &RgbImage, rect: Rect) -> RgbImage {
    image::imageops::crop_imm(img, rect.x, rect.y, rect.width, rect.height).to_image()
}

/// Chooses the largest face in `faces`, scores it and decides.
pub fn assess(gray: &GrayImage, faces: &[FaceBox], cfg: &QualityConfig) -> Assessment {
    let faces_seen = u32::try_from(faces.len()).unwrap_or(u32::MAX);
    let (w, h) = gray.dimensions();
    let chosen = largest_face(faces);
    let inner = chosen.and_then(|f| clamp_box(&f, w, h));
    let (Some(face), Some(inner)) = (chosen, inner) else {
        return Assessment {
            faces_seen,
            chosen: None,
            scores: None,
            decision: Err(Rejection::NoFace),
            crop: None,
            thumb: None,
        };
    };
    let region =
        image::imageops::crop_imm(gray, inner.x, inner.y, inner.width, inner.height).to_image();
    let norm = crate::capture::scale::resize_gray(&region, NORM_SIDE, NORM_SIDE);
    let (brightness, contrast) = mean_and_stddev(&norm);
    let sharpness = laplacian_variance(&norm);
    let face_px = face.size();
    let mut overall = overall_score(face_px, brightness, contrast, sharpness, cfg);
    if let Some(p) = face.pose {
        overall *= frontal_factor(p.yaw, p.pitch, cfg);
    }
    let scores = FaceScores {
        face_px,
        brightness,
        contrast,
        sharpness,
        faces_seen,
        detector_score: face.score,
        overall,
        eye_distance: face.eye_distance.map(f64::from),
        pose: face.pose,
    };
    let decision = if cut_off(&face, cfg.margin, w, h) {
        Err(Rejection::FaceCutOff)
    } else {
        decide(&scores, cfg)
    };
    Assessment {
        faces_seen,
        chosen: Some(face),
        scores: Some(scores),
        decision,
        crop: crop_rect(&face, cfg.margin, w, h),
        thumb: Some(crate::capture::scale::resize_gray(
            &norm, THUMB_SIDE, THUMB_SIDE,
        )),
    }
}

/// The first rule the scores break, in the order a technician should fix them.
pub fn decide(s: &FaceScores, cfg: &QualityConfig) -> Result<(), Rejection> {
    if cfg.max_faces > 0 && s.faces_seen > cfg.max_faces {
        return Err(Rejection::TooManyFaces);
    }
    if s.face_px < cfg.min_face_px {
        return Err(Rejection::FaceTooSmall);
    }
    if s.eye_distance.is_some_and(|d| d < cfg.min_eye_distance_px) {
        return Err(Rejection::EyesTooClose);
    }
    if let Some(p) = s.pose {
        if f64::from(p.yaw.abs()) > cfg.max_yaw_deg || f64::from(p.pitch.abs()) > cfg.max_pitch_deg
        {
            return Err(Rejection::Pose);
        }
        if f64::from(p.roll.abs()) > cfg.max_roll_deg {
            return Err(Rejection::Tilted);
        }
    }
    if s.brightness < cfg.min_brightness {
        return Err(Rejection::TooDark);
    }
    if s.brightness > cfg.max_brightness {
        return Err(Rejection::TooBright);
    }
    if s.contrast < cfg.min_contrast {
        return Err(Rejection::LowContrast);
    }
    if s.sharpness < cfg.min_sharpness {
        return Err(Rejection::Blurry);
    }
    Ok(())
}

/// The pose estimate's precision: a frame and its slightly softened copy
/// differ by 2-3 degrees of yaw, so the preference counts whole steps.
const POSE_STEP_DEG: f64 = 5.0;

/// The best shot prefers frontal faces: a face turned by the limit ranks as
/// a third less. Angles count in [`POSE_STEP_DEG`] steps (rounded), so the
/// estimate's noise does not outrank a real difference in sharpness.
fn frontal_factor(yaw: f32, pitch: f32, cfg: &QualityConfig) -> f64 {
    let step = |a: f32| (f64::from(a.abs()) / POSE_STEP_DEG).round() * POSE_STEP_DEG;
    let turned = (step(yaw) / cfg.max_yaw_deg.max(1.0))
        .max(step(pitch) / cfg.max_pitch_deg.max(1.0))
        .min(1.0);
    1.0 - turned / 3.0
}

/// 0-100: bigger, sharper, well exposed, contrasty faces rank higher.
fn overall_score(
    face_px: u32,
    brightness: f64,
    contrast: f64,
    sharpness: f64,
    cfg: &QualityConfig,
) -> f64 {
    let unit = |x: f64| x.clamp(0.0, 1.0);
    let size = unit(face_px as f64 / (2.0 * cfg.min_face_px.max(1) as f64));
    let sharp = unit(sharpness / (4.0 * cfg.min_sharpness.max(1.0)));
    let exposure = unit(1.0 - (brightness - 128.0).abs() / 128.0);
    let contr = unit(contrast / (3.0 * cfg.min_contrast.max(1.0)));
    100.0 * (0.3 * size + 0.35 * sharp + 0.2 * exposure + 0.15 * contr)
}

/// Mean and standard deviation of the pixels.
pub fn mean_and_stddev(img: &GrayImage) -> (f64, f64) {
    let n = img.as_raw().len().max(1) as f64;
    let (sum, sq) = img.as_raw().iter().fold((0f64, 0f64), |(s, q), &p| {
        let p = f64::from(p);
        (s + p, q + p * p)
    });
    let mean = sum / n;
    let var = (sq / n - mean * mean).max(0.0);
    (mean, var.sqrt())
}

/// Variance of the 4-neighbour Laplacian: low for blurred images.
pub fn laplacian_variance(img: &GrayImage) -> f64 {
    let (w, h) = img.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let px = |x: u32, y: u32| i32::from(img.get_pixel(x, y).0[0]);
    let mut sum = 0f64;
    let mut sq = 0f64;
    let mut n = 0f64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l =
                f64::from(px(x - 1, y) + px(x + 1, y) + px(x, y - 1) + px(x, y + 1) - 4 * px(x, y));
            sum += l;
            sq += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sq / n - mean * mean).max(0.0)
}

/// Mean absolute difference of two thumbnails (0-255).
pub fn thumb_difference(a: &GrayImage, b: &GrayImage) -> f64 {
    if a.dimensions() != b.dimensions() {
        return 255.0;
    }
    let n = a.as_raw().len().max(1) as f64;
    let total: u32 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u32::from(x.abs_diff(y)))
        .sum();
    total as f64 / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    fn face(x: i32, y: i32, w: u32, h: u32) -> FaceBox {
        FaceBox {
            x,
            y,
            width: w,
            height: h,
            score: 5.0,
            ..Default::default()
        }
    }

    /// The levelled crop in floats, as it was first written: the reference
    /// for the fixed-point one.
    fn levelled_in_floats(img: &RgbImage, rect: Rect, roll: f32) -> RgbImage {
        let (cx, cy) = (
            rect.x as f32 + rect.width as f32 / 2.0,
            rect.y as f32 + rect.height as f32 / 2.0,
        );
        let (sin, cos) = roll.to_radians().sin_cos();
        let (iw, ih) = (img.width() as i64, img.height() as i64);
        let px = |x: i64, y: i64| {
            img.get_pixel(x.clamp(0, iw - 1) as u32, y.clamp(0, ih - 1) as u32)
                .0
        };
        RgbImage::from_fn(rect.width, rect.height, |u, v| {
            let dx = u as f32 + 0.5 - rect.width as f32 / 2.0;
            let dy = v as f32 + 0.5 - rect.height as f32 / 2.0;
            let x = cx + dx * cos - dy * sin - 0.5;
            let y = cy + dx * sin + dy * cos - 0.5;
            let (x0, y0) = (x.floor(), y.floor());
            let (tx, ty) = (x - x0, y - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let (a, b, c, d) = (
                px(x0, y0),
                px(x0 + 1, y0),
                px(x0, y0 + 1),
                px(x0 + 1, y0 + 1),
            );
            image::Rgb(std::array::from_fn(|k| {
                let top = f32::from(a[k]) * (1.0 - tx) + f32::from(b[k]) * tx;
                let bottom = f32::from(c[k]) * (1.0 - tx) + f32::from(d[k]) * tx;
                (top * (1.0 - ty) + bottom * ty).round().clamp(0.0, 255.0) as u8
            }))
        })
    }

    #[test]
    fn the_levelled_crop_matches_its_float_reference_to_one_level() {
        let img = RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([
                ((x * 13 + y * 7) % 256) as u8,
                (((x / 9 + y / 5) % 2) * 200 + 20) as u8,
                ((x * y / 40) % 256) as u8,
            ])
        });
        // Inside, against the top-left corner, the whole frame: the turned
        // corners of the last two read beyond the frame's edge.
        let rects = [
            Rect {
                x: 100,
                y: 60,
                width: 120,
                height: 150,
            },
            Rect {
                x: 0,
                y: 0,
                width: 90,
                height: 110,
            },
            Rect {
                x: 0,
                y: 0,
                width: 320,
                height: 240,
            },
        ];
        for rect in rects {
            for roll in [-44.0f32, -12.5, 0.7, 20.0, 40.0] {
                let fast = crop_levelled(&img, rect, roll);
                let reference = levelled_in_floats(&img, rect, roll);
                assert_eq!(fast.dimensions(), reference.dimensions());
                let worst = fast
                    .as_raw()
                    .iter()
                    .zip(reference.as_raw())
                    .map(|(a, b)| a.abs_diff(*b))
                    .max()
                    .unwrap_or(0);
                assert!(worst <= 1, "{rect:?} at {roll} degrees: off by {worst}");
            }
        }
    }

    fn checker(w: u32, h: u32, cell: u32, lo: u8, hi: u8) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            Luma([if (x / cell + y / cell) % 2 == 0 {
                lo
            } else {
                hi
            }])
        })
    }

    #[test]
    fn largest_face_wins() {
        let faces = [
            face(0, 0, 50, 50),
            face(100, 100, 90, 90),
            face(10, 10, 95, 80),
        ];
        assert_eq!(largest_face(&faces), Some(faces[1]));
        assert_eq!(largest_face(&[]), None);
    }

    #[test]
    fn crop_is_grown_by_margin_and_clamped() {
        let r = crop_rect(&face(100, 100, 100, 100), 0.5, 1000, 1000).expect("inside");
        assert_eq!(
            r,
            Rect {
                x: 50,
                y: 50,
                width: 200,
                height: 200
            }
        );
        let r = crop_rect(&face(10, 20, 100, 100), 0.5, 150, 140).expect("clamped");
        assert_eq!(
            r,
            Rect {
                x: 0,
                y: 0,
                width: 150,
                height: 140
            }
        );
        assert_eq!(crop_rect(&face(-500, -500, 10, 10), 0.1, 100, 100), None);
    }

    #[test]
    fn rejection_reasons_follow_the_thresholds() {
        let cfg = QualityConfig::default();
        let good = FaceScores {
            face_px: 120,
            brightness: 120.0,
            contrast: 40.0,
            sharpness: 200.0,
            faces_seen: 1,
            detector_score: 5.0,
            overall: 0.0,
            eye_distance: Some(45.0),
            pose: Some(Pose {
                yaw: 3.0,
                pitch: -4.0,
                roll: 10.0,
            }),
        };
        assert_eq!(decide(&good, &cfg), Ok(()));
        let posed = |yaw, pitch, roll| {
            let mut s = good;
            s.pose = Some(Pose { yaw, pitch, roll });
            decide(&s, &cfg)
        };
        assert_eq!(posed(31.0, 0.0, 0.0), Err(Rejection::Pose));
        assert_eq!(posed(-31.0, 0.0, 0.0), Err(Rejection::Pose));
        assert_eq!(posed(0.0, -31.0, 0.0), Err(Rejection::Pose));
        assert_eq!(posed(0.0, 0.0, -44.0), Ok(()), "levelled in the crop");
        assert_eq!(posed(0.0, 0.0, 46.0), Err(Rejection::Tilted));
        let mut close = good;
        close.eye_distance = Some(23.0);
        assert_eq!(decide(&close, &cfg), Err(Rejection::EyesTooClose));
        close.eye_distance = None;
        close.pose = None;
        assert_eq!(
            decide(&close, &cfg),
            Ok(()),
            "no landmarks: nothing to judge them by"
        );
        let with = |f: &dyn Fn(&mut FaceScores)| {
            let mut s = good;
            f(&mut s);
            decide(&s, &cfg)
        };
        assert_eq!(with(&|s| s.face_px = 60), Err(Rejection::FaceTooSmall));
        assert_eq!(with(&|s| s.brightness = 20.0), Err(Rejection::TooDark));
        assert_eq!(with(&|s| s.brightness = 240.0), Err(Rejection::TooBright));
        assert_eq!(with(&|s| s.contrast = 5.0), Err(Rejection::LowContrast));
        assert_eq!(with(&|s| s.sharpness = 3.0), Err(Rejection::Blurry));
        let strict = QualityConfig {
            max_faces: 1,
            ..QualityConfig::default()
        };
        let mut two = good;
        two.faces_seen = 2;
        assert_eq!(decide(&two, &strict), Err(Rejection::TooManyFaces));
    }

    #[test]
    fn the_best_shot_prefers_frontal_faces_at_the_estimates_precision() {
        let cfg = QualityConfig::default();
        let f = |yaw: f32, pitch: f32| frontal_factor(yaw, pitch, &cfg);
        // Two or three degrees of estimate noise are a tie...
        assert_eq!(f(17.1, 5.4), f(14.5, 3.3));
        assert_eq!(f(1.0, -2.0), 1.0);
        // ...a real turn is not, whichever way, and the worse angle counts.
        assert!(f(20.0, 0.0) < f(5.0, 0.0));
        assert_eq!(f(-20.0, 0.0), f(20.0, 0.0));
        assert_eq!(f(0.0, 20.0), f(20.0, 5.0));
        // A face turned by the limit (or beyond) ranks as a third less.
        assert!((f(30.0, 0.0) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(f(80.0, 0.0), f(30.0, 0.0));
    }

    #[test]
    fn no_face_is_a_rejection() {
        let a = assess(&GrayImage::new(100, 100), &[], &QualityConfig::default());
        assert_eq!(a.decision, Err(Rejection::NoFace));
        assert_eq!(a.faces_seen, 0);
    }

    #[test]
    fn sharp_beats_blurred() {
        let sharp = checker(128, 128, 4, 40, 200);
        let blurred = image::imageops::blur(&sharp, 3.0);
        assert!(laplacian_variance(&sharp) > 10.0 * laplacian_variance(&blurred));
        let (m, s) = mean_and_stddev(&sharp);
        assert!((m - 120.0).abs() < 1.0 && (s - 80.0).abs() < 1.0, "{m} {s}");
    }

    #[test]
    fn thumbnails_tell_frames_apart() {
        let a = checker(16, 16, 4, 0, 255);
        let b = checker(16, 16, 4, 255, 0);
        assert_eq!(thumb_difference(&a, &a), 0.0);
        assert_eq!(thumb_difference(&a, &b), 255.0);
    }

    #[test]
    fn rejection_names_are_stable() {
        assert_eq!(
            serde_json::to_string(&Rejection::FaceTooSmall)
                .ok()
                .as_deref(),
            Some("\"face_too_small\"")
        );
        assert_eq!(Rejection::NoFace.to_string(), "no_face");
    }
}
