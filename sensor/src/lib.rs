//! The Kaspa P2P sensor (see README.md and docs/architecture.md).
//!
//! One peer's path through the modules: [`listen`] accepts and handshakes (with [`kaspa`]) →
//! [`classify`] dials back and decides → [`store`] persists every [`event::Event`] → [`report`]
//! pushes the cumulative summary to the operator → [`metrics`] counts it.

pub mod classify;
pub mod context;
pub mod crawl;
pub mod error;
pub mod export;
pub mod http;
pub mod kaspa;
pub mod listen;
pub mod metrics;
pub mod p2p;
pub mod peer_report;
pub mod report;
pub mod signal;
pub mod store;

pub use error::{Result, SensorError};
