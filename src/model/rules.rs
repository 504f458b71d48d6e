//! What the vendors refuse, checked before anything is queued or sent.
//!
//! Each vendor's rules live in its own module ([`jd`], [`tencent`]);
//! [`crate::model::Provider`] dispatches to
//! them. Every door (CLI, socket, button, config, drain) asks here, so an
//! enrollment the cloud would refuse for good is refused at `enroll`, with
//! the rule it broke, and never reaches the queue.

pub mod jd;
pub mod tencent;

use crate::model::{Enrollment, ErrorCode, Provider};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A broken vendor rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// What was checked: `person id`, `person name`, `tencent.group_id`, `images`.
    pub field: &'static str,
    /// The refusal the vendor would answer with, where it documents one
    /// (`InvalidParameterValue.PersonIdIllegal`).
    pub vendor_code: Option<&'static str>,
    /// The rule and how the value breaks it.
    pub message: String,
}

impl RuleViolation {
    pub fn new(field: &'static str, vendor_code: Option<&'static str>, message: String) -> Self {
        Self {
            field,
            vendor_code,
            message,
        }
    }

    /// The stable error code enrolld reports for it.
    pub fn code(&self) -> ErrorCode {
        match self.field {
            "person id" | "person name" => ErrorCode::InvalidPerson,
            "images" => ErrorCode::InvalidImages,
            _ => ErrorCode::InvalidConfig,
        }
    }
}

impl RuleViolation {
    /// The rule and the vendor's code, without the field.
    pub fn reason(&self) -> String {
        match self.vendor_code {
            Some(code) => format!("{} (the cloud would refuse it with {code})", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason())
    }
}

impl std::error::Error for RuleViolation {}

/// Shows a value in an error: quoted, with control characters escaped.
pub(crate) fn quoted(value: &str) -> String {
    format!("{value:?}")
}

/// Checks what a queued entry will send: person id, person name, group and
/// images. Entries written by an older release may break rules that
/// `enroll` now enforces; the drain turns those dead without a request.
pub fn check_entry(entry: &Enrollment) -> Result<(), RuleViolation> {
    let p = entry.provider;
    p.check_person_id(&entry.person_id)?;
    if let Some(name) = &entry.person_name {
        p.check_person_name(name)?;
    }
    // Tencent's group comes from the configuration (checked at load), JD's
    // is sent from the entry.
    if p == Provider::Jd {
        jd::check_group(&entry.group.id, &entry.group.name)?;
    }
    let limits = p.limits();
    let max = crate::model::MAX_IMAGES;
    if entry.images.is_empty() || entry.images.len() > max {
        return Err(RuleViolation::new(
            "images",
            None,
            format!(
                "an entry holds 1 to {max} images, not {}",
                entry.images.len()
            ),
        ));
    }
    for (i, img) in entry.images.iter().enumerate() {
        let (short, long) = (img.width.min(img.height), img.width.max(img.height));
        if short < limits.min_edge || long > limits.max_edge_jpeg {
            return Err(RuleViolation::new(
                "images",
                None,
                format!(
                    "image {i} is {}x{} px; {p} takes {} to {} px per edge",
                    img.width, img.height, limits.min_edge, limits.max_edge_jpeg
                ),
            ));
        }
        if !limits.fits_bytes(img.len as usize) {
            return Err(RuleViolation::new(
                "images",
                None,
                format!("image {i} has {} bytes, over {p}'s limit", img.len),
            ));
        }
    }
    Ok(())
}

/// A live entry that breaks a vendor rule, as `queue list` and `status`
/// report it: the next drain turns it dead without sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenRule {
    pub id: u64,
    pub code: ErrorCode,
    pub problem: String,
}

/// The live (not dead) entries among `entries` that break a vendor rule.
pub fn broken_rules(entries: &[Enrollment]) -> Vec<BrokenRule> {
    entries
        .iter()
        .filter(|e| !matches!(e.state, crate::model::EntryState::Dead { .. }))
        .filter_map(|e| {
            check_entry(e).err().map(|v| BrokenRule {
                id: e.id,
                code: v.code(),
                problem: v.to_string(),
            })
        })
        .collect()
}
