//! Self-reachability of a libp2p node we run: public, private behind a cone NAT, or private
//! behind a symmetric NAT (issue 4, item 3).
//!
//! Two kinds of evidence feed one pure verdict ([`MappingTest::verdict`]):
//!
//! - **AutoNAT v1** (the relay dials our observed address back): `Public` proves inbound
//!   reachability; `Private` says nobody could dial in.
//! - **The address-mapping test** (RFC 5780 §4.3, "determining NAT mapping behavior"): identify
//!   tells us the address each remote endpoint observes us at. Two remote endpoints (the relay's
//!   primary and alternate port, or two different peers) that see the same local socket at the
//!   same external address mean endpoint-independent mapping (a cone NAT, which hole punching can
//!   traverse); different external addresses mean endpoint-dependent mapping (symmetric: the port
//!   DCUtR hands out is useless to the peer). An observed address equal to the local socket means
//!   no NAT at all.
//!
//! A node that accepted an inbound, non-relayed connection from a remote (non-loopback) address is
//! reachable by definition: that is how `sensor relay` learns it is public without an AutoNAT
//! server of its own ([`MappingTest::inbound_from`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use libp2p::{Multiaddr, multiaddr::Protocol};
use sensor_core::reachability::Reachability;

/// Observations kept per node: enough for every listener of a node with a few remote endpoints.
pub const MAX_OBSERVATIONS: usize = 64;

/// What AutoNAT v1 last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoNatStatus {
    Public,
    Private,
    #[default]
    Unknown,
}

/// How the NAT in front of a node maps one local socket to external addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Remote endpoints see the local socket itself.
    NoNat,
    /// Every remote endpoint sees the same external address (cone NAT).
    EndpointIndependent,
    /// Different remote endpoints see different external addresses (symmetric NAT).
    EndpointDependent,
    /// No local socket has been observed by two different remote endpoints yet.
    Unknown,
}

/// One identify observation: remote endpoint `remote` saw the connection from our socket
/// `local` at `observed`. Transport is part of the key: TCP and UDP mappings are separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Observation {
    udp: bool,
    local: SocketAddr,
    remote: SocketAddr,
    observed: SocketAddr,
}

/// The evidence gathered by one node, bounded by [`MAX_OBSERVATIONS`] (the first ones are kept:
/// a mapping does not change during a run, and a flood of identify messages must not grow it).
#[derive(Debug, Clone, Default)]
pub struct MappingTest {
    observations: BTreeSet<Observation>,
    autonat: AutoNatStatus,
    inbound: bool,
}

impl MappingTest {
    /// Records that the remote endpoint `remote` (a connection's remote multiaddr) observed the
    /// connection from `local` (its local multiaddr) at `observed` (identify's `observedAddr`).
    /// Addresses that are not plain `/ip4|ip6/…/tcp/…` or `…/udp/…/quic-v1` (relayed circuits,
    /// DNS names) and mismatched transports are ignored; returns whether it was kept.
    pub fn observe(&mut self, local: &Multiaddr, remote: &Multiaddr, observed: &Multiaddr) -> bool {
        let (Some((udp, local)), Some((r_udp, remote)), Some((o_udp, observed))) =
            (socket(local), socket(remote), socket(observed))
        else {
            return false;
        };
        if udp != r_udp || udp != o_udp || self.observations.len() >= MAX_OBSERVATIONS {
            return false;
        }
        self.observations.insert(Observation { udp, local, remote, observed })
    }

    /// Records AutoNAT v1's latest status.
    pub fn autonat(&mut self, status: AutoNatStatus) {
        self.autonat = status;
    }

    /// Records an inbound, non-relayed connection from `remote`; one from a loopback or
    /// unspecified address proves nothing about reachability from elsewhere and is ignored.
    pub fn inbound_from(&mut self, remote: &Multiaddr) {
        if let Some((_, addr)) = socket(remote)
            && !addr.ip().is_loopback()
            && !addr.ip().is_unspecified()
        {
            self.inbound = true;
        }
    }

