//! Encoding the chosen crop so the target API accepts it.
//!
//! The crop is scaled into the provider's edge limits (and `encode.max_edge`),
//! then the highest JPEG quality whose file fits the byte limit is found by
//! binary search. The result is decoded once to prove it is a valid image.

use crate::capture::frame::{decode_untrusted, DecodeLimits};
use crate::config::EncodeConfig;
use crate::model::ImageLimits;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An image ready to upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedImage {
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// JPEG quality chosen by the search.
    pub quality: u8,
    pub len: usize,
}

/// Why no acceptable encoding exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The crop cannot be scaled into the edge limits (extreme aspect ratio).
    Shape { width: u32, height: u32 },
    /// Even the lowest allowed quality and the smallest allowed size are too large.
    TooLarge { bytes: usize },
    /// The JPEG encoder failed, or its output did not decode.
    Codec(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Shape { width, height } => {
                write!(
                    f,
                    "a {width}x{height} crop cannot be scaled into the provider's size limits"
                )
            }
            EncodeError::TooLarge { bytes } => {
                write!(
                    f,
                    "the smallest encoding is still {bytes} bytes, over the provider's limit"
                )
            }
            EncodeError::Codec(why) => write!(f, "JPEG encoding failed: {why}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// The size the crop is scaled to: long edge within both caps, short edge
/// at least the provider's minimum.
pub fn target_size(
    width: u32,
    height: u32,
    limits: &ImageLimits,
    cfg: &EncodeConfig,
) -> Result<(u32, u32), EncodeError> {
    let shape = EncodeError::Shape { width, height };
    if width == 0 || height == 0 {
        return Err(shape);
    }
    let max_long = cfg.max_edge.min(limits.max_edge_jpeg).max(limits.min_edge);
    let (long, short) = (width.max(height) as f64, width.min(height) as f64);
    let mut scale = 1.0f64;
    if long > max_long as f64 {
        scale = max_long as f64 / long;
    }
    if short * scale < limits.min_edge as f64 {
        scale = limits.min_edge as f64 / short;
    }
    let w = (width as f64 * scale).round() as u32;
    let h = (height as f64 * scale).round() as u32;
    if w.max(h) > limits.max_edge_jpeg || w.min(h) < limits.min_edge {
        return Err(shape);
    }
    Ok((w, h))
}

fn jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(img.as_raw().len() / 8);
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .map_err(|e| EncodeError::Codec(e.to_string()))?;
    Ok(out)
}

/// Encodes `img` for a provider with the given limits.
pub fn encode_for(
    img: &RgbImage,
    limits: &ImageLimits,
    cfg: &EncodeConfig,
) -> Result<EncodedImage, EncodeError> {
    let (mut w, mut h) = target_size(img.width(), img.height(), limits, cfg)?;
    loop {
        let scaled;
        let src = if (w, h) == img.dimensions() {
            img
        } else {
            scaled = image::imageops::resize(img, w, h, FilterType::CatmullRom);
            &scaled
        };
        if let Some((quality, bytes)) = best_quality(src, limits, cfg.min_quality, cfg.max_quality)?
        {
            verify(&bytes, w, h)?;
            return Ok(EncodedImage {
                len: bytes.len(),
                bytes,
                width: w,
                height: h,
                quality,
            });
        }
        // Nothing fits at this size: shrink by a quarter while allowed.
        let (nw, nh) = (
            (w as f64 * 0.75).round() as u32,
            (h as f64 * 0.75).round() as u32,
        );
        if nw.min(nh) < limits.min_edge {
            let smallest = jpeg(src, cfg.min_quality)?.len();
            return Err(EncodeError::TooLarge { bytes: smallest });
        }
        (w, h) = (nw, nh);
    }
}

/// Highest quality in `lo..=hi` whose encoding fits, by binary search (file
/// size grows with quality). Tries `hi` first: the common case is one encode.
fn best_quality(
    img: &RgbImage,
    limits: &ImageLimits,
    lo: u8,
    hi: u8,
) -> Result<Option<(u8, Vec<u8>)>, EncodeError> {
    let top = jpeg(img, hi)?;
    if limits.fits_bytes(top.len()) {
        return Ok(Some((hi, top)));
    }
    let (mut lo, mut hi) = (lo, hi - 1);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let bytes = jpeg(img, mid)?;
        if limits.fits_bytes(bytes.len()) {
            best = Some((mid, bytes));
            lo = mid + 1;
        } else if mid == 0 {
            break;
        } else {
            hi = mid - 1;
        }
    }
    Ok(best)
}

