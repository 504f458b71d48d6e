//! The durable queue on the device: the sled store and the rebuilding of a
//! damaged one ([`outbox`]), images
//! sealed at rest ([`seal`]), the second copy of every entry ([`spool`]),
//! the pure retry rules
//! ([`retry`]) and the loop that uploads due entries ([`drain`]).

pub mod drain;
pub mod outbox;
pub mod retry;
pub mod seal;
pub mod spool;
