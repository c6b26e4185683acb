//! The relay's libp2p swarm: TCP and QUIC v1 transports, Noise + Yamux on TCP, and the
//! behaviours circuit relay v2 (server), identify, ping and AutoNAT v1 (server side only).

use std::{io, time::Duration};

use libp2p::{
    Swarm, SwarmBuilder, autonat, identify, identity::Keypair, noise, ping, relay, swarm::NetworkBehaviour, tcp, yamux,
};

use crate::{
    config::RelayConfig,
    error::{Result, SensorError},
};

/// Identify `protocolVersion` of the relay.
pub const PROTOCOL_VERSION: &str = "/p2p-sensor/relay/1.0.0";
/// How long a connection without a reservation, circuit or open stream is kept.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

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

/// rust-libp2p's relay limits from `[relay]` (rate limiters and reservation duration stay at
/// rust-libp2p's defaults).
pub fn relay_limits(config: &RelayConfig) -> relay::Config {
    relay::Config {
        max_reservations: config.max_reservations,
        max_reservations_per_peer: config.max_reservations_per_peer,
        max_circuits: config.max_circuits,
        max_circuits_per_peer: config.max_circuits_per_peer,
        max_circuit_duration: Duration::from_secs(config.max_circuit_duration_secs),
        max_circuit_bytes: config.max_circuit_bytes,
        ..relay::Config::default()
    }
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
