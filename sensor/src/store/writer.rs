//! The store's one writer thread: drains the bounded queue, commits batches, acks, retries.
//!
//! Batching: the first queued event opens a batch; the batch closes when it holds `batch_size`
//! events, when `flush_interval` has passed since it opened, or when [`Store::flush`] nudges the
//! writer. One `BEGIN IMMEDIATE` transaction per batch inserts the events (`INSERT OR IGNORE`, so
//! a duplicate `event_id` is skipped, not an error) and upserts `peers`; acks fire only after
//! `COMMIT` returned.
//!
//! Failures: a failed batch is rolled back, counted (`sensor_storage_errors_total{kind}`), logged,
//! and retried as a whole with exponential backoff (100 ms doubling to 5 s). The writer does not
//! drain the queue meanwhile, so producers keep queueing until the queue is full and then get
//! [`SensorError::StorageUnavailable`](crate::SensorError::StorageUnavailable). At shutdown every
//! remaining batch gets one more attempt; events that still fail then are dropped (logged,
//! counted `sensor_storage_dropped_events_total{reason="shutdown"}`, their acks resolve to an
//! error).
//!
//! The disk-full policy (kind `full`: `SQLITE_FULL` from a full disk, or the
//! `storage.max_db_mb` cap): nothing is dropped while room can be made, and what is dropped is
//! counted.
//! 0. **Checkpoint**: `PRAGMA wal_checkpoint(TRUNCATE)` folds the WAL into the database and
//!    truncates it (on a real disk the WAL is usually what filled it), then the batch is
//!    retried; once per failure streak, and again after each reclaim.
//! 1. **Reclaim**: when export is on, events the sink already acknowledged (rowid below its
//!    cursor row, which is kept so new rowids stay above the cursor) are deleted, oldest first,
//!    [`RECLAIM_CHUNK`] at a time, counted in `sensor_storage_reclaimed_events_total`; the batch
//!    is retried at once. SQLite reuses the freed pages without growing the file.
//! 2. **Wait**: with nothing left to reclaim, the batch is retried with backoff for
//!    `full_grace` (a full disk may be freed by someone else).
//! 3. **Drop the newest**: then the batch's events are dropped, counted in
//!    `sensor_storage_dropped_events_total{reason="disk_full"}` and logged; their acks resolve to
//!    an error, and the writer goes on with the next batch, so the sensor keeps serving and
//!    resumes storing as soon as there is room. Older, unexported events are never deleted.
//!
//! [`Store::flush`]: super::Store::flush

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, TransactionBehavior, params};
use sensor_core::timestamp::format_timestamp;
use tokio::sync::oneshot;

use super::punch;
use crate::metrics::Metrics;
use sensor_core::Label;
use sensor_core::event::{Event, EventKind};
use sensor_core::gossip::Gossip;
use sensor_core::punch::PunchAttempt;

/// First retry delay after a failed batch.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Exported events deleted per reclaim step of the disk-full policy.
pub const RECLAIM_CHUNK: u64 = 10_000;

/// The metric label of a failed batch: `full`, `locked`, `io` or `other`.
pub fn error_kind(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "full",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "locked",
        Some(ErrorCode::SystemIoFailure) => "io",
        _ => "other",
    }
}

/// What producers send to the writer.
pub(super) enum Msg {
    Event(Box<Event>, oneshot::Sender<()>),
    /// One hole-punch attempt (table `punch_attempts`).
    Punch(Box<PunchAttempt>, oneshot::Sender<()>),
    /// Addresses a peer gossiped (tables `address_sightings`, `crawl_nodes`).
    Gossip(Box<Gossip>, oneshot::Sender<()>),
    /// Commit the open batch now (sent by `flush`).
    Flush,
}

/// One row-to-be of a batch.
enum Record {
    Event(Box<Event>),
    Punch(Box<PunchAttempt>),
    Gossip(Box<Gossip>),
}

/// State shared between the [`Store`](super::Store) handle and the writer thread.
#[derive(Default)]
pub(super) struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Default)]
pub(super) struct State {
    /// Events the writer is done with: committed, or dropped at shutdown (`dropped`).
    pub done: u64,
    /// Events dropped at shutdown after their last attempt failed.
    pub dropped: u64,
    /// Events dropped by the disk-full policy (also in `done`).
    pub dropped_full: u64,
    /// Failed batch attempts so far.
    pub failures: u64,
    /// Kind of the latest failure; cleared by the next successful commit.
    pub failing: Option<&'static str>,
    /// Set by the handle: finish what is queued, then exit.
    pub shutdown: bool,
    /// Set by the writer thread when it exits (also on panic).
    pub stopped: bool,
}

