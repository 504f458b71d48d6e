//! The cloud services enrolld uploads to, and the image limits each imposes.

use crate::model::rules::jd;
use crate::model::rules::tencent;
use crate::model::rules::RuleViolation;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A face-recognition service enrollments are uploaded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// JD NeuHub `faceCreate`.
    Jd,
    /// Tencent Cloud IAI `CreateFace`.
    Tencent,
}

impl Provider {
    /// Every vendor. A vendor added to the enum fails to compile here until
    /// it is counted (the match is exhaustive) and so listed (the array's
    /// length is the count): nothing can compile and then pause at run time
    /// with `no_uploader`.
    pub const ALL: [Provider; Provider::COUNT] = [Provider::Jd, Provider::Tencent];

    const COUNT: usize = match Provider::Jd {
        Provider::Jd | Provider::Tencent => 2,
    };

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Jd => "jd",
            Provider::Tencent => "tencent",
        }
    }

    /// The image limits of this provider's enrollment API.
    pub fn limits(self) -> ImageLimits {
        match self {
            Provider::Jd => jd::IMAGE_LIMITS,
            Provider::Tencent => tencent::IMAGE_LIMITS,
        }
    }

    /// Whether the vendor accepts `id` as a person id (JD `outerId`,
    /// Tencent `PersonId`).
    pub fn check_person_id(self, id: &str) -> Result<(), RuleViolation> {
        match self {
            Provider::Jd => jd::check_person_id(id),
            Provider::Tencent => tencent::check_person_id(id),
        }
    }

    /// Whether the vendor accepts `name` as a person name (Tencent
    /// `PersonName`; JD has none).
    pub fn check_person_name(self, name: &str) -> Result<(), RuleViolation> {
        match self {
            Provider::Jd => jd::check_person_name(name),
            Provider::Tencent => tencent::check_person_name(name),
        }
    }

    /// Checks a person id and an optional name together, as every door does.
    pub fn check_person(self, id: &str, name: Option<&str>) -> Result<(), RuleViolation> {
        self.check_person_id(id)?;
        name.map_or(Ok(()), |n| self.check_person_name(n))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jd" => Ok(Provider::Jd),
            "tencent" => Ok(Provider::Tencent),
            other => Err(format!(
                "unknown provider {other:?} (expected \"jd\" or \"tencent\")"
            )),
        }
    }
}

/// What an encoded enrollment image must satisfy for one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Shortest allowed edge in pixels.
    pub min_edge: u32,
    /// Longest allowed edge in pixels for JPEG.
    pub max_edge_jpeg: u32,
    /// Largest allowed file, in bytes, before base64.
    pub max_bytes: usize,
    /// Largest allowed base64 text, when the provider limits that instead.
    pub max_base64_bytes: Option<usize>,
    /// Most images one enrollment call may carry.
    pub max_images_per_call: usize,
}

impl ImageLimits {
    /// Whether `len` raw bytes fit, counting base64 expansion where it matters.
    pub fn fits_bytes(&self, len: usize) -> bool {
        let b64 = len.div_ceil(3) * 4;
        len <= self.max_bytes && self.max_base64_bytes.is_none_or(|max| b64 <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_limits_follow_the_vendor_docs() {
        let jd = Provider::Jd.limits();
        assert!(jd.fits_bytes(1_999_999));
        assert!(!jd.fits_bytes(2_000_000));
        let tc = Provider::Tencent.limits();
        // 3,932,160 raw bytes is exactly 5 MiB of base64.
        assert!(tc.fits_bytes(3_932_160));
        assert!(!tc.fits_bytes(3_932_161));
    }

    #[test]
    fn parses_names() {
        assert_eq!("jd".parse::<Provider>(), Ok(Provider::Jd));
        assert_eq!("tencent".parse::<Provider>(), Ok(Provider::Tencent));
        assert!("aws".parse::<Provider>().is_err());
    }
}
