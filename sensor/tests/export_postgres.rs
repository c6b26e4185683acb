//! The PostgreSQL export sink against a real server (Debian's `postgresql`, started by the test
//! on a loopback port with a throwaway data directory; see `support/postgres.rs`):
//! - every stored event arrives exactly once, through a server outage (stop → connect failures
//!   counted → start → resumed), and a batch sent again inserts nothing;
//! - the schema is migrated once even by sensors racing each other, and a newer schema is
//!   refused;
//! - hostile text (NUL in a user agent) is stored, not a poison batch;
//! - SCRAM password authentication, and a wrong password counted as a refused `database` failure;
//! - TLS with a private CA (`export.tls_ca_file`) and a certificate failure counted as `tls`.
//!
//! Every wait is bounded.

mod support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use sensor::export::cursor::CursorDb;
use sensor::export::postgres::{PostgresSettings, PostgresSink, schema_version};
use sensor::export::{ExportSettings, Exporter, FailureKind, Sink, failure_kinds};
use sensor::metrics::{ExportMetrics, Metrics, SinkFailureLabels};
use sensor::store::{Store, StoreOptions};
use sensor_core::config::{SINK_POSTGRES, Secret};
use sensor_core::event::{Direction, Event, EventKind};
use support::postgres::{PgOptions, Postgres};

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "pg-test-password";

fn event(n: usize) -> Event {
    let ip: IpAddr = if n.is_multiple_of(2) { "203.0.113.9".parse().unwrap() } else { "2001:db8::9".parse().unwrap() };
    let mut e = Event::now("export-pg", EventKind::Accepted, Direction::Inbound, ip, (n % 60_000) as u16 + 1);
    e.peer.peer_id = Some(format!("{n:032x}"));
    e.peer.user_agent = Some("/kaspad:2.1.0/kaspad:2.1.0/".into());
    e.peer.protocol_version = Some(7);
    e
}

fn add(store: &Store, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let e = event(i);
        ids.push(e.event_id.hyphenated().to_string());
        store.record(e).unwrap();
    }
    store.flush().unwrap();
    ids
}

fn settings(batch_size: usize) -> ExportSettings {
    ExportSettings {
        batch_size,
        interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(300),
    }
}

fn sink(endpoint: String, password: Option<&str>, ca: Option<std::path::PathBuf>) -> PostgresSink {
    PostgresSink::new(PostgresSettings {
        endpoint,
        timeout: Duration::from_secs(5),
        password: password.map(Secret::new),
        tls_ca_file: ca,
    })
    .unwrap()
}

