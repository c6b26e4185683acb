//! An `Addresses` message heard by `sensor listen`: the sensor asks every accepted peer once
//! (`RequestAddresses`, as kaspad does with a new peer) and stores the reply in the crawler's
//! tables, so crawls and `sensor crawl --propagation` see what the listener heard.

use std::net::SocketAddr;

use time::OffsetDateTime;

/// One `Addresses` message from a peer of `sensor listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gossip {
    /// The peer: its source IP with the port it advertised in `Version.address`, or its source
    /// port when it advertised none.
    pub gossiper: SocketAddr,
    /// When the message arrived.
    pub at: OffsetDateTime,
    /// The well-formed entries, at most kaspad's 2,500 per message, duplicates removed.
    pub addresses: Vec<SocketAddr>,
}
