//! Crawl records: one visit's outcome ([`VisitResult`]) with the peer's `Version` facts and the
//! class of its error, which gossiped addresses may be dialled ([`filter`]), and when the
//! continuous mode visits a node again ([`schedule`]). The sensor's `crawl` module runs the
//! visits and the frontier; its store writes these records to `crawl_visits` and `crawl_nodes`.

pub mod error_class;
pub mod filter;
pub mod schedule;

use std::net::SocketAddr;

use time::OffsetDateTime;

pub use error_class::{ErrorClass, VisitError, classify};
pub use filter::FilterReason;
pub use schedule::Revisit;

/// kaspad rejects an `Addresses` message with more entries than this (rusty-kaspa
/// `protocol/flows/src/v10/address.rs`, `MAX_ADDRESSES_RECEIVE = 2500`); so does the crawler: the
/// visit ends with [`ErrorClass::OversizedAddresses`] and nothing of that reply is kept.
pub const MAX_ADDRESSES_PER_REPLY: usize = 2500;

/// What the peer's `Version` said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerFacts {
    pub protocol_version: u32,
    pub user_agent: String,
    /// `Version.network`, e.g. `kaspa-mainnet`.
    pub network: String,
    /// 16-byte peer id, lower-case hex (32 chars).
    pub peer_id: String,
    /// `Version.address` as `IP:PORT`, when advertised.
    pub advertised_address: Option<String>,
    /// `Version.services` bit field.
    pub services: u64,
}

/// The outcome of one visit.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitResult {
    pub address: SocketAddr,
    pub started_at: OffsetDateTime,
    /// Connect to close, milliseconds.
    pub duration_ms: u64,
    /// From the start of the connect to the peer's `Version`, milliseconds.
    pub rtt_ms: Option<u64>,
    /// The handshake completed (Version/Verack/Ready both ways).
    pub reachable: bool,
    /// Set when the peer sent a `Version` (also for a wrong network).
    pub peer: Option<PeerFacts>,
    pub error: Option<VisitError>,
    /// `classify(error)`.
    pub error_class: Option<ErrorClass>,
    /// Distinct, well-formed addresses the peer gossiped, in arrival order; the engine then
    /// keeps only those that pass [`filter::check`].
    pub addresses: Vec<SocketAddr>,
    /// Gossip entries that were not a valid IP:port.
    pub malformed: u64,
    /// Addresses dropped beyond the visit's `max_addresses` option.
    pub capped: u64,
    /// `RequestAddresses` sent.
    pub requests: u32,
}
