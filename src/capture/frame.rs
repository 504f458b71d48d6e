//! Frames, pixel formats and bounded decoding of untrusted images.
//!
//! Everything that turns bytes from outside (a camera, a file, a socket) into
//! pixels goes through here, with limits on file size, dimensions and
//! allocation so that a hostile or broken input is an error, not an OOM.

use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::model::PixelFormat;
use std::fmt;
use std::io::Cursor;

/// One captured or loaded picture, in RGB.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: RgbImage,
    /// Position of the frame in its burst or source (0-based).
    pub index: u32,
    /// Where it came from, for messages (`/dev/video0`, a file name).
    pub origin: String,
}

/// Limits applied when decoding images from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded input accepted, in bytes.
    pub max_input_bytes: usize,
    /// Largest width or height accepted, in pixels.
    pub max_edge: u32,
    /// Largest number of pixels accepted.
    pub max_pixels: u64,
    /// Largest allocation the decoder may make, in bytes.
    pub max_alloc: u64,
    /// Largest number of pixels of a PNG, BMP or progressive JPEG: their
    /// decoders hold more than the pixels while decoding (a baseline JPEG,
    /// decoded row by row, may have `max_pixels`).
    pub max_lossless_pixels: u64,
    /// Largest number of pixels a frame is worked on at: a larger frame is
    /// averaged down by 2, 4 or 8 (the least that fits) as soon as it is
    /// decoded, which bounds the memory of everything after the decoder.
    pub working_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_input_bytes: 32 * 1024 * 1024,
            max_edge: 8192,
            max_pixels: 40_000_000,
            max_alloc: 256 * 1024 * 1024,
            max_lossless_pixels: 16_000_000,
            working_pixels: 12_000_000,
        }
    }
}

