//! The long-running daemon and what it talks to on the device: the main loop
//! and its workers ([`daemon`]), its deadlines on a monotonic timer
//! ([`deadlines`]), the button and LED ([`hardware`]), systemd
//! notifications ([`notify`]), the
//! metrics file ([`metrics`]), the journal-friendly logger ([`logger`]) and
//! the waiting clients' bookkeeping, which does no I/O ([`state`]),
//! the drainer's assembly from the configuration ([`uploads`]) and the
//! one start-up check that `config check` and `run` share ([`preflight`]).

pub mod daemon;
pub mod deadlines;
pub mod hardware;
pub mod logger;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod state;
pub mod uploads;
