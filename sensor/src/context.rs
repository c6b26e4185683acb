//! Handles shared by every part of a running sensor: who we are, where events go, what we count.

use std::sync::Arc;

use crate::{metrics::Metrics, store::Store};
use sensor_core::{event::Event, network::Network};

/// Shared, read-only after start-up. Clone the `Arc`.
#[derive(Debug)]
pub struct Context {
    /// The `sensor_id` stamped on every event (host name by default).
    pub sensor_id: String,
    pub network: Network,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// Queues `event` for storage without waiting for the commit. A refused event (writer queue
    /// full, writer stopped) is already counted in `sensor_storage_errors_total` by the store;
    /// here it is logged, and the caller goes on — a storage problem never stops the listener.
    pub fn record(&self, event: Event) {
        if let Err(e) = self.store.record(event) {
            tracing::warn!(error = %e, "event not stored");
        }
    }

    /// Queues addresses a peer gossiped (see [`crate::store::gossip`]); a full queue is logged.
    pub fn record_gossip(&self, gossip: sensor_core::gossip::Gossip) {
        if let Err(e) = self.store.record_gossip(gossip) {
            tracing::warn!(error = %e, "gossiped addresses not stored");
        }
    }
}
