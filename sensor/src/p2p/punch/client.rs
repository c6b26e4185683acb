//! The hole-punch client's lifecycle: start-up (identity, metrics, store, listeners, the
//! reservation request, the reporter), recording one attempt, and the ordered shutdown.

use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, Swarm, core::transport::ListenerId, swarm::SwarmEvent};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until},
};

use super::{
    LISTEN_TIMEOUT, PunchSettings,
    swarm::{self, PunchBehaviour},
};
use crate::{
    error::{Result, SensorError},
    http,
    metrics::{Metrics, PunchMetrics, ReachabilityMetrics},
    p2p::{identity, kaspa_stream, reachability::MappingTest, swarm::bind_error},
    report::{PunchLive, Reporter, ReporterSettings, Source},
    store::{Store, StoreOptions},
};
use sensor_core::Label;
use sensor_core::{
    config::{Config, RelayListen},
    punch::{Outcome, PunchAttempt, Transport, whole_millis},
    reachability::Reachability,
};

/// Bound of the store's final flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How attempts are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One JSON object per line (`--json`).
    Json,
    /// One `key=value` summary line per attempt.
    Text,
}

/// What the reporter reads while the client runs (shared with the report task).
#[derive(Debug, Default)]
pub(super) struct LiveState {
    pub reservation_held: bool,
    pub reachability: Option<Reachability>,
}

/// A started punch client (see the module docs of [`super`]).
pub struct PunchClient {
    pub(super) settings: PunchSettings,
    pub(super) output: Output,
    pub(super) swarm: Swarm<PunchBehaviour>,
    pub(super) libp2p_metrics: libp2p::metrics::Metrics,
    punch_metrics: PunchMetrics,
    pub(super) reachability_metrics: ReachabilityMetrics,
    store: Store,
    reporter: Option<Reporter>,
    pub(super) ready: Arc<AtomicBool>,
    pub(super) live: Arc<Mutex<LiveState>>,
    http_shutdown: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    /// The metrics/health address actually listened on.
    pub metrics_address: SocketAddr,
    /// This client's PeerId.
    pub peer_id: PeerId,
    /// AutoNAT and the address-mapping test ([`crate::p2p::reachability`]).
    pub(super) mapping: MappingTest,
    pub(super) reachability: Reachability,
    pub(super) circuit_listener: Option<ListenerId>,
    /// The reservation's circuit address while one is held.
    pub(super) reservation: Option<Multiaddr>,
    /// Direct connections to the relay and their remote addresses.
    pub(super) relay_connections: HashMap<libp2p::swarm::ConnectionId, Multiaddr>,
    /// Local (non-circuit) listen addresses, for the mapping test's local socket per transport.
    pub(super) listen_addrs: Vec<Multiaddr>,
    /// Relay addresses already dialled for the mapping test.
    pub(super) mapping_dials: HashSet<Multiaddr>,
    /// An observed address was learned from the relay (identify).
    pub(super) observed: bool,
    /// Opens `/p2psensor/kaspa/1` streams (`punch.kaspa_handshake`).
    pub(super) streams: libp2p_stream::Control,
    /// The Kaspa network of our Version in those handshakes.
    pub(super) network: sensor_core::network::Network,
    /// Pipes incoming `/p2psensor/kaspa/1` streams to `punch.kaspa_bridge`.
    bridge: Option<JoinHandle<()>>,
}

