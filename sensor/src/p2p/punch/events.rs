//! What every swarm event of the hole-punch client feeds, whatever the phase: metrics, logs, the
//! relay connections, the reservation and readiness, and the self-reachability evidence
//! (AutoNAT, identify's observed addresses, the mapping test's dial of the relay's alternate
//! port); and, during an attempt, the attempt's tracker ([`observe`]).

use std::sync::atomic::Ordering;

use libp2p::{
    Multiaddr, PeerId, autonat, dcutr, identify,
    metrics::Recorder,
    multiaddr::Protocol,
    ping, relay,
    swarm::{
        SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use serde_json::json;

use sensor_core::punch::Transport;

use super::{PunchClient, attempt::AttemptTracker, client::print_line, swarm::PunchBehaviourEvent};
use crate::p2p::reachability::AutoNatStatus;
use sensor_core::Label;

impl PunchClient {
    /// Feeds one event to everything but an attempt's tracker.
    pub(super) fn handle(&mut self, event: &SwarmEvent<PunchBehaviourEvent>) {
        self.libp2p_metrics.record(event);
        let relay_id = self.settings.relay_id;
        match event {
            SwarmEvent::Behaviour(PunchBehaviourEvent::Identify(e)) => {
                self.libp2p_metrics.record(e);
                if let identify::Event::Received { peer_id, info, connection_id } = e
                    && *peer_id == relay_id
                {
                    if !self.observed {
                        tracing::info!(observed = %info.observed_addr, "the relay observes us at this address");
                    }
                    self.observed = true;
                    if let Some(remote) = self.relay_connections.get(connection_id).cloned() {
                        self.observe_mapping(&remote, &info.observed_addr);
                    }
                    self.dial_alternates(&info.listen_addrs);
                }
            }
            SwarmEvent::Behaviour(PunchBehaviourEvent::Ping(e)) => self.libp2p_metrics.record(e),
            SwarmEvent::Behaviour(PunchBehaviourEvent::Dcutr(e)) => {
                self.libp2p_metrics.record(e);
                log_dcutr(e);
            }
            SwarmEvent::Behaviour(PunchBehaviourEvent::Autonat(e)) => {
                if let autonat::Event::StatusChanged { old, new } = e {
                    tracing::info!(old = ?old, new = ?new, "AutoNAT status changed");
                    self.mapping.autonat(match new {
                        autonat::NatStatus::Public(_) => AutoNatStatus::Public,
                        autonat::NatStatus::Private => AutoNatStatus::Private,
                        autonat::NatStatus::Unknown => AutoNatStatus::Unknown,
                    });
                    self.update_reachability();
                } else {
                    tracing::debug!(event = ?e, "autonat");
                }
            }
            SwarmEvent::Behaviour(PunchBehaviourEvent::RelayClient(e)) => match e {
                relay::client::Event::ReservationReqAccepted { renewal, limit, .. } => {
                    if !renewal {
                        tracing::info!(relay = %relay_id, ?limit, "reservation accepted");
                    }
                }
                relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                    tracing::info!(src = %src_peer_id, "inbound circuit through the relay");
                }
                relay::client::Event::OutboundCircuitEstablished { .. } => tracing::debug!("outbound circuit"),
            },
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                if *peer_id == relay_id && !endpoint.is_relayed() {
                    if self.relay_connections.is_empty() {
                        tracing::info!(remote = %endpoint.get_remote_address(), "connected to the relay");
                    }
                    self.relay_connections.insert(*connection_id, endpoint.get_remote_address().clone());
                }
                tracing::debug!(%peer_id, remote = %endpoint.get_remote_address(), "connection established");
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                if self.relay_connections.remove(connection_id).is_some() && self.relay_connections.is_empty() {
                    tracing::warn!(cause = ?cause.as_ref().map(ToString::to_string), "disconnected from the relay");
                }
                tracing::debug!(%peer_id, cause = ?cause.as_ref().map(ToString::to_string), "connection closed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer_id), error, .. } if *peer_id == relay_id => {
                tracing::warn!(relay = %self.settings.relay, %error, "cannot reach the relay");
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                if Some(*listener_id) == self.circuit_listener {
                    tracing::info!(%address, "reservation held: reachable through the relay");
                    self.reservation = Some(address.clone());
                    self.reservation_changed();
                    if self.output == super::Output::Json && !matches!(self.settings.mode, super::Mode::Once) {
                        let line = json!({
                            "event": "reservation",
                            "peer_id": self.peer_id.to_base58(),
                            "relay": self.settings.relay.to_string(),
                            "address": address.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a).to_string(),
                        });
                        print_line(&line.to_string());
                    }
                } else {
                    tracing::info!(%address, "listening");
                    self.listen_addrs.push(address.clone());
                }
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } if Some(*listener_id) == self.circuit_listener => {
                let reason = match reason {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(relay = %self.settings.relay, %reason, "reservation failed or lost");
                self.circuit_listener = None;
                self.reservation = None;
                self.reservation_changed();
            }
            SwarmEvent::NewExternalAddrCandidate { address } => {
                tracing::debug!(%address, "external address candidate");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => tracing::info!(%address, "external address confirmed"),
            _ => {}
        }
    }

    /// Readiness and the report's `reservation_held` follow the reservation.
    fn reservation_changed(&mut self) {
        let held = self.reservation.is_some();
        if self.settings.holds_reservation() {
            self.ready.store(held, Ordering::SeqCst);
        }
        if let Ok(mut live) = self.live.lock() {
            live.reservation_held = held;
        }
    }

    /// One mapping-test observation: the relay endpoint `remote` observed us at `observed`. The
    /// local socket is our listen address of the same transport (dials reuse its port).
    fn observe_mapping(&mut self, remote: &Multiaddr, observed: &Multiaddr) {
        let transport = Transport::of(remote);
        let Some(local) = self.listen_addrs.iter().find(|a| Transport::of(a) == transport).cloned() else {
            return;
        };
        if self.mapping.observe(&local, remote, observed) {
            tracing::debug!(%local, %remote, %observed, "address-mapping observation");
            self.update_reachability();
        }
    }

    /// The address-mapping test's second endpoint: the relay's other listen addresses of the
    /// dialled transport and IP (its alternate port), each dialled once over a connection of its
    /// own (`PeerCondition::Always`); the identify on it gives the second observation.
    fn dial_alternates(&mut self, relay_listen_addrs: &[Multiaddr]) {
        let primary = strip_p2p(&self.settings.relay);
        for addr in relay_listen_addrs {
            let addr = strip_p2p(addr);
            if addr == primary || !same_host_and_transport(&addr, &primary) || !self.mapping_dials.insert(addr.clone())
            {
                continue;
            }
            tracing::info!(%addr, "address-mapping test: connecting to the relay's alternate address");
            let opts = DialOpts::peer_id(self.settings.relay_id)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::warn!(%addr, error = %e, "address-mapping test: cannot dial the relay's alternate address");
            }
        }
    }

    fn update_reachability(&mut self) {
        let verdict = self.mapping.verdict();
        if verdict != self.reachability {
            tracing::info!(old = self.reachability.as_str(), new = verdict.as_str(), "self-reachability");
        }
        self.reachability = verdict;
        self.reachability_metrics.set(verdict.as_str());
        if let Ok(mut live) = self.live.lock() {
            live.reachability = Some(verdict);
        }
    }
}

/// `addr` without a trailing `/p2p/…`.
fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

/// Same IP and the same transport (TCP, or QUIC v1), any port.
fn same_host_and_transport(a: &Multiaddr, b: &Multiaddr) -> bool {
    fn ip(m: &Multiaddr) -> Option<Protocol<'_>> {
        m.iter().next().filter(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_)))
    }
    ip(a).is_some() && ip(a) == ip(b) && Transport::of(a).is_some() && Transport::of(a) == Transport::of(b)
}

