//! The durable queue on the device: the sled store ([`outbox`]), images
//! sealed at rest ([`seal`]), the second copy of every entry ([`spool`]),
//! rebuilding a damaged store ([`salvage`]), the pure retry rules
//! ([`retry`]) and the loop that uploads due entries ([`drain`]).

pub mod drain;
pub mod outbox;
pub mod retry;
pub mod salvage;
pub mod seal;
pub mod spool;
