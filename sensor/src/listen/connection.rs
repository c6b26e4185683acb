//! One inbound peer, from admission to disconnect, as a single state machine that *is* the
//! gRPC response stream: each item it yields is a message to the peer, and it reads the peer's
//! messages between items. No channels and no extra tasks per connection (see
//! [`super::server`] for why that matters).
//!
//! admit (limits, checked at TCP accept by [`super::transport`]) → send `Version` → read the
//! peer's `Version` (well-formed, same network, not ourselves) and answer `Verack` → after their
//! `Verack`, send `Ready` → their `Ready` → record the `accepted` event and hand the peer to the
//! classifier → serve: `Pong` for `Ping`,
//! `Addresses` (our external address or nothing) for `RequestAddresses`, our one
//! `RequestAddresses` sent after Ready and its `Addresses` reply recorded as gossip
//! ([`crate::store::gossip`]), everything else counted and dropped → end when the peer leaves, the hold time passes, or the sensor stops.
//! The handshake is kaspad's (kaspa-p2p-lib `src/handshake.rs`): Version/Verack within the
//! handshake timeout, then Ready both ways. Every refusal is recorded as a `rejected` event with
//! a [`RejectReason`] and, once the stream is open, told to the peer with a `Reject` message.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use kaspa_p2p_lib::{
    KaspadMessagePayloadType as T,
    pb::{
        self, KaspadMessage, ReadyMessage, RejectMessage, RequestAddressesMessage, VerackMessage,
        kaspad_message::Payload,
    },
};
use tokio::{sync::watch, time::Instant};

use super::{
    admission::AdmissionGuard,
    inbound::Inbound,
    transport::{PeerTransport, StreamLease},
};
use crate::{
    classify::ProbeRequest,
    kaspa::{
        flows::{keep_alive_reply, message_type_name},
        version::{PeerVersion, read_peer_version},
    },
    metrics::{ConnectionLabels, MessageLabels, ResultLabels},
};
use sensor_core::{
    Label,
    connection::{DisconnectReason, RejectReason},
    event::{Direction, Event, EventKind, PeerInfo},
};

/// Handshake progress: what has arrived and whether our `Ready` went out.
#[derive(Debug, Default)]
struct Handshake {
    theirs: Option<PeerVersion>,
    verack: bool,
    ready_sent: bool,
    ready_received: bool,
}

#[derive(Debug)]
enum Phase {
    /// Version/Verack/Ready in progress.
    Handshake(Handshake),
    /// Handshake done: keep-alive.
    Serving { peer: PeerVersion },
    /// The outcome is recorded; the stream ends once the outbox is empty.
    Closing,
}

/// The state of one inbound connection. See the module docs.
pub struct Connection {
    inbound: Arc<Inbound>,
    source: SocketAddr,
    incoming: tonic::Streaming<KaspadMessage>,
    outbox: VecDeque<KaspadMessage>,
    phase: Phase,
    /// Handshake deadline, then hold deadline (far future when there is none).
    deadline: Instant,
    shutdown: watch::Receiver<bool>,
    slot: AdmissionGuard,
    /// Lets the TCP connection close shortly after this stream ends ([`super::transport`]).
    _lease: StreamLease,
    /// Whether this connection counts in `sensor_connections_active`.
    active: bool,
    end: Option<DisconnectReason>,
    /// Our `RequestAddresses` is out and its `Addresses` reply has not come yet.
    awaiting_addresses: bool,
}

fn message(payload: Payload) -> KaspadMessage {
    KaspadMessage { payload: Some(payload), request_id: 0, response_id: 0 }
}

impl Connection {
    /// Opens the Kaspa stream on an admitted connection ([`super::transport`]): takes the
    /// connection's admission slot and handshake deadline (accept time + handshake timeout).
    ///
    /// Errors: a gRPC `unavailable` status during shutdown, `resource_exhausted` for a second
    /// stream on one connection (kaspad opens one) or one whose deadline has passed. None of
    /// these is recorded here: the connection itself is recorded once, by its transport.
    pub fn admit(
        inbound: Arc<Inbound>,
        transport: &PeerTransport,
        incoming: tonic::Streaming<KaspadMessage>,
    ) -> Result<Self, tonic::Status> {
        if *inbound.shutdown.borrow() {
            return Err(tonic::Status::unavailable("shutting down"));
        }
        let Some((slot, deadline, lease)) = transport.slot.open_stream() else {
            return Err(tonic::Status::resource_exhausted("one Kaspa stream per connection"));
        };
        let outbox = VecDeque::from([message(Payload::Version(inbound.local.message()))]);
        Ok(Self {
            deadline,
            shutdown: inbound.shutdown.clone(),
            inbound,
            source: transport.source,
            incoming,
            outbox,
            phase: Phase::Handshake(Handshake::default()),
            slot,
            _lease: lease,
            active: false,
            end: None,
            awaiting_addresses: false,
        })
    }