/// Why bytes could not become a picture.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than `max_input_bytes`.
    InputTooLarge { bytes: usize, max: usize },
    /// The declared dimensions are over the limits.
    DimensionsTooLarge { width: u32, height: u32 },
    /// A PNG, BMP or progressive JPEG over the lower limit for images that
    /// cannot be decoded row by row.
    OverBufferedLimit {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// Not an image format enrolld reads (JPEG, PNG, BMP).
    UnsupportedFormat,
    /// The image is corrupt or truncated.
    Corrupt(String),
    /// A raw frame's length does not match its format and size.
    BadRawFrame {
        format: PixelFormat,
        expected: usize,
        got: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InputTooLarge { bytes, max } => {
                write!(
                    f,
                    "image file is {bytes} bytes, more than the {max} allowed"
                )
            }
            DecodeError::DimensionsTooLarge { width, height } => {
                write!(
                    f,
                    "image declares {width}x{height} pixels, more than allowed"
                )
            }
            DecodeError::OverBufferedLimit {
                width,
                height,
                max_pixels,
            } => write!(
                f,
                "image is {width}x{height} pixels: PNG, BMP and progressive JPEG images may have \
                 at most {} megapixels (a baseline JPEG up to the full limit)",
                max_pixels / 1_000_000
            ),
            DecodeError::UnsupportedFormat => {
                write!(f, "not a supported image (JPEG, PNG or BMP expected)")
            }
            DecodeError::Corrupt(why) => write!(f, "corrupt or truncated image: {why}"),
            DecodeError::BadRawFrame {
                format,
                expected,
                got,
            } => write!(
                f,
                "{format} frame has {got} bytes, expected {expected} for its size"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes an encoded image (JPEG, PNG, BMP) from untrusted bytes.
pub fn decode_untrusted(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    if bytes.len() > limits.max_input_bytes {
        return Err(DecodeError::InputTooLarge {
            bytes: bytes.len(),
            max: limits.max_input_bytes,
        });
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnsupportedFormat)?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp
    ) {
        return Err(DecodeError::UnsupportedFormat);
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder pads a cut-off file with grey and reports success;
        // a truncated upload or capture must be an error instead.
        return Err(DecodeError::Corrupt(
            "JPEG has no end-of-image marker (truncated)".into(),
        ));
    }
    // Read the header first (no pixel buffer is allocated for it), so huge
    // declared sizes fail with their dimensions named, before any allocation.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| map_image_error(e, 0, 0))?;
    check_dimensions(width, height, limits)?;
    // Only a baseline JPEG decodes row by row (memory: its pixels); PNG, BMP
    // and progressive JPEG hold more than that while decoding, so they have
    // a lower limit.
    let streams = format == ImageFormat::Jpeg && !jpeg_is_progressive(bytes);
    if !streams && u64::from(width) * u64::from(height) > limits.max_lossless_pixels {
        return Err(DecodeError::OverBufferedLimit {
            width,
            height,
            max_pixels: limits.max_lossless_pixels,
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(limits));
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, width, height))?;
    // Phones store a portrait as landscape pixels plus an EXIF Orientation;
    // the detector needs the face upright, as the photo is shown.
    let orientation = image::ImageDecoder::orientation(&mut decoder)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| map_image_error(e, width, height))?;
    // Shrink to the working size before anything else is made (a grey,
    // alpha or 16-bit frame is converted to RGB after that, not before).
    let img = shrink_to_working_size(img, limits.working_pixels);
    let mut img = image::DynamicImage::ImageRgb8(img);
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// A frame over `working_pixels` is averaged down by 2, 4 or 8 (the least
/// that fits): a 40-megapixel photo is then worked on at 10 megapixels. The
/// detector works far below that size, and the crop sent is at most
/// `encode.max_edge` (4096) on its long side anyway. Box averaging
/// (`thumbnail`) needs no buffer but the result; a general resize here would
/// allocate several times the frame.
fn shrink_to_working_size(img: image::DynamicImage, working_pixels: u64) -> RgbImage {
    use image::GenericImageView;
    let (w, h) = img.dimensions();
    let fits = |f: u32| u64::from(w / f) * u64::from(h / f) <= working_pixels;
    if fits(1) {
        return img.into_rgb8();
    }
    let f = [2, 4, 8].into_iter().find(|&f| fits(f)).unwrap_or(8);
    let (sw, sh) = ((w / f).max(1), (h / f).max(1));
    match img {
        image::DynamicImage::ImageRgb8(rgb) => image::imageops::thumbnail(&rgb, sw, sh),
        other => {
            image::DynamicImage::ImageRgba8(image::imageops::thumbnail(&other, sw, sh)).into_rgb8()
        }
    }
}

/// True when the frame header (SOF) before the first scan says progressive
/// (SOF2, or the arithmetic-coded SOF6/SOF10/SOF14).
fn jpeg_is_progressive(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return false;
        }
        let marker = bytes[at + 1];
        match marker {
            0xFF => at += 1, // fill byte
            0xC2 | 0xC6 | 0xCA | 0xCE => return true,
            0xC0 | 0xC1 | 0xC3 | 0xC5 | 0xC7 | 0xC9 | 0xCB | 0xCD | 0xCF | 0xDA | 0xD9 => {
                return false
            }
            _ => {
                let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
                at += 2 + len;
            }
        }
    }
    false
}

/// glibc's malloc keeps freed memory for reuse, and raises the size it
/// serves from its heap (instead of a mapping of its own) up to 32 MiB as
/// large buffers come and go. A frame's buffers (tens of MiB) would then stay
/// resident after each enrollment. With a fixed threshold, every buffer of
/// 256 KiB or more is its own mapping, returned to the system when freed, so
/// the daemon goes back to its idle size between enrollments. The threshold
/// is 256 KiB, not more: sled allocates 40 histograms of 512 KiB at open that
/// it never writes (`no_metrics`), and as mappings of their own their zero
/// pages are never touched (20 MiB resident otherwise). Call once, at
/// start-up, before other threads exist.
pub fn return_large_buffers_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tuning parameter of the allocator, which
    // glibc allows at any time; nothing else in enrolld calls it.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 18);
    }
}

/// A complete JPEG ends with the EOI marker (FF D9), possibly followed by
/// zero padding as some cameras send. Inside entropy-coded data FF is always
/// stuffed, so FF D9 at the end cannot be image data.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

