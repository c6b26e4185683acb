//! The libp2p sections of the configuration: `[relay]` (`sensor relay`) and `[punch]`
//! (`sensor punch`), their validation, and the multiaddr / PeerId (de)serialisers they use.
//! Split from `config.rs` to keep each file readable; the loading rules live there.

use std::time::Duration;

use super::*;

/// `[relay]`: `sensor relay`, the libp2p circuit relay v2 server (with identify, ping and an
/// AutoNAT v1 server). The limits default to rust-libp2p's `relay::Config` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// TCP listen address (`SENSOR_RELAY_LISTEN_TCP`); `None`/`""` = no TCP listener. Default
    /// `0.0.0.0:4001`.
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_addr")]
    pub listen_tcp: Option<SocketAddr>,
    /// QUIC v1 (UDP) listen address (`SENSOR_RELAY_LISTEN_QUIC`); `None`/`""` (default) = no QUIC.
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_addr")]
    pub listen_quic: Option<SocketAddr>,
    /// A second TCP listen address (`SENSOR_RELAY_LISTEN_TCP_ALTERNATE`), same IP, another port:
    /// clients connect to both and compare the addresses each observes them at (the
    /// address-mapping test, RFC 5780 §4.3). `None`/`""` (default) = none.
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_addr")]
    pub listen_tcp_alternate: Option<SocketAddr>,
    /// The same for QUIC (`SENSOR_RELAY_LISTEN_QUIC_ALTERNATE`). `None`/`""` (default) = none.
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_addr")]
    pub listen_quic_alternate: Option<SocketAddr>,
    /// Multiaddrs the relay is reachable at, told to clients in reservations
    /// (`SENSOR_RELAY_EXTERNAL_ADDRESSES`, comma-separated). Without one the relay refuses every
    /// reservation (rust-libp2p relay 0.22 needs a confirmed external address). Default none.
    #[serde(serialize_with = "ser_multiaddrs", deserialize_with = "de_multiaddrs")]
    pub external_addresses: Vec<Multiaddr>,
    /// The protobuf-encoded libp2p keypair (`SENSOR_RELAY_IDENTITY_FILE`); `None`/`""` =
    /// `<data_dir>/relay_identity.key`, see [`Config::relay_identity_file`]. Created (Ed25519,
    /// mode 0600) when absent.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub identity_file: Option<PathBuf>,
    /// Reservations held at once, 1..=100000. Default 128.
    pub max_reservations: usize,
    /// Reservations of one peer at once, 1..=100000. Default 4.
    pub max_reservations_per_peer: usize,
    /// Circuits relayed at once, 1..=100000. Default 16.
    pub max_circuits: usize,
    /// Circuits of one peer at once, 1..=100000. Default 4.
    pub max_circuits_per_peer: usize,
    /// Lifetime of a circuit, seconds, 1..=86400. Default 120.
    pub max_circuit_duration_secs: u64,
    /// Bytes relayed per circuit, 1024..=1073741824. Default 131072 (128 KiB).
    pub max_circuit_bytes: u64,
    /// Reservation rate limit per peer, 0..=100000: a token bucket of this many reservations
    /// that refills one every 2 minutes (rust-libp2p `relay::Config::reservation_rate_per_peer`);
    /// 0 = no limit (lab mode, e.g. a 50-attempt benchmark). Default 30.
    pub reservation_rate_per_peer: u32,
    /// Reservation rate limit per source IP, 0..=100000: a bucket of this many that refills one
    /// every minute (`reservation_rate_per_ip`); 0 = no limit. Default 60.
    pub reservation_rate_per_ip: u32,
    /// Circuit rate limit per source peer, 0..=100000: a bucket of this many circuits that
    /// refills one every 2 minutes (`circuit_src_per_peer`); 0 = no limit. Default 30.
    pub circuit_rate_per_peer: u32,
    /// Circuit rate limit per source IP, 0..=100000: a bucket of this many that refills one
    /// every minute (`circuit_src_per_ip`); 0 = no limit. Default 60.
    pub circuit_rate_per_ip: u32,
    /// Lab mode: the AutoNAT server also answers clients observed at private, loopback or
    /// documentation addresses (rust-libp2p `only_global_ips = false`). Default false.
    pub allow_private_targets: bool,
}