impl Shared {
    /// Locks the state; a poisoned lock is still usable (the state is plain counters).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change of the state for at most `timeout`.
    pub fn wait<'a>(&self, guard: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        match self.cond.wait_timeout(guard, timeout) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.cond.notify_all();
    }
}

/// Marks the writer stopped when its thread ends, however it ends.
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.update(|s| s.stopped = true);
    }
}

struct Pending {
    record: Record,
    ack: oneshot::Sender<()>,
}

pub(super) struct Writer {
    pub conn: Connection,
    pub rx: Receiver<Msg>,
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Set once a batch was dropped at shutdown: later batches are dropped without an attempt.
    pub giving_up: bool,
    /// [`StoreOptions::reclaim_exported_for`](super::StoreOptions::reclaim_exported_for).
    pub reclaim_exported_for: Option<&'static str>,
    /// [`StoreOptions::full_grace`](super::StoreOptions::full_grace).
    pub full_grace: Duration,
}

impl Writer {
    /// The thread body: runs until the queue is disconnected and drained.
    pub fn run(mut self) {
        let _stopped = StoppedGuard(self.shared.clone());
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut connected = true;
        while connected || !batch.is_empty() {
            if connected {
                connected = self.fill(&mut batch);
            }
            if !batch.is_empty() {
                self.commit_with_retry(&mut batch);
            }
        }
        tracing::debug!("storage writer stopped");
    }

    /// Collects one batch. Returns false once the queue is disconnected and empty.
    fn fill(&self, batch: &mut Vec<Pending>) -> bool {
        match self.rx.recv() {
            Ok(Msg::Event(event, ack)) => batch.push(Pending { record: Record::Event(event), ack }),
            Ok(Msg::Punch(attempt, ack)) => batch.push(Pending { record: Record::Punch(attempt), ack }),
            Ok(Msg::Gossip(gossip, ack)) => batch.push(Pending { record: Record::Gossip(gossip), ack }),
            Ok(Msg::Flush) => return true,
            Err(_) => return false,
        }
        let deadline = Instant::now() + self.flush_interval;
        while batch.len() < self.batch_size {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Event(event, ack)) => batch.push(Pending { record: Record::Event(event), ack }),
                Ok(Msg::Punch(attempt, ack)) => batch.push(Pending { record: Record::Punch(attempt), ack }),
                Ok(Msg::Gossip(gossip, ack)) => batch.push(Pending { record: Record::Gossip(gossip), ack }),
                Ok(Msg::Flush) | Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }

