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
}
