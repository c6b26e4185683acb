//! Building our `Version` message and reading the peer's (docs/kaspa-protocol.md).
//!
//! Wire facts, from kaspa-p2p-lib 2.1.0 `convert/model/version.rs` and kaspad's
//! `p2p/flows/src/flow_context.rs`: protocol version 11 (kaspad accepts 10 and ≥ 11), `id`
//! exactly 16 bytes, user agent truncated at 256 bytes, timestamp in ms since the Unix epoch,
//! optional `address` that peers add to their address book when routable.

use std::net::SocketAddr;

use kaspa_p2p_lib::{convert::model::version::Version, pb};
use kaspa_utils::networking::{IpAddress, NetAddress, PeerId};
use uuid::Uuid;

use sensor_core::event::PeerInfo;
use sensor_core::network::Network;

/// The P2P protocol version we advertise. kaspad 2.1.0 speaks 11 and rejects < 10.
pub const PROTOCOL_VERSION: u32 = 11;

/// Our user agent, `/kaspa-sensor:<crate version>/`.
pub fn user_agent() -> String {
    format!("/kaspa-sensor:{}/", env!("CARGO_PKG_VERSION"))
}

/// Everything needed to build our `Version` for one network.
#[derive(Debug, Clone)]
pub struct LocalVersion {
    pub network: Network,
    /// The sensor's persistent peer id (inbound) or a per-probe id (dial-backs).
    pub id: Uuid,
    /// Advertised in `Version.address` so peers gossip the sensor; `None` advertises nothing.
    pub address: Option<SocketAddr>,
}

impl LocalVersion {
    /// The protowire message, timestamped now. `disableRelayTx` is set: the sensor keeps no
    /// mempool, so peers should not push transactions to it.
    pub fn message(&self) -> pb::VersionMessage {
        let address = self.address.map(|a| NetAddress::new(IpAddress::new(a.ip()), a.port()));
        let mut version =
            Version::new(address, PeerId::new(self.id), self.network.wire_name().to_owned(), None, PROTOCOL_VERSION);
        version.user_agent = user_agent();
        version.disable_relay_tx = true;
        version.into()
    }
}

/// A peer's `Version` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerVersion {
    pub id: Uuid,
    pub info: PeerInfo,
    /// Port from `Version.address`, if the peer advertised one (its IP is never dialled).
    pub advertised_port: Option<u16>,
}

/// Validates a peer's `Version` with kaspa-p2p-lib's own conversion (16-byte id, 4/16-byte IP,
/// port ≤ 65535, user agent ≤ 256 bytes).
///
/// Errors: the library's conversion error text, e.g. an id of the wrong length.
pub fn read_peer_version(msg: pb::VersionMessage) -> Result<PeerVersion, String> {
    let version = Version::try_from(msg).map_err(|e| e.to_string())?;
    let id: Uuid = version.id.into();
    let advertised = version.address.map(|a| SocketAddr::new(a.ip.0, a.port));
    Ok(PeerVersion {
        id,
        advertised_port: advertised.map(|a| a.port()),
        info: PeerInfo {
            peer_id: Some(id.simple().to_string()),
            protocol_version: Some(version.protocol_version),
            user_agent: Some(version.user_agent),
            network: Some(version.network),
            advertised_address: advertised.map(|a| a.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_version_round_trips_through_the_library_conversion() {
        let id = Uuid::new_v4();
        let local = LocalVersion { network: Network::Devnet, id, address: Some("203.0.113.7:16611".parse().unwrap()) };
        let msg = local.message();
        assert_eq!(msg.protocol_version, 11);
        assert_eq!(msg.network, "kaspa-devnet");
        assert_eq!(msg.id.len(), 16);
        assert!(msg.disable_relay_tx);
        assert!(msg.user_agent.starts_with("/kaspa-sensor:"));
        let peer = read_peer_version(msg).unwrap();
        assert_eq!(peer.id, id);
        assert_eq!(peer.advertised_port, Some(16611));
        assert_eq!(peer.info.advertised_address.as_deref(), Some("203.0.113.7:16611"));
        assert_eq!(peer.info.peer_id.unwrap(), id.simple().to_string());
    }

    #[test]
    fn malformed_versions_are_errors_not_panics() {
        let base = LocalVersion { network: Network::Mainnet, id: Uuid::new_v4(), address: None }.message();
        for id_len in [0usize, 15, 17, 1000] {
            let msg = pb::VersionMessage { id: vec![7; id_len], ..base.clone() };
            assert!(read_peer_version(msg).is_err(), "id of {id_len} bytes");
        }
        let bad_ip = pb::NetAddress { timestamp: 0, ip: vec![1, 2, 3], port: 1 };
        assert!(read_peer_version(pb::VersionMessage { address: Some(bad_ip), ..base.clone() }).is_err());
        let bad_port = pb::NetAddress { timestamp: 0, ip: vec![1, 2, 3, 4], port: 70000 };
        assert!(read_peer_version(pb::VersionMessage { address: Some(bad_port), ..base.clone() }).is_err());
        let long_ua = pb::VersionMessage { user_agent: "é".repeat(300), ..base };
        assert!(read_peer_version(long_ua).unwrap().info.user_agent.unwrap().len() <= 256);
    }
}
