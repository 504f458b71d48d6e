//! The configuration file: one TOML file, every key documented here with its
//! default, validated at start. Unknown keys are an error.
//!
//! Secrets are never in this file: it names files that hold them. A relative
//! secret path is looked up in `$CREDENTIALS_DIRECTORY` (systemd's
//! `LoadCredential=`), so the unit can hand secrets over without the daemon's
//! user being able to read the originals.

use crate::model::PixelFormat;
use crate::model::Provider;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/enrolld/enrolld.toml";

/// The whole configuration. Field defaults are the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the outbox database and receipts. Default `/var/lib/enrolld`.
    pub state_dir: PathBuf,
    pub camera: CameraConfig,
    pub detect: DetectConfig,
    pub quality: QualityConfig,
    pub burst: BurstConfig,
    pub encode: EncodeConfig,
    pub queue: QueueConfig,
    pub upload: UploadConfig,
    pub jd: JdConfig,
    pub tencent: TencentConfig,
    pub tls: TlsConfig,
    pub control: ControlConfig,
    pub button: ButtonConfig,
    pub led: LedConfig,
    pub metrics: MetricsConfig,
    pub consent: ConsentConfig,
    pub ledger: LedgerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/enrolld"),
            camera: CameraConfig::default(),
            detect: DetectConfig::default(),
            quality: QualityConfig::default(),
            burst: BurstConfig::default(),
            encode: EncodeConfig::default(),
            queue: QueueConfig::default(),
            upload: UploadConfig::default(),
            jd: JdConfig::default(),
            tencent: TencentConfig::default(),
            tls: TlsConfig::default(),
            control: ControlConfig::default(),
            button: ButtonConfig::default(),
            led: LedConfig::default(),
            metrics: MetricsConfig::default(),
            consent: ConsentConfig::default(),
            ledger: LedgerConfig::default(),
        }
    }
}

/// `[camera]`: where frames come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// `v4l2:/dev/videoN`, `v4l2:N`, or `file:PATH` (one image, or a directory
    /// of images played as successive frames). Default `v4l2:/dev/video0`.
    pub source: SourceSpec,
    /// Requested width in pixels; the closest the camera offers is used. Default 1280.
    pub width: u32,
    /// Requested height in pixels. Default 720.
    pub height: u32,
    /// Requested pixel format: `MJPG`, `YUYV`, `NV12`, `GREY`, `RGB3`, `BGR3`. Default `MJPG`.
    pub fourcc: PixelFormat,
    /// Requested frame rate (the closest offered is used). Default 30.
    pub fps: u32,
    /// Frames read and discarded after opening, so auto-exposure settles. Default 5.
    pub warmup_frames: u32,
    /// Deadline for one frame, in milliseconds. Default 2000.
    pub read_timeout_ms: u64,
    /// How far the camera's picture is turned clockwise before detection, for
    /// a camera mounted sideways or upside down: 0, 90, 180 or 270. Applies to
    /// `v4l2:` cameras (a photo is taken as its EXIF orientation shows it).
    /// Default 0.
    pub rotation: u32,
    /// Mirror the camera's picture left to right (after `rotation`), for a
    /// camera behind a mirror or a sensor read out flipped. Default false.
    pub mirror: bool,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            source: SourceSpec::V4l2Path("/dev/video0".into()),
            width: 1280,
            height: 720,
            fourcc: PixelFormat::Mjpeg,
            fps: 30,
            warmup_frames: 5,
            read_timeout_ms: 2000,
            rotation: 0,
            mirror: false,
        }
    }
}

/// `[detect]`: the face detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// A SeetaFace model file to use instead of the embedded one. Default: embedded.
    pub model: Option<PathBuf>,
    /// Smallest face searched for, in pixels of the full frame (>= 20). The
    /// frame is searched scaled so that this size spans the detector's
    /// 40 px window: a larger minimum is faster, a smaller one slower.
    /// Default 80.
    pub min_face_px: u32,
    /// Detector score threshold; higher means fewer false faces. Default 2.0.
    pub score_threshold: f64,
    /// Image pyramid scale factor, in (0.1, 0.99); lower is faster but may
    /// miss faces between scales. Default 0.8.
    pub pyramid_scale: f64,
    /// Sliding window step in pixels. Default 4.
    ///
    /// Speed against recall: `cargo bench --bench detect` measures both on
    /// labelled faces for several densities (0.8/4 takes about 1.6 times as
    /// long as 0.7/5). Following frames of a burst are searched only around
    /// the face, so a denser search costs the first frame alone.
    pub window_step: u32,
    /// The longest edge of the image the detector searches: a frame that
    /// scaled to `min_face_px` would be larger is searched smaller (and its
    /// smallest faces missed). Bounds detection time and memory. Default 2048.
    pub max_edge: u32,
    /// The landmark model's confidence (0.05-0.99) a detected face needs:
    /// a box where it finds no face this sure is not a face. Default 0.5
    /// (MediaPipe's own default).
    pub landmark_min_score: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            model: None,
            min_face_px: 80,
            score_threshold: 2.0,
            pyramid_scale: 0.8,
            window_step: 4,
            max_edge: 2048,
            landmark_min_score: 0.5,
        }
    }
}

