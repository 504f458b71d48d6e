//! Frame sources: where enrollment pictures come from.
//!
//! A source is opened for one enrollment and dropped afterwards, so the camera
//! is free between enrollments and a file source starts from its first image.

mod file;
mod v4l2;

pub use file::FileSource;
pub use v4l2::V4l2Source;

use crate::capture::frame::{DecodeError, DecodeLimits, Frame};
use crate::config::{CameraConfig, SourceSpec};
use crate::model::ErrorCode;
use std::fmt;
use std::path::PathBuf;

/// Something that delivers frames.
pub trait FrameSource: Send {
    /// A short description for messages (`/dev/video0 1280x720 MJPG`).
    fn describe(&self) -> String;
    /// The next frame; `Ok(None)` when a finite source has no more.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// Whether a burst may read the next frame while it works on this one:
    /// true for a source whose frames have a size known in advance (a
    /// camera's negotiated format), so that one more frame in memory is a
    /// bounded cost. A photo may be of any size up to the decoding limits.
    fn reads_ahead(&self) -> bool {
        false
    }
}

/// Why a source could not deliver a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceError {
    /// The device or file does not exist.
    NotFound { what: String },
    /// No permission to open it.
    PermissionDenied { what: String },
    /// Another process is using the camera.
    Busy { what: String },
    /// The device exists but could not be set up (formats, streaming).
    Open { what: String, why: String },
    /// No frame arrived within the deadline.
    Timeout { what: String, ms: u64 },
    /// The device stopped delivering frames or a read failed.
    Read { what: String, why: String },
    /// A frame or image file could not be decoded.
    Decode { what: String, why: DecodeError },
    /// A file source holds no images.
    Empty { what: String },
    /// A photo (`file:`) that is not there.
    FileNotFound { what: String },
    /// A `file:` source that is not a regular file or directory (a FIFO or
    /// a device would block reading with no deadline).
    NotAFile { what: String },
    /// The enrollment was cancelled (`cancel` request, shutdown).
    Cancelled,
}

impl SourceError {
    /// A stable machine-readable name.
    pub fn code(&self) -> ErrorCode {
        match self {
            SourceError::NotFound { .. } => ErrorCode::CameraNotFound,
            SourceError::PermissionDenied { .. } => ErrorCode::CameraPermissionDenied,
            SourceError::Busy { .. } => ErrorCode::CameraBusy,
            SourceError::Open { .. } => ErrorCode::CameraOpenFailed,
            SourceError::Timeout { .. } => ErrorCode::CameraTimeout,
            SourceError::Read { .. } => ErrorCode::CameraReadFailed,
            SourceError::Decode { .. } => ErrorCode::BadImage,
            SourceError::Empty { .. } => ErrorCode::NoImages,
            SourceError::FileNotFound { .. } => ErrorCode::FileNotFound,
            SourceError::NotAFile { .. } => ErrorCode::NotAFile,
            SourceError::Cancelled => ErrorCode::Cancelled,
        }
    }
}

impl From<SourceError> for crate::model::Failure {
    fn from(e: SourceError) -> Self {
        crate::model::Failure::new(e.code(), e.to_string())
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NotFound { what } => {
                write!(f, "{what}: not found (is the camera plugged in?)")
            }
            SourceError::PermissionDenied { what } => {
                write!(
                    f,
                    "{what}: permission denied (is the user in the video group?)"
                )
            }
            SourceError::Busy { what } => {
                write!(f, "{what}: busy, another program is using the camera")
            }
            SourceError::Open { what, why } => write!(f, "{what}: cannot set up the camera: {why}"),
            SourceError::Timeout { what, ms } => write!(f, "{what}: no frame within {ms} ms"),
            SourceError::Read { what, why } => write!(f, "{what}: reading a frame failed: {why}"),
            SourceError::Decode { what, why } => write!(f, "{what}: {why}"),
            SourceError::Empty { what } => {
                write!(f, "{what}: no images (jpg, jpeg, jfif, png, bmp) found")
            }
            SourceError::FileNotFound { what } => write!(f, "{what}: no such file or directory"),
            SourceError::NotAFile { what } => write!(
                f,
                "{what}: not a regular file or directory (FIFOs and devices are not read; \
                 use v4l2: for a camera)"
            ),
            SourceError::Cancelled => f.write_str("the enrollment was cancelled"),
        }
    }
}

impl std::error::Error for SourceError {}

/// Opens the source `spec` with the camera settings of `cfg`.
pub fn open(
    spec: &SourceSpec,
    cfg: &CameraConfig,
    limits: DecodeLimits,
) -> Result<Box<dyn FrameSource>, SourceError> {
    match spec {
        SourceSpec::File(path) => Ok(Box::new(FileSource::open(path, limits)?)),
        SourceSpec::Received(photo) => Ok(Box::new(FileSource::received(photo, limits))),
        SourceSpec::V4l2Path(path) => Ok(Mounted::wrap(
            V4l2Source::open(DeviceRef::Path(path.clone()), cfg, limits)?,
            cfg,
        )),
        SourceSpec::V4l2Index(n) => Ok(Mounted::wrap(
            V4l2Source::open(DeviceRef::Index(*n), cfg, limits)?,
            cfg,
        )),
    }
}

