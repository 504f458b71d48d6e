//! JD NeuHub `faceCreate`.
//!
//! `POST {endpoint}/jdai/faceCreate?appkey=K&timestamp=T&sign=MD5(secret+T)`
//! with `{groupId?, groupName?, outerId, imageBase64}`. JD takes one image
//! per call, so an entry's images are sent one by one.

use super::sign::jd_sign;
use super::{classify_http_status, SkewClock, UploadError, Uploaded, Uploader};
use crate::clock::UnixMillis;
use crate::cloud::http::HttpClient;
use crate::config::Secret;
use crate::model::{Enrollment, ErrorClass, Provider, UploadCode};
use serde_json::Value;
use std::sync::Arc;

/// One answer, whichever documented envelope it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JdAnswer {
    /// Gateway code: `code`, or `status` in the older envelope; "0" and "10000" are success.
    pub code: String,
    pub msg: String,
    /// `result.status`: 0 success, anything else a per-image failure.
    pub status: Option<i64>,
    pub message: String,
    pub face_id: Option<String>,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn integer(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Finds a face id in `result.result`: an object, a JSON string, or the
/// JSON-like text JD's page shows (`{faceId:"..."}`).
fn face_id_in(v: &Value) -> Option<String> {
    match v {
        Value::Object(o) => text(o.get("faceId")),
        Value::String(s) => {
            if let Ok(inner) = serde_json::from_str::<Value>(s) {
                if inner.is_object() {
                    return face_id_in(&inner);
                }
            }
            let after = &s[s.find("faceId")? + "faceId".len()..];
            let after = after.trim_start_matches(|c: char| {
                c == '"' || c == '\\' || c == ':' || c.is_whitespace()
            });
            let id: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            (!id.is_empty()).then_some(id)
        }
        _ => None,
    }
}

/// Parses any documented JD envelope; `Err` only for a body that is not JSON
/// or carries no code at all.
pub fn parse_answer(body: &[u8]) -> Result<JdAnswer, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let top = v.as_object().ok_or("answer is not a JSON object")?;
    let code = text(top.get("code"))
        .or_else(|| text(top.get("status")))
        .ok_or("answer has neither code nor status")?;
    let result = top.get("result").and_then(Value::as_object);
    Ok(JdAnswer {
        code,
        msg: text(top.get("msg")).unwrap_or_default(),
        status: result.and_then(|r| integer(r.get("status"))),
        message: result
            .and_then(|r| text(r.get("message")))
            .unwrap_or_default(),
        face_id: result.and_then(|r| r.get("result")).and_then(face_id_in),
    })
}

/// The start of the next day in China (UTC+8), when JD's daily quota resets.
pub fn next_china_midnight(now_ms: UnixMillis) -> UnixMillis {
    const DAY: i64 = 86_400_000;
    const EIGHT_HOURS: i64 = 8 * 3_600_000;
    ((now_ms + EIGHT_HOURS).div_euclid(DAY) + 1) * DAY - EIGHT_HOURS
}

/// Decides from the codes what an answer means.
pub fn classify(answer: &JdAnswer, now_ms: UnixMillis) -> Result<Option<String>, UploadError> {
    use ErrorClass::*;
    let code = answer.code.trim();
    let class = match code {
        "0" | "10000" => {
            return match answer.status {
                Some(0) | None => Ok(answer.face_id.clone()),
                Some(status) => Err(UploadError::new(
                    Never,
                    format!("status:{status}"),
                    format!("JD refused the image: {}", answer.message),
                )),
            };
        }
        "10045" | "10046" => Clock,
        "10001" | "10004" | "10010" | "10041" | "10042" | "10047" | "10048" | "10050" => Operator,
        "10040" => {
            let mut e = UploadError::new(
                Retry,
                code,
                format!("JD daily quota used up: {}", answer.msg),
            );
            e.not_before_ms = Some(next_china_midnight(now_ms));
            return Err(e);
        }
        // 10020 busy, 10030 gateway, 10043/10044 QPS, 11010/11030 provider
        // faults, and codes JD may add: try again later, never drop.
        _ => Retry,
    };
    Err(UploadError::new(
        class,
        code,
        format!("JD gateway: {}", answer.msg),
    ))
}