/// `[quality]`: when a face is good enough to enroll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Smallest accepted face (the shorter side of its box), in pixels. Default 80.
    pub min_face_px: u32,
    /// Margin added around the face box on each side, as a fraction of its size. Default 0.4.
    pub margin: f64,
    /// Mean face luma below this is `too_dark` (0-255). Default 50.
    pub min_brightness: f64,
    /// Mean face luma above this is `too_bright` (0-255). Default 210.
    pub max_brightness: f64,
    /// Face luma standard deviation below this is `low_contrast`. Default 18.
    pub min_contrast: f64,
    /// Variance of the Laplacian of the face below this is `blurry`. Default 40.
    pub min_sharpness: f64,
    /// More faces than this in the frame is `too_many_faces`; 0 = any number. Default 0.
    pub max_faces: u32,
    /// Eye distance (between the eye centres, in frame pixels) below this is
    /// `eyes_too_close`. Default 24 (Tencent's smallest face, 34 px, has
    /// about 13; ISO/IEC 19794-5 full-frontal portraits want 90).
    pub min_eye_distance_px: f64,
    /// Yaw (turned left or right) or pitch (nodding) beyond this many
    /// degrees is `pose`. Default 30 each.
    pub max_yaw_deg: f64,
    pub max_pitch_deg: f64,
    /// Roll (head tilted to a shoulder) beyond this many degrees is `tilted`;
    /// up to it the crop is turned so the eyes are level. Default 45.
    pub max_roll_deg: f64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            min_face_px: 80,
            margin: 0.4,
            min_brightness: 50.0,
            max_brightness: 210.0,
            min_contrast: 18.0,
            min_sharpness: 40.0,
            max_faces: 0,
            min_eye_distance_px: 24.0,
            max_yaw_deg: 30.0,
            max_pitch_deg: 30.0,
            max_roll_deg: 45.0,
        }
    }
}

/// `[burst]`: how many frames one enrollment looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BurstConfig {
    /// Frames captured and scored per enrollment (1-100). Default 8.
    pub frames: u32,
    /// Time budget for the whole burst, in milliseconds (100-120000); 0 is
    /// none: every frame is judged however slow the device. Default 4000.
    pub time_budget_ms: u64,
    /// Best distinct frames kept (1-4; more than 1 only helps Tencent). Default 1.
    pub keep: u32,
    /// Mean absolute difference (0-255) two face thumbnails need to count as distinct. Default 6.
    pub distinct_min_diff: f64,
}

impl Default for BurstConfig {
    fn default() -> Self {
        Self {
            frames: 8,
            time_budget_ms: 4000,
            keep: 1,
            distinct_min_diff: 6.0,
        }
    }
}

/// `[encode]`: the image sent to the cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncodeConfig {
    /// Longest edge of the stored crop, in pixels (also capped by the provider). Default 1024.
    pub max_edge: u32,
    /// Lowest JPEG quality the search may choose (1-100). Default 40.
    pub min_quality: u8,
    /// Highest JPEG quality the search may choose (1-100). Default 92.
    pub max_quality: u8,
}

impl Default for EncodeConfig {
    fn default() -> Self {
        Self {
            max_edge: 1024,
            min_quality: 40,
            max_quality: 92,
        }
    }
}

/// `[queue]`: the on-device outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most enrollments held (pending, in flight and dead). Default 1000.
    pub max_entries: u64,
    /// Most image bytes held. Default 268435456 (256 MiB).
    pub max_bytes: u64,
    /// File holding the device key that seals queued images (64 hex digits,
    /// from `enrolld keygen`). Default `queue-key` (in `$CREDENTIALS_DIRECTORY`).
    pub key_file: PathBuf,
    /// Days a dead entry (and its images) is kept before it is deleted;
    /// 0 keeps it until purged. Default 30.
    pub dead_retention_days: u32,
    /// Free space kept on the state filesystem for uploads and restarts;
    /// enrollments that would use it are refused (`storage_full`).
    /// Default 4194304 (4 MiB).
    pub reserve_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_bytes: 256 * 1024 * 1024,
            key_file: PathBuf::from("queue-key"),
            dead_retention_days: 30,
            reserve_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[upload]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// `"jd"` or `"tencent"`. Default `"jd"`.
    pub provider: Provider,
    /// Deadline for DNS, TCP and TLS, in milliseconds. Default 10000.
    pub connect_timeout_ms: u64,
    /// Deadline for sending a request, in milliseconds. Default 30000.
    pub send_timeout_ms: u64,
    /// Deadline for receiving the answer, in milliseconds. Default 30000.
    pub recv_timeout_ms: u64,
    /// Largest answer body read, in bytes. Default 1048576.
    pub max_answer_bytes: u64,
    /// Delay after the first failed attempt, doubled after each (with ±20%
    /// jitter), in milliseconds. Default 2000.
    pub retry_base_ms: u64,
    /// Longest delay between attempts, in milliseconds. Default 900000 (15 min).
    pub retry_max_ms: u64,
    /// Uploads paused by an operator problem (credentials, billing, the
    /// clock) are checked again on their own, at most this long after the
    /// pause, in milliseconds. Default 300000 (5 min).
    pub pause_recheck_min_ms: u64,
    /// Later checks back off (doubling, jittered down by up to half) to at
    /// most this, in milliseconds. Default 3600000 (1 hour).
    pub pause_recheck_max_ms: u64,
    /// Days a receipt of an uploaded enrollment is kept. Default 30.
    pub receipt_retention_days: u32,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            provider: Provider::Jd,
            connect_timeout_ms: 10_000,
            send_timeout_ms: 30_000,
            recv_timeout_ms: 30_000,
            max_answer_bytes: 1024 * 1024,
            retry_base_ms: 2_000,
            retry_max_ms: 900_000,
            pause_recheck_min_ms: 300_000,
            pause_recheck_max_ms: 3_600_000,
            receipt_retention_days: 30,
        }
    }
}

/// `[jd]`: JD NeuHub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JdConfig {
    /// Base URL. Default `https://aiapi.jd.com`.
    pub endpoint: String,
    /// The appkey from JD's console. Default empty (uploads cannot start).
    pub appkey: String,
    /// File holding the secretKey. Default `jd-secret-key` (in `$CREDENTIALS_DIRECTORY`).
    pub secret_key_file: PathBuf,
    /// Face group id; wins over `group_name`. Default empty.
    pub group_id: String,
    /// Face group name. Default empty.
    pub group_name: String,
    /// Requests per second at most (the public beta allows about 5). Default 4.
    pub qps: f64,
}