impl PunchClient {
    /// Starts everything up to the reservation request (not waiting for it).
    ///
    /// Errors: [`SensorError::Identity`] for an unusable identity file, [`SensorError::Storage`]
    /// when the database cannot be opened, [`SensorError::Bind`] when the metrics port or a
    /// listen address cannot be bound, [`SensorError::Config`] for an unusable `report.endpoint`.
    pub async fn start(config: &Config, settings: PunchSettings, output: Output) -> Result<PunchClient> {
        let report = ReporterSettings::from_config(config)?;
        let identity_file = config.punch_identity_file();
        let (key, created) = identity::load_or_create(&identity_file)?;
        let peer_id = key.public().to_peer_id();
        tracing::info!(
            %peer_id, identity_file = %identity_file.display(), created,
            "punch identity {}", if created { "created" } else { "loaded" }
        );

        let (metrics, mut registry) = Metrics::new();
        let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
        let transports = Transport::all_labels();
        let outcomes = Outcome::all_labels();
        let punch_metrics = PunchMetrics::register(&mut registry, &transports, &outcomes);
        let reachability_metrics = ReachabilityMetrics::register(&mut registry, &Reachability::all_labels());
        reachability_metrics.set(Reachability::Unknown.as_str());
        let options = StoreOptions {
            batch_size: config.storage.batch_size,
            flush_interval: Duration::from_millis(config.storage.flush_interval_ms),
            queue_capacity: config.storage.queue_capacity,
            ..StoreOptions::default()
        };
        let store = Store::open(&config.database_path(), options, metrics.clone())?;
        let http_listener = http::bind(config.metrics.listen).await?;
        let metrics_address = http_listener.local_addr().map_err(|e| SensorError::io("metrics listener address", e))?;

        let mut swarm = swarm::build(key, settings.relay_id)?;
        let mut listeners = Vec::new();
        for addr in &settings.listen {
            let socket = socket_of(addr);
            if Transport::of(addr) == Some(Transport::Tcp) {
                check_tcp_port_free(socket)?;
            }
            let id = swarm.listen_on(addr.clone()).map_err(|e| bind_error("punch listener", socket, e))?;
            listeners.push((id, socket));
        }

        let mut streams = swarm.behaviour().stream.new_control();
        let bridge = match config.punch.kaspa_bridge {
            Some(target) => {
                let incoming = kaspa_stream::accept(&mut streams)?;
                let stats = Arc::new(kaspa_stream::BridgeStats::default());
                tracing::info!(%target, protocol = %kaspa_stream::PROTOCOL, "bridging Kaspa streams to the node");
                Some(tokio::spawn(kaspa_stream::run_bridge(incoming, kaspa_stream::BridgeConfig::new(target), stats)))
            }
            None => None,
        };

        let ready = Arc::new(AtomicBool::new(false));
        let (http_shutdown, http_rx) = watch::channel(false);
        let http_task = tokio::spawn(http::serve(http_listener, Arc::new(registry), ready.clone(), http_rx));
        let mut client = PunchClient {
            settings,
            output,
            swarm,
            libp2p_metrics,
            punch_metrics,
            reachability_metrics,
            store,
            reporter: None,
            ready,
            live: Arc::default(),
            http_shutdown,
            http_task,
            metrics_address,
            peer_id,
            mapping: MappingTest::default(),
            reachability: Reachability::Unknown,
            circuit_listener: None,
            reservation: None,
            relay_connections: HashMap::new(),
            listen_addrs: Vec::new(),
            mapping_dials: HashSet::new(),
            observed: false,
            streams,
            network: config.network,
            bridge,
        };
        client.wait_listening(&listeners).await?;
        client.reserve();
        if let Some(settings) = report {
            if client.settings.relay_node.is_empty() {
                tracing::warn!(
                    "punch.relay_node is empty: reports carry the attempts but the operator attributes them to no RelayNode"
                );
            }
            let mut origin = settings.origin;
            origin.sender = format!("{}-punch", origin.sender);
            let source = Source::Punch {
                database: config.database_path(),
                relay_node: client.settings.relay_node.clone(),
                live: live_source(peer_id, client.live.clone()),
            };
            client.reporter = Some(Reporter::start(ReporterSettings { source, origin, ..settings }, metrics.clone()));
        }
        tracing::info!(
            %peer_id, relay = %client.settings.relay, mode = ?client.settings.mode,
            listen = ?client.swarm.listeners().map(ToString::to_string).collect::<Vec<_>>(),
            targets = client.settings.targets.len(), metrics = %metrics_address, "punch client started"
        );
        Ok(client)
    }

