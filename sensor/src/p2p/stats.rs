//! What the relay counts: its own Prometheus metrics (`sensor_relay_*`) and the bookkeeping of
//! active reservations, fed from rust-libp2p relay and swarm events.
//!
//! Why the bookkeeping: relay 0.22 emits `ReservationClosed` for *every* closed connection of a
//! peer (also those that never held a reservation), so counting that event would drift. A
//! reservation lives on one direct connection, so [`ReservationTracker`] counts accepted new
//! reservations per peer, subtracts timeouts, and never lets a peer hold more reservations than
//! it has open direct connections. The count is exact unless a peer keeps several direct
//! connections to the relay and closes the one with the reservation (then it stays one too high
//! until the peer's next connection closes or its reservation times out).

use std::collections::{HashMap, HashSet};

use libp2p::{PeerId, relay, swarm::ConnectionId};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::metrics::ResultLabels;

/// `result` labels of `sensor_relay_reservations_total`.
pub const RESERVATION_RESULTS: [&str; 2] = ["accepted", "denied"];
/// `result` labels of `sensor_relay_circuits_total`.
pub const CIRCUIT_RESULTS: [&str; 3] = ["accepted", "denied", "closed"];

/// The relay's own metrics; cheap handles that share state (clone freely).
#[derive(Debug, Clone, Default)]
pub struct RelayMetrics {
    /// `sensor_relay_reservations_active`: reservations currently held on the relay.
    pub reservations_active: Gauge,
    /// `sensor_relay_circuits_active`: circuits currently relayed.
    pub circuits_active: Gauge,
    /// `sensor_relay_reservations_total{result}`: reservation requests accepted (new and
    /// renewals) or denied (limits, rate limits).
    pub reservations: Family<ResultLabels, Counter>,
    /// `sensor_relay_circuits_total{result}`: circuit requests accepted or denied, and accepted
    /// circuits that closed.
    pub circuits: Family<ResultLabels, Counter>,
}

impl RelayMetrics {
    /// Registers the metrics under `registry` as `sensor_relay_*`, with every label pre-created.
    pub fn register(registry: &mut Registry) -> RelayMetrics {
        let m = RelayMetrics::default();
        let r = registry.sub_registry_with_prefix("sensor_relay");
        r.register("reservations_active", "Reservations currently held on the relay", m.reservations_active.clone());
        r.register("circuits_active", "Circuits currently relayed", m.circuits_active.clone());
        r.register(
            "reservations",
            "Reservation requests by result (accepted includes renewals)",
            m.reservations.clone(),
        );
        r.register("circuits", "Circuit requests accepted or denied, and accepted circuits closed", m.circuits.clone());
        for result in RESERVATION_RESULTS {
            let _ = m.reservations.get_or_create(&ResultLabels { result });
        }
        for result in CIRCUIT_RESULTS {
            let _ = m.circuits.get_or_create(&ResultLabels { result });
        }
        m
    }

    /// Reservation requests accepted so far (new and renewals).
    pub fn reservations_accepted_total(&self) -> u64 {
        self.reservations.get_or_create(&ResultLabels { result: "accepted" }).get()
    }

    /// Circuits accepted so far.
    pub fn circuits_total(&self) -> u64 {
        self.circuits.get_or_create(&ResultLabels { result: "accepted" }).get()
    }

    fn count(family: &Family<ResultLabels, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabels { result }).inc();
    }
}

/// Active reservations and circuits, from relay events and the swarm's direct connections. See
/// the module docs for why reservations are not just `accepted − closed`.
#[derive(Debug, Default)]
pub struct ReservationTracker {
    /// Open direct (not relayed) connections per peer.
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Active reservations per peer, at most `connections[peer].len()`.
    reservations: HashMap<PeerId, usize>,
    circuits: u64,
}

impl ReservationTracker {
    /// A direct connection to `peer` opened.
    pub fn connection_established(&mut self, peer: PeerId, connection: ConnectionId) {
        self.connections.entry(peer).or_default().insert(connection);
    }

