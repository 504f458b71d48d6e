//! V4L2 cameras through nokhwa.
//!
//! nokhwa's frame read blocks with no timeout, so the camera lives on its own
//! named thread and every read is a request answered over a channel that the
//! caller waits on with a deadline. A device that hangs costs that thread, not
//! the daemon: the caller gets `Timeout` and the source is marked broken.

use super::{DeviceRef, FrameSource, SourceError};
use crate::capture::frame::{raw_to_rgb, DecodeLimits, Frame};
use crate::config::CameraConfig;
use crate::model::PixelFormat;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use nokhwa::Camera;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

/// Extra time allowed for opening and configuring a device.
const OPEN_GRACE: Duration = Duration::from_secs(5);

/// A camera format the driver offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Picks the offered format closest to what was asked: the wanted pixel
/// format first, then any other format enrolld decodes, by resolution
/// distance and then frame-rate distance.
pub fn choose_format(offered: &[Offered], wanted: Offered) -> Option<Offered> {
    offered.iter().copied().min_by_key(|o| {
        let other_format = u8::from(o.format != wanted.format);
        let res = (i64::from(o.width) * i64::from(o.height)
            - i64::from(wanted.width) * i64::from(wanted.height))
        .abs();
        let fps = (i64::from(o.fps) - i64::from(wanted.fps)).abs();
        (other_format, res, fps)
    })
}

fn to_pixel_format(f: FrameFormat) -> PixelFormat {
    match f {
        FrameFormat::MJPEG => PixelFormat::Mjpeg,
        FrameFormat::YUYV => PixelFormat::Yuyv,
        FrameFormat::NV12 => PixelFormat::Nv12,
        FrameFormat::GRAY => PixelFormat::Grey,
        FrameFormat::RAWRGB => PixelFormat::Rgb24,
        FrameFormat::RAWBGR => PixelFormat::Bgr24,
    }
}

fn to_frame_format(f: PixelFormat) -> FrameFormat {
    match f {
        PixelFormat::Mjpeg => FrameFormat::MJPEG,
        PixelFormat::Yuyv => FrameFormat::YUYV,
        PixelFormat::Nv12 => FrameFormat::NV12,
        PixelFormat::Grey => FrameFormat::GRAY,
        PixelFormat::Rgb24 => FrameFormat::RAWRGB,
        PixelFormat::Bgr24 => FrameFormat::RAWBGR,
    }
}

struct RawFrame {
    data: Vec<u8>,
    width: u32,
    height: u32,
    format: PixelFormat,
}

/// A V4L2 capture device.
pub struct V4l2Source {
    what: String,
    description: String,
    requests: Option<SyncSender<()>>,
    frames: Receiver<Result<RawFrame, SourceError>>,
    timeout: Duration,
    limits: DecodeLimits,
    next_index: u32,
    broken: Option<SourceError>,
}

