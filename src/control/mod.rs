//! The local control socket: the protocol ([`protocol`]), the daemon's side
//! ([`server`]), the commands' side ([`client`]) and the one handler that
//! answers queue requests for both ([`handler`]), and the sockets systemd
//! hands over ([`activation`]).

pub mod activation;
pub mod answer;
pub mod client;
pub mod handler;
pub mod protocol;
pub mod server;

pub use client::Client;
pub use protocol::*;
