//! Tencent Cloud IAI `CreateFace` (with `CreatePerson` and `GetPersonBaseInfo`).
//!
//! Every call is `POST /` with a JSON body, TC3-HMAC-SHA256 signed with service
//! `iai` whatever the endpoint's host. Errors come with HTTP 200 as
//! `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`.
//!
//! Withdrawal: `DeletePerson` for a person this device created, else
//! `DeleteFace` of the faces it uploaded (`DeletePerson` when that would
//! leave the person no face); a person the cloud no longer has is deleted.
//!
//! No duplicates: before the first send the person's face ids are recorded
//! (`face_ids_before`). When an upload's outcome is unknown, the next attempt
//! asks `GetPersonBaseInfo` first: new face ids mean it landed.

use super::sign::{tc3_sign, Tc3Request, TC3_CONTENT_TYPE};
use super::{classify_http_status, ForgetRequest, SkewClock, UploadError, Uploaded, Uploader};
use crate::cloud::http::{host_of, HttpClient};
use crate::config::Secret;
use crate::model::{
    rules::tencent as rules, CloudDeletion, Enrollment, ErrorClass, Provider, UploadCode,
};
use serde_json::Value;
use std::sync::Arc;

/// The service name Tencent signs IAI requests with.
pub const SERVICE: &str = "iai";

const PERSON_NOT_EXIST: &str = "InvalidParameterValue.PersonIdNotExist";
/// DeletePerson's answer for an unknown person in the 2018 docs' example;
/// it and [`PERSON_NOT_EXIST`] both mean "already gone".
const PERSON_NOT_EXISTED: &str = "ResourceNotFound.ErrorPersonNotExisted";
/// DeleteFace refuses to leave a person without a face.
const DELETE_FACE_NUM_EXCEED: &str = "InvalidParameterValue.DeleteFaceNumExceed";
/// CreatePerson's refusal under `QualityControl` (CreateFace says -1601).
const QUALITY_NOT_QUALIFIED: &str = "FailedOperation.FaceQualityNotQualified";
/// CreatePerson's answers for a person that exists already (in this group
/// or another): add faces to it instead.
const PERSON_EXISTS: [&str; 3] = [
    "InvalidParameterValue.PersonIdAlreadyExist",
    "InvalidParameterValue.PersonExistInGroup",
    "FailedOperation.GroupPersonMapExist",
];