    /// The connection as the gRPC response stream.
    pub fn into_stream(self) -> BoxStream<'static, Result<KaspadMessage, tonic::Status>> {
        futures::stream::unfold(self, |mut c| async move {
            loop {
                if let Some(m) = c.outbox.pop_front() {
                    return Some((Ok(m), c));
                }
                if matches!(c.phase, Phase::Closing) {
                    return None;
                }
                c.step().await;
            }
        })
        .boxed()
    }

    /// Waits for one event (a message, the deadline, shutdown) and reacts to it.
    async fn step(&mut self) {
        #[allow(
            clippy::large_enum_variant,
            reason = "a stack temporary per wake-up; boxing would allocate per message"
        )]
        enum Wake {
            Message(Result<Option<KaspadMessage>, tonic::Status>),
            Deadline,
            Shutdown,
        }
        let wake = tokio::select! {
            msg = self.incoming.message() => Wake::Message(msg),
            _ = tokio::time::sleep_until(self.deadline) => Wake::Deadline,
            _ = self.shutdown.wait_for(|s| *s) => Wake::Shutdown,
        };
        let msg = match wake {
            Wake::Message(msg) => msg,
            Wake::Deadline => return self.on_deadline(),
            Wake::Shutdown => return self.on_shutdown(),
        };
        match msg {
            Ok(Some(KaspadMessage { payload: Some(payload), .. })) => self.on_message(payload),
            Ok(Some(_)) => {} // an empty payload carries nothing
            Ok(None) => self.on_closed(),
            // A transport error: reset, or a message over `MAX_MESSAGE_BYTES` (out of range).
            Err(status) => {
                let (code, error) = (status.code(), status.message());
                tracing::info!(peer = %self.source, ?code, %error, "peer stream failed");
                let end = if code == tonic::Code::OutOfRange {
                    DisconnectReason::MessageTooLarge
                } else {
                    DisconnectReason::StreamError
                };
                match self.phase {
                    Phase::Handshake(_) => self.reject(RejectReason::HandshakeFailed),
                    _ => self.close(end),
                }
            }
        }
    }

    fn on_deadline(&mut self) {
        match self.phase {
            Phase::Handshake(_) => self.reject(RejectReason::HandshakeTimeout),
            _ => self.close(DisconnectReason::HoldTimeExpired),
        }
    }

    fn on_shutdown(&mut self) {
        match self.phase {
            Phase::Handshake(_) => self.reject(RejectReason::ShuttingDown),
            _ => self.close(DisconnectReason::Shutdown),
        }
    }

    fn on_closed(&mut self) {
        match self.phase {
            Phase::Handshake(_) => self.reject(RejectReason::HandshakeFailed),
            _ => self.close(DisconnectReason::PeerClosed),
        }
    }

    fn on_message(&mut self, payload: Payload) {
        let t = T::from(&payload);
        if let Payload::Reject(r) = &payload {
            let reason: String = r.reason.chars().take(200).collect();
            tracing::debug!(peer = %self.source, %reason, "peer sent Reject");
            return self.on_closed();
        }
        match std::mem::replace(&mut self.phase, Phase::Closing) {
            Phase::Handshake(hs) => self.on_handshake_message(hs, t, payload),
            Phase::Serving { peer } => {
                let metrics = &self.inbound.ctx.metrics;
                metrics.messages_received.get_or_create(&MessageLabels { message_type: message_type_name(t) }).inc();
                if let Payload::Addresses(list) = &payload {
                    self.on_addresses(&peer, &list.address_list);
                }
                self.phase = Phase::Serving { peer };
                if let Some(reply) = keep_alive_reply(payload, &self.inbound.addresses) {
                    self.outbox.push_back(message(reply));
                }
            }
            Phase::Closing => {}
        }
    }

    /// An `Addresses` message: the reply to our one `RequestAddresses` is recorded as gossip from
    /// this peer (well-formed entries, duplicates removed); anything else is counted and dropped,
    /// as is a reply over kaspad's 2,500 entries (rusty-kaspa `protocol/flows` address flow).
    fn on_addresses(&mut self, peer: &PeerVersion, list: &[pb::NetAddress]) {
        let metrics = &self.inbound.ctx.metrics;
        let result = if !std::mem::take(&mut self.awaiting_addresses) {
            "unsolicited"
        } else {
            match crate::kaspa::addresses::address_list(list) {
                Err(_) => "oversized",
                Ok(reply) => {
                    let addresses = reply.addresses;
                    metrics.gossip_addresses.inc_by(addresses.len() as u64);
                    let ip = self.source.ip().to_canonical();
                    let gossiper = SocketAddr::new(ip, peer.advertised_port.unwrap_or(self.source.port()));
                    let at = time::OffsetDateTime::now_utc();
                    self.inbound.ctx.record_gossip(sensor_core::gossip::Gossip { gossiper, at, addresses });
                    "recorded"
                }
            }
        };
        metrics.gossip_messages.get_or_create(&ResultLabels { result }).inc();
    }

    /// One handshake message: Version (answered with Verack), Verack, Ready — in kaspad's
    /// order, Ready only after both Versions are acknowledged. Anything else ends the handshake.
    fn on_handshake_message(&mut self, mut hs: Handshake, t: T, payload: Payload) {
        match payload {
            Payload::Version(v) if hs.theirs.is_none() => match self.check_version(v) {
                Ok(peer) => {
                    hs.theirs = Some(peer);
                    self.outbox.push_back(message(Payload::Verack(VerackMessage {})));
                }
                Err((reason, info)) => return self.reject_with(reason, info),
            },
            Payload::Verack(_) if !hs.verack => hs.verack = true,
            Payload::Ready(_) if !hs.ready_received && hs.theirs.is_some() => hs.ready_received = true,
            _ => {
                tracing::debug!(peer = %self.source, message_type = ?t, "unexpected message during handshake");
                self.phase = Phase::Handshake(hs);
                return self.reject(RejectReason::HandshakeFailed);
            }
        }
        if hs.theirs.is_some() && hs.verack && !hs.ready_sent {
            hs.ready_sent = true;
            self.outbox.push_back(message(Payload::Ready(ReadyMessage {})));
        }
        match hs {
            Handshake { theirs: Some(peer), ready_sent: true, ready_received: true, .. } => self.accept(peer),
            hs => self.phase = Phase::Handshake(hs),
        }
    }

    /// Validates the peer's Version: well-formed, our network, not our own id.
    fn check_version(&self, v: pb::VersionMessage) -> Result<PeerVersion, (RejectReason, Option<PeerInfo>)> {
        let peer = read_peer_version(v).map_err(|e| {
            tracing::debug!(peer = %self.source, error = %e, "invalid Version");
            (RejectReason::InvalidVersion, None)
        })?;
        if peer.info.network.as_deref() != Some(self.inbound.ctx.network.wire_name()) {
            return Err((RejectReason::WrongNetwork, Some(peer.info)));
        }
        if peer.id == self.inbound.local.id {
            return Err((RejectReason::SelfConnection, Some(peer.info)));
        }
        Ok(peer)
    }

    fn accept(&mut self, peer: PeerVersion) {
        let inbound = &self.inbound;
        let m = &inbound.ctx.metrics;
        m.handshakes_pending.dec();
        m.connections.get_or_create(&ConnectionLabels { direction: "inbound", result: "accepted" }).inc();
        m.connections_active.inc();
        self.active = true;
        self.slot.activate();
        let mut event = Event::now(
            &inbound.ctx.sensor_id,
            EventKind::Accepted,
            Direction::Inbound,
            self.source.ip().to_canonical(),
            self.source.port(),
        );
        event.peer = peer.info.clone();
        tracing::info!(
            peer = %self.source, peer_id = %peer.id.simple(), user_agent = ?peer.info.user_agent,
            protocol_version = ?peer.info.protocol_version, "inbound peer accepted"
        );
        inbound.ctx.record(event);
        inbound.classifier.submit(ProbeRequest {
            source: self.source,
            peer_id: peer.id.simple().to_string(),
            advertised_port: peer.advertised_port,
            peer: peer.info.clone(),
        });
        self.deadline = match inbound.settings.hold_time {
            Some(hold) => Instant::now() + hold,
            None => Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        };
        if inbound.settings.request_addresses {
            let request = RequestAddressesMessage { include_all_subnetworks: false, subnetwork_id: None };
            self.outbox.push_back(message(Payload::RequestAddresses(request)));
            self.awaiting_addresses = true;
        }
        self.phase = Phase::Serving { peer };
    }

    fn reject(&mut self, reason: RejectReason) {
        self.reject_with(reason, None)
    }

    /// Records the refusal, tells the peer (best effort) and ends the stream.
    fn reject_with(&mut self, reason: RejectReason, info: Option<PeerInfo>) {
        self.inbound.ctx.metrics.handshakes_pending.dec();
        self.inbound.reject_event(self.source, reason, info);
        let text = format!("rejected by kaspa-sensor: {}", reason.as_str());
        self.outbox.push_back(message(Payload::Reject(RejectMessage { reason: text })));
        self.phase = Phase::Closing;
    }

    fn close(&mut self, end: DisconnectReason) {
        self.end = Some(end);
        self.phase = Phase::Closing;
    }
}

impl Drop for Connection {
    /// Runs however the stream ends — including when tonic drops it because the peer vanished.
    fn drop(&mut self) {
        match &self.phase {
            // The peer went away mid-handshake without us seeing it: still one rejected event.
            Phase::Handshake(hs) => {
                let info = hs.theirs.as_ref().map(|p| p.info.clone());
                self.inbound.ctx.metrics.handshakes_pending.dec();
                self.inbound.reject_event(self.source, RejectReason::HandshakeFailed, info);
            }
            Phase::Serving { .. } => self.end = Some(self.end.unwrap_or(DisconnectReason::PeerClosed)),
            Phase::Closing => {}
        }
        if self.active {
            let end = self.end.unwrap_or(DisconnectReason::PeerClosed);
            self.inbound.ctx.metrics.connections_active.dec();
            self.inbound.ctx.metrics.peer_disconnect(end.as_str());
            tracing::info!(peer = %self.source, reason = end.as_str(), "peer disconnected");
        }
    }
}