fn failures(m: &ExportMetrics, kind: &'static str) -> u64 {
    m.failures.get_or_create(&SinkFailureLabels { sink: SINK_POSTGRES, kind }).get()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored_ids(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query("SELECT event_id::text FROM sensor_events ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_through_a_server_outage() {
    let pg = Postgres::start(PgOptions { password: Some(PASSWORD.into()), tls: None });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sensor.sqlite");
    let store = Store::open(&db, StoreOptions::default(), Metrics::new().0).unwrap();
    let mut ids = add(&store, 0, 1_000);

    let metrics = ExportMetrics::register(&mut Registry::default(), SINK_POSTGRES, &failure_kinds());
    let endpoint = pg.url("127.0.0.1", "sslmode=disable");
    let exporter =
        Exporter::start(&db, Box::new(sink(endpoint.clone(), Some(PASSWORD), None)), settings(100), metrics.clone())
            .await
            .unwrap();
    let first = ids.last().unwrap().clone();
    wait_for("the first backlog", || exporter.cursor().event_id.as_deref() == Some(first.as_str())).await;

    // Outage: the server goes away; events keep being stored and wait in SQLite.
    pg.stop();
    ids.extend(add(&store, 1_000, 300));
    wait_for("connect failures during the outage", || failures(&metrics, "connect") >= 2).await;
    assert_eq!(exporter.cursor().event_id.as_deref(), Some(first.as_str()), "nothing acknowledged while down");
    assert!(metrics.backlog_events.get() >= 1, "the outage's events are the backlog");

    pg.start_again();
    let last = ids.last().unwrap().clone();
    wait_for("the export to resume", || exporter.cursor().event_id.as_deref() == Some(last.as_str())).await;
    exporter.shutdown(WAIT).await;

    let client = pg.client(Some(PASSWORD)).await;
    assert_eq!(stored_ids(&client).await, sorted(&ids), "every event exactly once");
    assert_eq!(metrics.backlog_events.get(), 0);
    let row = client
        .query_one(
            "SELECT host(peer_ip), peer_port, user_agent, protocol_version, kind, result, \
             timestamp <= now() FROM sensor_events WHERE event_id = $1::text::uuid",
            &[&ids[1]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "2001:db8::9", "inet keeps IPv6");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("/kaspad:2.1.0/kaspad:2.1.0/"));
    assert_eq!(row.get::<_, Option<i64>>(3), Some(7));
    assert_eq!(row.get::<_, String>(4), "connection");
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("accepted"));
    assert!(row.get::<_, bool>(6));

    // A crash between the insert and the cursor write resends batches: nothing is duplicated.
    tokio::task::spawn_blocking({
        let db = db.clone();
        move || CursorDb::open(&db, SINK_POSTGRES).unwrap().save(&Default::default()).unwrap()
    })
    .await
    .unwrap();
    let exporter = Exporter::start(&db, Box::new(sink(endpoint, Some(PASSWORD), None)), settings(250), metrics.clone())
        .await
        .unwrap();
    wait_for("the replay", || exporter.cursor().event_id.as_deref() == Some(last.as_str())).await;
    exporter.shutdown(WAIT).await;
    assert_eq!(stored_ids(&client).await, sorted(&ids), "a replayed backlog inserts nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_migrated_once_by_racing_sensors_and_a_newer_one_is_refused() {
    let pg = Postgres::start(PgOptions::default());
    let endpoint = pg.url("127.0.0.1", "sslmode=disable");
    let batches: Vec<Vec<sensor::store::EventRow>> = (0..4).map(|i| rows(&[event(i)])).collect();
    // Four sensors connect (and migrate) at once.
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move { sink(endpoint, None, None).send(&batch).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every racing sensor delivers");
    }
    let client = pg.client(None).await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM sensor_schema_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=schema_version()).collect::<Vec<_>>());
    assert_eq!(stored_ids(&client).await.len(), 4);

    // A newer sensor migrated this database: an older one refuses to write it.
    client
        .execute(
            "INSERT INTO sensor_schema_migrations (version, name) VALUES ($1, 'from the future')",
            &[&(schema_version() + 1)],
        )
        .await
        .unwrap();
    let err = sink(endpoint, None, None).send(&rows(&[event(9)])).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Database);
    assert!(err.refused && err.message.contains("newer"), "{err}");
    assert_eq!(stored_ids(&client).await.len(), 4, "nothing written by the older sensor");
}

