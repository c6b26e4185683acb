//! `sensor relay`: a rust-libp2p circuit relay v2 server (with identify, ping and an AutoNAT v1
//! server) on TCP and QUIC v1, for the sensors' hole punching (docs/architecture.md, docs/natlab.md).
//!
//! Start-up order: report settings → identity ([`super::identity`]; the PeerId is logged) →
//! metrics/health listener bound → swarm → listeners bound (a port in use, no permission or a
//! foreign address exits non-zero) → external addresses added (without one the relay refuses
//! every reservation: rust-libp2p's relay only serves once it has a confirmed external address;
//! a warning says so) → every listener reported an address → `/readyz` 200 → reporter (when
//! `report.endpoint` is set; its reports carry a `RelaySummary`).
//! Shutdown (SIGTERM/SIGINT): `/readyz` 503 → the swarm stops (connections close, the active
//! gauges drop to 0) → final report (≤ `report.timeout_ms`) → exit 0.
//!
//! Nothing here trusts the network: events are matched, counted and logged; no remote input is
//! unwrapped.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::{ConnectedPoint, transport::ListenerId},
    metrics::Recorder,
    multiaddr::Protocol,
    swarm::SwarmEvent,
};
use sensor_report::v1::RelaySummary;
use tokio::{sync::watch, task::JoinHandle};

use super::{
    identity,
    reachability::MappingTest,
    stats::{RelayMetrics, ReservationTracker},
    swarm::{self, RelayBehaviour, RelayBehaviourEvent, bind_error},
};
use crate::{
    error::{Result, SensorError},
    http,
    metrics::{Metrics, ReachabilityMetrics},
    report::{Reporter, ReporterSettings, Source},
};
use sensor_core::Label;
use sensor_core::config::Config;
use sensor_core::reachability::Reachability;

/// How long start-up waits for every listener to report its first address.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the swarm task.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A started relay. [`RelayServer::start`] returns once every listener is up and `/readyz` is
/// 200; [`RelayServer::shutdown`] stops it. [`run`] does both around a signal wait.
pub struct RelayServer {
    /// The relay's libp2p PeerId (from the identity file).
    pub peer_id: PeerId,
    /// The addresses listened on when start-up finished (port 0 resolved).
    pub listen_addrs: Vec<Multiaddr>,
    /// The external addresses clients are told in reservations.
    pub external_addrs: Vec<Multiaddr>,
    /// The metrics/health address actually listened on.
    pub metrics_address: SocketAddr,
    ready: Arc<AtomicBool>,
    shutdown_tx: watch::Sender<bool>,
    swarm_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
    reporter: Option<Reporter>,
}

impl RelayServer {
    /// Starts everything (see the module docs).
    ///
    /// Errors: [`SensorError::Identity`] for an unreadable or undecodable identity file (never
    /// replaced); [`SensorError::Config`] for an external address whose `/p2p/` is another peer
    /// or an unusable `report.endpoint`; [`SensorError::Bind`] when a listener cannot be bound
    /// (port in use, no permission, address not on this host) or reports no address within
    /// [`LISTEN_TIMEOUT`].
    pub async fn start(config: &Config) -> Result<RelayServer> {
        let report = ReporterSettings::from_config(config)?;
        let identity_file = config.relay_identity_file();
        let (key, created) = identity::load_or_create(&identity_file)?;
        let peer_id = key.public().to_peer_id();
        tracing::info!(
            %peer_id, identity_file = %identity_file.display(), created,
            "relay identity {}", if created { "created" } else { "loaded" }
        );
        let external_addrs = own_external_addresses(&config.relay.external_addresses, peer_id)?;

        let (metrics, mut registry) = Metrics::new();
        let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
        let relay_metrics = RelayMetrics::register(&mut registry);
        let reachability_metrics = ReachabilityMetrics::register(&mut registry, &Reachability::all_labels());
        reachability_metrics.set(Reachability::Unknown.as_str());
        let http_listener = http::bind(config.metrics.listen).await?;
        let metrics_address = http_listener.local_addr().map_err(|e| SensorError::io("metrics listener address", e))?;

        let mut swarm = swarm::build(key, &config.relay)?;
        let mut listeners = Vec::new();
        let r = &config.relay;
        for (address, quic, what) in [
            (r.listen_tcp, false, "relay TCP listener"),
            (r.listen_tcp_alternate, false, "relay TCP listener (alternate port)"),
            (r.listen_quic, true, "relay QUIC listener"),
            (r.listen_quic_alternate, true, "relay QUIC listener (alternate port)"),
        ] {
            let Some(address) = address else { continue };
            if !quic {
                check_tcp_port_free(address)?;
            }
            let id = swarm.listen_on(socket_multiaddr(address, quic)).map_err(|e| bind_error(what, address, e))?;
            listeners.push((id, address));
        }
        for addr in &external_addrs {
            swarm.add_external_address(addr.clone());
        }
        if external_addrs.is_empty() {
            tracing::warn!(
                "no external address (relay.external_addresses, SENSOR_RELAY_EXTERNAL_ADDRESSES or \
                 --external-address): the relay refuses every reservation until it has one"
            );
        }

        let shared = Arc::new(Mutex::new(Vec::new()));
        let reachability = Arc::new(Mutex::new(Reachability::Unknown));
        let mut events = EventLoop {
            swarm,
            libp2p_metrics,
            relay_metrics: relay_metrics.clone(),
            tracker: ReservationTracker::default(),
            addresses: shared.clone(),
            mapping: MappingTest::default(),
            reachability: reachability.clone(),
            reachability_metrics,
        };
        let listen_addrs = events.wait_listening(&listeners).await?;

        let ready = Arc::new(AtomicBool::new(false));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let http_task =
            tokio::spawn(http::serve(http_listener, Arc::new(registry), ready.clone(), shutdown_rx.clone()));
        let swarm_task = tokio::spawn(events.run(shutdown_rx));
        ready.store(true, Ordering::SeqCst);
        let reporter = report.map(|settings| {
            let source = relay_source(peer_id, shared, reachability, relay_metrics);
            Reporter::start(ReporterSettings { source, ..settings }, metrics.clone())
        });
        tracing::info!(
            %peer_id, listen = ?listen_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            external = ?external_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            metrics = %metrics_address, "relay ready"
        );
        Ok(RelayServer {
            peer_id,
            listen_addrs,
            external_addrs,
            metrics_address,
            ready,
            shutdown_tx,
            swarm_task,
            http_task,
            reporter,
        })
    }

