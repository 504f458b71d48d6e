//! Tencent Cloud IAI as the emulator answers it: `CreateFace`,
//! `CreatePerson`, `GetPersonBaseInfo`. Errors come with HTTP 200 in
//! `Response.Error`, like the real API.

use super::http::Request;
use super::{
    check_image, request_id, with_faults, Edges, FaultKind, ImageProblem, Outcome, Person, Shared,
    StoredFace,
};
use enrolld::capture::detect::SeetaDetector;
use enrolld::cloud::sign::{same_signature, tc3_sign, Tc3Request};
use enrolld::cloud::tencent::SERVICE;
use serde_json::{json, Value};

const MAX_SKEW_S: i64 = 300;
const MAX_BASE64_BYTES: usize = 5 * 1024 * 1024;
const MAX_FACES_PER_PERSON: usize = 5;
const MAX_IMAGES_PER_CALL: usize = 4;

fn next_request_id(shared: &Shared) -> String {
    let n: u64 = shared.lock().requests.values().sum();
    request_id(n)
}

fn error(shared: &Shared, code: &str, message: &str) -> Outcome {
    shared.count_error(code);
    Outcome::Answer(
        200,
        json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": next_request_id(shared)}}),
    )
}

fn ok(shared: &Shared, mut fields: Value) -> Outcome {
    if let Some(o) = fields.as_object_mut() {
        o.insert("RequestId".into(), json!(next_request_id(shared)));
    }
    Outcome::Answer(200, json!({ "Response": fields }))
}

/// `TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request, SignedHeaders=..., Signature=...`
struct Authorization<'a> {
    secret_id: &'a str,
    date: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("TC3-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (secret_id, date, service, terminator) =
        (scope.next()?, scope.next()?, scope.next()?, scope.next()?);
    if terminator != "tc3_request" || scope.next().is_some() {
        return None;
    }
    Some(Authorization {
        secret_id,
        date,
        service,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

/// Verifies signature, credential and timestamp; the error answer otherwise.
fn authenticate(shared: &Shared, req: &Request) -> Result<(), Outcome> {
    let Some(auth) = req.header("authorization").and_then(parse_authorization) else {
        return Err(error(
            shared,
            "AuthFailure.InvalidAuthorization",
            "Authorization header is missing or malformed",
        ));
    };
    if auth.secret_id != shared.config.key_id {
        return Err(error(
            shared,
            "AuthFailure.SecretIdNotFound",
            "the SecretId does not exist",
        ));
    }
    let Some(ts) = req
        .header("x-tc-timestamp")
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return Err(error(
            shared,
            "MissingParameter",
            "X-TC-Timestamp is missing",
        ));
    };
    if (ts - shared.now_ms().div_euclid(1000)).abs() > MAX_SKEW_S {
        return Err(error(
            shared,
            "AuthFailure.SignatureExpire",
            "the signature expired: the client clock is more than 5 minutes off",
        ));
    }
    if auth.service != SERVICE || auth.signed_headers != "content-type;host" {
        return Err(error(
            shared,
            "AuthFailure.SignatureFailure",
            "unexpected service or signed headers",
        ));
    }
    let expected = tc3_sign(&Tc3Request {
        secret_id: auth.secret_id,
        secret_key: &shared.config.secret,
        host: req.header("host").unwrap_or(""),
        service: SERVICE,
        content_type: req.header("content-type").unwrap_or(""),
        timestamp: ts,
        body: &req.body,
    });
    if expected.date != auth.date || !same_signature(&expected.signature, auth.signature) {
        return Err(error(
            shared,
            "AuthFailure.SignatureFailure",
            "the signature does not match",
        ));
    }
    Ok(())
}

pub(crate) fn handle(
    shared: &Shared,
    req: &Request,
    detector: &mut Option<SeetaDetector>,
) -> Outcome {
    let action = req.header("x-tc-action").unwrap_or("").to_string();
    *shared.lock().requests.entry(action.clone()).or_default() += 1;
    if req.method != "POST" || req.path != "/" {
        return Outcome::Answer(404, json!({"message": "POST / only"}));
    }
    if let Err(answer) = authenticate(shared, req) {
        return answer;
    }
    let version = req.header("x-tc-version").unwrap_or("");
    if version != "2018-03-01" && version != "2020-03-03" {
        return error(
            shared,
            "InvalidParameter",
            "X-TC-Version must be 2018-03-01 or 2020-03-03",
        );
    }
    let params = match serde_json::from_slice::<Value>(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                shared,
                "InvalidParameter.InvalidParameter",
                "the body is not a JSON object",
            )
        }
    };
    with_faults(
        shared,
        &action,
        |kind| match kind {
            FaultKind::RateLimit => {
                Some(error(shared, "RequestLimitExceeded", "too many requests"))
            }
            FaultKind::Busy => Some(error(shared, "InternalError", "internal error")),
            FaultKind::BadCredentials => Some(error(
                shared,
                "AuthFailure.SecretIdNotFound",
                "the SecretId does not exist",
            )),
            FaultKind::Quota => Some(error(
                shared,
                "LimitExceeded.ErrorFaceNumExceed",
                "face number limit exceeded",
            )),
            FaultKind::Billing => Some(error(
                shared,
                "ResourceUnavailable.InArrears",
                "the account is in arrears",
            )),
            _ => None,
        },
        || {
            let answer = match action.as_str() {
                "CreateFace" => create_face(shared, &params, version, detector),
                "CreatePerson" => create_person(shared, &params, version, detector),
                "GetPersonBaseInfo" => get_person(shared, &params),
                "DeletePerson" => delete_person(shared, &params, version),
                "DeleteFace" => delete_face(shared, &params),
                _ => Err(error(
                    shared,
                    "UnsupportedOperation.UnknowMethod",
                    "未知方法名。",
                )),
            };
            answer.unwrap_or_else(|refused| refused)
        },
    )
}