/// `[punch]`: `sensor punch`, the DCUtR hole-punch client. It reserves a slot on `relay` and, for
/// each of `targets`, dials it through the relay and lets DCUtR upgrade the connection; every
/// attempt is recorded (table `punch_attempts`, `sensor_punch_*` metrics, `HolePunchSummary` in
/// reports). Without targets it only holds the reservation, so other sensors can punch to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PunchConfig {
    /// The relay: `/ip4|ip6/IP/tcp/PORT/p2p/ID` or `…/udp/PORT/quic-v1/p2p/ID`
    /// (`SENSOR_PUNCH_RELAY`); `None`/`""` (default) = none, and `sensor punch` refuses to start.
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_multiaddr")]
    pub relay: Option<Multiaddr>,
    /// PeerIds to punch to (`SENSOR_PUNCH_TARGETS`, comma-separated); none (default) = hold the
    /// reservation only.
    #[serde(serialize_with = "ser_peer_ids", deserialize_with = "de_peer_ids")]
    pub targets: Vec<PeerId>,
    /// Attempts per target, 1..=1000. Default 1.
    pub attempts: u32,
    /// Seconds, 0..=86400. With targets: the bound of one attempt (0 = [`DEFAULT_PUNCH_TIMEOUT_SECS`]).
    /// Without: how long the reservation is held (0 = until SIGTERM/SIGINT). Default 0.
    pub timeout_secs: u64,
    /// Name of the RelayNode `relay` belongs to, carried in reports (`HolePunchSummary.relay`) so
    /// the operator attributes the attempts to it; `""` (default) = not attributed.
    pub relay_node: String,
    /// The protobuf-encoded libp2p keypair (`SENSOR_PUNCH_IDENTITY_FILE`); `None`/`""` =
    /// `<data_dir>/punch_identity.key`, see [`Config::punch_identity_file`]. Created (Ed25519, mode
    /// 0600) when absent.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub identity_file: Option<PathBuf>,
    /// Local listen multiaddrs, `/ip4|ip6/IP/tcp/PORT` or `…/udp/PORT/quic-v1`, at least one:
    /// DCUtR dials reuse these ports, so the address the relay observes is the one peers punch
    /// to. Default `/ip4/0.0.0.0/tcp/0` and `/ip4/0.0.0.0/udp/0/quic-v1`.
    #[serde(serialize_with = "ser_multiaddrs", deserialize_with = "de_multiaddrs")]
    pub listen: Vec<Multiaddr>,
    /// A file of PeerIds to punch to besides `targets` (`SENSOR_PUNCH_TARGETS_FILE`): one base58
    /// PeerId per line, `#` comments and blank lines ignored, the client's own PeerId skipped,
    /// re-read before every round (the operator writes the fleet's members there). A missing or
    /// unreadable file is an empty list (logged); a malformed line is skipped (logged, counted).
    /// `None`/`""` (default) = none.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub targets_file: Option<PathBuf>,
    /// Seconds between rounds, 0..=86400. 0 (default): one round of attempts, then exit (without
    /// targets: hold the reservation). > 0: hold the reservation and run a round of attempts
    /// against the current targets every `interval_secs` until SIGTERM (the operator's sidecar).
    pub interval_secs: u64,
    /// Kaspa over a hole-punched connection, accepting side (`SENSOR_PUNCH_KASPA_BRIDGE`): pipe
    /// every incoming `/p2psensor/kaspa/1` stream to this Kaspa P2P address (a kaspad, or `sensor
    /// listen`), byte for byte. `None`/`""` (default) = the protocol is not served.
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_addr")]
    pub kaspa_bridge: Option<SocketAddr>,
    /// Kaspa over a hole-punched connection, dialling side (`SENSOR_PUNCH_KASPA_HANDSHAKE`): after
    /// each successful attempt, complete a Kaspa handshake (network = `network`) over a
    /// `/p2psensor/kaspa/1` stream on the direct connection and record it with the attempt.
    /// Default false.
    pub kaspa_handshake: bool,
}