    /// Stops in the order given in the module docs. Never fails today; the `Result` keeps the
    /// shape of `sensor listen`'s shutdown.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutting down");
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.shutdown_tx.send(true);
        let mut task = self.swarm_task;
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            tracing::warn!("relay swarm did not stop within {STOP_TIMEOUT:?}");
            task.abort();
        }
        if let Some(reporter) = self.reporter {
            reporter.shutdown().await;
        }
        self.http_task.abort();
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// `sensor relay`: start, wait for SIGTERM or SIGINT, shut down.
pub async fn run(config: Config) -> Result<()> {
    let relay = RelayServer::start(&config).await?;
    crate::signal::wait_for_signal().await;
    relay.shutdown().await
}

/// The report source of a relay: its PeerId, addresses, reachability and counters, read at each
/// report.
fn relay_source(
    peer_id: PeerId,
    addresses: Arc<Mutex<Vec<String>>>,
    reachability: Arc<Mutex<Reachability>>,
    metrics: RelayMetrics,
) -> Source {
    let peer_id = peer_id.to_base58();
    Source::Relay(Arc::new(move || RelaySummary {
        peer_id: peer_id.clone(),
        listen_addrs: addresses.lock().map(|a| a.clone()).unwrap_or_default(),
        reservations_active: u64::try_from(metrics.reservations_active.get()).unwrap_or(0),
        circuits_active: u64::try_from(metrics.circuits_active.get()).unwrap_or(0),
        reservations_accepted_total: metrics.reservations_accepted_total(),
        circuits_total: metrics.circuits_total(),
        reachability: reachability.lock().map_or(Reachability::Unknown, |r| *r).as_str().to_owned(),
    }))
}

/// The swarm and what its events feed.
struct EventLoop {
    swarm: Swarm<RelayBehaviour>,
    libp2p_metrics: libp2p::metrics::Metrics,
    relay_metrics: RelayMetrics,
    tracker: ReservationTracker,
    /// External addresses, then listen addresses, as text (for reports).
    addresses: Arc<Mutex<Vec<String>>>,
    /// Self-reachability evidence: inbound connections from remote addresses prove the relay is
    /// public ([`MappingTest::inbound_from`]).
    mapping: MappingTest,
    reachability: Arc<Mutex<Reachability>>,
    reachability_metrics: ReachabilityMetrics,
}

