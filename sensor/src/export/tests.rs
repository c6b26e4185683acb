//! Export pipeline unit tests against real SQLite files in temporary directories. Every wait is
//! bounded.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::*;
use crate::metrics::{Metrics, SinkFailureLabels, SinkLabels};
use crate::store::{Store, StoreOptions};
use sensor_core::config::Secret;
use sensor_core::event::{Direction, Event, EventKind};

const WAIT: Duration = Duration::from_secs(20);

fn event(n: usize) -> Event {
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    let mut e = Event::now("export-sensor", EventKind::Accepted, Direction::Inbound, ip, n as u16 + 1);
    e.peer.peer_id = Some(format!("{n:032x}"));
    e
}

/// A store at `dir/sensor.sqlite` holding `n` events; returns their ids in recording order.
fn store_with(dir: &Path, n: usize) -> (Store, Vec<String>) {
    let store = Store::open(&dir.join("sensor.sqlite"), StoreOptions::default(), Metrics::new().0).unwrap();
    let ids = add(&store, n);
    (store, ids)
}

fn add(store: &Store, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let e = event(i);
        ids.push(e.event_id.hyphenated().to_string());
        store.record(e).unwrap();
    }
    store.flush().unwrap();
    ids
}

#[test]
fn cursor_persists_across_reopen_and_batches_follow_it_in_event_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, ids) = store_with(dir.path(), 7);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "UUID v7 ids minted in sequence are ordered");
    let db_path = dir.path().join("sensor.sqlite");

    let db = CursorDb::open(&db_path, "ndjson").unwrap();
    assert_eq!(db.load().unwrap(), Cursor::default());
    let first = db.batch(&Cursor::default(), 3).unwrap();
    let got: Vec<&str> = first.iter().map(|p| p.event.event_id.as_str()).collect();
    assert_eq!(got, &ids[..3]);
    let backlog = db.backlog(&Cursor::default()).unwrap();
    assert_eq!(backlog.events, 7);
    assert!(backlog.oldest.is_some());
    db.save(&Cursor::from(first.last().unwrap())).unwrap();
    drop(db);

    let db = CursorDb::open(&db_path, "ndjson").unwrap();
    let cursor = db.load().unwrap();
    assert_eq!(cursor.event_id.as_deref(), Some(ids[2].as_str()));
    let rest = db.batch(&cursor, 100).unwrap();
    let got: Vec<&str> = rest.iter().map(|p| p.event.event_id.as_str()).collect();
    assert_eq!(got, &ids[3..]);
    assert_eq!(db.backlog(&cursor).unwrap().events, 4);
    // Another sink has its own cursor.
    assert_eq!(CursorDb::open(&db_path, "http").unwrap().load().unwrap(), Cursor::default());
    let end = Cursor::from(rest.last().unwrap());
    assert_eq!(db.backlog(&end).unwrap(), cursor::Backlog::default());
}

#[test]
fn backoff_doubles_to_the_cap_with_full_jitter() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
    let mut ceilings = Vec::new();
    for _ in 0..40 {
        let ceiling = b.ceiling();
        ceilings.push(ceiling);
        let delay = b.next_delay();
        assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
    }
    assert_eq!(ceilings[0], Duration::from_millis(100));
    assert_eq!(ceilings[1], Duration::from_millis(200));
    assert_eq!(ceilings[9], Duration::from_millis(51_200));
    assert_eq!(ceilings[10], Duration::from_secs(60));
    assert_eq!(ceilings[39], Duration::from_secs(60));
    // Jitter: the delays are not all equal to the ceiling.
    let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
    assert!(delays.iter().any(|d| *d < Duration::from_secs(59)), "{delays:?}");
    b.reset();
    assert_eq!(b.ceiling(), Duration::from_millis(100));
}

#[test]
fn hmac_signature_matches_rfc_4231_test_case_2() {
    assert_eq!(
        http::signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn http_body_is_the_documented_json_and_gzip_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, ids) = store_with(dir.path(), 2);
    let db = CursorDb::open(&dir.path().join("sensor.sqlite"), "http").unwrap();
    let rows: Vec<EventRow> = db.batch(&Cursor::default(), 10).unwrap().into_iter().map(|p| p.event).collect();
    let (plain, encoding) = http::encode_body("s-1", &rows, false).unwrap();
    assert_eq!(encoding, None);
    let value: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(value["sensor_id"], "s-1");
    assert_eq!(value["batch"][1]["event_id"], ids[1].as_str());
    assert_eq!(value["batch"][0]["kind"], "connection");
    assert_eq!(value["batch"][0]["peer_port"], 1);
    assert!(value["batch"][0].get("probe_error").is_some(), "every column is a field");
    let (gz, encoding) = http::encode_body("s-1", &rows, true).unwrap();
    assert_eq!(encoding, Some("gzip"));
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped).unwrap();
    assert_eq!(unzipped, plain);
}

