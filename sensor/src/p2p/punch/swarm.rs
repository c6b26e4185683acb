//! The hole-punch client's libp2p swarm: TCP (Noise + Yamux) and QUIC v1, the relay client
//! transport, and the behaviours relay client, DCUtR, identify, ping and AutoNAT v1 (client, with
//! the relay as its only server).
//!
//! Port reuse: rust-libp2p 0.57's TCP and QUIC transports dial from a listening port when one
//! matches the remote's address family and loopback-ness, and nothing here ever asks for a new
//! port (`allocate_new_port()`), so the address the relay observes (identify) is the one DCUtR
//! gives the peer, and the peer's dial reaches the mapping our own dial opened (docs/natlab.md).

use std::{io, time::Duration};

use libp2p::{
    PeerId, Swarm, SwarmBuilder, autonat, dcutr, identify, identity::Keypair, noise, ping, relay,
    swarm::NetworkBehaviour, tcp, yamux,
};

use crate::{
    error::{Result, SensorError},
    p2p::swarm::agent_version,
};

/// Identify `protocolVersion` of the hole-punch client.
pub const PROTOCOL_VERSION: &str = "/p2p-sensor/punch/1.0.0";
/// How long a connection without a reservation, circuit or open stream is kept.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Ping timeout: a direct connection that does not answer within this is not a success.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the hole-punch client speaks.
#[derive(NetworkBehaviour)]
pub struct PunchBehaviour {
    pub relay_client: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub autonat: autonat::Behaviour,
    /// `/p2psensor/kaspa/1` streams ([`crate::p2p::kaspa_stream`]).
    pub stream: libp2p_stream::Behaviour,
}

/// AutoNAT v1 as a client of the relay only (`sensor relay` runs the server): first probe after
/// a second, retried every 30 s while unknown. It never uses other connected peers as servers
/// (the punch targets are not AutoNAT servers one should trust for this). The server side of the
/// behaviour keeps rust-libp2p's defaults (it refuses clients at non-global addresses).
pub fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(1),
        retry_interval: Duration::from_secs(30),
        use_connected: false,
        ..autonat::Config::default()
    }
}

/// Builds the client's swarm on the current tokio runtime; AutoNAT asks `relay`.
///
/// Errors: [`SensorError::Io`] when the Noise configuration cannot be made from `key` (not
/// expected for Ed25519 keys).
pub fn build(key: Keypair, relay: PeerId) -> Result<Swarm<PunchBehaviour>> {
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| SensorError::io("setting up Noise for the punch client", io::Error::other(e)))?
        .with_quic()
        .with_dns()
        .map_err(|e| SensorError::io("reading the system DNS configuration (/etc/resolv.conf)", e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| SensorError::io("setting up the relay client transport", io::Error::other(e)))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            PunchBehaviour {
                relay_client,
                dcutr: dcutr::Behaviour::new(peer_id),
                identify: identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.to_owned(), key.public())
                        .with_agent_version(agent_version()),
                ),
                ping: ping::Behaviour::new(ping::Config::new().with_timeout(PING_TIMEOUT)),
                autonat: autonat::Behaviour::new(peer_id, autonat_config()),
                stream: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| SensorError::io("setting up the punch behaviours", io::Error::other(e.to_string())))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    // No address: AutoNAT would add it to every dial of the relay (the reservation's too), and
    // two concurrent dials to the same relay address cannot both reuse the listening port: one
    // falls back to an ephemeral port, and the relay may then observe (and DCUtR hand out) that.
    // The probes go over the reservation's connection.
    swarm.behaviour_mut().autonat.add_server(relay, None);
    Ok(swarm)
}