impl EventLoop {
    /// Drives the swarm until each of `listeners` reported an address; returns them all.
    /// Errors: [`SensorError::Bind`] when a listener fails or stays silent for [`LISTEN_TIMEOUT`].
    async fn wait_listening(&mut self, listeners: &[(ListenerId, SocketAddr)]) -> Result<Vec<Multiaddr>> {
        let mut waiting: HashSet<ListenerId> = listeners.iter().map(|(id, _)| *id).collect();
        let address_of = |id: ListenerId| listeners.iter().find(|(l, _)| *l == id).map(|(_, a)| *a);
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !waiting.is_empty() {
            let event = match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => event,
                Err(_) => {
                    let (_, address) = listeners.iter().find(|(id, _)| waiting.contains(id)).copied().unzip();
                    let address = address.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    let source = io::Error::new(io::ErrorKind::TimedOut, "no listen address reported in time");
                    return Err(SensorError::Bind { what: "relay listener", address, source });
                }
            };
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    waiting.remove(listener_id);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if waiting.contains(listener_id) => {
                    let address = address_of(*listener_id).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    let source = match reason {
                        Err(e) => io::Error::new(e.kind(), e.to_string()),
                        Ok(()) => io::Error::other("the listener closed"),
                    };
                    return Err(SensorError::Bind { what: "relay listener", address, source });
                }
                SwarmEvent::ListenerError { listener_id, error } if waiting.contains(listener_id) => {
                    let address = address_of(*listener_id).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    let source = io::Error::new(error.kind(), error.to_string());
                    return Err(SensorError::Bind { what: "relay listener", address, source });
                }
                _ => {}
            }
            self.handle(event);
        }
        Ok(self.swarm.listeners().cloned().collect())
    }

    /// Handles events until `stop` turns true, then drops the swarm (closing every connection)
    /// and zeroes the active gauges.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                event = self.swarm.select_next_some() => self.handle(event),
            }
        }
        drop(self.swarm);
        self.relay_metrics.reservations_active.set(0);
        self.relay_metrics.circuits_active.set(0);
        tracing::debug!("relay swarm stopped");
    }

    fn handle(&mut self, event: SwarmEvent<RelayBehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(e)) => {
                self.libp2p_metrics.record(&e);
                self.tracker.apply(&e, &self.relay_metrics);
                log_relay_event(&e);
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Identify(e)) => self.libp2p_metrics.record(&e),
            SwarmEvent::Behaviour(RelayBehaviourEvent::Ping(e)) => self.libp2p_metrics.record(&e),
            SwarmEvent::Behaviour(RelayBehaviourEvent::Autonat(e)) => tracing::debug!(event = ?e, "autonat"),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                tracing::debug!(%peer_id, remote = %endpoint.get_remote_address(), "connection established");
                if !endpoint.is_relayed() {
                    self.tracker.connection_established(peer_id, connection_id);
                }
                if let ConnectedPoint::Listener { send_back_addr, .. } = &endpoint {
                    self.mapping.inbound_from(send_back_addr);
                    let verdict = self.mapping.verdict();
                    if let Ok(mut current) = self.reachability.lock()
                        && *current != verdict
                    {
                        tracing::info!(old = current.as_str(), new = verdict.as_str(), "self-reachability");
                        *current = verdict;
                        self.reachability_metrics.set(verdict.as_str());
                    }
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                tracing::debug!(%peer_id, cause = ?cause.map(|c| c.to_string()), "connection closed");
                self.tracker.connection_closed(peer_id, connection_id);
                self.tracker.publish(&self.relay_metrics);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.update_addresses();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "no longer listening");
                self.update_addresses();
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.update_addresses();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "external address expired");
                self.update_addresses();
            }
            SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                match reason {
                    Ok(()) => tracing::info!(?addresses, "listener closed"),
                    Err(e) => tracing::error!(?addresses, error = %e, "listener failed"),
                }
                self.update_addresses();
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "listener error"),
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(remote = %send_back_addr, %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn update_addresses(&self) {
        let mut list: Vec<String> = self.swarm.external_addresses().map(ToString::to_string).collect();
        for addr in self.swarm.listeners() {
            let text = addr.to_string();
            if !list.contains(&text) {
                list.push(text);
            }
        }
        if let Ok(mut shared) = self.addresses.lock() {
            *shared = list;
        }
    }
}

fn log_relay_event(event: &libp2p::relay::Event) {
    use libp2p::relay::Event as E;
    match event {
        E::ReservationReqAccepted { src_peer_id, renewed } => {
            tracing::info!(peer = %src_peer_id, renewed, "reservation accepted");
        }
        E::ReservationReqDenied { src_peer_id, status } => {
            tracing::info!(peer = %src_peer_id, ?status, "reservation denied");
        }
        E::ReservationTimedOut { src_peer_id } => tracing::info!(peer = %src_peer_id, "reservation timed out"),
        E::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "circuit accepted");
        }
        E::CircuitReqDenied { src_peer_id, dst_peer_id, status } => {
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, ?status, "circuit denied");
        }
        E::CircuitClosed { src_peer_id, dst_peer_id, error } => {
            tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, error = ?error.as_ref().map(|e| e.to_string()), "circuit closed");
        }
        E::StatusChanged { status } => tracing::info!(?status, "relay advertisement status changed"),
        other => tracing::debug!(event = ?other, "relay event"),
    }
}