#[test]
fn credentials_debug_is_redacted() {
    let creds = ExportCredentials {
        bearer_token: Some(Secret::new("tok-123-secret")),
        hmac_secret: Some(Secret::new("hmac-456-secret")),
        password: Some(Secret::new("pw-789-secret")),
    };
    let text = format!("{creds:?}");
    assert!(!text.contains("tok-123") && !text.contains("hmac-456") && !text.contains("pw-789"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    let settings = http::HttpSettings {
        endpoint: "http://127.0.0.1:9/".into(),
        sensor_id: "s".into(),
        timeout: Duration::from_secs(1),
        gzip: true,
        credentials: creds,
        tls_ca_file: None,
    };
    let text = format!("{settings:?}");
    assert!(!text.contains("tok-123") && !text.contains("hmac-456"), "{text}");
}

/// A sink that fails its first `failures` deliveries, then records every batch.
struct Flaky {
    failures: VecDeque<FailureKind>,
    received: Arc<Mutex<Vec<String>>>,
}

impl Sink for Flaky {
    fn name(&self) -> &'static str {
        "ndjson"
    }

    fn send<'a>(&'a mut self, batch: &'a [EventRow]) -> BoxFuture<'a, std::result::Result<(), SinkError>> {
        Box::pin(async move {
            if let Some(kind) = self.failures.pop_front() {
                return Err(SinkError::new(kind, "injected"));
            }
            self.received.lock().unwrap().extend(batch.iter().map(|e| e.event_id.clone()));
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_retries_failures_and_advances_the_cursor_only_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = store_with(dir.path(), 25);
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Flaky {
        failures: [FailureKind::Status5xx, FailureKind::Timeout, FailureKind::Connect].into(),
        received: received.clone(),
    };
    let mut registry = Registry::default();
    let metrics = ExportMetrics::register(&mut registry, "ndjson", &failure_kinds());
    let settings = ExportSettings {
        batch_size: 10,
        interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(50),
    };
    let db = dir.path().join("sensor.sqlite");
    let exporter = Exporter::start(&db, Box::new(sink), settings, metrics.clone()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while exporter.cursor().event_id.as_deref() != Some(ids[24].as_str()) {
        assert!(Instant::now() < deadline, "exporter did not catch up: {:?}", exporter.cursor());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*received.lock().unwrap(), ids);
    // New events are picked up by the next poll; shutdown drains them.
    let more = add(&store, 3);
    let cursor = exporter.shutdown(WAIT).await;
    assert_eq!(cursor.event_id.as_deref(), Some(more[2].as_str()));
    assert_eq!(received.lock().unwrap().len(), 28);
    assert_eq!(metrics.events.get_or_create(&SinkLabels { sink: "ndjson" }).get(), 28);
    for kind in ["status_5xx", "timeout", "connect"] {
        assert_eq!(metrics.failures.get_or_create(&SinkFailureLabels { sink: "ndjson", kind }).get(), 1, "{kind}");
    }
    assert_eq!(metrics.backlog_events.get(), 0);
    let text = crate::metrics::encode(&registry);
    for name in [
        "sensor_export_events_total{sink=\"ndjson\"} 28",
        "sensor_export_failures_total{sink=\"ndjson\",kind=\"io\"} 0",
        "sensor_export_backlog_events 0",
        "sensor_export_lag_seconds 0",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_and_lag_are_reported_while_the_sink_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _ids) = store_with(dir.path(), 5);
    let sink = Flaky { failures: vec![FailureKind::Io; 1000].into(), received: Arc::new(Mutex::new(Vec::new())) };
    let mut registry = Registry::default();
    let metrics = ExportMetrics::register(&mut registry, "ndjson", &failure_kinds());
    let settings = ExportSettings {
        batch_size: 2,
        interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(20),
    };
    let exporter =
        Exporter::start(&dir.path().join("sensor.sqlite"), Box::new(sink), settings, metrics.clone()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while metrics.failures.get_or_create(&SinkFailureLabels { sink: "ndjson", kind: "io" }).get() < 3 {
        assert!(Instant::now() < deadline, "no failures counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.backlog_events.get(), 5);
    assert!(metrics.lag_seconds.get() >= 0.0);
    let cursor = exporter.shutdown(WAIT).await;
    assert_eq!(cursor, Cursor::default(), "nothing acknowledged, nothing skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_exporter_stops_its_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _ids) = store_with(dir.path(), 1);
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Flaky { failures: VecDeque::new(), received: received.clone() };
    let metrics = ExportMetrics::register(&mut Registry::default(), "ndjson", &failure_kinds());
    let settings = ExportSettings { interval: Duration::from_millis(10), ..ExportSettings::default() };
    let exporter = Exporter::start(&dir.path().join("sensor.sqlite"), Box::new(sink), settings, metrics).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "nothing exported");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let task_alive = Arc::downgrade(&received);
    drop(exporter);
    drop(received);
    // The loop owns the sink (and its Arc); once the loop ends the Arc is freed.
    while task_alive.upgrade().is_some() {
        assert!(Instant::now() < deadline, "the exporter loop kept running after its handle was dropped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