/// The bound of one punch attempt when `punch.timeout_secs` is 0. DCUtR failures take ~15 s
/// (QUIC) to ~30 s (TCP) to show (docs/natlab.md).
pub const DEFAULT_PUNCH_TIMEOUT_SECS: u64 = 30;

impl Default for PunchConfig {
    fn default() -> Self {
        Self {
            relay: None,
            targets: Vec::new(),
            attempts: 1,
            timeout_secs: 0,
            relay_node: String::new(),
            identity_file: None,
            targets_file: None,
            interval_secs: 0,
            kaspa_bridge: None,
            kaspa_handshake: false,
            listen: vec![
                Multiaddr::empty().with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED)).with(Protocol::Tcp(0)),
                Multiaddr::empty()
                    .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
                    .with(Protocol::Udp(0))
                    .with(Protocol::QuicV1),
            ],
        }
    }
}

/// rust-libp2p relay 0.22's default rate limiters (`relay::Config::default`, behaviour.rs): per
/// peer a bucket of 30 refilled one every 2 minutes, per IP a bucket of 60 refilled one every
/// minute — the same for reservations and for circuits. (bucket size, refill interval)
pub const RATE_PER_PEER: (u32, Duration) = (30, Duration::from_secs(120));
/// See [`RATE_PER_PEER`].
pub const RATE_PER_IP: (u32, Duration) = (60, Duration::from_secs(60));

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen_tcp: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4001))),
            listen_quic: None,
            listen_tcp_alternate: None,
            listen_quic_alternate: None,
            external_addresses: Vec::new(),
            identity_file: None,
            max_reservations: 128,
            max_reservations_per_peer: 4,
            max_circuits: 16,
            max_circuits_per_peer: 4,
            max_circuit_duration_secs: 120,
            max_circuit_bytes: 128 * 1024,
            reservation_rate_per_peer: RATE_PER_PEER.0,
            reservation_rate_per_ip: RATE_PER_IP.0,
            circuit_rate_per_peer: RATE_PER_PEER.0,
            circuit_rate_per_ip: RATE_PER_IP.0,
            allow_private_targets: false,
        }
    }
}

/// The relay's listeners as given on the command line; `None` = that transport is off. The
/// alternates are the second address of a transport (see `relay.listen_tcp_alternate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayListen {
    pub tcp: Option<SocketAddr>,
    pub quic: Option<SocketAddr>,
    pub tcp_alternate: Option<SocketAddr>,
    pub quic_alternate: Option<SocketAddr>,
}

impl RelayListen {
    /// From `--listen` multiaddrs: each is `/ip4|ip6/ADDR/tcp/PORT` or
    /// `/ip4|ip6/ADDR/udp/PORT/quic-v1`, at most two of each transport (the second is the
    /// alternate port of the address-mapping test).
    ///
    /// Errors: [`ConfigError::Key`] with key `--listen` naming the offending address.
    pub fn from_multiaddrs(addrs: &[Multiaddr]) -> Result<RelayListen> {
        let mut listen = RelayListen::default();
        for addr in addrs {
            let bad = |reason: &str| config_err("--listen", format!("{addr}: {reason}"));
            let protocols: Vec<Protocol<'_>> = addr.iter().collect();
            let (ip, rest) = match protocols.split_first() {
                Some((Protocol::Ip4(ip), rest)) => (std::net::IpAddr::V4(*ip), rest),
                Some((Protocol::Ip6(ip), rest)) => (std::net::IpAddr::V6(*ip), rest),
                _ => return Err(bad("must start with /ip4/ADDR or /ip6/ADDR")),
            };
            let (slots, port) = match rest {
                [Protocol::Tcp(port)] => ([&mut listen.tcp, &mut listen.tcp_alternate], *port),
                [Protocol::Udp(port), Protocol::QuicV1] => ([&mut listen.quic, &mut listen.quic_alternate], *port),
                _ => return Err(bad("must be /ip4|ip6/ADDR/tcp/PORT or /ip4|ip6/ADDR/udp/PORT/quic-v1")),
            };
            let Some(slot) = slots.into_iter().find(|s| s.is_none()) else {
                return Err(bad("at most two TCP and two QUIC listen addresses (the second is the alternate port)"));
            };
            *slot = Some(SocketAddr::new(ip, port));
        }
        Ok(listen)
    }
}