fn decoder_limits(limits: &DecodeLimits) -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_edge);
    l.max_image_height = Some(limits.max_edge);
    l.max_alloc = Some(limits.max_alloc);
    l
}

fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(format!("image is {width}x{height}")));
    }
    if width > limits.max_edge
        || height > limits.max_edge
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(DecodeError::DimensionsTooLarge { width, height });
    }
    Ok(())
}

fn map_image_error(e: image::ImageError, width: u32, height: u32) -> DecodeError {
    match e {
        image::ImageError::Limits(_) => DecodeError::DimensionsTooLarge { width, height },
        // The format itself was recognised (JPEG, PNG, BMP) before decoding,
        // so this is a variant or size the decoder refuses (on 32-bit
        // targets, sizes whose buffer would overflow usize): say why.
        image::ImageError::Unsupported(u) => {
            DecodeError::Corrupt(format!("the decoder cannot read it: {u}"))
        }
        other => DecodeError::Corrupt(other.to_string()),
    }
}

/// Converts one raw camera buffer to RGB.
///
/// Drivers may pad buffers, so longer input is accepted; shorter is an error.
pub fn raw_to_rgb(
    format: PixelFormat,
    width: u32,
    height: u32,
    data: &[u8],
    limits: &DecodeLimits,
) -> Result<RgbImage, DecodeError> {
    check_dimensions(width, height, limits)?;
    let Some(expected) = format.raw_len(width, height) else {
        let img = decode_untrusted(data, limits)?;
        if img.dimensions() != (width, height) {
            log::debug!(
                "MJPEG frame is {}x{}, camera reported {width}x{height}",
                img.width(),
                img.height()
            );
        }
        return Ok(img);
    };
    if data.len() < expected {
        return Err(DecodeError::BadRawFrame {
            format,
            expected,
            got: data.len(),
        });
    }
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0u8; w * h * 3];
    match format {
        // Decoded above: MJPEG has no raw length.
        PixelFormat::Mjpeg => {}
        PixelFormat::Grey => {
            for (dst, &y) in out.chunks_exact_mut(3).zip(&data[..w * h]) {
                dst.copy_from_slice(&[y, y, y]);
            }
        }
        PixelFormat::Rgb24 => out.copy_from_slice(&data[..w * h * 3]),
        PixelFormat::Bgr24 => {
            for (dst, src) in out.chunks_exact_mut(3).zip(data.chunks_exact(3)) {
                dst.copy_from_slice(&[src[2], src[1], src[0]]);
            }
        }
        PixelFormat::Yuyv => {
            // Each 4 bytes Y0 U Y1 V describe two pixels. Width may be odd in
            // theory; V4L2 rounds YUYV lines up to even, handle it per pixel.
            let line = w.div_ceil(2) * 4;
            for y in 0..h {
                let row = &data[y * line..];
                for x in 0..w {
                    let pair = &row[(x / 2) * 4..(x / 2) * 4 + 4];
                    let luma = if x % 2 == 0 { pair[0] } else { pair[2] };
                    let px = yuv_to_rgb(luma, pair[1], pair[3]);
                    out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&px);
                }
            }
        }
        PixelFormat::Nv12 => {
            let uv_plane = &data[w * h..];
            let uv_line = w.div_ceil(2) * 2;
            for y in 0..h {
                for x in 0..w {
                    let luma = data[y * w + x];
                    let uv = &uv_plane[(y / 2) * uv_line + (x / 2) * 2..];
                    let px = yuv_to_rgb(luma, uv[0], uv[1]);
                    out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&px);
                }
            }
        }
    }
    RgbImage::from_raw(width, height, out).ok_or(DecodeError::BadRawFrame {
        format,
        expected,
        got: data.len(),
    })
}

/// BT.601 limited-range YUV to RGB, in integer arithmetic.
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = i32::from(y) - 16;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| x.clamp(0, 255) as u8;
    [
        clamp((298 * c + 409 * e + 128) >> 8),
        clamp((298 * c - 100 * d - 208 * e + 128) >> 8),
        clamp((298 * c + 516 * d + 128) >> 8),
    ]
}

