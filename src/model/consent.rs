//! The person's consent, recorded before the photo is taken (PIPL art. 28-29,
//! the CAC's face-recognition measures, GDPR art. 9): who gave it, how, when,
//! to what notice and for which cloud. It travels with the entry, stays in
//! the receipt and is written to the ledger.

use crate::clock::UnixMillis;
use crate::model::Provider;
use serde::{Deserialize, Serialize};

/// Longest consent reference (a form number, an HR system's record id).
pub const MAX_REFERENCE_BYTES: usize = 128;

/// How consent was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum ConsentVia {
    /// `enrolld enroll --consent REF`, run by this user.
    CommandLine { uid: u32 },
    /// `"consent": "REF"` on the control socket, from a peer of this uid.
    Socket { uid: u32 },
    /// A press of the enrollment button with `button.consent = true`: the
    /// press is the consent, given to the kiosk's notice.
    Button,
}

/// What the consent allows: the one cloud, region and group the face may go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentScope {
    pub provider: Provider,
    /// Tencent's region; empty for JD (or Tencent's default).
    pub region: String,
    pub group: String,
}

/// The consent record of one enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The signed form or the HR system's record; for a button press, what
    /// the daemon made of it (`button:<device>:<time>`).
    pub reference: String,
    #[serde(flatten)]
    pub via: ConsentVia,
    pub at_ms: UnixMillis,
    /// SHA-256 (hex) of `consent.notice_file` as it was when consent was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_sha256: Option<String>,
    pub scope: ConsentScope,
}

/// What a door (command line, socket, button) says about consent, before
/// the record is completed with the time, the notice and the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentGiven {
    pub reference: String,
    pub via: ConsentVia,
}

/// Whether `reference` can name a consent: 1 to 128 bytes of printable
/// text, no control characters.
pub fn check_reference(reference: &str) -> Result<(), String> {
    if reference.trim().is_empty() {
        return Err("the consent reference is empty: name the signed form or the HR record".into());
    }
    if reference.len() > MAX_REFERENCE_BYTES {
        return Err(format!(
            "the consent reference is {} bytes; at most {MAX_REFERENCE_BYTES}",
            reference.len()
        ));
    }
    if reference.chars().any(char::is_control) {
        return Err("the consent reference holds control characters".into());
    }
    Ok(())
}

/// A value sealed with the queue key, as base64 text: the consent record in
/// an entry and its receipt. Only the outbox, which holds the key, opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked() {
        assert!(check_reference("HR-2291/form 7").is_ok());
        assert!(check_reference("  ").is_err());
        assert!(check_reference("a\nb").is_err());
        assert!(check_reference(&"x".repeat(129)).is_err());
        assert!(check_reference(&"x".repeat(128)).is_ok());
    }
}