// Tencent's documented rules, written here from the CreateFace page's error
// table and the CreatePerson page, apart from the client's own checks
// (`model::rules::tencent`): the contract tests compare the two readings.

/// `PersonId` / `GroupId`: "英文、数字、-%@#&_" only, at most 64 bytes.
fn id_ok(v: &str) -> bool {
    v.bytes().all(|b| {
        matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'%' | b'@' | b'#' | b'&' | b'_')
    })
}

/// `PersonName`: "中英文、-、_、数字" only, 1 to 60 characters.
fn name_ok(v: &str) -> bool {
    v.chars().all(|c| {
        matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}')
    })
}

/// A string parameter: `Ok("")` when absent, `Err` when of another type.
fn string_param<'a>(shared: &Shared, params: &'a Value, key: &str) -> Result<&'a str, Outcome> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(error(
            shared,
            "InvalidParameter.InvalidParameter",
            &format!("{key} must be a string"),
        )),
    }
}

/// An optional integer control (`QualityControl`, `UniquePersonControl`):
/// 0 when absent; Tencent refuses anything but an integer 0 to 4.
fn control_param(shared: &Shared, params: &Value, key: &str) -> Result<u64, Outcome> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_u64() {
            Some(n) if n <= 4 => Ok(n),
            _ => Err(error(
                shared,
                "InvalidParameterValue",
                &format!("{key} must be an integer 0 to 4, not {v}"),
            )),
        },
    }
}

/// `FaceMatchThreshold`: a number 0 to 100 when given.
fn threshold_param(shared: &Shared, params: &Value) -> Result<(), Outcome> {
    match params.get("FaceMatchThreshold") {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_f64().is_some_and(|t| (0.0..=100.0).contains(&t)) => Ok(()),
        Some(v) => Err(error(
            shared,
            "InvalidParameterValue",
            &format!("FaceMatchThreshold must be a number 0 to 100, not {v}"),
        )),
    }
}

/// Checks a required id parameter (`PersonId`, `GroupId`).
fn required_id<'a>(shared: &Shared, params: &'a Value, key: &str) -> Result<&'a str, Outcome> {
    let v = string_param(shared, params, key)?;
    let (illegal, too_long) = match key {
        "GroupId" => (
            "InvalidParameterValue.GroupIdIllegal",
            "InvalidParameterValue.GroupIdTooLong",
        ),
        _ => (
            "InvalidParameterValue.PersonIdIllegal",
            "InvalidParameterValue.PersonIdTooLong",
        ),
    };
    if v.is_empty() {
        Err(error(
            shared,
            "MissingParameter.ErrorParameterEmpty",
            &format!("{key} is required"),
        ))
    } else if !id_ok(v) {
        Err(error(
            shared,
            illegal,
            &format!("{key} may hold only English letters, digits and -%@#&_"),
        ))
    } else if v.len() > 64 {
        Err(error(
            shared,
            too_long,
            &format!("{key} is longer than 64 bytes"),
        ))
    } else {
        Ok(v)
    }
}