impl Default for JdConfig {
    fn default() -> Self {
        Self {
            endpoint: "https://aiapi.jd.com".into(),
            appkey: String::new(),
            secret_key_file: PathBuf::from("jd-secret-key"),
            group_id: String::new(),
            group_name: String::new(),
            qps: 4.0,
        }
    }
}

/// `[tencent]`: Tencent Cloud IAI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TencentConfig {
    /// Base URL. Default `https://iai.tencentcloudapi.com`.
    pub endpoint: String,
    /// SecretId. Default empty (uploads cannot start).
    pub secret_id: String,
    /// File holding the SecretKey. Default `tencent-secret-key` (in `$CREDENTIALS_DIRECTORY`).
    pub secret_key_file: PathBuf,
    /// `X-TC-Region`; empty sends none. Default empty.
    pub region: String,
    /// API version: `2018-03-01` or `2020-03-03`. Default `2018-03-01`.
    pub version: String,
    /// Group for CreatePerson when a person does not exist yet. Default empty.
    pub group_id: String,
    /// Requests per second at most (CreateFace allows 50). Default 20.
    pub qps: f64,
    /// `UniquePersonControl` on CreatePerson, 0-4: with 1 (loosest) to 4
    /// (strictest), Tencent creates no person whose face matches one in the
    /// group and names the match; the entry is then dead with
    /// `duplicate_person`. Default 0 (off).
    pub unique_person_control: u8,
    /// `QualityControl` on CreatePerson and CreateFace, 0-4: 0 none, 4 the
    /// strictest (blur, light, occlusion); a face below it is refused
    /// (`RetCode` -1601). Default 0.
    pub quality_control: u8,
    /// `FaceMatchThreshold` on CreateFace, 0-100: a face added to a person
    /// must be at least this similar to the person's others (`RetCode`
    /// -1604). Unset sends none (Tencent's default, 60).
    pub face_match_threshold: Option<f64>,
}

impl Default for TencentConfig {
    fn default() -> Self {
        Self {
            endpoint: "https://iai.tencentcloudapi.com".into(),
            secret_id: String::new(),
            secret_key_file: PathBuf::from("tencent-secret-key"),
            region: String::new(),
            version: "2018-03-01".into(),
            group_id: String::new(),
            qps: 20.0,
            unique_person_control: 0,
            quality_control: 0,
            face_match_threshold: None,
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of extra trusted CA certificates (private gateways, tests). Default none.
    pub extra_ca_file: Option<PathBuf>,
}

/// `[control]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket of the running daemon. Default `/run/enrolld/control.sock`.
    pub socket: PathBuf,
    /// With both lists empty (the default), anyone the socket's file mode
    /// lets connect may use it. Otherwise only root, the daemon's own user,
    /// these uids and these primary gids (checked with SO_PEERCRED).
    pub allowed_uids: Vec<u32>,
    /// See `allowed_uids`. Default none.
    pub allowed_gids: Vec<u32>,
    /// Clients served at once; more are refused. Default 8.
    pub max_clients: u32,
    /// A client must send its request line within this many milliseconds. Default 10000.
    pub read_timeout_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/enrolld/control.sock"),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            max_clients: 8,
            read_timeout_ms: 10_000,
        }
    }
}

/// What a button press does when nobody was armed with `arm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnarmedPolicy {
    /// Refuse, and show it on the LED.
    Reject,
    /// Enroll under an id made from `button.id_template`.
    Template,
}

/// `[button]`: the enrollment button.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ButtonConfig {
    /// Linux input device (gpio-keys, a keyboard): `/dev/input/eventN` or a
    /// `/dev/input/by-path/...` link. Empty: no button. Default empty.
    pub input_device: PathBuf,
    /// Key code that triggers (28 = KEY_ENTER; gpio-keys uses what the device tree says). Default 28.
    pub key_code: u16,
    /// Presses closer together than this are one press, in milliseconds. Default 300.
    pub debounce_ms: u64,
    /// `reject` or `template`. Default `reject`.
    pub unarmed: UnarmedPolicy,
    /// Person id for unarmed presses with `unarmed = "template"`: `{device}`
    /// and `{unix_time}` are replaced. Default `{device}-{unix_time}`.
    pub id_template: String,
    /// What `{device}` becomes; empty uses the host name. Default empty.
    pub device_name: String,
    /// A GPIO chip (`/dev/gpiochipN`) with the button, instead of an input
    /// device (GPIO character device, uAPI v2). Empty: none. Default empty.
    pub gpio_chip: PathBuf,
    /// The button's line offset on `gpio_chip`. Default 0.
    pub gpio_line: u32,
    /// The line reads low when pressed (a button to ground). Default true.
    pub gpio_active_low: bool,
    /// A press is the person's consent, given to the notice shown on the
    /// kiosk (`consent.notice_file`). Needed for the button to enroll when
    /// `consent.required`. Default false.
    pub consent: bool,
}

impl Default for ButtonConfig {
    fn default() -> Self {
        Self {
            input_device: PathBuf::new(),
            key_code: 28,
            debounce_ms: 300,
            unarmed: UnarmedPolicy::Reject,
            id_template: "{device}-{unix_time}".into(),
            device_name: String::new(),
            gpio_chip: PathBuf::new(),
            gpio_line: 0,
            gpio_active_low: true,
            consent: false,
        }
    }
}

/// `[consent]`: the person's separate consent before the photo (PIPL art.
/// 28-29, the CAC's face-recognition measures, GDPR art. 9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// Every enrollment must name its consent (`enroll --consent REF`, the
    /// socket's `consent`, or `button.consent`); without it nothing is
    /// captured. Default true.
    pub required: bool,
    /// The notice the person agrees to; its SHA-256 goes into each consent
    /// record. Empty: none. Default empty.
    pub notice_file: PathBuf,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        Self {
            required: true,
            notice_file: PathBuf::new(),
        }
    }
}

