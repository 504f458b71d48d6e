//! The pixel layouts a camera can deliver, as the configuration names them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Pixel layouts a camera can deliver (V4L2 fourcc names; `camera.fourcc`
/// is read and written as one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PixelFormat {
    /// Motion JPEG, one JPEG per frame (`MJPG`).
    Mjpeg,
    /// Packed YUV 4:2:2 (`YUYV`).
    Yuyv,
    /// Planar Y with interleaved UV, 4:2:0 (`NV12`).
    Nv12,
    /// 8-bit grey (`GREY`).
    Grey,
    /// Packed RGB 8:8:8 (`RGB3`).
    Rgb24,
    /// Packed BGR 8:8:8 (`BGR3`).
    Bgr24,
}

impl PixelFormat {
    /// Parses a V4L2 fourcc such as `MJPG` or `YUYV` (case-insensitive).
    pub fn from_fourcc(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "MJPG" | "MJPEG" => Some(Self::Mjpeg),
            "YUYV" | "YUY2" => Some(Self::Yuyv),
            "NV12" => Some(Self::Nv12),
            "GREY" | "GRAY" | "Y800" => Some(Self::Grey),
            "RGB3" => Some(Self::Rgb24),
            "BGR3" => Some(Self::Bgr24),
            _ => None,
        }
    }

    /// The fourcc names enrolld decodes, for messages.
    pub const NAMES: &'static str = "MJPG, YUYV, NV12, GREY, RGB3, BGR3";

    pub fn fourcc(self) -> &'static str {
        match self {
            Self::Mjpeg => "MJPG",
            Self::Yuyv => "YUYV",
            Self::Nv12 => "NV12",
            Self::Grey => "GREY",
            Self::Rgb24 => "RGB3",
            Self::Bgr24 => "BGR3",
        }
    }

    /// Bytes an uncompressed frame of this size occupies (`None` for MJPEG).
    pub fn raw_len(self, width: u32, height: u32) -> Option<usize> {
        let px = width as usize * height as usize;
        match self {
            Self::Mjpeg => None,
            Self::Yuyv => Some(px * 2),
            Self::Nv12 => Some(px + 2 * (width.div_ceil(2) as usize * height.div_ceil(2) as usize)),
            Self::Grey => Some(px),
            Self::Rgb24 | Self::Bgr24 => Some(px * 3),
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.fourcc())
    }
}

/// How serde reads it, which only the config file does: the message names
/// the key (toml adds the file's line and column).
impl TryFrom<String> for PixelFormat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::from_fourcc(&s)
            .ok_or_else(|| format!("camera.fourcc: {s:?} is not one of {}", Self::NAMES))
    }
}

impl From<PixelFormat> for String {
    fn from(f: PixelFormat) -> String {
        f.fourcc().to_string()
    }
}