fn required_name<'a>(shared: &Shared, params: &'a Value) -> Result<&'a str, Outcome> {
    let v = string_param(shared, params, "PersonName")?;
    if v.is_empty() {
        Err(error(
            shared,
            "MissingParameter.ErrorParameterEmpty",
            "PersonName is required",
        ))
    } else if !name_ok(v) {
        Err(error(
            shared,
            "InvalidParameterValue.PersonNameIllegal",
            "PersonName may hold only Chinese, English letters, digits, - and _",
        ))
    } else if v.chars().count() > 60 {
        Err(error(
            shared,
            "InvalidParameterValue.PersonNameTooLong",
            "PersonName is longer than 60 characters",
        ))
    } else {
        Ok(v)
    }
}

const EDGES: Edges = Edges {
    min: 64,
    max_jpeg: 4000,
    max_other: 2000,
};

/// A base64 image: its bytes, or the error CreatePerson answers with.
fn image_bytes(shared: &Shared, b64: &str) -> Result<Vec<u8>, Outcome> {
    use base64::Engine;
    if b64.is_empty() {
        return Err(error(
            shared,
            "InvalidParameterValue.ImageEmpty",
            "the image is empty",
        ));
    }
    if b64.len() > MAX_BASE64_BYTES {
        return Err(error(
            shared,
            "FailedOperation.ImageSizeExceed",
            "base64 image data must be at most 5 MB",
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| {
            error(
                shared,
                "FailedOperation.ImageDecodeFailed",
                "the image is not base64",
            )
        })
}

fn create_face(
    shared: &Shared,
    params: &Value,
    version: &str,
    detector: &mut Option<SeetaDetector>,
) -> Result<Outcome, Outcome> {
    let person_id = required_id(shared, params, "PersonId")?.to_string();
    let quality = control_param(shared, params, "QualityControl")?;
    threshold_param(shared, params)?;
    let images: Vec<&str> = match params.get("Images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        Some(_) => {
            return Err(error(
                shared,
                "InvalidParameter.InvalidParameter",
                "Images must be an array of base64 strings",
            ))
        }
    };
    if images.is_empty() {
        return Err(error(
            shared,
            "MissingParameter.ErrorParameterEmpty",
            "Images is required",
        ));
    }
    if images.len() > MAX_IMAGES_PER_CALL {
        return Err(error(
            shared,
            "InvalidParameterValue.UploadFaceNumExceed",
            "一次最多上传四张人脸。",
        ));
    }
    if images.iter().any(|i| i.is_empty()) {
        return Err(error(
            shared,
            "InvalidParameterValue.ImageEmpty",
            "an image is empty",
        ));
    }
    if images.iter().any(|i| i.len() > MAX_BASE64_BYTES) {
        return Err(error(
            shared,
            "FailedOperation.ImageSizeExceed",
            "base64 image data must be at most 5 MB",
        ));
    }
    // Bind first: a guard in a `match` scrutinee would live through the arms.
    let existing = shared.lock().persons.get(&person_id).map(|p| p.faces.len());
    let Some(existing) = existing else {
        return Err(error(
            shared,
            "InvalidParameterValue.PersonIdNotExist",
            "the person does not exist",
        ));
    };
    if existing + images.len() > MAX_FACES_PER_PERSON {
        return Err(error(
            shared,
            "InvalidParameterValue.PersonFaceNumExceed",
            "人员人脸数量超出限制。单个人员最多可以包含五张人脸。",
        ));
    }
    let mut ret_codes = Vec::new();
    let mut added = Vec::new();
    for b64 in &images {
        use base64::Engine;
        let code = match base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|bytes| check_image(&bytes, EDGES, detector, shared.config.check_faces))
        {
            Err(_) | Ok(Err(ImageProblem::Decode)) => -1102,
            Ok(Err(ImageProblem::TooSmall | ImageProblem::TooLarge)) => -1109,
            Ok(Err(ImageProblem::NoFace)) => -1101,
            Ok(Ok(c)) if !c.meets_quality(quality) => -1601,
            Ok(Ok(c)) => {
                added.push(c);
                0
            }
        };
        ret_codes.push(code);
    }
    let mut state = shared.lock();
    let ids: Vec<String> = added.iter().map(|_| state.new_face_id()).collect();
    if let Some(person) = state.persons.get_mut(&person_id) {
        person.faces.extend(
            ids.iter()
                .cloned()
                .zip(added)
                .map(|(id, c)| StoredFace::accepted(&person_id, id, c)),
        );
    }
    drop(state);
    let mut fields = json!({"SucFaceNum": ids.len(), "SucFaceIds": ids, "RetCode": ret_codes});
    if version == "2020-03-03" {
        fields["FaceModelVersion"] = json!("3.0");
    }
    Ok(ok(shared, fields))
}