/// Every code of the CreateFace page's error table (section 6), with what
/// enrolld does about it. `classify_code` looks here first; a test keeps
/// this table and the emulator's answers in step with the vendor's list.
pub const DOCUMENTED_CODES: [(&str, ErrorClass); 65] = {
    use ErrorClass::*;
    [
        ("FailedOperation.ConflictOperation", Retry),
        ("FailedOperation.DuplicatedGroupDescription", Never),
        // The configured group is being deleted: uploads wait for an operator.
        ("FailedOperation.GroupInDeletedState", Operator),
        ("FailedOperation.GroupPersonMapExist", Never),
        ("FailedOperation.GroupPersonMapNotExist", Never),
        ("FailedOperation.ImageDecodeFailed", Never),
        ("FailedOperation.ImageDownloadError", Never),
        ("FailedOperation.ImageFacedetectFailed", Never),
        ("FailedOperation.ImageSizeExceed", Never),
        ("FailedOperation.RequestTimeout", Retry),
        ("FailedOperation.SearchFacesExceed", Never),
        ("FailedOperation.ServerError", Retry),
        ("InternalError", Retry),
        ("InvalidParameter.InvalidParameter", Never),
        ("InvalidParameterValue.AccountFaceNumExceed", Operator),
        ("InvalidParameterValue.DeleteFaceNumExceed", Never),
        ("InvalidParameterValue.GroupExDescriptionsExceed", Never),
        (
            "InvalidParameterValue.GroupExDescriptionsNameIdentical",
            Never,
        ),
        (
            "InvalidParameterValue.GroupExDescriptionsNameIllegal",
            Never,
        ),
        (
            "InvalidParameterValue.GroupExDescriptionsNameTooLong",
            Never,
        ),
        ("InvalidParameterValue.GroupFaceNumExceed", Operator),
        ("InvalidParameterValue.GroupIdAlreadyExist", Never),
        // tencent.group_id is wrong: every entry would fail, so pause and
        // keep them until the configuration is fixed.
        ("InvalidParameterValue.GroupIdIllegal", Operator),
        ("InvalidParameterValue.GroupIdNotExist", Operator),
        ("InvalidParameterValue.GroupIdTooLong", Operator),
        ("InvalidParameterValue.GroupIdsExceed", Never),
        ("InvalidParameterValue.GroupNameAlreadyExist", Never),
        ("InvalidParameterValue.GroupNameIllegal", Never),
        ("InvalidParameterValue.GroupNameTooLong", Never),
        ("InvalidParameterValue.GroupNumExceed", Operator),
        ("InvalidParameterValue.GroupNumPerPersonExceed", Operator),
        ("InvalidParameterValue.GroupTagIllegal", Never),
        ("InvalidParameterValue.GroupTagTooLong", Never),
        ("InvalidParameterValue.ImageEmpty", Never),
        ("InvalidParameterValue.LimitExceed", Never),
        ("InvalidParameterValue.NoFaceInGroups", Never),
        ("InvalidParameterValue.NoFaceInPhoto", Never),
        ("InvalidParameterValue.OffsetExceed", Never),
        (
            "InvalidParameterValue.PersonExDescriptionInfosExceed",
            Never,
        ),
        (
            "InvalidParameterValue.PersonExDescriptionsNameIdentical",
            Never,
        ),
        (
            "InvalidParameterValue.PersonExDescriptionsNameIllegal",
            Never,
        ),
        (
            "InvalidParameterValue.PersonExDescriptionsNameTooLong",
            Never,
        ),
        ("InvalidParameterValue.PersonExistInGroup", Never),
        ("InvalidParameterValue.PersonFaceNumExceed", Never),
        ("InvalidParameterValue.PersonGenderIllegal", Never),
        ("InvalidParameterValue.PersonIdAlreadyExist", Never),
        ("InvalidParameterValue.PersonIdIllegal", Never),
        ("InvalidParameterValue.PersonIdNotExist", Never),
        ("InvalidParameterValue.PersonIdTooLong", Never),
        ("InvalidParameterValue.PersonNameIllegal", Never),
        ("InvalidParameterValue.PersonNameTooLong", Never),
        ("InvalidParameterValue.SearchPersonsExceed", Never),
        ("InvalidParameterValue.UploadFaceNumExceed", Never),
        ("InvalidParameterValue.UrlIllegal", Never),
        ("LimitExceeded.ErrorFaceNumExceed", Operator),
        ("MissingParameter.ErrorParameterEmpty", Never),
        ("ResourceUnavailable.Delivering", Retry),
        ("ResourceUnavailable.Freeze", Operator),
        ("ResourceUnavailable.InArrears", Operator),
        ("ResourceUnavailable.NotExist", Operator),
        ("ResourceUnavailable.Recover", Operator),
        ("ResourceUnavailable.StopUsing", Operator),
        ("ResourceUnavailable.UnknownStatus", Operator),
        ("ResourcesSoldOut.ChargeStatusException", Operator),
        // Our request is wrong for this API version: keep everything.
        ("UnsupportedOperation.UnknowMethod", Operator),
    ]
};

/// Classifies an error code from `Response.Error.Code`: the documented
/// table first, then Tencent's common code families.
pub fn classify_code(code: &str) -> ErrorClass {
    use ErrorClass::*;
    if let Some((_, class)) = DOCUMENTED_CODES.iter().find(|(c, _)| *c == code) {
        return *class;
    }
    const RETRY: [&str; 2] = [
        "FailedOperation.RpcFail",
        "FailedOperation.CreateFaceConcurrent",
    ];
    if code == "AuthFailure.SignatureExpire" {
        Clock
    } else if code.starts_with("RequestLimitExceeded")
        || code.starts_with("InternalError")
        || RETRY.contains(&code)
    {
        Retry
    } else if code.starts_with("AuthFailure")
        || code.starts_with("InvalidAction")
        || code.starts_with("UnauthorizedOperation")
        || code.starts_with("ResourceUnavailable")
        || code.starts_with("ResourcesSoldOut")
        || code.starts_with("ResourceInsufficient")
        || code.starts_with("UnsupportedOperation")
        || code.starts_with("LimitExceeded")
    {
        Operator
    } else if code.starts_with("InvalidParameter")
        || code.starts_with("MissingParameter")
        || code.starts_with("FailedOperation.Image")
        || code.starts_with("FailedOperation.Face")
    {
        // Image errors, no face, too many faces for this person, bad ids.
        Never
    } else {
        Retry
    }
}

