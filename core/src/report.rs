//! What a report to the operator's collector may carry: the owner kinds and the bounds the
//! sensor's `[report]` configuration and the collector's validation share (the messages
//! themselves are `sensor-report`'s `p2psensor.report.v1`).

/// Owner kind of a sensor fleet's reports.
pub const OWNER_SENSOR_FLEET: &str = "SensorFleet";
/// Owner kind of a relay's reports.
pub const OWNER_RELAY_NODE: &str = "RelayNode";

/// A sensor lists its peer ids one by one up to this many distinct peers (16 bytes each, so at
/// most 64 KiB); beyond it only the sketch is sent.
pub const MAX_EXACT_PEER_IDS: usize = 4096;
/// Bound of `PeerSummary.top_user_agents`.
pub const MAX_TOP_USER_AGENTS: usize = 20;
/// Bound of `RelaySummary.listen_addrs` and `HolePunchSummary.by_transport`.
pub const MAX_LIST_ITEMS: usize = 32;
/// Longest accepted string field (user agent, names, multiaddrs), bytes.
pub const MAX_STRING_BYTES: usize = 512;
