//! `sensor listen`: the main job. Wires identity, storage, metrics, the classifier and
//! kaspa-p2p-lib's server together, and tears them down in order on SIGTERM/SIGINT.
//!
//! Start-up order: export credentials → data dir + peer id → SQLite store → exporter (when
//! `export.sink` is not `none`) → bind checks (P2P port, metrics port;
//! failure exits non-zero with the address and the OS error) → metrics/health server →
//! classifier → P2P server ([`server`], on the listener bound above) → `/readyz` 200 → reporter
//! (when `report.endpoint` is set).
//! Shutdown order: `/readyz` 503 → refuse new peers → close held peers → let running probes
//! finish within `listen.shutdown_grace_ms` (the rest are recorded `unknown/shutting_down`) →
//! flush storage → exporter drains what it can (≤ `listen.shutdown_grace_ms`; the rest is
//! exported after the restart) → final report (≤ `report.timeout_ms`) → exit 0.

pub mod admission;
pub mod connection;
pub mod inbound;
pub mod server;
pub mod transport;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kaspa_p2p_lib::pb;
use tokio::sync::watch;

use self::{
    admission::{Admission, Limits},
    inbound::{Inbound, InboundSettings},
};
use crate::{
    classify::{Classifier, ProbeSettings},
    context::Context,
    error::{Result, SensorError},
    export::{self, ExportSettings, Exporter},
    http,
    kaspa::{identity, version::LocalVersion},
    metrics::{ExportMetrics, Metrics},
    report::{Reporter, ReporterSettings},
    store::{Store, StoreOptions},
};
use sensor_core::config::Config;

/// A started sensor. [`Sensor::start`] returns once the P2P port is bound and `/readyz` is 200;
/// [`Sensor::shutdown`] stops it. `run` does both around a signal wait.
pub struct Sensor {
    ctx: Arc<Context>,
    server_task: tokio::task::JoinHandle<()>,
    ready: Arc<AtomicBool>,
    shutdown_tx: watch::Sender<bool>,
    classifier_task: tokio::task::JoinHandle<()>,
    http_task: tokio::task::JoinHandle<()>,
    reporter: Option<Reporter>,
    exporter: Option<Exporter>,
    grace: Duration,
    /// The P2P address actually listened on.
    pub p2p_address: SocketAddr,
    /// The metrics/health address actually listened on.
    pub metrics_address: SocketAddr,
    /// The sensor's persistent peer id (hex).
    pub peer_id: String,
}

