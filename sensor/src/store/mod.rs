//! SQLite persistence of every [`Event`], off the async runtime (docs/architecture.md).
//!
//! * [`Store`] is the write side: [`Store::record`] never blocks — it puts the event on a bounded
//!   queue drained by one dedicated OS thread that commits batches (see [`writer`] for batching,
//!   retries and shutdown). The returned [`Ack`] resolves once the event's transaction committed
//!   (`synchronous=FULL`, so it survives a crash or power loss).
//! * [`Reader`] is the read side for reports (`sensor peers`) and tests.
//! * [`migrations`] holds the schema (tables `events`, `peers`, `punch_attempts`, the crawl tables
//!   and `export_cursor`, the export pipeline's per-sink position) and the
//!   connection settings.
//! * [`punch`]: `sensor punch`'s attempts ([`Store::record_punch`], [`Reader::punch_attempts`],
//!   [`Reader::punch_summary`]).
//! * [`crawl`]: `sensor crawl`'s crawls, visits, nodes, edges and address sightings, written by
//!   their own thread ([`crawl::CrawlWriter`]).
//!
//! Timestamps are stored as RFC 3339 UTC text with a fixed 9-digit fraction
//! (`2026-11-21T04:26:00.123456789Z`), so text order is time order.

pub mod crawl;
pub mod crawl_status;
pub mod gossip;
pub mod migrations;
pub mod punch;
pub mod query;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::{Result, SensorError};
use crate::metrics::Metrics;
use sensor_core::event::Event;
use sensor_core::punch::PunchAttempt;

pub use punch::{PunchAttemptRow, PunchSummary};
pub use query::{EventCounts, EventRow, PeerCounts, PeerRow, Reader};
use writer::{Msg, Shared, Writer};

/// How long [`Store::flush`] waits at most.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Tuning of the writer. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most events committed in one transaction (values below 1 mean 1). Default 256.
    pub batch_size: usize,
    /// Longest time the first event of a batch waits for more before the batch is committed.
    /// This bounds the ack latency when nothing calls [`Store::flush`]. Default 100 ms.
    pub flush_interval: Duration,
    /// Events that may wait for the writer; [`Store::record`] fails once this many are queued
    /// (values below 1 mean 1). Default 10 000.
    pub queue_capacity: usize,
    /// Disk-usage cap in bytes for the main database file (SQLite `max_page_count`, rounded down
    /// to whole pages, never below the file's current size). Past it, batches fail with kind
    /// `full` and are retried, exactly as on a full disk. The WAL file is not included (it is
    /// checkpointed back into the database). `None` (default): no cap.
    pub max_db_bytes: Option<u64>,
    /// How long the writer waits for another connection's lock before a batch fails with kind
    /// `locked` (SQLite `busy_timeout`). Default 5 s.
    pub busy_timeout: Duration,
    /// The disk-full policy's first step: the export sink (`export_cursor.sink`) whose
    /// acknowledged events may be deleted, oldest first, when a batch fails with kind `full`
    /// (see [`writer`]). `None` (default, and whenever export is off): nothing is deleted.
    pub reclaim_exported_for: Option<&'static str>,
    /// The disk-full policy's last step: how long a batch may keep failing with kind `full`
    /// (after reclaiming found nothing more to delete) before its events are dropped and
    /// counted in `sensor_storage_dropped_events_total{reason="disk_full"}`. Default 2 s.
    pub full_grace: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            batch_size: 256,
            flush_interval: Duration::from_millis(100),
            queue_capacity: 10_000,
            max_db_bytes: None,
            busy_timeout: Duration::from_secs(5),
            reclaim_exported_for: None,
            full_grace: Duration::from_secs(2),
        }
    }
}

/// Resolves when one recorded event is durably committed. Dropping it is fine: the event is
/// still written.
#[derive(Debug)]
pub struct Ack {
    event_id: Uuid,
    rx: oneshot::Receiver<()>,
}

