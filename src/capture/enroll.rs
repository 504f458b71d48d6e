//! The enrollment pipeline: source -> burst -> best crop(s) -> encode -> outbox.

use crate::capture::burst::{run_burst, FrameReport};
use crate::capture::detect::FaceDetector;
use crate::capture::encode::{encode_for, EncodeError, EncodedImage};
use crate::capture::frame::DecodeLimits;
use crate::capture::quality::Rejection;
use crate::capture::source::{self, SourceError};
use crate::clock::Clock;
use crate::config::{Config, SourceSpec};
use crate::model::rules::RuleViolation;
use crate::model::ErrorCode;
use crate::model::Provider;
use crate::model::{check_reference, Consent, ConsentGiven, ConsentScope, Enrollment, Group};
use crate::queue::outbox::{NewEnrollment, NewImage, Outbox, OutboxError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What to enroll, and from where.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub person_id: String,
    /// Tencent `PersonName`; none derives it from the person id.
    pub person_name: Option<String>,
    pub provider: Provider,
    pub source: SourceSpec,
    /// Overrides `burst.frames`.
    pub frames: Option<u32>,
    /// The person's consent, as the door that asked gave it.
    pub consent: Option<ConsentGiven>,
}

impl EnrollRequest {
    /// Whether this enrollment could be queued and uploaded at all: the
    /// person's id and name, the burst's size, the provider's group, and the
    /// credentials of a provider other than `upload.provider`. The one verdict for the command line and the
    /// socket, given before anything is captured.
    pub fn check(&self, cfg: &Config) -> Result<(), EnrollError> {
        match &self.consent {
            None if cfg.consent.required => return Err(EnrollError::ConsentRequired),
            Some(c) => check_reference(&c.reference).map_err(EnrollError::InvalidConsent)?,
            None => {}
        }
        self.provider
            .check_person(&self.person_id, self.person_name.as_deref())
            .map_err(EnrollError::InvalidPerson)?;
        if let Some(n) = self.frames {
            if !(1..=crate::config::MAX_BURST_FRAMES).contains(&n) {
                return Err(EnrollError::InvalidFrames(n));
            }
        }
        let group = group_for(cfg, self.provider);
        if self.provider == Provider::Jd && group.id.is_empty() && group.name.is_empty() {
            // JD refuses faceCreate without a group: fail now, not as a dead entry later.
            return Err(EnrollError::GroupMissing(
                "JD needs a face group: set jd.group_id or jd.group_name in the configuration",
            ));
        }
        // The configured provider's credentials are start-up's verdict
        // (`config check`, `run`): a device may enroll before they are
        // installed, and `drain` says what is missing. Another provider's
        // are checked here, or nothing would ever upload the entry.
        let problems = if self.provider == cfg.upload.provider {
            Vec::new()
        } else {
            cfg.provider_problems(self.provider)
        };
        if !problems.is_empty() {
            let list: Vec<String> = problems
                .iter()
                .map(|(k, why)| format!("{k}: {why}"))
                .collect();
            return Err(EnrollError::ProviderUnusable(format!(
                "nothing queued for {}: {}",
                self.provider,
                list.join("; ")
            )));
        }
        Ok(())
    }
}

/// Progress events, in order: `capturing`, one `frame` per frame, then the
/// outcome is returned.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    Capturing { source: String },
    Frame { report: Box<FrameReport> },
}

/// How an enrollment ended when nothing failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum EnrollOutcome {
    /// Durably queued.
    Queued {
        entry: Box<Enrollment>,
        images: Vec<EncodedImage>,
        frames: Vec<FrameReport>,
    },
    /// No frame was good enough.
    Rejected {
        reason: Rejection,
        advice: String,
        frames: Vec<FrameReport>,
        unreadable: Vec<String>,
    },
}

