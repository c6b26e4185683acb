//! The inbound connection initializer: what happens to every peer that connects to the sensor.
//!
//! admit (limits) → Version/Verack ([`crate::kaspa::handshake`]) → validate the peer's
//! `Version` (well-formed, same network, not ourselves) → Ready → record the `accepted` event, hand the peer to the classifier, and serve it until it
//! leaves, the hold time passes, or the sensor stops. Every refusal is recorded as a `rejected`
//! event with a [`RejectReason`] and counted.
//!
//! `initialize_connection` returns as soon as Ready is exchanged (kaspa-p2p-lib allows only 32
//! pending handshakes in total, 2 per source IP; connections beyond those are refused by the
//! library before they reach this code, so they are not recorded here).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use kaspa_p2p_lib::{ConnectionInitializer, Router, common::ProtocolError, pb};
use kaspa_utils::networking::PeerId;
use tokio::sync::watch;

use super::admission::{Admission, RejectReason};
use crate::{
    classify::{Classifier, ProbeRequest},
    context::Context,
    event::{Direction, Event, EventKind, PeerInfo},
    kaspa::{
        flows::{FlowEnd, PeerFlows},
        handshake,
        version::{LocalVersion, read_peer_version},
    },
    metrics::ConnectionLabels,
};

/// Parameters of the inbound side (from `[listen]`).
#[derive(Debug, Clone)]
pub struct InboundSettings {
    /// Bound on Version/Verack/Ready together.
    pub handshake_timeout: Duration,
    /// How long a peer is held before a polite close; `None` = until it leaves.
    pub hold_time: Option<Duration>,
}

/// Our [`ConnectionInitializer`] for kaspa-p2p-lib's server.
pub struct InboundInitializer {
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

impl InboundInitializer {
    fn reject(&self, source: SocketAddr, reason: RejectReason, peer: Option<PeerInfo>) -> ProtocolError {
        let m = &self.ctx.metrics;
        m.connections.get_or_create(&ConnectionLabels { direction: "inbound", result: "rejected" }).inc();
        m.rejections.get_or_create(&crate::metrics::ReasonLabels { reason: reason.as_str() }).inc();
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
        ProtocolError::OtherOwned(format!("rejected by kaspa-sensor: {}", reason.as_str()))
    }
}

/// Decrements `sensor_handshakes_pending` however the handshake ends.
struct PendingHandshake<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for PendingHandshake<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn handshake_reason(e: &ProtocolError) -> RejectReason {
    match e {
        ProtocolError::Timeout(_) => RejectReason::HandshakeTimeout,
        _ => RejectReason::HandshakeFailed,
    }
}

#[tonic::async_trait]
impl ConnectionInitializer for InboundInitializer {
    async fn initialize_connection(&self, router: Arc<Router>) -> Result<(), ProtocolError> {
        let source = router.net_address();
        if *self.shutdown.borrow() {
            return Err(self.reject(source, RejectReason::ShuttingDown, None));
        }
        let mut slot = self.admission.try_admit(source.ip()).map_err(|reason| self.reject(source, reason, None))?;
        self.ctx.metrics.handshakes_pending.inc();
        let pending = PendingHandshake(&self.ctx.metrics.handshakes_pending);
        let deadline = tokio::time::Instant::now() + self.settings.handshake_timeout;

        let mut flows = PeerFlows::subscribe(&router);
        router.start();
        let exchange = handshake::exchange_versions(&router, &mut flows, self.local.message(), |_| {});
        let version = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::debug!(peer = %source, error = %e, "handshake failed");
                return Err(self.reject(source, handshake_reason(&e), None));
            }
            Err(_) => return Err(self.reject(source, RejectReason::HandshakeTimeout, None)),
        };
        let peer = match read_peer_version(version) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(peer = %source, error = %e, "invalid Version");
                return Err(self.reject(source, RejectReason::InvalidVersion, None));
            }
        };
        if peer.info.network.as_deref() != Some(self.ctx.network.wire_name()) {
            return Err(self.reject(source, RejectReason::WrongNetwork, Some(peer.info)));
        }
        if peer.id == self.local.id {
            return Err(self.reject(source, RejectReason::SelfConnection, Some(peer.info)));
        }
        // Distinct peers behind one IP must not evict each other in the hub (design §2).
        router.set_identity(PeerId::new(peer.id));
        match tokio::time::timeout_at(deadline, handshake::exchange_ready(&router, &mut flows)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %source, error = %e, "handshake failed at Ready");
                return Err(self.reject(source, handshake_reason(&e), Some(peer.info)));
            }
            Err(_) => return Err(self.reject(source, RejectReason::HandshakeTimeout, Some(peer.info))),
        }
        drop(pending);
        slot.activate();

        let m = &self.ctx.metrics;
        m.connections.get_or_create(&ConnectionLabels { direction: "inbound", result: "accepted" }).inc();
        m.connections_active.inc();
        let mut event = Event::now(
            &self.ctx.sensor_id,
            EventKind::Accepted,
            Direction::Inbound,
            source.ip().to_canonical(),
            source.port(),
        );
        event.peer = peer.info.clone();
        tracing::info!(
            peer = %source, peer_id = %peer.id.simple(), user_agent = ?peer.info.user_agent,
            protocol_version = ?peer.info.protocol_version, "inbound peer accepted"
        );
        self.ctx.record(event);
        self.classifier.submit(ProbeRequest {
            source,
            peer_id: peer.id.simple().to_string(),
            advertised_port: peer.advertised_port,
            peer: peer.info,
        });

        let ctx = self.ctx.clone();
        let addresses = self.addresses.clone();
        let hold_time = self.settings.hold_time;
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot; // counts against the limits until the connection ends
            let stop = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            let end = flows.run(router, addresses, hold_time, ctx.metrics.clone(), stop).await;
            ctx.metrics.connections_active.dec();
            match end {
                FlowEnd::SendFailed(e) => tracing::info!(peer = %source, error = %e, "peer dropped: send failed"),
                end => tracing::info!(peer = %source, reason = ?end, "peer disconnected"),
            }
        });
        Ok(())
    }
}
