//! The export pipeline (issue 7): stored events leave the pod from the SQLite store, so a crash
//! or a sink outage never loses them.
//!
//! One exporter task per sink: read up to `batch_size` committed events after the sink's
//! persisted cursor ([`cursor`]), hand them to the [`Sink`], and advance the cursor only once the
//! sink acknowledged the whole batch. Delivery is at-least-once: a crash between the
//! acknowledgement and the cursor write resends that batch, and sinks deduplicate by `event_id`.
//! A failed delivery is retried with exponential backoff and full jitter ([`Backoff`]), forever:
//! the backlog simply waits in SQLite. Reads and cursor writes run in `spawn_blocking` on the
//! exporter's own connection, never on the async runtime.
//!
//! Sinks: [`ndjson`] (a file or stdout), [`http`] (a webhook) and [`postgres`] (a table).

pub mod cursor;
pub mod http;
pub mod ndjson;
pub mod postgres;
pub mod tls;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use self::cursor::{Cursor, CursorDb, Pending, age_seconds};
use crate::error::{Result, SensorError};
use crate::metrics::ExportMetrics;
use crate::store::EventRow;
use sensor_core::config::{Config, ExportCredentials, SINK_HTTP, SINK_NDJSON, SINK_POSTGRES};

/// Why a delivery failed: the `kind` label of `sensor_export_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    Connect,
    Status5xx,
    Status4xx,
    Io,
    /// The database answered with an error (PostgreSQL: a SQLSTATE).
    Database,
    /// TLS failed (handshake, certificate verification).
    Tls,
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 8] = [
        Self::Timeout,
        Self::Connect,
        Self::Status5xx,
        Self::Status4xx,
        Self::Io,
        Self::Database,
        Self::Tls,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Status5xx => "status_5xx",
            Self::Status4xx => "status_4xx",
            Self::Io => "io",
            Self::Database => "database",
            Self::Tls => "tls",
            Self::Other => "other",
        }
    }
}

/// Every `kind` label, for pre-creating the series.
pub fn failure_kinds() -> Vec<&'static str> {
    FailureKind::ALL.iter().map(|k| k.as_str()).collect()
}

/// A failed delivery. The whole batch is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    pub kind: FailureKind,
    pub message: String,
    /// The sink refused this request as such (HTTP 4xx other than 408/429): retrying will not
    /// help until the receiver is fixed. Still retried (nothing is dropped), logged at error level.
    pub refused: bool,
}

impl SinkError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), refused: false }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Where batches go. `send` returns `Ok` only once the sink durably took every event of the
/// batch; then the cursor moves past them. It must be idempotent by `event_id` on the receiving
/// side (a batch may be sent again).
pub trait Sink: Send + Sync {
    /// The cursor row's name and the `sink` metric label (`ndjson`, `http`).
    fn name(&self) -> &'static str;
    /// Delivers `batch` (non-empty, in order).
    fn send<'a>(&'a mut self, batch: &'a [EventRow]) -> BoxFuture<'a, std::result::Result<(), SinkError>>;
}

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(cap, base · 2ⁿ)]` (AWS's "full jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap: cap.max(base), attempt: 0 }
    }

    /// The upper bound of the next delay: `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay (random in `[0, ceiling]`), then doubles the ceiling up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        // Uuid v4 is 122 random bits from the OS RNG: no extra RNG crate needed.
        let r = (uuid::Uuid::new_v4().as_u128() as u64) as f64 / u64::MAX as f64;
        ceiling.mul_f64(r)
    }

    /// After a success: back to `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How the exporter runs. [`ExportSettings::from_config`] fills it from `[export]`.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub batch_size: usize,
    /// Poll interval once the backlog is empty.
    pub interval: Duration,
    /// First retry delay ceiling; doubles per failure. Default 100 ms.
    pub backoff_base: Duration,
    /// Largest retry delay ceiling. Default 60 s.
    pub backoff_cap: Duration,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            interval: Duration::from_millis(1000),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(60),
        }
    }
}

impl ExportSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            batch_size: config.export.batch_size,
            interval: Duration::from_millis(config.export.interval_ms),
            ..Self::default()
        }
    }
}