impl Sensor {
    /// Starts everything (see the module docs).
    ///
    /// Errors: [`SensorError::Bind`] when either
    /// port cannot be bound, [`SensorError::Identity`]/[`SensorError::Io`] for the data dir,
    /// [`SensorError::Storage`] when the database cannot be opened or migrated,
    /// [`SensorError::Config`] for an unusable `report.endpoint`.
    pub async fn start(config: &Config) -> Result<Self> {
        let p2p_address = config.listen_address();
        let report = ReporterSettings::from_config(config)?;
        // Secrets are read once, before anything starts: a missing one is a config error.
        let credentials = config.export.credentials(|name| std::env::var(name).ok())?;
        let sink = export::sink_from_config(config, credentials)?;
        let id = identity::load_or_create(&config.data_dir)?;
        let (metrics, mut registry) = Metrics::new();
        let export_metrics =
            sink.as_ref().map(|s| ExportMetrics::register(&mut registry, s.name(), &export::failure_kinds()));
        let store = Store::open(
            &config.database_path(),
            StoreOptions {
                batch_size: config.storage.batch_size,
                flush_interval: Duration::from_millis(config.storage.flush_interval_ms),
                queue_capacity: config.storage.queue_capacity,
                max_db_bytes: (config.storage.max_db_mb > 0).then_some(config.storage.max_db_mb << 20),
                reclaim_exported_for: sink.as_ref().map(|s| s.name()),
                full_grace: Duration::from_millis(config.storage.full_grace_ms),
                ..StoreOptions::default()
            },
            metrics.clone(),
        )?;
        // The exporter reads what the store commits, on its own connection; dropping it (a
        // failed start below) stops its loop.
        let exporter = match (sink, export_metrics) {
            (Some(sink), Some(m)) => {
                Some(Exporter::start(&config.database_path(), sink, ExportSettings::from_config(config), m).await?)
            }
            _ => None,
        };
        let p2p_listener = server::bind(p2p_address).await?;
        let http_listener = http::bind(config.metrics.listen).await?;
        let metrics_address = http_listener.local_addr().map_err(|e| SensorError::io("metrics listener address", e))?;
        let ready = Arc::new(AtomicBool::new(false));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let http_task =
            tokio::spawn(http::serve(http_listener, Arc::new(registry), ready.clone(), shutdown_rx.clone()));

        let ctx = Arc::new(Context { sensor_id: config.sensor_id(), network: config.network, store, metrics });
        let c = &config.classify;
        let grace = Duration::from_millis(config.listen.shutdown_grace_ms);
        let (classifier, classifier_task) = Classifier::start(
            ctx.clone(),
            ProbeSettings {
                timeout: Duration::from_millis(c.probe_timeout_ms),
                attempts: c.probe_attempts,
                retry_delay: Duration::from_millis(c.probe_retry_delay_ms),
                concurrency: c.concurrency,
                queue_capacity: c.queue_capacity,
                cache_ttl: Duration::from_secs(c.cache_ttl_secs),
                cache_capacity: c.cache_capacity,
                allow_private_targets: c.allow_private_targets,
                shutdown_grace: grace,
            },
            shutdown_rx.clone(),
        );
        let l = &config.listen;
        let external = l.external_address;
        let inbound = Arc::new(Inbound {
            ctx: ctx.clone(),
            local: LocalVersion { network: config.network, id, address: external },
            settings: InboundSettings {
                handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
                keepalive_interval: Duration::from_millis(l.keepalive_interval_ms),
                keepalive_timeout: Duration::from_millis(l.keepalive_timeout_ms),
                hold_time: (l.hold_time_secs > 0).then(|| Duration::from_secs(l.hold_time_secs)),
                request_addresses: l.request_addresses,
            },
            admission: Admission::new(Limits {
                max_inbound_peers: l.max_inbound_peers,
                max_peers_per_ip: l.max_peers_per_ip,
                max_peers_per_subnet: l.max_peers_per_subnet,
                max_pending_handshakes: l.max_pending_handshakes,
            }),
            classifier,
            addresses: external
                .map(|a| pb::NetAddress::from(kaspa_utils::networking::NetAddress::from(a)))
                .into_iter()
                .collect(),
            shutdown: shutdown_rx.clone(),
        });
        let p2p_address = p2p_listener.local_addr().map_err(|e| SensorError::io("P2P listener address", e))?;
        let mut stop = shutdown_rx;
        let server_task = tokio::spawn(server::serve(p2p_listener, inbound, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        ready.store(true, Ordering::SeqCst);
        let reporter = report.map(|settings| Reporter::start(settings, ctx.metrics.clone()));
        let peer_id = id.simple().to_string();
        tracing::info!(
            p2p = %p2p_address, metrics = %metrics_address, network = %config.network, peer_id = %peer_id,
            external_address = ?external, database = %config.database_path().display(), "sensor ready"
        );
        Ok(Self {
            ctx,
            server_task,
            ready,
            shutdown_tx,
            classifier_task,
            http_task,
            reporter,
            exporter,
            grace,
            p2p_address,
            metrics_address,
            peer_id,
        })
    }

    /// Stops in the order given in the module docs and flushes storage.
    ///
    /// Errors: [`SensorError::Storage`]/[`SensorError::StorageUnavailable`] when the final
    /// flush fails (events accepted but not committed are then reported, not silently lost).
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutting down");
        self.ready.store(false, Ordering::SeqCst);
        // Held peers see the signal and end their streams; the server stops accepting and
        // waits for them.
        let _ = self.shutdown_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.server_task).await.is_err() {
            tracing::warn!("P2P server did not stop within 5 s");
        }
        let bound = self.grace + Duration::from_secs(2);
        if tokio::time::timeout(bound, self.classifier_task).await.is_err() {
            tracing::warn!("classifier did not stop within {bound:?}");
        }
        let ctx = self.ctx.clone();
        let flushed = tokio::task::spawn_blocking(move || ctx.store.flush())
            .await
            .map_err(|_| SensorError::StorageUnavailable("flush task failed"))?;
        if let Some(exporter) = self.exporter {
            let cursor = exporter.shutdown(self.grace).await;
            tracing::info!(last_event_id = ?cursor.event_id, "exporter stopped");
        }
        if let Some(reporter) = self.reporter {
            reporter.shutdown().await;
        }
        self.http_task.abort();
        flushed?;
        tracing::info!("shutdown complete");
        Ok(())
    }

    /// The shared context (store, metrics) — for tests and embedding.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

/// `sensor listen`: start, wait for SIGTERM or SIGINT, shut down.
pub async fn run(config: Config) -> Result<()> {
    raise_fd_limit();
    let sensor = Sensor::start(&config).await?;
    crate::signal::wait_for_signal().await;
    sensor.shutdown().await
}

/// Every held peer is a socket: raise the soft open-files limit to the hard limit, as kaspad
/// does, so `listen.max_inbound_peers` is not capped by a default of 1024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit are called with a pointer to a valid local struct.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if raised {
        tracing::debug!(limit = lim.rlim_cur, "open files limit");
    } else {
        tracing::warn!("could not raise the open files limit");
    }
}