/// A camera as it is mounted: its frames turned by `camera.rotation`
/// (clockwise) and then mirrored if `camera.mirror`, so the detector sees
/// faces upright, as a person in front of the device stands.
pub struct Mounted<S> {
    inner: S,
    rotation: u32,
    mirror: bool,
}

impl<S: FrameSource + 'static> Mounted<S> {
    /// `inner` as mounted per `cfg`; unchanged when it is mounted upright.
    pub fn wrap(inner: S, cfg: &CameraConfig) -> Box<dyn FrameSource> {
        if cfg.rotation == 0 && !cfg.mirror {
            return Box::new(inner);
        }
        Box::new(Mounted {
            inner,
            rotation: cfg.rotation,
            mirror: cfg.mirror,
        })
    }
}

impl<S: FrameSource> FrameSource for Mounted<S> {
    fn describe(&self) -> String {
        let mut d = self.inner.describe();
        if self.rotation != 0 {
            d.push_str(&format!(", turned {}°", self.rotation));
        }
        if self.mirror {
            d.push_str(", mirrored");
        }
        d
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(mut frame) = self.inner.next_frame()? else {
            return Ok(None);
        };
        use image::imageops;
        frame.image = match self.rotation {
            90 => imageops::rotate90(&frame.image),
            180 => imageops::rotate180(&frame.image),
            270 => imageops::rotate270(&frame.image),
            _ => frame.image,
        };
        if self.mirror {
            imageops::flip_horizontal_in_place(&mut frame.image);
        }
        Ok(Some(frame))
    }

    fn reads_ahead(&self) -> bool {
        self.inner.reads_ahead()
    }
}

/// How a V4L2 device was named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    Path(PathBuf),
    Index(u32),
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRef::Path(p) => write!(f, "{}", p.display()),
            DeviceRef::Index(n) => write!(f, "/dev/video{n}"),
        }
    }
}

/// Frames from memory, for tests of the code that consumes frames.
#[derive(Debug, Default)]
pub struct MemorySource {
    pub frames: std::collections::VecDeque<Result<Frame, SourceError>>,
}

impl FrameSource for MemorySource {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        self.frames.pop_front().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::detect::{FaceDetector, SeetaDetector};
    use image::imageops;

    fn frame(image: image::RgbImage) -> MemorySource {
        let mut s = MemorySource::default();
        s.frames.push_back(Ok(Frame {
            image,
            index: 0,
            origin: "camera".into(),
        }));
        s
    }

    fn next(src: &mut dyn FrameSource) -> image::RgbImage {
        match src.next_frame() {
            Ok(Some(f)) => f.image,
            other => panic!("no frame: {other:?}"),
        }
    }

    /// A camera mounted a quarter turn anticlockwise (a portrait kiosk)
    /// delivers the group photo sideways; `rotation = 90` turns it back.
    #[test]
    fn a_sideways_camera_is_turned_upright_before_detection() {
        let photo = image::open(env!("ENROLLD_SAMPLE_PHOTO"))
            .expect("the sample photo")
            .into_rgb8();
        let sideways = imageops::rotate270(&photo);
        let mut det = SeetaDetector::new(&crate::config::DetectConfig {
            min_face_px: 30,
            ..Default::default()
        })
        .expect("detector");
        let mut faces = |img: &image::RgbImage| det.detect(&crate::capture::scale::grey(img)).len();
        let upright = faces(&photo);
        assert!(upright >= 5, "the group photo has faces: {upright}");
        let as_delivered = faces(&next(&mut frame(sideways.clone())));
        assert!(
            as_delivered * 2 < upright,
            "sideways, most faces are missed: {as_delivered} of {upright}"
        );
        let cfg = CameraConfig {
            rotation: 90,
            ..Default::default()
        };
        let mut mounted = Mounted::wrap(frame(sideways.clone()), &cfg);
        assert!(
            mounted.describe().ends_with(", turned 90°"),
            "{}",
            mounted.describe()
        );
        let turned = next(mounted.as_mut());
        assert!(turned == photo, "turned back exactly");
        assert_eq!(faces(&turned), upright);
        println!(
            "faces found: {upright} upright, {as_delivered} as a sideways camera delivers them"
        );

        let cfg = CameraConfig {
            rotation: 90,
            mirror: true,
            ..Default::default()
        };
        let mirrored = next(Mounted::wrap(frame(sideways), &cfg).as_mut());
        assert!(
            mirrored == imageops::flip_horizontal(&photo),
            "turned, then mirrored"
        );
        // Upright and not mirrored: the source is used as it is.
        let plain = Mounted::wrap(frame(photo.clone()), &CameraConfig::default());
        assert_eq!(plain.describe(), "memory");
    }
}