/// `addrs` without a trailing `/p2p/<peer_id>` (the relay adds its own when it answers a
/// reservation). Errors: [`SensorError::Config`] with key `relay.external_addresses` when an
/// address names another peer.
pub fn own_external_addresses(addrs: &[Multiaddr], peer_id: PeerId) -> Result<Vec<Multiaddr>> {
    addrs
        .iter()
        .map(|addr| {
            let mut addr = addr.clone();
            if let Some(Protocol::P2p(id)) = addr.iter().last() {
                if id != peer_id {
                    return Err(SensorError::Config {
                        key: "relay.external_addresses".into(),
                        reason: format!("{addr} names peer {id}, but this relay is {peer_id}"),
                    });
                }
                addr.pop();
            }
            Ok(addr)
        })
        .collect()
}

/// `/ip4|ip6/IP/tcp/PORT`, or `/ip4|ip6/IP/udp/PORT/quic-v1` when `quic`.
pub fn socket_multiaddr(address: SocketAddr, quic: bool) -> Multiaddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    let addr = Multiaddr::empty().with(ip);
    if quic {
        addr.with(Protocol::Udp(address.port())).with(Protocol::QuicV1)
    } else {
        addr.with(Protocol::Tcp(address.port()))
    }
}

/// rust-libp2p's TCP listeners set `SO_REUSEPORT`, so a second relay on the same port would
/// silently share it. A plain bind first (no `SO_REUSEPORT`) fails on any socket already
/// listening there, which is the "port in use" error an operator expects.
fn check_tcp_port_free(address: SocketAddr) -> Result<()> {
    if address.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(address).map(drop).map_err(|source| SensorError::Bind {
        what: "relay TCP listener",
        address,
        source,
    })
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    #[test]
    fn socket_addresses_become_multiaddrs() {
        let v4: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let v6: SocketAddr = "[::1]:4002".parse().unwrap();
        assert_eq!(socket_multiaddr(v4, false).to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(socket_multiaddr(v4, true).to_string(), "/ip4/127.0.0.1/udp/4001/quic-v1");
        assert_eq!(socket_multiaddr(v6, false).to_string(), "/ip6/::1/tcp/4002");
    }

    #[test]
    fn external_addresses_may_name_only_this_relay() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let plain: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
        let mine: Multiaddr = format!("/ip4/203.0.113.7/udp/4001/quic-v1/p2p/{me}").parse().unwrap();
        let got = own_external_addresses(&[plain.clone(), mine], me).unwrap();
        assert_eq!(got[0], plain);
        assert_eq!(got[1].to_string(), "/ip4/203.0.113.7/udp/4001/quic-v1");
        let theirs: Multiaddr = format!("/ip4/203.0.113.7/tcp/4001/p2p/{other}").parse().unwrap();
        match own_external_addresses(&[theirs], me) {
            Err(SensorError::Config { key, reason }) => {
                assert_eq!(key, "relay.external_addresses");
                assert!(reason.contains(&other.to_string()), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_tcp_port_in_use_is_a_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let err = check_tcp_port_free(address).unwrap_err();
        assert_eq!(err.kind(), "bind");
        assert!(err.to_string().contains(&address.to_string()), "{err}");
        drop(taken);
        assert!(check_tcp_port_free(address).is_ok());
    }

    /// `[relay]`'s limits default to rust-libp2p's own `relay::Config` defaults.
    #[test]
    fn relay_defaults_are_rust_libp2p_defaults() {
        let r = sensor_core::config::RelayConfig::default();
        let libp2p = libp2p::relay::Config::default();
        assert_eq!(
            (r.max_reservations, r.max_reservations_per_peer, r.max_circuits, r.max_circuits_per_peer),
            (
                libp2p.max_reservations,
                libp2p.max_reservations_per_peer,
                libp2p.max_circuits,
                libp2p.max_circuits_per_peer
            )
        );
        assert_eq!(Duration::from_secs(r.max_circuit_duration_secs), libp2p.max_circuit_duration);
        assert_eq!(r.max_circuit_bytes, libp2p.max_circuit_bytes);
    }
}
