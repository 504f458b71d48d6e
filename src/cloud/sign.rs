//! Request signing for both vendors.
//!
//! - JD NeuHub: `sign = hex(MD5(secretKey + timestamp_ms))`.
//! - Tencent Cloud API 3.0: TC3-HMAC-SHA256 over a canonical request whose
//!   signed content-type is byte-identical to the header sent.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The content type Tencent requests are sent and signed with.
pub const TC3_CONTENT_TYPE: &str = "application/json; charset=utf-8";

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// JD's `sign` query parameter.
pub fn jd_sign(secret_key: &[u8], timestamp_ms: i64) -> String {
    let mut md5 = Md5::new();
    md5.update(secret_key);
    md5.update(timestamp_ms.to_string().as_bytes());
    hex(&md5.finalize())
}

/// Everything the TC3 signature is made of, for logging-free checks in tests
/// and for the emulator, which verifies with the same code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Signature {
    pub body_hash: String,
    pub canonical_request_hash: String,
    pub date: String,
    pub signature: String,
    /// The whole `Authorization` header value.
    pub authorization: String,
}

/// The inputs of a TC3-HMAC-SHA256 signature for `POST /`.
#[derive(Debug, Clone, Copy)]
pub struct Tc3Request<'a> {
    pub secret_id: &'a str,
    pub secret_key: &'a [u8],
    pub host: &'a str,
    pub service: &'a str,
    pub content_type: &'a str,
    pub timestamp: i64,
    pub body: &'a [u8],
}

/// Signs a Tencent Cloud API 3.0 `POST /` request.
pub fn tc3_sign(r: &Tc3Request<'_>) -> Tc3Signature {
    let body_hash = sha256_hex(r.body);
    let canonical = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\ncontent-type;host\n{body_hash}",
        r.content_type, r.host
    );
    let canonical_request_hash = sha256_hex(canonical.as_bytes());
    // The date is the UTC date of the timestamp, not the local date.
    let (y, m, d) = crate::clock::civil_from_days(r.timestamp.div_euclid(86_400));
    let date = format!("{y:04}-{m:02}-{d:02}");
    let scope = format!("{date}/{}/tc3_request", r.service);
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{}\n{scope}\n{canonical_request_hash}",
        r.timestamp
    );
    // The derived keys are as good as the secret for a day: wiped on drop.
    let mut key = Zeroizing::new(b"TC3".to_vec());
    key.extend_from_slice(r.secret_key);
    let k_date = Zeroizing::new(hmac_sha256(&key, date.as_bytes()));
    drop(key);
    let k_service = Zeroizing::new(hmac_sha256(&*k_date, r.service.as_bytes()));
    let k_signing = Zeroizing::new(hmac_sha256(&*k_service, b"tc3_request"));
    let signature = hex(&hmac_sha256(&*k_signing, string_to_sign.as_bytes()));
    let authorization = format!(
        "TC3-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=content-type;host, Signature={signature}",
        r.secret_id
    );
    Tc3Signature {
        body_hash,
        canonical_request_hash,
        date,
        signature,
        authorization,
    }
}

/// Constant-time comparison of two signatures.
pub fn same_signature(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jd_worked_example() {
        // JD's auth page: the string signed is
        // "2e148773a0337a8f2200ba90d445f084" + "1541491668060"; the digest was
        // computed independently with Python's hashlib.md5.
        assert_eq!(
            jd_sign(b"2e148773a0337a8f2200ba90d445f084", 1_541_491_668_060),
            "be570926168d708cc1e9cca66df8ef15"
        );
    }

    #[test]
    fn tencent_published_example() {
        // Tencent's documented TC3 example (the \u escapes are literal bytes).
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let sig = tc3_sign(&Tc3Request {
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            secret_key: b"Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            host: "cvm.tencentcloudapi.com",
            service: "cvm",
            content_type: TC3_CONTENT_TYPE,
            timestamp: 1_551_113_065,
            body,
        });
        assert_eq!(
            sig.body_hash,
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            sig.canonical_request_hash,
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(sig.date, "2019-02-25");
        assert_eq!(
            sig.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            sig.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn the_date_is_utc_even_just_after_midnight_in_china() {
        // 2019-02-25T23:30:00Z is already the 26th in UTC+8; the scope must say the 25th.
        let sig = tc3_sign(&Tc3Request {
            secret_id: "id",
            secret_key: b"k",
            host: "iai.tencentcloudapi.com",
            service: "iai",
            content_type: TC3_CONTENT_TYPE,
            timestamp: 1_551_137_400,
            body: b"{}",
        });
        assert_eq!(sig.date, "2019-02-25");
    }

    #[test]
    fn signature_comparison() {
        assert!(same_signature("abc", "abc"));
        assert!(!same_signature("abc", "abd"));
        assert!(!same_signature("abc", "abcd"));
    }
}
