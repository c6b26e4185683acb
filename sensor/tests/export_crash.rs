//! Kill -9 of `sensor listen` in the middle of a load run while the export has a backlog, then a
//! restart on the same database (issue 7): nothing acknowledged is lost and the export resumes
//! where it stopped.
//!
//! A real sensor process takes a paced stream of short-lived raw Kaspa peers
//! (`support/load.rs`, 40 new connections/s, each from its own 127.x.y.z source) and exports its
//! events — to an in-test webhook (`support/webhook.rs`: 503 for the first requests, then a
//! slow 200 per batch, so the backlog grows) or to an NDJSON file. Once a few batches are
//! acknowledged and more than a batch waits, the sensor gets SIGKILL; the load keeps going (its
//! connections are refused while nothing listens); the sensor restarts on the same port and data
//! directory, catches up, and stops gracefully. Then:
//! * every event in SQLite reached the sink (after dedup by `event_id`), and every event the sink
//!   acknowledged is in SQLite — nothing acknowledged was lost;
//! * the first batch after the restart starts at the first event after the persisted cursor, and
//!   the events delivered twice are at most one batch (at-least-once: the batch in flight at the
//!   kill — with the webhook, the kill comes while it holds a stored batch unacknowledged, so
//!   exactly that batch is delivered twice);
//! * every handshake a client completed more than 2 s before the kill has its `accepted` event
//!   stored (the store commits within `storage.flush_interval_ms`, 50 ms);
//! * `sensor_export_backlog_events` is 0 at the end and the cursor is on the last event.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::load::{self, ChurnPlan};
use support::sensor_process::SensorProcess;
use support::webhook::Webhook;

/// `export.batch_size`: small, so the run spans many batches.
const BATCH: usize = 20;
/// Bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);
/// The load runs at least this long before the kill (so that [`COMMIT_MARGIN`] covers some).
const KILL_AFTER: Duration = Duration::from_secs(3);
/// A handshake this long before the kill must have its event committed.
const COMMIT_MARGIN: Duration = Duration::from_secs(2);

/// Where the events went, split at the kill: generation 0 before, 1 after the restart.
enum Sink {
    Http(Webhook),
    Ndjson(std::path::PathBuf),
}

impl Sink {
    fn env(&self) -> Vec<(&'static str, String)> {
        let (sink, endpoint, interval) = match self {
            Sink::Http(_) => ("http", String::new(), "100"),
            // Polls 5 s apart: between two, events pile up, so the kill meets a backlog (the
            // check and the kill are ms apart; a drain must not fall in between).
            Sink::Ndjson(path) => ("ndjson", path.to_str().unwrap().to_owned(), "5000"),
        };
        vec![
            ("SENSOR_EXPORT_SINK", sink.into()),
            ("SENSOR_EXPORT_ENDPOINT", endpoint),
            ("SENSOR_EXPORT_BATCH_SIZE", BATCH.to_string()),
            ("SENSOR_EXPORT_INTERVAL_MS", interval.into()),
            ("SENSOR_EXPORT_TIMEOUT_MS", "5000".into()),
        ]
    }

    /// Acknowledged batches (http) or lines (ndjson, as one-event batches) so far, with the
    /// generation each belongs to (`split`: the file length at the kill). Torn NDJSON lines (not
    /// JSON) are returned separately.
    fn deliveries(&self, split: Option<u64>) -> (Vec<(u32, Vec<String>)>, Vec<String>) {
        match self {
            Sink::Http(hook) => (hook.deliveries().into_iter().map(|d| (d.generation, d.ids)).collect(), hook.bad()),
            Sink::Ndjson(path) => {
                let bytes = std::fs::read(path).unwrap_or_default();
                let (mut out, mut torn, mut offset) = (Vec::new(), Vec::new(), 0u64);
                for line in bytes.split_inclusive(|b| *b == b'\n') {
                    let generation = u32::from(split.is_some_and(|s| offset >= s));
                    offset += line.len() as u64;
                    match serde_json::from_slice::<serde_json::Value>(line) {
                        Ok(v) if line.ends_with(b"\n") => {
                            out.push((generation, vec![v["event_id"].as_str().unwrap().to_owned()]))
                        }
                        _ => torn.push(String::from_utf8_lossy(line).into_owned()),
                    }
                }
                (out, torn)
            }
        }
    }