/// Largest consent notice read (its SHA-256 is recorded).
pub const MAX_NOTICE_BYTES: u64 = 1024 * 1024;

impl ConsentConfig {
    /// Hex SHA-256 of the notice file, `None` when none is configured.
    pub fn notice_sha256(&self) -> Result<Option<String>, String> {
        use sha2::{Digest, Sha256};
        if self.notice_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let path = &self.notice_file;
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        if meta.len() > MAX_NOTICE_BYTES {
            return Err(format!(
                "{}: {} bytes; a notice is at most {MAX_NOTICE_BYTES}",
                path.display(),
                meta.len()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(format!("{:x}", Sha256::digest(&bytes))))
    }
}

/// `[ledger]`: the record of what happened to each person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Days a ledger record is kept; 0 keeps every record. Default 1095
    /// (three years, as the CAC's measures ask).
    pub retention_days: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            retention_days: 1095,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus text file for node_exporter's textfile collector (e.g.
    /// `/var/lib/node_exporter/textfile_collector/enrolld.prom`). Empty: none. Default empty.
    pub textfile: PathBuf,
}

/// `[led]`: the technician's feedback light.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedConfig {
    /// LED class device name under /sys/class/leds. Empty: no LED. Default empty.
    pub name: String,
    /// A GPIO chip driving the LED instead (`/dev/gpiochipN`). Default empty.
    pub gpio_chip: PathBuf,
    /// The LED's line offset on `gpio_chip`. Default 0.
    pub gpio_line: u32,
}

/// A camera source, parsed from `[camera] source` once, as the file is read
/// (an invalid one stops the load with its line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SourceSpec {
    /// A V4L2 device node such as `/dev/video0` (symlinks are followed).
    V4l2Path(PathBuf),
    /// A V4L2 device index (`N` in `/dev/videoN`).
    V4l2Index(u32),
    /// One image file, or a directory of images.
    File(PathBuf),
    /// A photo a socket client opened and passed to the daemon.
    Received(ReceivedPhoto),
}

/// A photo file opened by a control-socket client and passed to the daemon
/// with its request (`SCM_RIGHTS`): the daemon reads it through the
/// descriptor, so the client's permissions decide what may be read, and a
/// file the daemon cannot see (another user's home, a private /tmp) works.
#[derive(Debug, Clone)]
pub struct ReceivedPhoto {
    /// How the client named it, for messages.
    pub name: String,
    pub file: std::sync::Arc<std::fs::File>,
}

impl PartialEq for ReceivedPhoto {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.file, &other.file)
    }
}

impl Eq for ReceivedPhoto {}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("v4l2:") {
            if rest.is_empty() {
                return Err("v4l2: needs a device path or index".into());
            }
            if let Ok(n) = rest.parse::<u32>() {
                return Ok(Self::V4l2Index(n));
            }
            if !rest.starts_with('/') {
                return Err(format!("v4l2:{rest}: expected /dev/videoN or an index"));
            }
            return Ok(Self::V4l2Path(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("file:") {
            if rest.is_empty() {
                return Err("file: needs a path".into());
            }
            return Ok(Self::File(PathBuf::from(rest)));
        }
        Err(format!(
            "{s:?}: expected v4l2:/dev/videoN, v4l2:N or file:PATH"
        ))
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4l2Path(p) => write!(f, "v4l2:{}", p.display()),
            Self::V4l2Index(n) => write!(f, "v4l2:{n}"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Received(p) => write!(f, "file:{} (sent by the client)", p.name),
        }
    }
}

/// How serde reads it, which only the config file does: the message names
/// the key (toml adds the file's line and column).
impl TryFrom<String> for SourceSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|e| format!("camera.source: {e}"))
    }
}

impl From<SourceSpec> for String {
    fn from(s: SourceSpec) -> String {
        s.to_string()
    }
}

/// A problem with the configuration, naming the file and key.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, why: String },
    /// TOML syntax, a wrong type, or an unknown key (the text names the key and line).
    Parse { path: PathBuf, why: String },
    /// Values that parse but are not acceptable.
    Invalid {
        path: PathBuf,
        problems: Vec<(String, String)>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, why } => write!(f, "{}: {why}", path.display()),
            ConfigError::Parse { path, why } => write!(f, "{}: {}", path.display(), why.trim_end()),
            ConfigError::Invalid { path, problems } => {
                for (i, (key, why)) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}: {key}: {why}", path.display())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// No `--config` and no file at the default path: built-in defaults.
    Defaults,
}

