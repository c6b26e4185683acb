//! Store tests against real SQLite files in temporary directories. Every wait is bounded.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use time::macros::datetime;

use super::*;
use crate::metrics::KindLabels;
use sensor_core::connection::RejectReason;
use sensor_core::event::{Direction, EventKind, PeerInfo, ProbeInfo};
use sensor_core::timestamp::format_timestamp;
use sensor_core::verdict::VerdictReason;

const PEER_A: &str = "00112233445566778899aabbccddeeff";
const WAIT: Duration = Duration::from_secs(20);

fn metrics() -> Arc<Metrics> {
    Metrics::new().0
}

fn errors(m: &Metrics, kind: &'static str) -> u64 {
    m.storage_errors.get_or_create(&KindLabels { kind }).get()
}

/// Polls `cond` every 5 ms until it holds or `WAIT` passes.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn committed(ack: Ack) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async { tokio::time::timeout(WAIT, ack.committed()).await }).expect("ack did not resolve in time")
}

fn accepted(peer_id: &str, ip: &str, port: u16) -> Event {
    let mut e = Event::now("sensor-1", EventKind::Accepted, Direction::Inbound, ip.parse().unwrap(), port);
    e.peer = PeerInfo {
        peer_id: Some(peer_id.into()),
        protocol_version: Some(11),
        user_agent: Some("/kaspad:2.1.0/kaspad:2.1.0/".into()),
        network: Some("kaspa-devnet".into()),
        advertised_address: Some("203.0.113.7:16611".into()),
    };
    e
}

fn verdict(peer_id: &str, reason: VerdictReason) -> Event {
    let kind = EventKind::Verdict { classification: reason.classification(), reason };
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let mut e = Event::now("sensor-1", kind, Direction::Outbound, ip, 16611);
    e.peer.peer_id = Some(peer_id.into());
    e.probe = ProbeInfo {
        target: Some("203.0.113.7:16611".into()),
        duration_ms: Some(1234),
        attempts: 2,
        error: Some("connection refused".into()),
    };
    e
}

fn fast() -> StoreOptions {
    StoreOptions { flush_interval: Duration::from_millis(5), ..StoreOptions::default() }
}

fn open(path: &Path, options: StoreOptions) -> (Store, Arc<Metrics>) {
    let m = metrics();
    (Store::open(path, options, m.clone()).expect("open store"), m)
}

fn count(path: &Path, sql: &str) -> i64 {
    Connection::open(path).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn migrations_apply_once_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/sensor.db");
    let (store, _) = open(&path, fast());
    store.close().unwrap();
    let (store, _) = open(&path, fast());
    store.close().unwrap();

    let mut conn = Connection::open(&path).unwrap();
    assert_eq!(migrations::schema_version(&conn).unwrap(), migrations::LATEST_VERSION);
    assert_eq!(migrations::migrate(&mut conn).unwrap(), 0);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN ('events','peers')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tables, 2);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type='index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        indexes,
        [
            "address_sightings_first_seen",
            "crawl_visits_address",
            "events_peer_id",
            "events_timestamp",
            "peers_last_seen",
            "punch_attempts_relay_node",
            "punch_attempts_started_at"
        ]
    );
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    Connection::open(&path).unwrap().pragma_update(None, "user_version", 999).unwrap();
    let err = Store::open(&path, fast(), metrics()).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
    assert!(Reader::open(&path).is_err());
}

#[test]
fn timestamps_are_fixed_width_rfc3339_utc() {
    let a = format_timestamp(datetime!(2026-11-21 04:26:00 UTC));
    let b = format_timestamp(datetime!(2026-11-21 04:26:00.5 UTC));
    let c = format_timestamp(datetime!(2026-11-21 06:26:00.55 +02:00));
    assert_eq!(a, "2026-11-21T04:26:00.000000000Z");
    assert_eq!(b, "2026-11-21T04:26:00.500000000Z");
    assert_eq!(c, "2026-11-21T04:26:00.550000000Z");
    assert!(a < b && b < c);
    assert!(time::OffsetDateTime::parse(&c, &time::format_description::well_known::Rfc3339).is_ok());
}

