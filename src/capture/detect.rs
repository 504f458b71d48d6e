//! Face detection behind a trait; the default is rustface (SeetaFace) with its
//! model embedded in the binary at build time.

use crate::config::DetectConfig;
use image::imageops::FilterType;
use image::GrayImage;
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// The SeetaFace frontal model from the rustface package (see build.rs).
static EMBEDDED_MODEL: &[u8] = include_bytes!(env!("ENROLLD_SEETA_MODEL_PATH"));

/// A face found in a frame, in frame pixels. `x`/`y` may be negative or the
/// box may extend past the frame: detectors report what they matched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct FaceBox {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    /// Detector confidence (unit depends on the detector).
    pub score: f64,
}

impl FaceBox {
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
    fn detect(&mut self, gray: &GrayImage) -> Vec<FaceBox>;
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

/// rustface's SeetaFace funnel-structured cascade detector.
pub struct SeetaDetector {
    inner: Box<dyn rustface::Detector>,
    min_face_px: u32,
    max_edge: u32,
    applied_min: u32,
}

impl SeetaDetector {
    /// Builds the detector from `cfg.model`, or the embedded model.
    pub fn new(cfg: &DetectConfig) -> Result<Self, ModelError> {
        let model = match &cfg.model {
            Some(path) => load_model_file(path)?,
            None => rustface::read_model(std::io::Cursor::new(EMBEDDED_MODEL))
                .map_err(|e| ModelError(format!("embedded model: {e}")))?,
        };
        let mut inner = rustface::create_detector_with_model(model);
        // All values were validated by Config::problems; clamp anyway since
        // rustface panics on out-of-range settings.
        inner.set_score_thresh(cfg.score_threshold.max(0.01));
        inner.set_pyramid_scale_factor(cfg.pyramid_scale.clamp(0.11, 0.98) as f32);
        inner.set_slide_window_step(cfg.window_step.max(1), cfg.window_step.max(1));
        let min = cfg.min_face_px.max(20);
        inner.set_min_face_size(min);
        Ok(Self {
            inner,
            min_face_px: min,
            max_edge: cfg.max_edge.max(160),
            applied_min: min,
        })
    }

    fn set_min(&mut self, min: u32) {
        if min != self.applied_min {
            self.inner.set_min_face_size(min);
            self.applied_min = min;
        }
    }
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
        if w < 20 || h < 20 {
            return Vec::new();
        }
        let long = w.max(h);
        // Large frames are searched at a reduced size; the minimum face size
        // is scaled with them so it still means pixels of the full frame.
        let (scaled, scale) = if long > self.max_edge {
            let s = self.max_edge as f32 / long as f32;
            let sw = ((w as f32 * s).round() as u32).max(1);
            let sh = ((h as f32 * s).round() as u32).max(1);
            (
                Some(image::imageops::resize(gray, sw, sh, FilterType::Triangle)),
                s,
            )
        } else {
            (None, 1.0)
        };
        let img = scaled.as_ref().unwrap_or(gray);
        let min = ((self.min_face_px as f32 * scale).round() as u32).max(20);
        if img.width() < min || img.height() < min {
            return Vec::new();
        }
        self.set_min(min);
        let data = rustface::ImageData::new(img.as_raw(), img.width(), img.height());
        self.inner
            .detect(&data)
            .into_iter()
            .map(|f| {
                let b = f.bbox();
                FaceBox {
                    x: (b.x() as f32 / scale).round() as i32,
                    y: (b.y() as f32 / scale).round() as i32,
                    width: (b.width() as f32 / scale).round() as u32,
                    height: (b.height() as f32 / scale).round() as u32,
                    score: f.score(),
                }
            })
            .collect()
    }
}

/// A detector that returns fixed boxes, for tests of the code around detection.
#[derive(Debug, Clone, Default)]
pub struct FixedDetector(pub Vec<FaceBox>);

impl FaceDetector for FixedDetector {
    fn detect(&mut self, _gray: &GrayImage) -> Vec<FaceBox> {
        self.0.clone()
    }
}