/// Builds the sink `[export]` names (`None` when `sink = "none"`), with the credentials read at
/// start-up. Errors: [`SensorError::Io`] when the NDJSON file cannot be opened,
/// [`SensorError::Config`] for an unusable HTTP or PostgreSQL endpoint or CA file. A PostgreSQL
/// server is not contacted here: an unreachable one is a delivery failure, retried.
pub fn sink_from_config(config: &Config, credentials: ExportCredentials) -> Result<Option<Box<dyn Sink>>> {
    let e = &config.export;
    Ok(match e.sink.trim() {
        SINK_NDJSON => Some(Box::new(ndjson::NdjsonSink::open(e.endpoint.trim())?)),
        SINK_HTTP => Some(Box::new(http::HttpSink::new(http::HttpSettings {
            endpoint: e.endpoint.trim().to_owned(),
            sensor_id: config.sensor_id(),
            timeout: Duration::from_millis(e.timeout_ms),
            gzip: e.gzip,
            credentials,
            tls_ca_file: e.tls_ca_file.clone(),
        })?)),
        SINK_POSTGRES => Some(Box::new(postgres::PostgresSink::new(postgres::PostgresSettings {
            endpoint: e.endpoint.trim().to_owned(),
            timeout: Duration::from_millis(e.timeout_ms),
            password: credentials.password,
            tls_ca_file: e.tls_ca_file.clone(),
        })?)),
        _ => None,
    })
}

/// A running exporter task. [`Exporter::shutdown`] stops it.
pub struct Exporter {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    cursor: Arc<Mutex<Cursor>>,
}

impl Exporter {
    /// Opens the sink's cursor on the (already migrated) database at `db` and starts the loop.
    ///
    /// Errors: [`SensorError::Storage`] when the database cannot be opened or is too old.
    pub async fn start(
        db: &Path,
        sink: Box<dyn Sink>,
        settings: ExportSettings,
        metrics: ExportMetrics,
    ) -> Result<Exporter> {
        let path: PathBuf = db.to_owned();
        let name = sink.name();
        let (conn, cursor) = blocking(move || {
            let conn = CursorDb::open(&path, name)?;
            let cursor = conn.load()?;
            Ok((conn, cursor))
        })
        .await?;
        tracing::info!(sink = name, last_event_id = ?cursor.event_id, "exporter started");
        let shared = Arc::new(Mutex::new(cursor.clone()));
        let (stop, stop_rx) = watch::channel(false);
        let run = Run {
            db: Arc::new(Mutex::new(conn)),
            sink,
            settings,
            metrics,
            cursor,
            shared: shared.clone(),
            counted_at: None,
        };
        let task = tokio::spawn(run.run(stop_rx));
        Ok(Exporter { stop, task, cursor: shared })
    }