fn create_person(
    shared: &Shared,
    params: &Value,
    version: &str,
    detector: &mut Option<SeetaDetector>,
) -> Result<Outcome, Outcome> {
    let group_id = required_id(shared, params, "GroupId")?.to_string();
    let person_id = required_id(shared, params, "PersonId")?.to_string();
    let name = required_name(shared, params)?.to_string();
    let quality = control_param(shared, params, "QualityControl")?;
    let unique = control_param(shared, params, "UniquePersonControl")?;
    let in_group = shared
        .lock()
        .persons
        .get(&person_id)
        .map(|p| p.groups.contains(&group_id));
    match in_group {
        Some(true) => {
            return Err(error(
                shared,
                "InvalidParameterValue.PersonExistInGroup",
                "组中已包含对应的人员Id。",
            ))
        }
        Some(false) => {
            return Err(error(
                shared,
                "InvalidParameterValue.PersonIdAlreadyExist",
                "人员ID已经存在。人员ID不可重复。",
            ))
        }
        None => {}
    }
    let bytes = image_bytes(shared, string_param(shared, params, "Image")?)?;
    let checked = match check_image(&bytes, EDGES, detector, shared.config.check_faces) {
        Ok(c) => c,
        Err(ImageProblem::Decode) => {
            return Err(error(
                shared,
                "FailedOperation.ImageDecodeFailed",
                "the image cannot be decoded",
            ))
        }
        Err(ImageProblem::TooSmall) => {
            return Err(error(
                shared,
                "FailedOperation.ImageResolutionTooSmall",
                "the short edge is under 64 px",
            ))
        }
        Err(ImageProblem::TooLarge) => {
            return Err(error(
                shared,
                "FailedOperation.ImageResolutionExceed",
                "the long edge is over 4000 px (JPEG) or 2000 px (other formats)",
            ))
        }
        Err(ImageProblem::NoFace) => {
            return Err(error(
                shared,
                "InvalidParameterValue.NoFaceInPhoto",
                "no face in the photo",
            ))
        }
    };
    if !checked.meets_quality(quality) {
        return Err(error(
            shared,
            "FailedOperation.FaceQualityNotQualified",
            "人脸质量不满足要求。",
        ));
    }
    let (w, h) = (checked.width, checked.height);
    let mut state = shared.lock();
    // UniquePersonControl: a face already in the group creates nobody, and
    // the answer names its person. The emulator's "same face" is the same
    // image, which any of Tencent's levels 1-4 would match.
    if unique > 0 {
        let similar = state.persons.iter().find(|(_, p)| {
            p.groups.contains(&group_id) && p.faces.iter().any(|f| f.image_sha256 == checked.sha256)
        });
        if let Some((similar, _)) = similar {
            let fields = json!({"FaceId": "", "FaceRect": {"X": 0, "Y": 0, "Width": w, "Height": h}, "SimilarPersonId": similar});
            drop(state);
            return Ok(ok(shared, fields));
        }
    }
    let face_id = state.new_face_id();
    state.persons.insert(
        person_id.clone(),
        Person {
            name,
            groups: vec![group_id],
            faces: vec![StoredFace::accepted(&person_id, face_id.clone(), checked)],
        },
    );
    drop(state);
    let mut fields = json!({"FaceId": face_id, "FaceRect": {"X": 0, "Y": 0, "Width": w, "Height": h}, "SimilarPersonId": ""});
    if version == "2020-03-03" {
        fields["FaceModelVersion"] = json!("3.0");
    }
    Ok(ok(shared, fields))
}

