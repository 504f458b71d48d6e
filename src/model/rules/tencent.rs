//! What Tencent Cloud IAI refuses, from the CreateFace page's error table
//! and the CreatePerson documentation:
//!
//! - `PersonId`, `GroupId`: English letters, digits and `-%@#&_` only
//!   (`...PersonIdIllegal`, `...GroupIdIllegal`), at most 64 bytes
//!   (`...PersonIdTooLong`, `...GroupIdTooLong`);
//! - `PersonName`: Chinese (CJK ideographs), English letters, digits, `-`
//!   and `_` only (`...PersonNameIllegal`), 1 to 60 characters
//!   (`...PersonNameTooLong`);
//! - at most 4 images per call (`...UploadFaceNumExceed`), 5 faces per person
//!   (`...PersonFaceNumExceed`);
//! - base64 at most 5 MB, long edge at most 4000 px (JPEG), short edge at
//!   least 64 px.

use crate::model::rules::{quoted, RuleViolation};
use crate::model::ImageLimits;

/// Longest `PersonId` / `GroupId`, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest `PersonName`, in characters.
pub const MAX_NAME_CHARS: usize = 60;
/// Most images in one CreateFace call.
pub const MAX_IMAGES_PER_CALL: usize = 4;
/// Most faces one person holds.
pub const MAX_FACES_PER_PERSON: usize = 5;
/// The punctuation ids may hold besides letters and digits.
pub const ID_PUNCTUATION: &str = "-%@#&_";

pub const IMAGE_LIMITS: ImageLimits = ImageLimits {
    min_edge: 64,
    max_edge_jpeg: 4000,
    max_bytes: usize::MAX,
    max_base64_bytes: Some(5 * 1024 * 1024),
    max_images_per_call: MAX_IMAGES_PER_CALL,
};

/// A character `PersonId` and `GroupId` may hold.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(c)
}

/// A CJK ideograph (the unified block and extension A): the "Chinese" that
/// `PersonName` may hold.
pub fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

/// A character `PersonName` may hold.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || is_cjk(c)
}

fn check_id(
    field: &'static str,
    what: &str,
    value: &str,
    illegal: &'static str,
    too_long: &'static str,
) -> Result<(), RuleViolation> {
    if value.is_empty() {
        return Err(RuleViolation::new(
            field,
            Some("MissingParameter.ErrorParameterEmpty"),
            format!("{what} is empty"),
        ));
    }
    if let Some((i, c)) = value.char_indices().find(|&(_, c)| !is_id_char(c)) {
        return Err(RuleViolation::new(
            field,
            Some(illegal),
            format!(
                "{} has {c:?} at byte {i}: Tencent allows only English letters, digits and {ID_PUNCTUATION}",
                quoted(value)
            ),
        ));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(RuleViolation::new(
            field,
            Some(too_long),
            format!(
                "{} is {} bytes long: Tencent allows at most {MAX_ID_BYTES}",
                quoted(value),
                value.len()
            ),
        ));
    }
    Ok(())
}

/// `PersonId` rules.
pub fn check_person_id(id: &str) -> Result<(), RuleViolation> {
    check_id(
        "person id",
        "the person id",
        id,
        "InvalidParameterValue.PersonIdIllegal",
        "InvalidParameterValue.PersonIdTooLong",
    )
}

/// `GroupId` rules (`tencent.group_id`).
pub fn check_group_id(id: &str) -> Result<(), RuleViolation> {
    check_id(
        "tencent.group_id",
        "the group id",
        id,
        "InvalidParameterValue.GroupIdIllegal",
        "InvalidParameterValue.GroupIdTooLong",
    )
}

/// `PersonName` rules.
pub fn check_person_name(name: &str) -> Result<(), RuleViolation> {
    if name.is_empty() {
        return Err(RuleViolation::new(
            "person name",
            Some("MissingParameter.ErrorParameterEmpty"),
            "the person name is empty".into(),
        ));
    }
    if let Some((i, c)) = name.char_indices().find(|&(_, c)| !is_name_char(c)) {
        return Err(RuleViolation::new(
            "person name",
            Some("InvalidParameterValue.PersonNameIllegal"),
            format!(
                "{} has {c:?} at byte {i}: Tencent allows only Chinese characters, English letters, digits, - and _",
                quoted(name)
            ),
        ));
    }
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(RuleViolation::new(
            "person name",
            Some("InvalidParameterValue.PersonNameTooLong"),
            format!(
                "{} has {n} characters: Tencent allows at most {MAX_NAME_CHARS}",
                quoted(name)
            ),
        ));
    }
    Ok(())
}

