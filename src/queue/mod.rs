//! The durable queue on the device: the sled store and the rebuilding of a
//! damaged one ([`outbox`]), images
//! sealed at rest ([`seal`]), the second copy of every entry ([`spool`]),
//! the ledger of what happened to each person ([`ledger`]),
//! the pure retry rules
//! ([`retry`]) and the loop that uploads due entries ([`drain`]).

pub mod drain;
pub mod ledger;
pub mod outbox;
pub mod retry;
pub mod seal;
pub mod spool;

use crate::clock::Clock;
use crate::config::Config;
use crate::model::{ErrorCode, Failure};
use std::sync::Arc;

/// Opens the queue `config` names, with its key and bounds, and says in the
/// journal what a crash or a damaged store left: the one opening that the
/// commands and the daemon share.
pub fn open(config: &Config, clock: Arc<dyn Clock>) -> Result<outbox::Outbox, Failure> {
    let limits = outbox::OutboxLimits::from_config(&config.queue);
    let key = seal::QueueKey::from_file(&config.queue.key_file)
        .map_err(|e| Failure::new(ErrorCode::QueueKey, e))?;
    let (outbox, recovery) = outbox::Outbox::open(&config.state_dir, limits, clock, key)?;
    if recovery.requeued > 0 {
        log::warn!(
            "{} interrupted upload(s) are pending again; the cloud is asked before any is sent again",
            recovery.requeued
        );
    }
    if recovery.corrupt > 0 {
        log::error!(
            "{} unreadable queue record(s) left in place (enrolld queue check)",
            recovery.corrupt
        );
    }
    Ok(outbox)
}
