//! Just enough HTTP/1.1 for the emulator: one request at a time on a
//! keep-alive connection, `Content-Length` bodies, bounded sizes.

use enrolld::clock::{http_date, UnixMillis};
use serde_json::Value;
use std::io::{Read, Write};

const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct HttpFailure {
    pub status: u16,
    pub message: String,
}

fn fail(status: u16, message: &str) -> HttpFailure {
    HttpFailure {
        status,
        message: message.into(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request; `Ok(None)` when the peer closed the connection cleanly.
pub fn read_request(stream: &mut impl Read) -> Result<Option<Request>, HttpFailure> {
    let mut head = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) if head.is_empty() => return Ok(None),
            Ok(0) => return Err(fail(400, "connection closed inside the request head")),
            Ok(_) => head.push(byte[0]),
            // The peer went away or stayed silent past the read timeout:
            // there is nobody to answer.
            Err(_) => return Ok(None),
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_HEADER_BYTES {
            return Err(fail(431, "request head too large"));
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(fail(400, "bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(fail(505, "HTTP/1.x only"));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((k, v)) = line.split_once(':') else {
            return Err(fail(400, "bad header line"));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q),
        None => (target.to_string(), ""),
    };
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let length = match get("content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| fail(400, "bad content-length"))?,
        None if get("transfer-encoding").is_some() => {
            return Err(fail(411, "chunked bodies are not supported"))
        }
        None => 0,
    };
    if length > MAX_BODY_BYTES {
        return Err(fail(413, "body too large"));
    }
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|_| fail(400, "body shorter than content-length"))?;
    let keep_alive = !get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Ok(Some(Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body,
        keep_alive,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

pub fn write_response(
    stream: &mut impl Write,
    status: u16,
    body: &Value,
    now_ms: UnixMillis,
    keep_alive: bool,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nDate: {}\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        http_date(now_ms),
        if keep_alive { "keep-alive" } else { "close" }
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_with_query_and_body() {
        let raw = b"POST /jdai/faceCreate?appkey=a%20b&timestamp=12 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        let r = read_request(&mut &raw[..]).ok().flatten().expect("request");
        assert_eq!(r.path, "/jdai/faceCreate");
        assert_eq!(r.query("appkey"), Some("a b"));
        assert_eq!(r.query("timestamp"), Some("12"));
        assert_eq!(r.header("host"), Some("x"));
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive);
    }

    #[test]
    fn bad_requests_are_refused() {
        let cases: [&[u8]; 3] = [
            b"GARBAGE\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
        ];
        for raw in cases {
            assert!(
                read_request(&mut &raw[..]).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(read_request(&mut &b""[..]), Ok(None)));
    }
}
