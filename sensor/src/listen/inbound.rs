//! What the inbound connections of one listener share ([`Inbound`]): the sensor's context, our
//! `Version`, the `[listen]` settings, the admission limits and the classifier. The transport
//! admits TCP connections against it; each [`Connection`](super::connection::Connection) runs
//! its handshake and keep-alive with it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use kaspa_p2p_lib::pb;
use sensor_core::{
    Label,
    connection::RejectReason,
    event::{Direction, Event, EventKind, PeerInfo},
};
use tokio::sync::watch;

use super::admission::Admission;
use crate::{
    classify::Classifier,
    context::Context,
    kaspa::version::LocalVersion,
    metrics::{ConnectionLabels, ReasonLabels},
};

/// Parameters of the inbound side (from `[listen]`).
#[derive(Debug, Clone)]
pub struct InboundSettings {
    /// Bound on TCP accept → HTTP/2 → Version/Verack/Ready together.
    pub handshake_timeout: Duration,
    /// HTTP/2 PING sent after this long without a frame from the peer (`listen.keepalive_interval_ms`).
    pub keepalive_interval: Duration,
    /// The connection is closed when a PING is not acknowledged within this
    /// (`listen.keepalive_timeout_ms`). A peer that vanishes without a FIN is dropped within
    /// `keepalive_interval + keepalive_timeout` of its last frame.
    pub keepalive_timeout: Duration,
    /// How long a peer is held before a polite close; `None` = until it leaves.
    pub hold_time: Option<Duration>,
    /// Send each accepted peer one `RequestAddresses` and record the reply
    /// (`listen.request_addresses`).
    pub request_addresses: bool,
}

/// Everything shared by the inbound connections of one listener.
pub struct Inbound {
    pub ctx: Arc<Context>,
    pub local: LocalVersion,
    pub settings: InboundSettings,
    pub admission: Admission,
    pub classifier: Classifier,
    /// The reply to `RequestAddresses`: our external address, or empty.
    pub addresses: Vec<pb::NetAddress>,
    /// Turns true when the sensor starts shutting down.
    pub shutdown: watch::Receiver<bool>,
}

impl Inbound {
    /// Records a refused or failed inbound connection: the counters and a `rejected` event.
    pub(super) fn reject_event(&self, source: SocketAddr, reason: RejectReason, peer: Option<PeerInfo>) {
        let m = &self.ctx.metrics;
        m.connections.get_or_create(&ConnectionLabels { direction: "inbound", result: "rejected" }).inc();
        m.rejections.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
        let mut event = Event::now(
            &self.ctx.sensor_id,
            EventKind::Rejected(reason),
            Direction::Inbound,
            source.ip().to_canonical(),
            source.port(),
        );
        event.peer = peer.unwrap_or_default();
        tracing::info!(peer = %source, reason = reason.as_str(), network = ?event.peer.network, "inbound rejected");
        self.ctx.record(event);
    }
}