impl V4l2Source {
    /// Opens the device, negotiates a format, starts streaming and discards
    /// `warmup_frames` frames.
    pub fn open(
        device: DeviceRef,
        cfg: &CameraConfig,
        limits: DecodeLimits,
    ) -> Result<Self, SourceError> {
        let what = device.to_string();
        let (path, index) = resolve_device(&device)?;
        check_access(&path, &what)?;
        let wanted = Offered {
            format: cfg.fourcc,
            width: cfg.width,
            height: cfg.height,
            fps: cfg.fps,
        };
        let timeout = Duration::from_millis(cfg.read_timeout_ms);
        let (req_tx, req_rx) = mpsc::sync_channel::<()>(1);
        let (frame_tx, frame_rx) = mpsc::sync_channel::<Result<RawFrame, SourceError>>(1);
        let (open_tx, open_rx) = mpsc::sync_channel::<Result<String, SourceError>>(1);
        let thread_what = what.clone();
        std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || {
                camera_thread(
                    index,
                    wanted,
                    timeout,
                    thread_what,
                    open_tx,
                    req_rx,
                    frame_tx,
                )
            })
            .map_err(|e| SourceError::Open {
                what: what.clone(),
                why: format!("cannot start the camera thread: {e}"),
            })?;
        let description = match open_rx.recv_timeout(timeout + OPEN_GRACE) {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(SourceError::Timeout {
                    what,
                    ms: (timeout + OPEN_GRACE).as_millis() as u64,
                })
            }
        };
        log::info!("camera {description}");
        let mut source = Self {
            what,
            description,
            requests: Some(req_tx),
            frames: frame_rx,
            timeout,
            limits,
            next_index: 0,
            broken: None,
        };
        for _ in 0..cfg.warmup_frames {
            source.read_raw()?;
        }
        Ok(source)
    }

    fn read_raw(&mut self) -> Result<RawFrame, SourceError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let sent = self.requests.as_ref().map(|r| r.try_send(()));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.fail(SourceError::Read {
                what: self.what.clone(),
                why: "camera thread has stopped".into(),
            }));
        }
        match self.frames.recv_timeout(self.timeout) {
            Ok(Ok(raw)) => Ok(raw),
            Ok(Err(e)) => Err(self.fail(e)),
            Err(RecvTimeoutError::Timeout) => Err(self.fail(SourceError::Timeout {
                what: self.what.clone(),
                ms: self.timeout.as_millis() as u64,
            })),
            Err(RecvTimeoutError::Disconnected) => Err(self.fail(SourceError::Read {
                what: self.what.clone(),
                why: "camera thread has stopped".into(),
            })),
        }
    }

    fn fail(&mut self, e: SourceError) -> SourceError {
        // After a timeout the thread may still be blocked in a read; never
        // queue a second request behind it.
        self.requests = None;
        self.broken = Some(e.clone());
        e
    }
}

impl FrameSource for V4l2Source {
    fn describe(&self) -> String {
        self.description.clone()
    }

    /// Frames of the negotiated size: the next is captured and decoded
    /// while the burst detects in this one.
    fn reads_ahead(&self) -> bool {
        true
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let raw = self.read_raw()?;
        let image = raw_to_rgb(raw.format, raw.width, raw.height, &raw.data, &self.limits)
            .map_err(|why| SourceError::Decode {
                what: self.what.clone(),
                why,
            })?;
        let index = self.next_index;
        self.next_index += 1;
        Ok(Some(Frame {
            image,
            index,
            origin: self.what.clone(),
        }))
    }
}

/// Finds the device node and its index (`N` of `/dev/videoN`, after symlinks).
fn resolve_device(device: &DeviceRef) -> Result<(PathBuf, u32), SourceError> {
    let what = device.to_string();
    let path = match device {
        DeviceRef::Path(p) => p.clone(),
        DeviceRef::Index(n) => PathBuf::from(format!("/dev/video{n}")),
    };
    let real =
        std::fs::canonicalize(&path).map_err(|_| SourceError::NotFound { what: what.clone() })?;
    let index = real
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("video"))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| SourceError::Open {
            what: what.clone(),
            why: format!("{} is not a /dev/videoN device node", real.display()),
        })?;
    Ok((real, index))
}

fn check_access(path: &Path, what: &str) -> Result<(), SourceError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(SourceError::PermissionDenied { what: what.into() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(SourceError::NotFound { what: what.into() })
        }
        Err(e) => Err(SourceError::Open {
            what: what.into(),
            why: e.to_string(),
        }),
    }
}

/// nokhwa reports errors as text; EBUSY is the one worth telling apart.
fn classify(what: &str, why: String) -> SourceError {
    if why.contains("os error 16") || why.to_ascii_lowercase().contains("busy") {
        SourceError::Busy { what: what.into() }
    } else {
        SourceError::Open {
            what: what.into(),
            why,
        }
    }
}

/// An open capture device: through nokhwa, or directly through the v4l
/// crate (which nokhwa's V4L2 backend is built on) for devices nokhwa 0.10
/// cannot open.
enum Capture {
    Nokhwa(Camera),
    Direct {
        stream: v4l::io::mmap::Stream<'static>,
        width: u32,
        height: u32,
        format: PixelFormat,
        // Keeps the device open as long as the stream.
        _device: v4l::Device,
    },
}

