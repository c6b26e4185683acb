//! The relay's libp2p swarm: TCP and QUIC v1 transports, Noise + Yamux on TCP, and the
//! behaviours circuit relay v2 (server), identify, ping and AutoNAT v1 (server side only).

use std::{io, net::SocketAddr, num::NonZeroU32, time::Duration};

use libp2p::{
    Swarm, SwarmBuilder, TransportError, autonat, identify, identity::Keypair, noise, ping, relay,
    swarm::NetworkBehaviour, tcp, yamux,
};

use crate::error::{Result, SensorError};
use sensor_core::config::{RATE_PER_IP, RATE_PER_PEER, RelayConfig};

/// Identify `protocolVersion` of the relay.
pub const PROTOCOL_VERSION: &str = "/p2p-sensor/relay/1.0.0";
/// How long a connection without a reservation, circuit or open stream is kept.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed `Swarm::listen_on` on `address` as [`SensorError::Bind`] (e.g. the port is in use),
/// for the relay's and the punch client's listeners alike.
pub fn bind_error(what: &'static str, address: SocketAddr, e: TransportError<io::Error>) -> SensorError {
    let source = match e {
        TransportError::Other(e) => e,
        TransportError::MultiaddrNotSupported(addr) => io::Error::other(format!("{addr} is not supported")),
    };
    SensorError::Bind { what, address, source }
}

/// Identify `agentVersion` of this build: `sensor/<crate version>`.
pub fn agent_version() -> String {
    format!("sensor/{}", env!("CARGO_PKG_VERSION"))
}

/// Everything the relay speaks.
#[derive(NetworkBehaviour)]
pub struct RelayBehaviour {
    pub relay: relay::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub autonat: autonat::Behaviour,
}

/// rust-libp2p's relay limits from `[relay]`: the caps, and the four token-bucket rate limiters
/// with rust-libp2p's refill intervals ([`RATE_PER_PEER`], [`RATE_PER_IP`]); a rate of 0 adds
/// no limiter. The reservation duration stays at rust-libp2p's default (1 hour).
///
/// The two per-peer caps are passed one lower: libp2p-relay 0.22 (`behaviour.rs`) denies a new
/// reservation or circuit only when the peer already holds *more than* its cap (`>`, not
/// `>=`), so it admits cap + 1 (rust-libp2p PR #6365, open). With cap − 1 the relay admits
/// exactly `relay.max_reservations_per_peer` / `relay.max_circuits_per_peer` (shown by
/// `tests/relay_abuse.rs`). The global caps use `>=` and are passed as they are.
pub fn relay_limits(config: &RelayConfig) -> relay::Config {
    let mut limits = relay::Config {
        max_reservations: config.max_reservations,
        max_reservations_per_peer: config.max_reservations_per_peer.saturating_sub(1),
        max_circuits: config.max_circuits,
        max_circuits_per_peer: config.max_circuits_per_peer.saturating_sub(1),
        max_circuit_duration: Duration::from_secs(config.max_circuit_duration_secs),
        max_circuit_bytes: config.max_circuit_bytes,
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
        ..relay::Config::default()
    };
    let (peer_interval, ip_interval) = (RATE_PER_PEER.1, RATE_PER_IP.1);
    if let Some(n) = NonZeroU32::new(config.reservation_rate_per_peer) {
        limits = limits.reservation_rate_per_peer(n, peer_interval);
    }
    if let Some(n) = NonZeroU32::new(config.reservation_rate_per_ip) {
        limits = limits.reservation_rate_per_ip(n, ip_interval);
    }
    if let Some(n) = NonZeroU32::new(config.circuit_rate_per_peer) {
        limits = limits.circuit_src_per_peer(n, peer_interval);
    }
    if let Some(n) = NonZeroU32::new(config.circuit_rate_per_ip) {
        limits = limits.circuit_src_per_ip(n, ip_interval);
    }
    limits
}

/// AutoNAT v1 as a server only: it never probes by itself (no servers, connected peers not
/// used), it answers dial-back requests. Its dial-backs are bounded by the swarm's connection
/// timeout (10 s), below the client's request timeout (30 s), so a client behind a NAT gets a
/// dial error, not a timeout. `allow_private` is the lab mode (`only_global_ips = false`).
pub fn autonat_config(allow_private: bool) -> autonat::Config {
    autonat::Config { use_connected: false, only_global_ips: !allow_private, ..autonat::Config::default() }
}

/// Builds the relay's swarm on the current tokio runtime.
///
/// Errors: [`SensorError::Io`] when the Noise configuration cannot be made from `key` (not
/// expected for Ed25519 keys).
pub fn build(key: Keypair, config: &RelayConfig) -> Result<Swarm<RelayBehaviour>> {
    let limits = relay_limits(config);
    let autonat = autonat_config(config.allow_private_targets);
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| SensorError::io("setting up Noise for the relay", io::Error::other(e)))?
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            RelayBehaviour {
                relay: relay::Behaviour::new(peer_id, limits),
                identify: identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.to_owned(), key.public())
                        .with_agent_version(agent_version()),
                ),
                ping: ping::Behaviour::default(),
                autonat: autonat::Behaviour::new(peer_id, autonat),
            }
        })
        .map_err(|e| SensorError::io("setting up the relay behaviours", io::Error::other(e.to_string())))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_keep_rust_libp2p_rate_limiters_and_zero_removes_them() {
        let config = RelayConfig::default();
        let limits = relay_limits(&config);
        let libp2p = relay::Config::default();
        assert_eq!(limits.reservation_rate_limiters.len(), libp2p.reservation_rate_limiters.len());
        assert_eq!(limits.circuit_src_rate_limiters.len(), libp2p.circuit_src_rate_limiters.len());
        assert_eq!((limits.max_circuits, limits.max_circuit_bytes), (libp2p.max_circuits, libp2p.max_circuit_bytes));
        // libp2p's per-peer checks admit one more than their value.
        assert_eq!(
            (limits.max_reservations_per_peer, limits.max_circuits_per_peer),
            (config.max_reservations_per_peer - 1, config.max_circuits_per_peer - 1)
        );

        let lab = RelayConfig { reservation_rate_per_ip: 0, circuit_rate_per_peer: 0, ..config.clone() };
        let limits = relay_limits(&lab);
        assert_eq!((limits.reservation_rate_limiters.len(), limits.circuit_src_rate_limiters.len()), (1, 1));
        let off = RelayConfig {
            reservation_rate_per_peer: 0,
            reservation_rate_per_ip: 0,
            circuit_rate_per_peer: 0,
            circuit_rate_per_ip: 0,
            ..config
        };
        let limits = relay_limits(&off);
        assert!(limits.reservation_rate_limiters.is_empty() && limits.circuit_src_rate_limiters.is_empty());
    }

    #[test]
    fn a_bucket_of_one_refuses_the_second_circuit_from_the_same_peer() {
        let config = RelayConfig { circuit_rate_per_peer: 1, circuit_rate_per_ip: 0, ..RelayConfig::default() };
        let mut limits = relay_limits(&config);
        let (peer, other) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let addr: libp2p::Multiaddr = "/ip4/198.51.100.9/tcp/4001".parse().unwrap();
        let now = std::time::Instant::now();
        let limiter = &mut limits.circuit_src_rate_limiters[0];
        assert!(limiter.try_next(peer, &addr, now));
        assert!(!limiter.try_next(peer, &addr, now), "the bucket of one is empty");
        assert!(limiter.try_next(other, &addr, now), "buckets are per peer");
        assert!(limiter.try_next(peer, &addr, now + RATE_PER_PEER.1), "refilled after the interval");
    }
}