/// JD NeuHub client.
pub struct JdClient {
    http: Arc<HttpClient>,
    url: String,
    appkey: String,
    secret: Secret,
    clock: Arc<SkewClock>,
}

impl JdClient {
    pub fn new(
        http: Arc<HttpClient>,
        endpoint: &str,
        appkey: &str,
        secret: Secret,
        clock: Arc<SkewClock>,
    ) -> Self {
        Self {
            http,
            url: format!("{}/jdai/faceCreate", endpoint.trim_end_matches('/')),
            appkey: appkey.to_string(),
            secret,
            clock,
        }
    }

    /// One faceCreate call; the face id when JD gives one.
    pub fn face_create(
        &self,
        entry: &Enrollment,
        image: &[u8],
    ) -> Result<Option<String>, UploadError> {
        let timestamp = self.clock.now_ms();
        let sign = jd_sign(self.secret.expose(), timestamp);
        let url = format!(
            "{}?appkey={}&timestamp={timestamp}&sign={sign}",
            self.url,
            query_escape(&self.appkey)
        );
        /// faceCreate's body: a group by id or by name (only what is set).
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct FaceCreate<'a> {
            #[serde(skip_serializing_if = "str::is_empty")]
            group_id: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            group_name: &'a str,
            outer_id: &'a str,
        }
        // ... and `imageBase64`, written into the body as it is encoded.
        let body = super::json_with_base64(
            &FaceCreate {
                group_id: &entry.group.id,
                group_name: &entry.group.name,
                outer_id: &entry.person_id,
            },
            "imageBase64",
            &[image],
            false,
        )
        .map_err(|e| UploadError::new(ErrorClass::Never, UploadCode::Encode, e.to_string()))?;
        let resp = self
            .http
            .post(&url, &[("content-type", "application/json")], &body)?;
        if let Some(server) = resp.date_ms {
            self.clock.observe(server, self.clock.local_ms());
        }
        if let Some(e) = super::no_such_api(resp.status, "jd.endpoint", &url) {
            return Err(e);
        }
        match parse_answer(&resp.body) {
            Ok(answer) => classify(&answer, self.clock.now_ms()),
            Err(_) if resp.status != 200 => Err(classify_http_status(resp.status)),
            Err(why) => {
                // A 200 that is not a JD answer (a captive portal, a proxy):
                // the request may have been applied.
                let mut e = UploadError::new(ErrorClass::Retry, UploadCode::BadAnswer, why);
                e.outcome_unknown = true;
                Err(e)
            }
        }
    }
}

