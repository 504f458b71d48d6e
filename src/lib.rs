//! enrolld: captures a face on an edge camera, keeps the best crop, stores it
//! durably and uploads it to JD NeuHub or Tencent Cloud IAI.
//!
//! The folders follow an enrollment from the camera to the cloud:
//! - [`capture`]: frame sources, decoding, detection, quality, the best shot
//!   of a burst, encoding, and the enroll pipeline that ties them together
//! - [`queue`]: the durable, sealed sled queue, its spool copy and salvage,
//!   the pure retry rules and the drain loop
//! - [`cloud`]: HTTPS, request signing, the JD and Tencent clients, the
//!   vendors' rules and limits
//! - [`control`]: the control socket's protocol, server, client, and the one
//!   handler that answers queue requests with or without a daemon
//! - [`service`]: the daemon's main loop and workers, button and LED,
//!   systemd notification and activation, metrics, the logger
//! - [`model`]: the domain every layer shares (vendors and their rules, the
//!   enrollment record, error codes); it imports only [`clock`]
//! - [`config`], [`clock`], [`trust`]: used by all of the above
//!
//! The `enrolld` command (src/main.rs, src/cli/) parses the command line and
//! renders answers; it holds no logic of its own. The local JD and Tencent
//! clouds that the demo and the tests use are a crate of their own
//! (`emulator/`, `enrolld-emulator`), so the device binary carries no HTTPS
//! server.

#![deny(unsafe_code)]

pub mod capture;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod control;
pub mod model;
pub mod queue;
pub mod service;
pub mod trust;