    /// The cursor as last persisted.
    pub fn cursor(&self) -> Cursor {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the loop to drain what is stored (until the backlog is empty or a delivery fails),
    /// then stop; waits at most `bound`, then aborts it. An aborted delivery leaves the cursor
    /// where it was: the batch is sent again after the restart. Returns the persisted cursor.
    pub async fn shutdown(self, bound: Duration) -> Cursor {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(bound, &mut task).await.is_err() {
            tracing::warn!("exporter did not finish within {bound:?}; the rest is exported after the restart");
            task.abort();
            let _ = task.await;
        }
        self.cursor.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Run {
    db: Arc<Mutex<CursorDb>>,
    sink: Box<dyn Sink>,
    settings: ExportSettings,
    metrics: ExportMetrics,
    cursor: Cursor,
    shared: Arc<Mutex<Cursor>>,
    /// When the backlog was last counted with a query.
    counted_at: Option<std::time::Instant>,
}

/// A full backlog is counted at most this often.
const BACKLOG_COUNT_EVERY: Duration = Duration::from_secs(1);

impl Run {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.settings.backoff_base, self.settings.backoff_cap);
        let mut failing_since: Option<FailureKind> = None;
        loop {
            // A dropped `Exporter` (a failed start-up) stops the loop like a shutdown.
            let stopping = *stop.borrow() || stop.has_changed().is_err();
            let batch = match self.read().await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "export: reading the store failed; retrying");
                    if stopping || sleep_or_stop(&mut stop, backoff.next_delay()).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if stopping {
                    return;
                }
                // A stop while idle falls through to one more pass (stopping) that drains what
                // the store's final flush committed.
                let _ = sleep_or_stop(&mut stop, self.settings.interval).await;
                continue;
            }
            let events: Vec<EventRow> = batch.iter().map(|p| p.event.clone()).collect();
            match self.sink.send(&events).await {
                Ok(()) => {
                    let next = Cursor::from(batch.last().expect("non-empty batch"));
                    if let Err(e) = self.save(next).await {
                        // The events were delivered; they are sent again once the cursor saves.
                        tracing::warn!(error = %e, "export: saving the cursor failed; the batch will be resent");
                        if stopping || sleep_or_stop(&mut stop, backoff.next_delay()).await {
                            return;
                        }
                        continue;
                    }
                    self.metrics.exported(events.len() as u64);
                    let left = self.metrics.backlog_events.get().saturating_sub(events.len() as i64).max(0);
                    self.metrics.backlog_events.set(left);
                    if let Some(kind) = failing_since.take() {
                        tracing::info!(sink = self.sink.name(), after = kind.as_str(), "export recovered");
                    }
                    backoff.reset();
                    let full = batch.len() >= self.settings.batch_size;
                    if !full {
                        // That batch was the whole backlog when it was read.
                        self.metrics.lag_seconds.set(0.0);
                    }
                    if !full && !stopping {
                        // A stop here falls through to a draining pass, as when idle.
                        let _ = sleep_or_stop(&mut stop, self.settings.interval).await;
                    }
                }
                Err(e) => {
                    self.metrics.failure(e.kind.as_str());
                    let delay = backoff.next_delay();
                    if failing_since.is_none() {
                        // Loud once per failure streak, then quiet (the metric keeps counting).
                        if e.refused {
                            tracing::error!(sink = self.sink.name(), error = %e, "export refused by the sink; retrying (nothing is dropped)");
                        } else {
                            tracing::warn!(sink = self.sink.name(), error = %e, "export failed; retrying with backoff");
                        }
                        failing_since = Some(e.kind);
                    } else {
                        tracing::debug!(sink = self.sink.name(), error = %e, ?delay, "export failed again");
                    }
                    if stopping || sleep_or_stop(&mut stop, delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reads the next batch and refreshes the backlog gauges (off the runtime). The lag is the
    /// age of the batch's first event; the backlog is the batch when it is not full, else a
    /// count after the cursor at most once per [`BACKLOG_COUNT_EVERY`] (counted down by the
    /// acknowledged events in between), so draining a large backlog does not count it per batch.
    async fn read(&mut self) -> Result<Vec<Pending>> {
        let db = self.db.clone();
        let cursor = self.cursor.clone();
        let limit = self.settings.batch_size;
        let count_due = self.counted_at.is_none_or(|t| t.elapsed() >= BACKLOG_COUNT_EVERY);
        let (batch, count) = blocking(move || {
            let db = db.lock().unwrap_or_else(|e| e.into_inner());
            let batch = db.batch(&cursor, limit)?;
            let count = if batch.len() < limit {
                Some(batch.len() as u64)
            } else if count_due {
                Some(db.backlog(&cursor)?.events)
            } else {
                None
            };
            Ok((batch, count))
        })
        .await?;
        if let Some(count) = count {
            if batch.len() >= limit {
                self.counted_at = Some(std::time::Instant::now());
            }
            self.metrics.backlog_events.set(count.min(i64::MAX as u64) as i64);
        } else {
            // Between counts the backlog is at least the batch in hand (a drained gauge must
            // not read 0 while a full batch waits for a failing sink).
            let at_least = batch.len() as i64;
            if self.metrics.backlog_events.get() < at_least {
                self.metrics.backlog_events.set(at_least);
            }
        }
        let lag = batch.first().map(|p| age_seconds(&p.event.timestamp)).unwrap_or(0.0);
        self.metrics.lag_seconds.set(lag);
        Ok(batch)
    }

    async fn save(&mut self, next: Cursor) -> Result<()> {
        let db = self.db.clone();
        let saved = next.clone();
        blocking(move || db.lock().unwrap_or_else(|e| e.into_inner()).save(&saved)).await?;
        self.cursor = next.clone();
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

/// Sleeps `delay`; returns `true` when a stop was requested first (or the sender is gone).
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| SensorError::StorageUnavailable("export database task failed"))?
}
