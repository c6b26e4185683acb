//! `sensor punch`: the DCUtR hole-punch client (design §1, §5).
//!
//! It reserves a slot on the relay (`listen_on(<relay>/p2p-circuit)`) and learns its external
//! address candidates from the relay's identify (the observed address); AutoNAT v1 asks the relay
//! whether it is publicly reachable. Then:
//!
//! - **Without targets** it holds the reservation (so another punch client can target it) until
//!   SIGTERM/SIGINT or `punch.timeout_secs`, re-reserving with backoff when the reservation is
//!   lost. `/readyz` is 200 while the reservation is held; with `--json` one line
//!   `{"event":"reservation","peer_id":…,"relay":…,"address":…}` is printed per circuit address
//!   a reservation gives (one per relay external address). It logs the DCUtR events it sees as
//!   the listening side (only this side emits DCUtR's failure event).
//! - **With targets**, for each target and each of `punch.attempts`, one at a time: close every
//!   connection to the target, dial `<relay>/p2p-circuit/p2p/<target>`, let DCUtR upgrade, and
//!   judge the attempt with the pure [`attempt::AttemptTracker`] (success = the first direct
//!   connection confirmed by a ping; the full list of outcomes is in its docs), bounded by
//!   `punch.timeout_secs` (0 = [`DEFAULT_PUNCH_TIMEOUT_SECS`]). Every attempt is printed (one JSON
//!   object per line with `--json`), stored in SQLite (`punch_attempts`), counted
//!   (`sensor_punch_*`) and, with `report.endpoint`, included in the cumulative report
//!   (`HolePunchSummary`, `relay` = `punch.relay_node`). Then the process exits 0, whatever the
//!   outcomes; SIGTERM/SIGINT cancels the attempt in flight (recorded as `cancelled`) and skips
//!   the rest.
//!
//! The report's sender is `<report sender>-punch`, so a punch client next to `sensor listen` in
//! the same pod never replaces the listener's reports at the collector.
//!
//! Set-up errors (no or malformed relay, identity file, a listener or the metrics port that
//! cannot be bound, the database) exit non-zero; nothing the network does makes it fail.

pub mod attempt;
pub mod swarm;

use std::{
    collections::HashSet,
    io::{self, Write},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat,
    core::transport::ListenerId,
    dcutr, identify,
    metrics::Recorder,
    multiaddr::Protocol,
    ping, relay,
    swarm::{
        SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use serde_json::json;
use time::OffsetDateTime;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use uuid::Uuid;

use self::{
    attempt::{AttemptTracker, NatVerdict, Outcome, PunchAttempt, Transport},
    swarm::{PunchBehaviour, PunchBehaviourEvent},
};
use super::identity;
use crate::{
    config::{Config, DEFAULT_PUNCH_TIMEOUT_SECS, RelayListen},
    error::{Result, SensorError},
    http,
    metrics::{Metrics, PunchMetrics},
    report::{Reporter, ReporterSettings, Source},
    store::{Store, StoreOptions},
};

/// How long start-up waits for every local listener to report an address.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, before the first attempt, for the relay connection and the observed address.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the connections to a target to close between two attempts.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest pause before a lost reservation is requested again.
const RESERVE_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
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

/// What `sensor punch` does, from `[punch]` (validated).
#[derive(Debug, Clone)]
pub struct PunchSettings {
    /// The relay, ending in `/p2p/<relay id>`.
    pub relay: Multiaddr,
    pub relay_id: PeerId,
    pub relay_transport: Transport,
    pub targets: Vec<PeerId>,
    pub attempts: u32,
    /// Bound of one attempt.
    pub attempt_timeout: Duration,
    /// Without targets: how long the reservation is held (`None` = until a signal).
    pub hold_for: Option<Duration>,
    pub relay_node: String,
    pub sensor_id: String,
    pub listen: Vec<Multiaddr>,
}

impl PunchSettings {
    /// Errors: [`SensorError::Config`] with key `punch.relay` when no relay is configured.
    pub fn from_config(config: &Config) -> Result<PunchSettings> {
        let p = &config.punch;
        let missing = || SensorError::Config {
            key: "punch.relay".into(),
            reason: "sensor punch needs the relay's multiaddr (--relay or SENSOR_PUNCH_RELAY), \
                     e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…"
                .into(),
        };
        let relay = p.relay.clone().ok_or_else(missing)?;
        let relay_id = p.relay_peer_id().ok_or_else(missing)?;
        let relay_transport = Transport::of(&relay).unwrap_or(Transport::Tcp);
        let secs = if p.timeout_secs == 0 { DEFAULT_PUNCH_TIMEOUT_SECS } else { p.timeout_secs };
        Ok(PunchSettings {
            relay,
            relay_id,
            relay_transport,
            targets: p.targets.clone(),
            attempts: p.attempts.max(1),
            attempt_timeout: Duration::from_secs(secs),
            hold_for: (p.timeout_secs > 0).then(|| Duration::from_secs(p.timeout_secs)),
            relay_node: p.relay_node.trim().to_owned(),
            sensor_id: config.sensor_id(),
            listen: p.listen.clone(),
        })
    }

    /// `<relay>/p2p-circuit`: the address a reservation listens on.
    pub fn circuit(&self) -> Multiaddr {
        self.relay.clone().with(Protocol::P2pCircuit)
    }

    /// `<relay>/p2p-circuit/p2p/<target>`.
    pub fn circuit_to(&self, target: PeerId) -> Multiaddr {
        self.circuit().with(Protocol::P2p(target))
    }
}

/// `sensor punch`: start, punch (or hold the reservation), shut down. Exit 0 after the attempts
/// whatever their outcomes.
pub async fn run(config: Config, output: Output) -> Result<()> {
    let settings = PunchSettings::from_config(&config)?;
    let stop = stop_on_signal();
    let mut client = PunchClient::start(&config, settings, output).await?;
    if client.settings.targets.is_empty() {
        client.hold(stop).await;
    } else {
        client.punch_all(stop).await;
    }
    client.shutdown().await
}

/// A watch that turns true on SIGTERM or SIGINT. The handlers are installed before this returns,
/// so a signal from then on never kills the process.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    tokio::spawn(async move {
        tokio::select! {
            _ = recv(term.as_mut()) => tracing::info!("SIGTERM received"),
            _ = recv(int.as_mut()) => tracing::info!("SIGINT received"),
        }
        let _ = tx.send(true);
    });
    rx
}