/// Feeds one swarm event about `target` to the attempt's tracker.
pub(super) fn observe(
    tracker: &mut AttemptTracker,
    target: PeerId,
    event: &SwarmEvent<PunchBehaviourEvent>,
    now: std::time::Instant,
) {
    match event {
        SwarmEvent::Dialing { peer_id: Some(peer), connection_id } if *peer == target => {
            tracker.dialing(*connection_id)
        }
        SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } if *peer_id == target => {
            tracker.connection_established(now, *connection_id, endpoint.is_relayed(), endpoint.get_remote_address());
        }
        SwarmEvent::OutgoingConnectionError { connection_id, peer_id: Some(peer), error } if *peer == target => {
            tracker.dial_failed(now, Some(*connection_id), error.to_string());
        }
        SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } if *peer_id == target => {
            tracker.connection_closed(now, *connection_id);
        }
        SwarmEvent::Behaviour(PunchBehaviourEvent::Ping(ping::Event { peer, connection, result }))
            if *peer == target =>
        {
            let result = match result {
                Ok(rtt) => Ok(*rtt),
                Err(e) => Err(e.to_string()),
            };
            tracker.ping(now, *connection, result);
        }
        SwarmEvent::Behaviour(PunchBehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result }))
            if *remote_peer_id == target =>
        {
            let result = match result {
                Ok(connection) => Ok(*connection),
                Err(e) => Err(e.to_string()),
            };
            tracker.dcutr_result(now, result);
        }
        _ => {}
    }
}

fn log_dcutr(event: &dcutr::Event) {
    match &event.result {
        Ok(connection) => {
            tracing::info!(peer = %event.remote_peer_id, ?connection, "DCUtR: direct connection established");
        }
        Err(e) => tracing::info!(peer = %event.remote_peer_id, error = %e, "DCUtR: hole punch failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_share_the_relay_host_and_transport() {
        let relay: Multiaddr =
            "/ip4/198.51.100.10/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .parse()
                .unwrap();
        let primary = strip_p2p(&relay);
        assert_eq!(primary.to_string(), "/ip4/198.51.100.10/udp/4001/quic-v1");
        let yes: Multiaddr = "/ip4/198.51.100.10/udp/4002/quic-v1".parse().unwrap();
        assert!(same_host_and_transport(&yes, &primary));
        for no in ["/ip4/198.51.100.10/tcp/4002", "/ip4/10.0.0.1/udp/4002/quic-v1", "/dns4/x/udp/4002/quic-v1"] {
            assert!(!same_host_and_transport(&no.parse().unwrap(), &primary), "{no}");
        }
    }
}
