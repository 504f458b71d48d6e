//! enrolld: captures a face on an edge camera, keeps the best crop, stores it
//! durably and (from 2/5 on) uploads it to JD NeuHub or Tencent Cloud IAI.
//!
//! Module map, from the hardware edge inwards:
//! - [`source`]: frame sources (V4L2 via nokhwa, image files) behind `FrameSource`
//! - [`frame`]: pixel formats and bounded decoding of untrusted images
//! - [`detect`]: face detection behind `FaceDetector` (rustface, model embedded)
//! - [`quality`]: choosing the largest face, scoring, rejection reasons
//! - [`burst`]: best shot over a burst of frames
//! - [`encode`]: JPEG within each provider's limits
//! - [`outbox`]: the durable sled queue
//! - [`enroll`]: the pipeline from a source to a queued enrollment
//! - [`config`], [`clock`], [`provider`], [`logger`]

#![deny(unsafe_code)]

pub mod activation;
pub mod burst;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod control;
pub mod daemon;
pub mod detect;
pub mod drain;
pub mod emulator;
pub mod encode;
pub mod enroll;
pub mod frame;
pub mod hardware;
pub mod http;
pub mod logger;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod provider;
pub mod quality;
pub mod retry;
pub mod salvage;
pub mod seal;
pub mod source;
pub mod spool;
pub mod trust;