/// Percent-encodes a query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Uploader for JdClient {
    fn provider(&self) -> Provider {
        Provider::Jd
    }

    /// JD NeuHub documents no call that deletes a face `faceCreate` added
    /// (only `faceGroupDelete`, which deletes a whole group): the faces are
    /// recorded for an operator to delete in the JD console.
    fn forget(
        &mut self,
        req: &super::ForgetRequest,
    ) -> Result<crate::model::CloudDeletion, UploadError> {
        Ok(crate::model::CloudDeletion {
            how: format!(
                "JD documents no delete for faceCreate's faces: delete face id(s) {} of outerId {:?} by hand in the JD console",
                if req.face_ids.is_empty() {
                    "(none known: look the person up)".to_string()
                } else {
                    req.face_ids.join(", ")
                },
                req.person_id
            ),
            face_ids: req.face_ids.clone(),
            manual: true,
        })
    }

    fn send(
        &mut self,
        entry: &mut Enrollment,
        images: &[Vec<u8>],
    ) -> Result<Uploaded, UploadError> {
        for (i, image) in images.iter().enumerate() {
            let index = i as u8;
            if entry.progress.done_images.contains(&index) {
                continue;
            }
            let face_id = self.face_create(entry, image)?;
            entry.progress.done_images.push(index);
            entry.progress.uploaded_face_ids.extend(face_id);
        }
        Ok(Uploaded {
            face_ids: entry.progress.uploaded_face_ids.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_page_envelope_with_a_non_json_result_string() {
        // Exactly the shape of the vendor page: `status` instead of `code`,
        // and result.result as JSON-like text with unquoted keys.
        let body = br#"{"status": 0, "charge": false, "remain": 97, "msg": "ok", "result": {"requestid": "6979e9bd79b944b49e0d6e74079d5098", "message": "success", "status": 0, "result": "{faceId:\"daf9e9bd79b944b49e0d6e74079d5098\"}"}}"#;
        let a = parse_answer(body).expect("parses");
        assert_eq!(a.code, "0");
        assert_eq!(a.status, Some(0));
        assert_eq!(
            a.face_id.as_deref(),
            Some("daf9e9bd79b944b49e0d6e74079d5098")
        );
        assert_eq!(
            classify(&a, 0),
            Ok(Some("daf9e9bd79b944b49e0d6e74079d5098".into()))
        );
    }

    #[test]
    fn parses_code_envelopes_with_object_and_json_string_results() {
        let object = br#"{"code":"10000","charge":true,"remain":5,"msg":"ok","result":{"status":0,"message":"success","requestid":"r","result":{"faceId":"f1"}}}"#;
        assert_eq!(
            parse_answer(object).expect("parses").face_id.as_deref(),
            Some("f1")
        );
        let string = br#"{"code":10000,"msg":"ok","result":{"status":"0","message":"success","result":"{\"faceId\":\"f2\"}"}}"#;
        let a = parse_answer(string).expect("parses");
        assert_eq!(
            (a.code.as_str(), a.status, a.face_id.as_deref()),
            ("10000", Some(0), Some("f2"))
        );
    }

    #[test]
    fn gateway_codes_map_to_classes() {
        let answer = |code: &str| JdAnswer {
            code: code.into(),
            msg: "m".into(),
            status: None,
            message: String::new(),
            face_id: None,
        };
        let class = |code: &str| classify(&answer(code), 0).expect_err("error").class;
        for c in [
            "10020", "10030", "10043", "10044", "11010", "11030", "19999",
        ] {
            assert_eq!(class(c), ErrorClass::Retry, "{c}");
        }
        for c in ["10045", "10046"] {
            assert_eq!(class(c), ErrorClass::Clock, "{c}");
        }
        for c in ["10001", "10004", "10010", "10047", "10048", "10050"] {
            assert_eq!(class(c), ErrorClass::Operator, "{c}");
        }
        let quota = classify(&answer("10040"), 1_700_000_000_000).expect_err("quota");
        assert_eq!(quota.class, ErrorClass::Retry);
        assert_eq!(
            quota.not_before_ms,
            Some(next_china_midnight(1_700_000_000_000))
        );
        let mut refused = answer("10000");
        refused.status = Some(2);
        assert_eq!(
            classify(&refused, 0).expect_err("refused").class,
            ErrorClass::Never
        );
    }

    #[test]
    fn quota_waits_for_midnight_in_china() {
        // 2026-11-21T15:59:59Z is 23:59:59 in Beijing: reset one second later.
        let t = 1_795_276_799_000;
        assert_eq!(crate::clock::rfc3339(t), "2026-11-21T15:59:59.000Z");
        assert_eq!(next_china_midnight(t), t + 1_000);
        // 16:00:00Z is already the next Beijing day: the following midnight.
        assert_eq!(next_china_midnight(t + 1_000), t + 1_000 + 86_400_000);
    }

    #[test]
    fn non_json_answers_are_errors_not_panics() {
        assert!(parse_answer(b"<html>bad gateway</html>").is_err());
        assert!(parse_answer(b"{}").is_err());
        assert!(parse_answer(b"[1,2]").is_err());
    }

    #[test]
    fn appkey_is_escaped() {
        assert_eq!(query_escape("a b&c=d"), "a%20b%26c%3Dd");
    }
}