impl RelayConfig {
    /// The limits' ranges (those of the RelayNode CRD), at least one listener, and the shape of
    /// every external address.
    pub(super) fn validate(&self, range: RangeCheck) -> Result<()> {
        let count = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        range("relay.max_reservations", count(self.max_reservations), 1, Some(100_000))?;
        range("relay.max_reservations_per_peer", count(self.max_reservations_per_peer), 1, Some(100_000))?;
        range("relay.max_circuits", count(self.max_circuits), 1, Some(100_000))?;
        range("relay.max_circuits_per_peer", count(self.max_circuits_per_peer), 1, Some(100_000))?;
        range("relay.max_circuit_duration_secs", self.max_circuit_duration_secs, 1, Some(86_400))?;
        range("relay.max_circuit_bytes", self.max_circuit_bytes, 1024, Some(1 << 30))?;
        for (key, rate) in [
            ("relay.reservation_rate_per_peer", self.reservation_rate_per_peer),
            ("relay.reservation_rate_per_ip", self.reservation_rate_per_ip),
            ("relay.circuit_rate_per_peer", self.circuit_rate_per_peer),
            ("relay.circuit_rate_per_ip", self.circuit_rate_per_ip),
        ] {
            range(key, u64::from(rate), 0, Some(100_000))?;
        }
        if self.listen_tcp.is_none() && self.listen_quic.is_none() {
            return Err(config_err("relay.listen_tcp", "relay.listen_tcp and relay.listen_quic are both empty"));
        }
        for (key, primary, alternate) in [
            ("relay.listen_tcp_alternate", self.listen_tcp, self.listen_tcp_alternate),
            ("relay.listen_quic_alternate", self.listen_quic, self.listen_quic_alternate),
        ] {
            let Some(alternate) = alternate else { continue };
            match primary {
                None => return Err(config_err(key, "needs the primary listen address of its transport")),
                Some(p) if p.ip() != alternate.ip() || (p.port() == alternate.port() && p.port() != 0) => {
                    let reason = format!("{alternate} must have {p}'s IP and another port");
                    return Err(config_err(key, reason));
                }
                Some(_) => {}
            }
        }
        for addr in &self.external_addresses {
            check_external_address(addr)
                .map_err(|reason| config_err("relay.external_addresses", format!("{:?} {reason}", addr.to_string())))?;
        }
        Ok(())
    }
}

impl PunchConfig {
    /// Ranges, the relay's shape (when set) and the listen addresses.
    pub(super) fn validate(&self, range: RangeCheck) -> Result<()> {
        range("punch.attempts", u64::from(self.attempts), 1, Some(1000))?;
        range("punch.timeout_secs", self.timeout_secs, 0, Some(86_400))?;
        range("punch.interval_secs", self.interval_secs, 0, Some(86_400))?;
        if self.relay_node.len() > crate::report::MAX_STRING_BYTES {
            let reason =
                format!("must be at most {} bytes, got {}", crate::report::MAX_STRING_BYTES, self.relay_node.len());
            return Err(config_err("punch.relay_node", reason));
        }
        if let Some(relay) = &self.relay {
            check_punch_relay(relay)
                .map_err(|reason| config_err("punch.relay", format!("{:?} {reason}", relay.to_string())))?;
        }
        if self.listen.is_empty() {
            return Err(config_err("punch.listen", "must list at least one address (hole-punch dials reuse its port)"));
        }
        for addr in &self.listen {
            if RelayListen::from_multiaddrs(std::slice::from_ref(addr)).is_err() {
                let reason =
                    format!("{:?} must be /ip4|ip6/IP/tcp/PORT or /ip4|ip6/IP/udp/PORT/quic-v1", addr.to_string());
                return Err(config_err("punch.listen", reason));
            }
        }
        Ok(())
    }

