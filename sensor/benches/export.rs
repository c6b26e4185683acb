//! Export benchmarks (issue 7, "Measure"). Prints figures; asserts nothing but completion
//! (every event delivered, no failed delivery). Under `cargo test` it runs a small smoke pass.
//!
//! ```text
//! cargo bench -p sensor --bench export -- throughput [EVENTS=200000] [BATCH=500]
//! cargo bench -p sensor --bench export -- drain [SINK=postgres|http] [RATE=1000] [OUTAGE_SECS=600] [BATCH=500]
//! ```
//!
//! * **throughput**: EVENTS events stored in SQLite first, then exported by the real
//!   [`Exporter`] to (a) a real PostgreSQL (Debian's server, started here on a loopback port,
//!   `fsync=off`), (b) an HTTP webhook on 127.0.0.1 (axum) that verifies the HMAC, gunzips,
//!   parses the JSON and deduplicates by `event_id` before answering 200, with gzip on and off.
//!   Prints events/s from the exporter's start to its cursor reaching the last event.
//! * **drain**: the backlog a sink outage of OUTAGE_SECS leaves when events arrive at RATE
//!   events/s (RATE × OUTAGE_SECS events, stored before the exporter starts); the exporter then
//!   starts while RATE events/s keep arriving, and the bench prints how long it takes until the
//!   exporter has caught up with the live tail (its cursor reaches an event stored after the
//!   drain started and the backlog gauge reads at most one batch).
//!
//! Event rows look like the listener's: a peer id, a kaspad user agent, an advertised address,
//! alternating connection and verdict events from IPv4 and IPv6 sources.

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::collections::HashSet;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use prometheus_client::registry::Registry;

use sensor::export::http::{HttpSettings, HttpSink, signature};
use sensor::export::postgres::{PostgresSettings, PostgresSink};
use sensor::export::{ExportSettings, Exporter, Sink, failure_kinds};
use sensor::metrics::{ExportMetrics, Metrics};
use sensor::store::{Store, StoreOptions};
use sensor_core::config::{ExportCredentials, SINK_HTTP, SINK_POSTGRES, Secret};
use sensor_core::event::{Direction, Event, EventKind};
use sensor_core::verdict::{Classification, VerdictReason};

const SECRET: &str = "bench-hmac-secret";
/// Bound of any one phase of the bench.
const PHASE_LIMIT: Duration = Duration::from_secs(3600);

fn event(n: u64) -> Event {
    let ip: IpAddr = if n.is_multiple_of(2) {
        IpAddr::V4(std::net::Ipv4Addr::from(0xCB00_7100u32 + (n % 250) as u32))
    } else {
        format!("2001:db8::{:x}", n % 65_000).parse().unwrap()
    };
    let kind = if n.is_multiple_of(2) {
        EventKind::Accepted
    } else {
        EventKind::Verdict { classification: Classification::Private, reason: VerdictReason::Refused }
    };
    let mut e = Event::now("bench-sensor", kind, Direction::Inbound, ip, 16111);
    e.peer.peer_id = Some(format!("{n:032x}"));
    e.peer.user_agent = Some("/kaspad:1.0.1/kaspad:1.0.1(kaspa-ng:1.0.0)/".into());
    e.peer.protocol_version = Some(7);
    e.peer.network = Some("kaspa-mainnet".into());
    e.peer.advertised_address = Some(std::net::SocketAddr::new(ip, 16111).to_string());
    e
}