impl Capture {
    fn frame(&mut self) -> Result<RawFrame, String> {
        match self {
            Capture::Nokhwa(camera) => camera
                .frame()
                .map(|buf| RawFrame {
                    width: buf.resolution().width(),
                    height: buf.resolution().height(),
                    format: to_pixel_format(buf.source_frame_format()),
                    data: buf.buffer().to_vec(),
                })
                .map_err(|e| e.to_string()),
            Capture::Direct {
                stream,
                width,
                height,
                format,
                ..
            } => {
                use v4l::io::traits::CaptureStream;
                let (buf, meta) = stream.next().map_err(|e| e.to_string())?;
                let used = (meta.bytesused as usize).min(buf.len());
                Ok(RawFrame {
                    width: *width,
                    height: *height,
                    format: *format,
                    data: buf[..used].to_vec(),
                })
            }
        }
    }

    fn stop(&mut self) -> Result<(), String> {
        match self {
            Capture::Nokhwa(camera) => camera.stop_stream().map_err(|e| e.to_string()),
            Capture::Direct { stream, .. } => {
                use v4l::io::traits::Stream;
                stream.stop().map_err(|e| e.to_string())
            }
        }
    }
}

fn setup_camera(
    index: u32,
    wanted: Offered,
    what: &str,
    read_timeout: Duration,
) -> Result<(Capture, String), SourceError> {
    match setup_nokhwa(index, wanted, what) {
        // nokhwa 0.10 opens only devices that list frame sizes and rates.
        // HDMI capture devices (and vivid's HDMI input, the VM test's camera)
        // take their size from the signal and list none.
        Err(SourceError::Open { why, .. }) if why.contains("Fufill") => {
            log::info!(
                "{what}: the device lists no frame sizes (an HDMI capture device?); using its current size"
            );
            setup_direct(index, wanted, what, read_timeout)
        }
        other => other.map(|(camera, description)| (Capture::Nokhwa(camera), description)),
    }
}

/// Opens the device in its current size, in the wanted pixel format or the
/// first other one enrolld decodes, through the v4l crate.
fn setup_direct(
    index: u32,
    wanted: Offered,
    what: &str,
    read_timeout: Duration,
) -> Result<(Capture, String), SourceError> {
    use v4l::video::Capture as _;
    let io = |e: std::io::Error| classify(what, e.to_string());
    let device = v4l::Device::new(index as usize).map_err(io)?;
    let mut format = device.format().map_err(io)?;
    let candidates = [
        wanted.format,
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
        PixelFormat::Nv12,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Grey,
    ];
    let mut chosen = None;
    for candidate in candidates {
        let mut fourcc = [0u8; 4];
        fourcc.copy_from_slice(candidate.fourcc().as_bytes());
        format.fourcc = v4l::FourCC::new(&fourcc);
        let set = device.set_format(&format).map_err(io)?;
        if set.fourcc == format.fourcc {
            chosen = Some((candidate, set));
            break;
        }
    }
    let Some((pixel_format, set)) = chosen else {
        return Err(SourceError::Open {
            what: what.into(),
            why: "the device offers no pixel format enrolld can decode (MJPG, YUYV, NV12, GREY, RGB3, BGR3)".into(),
        });
    };
    let mut stream =
        v4l::io::mmap::Stream::with_buffers(&device, v4l::buffer::Type::VideoCapture, 4)
            .map_err(io)?;
    stream.set_timeout(read_timeout);
    let description = format!(
        "{what} {}x{} {pixel_format} (current size, direct V4L2)",
        set.width, set.height
    );
    Ok((
        Capture::Direct {
            stream,
            width: set.width,
            height: set.height,
            format: pixel_format,
            _device: device,
        },
        description,
    ))
}

