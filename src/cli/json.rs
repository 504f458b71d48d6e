//! The `--json` documents of the commands that are not socket answers
//! (errors, `config check`, `detect`, `keygen`), as types: every `--json`
//! output of enrolld is serialized from a type, none is assembled by hand.

use enrolld::capture::burst::FrameReport;
use enrolld::capture::encode::EncodedImage;
use enrolld::cloud::http::ProxyInfo;
use enrolld::model::ErrorCode;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// An error, as every command prints it with `--json`.
#[derive(Debug, Serialize)]
pub struct ErrorLine<'a> {
    pub error: ErrorCode,
    pub message: &'a str,
}

/// `status` when no daemon answers and the queue cannot be read either.
#[derive(Debug, Serialize)]
pub struct StatusUnreadable<'a> {
    pub daemon: &'static str,
    pub error: ErrorCode,
    pub message: String,
    pub queue_error: ErrorLine<'a>,
}

/// `config check`: the configuration is valid, and what it is.
#[derive(Debug, Serialize)]
pub struct ConfigVerdict<'a> {
    pub source: &'a str,
    pub valid: bool,
    pub proxy: &'a Option<ProxyInfo>,
    pub config: toml::Value,
}

/// `keygen`: where the key went.
#[derive(Debug, Serialize)]
pub struct KeyWritten<'a> {
    pub key_file: &'a Path,
}

/// A crop `detect --out` wrote.
#[derive(Debug, Serialize)]
pub struct DetectOutput {
    pub path: PathBuf,
    pub image: EncodedImage,
}

/// What `detect` found in one image.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Detection {
    Unreadable {
        image: PathBuf,
        error: ErrorCode,
        message: String,
    },
    Judged {
        image: PathBuf,
        report: Box<FrameReport>,
        advice: Option<&'static str>,
        output: Option<DetectOutput>,
    },
}

/// One document as a line; an unprintable one says so as an error.
pub fn line(doc: &impl Serialize) -> String {
    serde_json::to_string(doc).unwrap_or_else(|e| {
        format!(r#"{{"error":"internal","message":"the output cannot be printed: {e}"}}"#)
    })
}
