//! What JD NeuHub `faceCreate` refuses, from its page and JD's API notes:
//!
//! - `outerId`: required, "supports Chinese" (UTF-8); JD documents no other
//!   limit, so enrolld keeps it to 1 to 64 characters without control
//!   characters or surrounding white space;
//! - `groupId` wins over `groupName`, one is required; group names are ASCII
//!   (`faceGroupCreate` takes them in the query string), so enrolld allows
//!   English letters, digits, `-` and `_`, at most 64 for both;
//! - one image per call; bmp, jpg, png; 48x48 to 4096x4096 px; file under 2 MB.
//! - `faceCreate` has no person name.

use crate::model::rules::{quoted, RuleViolation};
use crate::model::ImageLimits;

/// Longest `outerId`, in characters.
pub const MAX_OUTER_ID_CHARS: usize = 64;
/// Longest `groupId` / `groupName`.
pub const MAX_GROUP_CHARS: usize = 64;

pub const IMAGE_LIMITS: ImageLimits = ImageLimits {
    min_edge: 48,
    max_edge_jpeg: 4096,
    max_bytes: 2_000_000 - 1,
    max_base64_bytes: None,
    max_images_per_call: 1,
};

/// `outerId` rules.
pub fn check_person_id(id: &str) -> Result<(), RuleViolation> {
    let bad = |why: String| Err(RuleViolation::new("person id", None, why));
    let n = id.chars().count();
    if n == 0 {
        return bad("the person id is empty".into());
    }
    if n > MAX_OUTER_ID_CHARS {
        return bad(format!(
            "{} has {n} characters: at most {MAX_OUTER_ID_CHARS} allowed",
            quoted(id)
        ));
    }
    if id.chars().any(char::is_control) {
        return bad(format!("{} contains control characters", quoted(id)));
    }
    if id.trim() != id {
        return bad(format!("{} starts or ends with white space", quoted(id)));
    }
    Ok(())
}

/// JD stores no person name.
pub fn check_person_name(_name: &str) -> Result<(), RuleViolation> {
    Err(RuleViolation::new(
        "person name",
        None,
        "JD faceCreate has no person name: leave it out (the person id is JD's outerId)".into(),
    ))
}

fn check_group_part(key: &'static str, value: &str) -> Result<(), RuleViolation> {
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if let Some(c) = value.chars().find(|&c| !legal(c)) {
        return Err(RuleViolation::new(
            key,
            None,
            format!(
                "{} has {c:?}: use English letters, digits, - and _ only",
                quoted(value)
            ),
        ));
    }
    if value.chars().count() > MAX_GROUP_CHARS {
        return Err(RuleViolation::new(
            key,
            None,
            format!(
                "{} is longer than {MAX_GROUP_CHARS} characters",
                quoted(value)
            ),
        ));
    }
    Ok(())
}

/// `jd.group_id` / `jd.group_name`: one is required.
pub fn check_group(group_id: &str, group_name: &str) -> Result<(), RuleViolation> {
    if group_id.is_empty() && group_name.is_empty() {
        return Err(RuleViolation::new(
            "jd.group_id",
            None,
            "JD needs a face group: set jd.group_id or jd.group_name".into(),
        ));
    }
    check_group_part("jd.group_id", group_id)?;
    check_group_part("jd.group_name", group_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_ids_may_be_chinese() {
        for ok in ["张三", "工号-0042", "emp#42@hq", "a b", &"名".repeat(64)] {
            assert_eq!(check_person_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", " a", "a\n", &"名".repeat(65)] {
            assert!(check_person_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn groups_are_ascii_names() {
        assert_eq!(check_group("", "kiosk"), Ok(()));
        assert_eq!(check_group("6979e9bd79b944b49e0d6e74079d5098", ""), Ok(()));
        assert!(check_group("", "").is_err());
        assert!(check_group("", "my group").is_err());
        assert!(check_group("中文", "").is_err());
    }
}