async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// A started punch client (see the module docs).
pub struct PunchClient {
    settings: PunchSettings,
    output: Output,
    swarm: Swarm<PunchBehaviour>,
    libp2p_metrics: libp2p::metrics::Metrics,
    punch_metrics: PunchMetrics,
    store: Option<Store>,
    reporter: Option<Reporter>,
    ready: Arc<AtomicBool>,
    http_shutdown: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    /// The metrics/health address actually listened on.
    pub metrics_address: SocketAddr,
    /// This client's PeerId.
    pub peer_id: PeerId,
    nat: NatVerdict,
    circuit_listener: Option<ListenerId>,
    /// The reservation's circuit address while one is held.
    reservation: Option<Multiaddr>,
    relay_connections: HashSet<libp2p::swarm::ConnectionId>,
    /// An observed address was learned from the relay (identify).
    observed: bool,
}

impl PunchClient {
    /// Starts everything up to the reservation request (not waiting for it).
    ///
    /// Errors: [`SensorError::Identity`] for an unusable identity file, [`SensorError::Storage`]
    /// when the database cannot be opened (only with targets), [`SensorError::Bind`] when the
    /// metrics port or a listen address cannot be bound, [`SensorError::Config`] for an unusable
    /// `report.endpoint`.
    pub async fn start(config: &Config, settings: PunchSettings, output: Output) -> Result<PunchClient> {
        let punching = !settings.targets.is_empty();
        let report = if punching { ReporterSettings::from_config(config)? } else { None };
        let identity_file = config.punch_identity_file();
        let (key, created) = identity::load_or_create(&identity_file)?;
        let peer_id = key.public().to_peer_id();
        tracing::info!(
            %peer_id, identity_file = %identity_file.display(), created,
            "punch identity {}", if created { "created" } else { "loaded" }
        );

        let (metrics, mut registry) = Metrics::new();
        let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
        let transports = Transport::ALL.map(Transport::as_str);
        let outcomes = Outcome::ALL.map(Outcome::as_str);
        let punch_metrics = PunchMetrics::register(&mut registry, &transports, &outcomes);
        let store = if punching {
            let options = StoreOptions {
                batch_size: config.storage.batch_size,
                flush_interval: Duration::from_millis(config.storage.flush_interval_ms),
                queue_capacity: config.storage.queue_capacity,
                ..StoreOptions::default()
            };
            Some(Store::open(&config.database_path(), options, metrics.clone())?)
        } else {
            None
        };
        let http_listener = tokio::net::TcpListener::bind(config.metrics.listen).await.map_err(|source| {
            SensorError::Bind { what: "metrics/health listener", address: config.metrics.listen, source }
        })?;
        let metrics_address = http_listener.local_addr().map_err(|e| SensorError::io("metrics listener address", e))?;

        let mut swarm = swarm::build(key, settings.relay_id)?;
        let mut listeners = Vec::new();
        for addr in &settings.listen {
            let socket = socket_of(addr);
            if Transport::of(addr) == Some(Transport::Tcp) {
                check_tcp_port_free(socket)?;
            }
            let id = swarm.listen_on(addr.clone()).map_err(|e| {
                let source = match e {
                    libp2p::TransportError::Other(e) => e,
                    libp2p::TransportError::MultiaddrNotSupported(a) => {
                        io::Error::other(format!("{a} is not supported"))
                    }
                };
                SensorError::Bind { what: "punch listener", address: socket, source }
            })?;
            listeners.push((id, socket));
        }

        let ready = Arc::new(AtomicBool::new(false));
        let (http_shutdown, http_rx) = watch::channel(false);
        let http_task = tokio::spawn(http::serve(http_listener, Arc::new(registry), ready.clone(), http_rx));
        let mut client = PunchClient {
            settings,
            output,
            swarm,
            libp2p_metrics,
            punch_metrics,
            store,
            reporter: None,
            ready,
            http_shutdown,
            http_task,
            metrics_address,
            peer_id,
            nat: NatVerdict::Unknown,
            circuit_listener: None,
            reservation: None,
            relay_connections: HashSet::new(),
            observed: false,
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
            let source =
                Source::Punch { database: config.database_path(), relay_node: client.settings.relay_node.clone() };
            client.reporter = Some(Reporter::start(ReporterSettings { source, origin, ..settings }, metrics.clone()));
        }
        tracing::info!(
            %peer_id, relay = %client.settings.relay,
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
    fn reserve(&mut self) {
        match self.swarm.listen_on(self.settings.circuit()) {
            Ok(id) => self.circuit_listener = Some(id),
            Err(e) => tracing::warn!(relay = %self.settings.relay, error = %e, "cannot request a reservation"),
        }
    }

    /// Without targets: holds the reservation until `stop` or `hold_for`, re-reserving with
    /// backoff when it is lost.
    async fn hold(&mut self, mut stop: watch::Receiver<bool>) {
        let until = self.settings.hold_for.map(|d| Instant::now() + d);
        let mut backoff = RESERVE_BACKOFF.0;
        let mut retry_at: Option<Instant> = None;
        loop {
            if self.reservation.is_some() {
                backoff = RESERVE_BACKOFF.0;
            } else if self.circuit_listener.is_none() && retry_at.is_none() {
                tracing::info!(retry_in = ?backoff, "no reservation on the relay; retrying");
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(RESERVE_BACKOFF.1);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = sleep_until_opt(until) => {
                    tracing::info!(seconds = self.settings.hold_for.map(|d| d.as_secs()), "reservation held for punch.timeout_secs");
                    break;
                }
                _ = sleep_until_opt(retry_at) => {
                    retry_at = None;
                    tracing::info!(relay = %self.settings.relay, "requesting the reservation again");
                    self.reserve();
                }
                event = self.swarm.select_next_some() => self.handle(&event),
            }
        }
    }

    /// With targets: every attempt of every target, one at a time.
    async fn punch_all(&mut self, mut stop: watch::Receiver<bool>) {
        self.wait_for_relay(&mut stop).await;
        self.ready.store(true, Ordering::SeqCst);
        let targets = self.settings.targets.clone();
        'targets: for target in targets {
            for n in 1..=self.settings.attempts {
                if *stop.borrow() {
                    break 'targets;
                }
                self.disconnect(target).await;
                let attempt = self.attempt(target, n, &mut stop).await;
                let cancelled = attempt.result.outcome == Outcome::Cancelled;
                self.record(attempt);
                if cancelled {
                    break 'targets;
                }
            }
        }
    }

    /// Before the first attempt: waits (bounded) for the relay connection and the observed address
    /// from its identify, which DCUtR hands to the target. Carries on without them (the attempts
    /// then say what failed).
    async fn wait_for_relay(&mut self, stop: &mut watch::Receiver<bool>) {
        let deadline = Instant::now() + SETUP_TIMEOUT.min(self.settings.attempt_timeout);
        // A failed reservation request means the relay is unreachable or refuses us: go on.
        while !self.observed && self.circuit_listener.is_some() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = sleep_until(deadline) => {
                    if self.relay_connections.is_empty() {
                        tracing::warn!(relay = %self.settings.relay, "not connected to the relay; attempts will fail");
                    } else {
                        tracing::warn!("the relay reported no observed address yet; hole punching will likely fail");
                    }
                    return;
                }
                event = self.swarm.select_next_some() => self.handle(&event),
            }
        }
    }

    /// Closes every connection to `target` and waits (bounded) until they are gone.
    async fn disconnect(&mut self, target: PeerId) {
        if self.swarm.disconnect_peer_id(target).is_err() {
            return;
        }
        let deadline = Instant::now() + DISCONNECT_TIMEOUT;
        while self.swarm.is_connected(&target) {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.handle(&event),
                Err(_) => {
                    tracing::warn!(%target, "connections to the target did not close within {DISCONNECT_TIMEOUT:?}");
                    return;
                }
            }
        }
    }

    /// One attempt (see [`attempt`] for the verdicts).
    async fn attempt(&mut self, target: PeerId, n: u32, stop: &mut watch::Receiver<bool>) -> PunchAttempt {
        let started_at = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        let limit = self.settings.attempt_timeout;
        let mut tracker = AttemptTracker::new(t0.into_std(), self.settings.relay_transport);
        let opts = DialOpts::peer_id(target)
            .addresses(vec![self.settings.circuit_to(target)])
            .condition(PeerCondition::Always)
            .build();
        tracker.circuit_dial_started(opts.connection_id());
        tracing::info!(%target, attempt = n, via = %self.settings.relay, "punch attempt started");
        if let Err(e) = self.swarm.dial(opts) {
            tracker.circuit_dial_refused(std::time::Instant::now(), e.to_string());
        }
        let deadline = t0 + limit;
        while tracker.verdict().is_none() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {
                    tracker.cancel(std::time::Instant::now());
                }
                _ = sleep_until(deadline) => {
                    tracker.deadline(std::time::Instant::now(), limit);
                }
                event = self.swarm.select_next_some() => {
                    let now = std::time::Instant::now();
                    self.handle(&event);
                    observe(&mut tracker, target, &event, now);
                }
            }
        }
        let mut result = tracker.verdict().cloned().expect("the loop ends with a verdict");
        if result.outcome == Outcome::NoRelayConnection && self.relay_connections.is_empty() {
            let error = result.error.take().unwrap_or_default();
            result.error = Some(format!("not connected to the relay {}: {error}", self.settings.relay));
        }
        PunchAttempt {
            attempt_id: Uuid::now_v7(),
            started_at,
            sensor_id: self.settings.sensor_id.clone(),
            relay: self.settings.relay.to_string(),
            relay_node: self.settings.relay_node.clone(),
            target: target.to_base58(),
            attempt: n,
            nat_verdict: self.nat,
            result,
        }
    }

    /// Prints, stores, counts and logs one finished attempt.
    fn record(&mut self, attempt: PunchAttempt) {
        let r = &attempt.result;
        self.punch_metrics.attempt(r.transport.as_str(), r.outcome.as_str(), r.time_to_direct);
        tracing::info!(
            target = %attempt.target, attempt = attempt.attempt, transport = r.transport.as_str(),
            outcome = r.outcome.as_str(), time_to_direct_ms = r.time_to_direct.map(attempt::whole_millis),
            dcutr_rounds = r.dcutr_rounds, error = r.error.as_deref(), "punch attempt finished"
        );
        let line = match self.output {
            Output::Json => attempt.to_json().to_string(),
            Output::Text => attempt.summary_line(),
        };
        print_line(&line);
        if let Some(store) = &self.store
            && let Err(e) = store.record_punch(attempt)
        {
            tracing::warn!(error = %e, "punch attempt not stored");
        }
    }

    /// Stops in order: `/readyz` 503 → the swarm (connections close) → the store (every attempt
    /// committed) → the final report → the HTTP server.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutting down");
        self.ready.store(false, Ordering::SeqCst);
        drop(self.swarm);
        if let Some(store) = self.store {
            let closed = tokio::task::spawn_blocking(move || {
                let flushed = store.flush_within(FLUSH_TIMEOUT);
                store.close().and(flushed)
            });
            match closed.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the store did not commit every punch attempt"),
                Err(e) => tracing::error!(error = %e, "the store close task failed"),
            }
        }
        if let Some(reporter) = self.reporter {
            reporter.shutdown().await;
        }
        let _ = self.http_shutdown.send(true);
        let mut http = self.http_task;
        if tokio::time::timeout(Duration::from_secs(2), &mut http).await.is_err() {
            http.abort();
        }
        tracing::info!("shutdown complete");
        Ok(())
    }

    /// What every event feeds whatever the phase: metrics, logs, the NAT status, the relay
    /// connection, the observed address and the reservation.
    fn handle(&mut self, event: &SwarmEvent<PunchBehaviourEvent>) {
        self.libp2p_metrics.record(event);
        let relay_id = self.settings.relay_id;
        match event {
            SwarmEvent::Behaviour(PunchBehaviourEvent::Identify(e)) => {
                self.libp2p_metrics.record(e);
                if let identify::Event::Received { peer_id, info, .. } = e
                    && *peer_id == relay_id
                {
                    if !self.observed {
                        tracing::info!(observed = %info.observed_addr, "the relay observes us at this address");
                    }
                    self.observed = true;
                }
            }
            SwarmEvent::Behaviour(PunchBehaviourEvent::Ping(e)) => self.libp2p_metrics.record(e),
            SwarmEvent::Behaviour(PunchBehaviourEvent::Dcutr(e)) => {
                self.libp2p_metrics.record(e);
                log_dcutr(e);
            }
            SwarmEvent::Behaviour(PunchBehaviourEvent::Autonat(e)) => {
                if let autonat::Event::StatusChanged { old, new } = e {
                    self.nat = nat_verdict(new);
                    tracing::info!(old = ?old, new = ?new, "AutoNAT status changed");
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
                    self.relay_connections.insert(*connection_id);
                }
                tracing::debug!(%peer_id, remote = %endpoint.get_remote_address(), "connection established");
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                if self.relay_connections.remove(connection_id) && self.relay_connections.is_empty() {
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
                    if self.settings.targets.is_empty() {
                        self.ready.store(true, Ordering::SeqCst);
                        if self.output == Output::Json {
                            let line = json!({
                                "event": "reservation",
                                "peer_id": self.peer_id.to_base58(),
                                "relay": self.settings.relay.to_string(),
                                "address": address.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a).to_string(),
                            });
                            print_line(&line.to_string());
                        }
                    }
                } else {
                    tracing::info!(%address, "listening");
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
                if self.settings.targets.is_empty() {
                    self.ready.store(false, Ordering::SeqCst);
                }
            }
            SwarmEvent::NewExternalAddrCandidate { address } => {
                tracing::debug!(%address, "external address candidate");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => tracing::info!(%address, "external address confirmed"),
            _ => {}
        }
    }
}

