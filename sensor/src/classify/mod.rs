//! Classification of inbound peers as public / private / unknown by a handshake-verified
//! dial-back to their source IP (docs/classification.md).
//!
//! [`Classifier::submit`] never drops a peer silently: it records a verdict at once when no
//! probe is possible (private source, invalid target), when the cache already knows the target,
//! or when the bounded queue is full (`unknown/queue_full`); otherwise the peer is probed by one
//! of `concurrency` workers and the verdict is recorded when the probe ends. On shutdown, queued
//! peers and probes still running after the grace period are recorded as `unknown/shutting_down`.

pub mod cache;
pub mod probe;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinSet,
};

use sensor_core::verdict::{AttemptOutcome, Decision, VerdictReason, decide, probe_target};

use self::cache::VerdictCache;
use crate::{context::Context, metrics::ConnectionLabels};
use sensor_core::Label;
use sensor_core::event::{Direction, Event, EventKind, PeerInfo, ProbeInfo};

/// Probe parameters (from `[classify]` in `sensor.toml`).
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Bound on one attempt (connect + handshake).
    pub timeout: Duration,
    /// Attempts before a private verdict; at least 2 are always made.
    pub attempts: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
    /// Probes running at once.
    pub concurrency: usize,
    /// Peers waiting for a probe before `unknown/queue_full`.
    pub queue_capacity: usize,
    pub cache_ttl: Duration,
    pub cache_capacity: usize,
    /// Lab mode: probe private / documentation / loopback source IPs.
    pub allow_private_targets: bool,
    /// How long running probes may continue after shutdown starts.
    pub shutdown_grace: Duration,
}

/// A peer that completed the inbound handshake and needs a verdict.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    /// The inbound connection's source address.
    pub source: SocketAddr,
    /// The peer's id, lower-case hex: the dialled node must present the same.
    pub peer_id: String,
    pub advertised_port: Option<u16>,
    pub peer: PeerInfo,
}

struct Job {
    request: ProbeRequest,
    target: SocketAddr,
}

/// Handle to the classification pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Classifier {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Context>,
    settings: ProbeSettings,
    queue: mpsc::Sender<Job>,
    cache: Mutex<VerdictCache>,
}

impl Classifier {
    /// Starts the dispatcher. The returned task ends after `shutdown` turns true and every
    /// queued or running probe has recorded its verdict.
    pub fn start(
        ctx: Arc<Context>,
        settings: ProbeSettings,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let inner = Arc::new(Inner {
            cache: Mutex::new(VerdictCache::new(settings.cache_ttl, settings.cache_capacity)),
            ctx,
            settings,
            queue,
        });
        let task = tokio::spawn(dispatch(inner.clone(), rx, shutdown));
        (Self { inner }, task)
    }

    /// Classifies one peer (see the module docs). Never blocks, never drops.
    pub fn submit(&self, request: ProbeRequest) {
        let inner = &self.inner;
        let s = &inner.settings;
        let default_port = inner.ctx.network.default_p2p_port();
        let target =
            match probe_target(request.source.ip(), request.advertised_port, default_port, s.allow_private_targets) {
                Ok(t) => t,
                Err(reason) => return inner.record(&request, None, reason, ProbeInfo::default()),
            };
        let cached = inner.cache.lock().ok().and_then(|c| c.get(target, &request.peer_id, Instant::now()));
        if let Some(reason) = cached {
            inner.ctx.metrics.verdict_cache_hits.inc();
            let probe = ProbeInfo { target: Some(target.to_string()), ..ProbeInfo::default() };
            return inner.record(&request, Some(target), reason, probe);
        }
        match inner.queue.try_send(Job { request, target }) {
            Ok(()) => inner.update_queue_depth(),
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                let reason =
                    if inner.queue.is_closed() { VerdictReason::ShuttingDown } else { VerdictReason::QueueFull };
                let probe = ProbeInfo { target: Some(job.target.to_string()), ..ProbeInfo::default() };
                inner.record(&job.request, Some(job.target), reason, probe);
            }
        }
    }
}

impl Inner {
    fn update_queue_depth(&self) {
        let depth = self.queue.max_capacity() - self.queue.capacity();
        self.ctx.metrics.probe_queue_depth.set(depth as i64);
    }

