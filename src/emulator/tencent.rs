//! Tencent Cloud IAI as the emulator answers it: `CreateFace`,
//! `CreatePerson`, `GetPersonBaseInfo`. Errors come with HTTP 200 in
//! `Response.Error`, like the real API.

use super::http::Request;
use super::{
    check_image, request_id, with_faults, FaultKind, ImageProblem, Outcome, Person, Shared,
    StoredFace,
};
use crate::cloud::sign::{same_signature, tc3_sign, Tc3Request};
use crate::cloud::tencent::SERVICE;
use crate::detect::SeetaDetector;
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
    let Ok(params) = serde_json::from_slice::<Value>(&req.body) else {
        return error(shared, "InvalidParameter", "the body is not JSON");
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
        || match action.as_str() {
            "CreateFace" => create_face(shared, &params, version, detector),
            "CreatePerson" => create_person(shared, &params, version, detector),
            "GetPersonBaseInfo" => get_person(shared, &params),
            _ => error(shared, "InvalidAction", "unknown action"),
        },
    )
}

fn text(params: &Value, key: &str) -> String {
    params
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

fn create_face(
    shared: &Shared,
    params: &Value,
    version: &str,
    detector: &mut Option<SeetaDetector>,
) -> Outcome {
    let person_id = text(params, "PersonId");
    let images: Vec<String> = params
        .get("Images")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if person_id.is_empty() || images.is_empty() {
        return error(
            shared,
            "MissingParameter.ErrorParameterEmpty",
            "PersonId and Images are required",
        );
    }
    if images.len() > MAX_IMAGES_PER_CALL {
        return error(
            shared,
            "InvalidParameterValue.UploadFaceNumExceed",
            "at most four images per call",
        );
    }
    if images.iter().any(|i| i.len() > MAX_BASE64_BYTES) {
        return error(
            shared,
            "FailedOperation.ImageSizeExceed",
            "base64 image data must be at most 5 MB",
        );
    }
    // Bind first: a guard in a `match` scrutinee would live through the arms.
    let existing = shared.lock().persons.get(&person_id).map(|p| p.faces.len());
    let Some(existing) = existing else {
        return error(
            shared,
            "InvalidParameterValue.PersonIdNotExist",
            "the person does not exist",
        );
    };
    if existing + images.len() > MAX_FACES_PER_PERSON {
        return error(
            shared,
            "InvalidParameterValue.PersonFaceNumExceed",
            "a person has at most five faces",
        );
    }
    let mut ret_codes = Vec::new();
    let mut added = Vec::new();
    for b64 in &images {
        let code = match decode_base64(b64)
            .map(|bytes| check_image(&bytes, 64, 4000, detector, shared.config.check_faces))
        {
            None | Some(Err(ImageProblem::Decode)) => -1102,
            Some(Err(ImageProblem::Size)) => -1109,
            Some(Err(ImageProblem::NoFace)) => -1101,
            Some(Ok(c)) => {
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
    ok(shared, fields)
}

fn create_person(
    shared: &Shared,
    params: &Value,
    version: &str,
    detector: &mut Option<SeetaDetector>,
) -> Outcome {
    let (group_id, person_id, name) = (
        text(params, "GroupId"),
        text(params, "PersonId"),
        text(params, "PersonName"),
    );
    if group_id.is_empty() || person_id.is_empty() || name.is_empty() {
        return error(
            shared,
            "MissingParameter.ErrorParameterEmpty",
            "GroupId, PersonId and PersonName are required",
        );
    }
    if shared.lock().persons.contains_key(&person_id) {
        return error(
            shared,
            "InvalidParameterValue.PersonIdAlreadyExist",
            "the person already exists",
        );
    }
    let image = text(params, "Image");
    if image.len() > MAX_BASE64_BYTES {
        return error(
            shared,
            "FailedOperation.ImageSizeExceed",
            "base64 image data must be at most 5 MB",
        );
    }
    let checked = match decode_base64(&image)
        .map(|bytes| check_image(&bytes, 64, 4000, detector, shared.config.check_faces))
    {
        None | Some(Err(ImageProblem::Decode)) => {
            return error(
                shared,
                "FailedOperation.ImageDecodeFailed",
                "the image cannot be decoded",
            )
        }
        Some(Err(ImageProblem::Size)) => {
            return error(
                shared,
                "FailedOperation.ImageResolutionExceed",
                "the image size is out of range",
            )
        }
        Some(Err(ImageProblem::NoFace)) => {
            return error(
                shared,
                "InvalidParameterValue.NoFaceInPhoto",
                "no face in the photo",
            )
        }
        Some(Ok(c)) => c,
    };
    let (w, h) = (checked.width, checked.height);
    let mut state = shared.lock();
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
    ok(shared, fields)
}

fn get_person(shared: &Shared, params: &Value) -> Outcome {
    let person_id = text(params, "PersonId");
    let found = shared.lock().persons.get(&person_id).map(|p| {
        (
            p.name.clone(),
            p.faces
                .iter()
                .map(|f| f.face_id.clone())
                .collect::<Vec<_>>(),
        )
    });
    match found {
        None => error(
            shared,
            "InvalidParameterValue.PersonIdNotExist",
            "the person does not exist",
        ),
        Some((name, faces)) => ok(
            shared,
            json!({"PersonName": name, "Gender": 0, "FaceIds": faces}),
        ),
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