    /// The mapping behaviour, from every local socket seen by at least two remote endpoints.
    /// One socket with two different external addresses is enough for `EndpointDependent`.
    pub fn mapping(&self) -> Mapping {
        let mut by_socket: BTreeMap<(bool, SocketAddr), (BTreeSet<SocketAddr>, BTreeSet<SocketAddr>)> = BTreeMap::new();
        for o in &self.observations {
            let (remotes, observed) = by_socket.entry((o.udp, o.local)).or_default();
            remotes.insert(o.remote);
            observed.insert(o.observed);
        }
        let mut mapping = Mapping::Unknown;
        for ((_, local), (remotes, observed)) in &by_socket {
            if observed.len() > 1 {
                return Mapping::EndpointDependent;
            }
            if remotes.len() < 2 {
                continue;
            }
            let same_as_local =
                observed.iter().all(|o| o == local || (o.port() == local.port() && is_local_ip(o.ip())));
            mapping = if same_as_local { Mapping::NoNat } else { Mapping::EndpointIndependent };
        }
        mapping
    }

    /// The verdict: AutoNAT `Public` or an inbound connection → `Public`; otherwise the mapping
    /// decides (`NoNat` behind a firewall behaves like a cone for hole punching); a private
    /// AutoNAT status without a mapping result stays `Unknown`.
    pub fn verdict(&self) -> Reachability {
        if self.autonat == AutoNatStatus::Public || self.inbound {
            return Reachability::Public;
        }
        match self.mapping() {
            Mapping::EndpointDependent => Reachability::PrivateSymmetric,
            Mapping::EndpointIndependent | Mapping::NoNat => Reachability::PrivateCone,
            Mapping::Unknown => Reachability::Unknown,
        }
    }
}

/// `(is_udp, socket)` of `/ip4|ip6/IP/tcp/PORT[/…]` or `/ip4|ip6/IP/udp/PORT/quic-v1[/…]`;
/// `None` for anything relayed (`/p2p-circuit`) or not IP.
fn socket(addr: &Multiaddr) -> Option<(bool, SocketAddr)> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match (it.next()?, it.next()) {
        (Protocol::Tcp(port), _) => Some((false, SocketAddr::new(ip, port))),
        (Protocol::Udp(port), Some(Protocol::QuicV1)) => Some((true, SocketAddr::new(ip, port))),
        _ => None,
    }
}