impl Config {
    /// Loads `path`, or the default path; with no `--config` and no file at
    /// the default path, the built-in defaults are used.
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigOrigin), ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match read_bounded(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Config::default(), ConfigOrigin::Defaults));
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path,
                    why: e.to_string(),
                })
            }
        };
        let text = String::from_utf8(text).map_err(|_| ConfigError::Read {
            path: path.clone(),
            why: "not UTF-8 text".into(),
        })?;
        let config = Config::parse(&text, &path)?;
        Ok((config, ConfigOrigin::File(path)))
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Every value that parses but cannot work, as (key, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |key: &str, why: String| p.push((key.to_string(), why));
        if self.state_dir.as_os_str().is_empty() {
            bad("state_dir", "must not be empty".into());
        }
        if !(16..=8192).contains(&self.camera.width) {
            bad("camera.width", "must be 16..=8192".into());
        }
        if !(16..=8192).contains(&self.camera.height) {
            bad("camera.height", "must be 16..=8192".into());
        }
        if !(1..=240).contains(&self.camera.fps) {
            bad("camera.fps", "must be 1..=240".into());
        }
        if self.camera.warmup_frames > 120 {
            bad("camera.warmup_frames", "must be 0..=120".into());
        }
        if !(100..=60_000).contains(&self.camera.read_timeout_ms) {
            bad("camera.read_timeout_ms", "must be 100..=60000".into());
        }
        if ![0, 90, 180, 270].contains(&self.camera.rotation) {
            bad(
                "camera.rotation",
                "must be 0, 90, 180 or 270 (degrees clockwise)".into(),
            );
        }
        let d = &self.detect;
        if d.min_face_px < 20 {
            bad("detect.min_face_px", "must be at least 20".into());
        }
        if !(d.score_threshold > 0.0 && d.score_threshold.is_finite()) {
            bad("detect.score_threshold", "must be a positive number".into());
        }
        if !(d.pyramid_scale > 0.1 && d.pyramid_scale < 0.99) {
            bad(
                "detect.pyramid_scale",
                "must be between 0.1 and 0.99".into(),
            );
        }
        if !(1..=32).contains(&d.window_step) {
            bad("detect.window_step", "must be 1..=32".into());
        }
        if d.max_edge < 160 {
            bad("detect.max_edge", "must be at least 160".into());
        }
        if !(0.05..=0.99).contains(&d.landmark_min_score) {
            bad("detect.landmark_min_score", "must be 0.05..=0.99".into());
        }
        let q = &self.quality;
        if q.min_face_px < 20 {
            bad("quality.min_face_px", "must be at least 20".into());
        }
        if !(0.0..=2.0).contains(&q.margin) {
            bad("quality.margin", "must be 0.0..=2.0".into());
        }
        if !(0.0..=1000.0).contains(&q.min_eye_distance_px) {
            bad("quality.min_eye_distance_px", "must be 0.0..=1000.0".into());
        }
        for (key, v) in [
            ("quality.max_yaw_deg", q.max_yaw_deg),
            ("quality.max_pitch_deg", q.max_pitch_deg),
        ] {
            if !(1.0..=90.0).contains(&v) {
                bad(key, "must be 1.0..=90.0 degrees".into());
            }
        }
        if !(0.0..=90.0).contains(&q.max_roll_deg) {
            bad("quality.max_roll_deg", "must be 0.0..=90.0 degrees".into());
        }
        if !(0.0..=255.0).contains(&q.min_brightness)
            || !(0.0..=255.0).contains(&q.max_brightness)
            || q.min_brightness >= q.max_brightness
        {
            bad(
                "quality.min_brightness",
                "min_brightness and max_brightness must be 0..=255 with min < max".into(),
            );
        }
        if !(q.min_contrast >= 0.0 && q.min_contrast.is_finite()) {
            bad("quality.min_contrast", "must be >= 0".into());
        }
        if !(q.min_sharpness >= 0.0 && q.min_sharpness.is_finite()) {
            bad("quality.min_sharpness", "must be >= 0".into());
        }
        let b = &self.burst;
        if !(1..=100).contains(&b.frames) {
            bad("burst.frames", format!("must be 1..={MAX_BURST_FRAMES}"));
        }
        if b.time_budget_ms != 0 && !(100..=120_000).contains(&b.time_budget_ms) {
            bad(
                "burst.time_budget_ms",
                "must be 100..=120000, or 0 for no budget".into(),
            );
        }
        if !(1..=4).contains(&b.keep) {
            bad(
                "burst.keep",
                "must be 1..=4 (Tencent takes at most 4 images per call)".into(),
            );
        }
        if b.keep > b.frames {
            bad("burst.keep", "cannot be more than burst.frames".into());
        }
        let e = &self.encode;
        if !(64..=4096).contains(&e.max_edge) {
            bad("encode.max_edge", "must be 64..=4096".into());
        }
        if !(1..=100).contains(&e.min_quality)
            || !(1..=100).contains(&e.max_quality)
            || e.min_quality > e.max_quality
        {
            bad(
                "encode.min_quality",
                "min_quality and max_quality must be 1..=100 with min <= max".into(),
            );
        }
        if self.queue.max_entries == 0 {
            bad("queue.max_entries", "must be at least 1".into());
        }
        if self.queue.max_bytes < 1024 * 1024 {
            bad("queue.max_bytes", "must be at least 1048576 (1 MiB)".into());
        }
        for (key, url) in [
            ("jd.endpoint", &self.jd.endpoint),
            ("tencent.endpoint", &self.tencent.endpoint),
        ] {
            let shown = mask_userinfo(url);
            if !url.starts_with("https://") || url.len() <= "https://".len() {
                bad(key, format!("{shown:?} must be an https:// URL"));
            } else if shown != *url {
                bad(
                    key,
                    format!(
                        "{shown:?} carries a user name or password; the vendors sign requests \
                         with the key in the secret file, so leave user:password@ out"
                    ),
                );
            } else if let Err(why) = check_endpoint(url) {
                bad(key, format!("{shown:?} {why}"));
            }
        }
        if !matches!(self.tencent.version.as_str(), "2018-03-01" | "2020-03-03") {
            bad(
                "tencent.version",
                format!("{:?} is not 2018-03-01 or 2020-03-03", self.tencent.version),
            );
        }
        let u = &self.upload;
        for (key, ms) in [
            ("upload.connect_timeout_ms", u.connect_timeout_ms),
            ("upload.send_timeout_ms", u.send_timeout_ms),
            ("upload.recv_timeout_ms", u.recv_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                bad(key, "must be 100..=600000".into());
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&u.max_answer_bytes) {
            bad("upload.max_answer_bytes", "must be 1024..=67108864".into());
        }
        if u.retry_base_ms < 100 || u.retry_max_ms < u.retry_base_ms || u.retry_max_ms > 86_400_000
        {
            bad(
                "upload.retry_base_ms",
                "retry_base_ms must be >= 100 and <= retry_max_ms <= 86400000".into(),
            );
        }
        if u.pause_recheck_min_ms < 100
            || u.pause_recheck_max_ms < u.pause_recheck_min_ms
            || u.pause_recheck_max_ms > 86_400_000
        {
            bad(
                "upload.pause_recheck_min_ms",
                "pause_recheck_min_ms must be >= 100 and <= pause_recheck_max_ms <= 86400000"
                    .into(),
            );
        }
        if u.receipt_retention_days > 3650 {
            bad("upload.receipt_retention_days", "must be 0..=3650".into());
        }
        for (key, level) in [
            (
                "tencent.unique_person_control",
                self.tencent.unique_person_control,
            ),
            ("tencent.quality_control", self.tencent.quality_control),
        ] {
            if level > 4 {
                bad(
                    key,
                    format!("is {level}; must be 0..=4 (0 off, 4 the strictest)"),
                );
            }
        }
        if let Some(t) = self.tencent.face_match_threshold {
            if !(0.0..=100.0).contains(&t) {
                bad(
                    "tencent.face_match_threshold",
                    format!("is {t}; must be 0..=100"),
                );
            }
        }
        for (key, qps) in [("jd.qps", self.jd.qps), ("tencent.qps", self.tencent.qps)] {
            if !(0.01..=10_000.0).contains(&qps) {
                bad(key, "must be 0.01..=10000".into());
            }
        }
        if !(1..=64).contains(&self.control.max_clients) {
            bad("control.max_clients", "must be 1..=64".into());
        }
        if !(100..=300_000).contains(&self.control.read_timeout_ms) {
            bad("control.read_timeout_ms", "must be 100..=300000".into());
        }
        if self.button.debounce_ms > 10_000 {
            bad("button.debounce_ms", "must be 0..=10000".into());
        }
        if !self.button.input_device.as_os_str().is_empty()
            && !self.button.gpio_chip.as_os_str().is_empty()
        {
            bad(
                "button.gpio_chip",
                "set either button.input_device or button.gpio_chip, not both".into(),
            );
        }
        if !self.led.name.is_empty() && !self.led.gpio_chip.as_os_str().is_empty() {
            bad(
                "led.gpio_chip",
                "set either led.name or led.gpio_chip, not both".into(),
            );
        }
        if self.led.name.contains('/') || self.led.name == ".." {
            bad(
                "led.name",
                "must be a name under /sys/class/leds, not a path".into(),
            );
        }
        if let Err(why) = check_socket_path(&self.control.socket) {
            bad("control.socket", why);
        }
        if let Err(why) = self.consent.notice_sha256() {
            bad("consent.notice_file", why);
        }
        let has_button = !self.button.input_device.as_os_str().is_empty()
            || !self.button.gpio_chip.as_os_str().is_empty();
        if has_button && self.consent.required && !self.button.consent {
            bad(
                "button.consent",
                "consent.required is true and the button cannot name a consent: set button.consent = true \
                 (a press is the consent, given to the kiosk's notice) or every press is refused"
                    .into(),
            );
        }
        if self.ledger.retention_days > 36_500 {
            bad("ledger.retention_days", "must be 0..=36500".into());
        }
        self.check_vendor_rules(&mut bad);
        p
    }

    /// The vendors' rules for what the configuration sends: group ids and
    /// names, the region, and the ids the button makes.
    fn check_vendor_rules(&self, bad: &mut impl FnMut(&str, String)) {
        use crate::model::rules::{jd, tencent};
        let mut check = |r: Result<(), crate::model::rules::RuleViolation>| {
            if let Err(v) = r {
                bad(v.field, v.reason());
            }
        };
        // JD's group may be missing (a warning: uploads to JD cannot start),
        // but what is set must be legal.
        if !self.jd.group_id.is_empty() || !self.jd.group_name.is_empty() {
            check(jd::check_group(&self.jd.group_id, &self.jd.group_name));
        }
        if !self.tencent.group_id.is_empty() {
            check(tencent::check_group_id(&self.tencent.group_id));
        }
        check(tencent::check_region(&self.tencent.region));
        // The longest device part and a ten-digit time: every id the button
        // can make must be legal for both vendors.
        let id = render_id_template(
            &self.button.id_template,
            &"d".repeat(MAX_DEVICE_CHARS),
            9_999_999_999,
        );
        for provider in Provider::ALL {
            if let Err(v) = provider.check_person_id(&id) {
                bad(
                    "button.id_template",
                    format!(
                        "makes ids such as {id:?}, which {provider} refuses: {}",
                        v.reason()
                    ),
                );
                break;
            }
        }
    }

    /// The effective configuration as TOML, with identifiers masked.
    pub fn to_masked_toml(&self) -> String {
        let mut c = self.clone();
        c.jd.appkey = mask(&c.jd.appkey);
        c.tencent.secret_id = mask(&c.tencent.secret_id);
        c.jd.endpoint = mask_userinfo(&c.jd.endpoint);
        c.tencent.endpoint = mask_userinfo(&c.tencent.endpoint);
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// An endpoint is a base URL: `https://host[:port]`, and at most a `/` after
/// it. Both vendors' paths are fixed (JD's `/jdai/faceCreate`, Tencent's
/// `/`), so a path or query set here can only make every request miss.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| "must be an https:// URL".to_string())?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err("has text after the IPv6 address's ']'".into()),
            },
            None => return Err("has an IPv6 address without its closing ']'".into()),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._:".contains(*c)))
    {
        return Err(format!("has {bad:?} in its host"));
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("has {p:?} as its port, which is not 1..=65535")),
        }
    }
    if !tail.is_empty() && tail != "/" {
        return Err(format!(
            "has {tail:?} after the host: give the base URL only (such as https://aiapi.jd.com); \
             enrolld adds the API's path itself"
        ));
    }
    Ok(())
}

