//! JD NeuHub `faceCreate` as the emulator answers it.

use super::http::Request;
use super::{
    check_image, with_faults, Edges, FaultKind, ImageProblem, JdShape, Outcome, Shared, StoredFace,
};
use enrolld::capture::detect::SeetaDetector;
use enrolld::cloud::sign::{jd_sign, same_signature};
use serde_json::{json, Value};

/// JD's gateway accepts timestamps within 5 minutes of its clock.
const MAX_SKEW_MS: i64 = 5 * 60_000;
const MAX_IMAGE_BYTES: usize = 2_000_000;

fn gateway(shared: &Shared, code: &str, msg: &str) -> Outcome {
    shared.count_error(code);
    Outcome::Answer(
        200,
        json!({"code": code, "charge": false, "remain": 0, "msg": msg, "result": {}}),
    )
}

fn business(shared: &Shared, status: i64, message: &str) -> Outcome {
    shared.count_error(&format!("status:{status}"));
    Outcome::Answer(
        200,
        json!({"code": "10000", "charge": false, "remain": 1000, "msg": "查询成功",
               "result": {"status": status, "message": message, "requestid": "emulator"}}),
    )
}

fn success(shape: JdShape, face_id: &str) -> Value {
    match shape {
        JdShape::CodeObject => {
            json!({"code": "10000", "charge": true, "remain": 999, "msg": "查询成功",
            "result": {"status": 0, "message": "success", "requestid": "emulator", "result": {"faceId": face_id}}})
        }
        JdShape::CodeString => {
            json!({"code": "10000", "charge": true, "remain": 999, "msg": "查询成功",
            "result": {"status": 0, "message": "success", "requestid": "emulator", "result": format!("{{\"faceId\":\"{face_id}\"}}")}})
        }
        // The seed page's shape: `status` envelope and JSON-like text.
        JdShape::StatusString => {
            json!({"status": 0, "charge": false, "remain": 97, "msg": "查询成功",
            "result": {"requestid": "emulator", "message": "success", "status": 0, "result": format!("{{faceId:\"{face_id}\"}}")}})
        }
    }
}

pub(crate) fn handle(
    shared: &Shared,
    req: &Request,
    detector: &mut Option<SeetaDetector>,
) -> Outcome {
    *shared
        .lock()
        .requests
        .entry("faceCreate".into())
        .or_default() += 1;
    if req.method != "POST" || req.path != "/jdai/faceCreate" {
        return Outcome::Answer(404, json!({"code": "404", "msg": "no such API"}));
    }
    // Gateway checks, in the order JD's gateway reports them.
    let Some(appkey) = req.query("appkey") else {
        return gateway(shared, "10004", "appkey missing");
    };
    if !same_signature(appkey, &shared.config.key_id) {
        return gateway(shared, "10001", "invalid appkey");
    }
    let Some(timestamp) = req.query("timestamp") else {
        return gateway(shared, "10041", "timestamp missing");
    };
    let Some(sign) = req.query("sign") else {
        return gateway(shared, "10042", "sign missing");
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return gateway(shared, "10046", "invalid timestamp");
    };
    if (ts - shared.now_ms()).abs() > MAX_SKEW_MS {
        return gateway(shared, "10045", "timestamp more than 5 minutes off");
    }
    if !same_signature(&jd_sign(&shared.config.secret, ts), sign) {
        return gateway(shared, "10047", "invalid sign");
    }
    with_faults(
        shared,
        "faceCreate",
        |kind| match kind {
            FaultKind::RateLimit => Some(gateway(shared, "10043", "QPS limit exceeded")),
            FaultKind::Busy => Some(gateway(shared, "10020", "system busy")),
            FaultKind::BadCredentials => Some(gateway(shared, "10001", "invalid appkey")),
            FaultKind::Quota => Some(gateway(shared, "10040", "daily quota used up")),
            FaultKind::Billing => Some(gateway(shared, "10010", "payment required")),
            _ => None,
        },
        || create(shared, req, detector),
    )
}

fn create(shared: &Shared, req: &Request, detector: &mut Option<SeetaDetector>) -> Outcome {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return business(shared, 4, "body is not JSON");
    };
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (group_id, group_name, outer_id) = (text("groupId"), text("groupName"), text("outerId"));
    if outer_id.is_empty() {
        return business(shared, 4, "outerId missing");
    }
    // JD documents no limit but "supports Chinese": the emulator refuses
    // what no sane gateway takes, as strictly as the client does.
    if outer_id.chars().count() > 64
        || outer_id.chars().any(char::is_control)
        || outer_id.trim() != outer_id
    {
        return business(
            shared,
            4,
            "outerId must be 1 to 64 characters without control characters or surrounding spaces",
        );
    }
    if !group_name.is_ascii() || !group_id.is_ascii() {
        return business(shared, 4, "groupId and groupName are ASCII");
    }
    let group = if group_id.is_empty() {
        group_name
    } else {
        group_id
    };
    if group.is_empty() {
        return business(shared, 4, "groupId or groupName required");
    }
    use base64::Engine;
    let Ok(image) = base64::engine::general_purpose::STANDARD.decode(text("imageBase64")) else {
        return business(shared, 3, "imageBase64 is not base64");
    };
    if image.len() >= MAX_IMAGE_BYTES {
        return business(shared, 3, "image file must be under 2 MB");
    }
    let edges = Edges {
        min: 48,
        max_jpeg: 4096,
        max_other: 4096,
    };
    let checked = match check_image(&image, edges, detector, shared.config.check_faces) {
        Ok(c) => c,
        Err(ImageProblem::Decode) => return business(shared, 3, "image cannot be decoded"),
        Err(ImageProblem::TooSmall | ImageProblem::TooLarge) => {
            return business(shared, 3, "image must be 48x48 to 4096x4096 pixels")
        }
        Err(ImageProblem::NoFace) => return business(shared, 1, "no face detected"),
    };
    let mut state = shared.lock();
    let face_id = state.new_face_id();
    let person = state.persons.entry(outer_id.clone()).or_default();
    if !person.groups.contains(&group) {
        person.groups.push(group);
    }
    person
        .faces
        .push(StoredFace::accepted(&outer_id, face_id.clone(), checked));
    Outcome::Answer(200, success(shared.config.jd_shape, &face_id))
}