    /// The relay's PeerId (the trailing `/p2p/ID` of a validated `relay`).
    pub fn relay_peer_id(&self) -> Option<PeerId> {
        match self.relay.as_ref()?.iter().last() {
            Some(Protocol::P2p(id)) => Some(id),
            _ => None,
        }
    }
}

/// Whether `protocols` (a multiaddr's, without a trailing `/p2p/ID`) is a host and a transport
/// the relay and the punch client serve: `/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT` or
/// `…/udp/PORT/quic-v1` (no `/p2p-circuit`, no WebSocket). The one rule behind the sensor's
/// `relay.external_addresses` and `punch.relay` and the operator's `RelayNode.spec.externalAddresses`.
pub fn is_direct_transport(protocols: &[Protocol<'_>]) -> bool {
    let host = matches!(
        protocols.first(),
        Some(Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_))
    );
    host && matches!(protocols.get(1..), Some([Protocol::Tcp(_)] | [Protocol::Udp(_), Protocol::QuicV1]))
}

/// The relay of `sensor punch` is dialled directly: `/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT/p2p/ID`
/// or `…/udp/PORT/quic-v1/p2p/ID`. The PeerId is required (the circuit addresses name the relay).
/// A name is resolved by libp2p-dns with the system resolver (`/etc/resolv.conf`, `/etc/hosts`);
/// the address-mapping test then finds no alternate (identify lists the relay's IPs, not names).
pub fn check_punch_relay(addr: &Multiaddr) -> std::result::Result<(), &'static str> {
    let protocols: Vec<Protocol<'_>> = addr.iter().collect();
    let Some((Protocol::P2p(_), rest)) = protocols.split_last() else {
        return Err("must end in /p2p/<the relay's PeerId>");
    };
    if is_direct_transport(rest) {
        Ok(())
    } else {
        Err("must be /ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT/p2p/ID or …/udp/PORT/quic-v1/p2p/ID (no /p2p-circuit)")
    }
}

/// An external address is a dialable multiaddr of a transport the relay serves:
/// `/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT` or `…/udp/PORT/quic-v1`, optionally ending in
/// `/p2p/<the relay's own PeerId>` (checked at start-up, when the key is known).
pub fn check_external_address(addr: &Multiaddr) -> std::result::Result<(), &'static str> {
    let mut protocols: Vec<Protocol<'_>> = addr.iter().collect();
    if matches!(protocols.last(), Some(Protocol::P2p(_))) {
        protocols.pop();
    }
    if is_direct_transport(&protocols) {
        Ok(())
    } else {
        Err("must be /ip4|ip6|dns*/HOST/tcp/PORT or /ip4|ip6|dns*/HOST/udp/PORT/quic-v1 (optionally + /p2p/PEER_ID)")
    }
}

pub(super) fn ser_multiaddrs<S: Serializer>(value: &[Multiaddr], s: S) -> std::result::Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(value.len()))?;
    for addr in value {
        seq.serialize_element(&addr.to_string())?;
    }
    seq.end()
}

pub(super) fn de_multiaddrs<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<Multiaddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.trim().parse().map_err(|e| serde::de::Error::custom(format!("invalid multiaddr {text:?}: {e}")))
        })
        .collect()
}

pub(super) fn de_opt_multiaddr<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Multiaddr>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| serde::de::Error::custom(format!("invalid multiaddr {text:?}: {e}")))
}

pub(super) fn ser_peer_ids<S: Serializer>(value: &[PeerId], s: S) -> std::result::Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(value.len()))?;
    for id in value {
        seq.serialize_element(&id.to_base58())?;
    }
    seq.end()
}

pub(super) fn de_peer_ids<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<PeerId>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| text.trim().parse().map_err(|e| serde::de::Error::custom(format!("invalid PeerId {text:?}: {e}"))))
        .collect()
}