    /// A direct connection to `peer` closed: its reservation, if any, is gone.
    pub fn connection_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(open) = self.connections.get_mut(&peer) {
            open.remove(&connection);
            if open.is_empty() {
                self.connections.remove(&peer);
            }
        }
        self.clamp(peer);
    }

    /// Applies one relay event and counts it in `metrics` (counters and both gauges).
    pub fn apply(&mut self, event: &relay::Event, metrics: &RelayMetrics) {
        use relay::Event as E;
        match event {
            E::ReservationReqAccepted { src_peer_id, renewed } => {
                RelayMetrics::count(&metrics.reservations, "accepted");
                if !renewed {
                    *self.reservations.entry(*src_peer_id).or_default() += 1;
                    self.clamp(*src_peer_id);
                }
            }
            E::ReservationReqDenied { .. } => RelayMetrics::count(&metrics.reservations, "denied"),
            E::ReservationTimedOut { src_peer_id } => {
                if let Some(n) = self.reservations.get_mut(src_peer_id) {
                    *n = n.saturating_sub(1);
                }
                self.clamp(*src_peer_id);
            }
            E::CircuitReqAccepted { .. } => {
                RelayMetrics::count(&metrics.circuits, "accepted");
                self.circuits += 1;
            }
            E::CircuitReqDenied { .. } => RelayMetrics::count(&metrics.circuits, "denied"),
            E::CircuitClosed { .. } => {
                RelayMetrics::count(&metrics.circuits, "closed");
                self.circuits = self.circuits.saturating_sub(1);
            }
            _ => {}
        }
        self.publish(metrics);
    }

    /// Sets both gauges from the current counts.
    pub fn publish(&self, metrics: &RelayMetrics) {
        metrics.reservations_active.set(i64::try_from(self.reservations_active()).unwrap_or(i64::MAX));
        metrics.circuits_active.set(i64::try_from(self.circuits).unwrap_or(i64::MAX));
    }

    /// Reservations currently held.
    pub fn reservations_active(&self) -> u64 {
        self.reservations.values().map(|n| *n as u64).sum()
    }

    /// Circuits currently relayed.
    pub fn circuits_active(&self) -> u64 {
        self.circuits
    }

    /// A peer cannot hold more reservations than it has direct connections.
    fn clamp(&mut self, peer: PeerId) {
        let open = self.connections.get(&peer).map_or(0, HashSet::len);
        if let Some(n) = self.reservations.get_mut(&peer) {
            *n = (*n).min(open);
            if *n == 0 {
                self.reservations.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::relay::{Event as E, StatusCode};

    use super::*;

    fn setup() -> (ReservationTracker, RelayMetrics, Registry) {
        let mut registry = Registry::default();
        let metrics = RelayMetrics::register(&mut registry);
        (ReservationTracker::default(), metrics, registry)
    }

    #[test]
    fn reservations_follow_their_connection() {
        let (mut t, m, _r) = setup();
        let (a, b) = (PeerId::random(), PeerId::random());
        let (c1, c2, c3) =
            (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2), ConnectionId::new_unchecked(3));
        t.connection_established(a, c1);
        t.connection_established(b, c2);
        t.apply(&E::ReservationReqAccepted { src_peer_id: a, renewed: false }, &m);
        t.apply(&E::ReservationReqAccepted { src_peer_id: a, renewed: true }, &m);
        t.apply(&E::ReservationReqAccepted { src_peer_id: b, renewed: false }, &m);
        assert_eq!((t.reservations_active(), m.reservations_active.get()), (2, 2));
        assert_eq!(m.reservations_accepted_total(), 3, "renewals are accepted requests too");
        // The relay reports ReservationClosed for any closed connection: it changes nothing.
        t.connection_established(b, c3);
        t.apply(&E::ReservationClosed { src_peer_id: b }, &m);
        t.connection_closed(b, c3);
        assert_eq!(t.reservations_active(), 2);
        // Closing a's only connection ends its reservation.
        t.connection_closed(a, c1);
        t.apply(&E::ReservationClosed { src_peer_id: a }, &m);
        assert_eq!((t.reservations_active(), m.reservations_active.get()), (1, 1));
        t.apply(&E::ReservationTimedOut { src_peer_id: b }, &m);
        assert_eq!((t.reservations_active(), m.reservations_active.get()), (0, 0));
        // An accepted reservation of a peer without a known connection is not counted.
        t.apply(&E::ReservationReqAccepted { src_peer_id: PeerId::random(), renewed: false }, &m);
        assert_eq!(t.reservations_active(), 0);
        t.apply(&E::ReservationReqDenied { src_peer_id: a, status: StatusCode::ResourceLimitExceeded }, &m);
        assert_eq!(m.reservations.get_or_create(&ResultLabels { result: "denied" }).get(), 1);
    }

    #[test]
    fn circuits_open_and_close() {
        let (mut t, m, registry) = setup();
        let (a, b) = (PeerId::random(), PeerId::random());
        t.apply(&E::CircuitReqAccepted { src_peer_id: a, dst_peer_id: b }, &m);
        t.apply(&E::CircuitReqAccepted { src_peer_id: b, dst_peer_id: a }, &m);
        t.apply(&E::CircuitReqDenied { src_peer_id: a, dst_peer_id: b, status: StatusCode::NoReservation }, &m);
        assert_eq!((t.circuits_active(), m.circuits_active.get(), m.circuits_total()), (2, 2, 2));
        t.apply(&E::CircuitClosed { src_peer_id: a, dst_peer_id: b, error: None }, &m);
        t.apply(&E::CircuitClosed { src_peer_id: b, dst_peer_id: a, error: None }, &m);
        t.apply(&E::CircuitClosed { src_peer_id: b, dst_peer_id: a, error: None }, &m);
        assert_eq!((t.circuits_active(), m.circuits_active.get()), (0, 0), "never below zero");
        let text = crate::metrics::encode(&registry);
        for line in [
            "sensor_relay_circuits_total{result=\"accepted\"} 2",
            "sensor_relay_circuits_total{result=\"denied\"} 1",
            "sensor_relay_circuits_total{result=\"closed\"} 3",
            "sensor_relay_reservations_total{result=\"accepted\"} 0",
            "sensor_relay_reservations_active 0",
            "sensor_relay_circuits_active 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