/// Feeds one swarm event about `target` to the attempt's tracker.
fn observe(
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

fn nat_verdict(status: &autonat::NatStatus) -> NatVerdict {
    match status {
        autonat::NatStatus::Public(_) => NatVerdict::Public,
        autonat::NatStatus::Private => NatVerdict::Private,
        autonat::NatStatus::Unknown => NatVerdict::Unknown,
    }
}

/// Writes one line to stdout and flushes it (a script reading the pipe sees every attempt at
/// once). A closed stdout is logged, not fatal.
fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "cannot write to stdout");
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
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
    use libp2p::identity::Keypair;

    use super::*;

    #[test]
    fn settings_follow_the_config() {
        let relay_id = Keypair::generate_ed25519().public().to_peer_id();
        let target = Keypair::generate_ed25519().public().to_peer_id();
        let mut config = Config::default();
        match PunchSettings::from_config(&config) {
            Err(SensorError::Config { key, reason }) => {
                assert_eq!(key, "punch.relay");
                assert!(reason.contains("--relay"), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        config.punch.relay = Some(format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{relay_id}").parse().unwrap());
        config.punch.targets = vec![target];
        config.punch.attempts = 3;
        let s = PunchSettings::from_config(&config).unwrap();
        assert_eq!((s.relay_id, s.relay_transport, s.attempts), (relay_id, Transport::Quic, 3));
        assert_eq!(s.attempt_timeout, Duration::from_secs(DEFAULT_PUNCH_TIMEOUT_SECS));
        assert_eq!(s.hold_for, None, "0 = hold until a signal");
        assert_eq!(
            s.circuit_to(target).to_string(),
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{relay_id}/p2p-circuit/p2p/{target}")
        );
        config.punch.timeout_secs = 7;
        let s = PunchSettings::from_config(&config).unwrap();
        assert_eq!((s.attempt_timeout, s.hold_for), (Duration::from_secs(7), Some(Duration::from_secs(7))));
    }

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
        let m = PunchMetrics::register(
            &mut registry,
            &Transport::ALL.map(Transport::as_str),
            &Outcome::ALL.map(Outcome::as_str),
        );
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