fn setup_nokhwa(index: u32, wanted: Offered, what: &str) -> Result<(Camera, String), SourceError> {
    let any = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
    let mut camera =
        Camera::new(CameraIndex::Index(index), any).map_err(|e| classify(what, e.to_string()))?;
    let offered: Vec<Offered> = camera
        .compatible_camera_formats()
        .map_err(|e| classify(what, e.to_string()))?
        .into_iter()
        .map(|f| Offered {
            format: to_pixel_format(f.format()),
            width: f.resolution().width(),
            height: f.resolution().height(),
            fps: f.frame_rate(),
        })
        .collect();
    let chosen = choose_format(&offered, wanted).ok_or_else(|| SourceError::Open {
        what: what.into(),
        why: "the device offers no pixel format enrolld can decode (MJPG, YUYV, NV12, GREY, RGB3, BGR3)".into(),
    })?;
    if chosen.format != wanted.format {
        log::warn!(
            "{what}: {} not offered, using {}",
            wanted.format,
            chosen.format
        );
    }
    let exact = CameraFormat::new(
        Resolution::new(chosen.width, chosen.height),
        to_frame_format(chosen.format),
        chosen.fps,
    );
    camera
        .set_camera_requset(RequestedFormat::new::<RgbFormat>(
            RequestedFormatType::Exact(exact),
        ))
        .map_err(|e| classify(what, e.to_string()))?;
    camera
        .open_stream()
        .map_err(|e| classify(what, e.to_string()))?;
    let f = camera.camera_format();
    let description = format!(
        "{what} {}x{} {} {} fps",
        f.resolution().width(),
        f.resolution().height(),
        to_pixel_format(f.format()),
        f.frame_rate()
    );
    Ok((camera, description))
}

fn camera_thread(
    index: u32,
    wanted: Offered,
    read_timeout: Duration,
    what: String,
    opened: SyncSender<Result<String, SourceError>>,
    requests: Receiver<()>,
    frames: SyncSender<Result<RawFrame, SourceError>>,
) {
    let mut camera = match setup_camera(index, wanted, &what, read_timeout) {
        Ok((camera, description)) => {
            if opened.send(Ok(description)).is_err() {
                return;
            }
            camera
        }
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    // Ends when the source is dropped (the request channel closes).
    while requests.recv().is_ok() {
        let result = camera.frame().map_err(|why| SourceError::Read {
            what: what.clone(),
            why,
        });
        if frames.send(result).is_err() {
            break;
        }
    }
    if let Err(e) = camera.stop() {
        log::debug!("{what}: stopping the stream: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(format: PixelFormat, width: u32, height: u32, fps: u32) -> Offered {
        Offered {
            format,
            width,
            height,
            fps,
        }
    }

    #[test]
    fn prefers_the_wanted_format_then_resolution_then_rate() {
        let offered = [
            o(PixelFormat::Yuyv, 1280, 720, 10),
            o(PixelFormat::Mjpeg, 1920, 1080, 30),
            o(PixelFormat::Mjpeg, 1280, 720, 15),
            o(PixelFormat::Mjpeg, 1280, 720, 30),
        ];
        let want = o(PixelFormat::Mjpeg, 1280, 720, 30);
        assert_eq!(choose_format(&offered, want), Some(offered[3]));
        let want = o(PixelFormat::Yuyv, 1920, 1080, 30);
        assert_eq!(choose_format(&offered, want), Some(offered[0]));
        let want = o(PixelFormat::Nv12, 640, 480, 30);
        assert_eq!(choose_format(&offered, want).map(|f| f.width), Some(1280));
        assert_eq!(choose_format(&[], want), None);
    }

    #[test]
    fn missing_device_is_named_in_the_error() {
        let err = V4l2Source::open(
            DeviceRef::Path("/dev/video-enrolld-test-missing".into()),
            &CameraConfig::default(),
            DecodeLimits::default(),
        )
        .err()
        .expect("missing device");
        assert_eq!(err.code(), "camera_not_found");
        assert!(
            err.to_string().contains("/dev/video-enrolld-test-missing"),
            "{err}"
        );
    }

    #[test]
    fn a_non_video_node_is_refused() {
        let err = V4l2Source::open(
            DeviceRef::Path("/dev/null".into()),
            &CameraConfig::default(),
            DecodeLimits::default(),
        )
        .err()
        .expect("not a camera");
        assert_eq!(err.code(), "camera_open_failed");
        assert!(err.to_string().contains("/dev/null"), "{err}");
    }
}