    /// Records a verdict event and counts it.
    fn record(&self, request: &ProbeRequest, target: Option<SocketAddr>, reason: VerdictReason, probe: ProbeInfo) {
        let classification = reason.classification();
        let mut event = Event::now(
            &self.ctx.sensor_id,
            EventKind::Verdict { classification, reason },
            Direction::Outbound,
            request.source.ip().to_canonical(),
            request.source.port(),
        );
        event.peer = request.peer.clone();
        event.probe = ProbeInfo { target: probe.target.or(target.map(|t| t.to_string())), ..probe };
        self.ctx.metrics.verdict(reason);
        tracing::info!(
            peer = %request.source, peer_id = %request.peer_id, classification = classification.as_str(),
            reason = reason.as_str(), attempts = event.probe.attempts, "verdict"
        );
        self.ctx.record(event);
    }

    /// Runs attempts until [`decide`] is final. Returns the reason and the probe facts.
    async fn probe(&self, job: &Job) -> (VerdictReason, ProbeInfo) {
        let s = &self.settings;
        let metrics = &self.ctx.metrics;
        let started = Instant::now();
        let mut attempts = Vec::new();
        let reason = loop {
            let outcome = probe::attempt(job.target, self.ctx.network, s.timeout).await;
            let result = if matches!(outcome, AttemptOutcome::Version { .. }) { "success" } else { "failure" };
            metrics.connections.get_or_create(&ConnectionLabels { direction: "outbound", result }).inc();
            attempts.push(outcome);
            match decide(&job.request.peer_id, &attempts, s.attempts) {
                Decision::Final(reason) => break reason,
                Decision::Retry => tokio::time::sleep(s.retry_delay).await,
            }
        };
        let elapsed = started.elapsed();
        metrics.probe_duration_seconds.observe(elapsed.as_secs_f64());
        let error = match attempts.last() {
            Some(AttemptOutcome::Refused) => Some("connection refused".to_owned()),
            Some(AttemptOutcome::Timeout) => Some(format!("timed out after {} ms", s.timeout.as_millis())),
            Some(AttemptOutcome::Failed(e)) => Some(e.clone()),
            Some(AttemptOutcome::Version { remote_id, .. }) if *remote_id != job.request.peer_id => {
                Some(format!("answered by peer id {remote_id}"))
            }
            _ => None,
        };
        let info = ProbeInfo {
            target: Some(job.target.to_string()),
            duration_ms: Some(elapsed.as_millis() as u64),
            attempts: attempts.len() as u32,
            error,
        };
        (reason, info)
    }
}

async fn dispatch(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(inner.settings.concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        let job = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            job = rx.recv() => match job { Some(j) => j, None => break },
        };
        inner.update_queue_depth();
        let permit = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => {
                inner.record(&job.request, Some(job.target), VerdictReason::ShuttingDown, ProbeInfo::default());
                break;
            }
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let inner = inner.clone();
        let mut stop = shutdown.clone();
        running.spawn(async move {
            let _permit = permit;
            inner.ctx.metrics.probes_in_flight.inc();
            let grace = inner.settings.shutdown_grace;
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                (reason, info) = inner.probe(&job) => {
                    inner.ctx.metrics.probes.get_or_create(&crate::metrics::ClassificationLabels { classification: reason.classification().as_str() }).inc();
                    if let Ok(mut cache) = inner.cache.lock() {
                        cache.insert(job.target, &job.request.peer_id, reason, Instant::now());
                    }
                    inner.record(&job.request, Some(job.target), reason, info);
                }
                _ = stopped => inner.record(&job.request, Some(job.target), VerdictReason::ShuttingDown, ProbeInfo::default()),
            }
            inner.ctx.metrics.probes_in_flight.dec();
        });
        // Reap finished probes so the set does not grow without bound.
        while running.try_join_next().is_some() {}
    }
    // Shutting down: no new jobs; everything still queued gets a verdict.
    rx.close();
    while let Some(job) = rx.recv().await {
        inner.record(&job.request, Some(job.target), VerdictReason::ShuttingDown, ProbeInfo::default());
    }
    inner.update_queue_depth();
    while running.join_next().await.is_some() {}
}