/// The `PersonName` sent when the technician gave none: the person id with
/// every character a name may not hold (`%@#&`) turned into `_`, cut to 60
/// characters. Legal for every legal person id.
pub fn default_person_name(person_id: &str) -> String {
    person_id
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .take(MAX_NAME_CHARS)
        .collect()
}

/// The `PersonName` CreatePerson sends for an entry.
pub fn person_name(person_id: &str, given: Option<&str>) -> String {
    given.map_or_else(|| default_person_name(person_id), str::to_string)
}

/// `X-TC-Region` (`tencent.region`): empty, or a region name such as
/// `ap-guangzhou` (lower-case letters, digits and `-`, at most 32).
pub fn check_region(region: &str) -> Result<(), RuleViolation> {
    let ok = region.len() <= 32
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(RuleViolation::new(
            "tencent.region",
            Some("InvalidParameterValue"),
            format!(
                "{} is not a region name (lower-case letters, digits and -, e.g. ap-guangzhou)",
                quoted(region)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_take_letters_digits_and_six_marks_up_to_64_bytes() {
        for ok in ["a", "emp#42@hq", "-%@#&_", &"x".repeat(64), "A1-b2_c3"] {
            assert_eq!(check_person_id(ok), Ok(()), "{ok}");
            assert_eq!(check_group_id(ok), Ok(()), "{ok}");
        }
        let code = |r: Result<(), RuleViolation>| r.err().and_then(|e| e.vendor_code);
        for bad in ["张三", "a b", "a/b", "a.b", "a😀", "a+b", "a\u{0}", "é"] {
            assert_eq!(
                code(check_person_id(bad)),
                Some("InvalidParameterValue.PersonIdIllegal"),
                "{bad}"
            );
            assert_eq!(
                code(check_group_id(bad)),
                Some("InvalidParameterValue.GroupIdIllegal"),
                "{bad}"
            );
        }
        assert_eq!(
            code(check_person_id(&"x".repeat(65))),
            Some("InvalidParameterValue.PersonIdTooLong")
        );
        assert_eq!(
            code(check_person_id("")),
            Some("MissingParameter.ErrorParameterEmpty")
        );
    }

    #[test]
    fn names_take_cjk_letters_digits_dash_underscore_up_to_60_chars() {
        for ok in ["张三", "Zhang_San-2", &"名".repeat(60), "a"] {
            assert_eq!(check_person_name(ok), Ok(()), "{ok}");
        }
        for bad in ["emp#42", "a b", "a@b", "a.b", "😀", "ｚ"] {
            assert!(check_person_name(bad).is_err(), "{bad}");
        }
        assert!(check_person_name(&"a".repeat(61)).is_err());
        assert!(check_person_name("").is_err());
    }

    #[test]
    fn the_default_name_of_every_legal_id_is_legal() {
        assert_eq!(default_person_name("emp#42@hq"), "emp_42_hq");
        assert_eq!(default_person_name("%@#&"), "____");
        assert_eq!(default_person_name(&"y".repeat(64)), "y".repeat(60));
        let marks: Vec<char> = ID_PUNCTUATION.chars().collect();
        for n in 1..=64 {
            let id: String = (0..n).map(|i| marks[i % marks.len()]).collect();
            assert_eq!(check_person_id(&id), Ok(()));
            assert_eq!(check_person_name(&default_person_name(&id)), Ok(()), "{id}");
        }
    }

    #[test]
    fn regions_are_plain_names() {
        assert_eq!(check_region(""), Ok(()));
        assert_eq!(check_region("ap-guangzhou"), Ok(()));
        assert!(check_region("ap-guangzhou\r\nX-Evil: 1").is_err());
        assert!(check_region("AP").is_err());
    }
}