/// Per-image `RetCode`s that retrying will not change.
fn image_refused(code: i64) -> bool {
    matches!(code, -1101 | -1102 | -1109 | -1601 | -1604)
}

/// Tencent Cloud IAI client.
pub struct TencentClient {
    http: Arc<HttpClient>,
    url: String,
    host: String,
    secret_id: String,
    secret: Secret,
    region: String,
    version: String,
    group_id: String,
    gates: TencentGates,
    clock: Arc<SkewClock>,
}

/// Tencent's own gates, sent where it takes them (see `[tencent]`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TencentGates {
    pub unique_person_control: u8,
    pub quality_control: u8,
    pub face_match_threshold: Option<f64>,
}

/// 0 is Tencent's own default for both controls: sent only when set.
fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// Settings of a [`TencentClient`].
#[derive(Debug, Clone)]
pub struct TencentSettings {
    pub endpoint: String,
    pub secret_id: String,
    pub region: String,
    pub version: String,
    pub group_id: String,
    pub gates: TencentGates,
}

impl TencentClient {
    pub fn new(
        http: Arc<HttpClient>,
        s: &TencentSettings,
        secret: Secret,
        clock: Arc<SkewClock>,
    ) -> Self {
        let url = format!("{}/", s.endpoint.trim_end_matches('/'));
        Self {
            host: host_of(&url).to_string(),
            url,
            http,
            secret_id: s.secret_id.clone(),
            secret,
            region: s.region.clone(),
            version: s.version.clone(),
            group_id: s.group_id.clone(),
            gates: s.gates,
            clock,
        }
    }

    /// One signed API call; the `Response` object of a success.
    pub fn call(&self, action: &str, params: &impl serde::Serialize) -> Result<Value, UploadError> {
        self.call_body(action, serde_json::to_vec(params).map_err(encode_error)?)
    }

    /// [`TencentClient::call`] with its JSON body made.
    fn call_body(&self, action: &str, body: Vec<u8>) -> Result<Value, UploadError> {
        let timestamp = self.clock.now_ms().div_euclid(1000);
        let sig = tc3_sign(&Tc3Request {
            secret_id: &self.secret_id,
            secret_key: self.secret.expose(),
            host: &self.host,
            service: SERVICE,
            content_type: TC3_CONTENT_TYPE,
            timestamp,
            body: &body,
        });
        let ts = timestamp.to_string();
        let mut headers = vec![
            ("authorization", sig.authorization.as_str()),
            ("content-type", TC3_CONTENT_TYPE),
            ("x-tc-action", action),
            ("x-tc-version", self.version.as_str()),
            ("x-tc-timestamp", ts.as_str()),
        ];
        if !self.region.is_empty() {
            headers.push(("x-tc-region", self.region.as_str()));
        }
        let resp = self.http.post(&self.url, &headers, &body)?;
        if let Some(server) = resp.date_ms {
            self.clock.observe(server, self.clock.local_ms());
        }
        if let Some(e) = super::no_such_api(resp.status, "tencent.endpoint", &self.url) {
            return Err(e);
        }
        parse_answer(action, resp.status, &resp.body)
    }