/// Longest path a Unix socket address holds (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The control socket's path: not empty and short enough to bind.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let len = path.as_os_str().as_bytes().len();
    if len == 0 {
        return Err("must not be empty".into());
    }
    if len > MAX_SOCKET_PATH_BYTES {
        return Err(format!(
            "{} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH_BYTES}",
            path.display()
        ));
    }
    Ok(())
}

/// Longest device part of a button person id.
pub const MAX_DEVICE_CHARS: usize = 32;

/// A person id from `button.id_template`: `{device}` becomes the device
/// name with every character other than English letters, digits, `-` and
/// `_` made `-` (a host name such as `kiosk.lobby` has a dot, which Tencent
/// refuses), cut to 32 characters; `{unix_time}` the time in seconds.
pub fn render_id_template(template: &str, device: &str, unix_s: i64) -> String {
    let device: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_DEVICE_CHARS)
        .collect();
    template
        .replace("{device}", &device)
        .replace("{unix_time}", &unix_s.to_string())
}

/// A URL with any `user:password@` in its authority replaced by `***@`.
pub fn mask_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_string(),
    }
}

/// Shows only the first and last two characters of a credential identifier.
pub fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        String::new()
    } else if chars.len() <= 8 {
        "********".into()
    } else {
        let head: String = chars[..2].iter().collect();
        let tail: String = chars[chars.len() - 2..].iter().collect();
        format!("{head}****{tail}")
    }
}