    /// Drives the swarm until each listener reported an address.
    async fn wait_listening(&mut self, listeners: &[(ListenerId, SocketAddr)]) -> Result<()> {
        let mut waiting: HashSet<ListenerId> = listeners.iter().map(|(id, _)| *id).collect();
        let address_of = |id: &ListenerId| {
            listeners.iter().find(|(l, _)| l == id).map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |(_, a)| *a)
        };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while let Some(first) = waiting.iter().next().copied() {
            let Ok(event) = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await else {
                let source = io::Error::new(io::ErrorKind::TimedOut, "no listen address reported in time");
                return Err(SensorError::Bind { what: "punch listener", address: address_of(&first), source });
            };
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    waiting.remove(listener_id);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if waiting.contains(listener_id) => {
                    let source = match reason {
                        Err(e) => io::Error::new(e.kind(), e.to_string()),
                        Ok(()) => io::Error::other("the listener closed"),
                    };
                    return Err(SensorError::Bind { what: "punch listener", address: address_of(listener_id), source });
                }
                SwarmEvent::ListenerError { listener_id, error } if waiting.contains(listener_id) => {
                    let source = io::Error::new(error.kind(), error.to_string());
                    return Err(SensorError::Bind { what: "punch listener", address: address_of(listener_id), source });
                }
                _ => {}
            }
            self.handle(&event);
        }
        Ok(())
    }

    /// Requests a reservation on the relay (dialling it when not connected).
    pub(super) fn reserve(&mut self) {
        match self.swarm.listen_on(self.settings.circuit()) {
            Ok(id) => self.circuit_listener = Some(id),
            Err(e) => tracing::warn!(relay = %self.settings.relay, error = %e, "cannot request a reservation"),
        }
    }

    /// Prints, stores, counts and logs one finished attempt.
    pub(super) fn record(&mut self, attempt: PunchAttempt) {
        let r = &attempt.result;
        self.punch_metrics.attempt(r.transport.as_str(), r.outcome.as_str(), r.time_to_direct);
        tracing::info!(
            target = %attempt.target, attempt = attempt.attempt, transport = r.transport.as_str(),
            outcome = r.outcome.as_str(), time_to_direct_ms = r.time_to_direct.map(whole_millis),
            dcutr_rounds = r.dcutr_rounds, error = r.error.as_deref(), "punch attempt finished"
        );
        let line = match self.output {
            Output::Json => attempt.to_json().to_string(),
            Output::Text => attempt.summary_line(),
        };
        print_line(&line);
        if let Err(e) = self.store.record_punch(attempt) {
            tracing::warn!(error = %e, "punch attempt not stored");
        }
    }

    /// committed) → the final report → the HTTP server.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutting down");
        self.ready.store(false, Ordering::SeqCst);
        if let Some(bridge) = &self.bridge {
            bridge.abort();
        }
        drop(self.swarm);
        let store = self.store;
        let closed = tokio::task::spawn_blocking(move || {
            let flushed = store.flush_within(FLUSH_TIMEOUT);
            store.close().and(flushed)
        });
        match closed.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the store did not commit every punch attempt"),
            Err(e) => tracing::error!(error = %e, "the store close task failed"),
        }
        if let Some(reporter) = self.reporter {
            reporter.shutdown().await;
        }
        let _ = self.http_shutdown.send(true);
        http::stop(self.http_task).await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The report's view of the client: its PeerId and the shared live state.
fn live_source(peer_id: PeerId, live: Arc<Mutex<LiveState>>) -> Arc<dyn Fn() -> PunchLive + Send + Sync> {
    let peer_id = peer_id.to_base58();
    Arc::new(move || {
        let (reservation_held, reachability) = live
            .lock()
            .map(|l| (l.reservation_held, l.reachability.unwrap_or(Reachability::Unknown)))
            .unwrap_or((false, Reachability::Unknown));
        PunchLive { peer_id: peer_id.clone(), reservation_held, reachability }
    })
}

/// Writes one line to stdout and flushes it (a script reading the pipe sees every attempt at
/// once). A closed stdout is logged, not fatal.
pub(super) fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "cannot write to stdout");
    }
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The socket address of a validated listen multiaddr (for error messages and the port check).
fn socket_of(addr: &Multiaddr) -> SocketAddr {
    let listen = RelayListen::from_multiaddrs(std::slice::from_ref(addr)).unwrap_or_default();
    listen.tcp.or(listen.quic).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// rust-libp2p's TCP listeners set `SO_REUSEPORT`, so a busy fixed port would be shared
/// silently; a plain bind first fails on it, which is the "port in use" error an operator expects.
fn check_tcp_port_free(address: SocketAddr) -> Result<()> {
    if address.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(address).map(drop).map_err(|source| SensorError::Bind {
        what: "punch listener",
        address,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn listen_addresses_map_to_sockets() {
        assert_eq!(socket_of(&"/ip4/127.0.0.1/tcp/5".parse().unwrap()), "127.0.0.1:5".parse().unwrap());
        assert_eq!(socket_of(&"/ip6/::1/udp/6/quic-v1".parse().unwrap()), "[::1]:6".parse().unwrap());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = check_tcp_port_free(taken.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), "bind");
    }

    #[test]
    fn punch_metrics_count_every_label_pair() {
        let (_, mut registry) = Metrics::new();
        let m = PunchMetrics::register(&mut registry, &Transport::all_labels(), &Outcome::all_labels());
        m.attempt("tcp", "success", Some(Duration::from_millis(40)));
        m.attempt("quic", "timeout", None);
        let text = crate::metrics::encode(&registry);
        for line in [
            "sensor_punch_attempts_total{transport=\"tcp\",outcome=\"success\"} 1",
            "sensor_punch_attempts_total{transport=\"quic\",outcome=\"timeout\"} 1",
            "sensor_punch_attempts_total{transport=\"quic\",outcome=\"no_relay_connection\"} 0",
            "sensor_punch_time_to_direct_seconds_count 1",
            "sensor_punch_time_to_direct_seconds_bucket{le=\"0.05\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