fn verify(bytes: &[u8], w: u32, h: u32) -> Result<(), EncodeError> {
    let decoded = decode_untrusted(bytes, &DecodeLimits::default())
        .map_err(|e| EncodeError::Codec(format!("output does not decode: {e}")))?;
    if decoded.dimensions() != (w, h) {
        return Err(EncodeError::Codec(format!(
            "output decodes as {}x{}, expected {w}x{h}",
            decoded.width(),
            decoded.height()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Provider;
    use image::Rgb;

    fn noise(w: u32, h: u32) -> RgbImage {
        // Deterministic high-entropy pixels: the worst case for JPEG size.
        let mut s = 0x1234_5678u32;
        RgbImage::from_fn(w, h, |_, _| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            Rgb([s as u8, (s >> 8) as u8, (s >> 16) as u8])
        })
    }

    #[test]
    fn sizes_respect_provider_edges() {
        let cfg = EncodeConfig::default();
        let jd = Provider::Jd.limits();
        let tc = Provider::Tencent.limits();
        assert_eq!(target_size(300, 400, &jd, &cfg), Ok((300, 400)));
        assert_eq!(target_size(2048, 1024, &jd, &cfg), Ok((1024, 512)));
        // Tiny crops are scaled up to the minimum short edge.
        assert_eq!(target_size(40, 50, &jd, &cfg), Ok((48, 60)));
        assert_eq!(target_size(40, 50, &tc, &cfg), Ok((64, 80)));
        // A sliver cannot satisfy both edges.
        assert!(matches!(
            target_size(10, 5000, &tc, &cfg),
            Err(EncodeError::Shape { .. })
        ));
    }

    #[test]
    fn small_images_keep_the_top_quality() {
        let img = RgbImage::from_pixel(200, 240, Rgb([120, 110, 100]));
        let out =
            encode_for(&img, &Provider::Jd.limits(), &EncodeConfig::default()).expect("encodes");
        assert_eq!(out.quality, EncodeConfig::default().max_quality);
        assert_eq!((out.width, out.height), (200, 240));
        assert_eq!(out.len, out.bytes.len());
    }

    #[test]
    fn search_finds_the_highest_quality_that_fits() {
        let img = noise(400, 400);
        let q92 = jpeg(&img, 92).expect("jpeg").len();
        let q50 = jpeg(&img, 50).expect("jpeg").len();
        assert!(q50 < q92);
        // A limit between the two sizes forces a search.
        let limit = (q50 + q92) / 2;
        let limits = ImageLimits {
            max_bytes: limit,
            ..Provider::Jd.limits()
        };
        let out = encode_for(&img, &limits, &EncodeConfig::default()).expect("encodes");
        assert!(out.len <= limit);
        assert!(out.quality > 50 && out.quality < 92, "{}", out.quality);
        // One step up would not fit: it is the highest.
        assert!(jpeg(&img, out.quality + 1).expect("jpeg").len() > limit);
    }

    #[test]
    fn downscales_when_no_quality_fits() {
        let img = noise(800, 800);
        let limits = ImageLimits {
            max_bytes: 20_000,
            ..Provider::Jd.limits()
        };
        let out = encode_for(&img, &limits, &EncodeConfig::default()).expect("encodes");
        assert!(out.len <= 20_000);
        assert!(out.width < 800);
    }

    #[test]
    fn impossible_limits_are_an_error() {
        let img = noise(64, 64);
        let limits = ImageLimits {
            max_bytes: 100,
            ..Provider::Tencent.limits()
        };
        assert!(matches!(
            encode_for(&img, &limits, &EncodeConfig::default()),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
