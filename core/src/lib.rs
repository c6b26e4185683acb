//! The sensor's shared vocabulary and the `sensor.toml` schema.
//!
//! A leaf crate: pure types and pure functions, no async runtime, database, libp2p swarm or
//! Kubernetes dependency. The sensor's feature modules (listen, classify, crawl, punch, store,
//! export, report) and the operator depend on it; it depends on none of them. What lives here:
//!
//! * [`event`]: the stored unit of record ([`event::Event`]) and its kinds;
//! * [`verdict`]: public/private classification, its reasons and the pure decision;
//! * [`connection`]: why an inbound connection was rejected or a held one ended;
//! * [`punch`]: a hole-punch attempt as stored and printed; [`reachability`]: a host's NAT verdict;
//! * [`crawl`]: crawl visit records, their error classes, the address filter and the revisit schedule;
//! * [`gossip`]: an `Addresses` message heard by `sensor listen`;
//! * [`network`]: the Kaspa networks and their P2P parameters;
//! * [`report`]: the owner kinds and size bounds of reports to the operator's collector;
//! * [`timestamp`]: the one stored and exported timestamp form;
//! * [`config`]: `sensor.toml`, one place per key (field, default, documentation, validation);
//! * [`label`]: the closed-enum convention (snake_case stored values and metric labels).

pub mod config;
pub mod connection;
pub mod crawl;
pub mod event;
pub mod gossip;
pub mod label;
pub mod network;
pub mod punch;
pub mod reachability;
pub mod report;
pub mod timestamp;
pub mod verdict;

pub use label::Label;
pub use network::Network;