/// Failures that are not a verdict on the face.
#[derive(Debug)]
pub enum EnrollError {
    /// The person id or name breaks the vendor's rules.
    InvalidPerson(RuleViolation),
    /// The provider needs a group and none is configured.
    GroupMissing(&'static str),
    /// The provider asked for lacks credentials or a group: an entry for
    /// it could never be uploaded.
    ProviderUnusable(String),
    /// A burst of 0 or more than 100 frames.
    InvalidFrames(u32),
    /// `consent.required` and the request names no consent.
    ConsentRequired,
    /// A consent reference that cannot name one, or a notice that cannot be read.
    InvalidConsent(String),
    Source(SourceError),
    Encode(EncodeError),
    Outbox(OutboxError),
}

impl EnrollError {
    /// Stable machine-readable name.
    pub fn code(&self) -> ErrorCode {
        match self {
            EnrollError::InvalidPerson(_) => ErrorCode::InvalidPerson,
            EnrollError::GroupMissing(_) => ErrorCode::GroupMissing,
            EnrollError::ProviderUnusable(_) => ErrorCode::ConfigInvalid,
            EnrollError::InvalidFrames(_) => ErrorCode::InvalidRequest,
            EnrollError::ConsentRequired => ErrorCode::ConsentRequired,
            EnrollError::InvalidConsent(_) => ErrorCode::InvalidRequest,
            EnrollError::Source(e) => e.code(),
            EnrollError::Encode(_) => ErrorCode::EncodeFailed,
            EnrollError::Outbox(e) => e.code(),
        }
    }
}

impl From<EnrollError> for crate::model::Failure {
    fn from(e: EnrollError) -> Self {
        crate::model::Failure::new(e.code(), e.to_string())
    }
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrollError::InvalidPerson(why) => write!(f, "invalid {why}"),
            EnrollError::GroupMissing(why) => f.write_str(why),
            EnrollError::ProviderUnusable(why) => f.write_str(why),
            EnrollError::InvalidFrames(n) => write!(
                f,
                "frames {n}: a burst takes 1 to {} frames",
                crate::config::MAX_BURST_FRAMES
            ),
            EnrollError::ConsentRequired => f.write_str(
                "consent.required: nothing was captured without the person's consent. Record it first, \
                 then name it: enrolld enroll --consent REF (the signed form or the HR record), \
                 \"consent\": \"REF\" on the socket, or button.consent = true for a kiosk whose notice the press accepts",
            ),
            EnrollError::InvalidConsent(why) => f.write_str(why),
            EnrollError::Source(e) => e.fmt(f),
            EnrollError::Encode(e) => e.fmt(f),
            EnrollError::Outbox(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EnrollError {}

/// The group configured for a provider.
pub fn group_for(cfg: &Config, provider: Provider) -> Group {
    match provider {
        Provider::Jd => Group {
            id: cfg.jd.group_id.clone(),
            name: cfg.jd.group_name.clone(),
        },
        Provider::Tencent => Group {
            id: cfg.tencent.group_id.clone(),
            name: String::new(),
        },
    }
}

/// Runs one enrollment end to end. Returns `Queued` only once the entry is durable.
pub fn enroll(
    cfg: &Config,
    detector: &mut dyn FaceDetector,
    outbox: &Outbox,
    req: &EnrollRequest,
    cancel: &std::sync::atomic::AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<EnrollOutcome, EnrollError> {
    req.check(cfg)?;
    let group = group_for(cfg, req.provider);
    let notice_sha256 = match &req.consent {
        Some(_) => cfg
            .consent
            .notice_sha256()
            .map_err(|e| EnrollError::InvalidConsent(format!("consent.notice_file: {e}")))?,
        None => None,
    };
    let mut source = source::open(&req.source, &cfg.camera, DecodeLimits::default())
        .map_err(EnrollError::Source)?;
    on_progress(Progress::Capturing {
        source: source.describe(),
    });
    let limits = req.provider.limits();
    let keep = (cfg.burst.keep as usize).min(limits.max_images_per_call);
    let mut burst_cfg = cfg.burst.clone();
    if let Some(n) = req.frames {
        burst_cfg.frames = n;
    }
    let burst = run_burst(
        source.as_mut(),
        detector,
        &burst_cfg,
        &cfg.quality,
        keep,
        cfg.encode.max_edge.min(limits.max_edge_jpeg),
        &crate::clock::SystemTimer::new(),
        cancel,
        &mut |r| {
            on_progress(Progress::Frame {
                report: Box::new(r.clone()),
            })
        },
    )
    .map_err(EnrollError::Source)?;
    drop(source);
    if burst.chosen.is_empty() {
        let reason = burst.rejection.unwrap_or(Rejection::NoFace);
        return Ok(EnrollOutcome::Rejected {
            reason,
            advice: reason.advice().to_string(),
            frames: burst.frames,
            unreadable: burst.unreadable,
        });
    }
    let mut encoded = Vec::with_capacity(burst.chosen.len());
    for c in &burst.chosen {
        encoded.push(encode_for(&c.crop, &limits, &cfg.encode).map_err(EnrollError::Encode)?);
    }
    let entry = outbox
        .enqueue(NewEnrollment {
            person_id: req.person_id.clone(),
            person_name: req.person_name.clone(),
            provider: req.provider,
            group: group.clone(),
            images: encoded
                .iter()
                .map(|e| NewImage {
                    bytes: e.bytes.clone(),
                    width: e.width,
                    height: e.height,
                })
                .collect(),
            scores: burst.chosen.iter().map(|c| c.scores).collect(),
            consent: req.consent.as_ref().map(|c| Consent {
                reference: c.reference.clone(),
                via: c.via.clone(),
                at_ms: crate::clock::SystemClock.now_ms(),
                notice_sha256: notice_sha256.clone(),
                scope: ConsentScope {
                    provider: req.provider,
                    region: match req.provider {
                        Provider::Tencent => cfg.tencent.region.clone(),
                        Provider::Jd => String::new(),
                    },
                    group: if group.id.is_empty() {
                        group.name.clone()
                    } else {
                        group.id.clone()
                    },
                },
            }),
        })
        .map_err(EnrollError::Outbox)?;
    Ok(EnrollOutcome::Queued {
        entry: Box::new(entry),
        images: encoded,
        frames: burst.frames,
    })
}