/// Reads a private file (configuration, secret, key): see [`crate::trust`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::trust::read(path, crate::trust::Privacy::Private)
}

/// Resolves a secret file name: absolute paths stay, relative ones are looked
/// up in `$CREDENTIALS_DIRECTORY`.
pub fn resolve_secret_path(path: &Path) -> Result<PathBuf, String> {
    if path.as_os_str().is_empty() {
        return Err("no secret file configured".into());
    }
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Ok(Path::new(&dir).join(path)),
        None => Err(format!(
            "{} is relative and $CREDENTIALS_DIRECTORY is not set (use an absolute path or systemd LoadCredential=)",
            path.display()
        )),
    }
}

/// A secret read from a file; never printed, wiped when dropped.
pub struct Secret(Vec<u8>);

impl Secret {
    /// Reads a secret file (see [`resolve_secret_path`]); one trailing newline is removed.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let path = resolve_secret_path(path)?;
        let mut bytes = read_bounded(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(format!("{}: secret file is empty", path.display()));
        }
        Ok(Secret(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Wipes the whole allocation, including bytes trimmed off the end.
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The most frames one burst may take (`burst.frames`, `enroll --frames`,
/// the socket's `"frames"`).
pub const MAX_BURST_FRAMES: u32 = 100;

impl Config {
    /// What `provider` lacks to upload: its key id, its secret file, its
    /// group; `(config key, why)`. Empty when it can upload. `config check`
    /// and start-up ask it of `upload.provider`; an enrollment for another
    /// provider (`--provider`, the socket's `"provider"`) asks it of that
    /// one, so nothing is queued that could never be sent.
    pub fn provider_problems(&self, provider: Provider) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let (id_key, id, secret_key, secret) = match provider {
            Provider::Jd => (
                "jd.appkey",
                &self.jd.appkey,
                "jd.secret_key_file",
                &self.jd.secret_key_file,
            ),
            Provider::Tencent => (
                "tencent.secret_id",
                &self.tencent.secret_id,
                "tencent.secret_key_file",
                &self.tencent.secret_key_file,
            ),
        };
        if id.is_empty() {
            out.push((id_key, format!("not set: uploads to {provider} need it")));
        }
        if let Err(e) = Secret::from_file(secret) {
            out.push((
                secret_key,
                format!("{e} (uploads to {provider} need the secret)"),
            ));
        }
        match provider {
            Provider::Jd if self.jd.group_id.is_empty() && self.jd.group_name.is_empty() => out
                .push((
                    "jd.group_id",
                    "neither jd.group_id nor jd.group_name is set: JD's faceCreate needs a group"
                        .into(),
                )),
            Provider::Tencent if self.tencent.group_id.is_empty() => out.push((
                "tencent.group_id",
                "not set: Tencent's CreatePerson needs the group new persons join".into(),
            )),
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").expect("defaults are valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/enrolld"));
        assert_eq!(c.camera.source.to_string(), "v4l2:/dev/video0");
        assert_eq!(c.upload.provider, Provider::Jd);
        assert_eq!(c.tencent.version, "2018-03-01");
        assert_eq!(c.control.socket, PathBuf::from("/run/enrolld/control.sock"));
    }

    #[test]
    fn the_example_file_documents_every_key_with_its_default() {
        let text = include_str!("../enrolld.example.toml");
        let parsed = parse(text).expect("the example is valid");
        assert_eq!(
            parsed,
            Config::default(),
            "example values must be the defaults"
        );
        let example: toml::Table = toml::from_str(text).expect("toml");
        let defaults: toml::Table =
            toml::from_str(&Config::default().to_masked_toml()).expect("toml");
        for (section, value) in &defaults {
            match value {
                toml::Value::Table(keys) => {
                    for key in keys.keys() {
                        assert!(
                            example.get(section).and_then(|s| s.get(key)).is_some(),
                            "{section}.{key} is missing from enrolld.example.toml"
                        );
                    }
                }
                _ => assert!(example.contains_key(section), "{section} is missing"),
            }
        }
    }

    #[test]
    fn contract_keys_parse() {
        let c = parse(
            r#"
state_dir = "/tmp/x"
[camera]
source = "v4l2:2"
width = 640
height = 480
fourcc = "YUYV"
[jd]
endpoint = "https://127.0.0.1:8443"
appkey = "k"
secret_key_file = "/run/creds/jd"
group_id = "g1"
group_name = "n1"
[tencent]
endpoint = "https://127.0.0.1:9443"
secret_id = "AKIDxxx"
secret_key_file = "tc"
region = "ap-guangzhou"
version = "2020-03-03"
group_id = "grp"
[tls]
extra_ca_file = "/tmp/ca.pem"
[upload]
provider = "tencent"
[control]
socket = "/tmp/enrolld.sock"
"#,
        )
        .expect("valid");
        assert_eq!(c.camera.source, SourceSpec::V4l2Index(2));
        assert_eq!(c.upload.provider, Provider::Tencent);
        assert_eq!(c.tls.extra_ca_file, Some(PathBuf::from("/tmp/ca.pem")));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse("[camera]\nsorce = \"file:/x\"\n").expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains("sorce"), "{text}");
        assert!(text.contains("test.toml"), "{text}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        // Typed keys are checked as the file is read: the first bad one
        // stops it, with its line.
        let err = parse("[camera]\nsource = \"usb:0\"\n[burst]\nkeep = 5\n").expect_err("invalid");
        let text = err.to_string();
        assert!(text.starts_with("test.toml: "), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(
            text.contains("camera.source: \"usb:0\": expected v4l2:"),
            "{text}"
        );
        let err = parse("[camera]\nfourcc = \"H264\"\n").expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("camera.fourcc: \"H264\" is not one of MJPG,"),
            "{text}"
        );
        let c = parse("[camera]\nfourcc = \"yuyv\"\n").expect("valid");
        assert_eq!(c.camera.fourcc, PixelFormat::Yuyv);
        // Values checked after reading are all reported together.
        let err = parse("[burst]\nkeep = 5\n[camera]\nwidth = 1\n").expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("test.toml: burst.keep:"), "{text}");
        assert!(text.contains("test.toml: camera.width:"), "{text}");
        let err = parse("[upload]\nprovider = \"aws\"\n").expect_err("bad provider");
        assert!(err.to_string().contains("aws"), "{err}");
        let err = parse("[jd]\nendpoint = \"http://a\"\n").expect_err("http");
        assert!(err.to_string().contains("jd.endpoint"), "{err}");
        let err = parse("[camera]\nrotation = 45\n").expect_err("not a quarter turn");
        assert!(
            err.to_string()
                .contains("camera.rotation: must be 0, 90, 180 or 270"),
            "{err}"
        );
        let c = parse("[camera]\nrotation = 270\nmirror = true\n").expect("valid");
        assert_eq!((c.camera.rotation, c.camera.mirror), (270, true));
    }

    #[test]
    fn source_specs() {
        assert_eq!(
            SourceSpec::parse("v4l2:/dev/video3"),
            Ok(SourceSpec::V4l2Path("/dev/video3".into()))
        );
        assert_eq!(
            SourceSpec::parse("file:/srv/photos"),
            Ok(SourceSpec::File("/srv/photos".into()))
        );
        assert!(SourceSpec::parse("v4l2:").is_err());
        assert!(SourceSpec::parse("v4l2:video0").is_err());
        assert!(SourceSpec::parse("/dev/video0").is_err());
    }

    #[test]
    fn masks_identifiers() {
        assert_eq!(mask(""), "");
        assert_eq!(mask("short"), "********");
        assert_eq!(mask("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"), "AK****LE");
        let mut c = Config::default();
        c.tencent.secret_id = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE".into();
        let printed = c.to_masked_toml();
        assert!(!printed.contains("z8krbs"), "{printed}");
    }

    #[test]
    fn files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Secret::from_file(&secret).expect_err("world-readable");
        assert!(
            err.contains("readable by other users") && err.contains("644"),
            "{err}"
        );
        assert!(!err.contains("s3cret"));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(
            Secret::from_file(&secret).expect("private").expose(),
            b"s3cret"
        );
        let config = dir.path().join("enrolld.toml");
        std::fs::write(&config, "").expect("write");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let err = Config::load(Some(&config)).expect_err("world-readable config");
        assert!(err.to_string().contains("readable by other users"), "{err}");
    }

    #[test]
    fn an_endpoint_with_a_password_is_refused_and_never_printed() {
        assert_eq!(
            mask_userinfo("https://user:pa55@host.example/path?q=a@b"),
            "https://***@host.example/path?q=a@b"
        );
        assert_eq!(mask_userinfo("https://host/x@y"), "https://host/x@y");
        let text = "[jd]\nendpoint = \"https://admin:pa55word@jd.example/api\"\n";
        let err = Config::parse(text, Path::new("c.toml")).expect_err("userinfo");
        let err = err.to_string();
        assert!(
            err.contains("jd.endpoint") && err.contains("user:password@"),
            "{err}"
        );
        assert!(!err.contains("pa55word") && !err.contains("admin"), "{err}");
        let mut c = Config::default();
        c.tencent.endpoint = "https://admin:pa55word@t.example".into();
        assert!(!c.to_masked_toml().contains("pa55word"));
    }

    #[test]
    fn endpoints_are_base_urls_with_a_numeric_port() {
        for good in [
            "https://aiapi.jd.com",
            "https://iai.tencentcloudapi.com/",
            "https://127.0.0.1:8443",
            "https://[::1]:8443/",
            "https://[::1]",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("https://127.0.0.1:notaport", "port"),
            ("https://127.0.0.1:", "port"),
            ("https://127.0.0.1:0", "port"),
            ("https://127.0.0.1:65536", "port"),
            ("https://h/some/path?x=1", "after the host"),
            ("https://h?x=1", "after the host"),
            ("https://h#frag", "after the host"),
            ("https://:8443", "no host"),
            ("https://h a", "in its host"),
            ("https://[::1", "closing"),
            ("https://[::1]x", "after the IPv6"),
            ("http://h", "https://"),
        ] {
            let err = check_endpoint(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn socket_paths_longer_than_a_socket_address_are_refused() {
        assert!(check_socket_path(Path::new(&format!("/{}", "s".repeat(106)))).is_ok());
        let long = format!("/{}", "s".repeat(107));
        let err = check_socket_path(Path::new(&long)).expect_err("108 bytes");
        assert!(err.contains("108 bytes") && err.contains("107"), "{err}");
    }

    #[test]
    fn secret_debug_is_masked() {
        let s = Secret::from_bytes(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