    /// Commits `batch` (emptying it), retrying with backoff; gives up only at shutdown.
    fn commit_with_retry(&mut self, batch: &mut Vec<Pending>) {
        let mut backoff = INITIAL_BACKOFF;
        let mut failed = 0u32;
        // When this batch first failed with `full` and reclaiming found nothing (step 2).
        let mut full_since: Option<Instant> = None;
        // Whether step 0 (WAL checkpoint) ran since this batch last failed with `full`.
        let mut checkpointed = false;
        loop {
            let shutting_down = self.shared.lock().shutdown;
            if shutting_down && self.giving_up {
                self.drop_batch(batch, "shutdown");
                return;
            }
            match write_batch(&mut self.conn, batch) {
                Ok(inserted) => {
                    // Counters first, so whoever sees an ack also sees them updated.
                    let n = batch.len() as u64;
                    self.metrics.storage_events.inc_by(inserted);
                    self.metrics.storage_queue_depth.dec_by(n as i64);
                    self.shared.update(|s| {
                        s.done += n;
                        s.failing = None;
                    });
                    for p in batch.drain(..) {
                        let _ = p.ack.send(());
                    }
                    if failed > 0 {
                        tracing::info!(failed_attempts = failed, events = n, "storage writes recovered");
                    }
                    return;
                }
                Err(e) => {
                    let kind = error_kind(&e);
                    failed += 1;
                    self.metrics.storage_error(kind);
                    self.shared.update(|s| {
                        s.failures += 1;
                        s.failing = Some(kind);
                    });
                    if kind == "full" && !shutting_down {
                        // The WAL, not the database, is what usually fills a real disk: fold it
                        // back and truncate it once per streak (and again after a reclaim).
                        if !checkpointed {
                            checkpointed = true;
                            if self.checkpoint() {
                                continue;
                            }
                        }
                        if self.reclaim() > 0 {
                            checkpointed = false;
                            continue;
                        }
                        let since = *full_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.full_grace {
                            tracing::error!(events = batch.len(), error = %e,
                                "storage full and nothing left to reclaim; dropping the newest events");
                            self.drop_batch(batch, "disk_full");
                            return;
                        }
                    }
                    if shutting_down {
                        tracing::error!(kind, error = %e, events = batch.len(),
                            "storage batch failed at shutdown; dropping it");
                        self.giving_up = true;
                        self.drop_batch(batch, "shutdown");
                        return;
                    }
                    tracing::warn!(kind, error = %e, events = batch.len(), attempt = failed,
                        retry_in_ms = backoff.as_millis() as u64, "storage batch failed; will retry");
                    // Sleep, but wake at once when the handle asks us to shut down.
                    let deadline = Instant::now() + backoff;
                    let mut state = self.shared.lock();
                    while !state.shutdown {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        state = self.shared.wait(state, left);
                    }
                    drop(state);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Step 0 of the disk-full policy: `PRAGMA wal_checkpoint(TRUNCATE)` copies the WAL into
    /// the database and truncates it to zero bytes, which frees the disk space the WAL held.
    /// Returns `true` when it completed (no reader blocked it).
    fn checkpoint(&mut self) -> bool {
        let result = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        match result {
            Ok(0) => {
                tracing::warn!("storage full: checkpointed and truncated the WAL");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "storage full: the WAL checkpoint failed");
                false
            }
        }
    }

    /// Step 1 of the disk-full policy: deletes up to [`RECLAIM_CHUNK`] of the oldest events the
    /// export sink acknowledged. Returns how many were deleted (0 when export is off, nothing
    /// is exported yet, or the delete itself failed).
    fn reclaim(&mut self) -> u64 {
        let Some(sink) = self.reclaim_exported_for else { return 0 };
        let deleted = self.conn.execute(
            "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE rowid < \
             (SELECT last_rowid FROM export_cursor WHERE sink = ?1) ORDER BY rowid LIMIT ?2)",
            params![sink, RECLAIM_CHUNK as i64],
        );
        match deleted {
            Ok(n) => {
                if n > 0 {
                    self.metrics.storage_reclaimed_events.inc_by(n as u64);
                    tracing::warn!(deleted = n, sink, "storage full: deleted events the export already delivered");
                }
                n as u64
            }
            Err(e) => {
                tracing::warn!(error = %e, "storage full: reclaiming exported events failed");
                0
            }
        }
    }

    /// Drops a batch (`reason`: `disk_full` or `shutdown`): acks resolve to an error, the
    /// events are counted in `sensor_storage_dropped_events_total{reason}`.
    fn drop_batch(&self, batch: &mut Vec<Pending>, reason: &'static str) {
        let n = batch.len() as u64;
        // Counters first, then the acks (dropping their senders): whoever sees an ack fail
        // also sees the drop counted.
        self.metrics.storage_dropped(reason, n);
        self.metrics.storage_queue_depth.dec_by(n as i64);
        self.shared.update(|s| {
            s.done += n;
            if reason == "shutdown" {
                s.dropped += n;
            } else {
                s.dropped_full += n;
            }
        });
        batch.clear();
    }
}

const INSERT_EVENT: &str = "INSERT OR IGNORE INTO events (event_id, timestamp, sensor_id, kind, \
    result, direction, peer_ip, peer_port, peer_id, protocol_version, user_agent, network, \
    advertised_address, probe_target, classification, reason, probe_duration_ms, probe_attempts, \
    probe_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
    ?17, ?18, ?19)";

/// Connection events (accepted: ?8 = 1, rejected with a peer id: ?8 = 0). Identity fields follow
/// the latest event by timestamp; NULLs never erase a known value.
const UPSERT_PEER_CONNECTION: &str = "INSERT INTO peers (peer_id, first_seen, last_seen, last_ip, \
    last_port, user_agent, protocol_version, network, connections) \
    VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
    ON CONFLICT (peer_id) DO UPDATE SET \
      first_seen = min(peers.first_seen, excluded.first_seen), \
      last_seen = max(peers.last_seen, excluded.last_seen), \
      last_ip = CASE WHEN excluded.last_seen >= peers.last_seen \
        THEN excluded.last_ip ELSE peers.last_ip END, \
      last_port = CASE WHEN excluded.last_seen >= peers.last_seen \
        THEN excluded.last_port ELSE peers.last_port END, \
      user_agent = CASE WHEN excluded.last_seen >= peers.last_seen \
        THEN coalesce(excluded.user_agent, peers.user_agent) \
        ELSE coalesce(peers.user_agent, excluded.user_agent) END, \
      protocol_version = CASE WHEN excluded.last_seen >= peers.last_seen \
        THEN coalesce(excluded.protocol_version, peers.protocol_version) \
        ELSE coalesce(peers.protocol_version, excluded.protocol_version) END, \
      network = CASE WHEN excluded.last_seen >= peers.last_seen \
        THEN coalesce(excluded.network, peers.network) \
        ELSE coalesce(peers.network, excluded.network) END, \
      connections = peers.connections + excluded.connections";

/// Verdict events: create the peer if unknown; replace the verdict only with a later one
/// (by timestamp, then event id).
const UPSERT_PEER_VERDICT: &str = "INSERT INTO peers (peer_id, first_seen, last_seen, last_ip, \
    last_port, user_agent, protocol_version, network, connections, classification, reason, \
    verdict_at, verdict_event_id, probe_target) \
    VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?2, ?10, ?11) \
    ON CONFLICT (peer_id) DO UPDATE SET \
      classification = excluded.classification, reason = excluded.reason, \
      verdict_at = excluded.verdict_at, verdict_event_id = excluded.verdict_event_id, \
      probe_target = excluded.probe_target \
    WHERE peers.verdict_at IS NULL \
      OR (excluded.verdict_at, excluded.verdict_event_id) > (peers.verdict_at, peers.verdict_event_id)";

/// One transaction: insert every event (upserting peers) and every punch attempt. Returns the
/// rows inserted (duplicates excluded).
fn write_batch(conn: &mut Connection, batch: &[Pending]) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut inserted = 0;
    {
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        let mut upsert_connection = tx.prepare_cached(UPSERT_PEER_CONNECTION)?;
        let mut upsert_verdict = tx.prepare_cached(UPSERT_PEER_VERDICT)?;
        for p in batch {
            let e = match &p.record {
                Record::Event(e) => &**e,
                Record::Punch(attempt) => {
                    if punch::insert(&tx, attempt)? {
                        inserted += 1;
                    } else {
                        tracing::debug!(attempt_id = %attempt.attempt_id, "duplicate punch attempt id ignored");
                    }
                    continue;
                }
                Record::Gossip(gossip) => {
                    // Not an event: `sensor_storage_events_total` counts events and attempts.
                    super::gossip::insert(&tx, gossip)?;
                    continue;
                }
            };
            let event_id = e.event_id.to_string();
            let ts = format_timestamp(e.timestamp);
            let peer_ip = e.peer_ip.to_string();
            let duration_ms = e.probe.duration_ms.map(|d| d.min(i64::MAX as u64) as i64);
            let rows = insert.execute(params![
                event_id,
                ts,
                e.sensor_id,
                e.kind.as_str(),
                e.kind.result(),
                e.direction.as_str(),
                peer_ip,
                e.peer_port,
                e.peer.peer_id,
                e.peer.protocol_version,
                e.peer.user_agent,
                e.peer.network,
                e.peer.advertised_address,
                e.probe.target,
                e.kind.classification().map(|c| c.as_str()),
                e.kind.reason(),
                duration_ms,
                e.probe.attempts,
                e.probe.error,
            ])?;
            if rows == 0 {
                tracing::debug!(%event_id, "duplicate event id ignored");
                continue;
            }
            inserted += 1;
            let Some(peer_id) = e.peer.peer_id.as_deref() else { continue };
            match &e.kind {
                EventKind::Accepted | EventKind::Rejected(_) => {
                    let bump = i64::from(e.kind == EventKind::Accepted);
                    upsert_connection.execute(params![
                        peer_id,
                        ts,
                        peer_ip,
                        e.peer_port,
                        e.peer.user_agent,
                        e.peer.protocol_version,
                        e.peer.network,
                        bump,
                    ])?;
                }
                EventKind::Verdict { classification, reason } => {
                    upsert_verdict.execute(params![
                        peer_id,
                        ts,
                        peer_ip,
                        e.peer_port,
                        e.peer.user_agent,
                        e.peer.protocol_version,
                        e.peer.network,
                        classification.as_str(),
                        reason.as_str(),
                        event_id,
                        e.probe.target,
                    ])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(inserted)
}