#[test]
fn connection_event_is_stored_column_for_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let (store, m) = open(&path, fast());
    let mut e = accepted(PEER_A, "203.0.113.7", 40123);
    e.timestamp = datetime!(2026-11-21 04:26:00.123456 UTC);
    let id = e.event_id.to_string();
    let ack = store.record(e).unwrap();
    assert_eq!(ack.event_id().to_string(), id);
    committed(ack).unwrap();
    assert_eq!(m.storage_events.get(), 1);
    assert_eq!(m.storage_queue_depth.get(), 0);

    let row = Reader::open(&path).unwrap().event(&id).unwrap().expect("row");
    let want = EventRow {
        event_id: id.clone(),
        timestamp: "2026-11-21T04:26:00.123456000Z".into(),
        sensor_id: "sensor-1".into(),
        kind: "connection".into(),
        result: Some("accepted".into()),
        direction: "inbound".into(),
        peer_ip: "203.0.113.7".into(),
        peer_port: 40123,
        peer_id: Some(PEER_A.into()),
        protocol_version: Some(11),
        user_agent: Some("/kaspad:2.1.0/kaspad:2.1.0/".into()),
        network: Some("kaspa-devnet".into()),
        advertised_address: Some("203.0.113.7:16611".into()),
        probe_target: None,
        classification: None,
        reason: "handshake_completed".into(),
        probe_duration_ms: None,
        probe_attempts: Some(0),
        probe_error: None,
    };
    assert_eq!(row, want);
    // The event id is a UUID v7 string.
    assert_eq!(uuid::Uuid::parse_str(&row.event_id).unwrap().get_version_num(), 7);

    // A rejected event without a peer id is stored but does not touch `peers`.
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    let rejected = Event::now("sensor-1", EventKind::Rejected(RejectReason::InboundLimit), Direction::Inbound, ip, 5);
    let rid = rejected.event_id.to_string();
    committed(store.record(rejected).unwrap()).unwrap();
    let reader = Reader::open(&path).unwrap();
    let row = reader.event(&rid).unwrap().expect("rejected row");
    assert_eq!(
        (row.kind.as_str(), row.result.as_deref(), row.reason.as_str(), row.peer_ip.as_str(), row.peer_id),
        ("connection", Some("rejected"), "inbound_limit", "2001:db8::1", None)
    );
    let peers = reader.peers(10).unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer_id, PEER_A);
    store.close().unwrap();
}

#[test]
fn verdict_event_is_stored_column_for_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let (store, _) = open(&path, fast());
    let mut e = verdict(PEER_A, VerdictReason::Refused);
    e.timestamp = datetime!(2026-11-21 04:27:00 UTC);
    let id = e.event_id.to_string();
    committed(store.record(e).unwrap()).unwrap();

    let reader = Reader::open(&path).unwrap();
    let rows = reader.events_for_peer(PEER_A).unwrap();
    assert_eq!(rows.len(), 1);
    let want = EventRow {
        event_id: id.clone(),
        timestamp: "2026-11-21T04:27:00.000000000Z".into(),
        sensor_id: "sensor-1".into(),
        kind: "verdict".into(),
        result: None,
        direction: "outbound".into(),
        peer_ip: "203.0.113.7".into(),
        peer_port: 16611,
        peer_id: Some(PEER_A.into()),
        protocol_version: None,
        user_agent: None,
        network: None,
        advertised_address: None,
        probe_target: Some("203.0.113.7:16611".into()),
        classification: Some("private".into()),
        reason: "refused".into(),
        probe_duration_ms: Some(1234),
        probe_attempts: Some(2),
        probe_error: Some("connection refused".into()),
    };
    assert_eq!(rows[0], want);
    // A verdict for a peer never seen connecting creates its row with the verdict.
    let peer = &reader.peers(10).unwrap()[0];
    assert_eq!(peer.connections, 0);
    assert_eq!(peer.classification.as_deref(), Some("private"));
    assert_eq!(peer.reason.as_deref(), Some("refused"));
    assert_eq!(peer.verdict_at.as_deref(), Some("2026-11-21T04:27:00.000000000Z"));
    assert_eq!(peer.probe_target.as_deref(), Some("203.0.113.7:16611"));
    store.close().unwrap();
}