impl Ack {
    /// The id of the event this ack is for.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// Waits until the event's transaction committed. A database that keeps failing (full,
    /// locked) makes this wait until it recovers; bound it with a timeout if needed.
    ///
    /// Errors: [`SensorError::StorageUnavailable`] when the store shut down before the event
    /// could be committed (the event is lost; the writer logged it).
    pub async fn committed(self) -> Result<()> {
        self.rx.await.map_err(|_| SensorError::StorageUnavailable("the store stopped before the event was committed"))
    }
}

struct Producer {
    tx: Option<SyncSender<Msg>>,
    /// Events successfully queued so far (same order as the queue: updated under this lock).
    enqueued: u64,
}

/// The write side of the event database. Share it (`Arc<Store>`); every method takes `&self`
/// except [`close`](Store::close). Dropping it finishes the queued events and stops the writer
/// thread (blocking, like `close`).
pub struct Store {
    producer: Mutex<Producer>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating the file and its parent directories if needed) and migrates the database
    /// at `path`, then starts the writer thread. Blocking: call it before or outside the async
    /// runtime's worker threads (e.g. in `spawn_blocking`).
    ///
    /// Errors: [`SensorError::Io`] when the parent directory cannot be created,
    /// [`SensorError::Storage`] when SQLite cannot open, configure or migrate the database
    /// (including a schema newer than this build), [`SensorError::Io`] when the thread cannot
    /// be spawned.
    pub fn open(path: &Path, options: StoreOptions, metrics: Arc<Metrics>) -> Result<Store> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| SensorError::io(format!("creating database directory {}", parent.display()), e))?;
        }
        let mut conn = Connection::open(path)?;
        migrations::configure_writer(&conn, options.busy_timeout)?;
        migrations::migrate(&mut conn)?;
        if let Some(bytes) = options.max_db_bytes {
            migrations::set_max_db_bytes(&conn, bytes)?;
        }

        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            conn,
            rx,
            shared: shared.clone(),
            metrics: metrics.clone(),
            batch_size: options.batch_size.max(1),
            flush_interval: options.flush_interval,
            giving_up: false,
            reclaim_exported_for: options.reclaim_exported_for,
            full_grace: options.full_grace,
        };
        let thread = std::thread::Builder::new()
            .name("sensor-store".into())
            .spawn(move || writer.run())
            .map_err(|e| SensorError::io("spawning the storage writer thread", e))?;
        tracing::info!(path = %path.display(), "event store opened");
        Ok(Store {
            producer: Mutex::new(Producer { tx: Some(tx), enqueued: 0 }),
            shared,
            thread: Some(thread),
            metrics,
            path: path.to_owned(),
        })
    }

    /// The database file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn producer(&self) -> MutexGuard<'_, Producer> {
        self.producer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `event` for writing without blocking (safe on the async runtime).
    ///
    /// Errors: [`SensorError::StorageUnavailable`] when the queue is full (the database is slow or
    /// failing) or the writer has stopped; the event is not stored and
    /// `sensor_storage_errors_total{kind="queue_full"}` is incremented.
    pub fn record(&self, event: Event) -> Result<Ack> {
        let event_id = event.event_id;
        self.enqueue(event_id, |ack| Msg::Event(Box::new(event), ack))
    }

    /// Queues one hole-punch attempt (table `punch_attempts`) without blocking; the [`Ack`]
    /// carries its `attempt_id`. Errors: as [`record`](Self::record).
    pub fn record_punch(&self, attempt: PunchAttempt) -> Result<Ack> {
        let attempt_id = attempt.attempt_id;
        self.enqueue(attempt_id, |ack| Msg::Punch(Box::new(attempt), ack))
    }

    /// Queues one `Addresses` message a peer gossiped ([`gossip::Gossip`]) without blocking;
    /// the [`Ack`] carries a fresh UUID v7. Errors: as [`record`](Self::record).
    pub fn record_gossip(&self, gossip: sensor_core::gossip::Gossip) -> Result<Ack> {
        self.enqueue(Uuid::now_v7(), |ack| Msg::Gossip(Box::new(gossip), ack))
    }

    fn enqueue(&self, event_id: Uuid, msg: impl FnOnce(oneshot::Sender<()>) -> Msg) -> Result<Ack> {
        let (ack_tx, rx) = oneshot::channel();
        let mut producer = self.producer();
        let outcome = match producer.tx.as_ref() {
            None => Err("the store is closed"),
            Some(tx) => {
                // Count before sending so the writer's decrement can never come first.
                self.metrics.storage_queue_depth.inc();
                match tx.try_send(msg(ack_tx)) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        self.metrics.storage_queue_depth.dec();
                        Err(match e {
                            TrySendError::Full(_) => "the storage queue is full",
                            TrySendError::Disconnected(_) => "the storage writer has stopped",
                        })
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                producer.enqueued += 1;
                Ok(Ack { event_id, rx })
            }
            Err(why) => {
                drop(producer);
                self.metrics.storage_error("queue_full");
                tracing::debug!(%event_id, why, "event not stored");
                Err(SensorError::StorageUnavailable(why))
            }
        }
    }

    /// Blocks until every event recorded before this call is committed, at most
    /// [`DEFAULT_FLUSH_TIMEOUT`]. See [`flush_within`](Self::flush_within).
    pub fn flush(&self) -> Result<()> {
        self.flush_within(DEFAULT_FLUSH_TIMEOUT)
    }

    /// Blocks until every event recorded before this call is committed, at most `timeout`.
    /// Commits the writer's open batch at once instead of waiting for `flush_interval`.
    ///
    /// Errors ([`SensorError::StorageUnavailable`]): a batch attempt failed while waiting (the
    /// message names the kind; the writer keeps retrying, nothing is lost), the disk-full policy
    /// dropped events while waiting, the timeout passed, or the writer stopped.
    pub fn flush_within(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let target = {
            let producer = self.producer();
            if self.shared.lock().done < producer.enqueued
                && let Some(tx) = producer.tx.as_ref()
            {
                // A full queue needs no nudge: the writer is busy anyway.
                let _ = tx.try_send(Msg::Flush);
            }
            producer.enqueued
        };
        let mut state = self.shared.lock();
        let failures_at_start = state.failures;
        let dropped_full_at_start = state.dropped_full;
        loop {
            if state.done >= target {
                return if state.dropped > 0 {
                    Err(SensorError::StorageUnavailable("events were dropped at shutdown"))
                } else if state.dropped_full > dropped_full_at_start {
                    Err(SensorError::StorageUnavailable("the database is full: events were dropped (counted)"))
                } else {
                    Ok(())
                };
            }
            if state.stopped {
                return Err(SensorError::StorageUnavailable("the storage writer has stopped"));
            }
            if state.failures > failures_at_start {
                return Err(SensorError::StorageUnavailable(failure_message(state.failing)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SensorError::StorageUnavailable("flush timed out"));
            }
            state = self.shared.wait(state, left);
        }
    }

    /// Commits everything queued and stops the writer thread (blocking). Each remaining batch
    /// gets at least one attempt; with a database that keeps failing this returns after those
    /// attempts (each bounded by `busy_timeout`).
    ///
    /// Errors: [`SensorError::StorageUnavailable`] when some events could not be committed at
    /// shutdown (they are logged, counted and lost). Events the disk-full policy dropped earlier
    /// were counted then and do not fail the close.
    pub fn close(mut self) -> Result<()> {
        self.shutdown();
        if self.shared.lock().dropped > 0 {
            return Err(SensorError::StorageUnavailable("the store closed with uncommitted events (see the log)"));
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.shared.update(|s| s.shutdown = true);
        // Dropping the only sender lets the writer drain the queue and exit.
        self.producer().tx = None;
        if thread.join().is_err() {
            tracing::error!("storage writer thread panicked");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn failure_message(kind: Option<&'static str>) -> &'static str {
    match kind {
        Some("full") => "database is full (disk or max_db_bytes cap); writes are being retried",
        Some("locked") => "database is locked by another connection; writes are being retried",
        Some("io") => "disk I/O error; writes are being retried",
        _ => "database write failed; writes are being retried",
    }
}
