//! What was measured of a chosen face, kept with its enrollment for audit.

use serde::{Deserialize, Serialize};

/// Measurements of the chosen face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaceScores {
    /// Shorter side of the face box, in frame pixels.
    pub face_px: u32,
    /// Mean luma of the face (0-255).
    pub brightness: f64,
    /// Standard deviation of the face's luma.
    pub contrast: f64,
    /// Variance of the Laplacian of the normalised face.
    pub sharpness: f64,
    /// Faces detected in the frame.
    pub faces_seen: u32,
    /// Detector confidence of the chosen face.
    pub detector_score: f64,
    /// Combined score 0-100 used to rank frames of a burst.
    pub overall: f64,
    /// Between the eye centres, in frame pixels (absent: no landmark model,
    /// or an entry of an earlier release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eye_distance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pose: Option<Pose>,
}

/// A point in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub fn distance(self, o: Point) -> f32 {
        (self.x - o.x).hypot(self.y - o.y)
    }
}

/// The landmark model's points of one face, in frame pixels. Right and left
/// are the person's own: their right eye is on the image's left side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Landmarks {
    pub right_eye: Point,
    pub left_eye: Point,
    /// The tip of the nose.
    pub nose: Point,
    /// The centre of the mouth.
    pub mouth: Point,
    /// The ear tragions (where the ear meets the cheek).
    pub right_ear: Point,
    pub left_ear: Point,
}

/// Head pose, in degrees, from the landmarks. `roll` is the eye line's
/// angle (positive: the person's left eye, on the image's right, lower);
/// `yaw` positive when the face turns toward the image's right; `pitch`
/// positive when the chin goes down. Roll is exact; yaw and pitch are
/// estimates from a generic head (within about 10 degrees when frontal).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}