#[test]
fn peers_upsert_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let (store, _) = open(&path, fast());
    let t = |s: i64| datetime!(2026-11-21 04:00:00 UTC) + time::Duration::seconds(s);

    let mut first = accepted(PEER_A, "203.0.113.7", 40001);
    first.timestamp = t(0);
    let mut second = accepted(PEER_A, "203.0.113.8", 40002);
    second.timestamp = t(10);
    second.peer.user_agent = Some("/kaspad:2.2.0/".into());
    second.peer.network = None; // a NULL never erases a known value
    let mut rejected = accepted(PEER_A, "203.0.113.9", 40003);
    rejected.kind = EventKind::Rejected(RejectReason::IpLimit);
    rejected.timestamp = t(5);
    let mut late = verdict(PEER_A, VerdictReason::HandshakeVerified);
    late.timestamp = t(30);
    let mut early = verdict(PEER_A, VerdictReason::Timeout);
    early.timestamp = t(20);
    early.probe.target = Some("203.0.113.7:1".into());
    // The later verdict is recorded first: the earlier one must not replace it.
    for e in [first, second, rejected, late, early] {
        store.record(e).unwrap();
    }
    store.flush().unwrap();

    let reader = Reader::open(&path).unwrap();
    let p = reader.peers(10).unwrap().remove(0);
    assert_eq!(p.connections, 2, "accepted bumps, rejected does not");
    assert_eq!(p.first_seen, format_timestamp(t(0)));
    assert_eq!(p.last_seen, format_timestamp(t(10)));
    assert_eq!((p.last_ip.as_deref(), p.last_port), (Some("203.0.113.8"), Some(40002)));
    assert_eq!(p.user_agent.as_deref(), Some("/kaspad:2.2.0/"));
    assert_eq!(p.network.as_deref(), Some("kaspa-devnet"));
    assert_eq!(p.protocol_version, Some(11));
    assert_eq!(p.classification.as_deref(), Some("public"));
    assert_eq!(p.reason.as_deref(), Some("handshake_verified"));
    assert_eq!(p.verdict_at, Some(format_timestamp(t(30))));
    assert_eq!(p.probe_target.as_deref(), Some("203.0.113.7:16611"));

    // A newer verdict replaces it.
    let mut newer = verdict(PEER_A, VerdictReason::DifferentNode);
    newer.timestamp = t(40);
    store.record(newer).unwrap();
    store.flush().unwrap();
    let p = reader.peers(10).unwrap().remove(0);
    assert_eq!((p.classification.as_deref(), p.reason.as_deref()), (Some("private"), Some("different_node")));
    assert_eq!(reader.verdict_counts().unwrap(), [("private".into(), "different_node".into(), 1)]);

    let counts = reader.event_counts().unwrap();
    assert_eq!(counts.total, 6);
    assert_eq!((counts.accepted, counts.rejected, counts.verdicts), (2, 1, 3));
    assert_eq!(counts.rejected_by_reason, [("ip_limit".to_string(), 1)]);
    assert_eq!(counts.verdicts_by_classification, [("private".to_string(), 2), ("public".to_string(), 1)]);
    assert_eq!(reader.events_for_peer(PEER_A).unwrap().len(), 6);
    let pc = reader.peer_counts().unwrap();
    assert_eq!((pc.total, pc.private, pc.public, pc.unclassified), (1, 1, 0, 0));
    store.close().unwrap();
}

#[test]
fn duplicate_event_id_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let (store, m) = open(&path, StoreOptions { batch_size: 2, ..fast() });
    let e = accepted(PEER_A, "203.0.113.7", 1);
    let a1 = store.record(e.clone()).unwrap();
    let a2 = store.record(e.clone()).unwrap();
    let a3 = store.record(e).unwrap();
    for a in [a1, a2, a3] {
        committed(a).unwrap();
    }
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 1);
    assert_eq!(count(&path, "SELECT connections FROM peers"), 1);
    assert_eq!(m.storage_events.get(), 1, "counts rows inserted");
    assert_eq!(errors(&m, "other"), 0);
    assert_eq!(m.storage_queue_depth.get(), 0);
    store.close().unwrap();
}

#[test]
fn flush_commits_everything_recorded_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    // A batch would otherwise wait a minute: only flush commits it.
    let options = StoreOptions { flush_interval: Duration::from_secs(60), batch_size: 1000, ..fast() };
    let (store, m) = open(&path, options);
    store.flush_within(Duration::from_secs(1)).expect("empty flush");
    let acks: Vec<Ack> = (0..10).map(|i| store.record(accepted(PEER_A, "203.0.113.7", i)).unwrap()).collect();
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 0, "not committed before flush");
    assert_eq!(m.storage_queue_depth.get(), 10);
    store.flush_within(WAIT).unwrap();
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 10);
    assert_eq!(m.storage_queue_depth.get(), 0);
    assert_eq!(m.storage_events.get(), 10);
    for a in acks {
        committed(a).unwrap();
    }
    // Dropping the store commits what is still queued.
    store.record(accepted(PEER_A, "203.0.113.7", 99)).unwrap();
    drop(store);
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 11);
}