/// Stores `count` events starting at `from` (flushing every 10,000 so the queue never fills).
fn fill(store: &Store, from: u64, count: u64) {
    for n in from..from + count {
        store.record(event(n)).expect("store accepts");
        if (n - from + 1).is_multiple_of(10_000) {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
}

fn store_options() -> StoreOptions {
    StoreOptions { queue_capacity: 200_000, ..StoreOptions::default() }
}

fn settings(batch_size: usize) -> ExportSettings {
    ExportSettings { batch_size, interval: Duration::from_millis(50), ..ExportSettings::default() }
}

/// The webhook: verify, gunzip, parse, dedup, then 200.
#[derive(Default)]
struct Receiver {
    ids: Mutex<HashSet<String>>,
    bad: Mutex<u64>,
}

async fn hook(
    axum::extract::State(r): axum::extract::State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let sig = headers.get("x-signature-256").and_then(|v| v.to_str().ok()).unwrap_or("");
    if sig != signature(SECRET.as_bytes(), &body) {
        *r.bad.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let json = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::with_capacity(body.len() * 8);
        if flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).is_err() {
            return StatusCode::BAD_REQUEST;
        }
        out
    } else {
        body.to_vec()
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&json) else { return StatusCode::BAD_REQUEST };
    let Some(batch) = value["batch"].as_array() else { return StatusCode::BAD_REQUEST };
    let mut ids = r.ids.lock().unwrap();
    for e in batch {
        if let Some(id) = e["event_id"].as_str() {
            ids.insert(id.to_owned());
        }
    }
    StatusCode::OK
}

async fn start_webhook() -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

fn http_sink(url: &str, gzip: bool) -> Box<dyn Sink> {
    Box::new(
        HttpSink::new(HttpSettings {
            endpoint: url.to_owned(),
            sensor_id: "bench-sensor".into(),
            timeout: Duration::from_secs(30),
            gzip,
            credentials: ExportCredentials { hmac_secret: Some(Secret::new(SECRET)), ..Default::default() },
            tls_ca_file: None,
        })
        .unwrap(),
    )
}

fn pg_sink(pg: &postgres::Postgres) -> Box<dyn Sink> {
    Box::new(
        PostgresSink::new(PostgresSettings {
            endpoint: pg.url("127.0.0.1", "sslmode=disable"),
            timeout: Duration::from_secs(30),
            password: None,
            tls_ca_file: None,
        })
        .unwrap(),
    )
}

/// Runs the exporter until its cursor reaches `last`; returns the elapsed time.
async fn export_all(db: &Path, sink: Box<dyn Sink>, batch: usize, last: &str) -> Duration {
    let name = sink.name();
    let metrics = ExportMetrics::register(&mut Registry::default(), name, &failure_kinds());
    let started = Instant::now();
    let exporter = Exporter::start(db, sink, settings(batch), metrics.clone()).await.unwrap();
    while exporter.cursor().event_id.as_deref() != Some(last) {
        assert!(started.elapsed() < PHASE_LIMIT, "{name}: export did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    exporter.shutdown(Duration::from_secs(10)).await;
    let failures: u64 = failure_kinds()
        .into_iter()
        .map(|kind| metrics.failures.get_or_create(&sensor::metrics::SinkFailureLabels { sink: name, kind }).get())
        .sum();
    assert_eq!(failures, 0, "{name}: deliveries failed during the bench");
    elapsed
}

fn last_id(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT event_id FROM events ORDER BY rowid DESC LIMIT 1", [], |r| r.get(0)).unwrap()
}

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).map(|a| a.parse().unwrap_or_else(|_| panic!("argument {i}: {a:?} is not a number"))).unwrap_or(default)
}

async fn throughput(args: &[String]) {
    let events = arg(args, 1, 200_000);
    let batch = arg(args, 2, 500) as usize;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sensor.sqlite");
    let store = Store::open(&db, store_options(), Metrics::new().0).unwrap();
    let t = Instant::now();
    fill(&store, 0, events);
    println!("stored {events} events in SQLite in {:.1} s", t.elapsed().as_secs_f64());
    let last = last_id(&db);

    let pg = postgres::Postgres::start(postgres::PgOptions::default());
    let elapsed = export_all(&db, pg_sink(&pg), batch, &last).await;
    let rows: i64 = pg.client(None).await.query_one("SELECT count(*) FROM sensor_events", &[]).await.unwrap().get(0);
    assert_eq!(rows as u64, events, "every event is a row");
    report("postgres", events, batch, elapsed);

    for gzip in [true, false] {
        let (url, receiver) = start_webhook().await;
        // Each run exports from the start: a fresh cursor per sink name is not possible for two
        // http runs, so the second run rewinds the cursor.
        reset_cursor(&db, SINK_HTTP);
        let elapsed = export_all(&db, http_sink(&url, gzip), batch, &last).await;
        assert_eq!(receiver.ids.lock().unwrap().len() as u64, events, "every event reached the webhook");
        assert_eq!(*receiver.bad.lock().unwrap(), 0);
        report(if gzip { "http (gzip)" } else { "http (plain)" }, events, batch, elapsed);
    }
}

fn reset_cursor(db: &Path, sink: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute("DELETE FROM export_cursor WHERE sink = ?1", [sink]).unwrap();
}

fn report(sink: &str, events: u64, batch: usize, elapsed: Duration) {
    println!(
        "{sink:>12}: {events} events, batch {batch}, {:.2} s, {:.0} events/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
}

async fn drain(args: &[String]) {
    let sink_name = args.get(1).map(String::as_str).unwrap_or(SINK_POSTGRES).to_owned();
    let rate = arg(args, 2, 1000);
    let outage = arg(args, 3, 600);
    let batch = arg(args, 4, 500) as usize;
    let backlog = rate * outage;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sensor.sqlite");
    let store = Arc::new(Store::open(&db, store_options(), Metrics::new().0).unwrap());
    let t = Instant::now();
    fill(&store, 0, backlog);
    println!(
        "outage of {outage} s at {rate} events/s: {backlog} events queued in SQLite (stored in {:.1} s)",
        t.elapsed().as_secs_f64()
    );

    let pg;
    let mut webhook = None;
    let sink = if sink_name == SINK_HTTP {
        let (url, receiver) = start_webhook().await;
        webhook = Some(receiver);
        http_sink(&url, true)
    } else {
        pg = postgres::Postgres::start(postgres::PgOptions::default());
        pg_sink(&pg)
    };
    // Live traffic keeps arriving at RATE during the drain, from a thread of its own.
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(Mutex::new(backlog));
    let producer = std::thread::spawn({
        let (store, stop, produced) = (store.clone(), stop.clone(), produced.clone());
        move || {
            let start = Instant::now();
            let mut n = backlog;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < PHASE_LIMIT {
                let due = backlog + (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due {
                    store.record(event(n)).expect("store accepts");
                    n += 1;
                }
                *produced.lock().unwrap() = n;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });

    let name = sink.name();
    let metrics = ExportMetrics::register(&mut Registry::default(), name, &failure_kinds());
    let started = Instant::now();
    let exporter = Exporter::start(&db, sink, settings(batch), metrics.clone()).await.unwrap();
    // Caught up: the cursor passed an event stored after the drain began, and what is left is
    // at most one batch (the live tail).
    let mut caught_up = None;
    while caught_up.is_none() {
        assert!(started.elapsed() < PHASE_LIMIT, "the drain did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let exported = metrics.events.get_or_create(&sensor::metrics::SinkLabels { sink: name }).get();
        if exported > backlog && metrics.backlog_events.get() <= batch as i64 {
            caught_up = Some((started.elapsed(), exported));
        }
    }
    let (elapsed, exported) = caught_up.unwrap();
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    exporter.shutdown(Duration::from_secs(30)).await;
    let arrived_live = *produced.lock().unwrap() - backlog;
    println!(
        "{name}: backlog of {backlog} drained in {:.1} s while {arrived_live} live events arrived \
         ({:.0} events/s exported, {exported} exported when caught up)",
        elapsed.as_secs_f64(),
        exported as f64 / elapsed.as_secs_f64()
    );
    if let Some(r) = webhook {
        assert!(r.ids.lock().unwrap().len() as u64 >= backlog);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the figures' arguments follow `--`.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run of every
    // mode then (its completion checks hold), so the benchmark cannot rot unnoticed.
    if !std::env::args().any(|a| a == "--bench") {
        let words = |w: &str| w.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        runtime.block_on(throughput(&words("throughput 2000 200")));
        runtime.block_on(drain(&words("drain postgres 100 5 100")));
        runtime.block_on(drain(&words("drain http 100 5 100")));
        return;
    }
    match args.first().map(String::as_str) {
        Some("throughput") | None => runtime.block_on(throughput(&args)),
        Some("drain") => runtime.block_on(drain(&args)),
        Some(other) => panic!("unknown mode {other:?}: throughput | drain"),
    }
}