/// DeletePerson: the person leaves every group with all its faces. An
/// unknown person is refused as the 2018 docs' example shows it
/// (`ResourceNotFound.ErrorPersonNotExisted`), or as version 2020 does.
fn delete_person(shared: &Shared, params: &Value, version: &str) -> Result<Outcome, Outcome> {
    let person_id = required_id(shared, params, "PersonId")?.to_string();
    if shared.lock().persons.remove(&person_id).is_none() {
        return Err(if version == "2018-03-01" {
            error(
                shared,
                "ResourceNotFound.ErrorPersonNotExisted",
                "the person does not exist",
            )
        } else {
            error(
                shared,
                "InvalidParameterValue.PersonIdNotExist",
                "the person does not exist",
            )
        });
    }
    Ok(ok(shared, json!({})))
}

/// DeleteFace: removes the named faces that the person has; refused as a
/// whole when it would leave the person no face.
fn delete_face(shared: &Shared, params: &Value) -> Result<Outcome, Outcome> {
    let person_id = required_id(shared, params, "PersonId")?.to_string();
    let ids: Vec<String> = match params.get("FaceIds") {
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        None | Some(Value::Null) => {
            return Err(error(
                shared,
                "MissingParameter.ErrorParameterEmpty",
                "FaceIds is required",
            ))
        }
        Some(_) => {
            return Err(error(
                shared,
                "InvalidParameter.InvalidParameter",
                "FaceIds must be a non-empty array of strings",
            ))
        }
    };
    let mut state = shared.lock();
    let Some(person) = state.persons.get_mut(&person_id) else {
        drop(state);
        return Err(error(
            shared,
            "InvalidParameterValue.PersonIdNotExist",
            "the person does not exist",
        ));
    };
    let deleted: Vec<String> = person
        .faces
        .iter()
        .filter(|f| ids.contains(&f.face_id))
        .map(|f| f.face_id.clone())
        .collect();
    if deleted.len() == person.faces.len() {
        drop(state);
        return Err(error(
            shared,
            "InvalidParameterValue.DeleteFaceNumExceed",
            "删除人脸数量超出限制。每个人员至少需要包含一张人脸。",
        ));
    }
    person.faces.retain(|f| !deleted.contains(&f.face_id));
    drop(state);
    Ok(ok(
        shared,
        json!({"SucDeletedNum": deleted.len(), "SucFaceIds": deleted}),
    ))
}

fn get_person(shared: &Shared, params: &Value) -> Result<Outcome, Outcome> {
    let person_id = required_id(shared, params, "PersonId")?;
    let found = shared.lock().persons.get(person_id).map(|p| {
        (
            p.name.clone(),
            p.faces
                .iter()
                .map(|f| f.face_id.clone())
                .collect::<Vec<_>>(),
        )
    });
    match found {
        None => Err(error(
            shared,
            "InvalidParameterValue.PersonIdNotExist",
            "the person does not exist",
        )),
        Some((name, faces)) => Ok(ok(
            shared,
            json!({"PersonName": name, "Gender": 0, "FaceIds": faces}),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_parse() {
        let a = parse_authorization(
            "TC3-HMAC-SHA256 Credential=AKID/2019-02-25/iai/tc3_request, SignedHeaders=content-type;host, Signature=abc",
        )
        .expect("parses");
        assert_eq!(
            (
                a.secret_id,
                a.date,
                a.service,
                a.signed_headers,
                a.signature
            ),
            ("AKID", "2019-02-25", "iai", "content-type;host", "abc")
        );
        assert!(parse_authorization("Basic abc").is_none());
        assert!(parse_authorization(
            "TC3-HMAC-SHA256 Credential=AKID/2019-02-25/iai/other, SignedHeaders=x, Signature=y"
        )
        .is_none());
    }
}