    fn acknowledged(&self) -> usize {
        self.deliveries(None).0.iter().map(|(_, ids)| ids.len()).sum()
    }
}

/// The persisted cursor of `sink`: (rowid, event_id).
fn cursor(db: &Path, sink: &str) -> (i64, Option<String>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT last_rowid, last_event_id FROM export_cursor WHERE sink = ?1", [sink], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap_or((0, None))
}

/// Every stored event: (rowid, event_id, peer_ip, result), in rowid order.
fn stored(db: &Path) -> Vec<(i64, String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT rowid, event_id, peer_ip, result FROM events ORDER BY rowid").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The last stored event's rowid (0 when none).
fn max_rowid(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT coalesce(max(rowid), 0) FROM events", [], |r| r.get(0)).unwrap()
}

async fn metric(sensor: &SensorProcess, name: &str) -> f64 {
    load::metric_sum(&sensor.metrics_text().await, name)
}

async fn wait_until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn panics(sensor: &SensorProcess) -> Vec<String> {
    sensor.log_text().lines().filter(|l| l.contains("panicked")).map(str::to_owned).collect()
}

async fn crash_and_resume(dir: &Path, sink: Sink, first_source: usize) {
    let name = match sink {
        Sink::Http(_) => "http",
        Sink::Ndjson(_) => "ndjson",
    };
    let mut env = load::listen_env(1000);
    env.extend(sink.env());
    if let Sink::Http(hook) = &sink {
        let addr = hook.serve().await;
        hook.fail_next(3);
        hook.set_delay(Duration::from_millis(150));
        env.iter_mut().find(|(k, _)| *k == "SENSOR_EXPORT_ENDPOINT").unwrap().1 = format!("http://{addr}/hook");
    }
    let db = dir.join("data/sensor.sqlite");
    let (mut first, p2p) = load::start_sensor(dir, "sensor1", None, false, &env).await;

    // 40 connections/s × 2 events; the webhook takes ≤ 20 events per 150 ms, less while it fails.
    let load = tokio::spawn(load::churn(ChurnPlan {
        target: p2p,
        rate: 40,
        duration: Duration::from_secs(8),
        first_source,
        in_flight: 8,
    }));
    let load_started = Instant::now();
    wait_until("3 s of load, three batches acknowledged and more than a batch waiting", async || {
        load_started.elapsed() >= KILL_AFTER
            && sink.acknowledged() >= 3 * BATCH
            && max_rowid(&db) - cursor(&db, name).0 > BATCH as i64
    })
    .await;

    // http: kill while the webhook holds a batch it has stored but not acknowledged yet — the
    // sender's crash window of at-least-once delivery; that batch must come again, once.
    let in_flight = match &sink {
        Sink::Http(hook) => {
            let held = tokio::time::timeout(WAIT, hook.hold_next()).await.expect("no delivery to hold");
            Some(held.expect("webhook gone"))
        }
        Sink::Ndjson(_) => None,
    };
    let killed_at = Instant::now();
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) }, 0);
    let status = first.wait_exit().await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let split = match &sink {
        Sink::Http(hook) => {
            hook.set_generation(1);
            hook.set_delay(Duration::ZERO);
            None
        }
        Sink::Ndjson(path) => Some(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)),
    };
    let (cursor_rowid, cursor_id) = cursor(&db, name);
    let at_kill = stored(&db);
    let backlog_at_kill = at_kill.iter().filter(|e| e.0 > cursor_rowid).count();
    assert!(backlog_at_kill > 0, "no backlog when killed");

    let (mut second, _) = load::start_sensor(dir, "sensor2", Some(p2p), false, &env).await;
    let churned = load.await.unwrap();
    wait_until("the export to catch up", async || {
        metric(&second, "sensor_storage_queue_depth").await == 0.0
            && metric(&second, "sensor_export_backlog_events").await == 0.0
            && cursor(&db, name).0 == max_rowid(&db)
    })
    .await;
    let status = second.terminate().await;
    assert!(status.success(), "graceful stop: {status}\n{}", second.log_text());
    assert_eq!(panics(&first), Vec::<String>::new());
    assert_eq!(panics(&second), Vec::<String>::new());

    let events = stored(&db);
    let (deliveries, torn) = sink.deliveries(split);
    let rowid: HashMap<&str, i64> = events.iter().map(|e| (e.1.as_str(), e.0)).collect();
    let delivered: Vec<&str> = deliveries.iter().flat_map(|(_, ids)| ids.iter().map(String::as_str)).collect();
    let unique: HashSet<&str> = delivered.iter().copied().collect();
    println!(
        "{name}: {} duplicate deliveries (batch held at the kill: {in_flight:?}); {} connections started ({} completed), killed with {backlog_at_kill} events after the cursor \
         (rowid {cursor_rowid}); {} events stored; {} delivered, {} unique, {} torn lines",
        delivered.len() - unique.len(),
        churned.tally.attempted,
        churned.tally.completed,
        events.len(),
        delivered.len(),
        unique.len(),
        torn.len()
    );
    println!("{name}: failed connections: {:?} {:?}", churned.tally.not_accepted, churned.tally.after_accept);

    // Nothing acknowledged was lost; everything stored was delivered.
    let lost: Vec<&&str> = unique.iter().filter(|id| !rowid.contains_key(**id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events missing from SQLite: {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    let undelivered: Vec<&str> = events.iter().map(|e| e.1.as_str()).filter(|id| !unique.contains(id)).collect();
    assert!(undelivered.is_empty(), "{} stored events never delivered", undelivered.len());
    // A kill inside write(2) may tear the NDJSON file's last line; the restarted sink cuts it
    // before appending (ndjson.rs), so every line is whole JSON.
    assert!(torn.is_empty(), "lines or bodies the reader could not parse: {torn:?}");

    // The export resumed at the persisted cursor; at most the batch in flight was sent again.
    let first_after = deliveries.iter().find(|(generation, _)| *generation == 1).expect("nothing after the restart");
    let next_id = &at_kill.iter().find(|e| e.0 > cursor_rowid).unwrap().1;
    assert_eq!(&first_after.1[0], next_id, "first delivery after the restart (cursor {cursor_id:?})");
    let before: HashSet<&str> =
        deliveries.iter().filter(|d| d.0 == 0).flat_map(|d| d.1.iter().map(String::as_str)).collect();
    let skipped = at_kill.iter().filter(|e| e.0 <= cursor_rowid && !before.contains(e.1.as_str())).count();
    assert_eq!(skipped, 0, "events behind the persisted cursor that were never acknowledged");
    let ahead = before.iter().filter(|id| rowid[*id] > cursor_rowid).count();
    assert!(ahead <= BATCH, "{ahead} events acknowledged ahead of the persisted cursor: more than the batch in flight");
    let duplicates = delivered.len() - unique.len();
    assert!(duplicates <= BATCH, "{duplicates} events delivered twice: more than one batch per restart");
    if let Some(n) = in_flight {
        assert_eq!(duplicates, n, "the batch held at the kill, and only it, is delivered again");
    }
    let resent = deliveries.iter().filter(|d| d.0 == 1).flat_map(|d| &d.1).filter(|id| before.contains(id.as_str()));
    assert_eq!(resent.count(), duplicates, "duplicates only across the restart");

    // Handshakes completed well before the kill were committed and survived it.
    let accepted: HashSet<&str> =
        events.iter().filter(|e| e.3.as_deref() == Some("accepted")).map(|e| e.2.as_str()).collect();
    let settled: Vec<IpAddr> =
        churned.tally.completions.iter().filter(|(_, at)| *at + COMMIT_MARGIN < killed_at).map(|c| c.0).collect();
    assert!(!settled.is_empty(), "no handshake completed {COMMIT_MARGIN:?} before the kill");
    let missing: Vec<&IpAddr> = settled.iter().filter(|ip| !accepted.contains(ip.to_string().as_str())).collect();
    assert!(missing.is_empty(), "{} of {} accepted events lost: {missing:?}", missing.len(), settled.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_event_and_the_http_export_resumes_at_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    crash_and_resume(dir.path(), Sink::Http(Webhook::default()), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_event_and_the_ndjson_export_resumes_at_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export/events.ndjson");
    crash_and_resume(dir.path(), Sink::Ndjson(out), 100_000).await;
}