#[test]
fn locked_database_is_retried_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let options = StoreOptions { busy_timeout: Duration::from_millis(20), ..fast() };
    let (store, m) = open(&path, options);

    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder_path = path.clone();
    let holder = std::thread::spawn(move || {
        let conn = Connection::open(&holder_path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        // Hold the lock until the test has seen the failure (bounded).
        let _ = release_rx.recv_timeout(Duration::from_secs(10));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv_timeout(WAIT).expect("lock taken");

    let acks: Vec<Ack> = (0..5).map(|i| store.record(accepted(PEER_A, "203.0.113.7", i)).unwrap()).collect();
    wait_until("a locked error", || errors(&m, "locked") >= 1);
    let err = store.flush_within(WAIT).expect_err("flush reports the failing writer");
    assert!(err.to_string().contains("locked"), "{err}");
    let _ = release_tx.send(());
    holder.join().unwrap();

    for a in acks {
        committed(a).unwrap();
    }
    store.flush_within(WAIT).unwrap();
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 5);
    assert_eq!(count(&path, "SELECT connections FROM peers"), 5);
    assert_eq!(m.storage_events.get(), 5);
    assert_eq!(m.storage_queue_depth.get(), 0);
    store.close().unwrap();
}

/// Step 2 of the disk-full policy (within `full_grace`): nothing is dropped, the queue fills.
#[test]
fn full_database_keeps_events_queued_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let capacity = 8;
    let options = StoreOptions {
        batch_size: 4,
        queue_capacity: capacity,
        max_db_bytes: Some(1), // clamps to the freshly migrated size: a few rows fit
        full_grace: Duration::from_secs(3600),
        ..fast()
    };
    let (store, m) = open(&path, options);

    let mut ok = 0u64;
    let mut last_ack = None;
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        assert!(Instant::now() < deadline, "never refused (ok={ok}, full={})", errors(&m, "full"));
        let mut e = accepted(PEER_A, "203.0.113.7", 1);
        e.peer.user_agent = Some("x".repeat(200));
        match store.record(e) {
            Ok(ack) => {
                ok += 1;
                last_ack = Some(ack);
            }
            // Queue full while the writer is stuck on SQLITE_FULL: what we wait for.
            Err(err) if errors(&m, "full") >= 1 => break err,
            // Queue momentarily full while batches still commit: try again.
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    assert!(matches!(refused, SensorError::StorageUnavailable(_)), "{refused:?}");
    assert!(errors(&m, "queue_full") >= 1);
    assert!(ok > capacity as u64, "some events were accepted and committed first (ok={ok})");
    let stored = m.storage_events.get();
    assert!(stored > 0);
    // Accepted events are waiting, not lost: the gauge counts exactly those not committed.
    assert_eq!(m.storage_queue_depth.get(), (ok - stored) as i64);
    assert!(store.flush_within(WAIT).is_err());
    assert!(matches!(store.record(accepted(PEER_A, "203.0.113.7", 2)), Err(SensorError::StorageUnavailable(_))));

    // Closing a store that cannot write returns promptly with an error; pending acks fail.
    let started = Instant::now();
    assert!(store.close().is_err());
    assert!(started.elapsed() < WAIT);
    assert!(committed(last_ack.expect("an ack")).is_err());
    assert_eq!(count(&path, "SELECT count(*) FROM events") as u64, stored);
    let check: String = Connection::open(&path).unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

fn dropped(m: &Metrics, reason: &'static str) -> u64 {
    m.storage_dropped_events.get_or_create(&crate::metrics::ReasonLabels { reason }).get()
}

/// Records `n` events with a 200-byte user agent, waiting out a momentarily full queue;
/// returns the acks' outcomes (true = committed).
fn record_all(store: &Store, n: usize, first_port: u16) -> Vec<bool> {
    let mut acks = Vec::new();
    for i in 0..n {
        let mut e = accepted(PEER_A, "203.0.113.7", first_port + i as u16);
        e.peer.user_agent = Some("x".repeat(200));
        let deadline = Instant::now() + WAIT;
        let ack = loop {
            match store.record(e.clone()) {
                Ok(ack) => break ack,
                Err(_) => {
                    assert!(Instant::now() < deadline, "the queue never drained");
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        };
        acks.push(ack);
    }
    acks.into_iter().map(|a| committed(a).is_ok()).collect()
}

/// Step 3: with nothing to reclaim, after `full_grace` the newest events are dropped and
/// counted, the writer goes on, and the stored events are untouched.
#[test]
fn full_database_without_export_drops_the_newest_counted_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let options = StoreOptions {
        batch_size: 4,
        queue_capacity: 16,
        max_db_bytes: Some(1),
        full_grace: Duration::from_millis(30),
        ..fast()
    };
    let (store, m) = open(&path, options);
    let outcomes = record_all(&store, 200, 1);
    let stored = outcomes.iter().filter(|ok| **ok).count() as u64;
    let lost = outcomes.len() as u64 - stored;
    assert!(stored > 0 && lost > 0, "some fit, the rest did not (stored {stored})");
    assert!(outcomes[..stored as usize].iter().all(|ok| *ok), "the oldest are kept, the newest dropped");
    assert_eq!(dropped(&m, "disk_full"), lost, "every dropped event is counted");
    assert_eq!(m.storage_reclaimed_events.get(), 0, "export is off: nothing is deleted");
    assert_eq!(m.storage_queue_depth.get(), 0);
    store.flush_within(WAIT).expect("a full store still completes flushes");
    assert_eq!(count(&path, "SELECT count(*) FROM events") as u64, stored);
    store.close().unwrap();
}

/// Step 1: events the export sink acknowledged make room for new ones; the cursor's own row
/// and everything after it stay.
#[test]
fn full_database_reclaims_exported_events_before_dropping_any() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let options = StoreOptions {
        batch_size: 4,
        queue_capacity: 16,
        max_db_bytes: Some(1),
        reclaim_exported_for: Some("http"),
        full_grace: Duration::from_millis(30),
        ..fast()
    };
    let (store, m) = open(&path, options);
    // Fill the database (the newest are dropped: nothing is exported yet).
    let first = record_all(&store, 200, 1);
    let fitted = first.iter().filter(|ok| **ok).count() as i64;
    assert!(dropped(&m, "disk_full") > 0);
    // The sink acknowledges everything stored so far.
    let cursor_rowid = count(&path, "SELECT max(rowid) FROM events");
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO export_cursor (sink, last_event_id, updated_at, last_rowid) \
             SELECT 'http', event_id, '2026-11-21T00:00:00.000000000Z', rowid FROM events WHERE rowid = ?1",
            [cursor_rowid],
        )
        .unwrap();
    let dropped_before = dropped(&m, "disk_full");
    let second = record_all(&store, (fitted / 2) as usize, 1000);
    assert!(second.iter().all(|ok| *ok), "room was made: {second:?}");
    assert_eq!(dropped(&m, "disk_full"), dropped_before, "nothing more dropped");
    let reclaimed = m.storage_reclaimed_events.get() as i64;
    assert!(reclaimed > 0 && reclaimed < fitted, "only exported rows go ({reclaimed} of {fitted})");
    assert_eq!(
        count(&path, &format!("SELECT count(*) FROM events WHERE rowid = {cursor_rowid}")),
        1,
        "cursor row kept"
    );
    assert_eq!(
        count(&path, &format!("SELECT count(*) FROM events WHERE rowid > {cursor_rowid}")),
        second.len() as i64,
        "every new event is stored after the cursor"
    );
    assert_eq!(count(&path, &format!("SELECT min(rowid) FROM events WHERE rowid > {cursor_rowid}")), cursor_rowid + 1);
    store.close().unwrap();
}

#[test]
fn reader_never_creates_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    assert!(matches!(Reader::open(&path), Err(SensorError::Io { .. })));
    assert!(!path.exists());
    std::fs::write(&path, b"").unwrap();
    let err = Reader::open(&path).err().expect("empty file is not a sensor database");
    assert!(err.to_string().contains("not a sensor event database"), "{err}");
}

#[test]
fn store_and_ack_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Store>();
    assert_send::<Ack>();
}