/// Converts RGB to YUYV (used by tests and the V4L2 loopback helpers).
pub fn rgb_to_yuyv(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = Vec::with_capacity(w.div_ceil(2) * 4 * h);
    let yuv = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0.map(i32::from);
        let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
        let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
        let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
        [y, u, v].map(|c| c.clamp(0, 255) as u8)
    };
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let a = yuv(img.get_pixel(x as u32, y as u32));
            let b = yuv(img.get_pixel(((x + 1).min(w - 1)) as u32, y as u32));
            let u = ((u16::from(a[1]) + u16::from(b[1])) / 2) as u8;
            let v = ((u16::from(a[2]) + u16::from(b[2])) / 2) as u8;
            out.extend_from_slice(&[a[0], u, b[0], v]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn encode(img: &RgbImage, fmt: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).expect("encode test image");
        buf.into_inner()
    }

    #[test]
    fn decodes_png_and_jpeg() {
        let img = RgbImage::from_pixel(40, 30, Rgb([10, 200, 30]));
        for fmt in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp] {
            let out =
                decode_untrusted(&encode(&img, fmt), &DecodeLimits::default()).expect("decodes");
            assert_eq!(out.dimensions(), (40, 30));
        }
    }

    #[test]
    fn jpegs_over_the_working_size_decode_scaled_and_lossless_ones_are_capped() {
        // Left half red, right half blue, so a wrong scale or stride shows.
        let img = RgbImage::from_fn(800, 600, |x, _| {
            if x < 400 {
                Rgb([220, 20, 20])
            } else {
                Rgb([20, 20, 220])
            }
        });
        let jpeg = encode(&img, ImageFormat::Jpeg);
        for (working, want) in [
            (480_000, (800, 600)),
            (120_000, (400, 300)),
            (100_000, (200, 150)),
            (10_000, (100, 75)),
            (100, (100, 75)),
        ] {
            let limits = DecodeLimits {
                working_pixels: working,
                ..DecodeLimits::default()
            };
            let out = decode_untrusted(&jpeg, &limits).expect("decodes");
            assert_eq!(out.dimensions(), want, "working size {working}");
            let (w, h) = out.dimensions();
            assert!(out.get_pixel(w / 8, h / 2)[0] > 180, "red stays left");
            assert!(out.get_pixel(w - w / 8, h / 2)[2] > 180, "blue stays right");
        }
        let mut grey = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .into_luma8()
            .write_to(&mut grey, ImageFormat::Jpeg)
            .expect("encode grey");
        let grey = grey.into_inner();
        let small = DecodeLimits {
            working_pixels: 120_000,
            ..DecodeLimits::default()
        };
        let out = decode_untrusted(&grey, &small).expect("decodes grey");
        assert_eq!(out.dimensions(), (400, 300));
        let png = encode(&RgbImage::new(800, 600), ImageFormat::Png);
        let capped = DecodeLimits {
            max_lossless_pixels: 479_999,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode_untrusted(&png, &capped),
            Err(DecodeError::OverBufferedLimit {
                width: 800,
                height: 600,
                max_pixels: 479_999
            })
        );
        // A baseline JPEG of the same size streams, so it is not capped.
        assert!(decode_untrusted(&jpeg, &capped).is_ok());
        let truncated = &jpeg[..jpeg.len() / 2];
        assert!(matches!(
            decode_untrusted(truncated, &small),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn progressive_jpegs_are_told_from_baseline_ones() {
        // SOI, an APP0 of 4 bytes, then the frame header.
        let header = |sof: u8| {
            [
                0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46, 0xFF, sof, 0x00, 0x11,
            ]
        };
        assert!(jpeg_is_progressive(&header(0xC2)));
        assert!(!jpeg_is_progressive(&header(0xC0)));
        assert!(!jpeg_is_progressive(&header(0xC1)));
        let baseline = encode(&RgbImage::new(16, 16), ImageFormat::Jpeg);
        assert!(!jpeg_is_progressive(&baseline));
        assert!(!jpeg_is_progressive(&[0xFF, 0xD8, 0xFF]));
    }

    #[test]
    fn rejects_non_images_and_truncation() {
        let limits = DecodeLimits::default();
        assert_eq!(
            decode_untrusted(b"hello, not an image", &limits),
            Err(DecodeError::UnsupportedFormat)
        );
        let png = encode(
            &RgbImage::from_pixel(64, 64, Rgb([1, 2, 3])),
            ImageFormat::Png,
        );
        let err = decode_untrusted(&png[..png.len() / 2], &limits).expect_err("truncated");
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn refuses_huge_declared_dimensions_before_allocating() {
        // A BMP header declaring 60000 x 60000 pixels, with no pixel data.
        let mut bmp = Vec::new();
        bmp.extend_from_slice(b"BM");
        bmp.extend_from_slice(&(54u32).to_le_bytes());
        bmp.extend_from_slice(&[0; 4]);
        bmp.extend_from_slice(&(54u32).to_le_bytes());
        bmp.extend_from_slice(&(40u32).to_le_bytes());
        bmp.extend_from_slice(&(60_000i32).to_le_bytes());
        bmp.extend_from_slice(&(60_000i32).to_le_bytes());
        bmp.extend_from_slice(&(1u16).to_le_bytes());
        bmp.extend_from_slice(&(24u16).to_le_bytes());
        bmp.extend_from_slice(&[0; 24]);
        let err = decode_untrusted(&bmp, &DecodeLimits::default()).expect_err("too large");
        // 64-bit targets reach our own dimension check; on 32-bit ones the
        // BMP decoder already refuses a buffer that would overflow usize.
        // Either way it is refused before any allocation, and it is never
        // called "not a supported image" (regression: armv7).
        match &err {
            DecodeError::DimensionsTooLarge { width, height } => {
                assert_eq!((*width, *height), (60_000, 60_000))
            }
            DecodeError::Corrupt(why) => assert!(why.contains("decoder"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_jpeg_is_corrupt_but_padding_is_fine() {
        let img = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 4, y as u8 * 5, 90]));
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let limits = DecodeLimits::default();
        let err = decode_untrusted(&jpeg[..jpeg.len() - 40], &limits).expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 16]);
        assert!(decode_untrusted(&padded, &limits).is_ok());
    }

    #[test]
    fn input_size_is_capped() {
        let limits = DecodeLimits {
            max_input_bytes: 10,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_untrusted(&[0u8; 11], &limits),
            Err(DecodeError::InputTooLarge { bytes: 11, max: 10 })
        ));
    }

    #[test]
    fn yuyv_round_trip_is_close() {
        let mut img = RgbImage::new(8, 4);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = Rgb([(x * 30) as u8, (y * 60) as u8, 128]);
        }
        let yuyv = rgb_to_yuyv(&img);
        let back =
            raw_to_rgb(PixelFormat::Yuyv, 8, 4, &yuyv, &DecodeLimits::default()).expect("converts");
        // Chroma is shared by pixel pairs, so compare the luma-ish sum loosely.
        for (a, b) in img.pixels().zip(back.pixels()) {
            let sa: i32 = a.0.iter().map(|&c| i32::from(c)).sum();
            let sb: i32 = b.0.iter().map(|&c| i32::from(c)).sum();
            assert!((sa - sb).abs() < 60, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn short_raw_frames_are_errors() {
        let err = raw_to_rgb(
            PixelFormat::Yuyv,
            640,
            480,
            &[0; 100],
            &DecodeLimits::default(),
        )
        .expect_err("short");
        assert_eq!(
            err,
            DecodeError::BadRawFrame {
                format: PixelFormat::Yuyv,
                expected: 640 * 480 * 2,
                got: 100
            }
        );
    }

    #[test]
    fn fourcc_names() {
        assert_eq!(PixelFormat::from_fourcc("mjpg"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::from_fourcc("YUYV"), Some(PixelFormat::Yuyv));
        assert_eq!(PixelFormat::from_fourcc("H264"), None);
    }
}