/// Whether `ip` is assigned to an interface of this host (the observed address is our own, so
/// no NAT rewrote it). A local socket bound to `0.0.0.0` is reported as such by libp2p.
fn is_local_ip(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "/ip4/10.0.1.2/udp/40000/quic-v1";
    const RELAY: &str = "/ip4/198.51.100.10/udp/4001/quic-v1";
    const RELAY_ALT: &str = "/ip4/198.51.100.10/udp/4002/quic-v1";

    #[test]
    fn one_remote_endpoint_proves_nothing() {
        let mut t = MappingTest::default();
        assert!(t.observe(&ma(LOCAL), &ma(RELAY), &ma("/ip4/203.0.113.1/udp/40000/quic-v1")));
        assert_eq!((t.mapping(), t.verdict()), (Mapping::Unknown, Reachability::Unknown));
        t.autonat(AutoNatStatus::Private);
        assert_eq!(t.verdict(), Reachability::Unknown, "private, but cone or symmetric is not known");
    }

    #[test]
    fn the_same_external_address_for_two_endpoints_is_a_cone() {
        let mut t = MappingTest::default();
        t.observe(&ma(LOCAL), &ma(RELAY), &ma("/ip4/203.0.113.1/udp/40000/quic-v1"));
        t.observe(
            &ma(LOCAL),
            &ma(RELAY_ALT),
            &ma("/ip4/203.0.113.1/udp/40000/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"),
        );
        assert_eq!((t.mapping(), t.verdict()), (Mapping::EndpointIndependent, Reachability::PrivateCone));
        t.autonat(AutoNatStatus::Public);
        assert_eq!(t.verdict(), Reachability::Public, "AutoNAT's confirmation wins");
    }

    #[test]
    fn different_external_ports_are_symmetric() {
        let mut t = MappingTest::default();
        t.observe(&ma(LOCAL), &ma(RELAY), &ma("/ip4/203.0.113.1/udp/58623/quic-v1"));
        assert_eq!(t.verdict(), Reachability::Unknown);
        t.observe(&ma(LOCAL), &ma(RELAY_ALT), &ma("/ip4/203.0.113.1/udp/43337/quic-v1"));
        assert_eq!((t.mapping(), t.verdict()), (Mapping::EndpointDependent, Reachability::PrivateSymmetric));
    }

    #[test]
    fn tcp_and_udp_mappings_are_kept_apart() {
        let mut t = MappingTest::default();
        t.observe(
            &ma("/ip4/10.0.1.2/tcp/40000"),
            &ma("/ip4/198.51.100.10/tcp/4001"),
            &ma("/ip4/203.0.113.1/tcp/40000"),
        );
        t.observe(&ma(LOCAL), &ma(RELAY), &ma("/ip4/203.0.113.1/udp/40001/quic-v1"));
        assert_eq!(t.mapping(), Mapping::Unknown, "one endpoint per transport");
        assert!(!t.observe(&ma(LOCAL), &ma("/ip4/198.51.100.10/tcp/4001"), &ma("/ip4/203.0.113.1/udp/1/quic-v1")));
    }

    #[test]
    fn our_own_address_observed_means_no_nat() {
        let mut t = MappingTest::default();
        let local = ma("/ip4/127.0.0.1/tcp/40000");
        t.observe(&local, &ma("/ip4/127.0.0.1/tcp/4001"), &local);
        t.observe(&local, &ma("/ip4/127.0.0.1/tcp/4002"), &local);
        assert_eq!((t.mapping(), t.verdict()), (Mapping::NoNat, Reachability::PrivateCone));
        let wildcard = ma("/ip4/0.0.0.0/tcp/40001");
        let mut t = MappingTest::default();
        t.observe(&wildcard, &ma("/ip4/127.0.0.1/tcp/4001"), &ma("/ip4/127.0.0.1/tcp/40001"));
        t.observe(&wildcard, &ma("/ip4/127.0.0.1/tcp/4002"), &ma("/ip4/127.0.0.1/tcp/40001"));
        assert_eq!(t.mapping(), Mapping::NoNat, "a wildcard-bound socket observed at a local IP");
    }

    #[test]
    fn inbound_connections_prove_reachability_unless_from_loopback() {
        let mut t = MappingTest::default();
        t.inbound_from(&ma("/ip4/127.0.0.1/tcp/5555"));
        t.inbound_from(&ma(
            "/ip4/198.51.100.10/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        ));
        assert_eq!(t.verdict(), Reachability::Unknown);
        t.inbound_from(&ma("/ip4/203.0.113.9/udp/1234/quic-v1"));
        assert_eq!(t.verdict(), Reachability::Public);
    }

    #[test]
    fn relayed_and_dns_addresses_are_ignored_and_the_evidence_is_bounded() {
        let mut t = MappingTest::default();
        assert!(!t.observe(&ma(LOCAL), &ma("/dns4/relay.example/udp/4001/quic-v1"), &ma(LOCAL)));
        assert!(!t.observe(
            &ma(LOCAL),
            &ma(RELAY),
            &ma("/ip4/1.2.3.4/udp/1/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit")
        ));
        for port in 0..200u16 {
            t.observe(&ma(LOCAL), &ma(&format!("/ip4/198.51.100.10/udp/{port}/quic-v1")), &ma(LOCAL));
        }
        assert_eq!(t.observations.len(), MAX_OBSERVATIONS);
    }
}