/// `EventRow`s as the exporter reads them: through a real store.
fn rows(events: &[Event]) -> Vec<sensor::store::EventRow> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.sqlite");
    let store = Store::open(&db, StoreOptions::default(), Metrics::new().0).unwrap();
    for e in events {
        store.record(e.clone()).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    CursorDb::open(&db, "rows")
        .unwrap()
        .batch(&Default::default(), 10_000)
        .unwrap()
        .into_iter()
        .map(|p| p.event)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_stored_and_a_batch_sent_twice_inserts_nothing() {
    let pg = Postgres::start(PgOptions::default());
    let mut e = event(1);
    e.peer.user_agent = Some(format!("/evil\0agent/{}", "é".repeat(4_000)));
    let batch = rows(&[e, event(2), event(3)]);
    let mut s = sink(pg.url("127.0.0.1", "sslmode=disable"), None, None);
    s.send(&batch).await.expect("a NUL in a user agent does not block the batch");
    s.send(&batch).await.expect("the same batch again is acknowledged");
    let client = pg.client(None).await;
    assert_eq!(stored_ids(&client).await.len(), 3, "ON CONFLICT DO NOTHING: no duplicate rows");
    let agent: String = client
        .query_one("SELECT user_agent FROM sensor_events WHERE event_id = $1::text::uuid", &[&batch[0].event_id])
        .await
        .unwrap()
        .get(0);
    assert!(agent.starts_with("/evil\u{FFFD}agent/é"), "{:?}", &agent[..20]);
    assert_eq!(agent.chars().count(), "/evil\u{FFFD}agent/".chars().count() + 4_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_refused_database_failure_and_a_dead_server_a_connect_failure() {
    let pg = Postgres::start(PgOptions { password: Some(PASSWORD.into()), tls: None });
    let batch = rows(&[event(1)]);
    let err = sink(pg.url("127.0.0.1", "sslmode=disable"), Some("wrong"), None).send(&batch).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Database, "{err}");
    assert!(err.refused && err.message.contains("28P01"), "{err}");
    assert!(!err.message.contains("wrong"), "the password is not echoed: {err}");
    let port = pg.port;
    drop(pg);
    let endpoint = format!("postgres://sensor@127.0.0.1:{port}/postgres?sslmode=disable");
    let err = sink(endpoint, Some(PASSWORD), None).send(&batch).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Connect, "{err}");
}

/// A private CA and a server certificate for `localhost` signed by it: (CA PEM, cert PEM, key PEM).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "p2p-sensor test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_is_verified() {
    let (ca, cert, key) = private_ca();
    let pg = Postgres::start(PgOptions { password: Some(PASSWORD.into()), tls: Some((cert, key)) });
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let batch = rows(&[event(1), event(2)]);

    // Without the CA the server's certificate is unknown: a `tls` failure, nothing written.
    let err = sink(pg.url("localhost", "sslmode=require"), Some(PASSWORD), None).send(&batch).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Tls, "{err}");
    // With it, the same delivery works, over TLS.
    let mut s = sink(pg.url("localhost", "sslmode=require"), Some(PASSWORD), Some(ca_file.clone()));
    s.send(&batch).await.expect("delivery over verified TLS");
    let client = pg.client(Some(PASSWORD)).await;
    assert_eq!(stored_ids(&client).await, sorted(&batch.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>()));
    let tls_sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND application_name = 'p2p-sensor'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tls_sessions, 1, "the sensor's session is encrypted");
    // The certificate names `localhost`, not 127.0.0.1: the host name is verified too.
    let err =
        sink(pg.url("127.0.0.1", "sslmode=require"), Some(PASSWORD), Some(ca_file)).send(&batch).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Tls, "{err}");
    let unique: HashSet<String> = stored_ids(&client).await.into_iter().collect();
    assert_eq!(unique.len(), 2);
}

/// `[export]` from the environment, as a pod sets it, builds a working sink: the password comes
/// from the variable `password_env` names, and the config never holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_sink_takes_its_password_from_the_named_variable() {
    use sensor_core::config::{CliOverrides, Config};
    let pg = Postgres::start(PgOptions { password: Some(PASSWORD.into()), tls: None });
    let env = [
        ("SENSOR_EXPORT_SINK", "postgres".to_owned()),
        ("SENSOR_EXPORT_ENDPOINT", pg.url("127.0.0.1", "sslmode=disable")),
        ("SENSOR_EXPORT_PASSWORD_ENV", "EXPORT_PG_PASSWORD".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let (config, _) = Config::load(None, env, &CliOverrides::default()).unwrap();
    assert!(!format!("{config:?}").contains(PASSWORD));
    let credentials =
        config.export.credentials(|name| (name == "EXPORT_PG_PASSWORD").then(|| PASSWORD.to_owned())).unwrap();
    let mut sink = sensor::export::sink_from_config(&config, credentials).unwrap().expect("a sink");
    assert_eq!(sink.name(), SINK_POSTGRES);
    let batch = rows(&[event(7)]);
    sink.send(&batch).await.expect("delivery with the password from the environment");
    let client = pg.client(Some(PASSWORD)).await;
    assert_eq!(stored_ids(&client).await, vec![batch[0].event_id.clone()]);
}