    /// The person's face ids, or `None` when the person does not exist.
    pub fn person_faces(&self, person_id: &str) -> Result<Option<Vec<String>>, UploadError> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct GetPersonBaseInfo<'a> {
            person_id: &'a str,
        }
        match self.call("GetPersonBaseInfo", &GetPersonBaseInfo { person_id }) {
            Ok(r) => Ok(Some(strings(r.get("FaceIds")))),
            Err(e) if e.code == PERSON_NOT_EXIST => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_person(
        &self,
        entry: &mut Enrollment,
        index: usize,
        image: &[u8],
    ) -> Result<(), UploadError> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct CreatePerson<'a> {
            group_id: &'a str,
            person_id: &'a str,
            person_name: String,
            #[serde(skip_serializing_if = "is_zero")]
            unique_person_control: u8,
            #[serde(skip_serializing_if = "is_zero")]
            quality_control: u8,
        }
        // ... and `Image`, written into the body as it is encoded.
        let body = super::json_with_base64(
            &CreatePerson {
                group_id: &self.group_id,
                person_id: &entry.person_id,
                person_name: rules::person_name(&entry.person_id, entry.person_name.as_deref()),
                unique_person_control: self.gates.unique_person_control,
                quality_control: self.gates.quality_control,
            },
            "Image",
            &[image],
            false,
        )
        .map_err(encode_error)?;
        let r = self.call_body("CreatePerson", body).map_err(|mut e| {
            if e.code == QUALITY_NOT_QUALIFIED {
                e.message = format!("CreatePerson: {}", refused_reason(-1601, &entry.person_id));
            }
            e
        })?;
        // With UniquePersonControl, a face that matches a person of the
        // group creates nobody: the answer names the match instead.
        if let Some(similar) = r
            .get("SimilarPersonId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(UploadError::new(
                ErrorClass::Never,
                UploadCode::DuplicatePerson,
                format!(
                    "{:?} looks like {similar:?}, who is already in group {:?} (tencent.unique_person_control = {}): \
                     nobody was created. If it is the same person, enroll more faces under {similar:?}; \
                     if not, purge this entry (enrolld queue purge {}) and enroll it with a lower control",
                    entry.person_id, self.group_id, self.gates.unique_person_control, entry.id
                ),
            ));
        }
        entry.progress.created_person = true;
        entry.progress.done_images.push(index as u8);
        if let Some(face) = r.get("FaceId").and_then(Value::as_str) {
            entry.progress.uploaded_face_ids.push(face.to_string());
        }
        Ok(())
    }

    fn create_faces(
        &self,
        entry: &mut Enrollment,
        pending: &[usize],
        images: &[Vec<u8>],
    ) -> Result<(), UploadError> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct CreateFace<'a> {
            person_id: &'a str,
            #[serde(skip_serializing_if = "is_zero")]
            quality_control: u8,
            #[serde(skip_serializing_if = "Option::is_none")]
            face_match_threshold: Option<f64>,
        }
        // ... and `Images`, written into the body as they are encoded.
        let pending_images: Vec<&[u8]> = pending.iter().map(|&i| images[i].as_slice()).collect();
        let body = super::json_with_base64(
            &CreateFace {
                person_id: &entry.person_id,
                quality_control: self.gates.quality_control,
                face_match_threshold: self.gates.face_match_threshold,
            },
            "Images",
            &pending_images,
            true,
        )
        .map_err(encode_error)?;
        let r = self.call_body("CreateFace", body)?;
        apply_create_face(entry, pending, &r)
    }

    /// `DeletePerson`: the person leaves every group with all its faces.
    fn delete_person(
        &self,
        person_id: &str,
        face_ids: Vec<String>,
    ) -> Result<CloudDeletion, UploadError> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct DeletePerson<'a> {
            person_id: &'a str,
        }
        match self.call("DeletePerson", &DeletePerson { person_id }) {
            Ok(_) => Ok(CloudDeletion {
                how: "DeletePerson".into(),
                face_ids,
                manual: false,
            }),
            Err(e) if e.code == PERSON_NOT_EXIST || e.code == PERSON_NOT_EXISTED => {
                Ok(CloudDeletion {
                    how: "DeletePerson: the cloud no longer has the person".into(),
                    face_ids,
                    manual: false,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `DeleteFace` of `faces`; `DeletePerson` when Tencent refuses to
    /// leave the person without a face.
    fn delete_faces(
        &self,
        person_id: &str,
        faces: Vec<String>,
    ) -> Result<CloudDeletion, UploadError> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct DeleteFace<'a> {
            person_id: &'a str,
            face_ids: &'a [String],
        }
        match self.call(
            "DeleteFace",
            &DeleteFace {
                person_id,
                face_ids: &faces,
            },
        ) {
            Ok(_) => Ok(CloudDeletion {
                how: "DeleteFace".into(),
                face_ids: faces,
                manual: false,
            }),
            Err(e) if e.code == DELETE_FACE_NUM_EXCEED => {
                log::info!(
                    "{person_id:?}: DeleteFace would leave the person no face; deleting the person"
                );
                self.delete_person(person_id, faces)
            }
            Err(e) if e.code == PERSON_NOT_EXIST || e.code == PERSON_NOT_EXISTED => {
                Ok(CloudDeletion {
                    how: "DeleteFace: the cloud no longer has the person".into(),
                    face_ids: faces,
                    manual: false,
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// The `Response` object of a successful answer to `action`, or the error
/// it carries, classified. Untrusted input: fuzzed (`fuzz/`).
pub fn parse_answer(action: &str, status: u16, body: &[u8]) -> Result<Value, UploadError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(response) = parsed
        .as_ref()
        .and_then(|v| v.get("Response"))
        .filter(|r| r.is_object())
    else {
        if status != 200 {
            return Err(classify_http_status(status));
        }
        let mut e = UploadError::new(
            ErrorClass::Retry,
            UploadCode::BadAnswer,
            format!("{action}: answer has no Response object"),
        );
        e.outcome_unknown = true;
        return Err(e);
    };
    if let Some(err) = response.get("Error") {
        let code = err
            .get("Code")
            .and_then(Value::as_str)
            .unwrap_or("UnknownError");
        let message = err.get("Message").and_then(Value::as_str).unwrap_or("");
        return Err(UploadError::new(
            classify_code(code),
            code,
            format!("{action}: {message}"),
        ));
    }
    Ok(response.clone())
}

/// Applies a CreateFace `Response` for the images `pending` (indexes into
/// the entry's images) to `entry`: which are done, which face ids were
/// added, and whether what is left should be retried or given up.
/// Untrusted input: fuzzed (`fuzz/`).
pub fn apply_create_face(
    entry: &mut Enrollment,
    pending: &[usize],
    r: &Value,
) -> Result<(), UploadError> {
    let face_ids = strings(r.get("SucFaceIds"));
    let ret_codes: Vec<i64> = r
        .get("RetCode")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_else(|| vec![0; face_ids.len().min(pending.len())]);
    let mut retry_codes = Vec::new();
    let mut refused_codes = Vec::new();
    for (k, &i) in pending.iter().enumerate() {
        match ret_codes.get(k).copied() {
            Some(0) => entry.progress.done_images.push(i as u8),
            Some(c) if image_refused(c) => {
                entry.progress.done_images.push(i as u8);
                refused_codes.push(c);
            }
            Some(c) => retry_codes.push(c),
            None => retry_codes.push(i64::MIN),
        }
    }
    entry.progress.uploaded_face_ids.extend(face_ids);
    if let Some(c) = retry_codes.first() {
        return Err(UploadError::new(
            ErrorClass::Retry,
            format!("RetCode:{c}"),
            format!(
                "CreateFace: {} image(s) hit a service fault",
                retry_codes.len()
            ),
        ));
    }
    if entry.progress.uploaded_face_ids.is_empty() {
        let c = refused_codes.first().copied().unwrap_or(0);
        return Err(UploadError::new(
            ErrorClass::Never,
            format!("RetCode:{c}"),
            format!(
                "CreateFace refused every image: {}",
                refused_reason(c, &entry.person_id)
            ),
        ));
    }
    for c in refused_codes {
        log::warn!(
            "entry {}: Tencent refused one image: {}; the others were added",
            entry.id,
            refused_reason(c, &entry.person_id)
        );
    }
    Ok(())
}

/// What a per-image `RetCode` means for the technician.
fn refused_reason(code: i64, person: &str) -> String {
    match code {
        -1101 => "no face in the image (-1101)".into(),
        -1102 => "the image cannot be decoded (-1102)".into(),
        -1109 => "the image is too large or too small (-1109)".into(),
        -1601 => {
            "the face is below tencent.quality_control (-1601: blur, light or a covered face); \
                  enroll again facing the camera in even light, or lower the control"
                .into()
        }
        -1604 => format!(
            "the face is not similar enough to {person:?}'s other faces (-1604, \
             tencent.face_match_threshold): check that it is the same person, or purge this entry"
        ),
        c => format!("RetCode {c}"),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Uploader for TencentClient {
    fn provider(&self) -> Provider {
        Provider::Tencent
    }

    fn forget(&mut self, req: &ForgetRequest) -> Result<CloudDeletion, UploadError> {
        if req.created_person {
            return self.delete_person(&req.person_id, req.face_ids.clone());
        }
        let mut faces = req.face_ids.clone();
        if let Some(before) = &req.faces_before {
            match self.person_faces(&req.person_id)? {
                None => {
                    return Ok(CloudDeletion {
                        how: "the cloud no longer has the person".into(),
                        face_ids: faces,
                        manual: false,
                    })
                }
                Some(now) => {
                    for f in now {
                        if !before.contains(&f) && !faces.contains(&f) {
                            faces.push(f);
                        }
                    }
                }
            }
        }
        if faces.is_empty() {
            return Ok(CloudDeletion {
                how: "nothing of this device's is in the cloud".into(),
                face_ids: faces,
                manual: false,
            });
        }
        self.delete_faces(&req.person_id, faces)
    }

    /// `prepare` asks `GetPersonBaseInfo` after every interruption and
    /// compares with the snapshot taken before the first send.
    fn looks_up_before_resend(&self) -> bool {
        true
    }

    fn prepare(&mut self, entry: &mut Enrollment) -> Result<Option<Uploaded>, UploadError> {
        if !entry.progress.outcome_unknown && entry.progress.face_ids_before.is_some() {
            return Ok(None);
        }
        let now = self.person_faces(&entry.person_id)?.unwrap_or_default();
        if entry.progress.outcome_unknown {
            if let Some(before) = &entry.progress.face_ids_before {
                let landed: Vec<String> = now
                    .iter()
                    .filter(|id| {
                        !before.contains(id) && !entry.progress.uploaded_face_ids.contains(id)
                    })
                    .cloned()
                    .collect();
                if !landed.is_empty() {
                    log::info!(
                        "entry {}: the unanswered upload did land ({} new face(s)); not sending again",
                        entry.id,
                        landed.len()
                    );
                    entry.progress.uploaded_face_ids.extend(landed);
                    entry.progress.done_images = (0..entry.images.len() as u8).collect();
                    entry.progress.outcome_unknown = false;
                    return Ok(Some(Uploaded {
                        face_ids: entry.progress.uploaded_face_ids.clone(),
                    }));
                }
            }
            entry.progress.outcome_unknown = false;
        }
        if entry.progress.face_ids_before.is_none() {
            entry.progress.face_ids_before = Some(now);
        }
        Ok(None)
    }

    fn send(
        &mut self,
        entry: &mut Enrollment,
        images: &[Vec<u8>],
    ) -> Result<Uploaded, UploadError> {
        let mut pending: Vec<usize> = (0..images.len())
            .filter(|i| !entry.progress.done_images.contains(&(*i as u8)))
            .collect();
        // A person holds at most 5 faces: send the best that fit (images are
        // in order of preference), never a call Tencent must refuse.
        let in_cloud = entry.progress.face_ids_before.as_ref().map_or(0, Vec::len)
            + entry.progress.uploaded_face_ids.len();
        let room = rules::MAX_FACES_PER_PERSON.saturating_sub(in_cloud);
        if pending.len() > room {
            if room == 0 && entry.progress.uploaded_face_ids.is_empty() {
                return Err(UploadError::new(
                    ErrorClass::Never,
                    "InvalidParameterValue.PersonFaceNumExceed",
                    format!(
                        "{:?} already has {in_cloud} faces in the cloud and Tencent allows {}: delete some in the console, then retry this entry",
                        entry.person_id,
                        rules::MAX_FACES_PER_PERSON
                    ),
                ));
            }
            log::warn!(
                "entry {}: {:?} has {in_cloud} faces in the cloud; sending {room} of {} images (Tencent keeps at most {} per person)",
                entry.id,
                entry.person_id,
                pending.len(),
                rules::MAX_FACES_PER_PERSON
            );
            for i in pending.split_off(room) {
                entry.progress.done_images.push(i as u8);
            }
        }
        // A Tencent person always keeps at least one face, so an empty
        // snapshot means the person did not exist: go straight to CreatePerson.
        let person_missing = entry
            .progress
            .face_ids_before
            .as_ref()
            .is_some_and(Vec::is_empty)
            && entry.progress.uploaded_face_ids.is_empty();
        if person_missing && !self.group_id.is_empty() && !pending.is_empty() {
            let first = pending[0];
            match self.create_person(entry, first, &images[first]) {
                Ok(()) => {
                    pending.remove(0);
                }
                // Created by someone else in the meantime: add faces instead.
                Err(e) if PERSON_EXISTS.contains(&e.code.as_str()) => {}
                Err(e) => return Err(e),
            }
        }
        if !pending.is_empty() {
            match self.create_faces(entry, &pending, images) {
                Err(e) if e.code == PERSON_NOT_EXIST => {
                    if self.group_id.is_empty() {
                        return Err(UploadError::new(
                            ErrorClass::Never,
                            e.code,
                            "the person does not exist: create it in the console, or set tencent.group_id so enrolld creates it",
                        ));
                    }
                    let first = pending.remove(0);
                    self.create_person(entry, first, &images[first])?;
                    if !pending.is_empty() {
                        self.create_faces(entry, &pending, images)?;
                    }
                }
                other => other?,
            }
        }
        Ok(Uploaded {
            face_ids: entry.progress.uploaded_face_ids.clone(),
        })
    }
}

fn encode_error(e: serde_json::Error) -> UploadError {
    UploadError::new(ErrorClass::Never, UploadCode::Encode, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_face_refused_for_quality_or_similarity_says_what_to_do() {
        let mut entry: Enrollment = serde_json::from_value(serde_json::json!({
            "format_version": 2, "id": 1, "person_id": "p-7", "provider": "tencent",
            "group": {"id": "g", "name": ""}, "created_at_ms": 0, "attempts": 1,
            "next_attempt_at_ms": 0, "state": "in_flight", "since_ms": 0, "last_error": null,
            "images": []
        }))
        .expect("entry");
        for (code, says) in [
            (-1601, "tencent.quality_control"),
            (-1604, "not similar enough to \"p-7\""),
        ] {
            let r = serde_json::json!({"SucFaceNum": 0, "SucFaceIds": [], "RetCode": [code]});
            let err = apply_create_face(&mut entry, &[0], &r).expect_err("refused");
            assert_eq!(err.class, ErrorClass::Never);
            assert_eq!(err.code, format!("RetCode:{code}"));
            assert!(err.message.contains(says), "{}", err.message);
        }
    }

    #[test]
    fn codes_map_to_classes() {
        use ErrorClass::*;
        let cases = [
            ("RequestLimitExceeded", Retry),
            ("RequestLimitExceeded.UinLimitExceeded", Retry),
            ("InternalError", Retry),
            ("FailedOperation.ServerError", Retry),
            ("FailedOperation.RequestTimeout", Retry),
            ("FailedOperation.RpcFail", Retry),
            ("FailedOperation.CreateFaceConcurrent", Retry),
            ("FailedOperation.ConflictOperation", Retry),
            ("AuthFailure.SignatureExpire", Clock),
            ("AuthFailure.SecretIdNotFound", Operator),
            ("AuthFailure.SignatureFailure", Operator),
            ("ResourceUnavailable.InArrears", Operator),
            ("ResourceUnavailable.NotExist", Operator),
            ("ResourcesSoldOut.ChargeStatusException", Operator),
            ("InvalidParameterValue.AccountFaceNumExceed", Operator),
            ("InvalidParameterValue.NoFaceInPhoto", Never),
            ("FailedOperation.ImageDecodeFailed", Never),
            ("FailedOperation.ImageFacedetectFailed", Never),
            ("FailedOperation.ImageResolutionExceed", Never),
            ("FailedOperation.ImageResolutionTooSmall", Never),
            ("FailedOperation.ImageSizeExceed", Never),
            ("InvalidParameterValue.PersonFaceNumExceed", Never),
            ("InvalidParameterValue.UploadFaceNumExceed", Never),
            ("SomethingNew.NobodyKnows", Retry),
        ];
        for (code, class) in cases {
            assert_eq!(classify_code(code), class, "{code}");
        }
    }

    #[test]
    fn refused_ret_codes() {
        for c in [-1101, -1102, -1109, -1601, -1604] {
            assert!(image_refused(c));
        }
        assert!(!image_refused(-1001));
    }
}
