//! The HTTP export sink against a webhook on 127.0.0.1 that fails for a while and then recovers:
//! connection refused (nothing listening yet), 503 × 3, one request that hangs past the timeout,
//! one connection closed without an answer, one 400 — then 200s. The receiver checks the bearer
//! token and the HMAC signature over the exact (gzipped) bytes, and deduplicates by `event_id`.
//! Every event must arrive exactly once after dedup, in order; the cursor ends on the last event;
//! a restart after a simulated crash (cursor one batch behind) resends at most that batch.
//! Also: the NDJSON sink to a file, one valid JSON object per line, resuming after the cursor.
//! Every wait is bounded.

use std::collections::HashSet;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use sensor::export::cursor::{Cursor, CursorDb};
use sensor::export::http::{HttpSettings, HttpSink, signature};
use sensor::export::ndjson::NdjsonSink;
use sensor::export::{ExportSettings, Exporter, FailureKind, Sink, failure_kinds};
use sensor::metrics::{ExportMetrics, Metrics, SinkFailureLabels};
use sensor::store::{Store, StoreOptions};
use sensor_core::config::{ExportCredentials, Secret};
use sensor_core::event::{Direction, Event, EventKind};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "test-bearer-token";
const SECRET: &str = "test-hmac-secret";
const BATCH: usize = 7;
const TIMEOUT: Duration = Duration::from_millis(300);

fn event(n: usize) -> Event {
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    let mut e = Event::now("export-it", EventKind::Accepted, Direction::Inbound, ip, (n % 60_000) as u16 + 1);
    e.peer.peer_id = Some(format!("{n:032x}"));
    e.peer.user_agent = Some("/kaspad:2.1.0/kaspad:2.1.0/".into());
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

fn settings() -> ExportSettings {
    ExportSettings {
        batch_size: BATCH,
        interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(200),
    }
}

/// What the webhook saw.
#[derive(Default)]
struct Received {
    requests: usize,
    /// `event_id`s of accepted batches, in arrival order, duplicates included.
    ids: Vec<String>,
    /// Requests whose token, signature, encoding or JSON was wrong.
    rejected: Vec<String>,
}

impl Received {
    fn unique_in_order(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect()
    }
}

/// Reads one HTTP/1.1 request (headers + Content-Length body).
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((headers, body))
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str) {
    let text = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The webhook: request 1..=3 → 503, 4 → hangs past the client's timeout, 5 → connection
/// closed without an answer, 6 → 400, then verified 200s.
async fn serve(listener: TcpListener, received: Arc<Mutex<Received>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let received = received.clone();
        tokio::spawn(async move {
            let Some((headers, body)) = read_request(&mut stream).await else { return };
            let n = {
                let mut r = received.lock().unwrap();
                r.requests += 1;
                r.requests
            };
            match n {
                1..=3 => return respond(&mut stream, "503 Service Unavailable").await,
                4 => {
                    tokio::time::sleep(TIMEOUT * 4).await;
                    return respond(&mut stream, "200 OK").await;
                }
                5 => return drop(stream),
                6 => return respond(&mut stream, "400 Bad Request").await,
                _ => {}
            }
            match verify(&headers, &body) {
                Ok(ids) => {
                    received.lock().unwrap().ids.extend(ids);
                    respond(&mut stream, "200 OK").await;
                }
                Err(why) => {
                    received.lock().unwrap().rejected.push(why);
                    respond(&mut stream, "401 Unauthorized").await;
                }
            }
        });
    }
}

/// Checks token, signature (over the bytes received), encoding and shape; returns the ids.
fn verify(headers: &[(String, String)], body: &[u8]) -> Result<Vec<String>, String> {
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return Err(format!("bad authorization {:?}", header("authorization")));
    }
    let expected = signature(SECRET.as_bytes(), body);
    if header("x-signature-256") != Some(expected.as_str()) {
        return Err(format!("bad signature {:?}", header("x-signature-256")));
    }
    if header("content-type") != Some("application/json") || header("content-encoding") != Some("gzip") {
        return Err("bad content headers".into());
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut json).map_err(|e| format!("gunzip: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| format!("json: {e}"))?;
    if value["sensor_id"] != "it-sensor" {
        return Err("bad sensor_id".into());
    }
    let batch = value["batch"].as_array().ok_or("no batch")?;
    batch.iter().map(|e| e["event_id"].as_str().map(str::to_owned).ok_or_else(|| "no event_id".to_owned())).collect()
}

/// A private CA and a `localhost` server certificate it signed: (CA PEM, TLS server config).
fn tls_server() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca_cert, &ca_key).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_export_verifies_the_server_against_the_configured_ca() {
    let (ca, server_config) = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Received::default()));
    let server = tokio::spawn({
        let received = received.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                // A client that does not trust us aborts the handshake: nothing to serve.
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                let Some((headers, body)) = read_request(&mut tls).await else { continue };
                match verify(&headers, &body) {
                    Ok(ids) => received.lock().unwrap().ids.extend(ids),
                    Err(why) => received.lock().unwrap().rejected.push(why),
                }
                respond(&mut tls, "200 OK").await;
            }
        }
    });
    let dbdir = tempfile::tempdir().unwrap();
    let store = Store::open(&dbdir.path().join("s.sqlite"), StoreOptions::default(), Metrics::new().0).unwrap();
    add(&store, 0, 3);
    let batch: Vec<_> = CursorDb::open(&dbdir.path().join("s.sqlite"), "http")
        .unwrap()
        .batch(&Cursor::default(), 10)
        .unwrap()
        .into_iter()
        .map(|p| p.event)
        .collect();
    let https = |ca_file: Option<std::path::PathBuf>| {
        HttpSink::new(HttpSettings {
            endpoint: format!("https://localhost:{port}/hook"),
            sensor_id: "it-sensor".into(),
            timeout: Duration::from_secs(10),
            gzip: true,
            credentials: ExportCredentials {
                bearer_token: Some(Secret::new(TOKEN)),
                hmac_secret: Some(Secret::new(SECRET)),
                password: None,
            },
            tls_ca_file: ca_file,
        })
        .unwrap()
    };
    let err = https(None).send(&batch).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Tls, "the web roots do not know the private CA: {err}");
    https(Some(ca_file)).send(&batch).await.expect("delivery over verified TLS");
    let r = received.lock().unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let want: Vec<String> = batch.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(r.ids, want, "one delivery, over TLS, with token and signature intact");
    server.abort();
}

fn http_sink(addr: SocketAddr) -> Box<dyn Sink> {
    Box::new(
        HttpSink::new(HttpSettings {
            endpoint: format!("http://{addr}/hook"),
            sensor_id: "it-sensor".into(),
            timeout: TIMEOUT,
            gzip: true,
            credentials: ExportCredentials {
                bearer_token: Some(Secret::new(TOKEN)),
                hmac_secret: Some(Secret::new(SECRET)),
                password: None,
            },
            tls_ca_file: None,
        })
        .unwrap(),
    )
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn failures(m: &ExportMetrics, kind: &'static str) -> u64 {
    m.failures.get_or_create(&SinkFailureLabels { sink: "http", kind }).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_survives_an_outage_and_delivers_every_event_once_after_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sensor.sqlite");
    let store = Store::open(&db, StoreOptions::default(), Metrics::new().0).unwrap();
    let mut ids = add(&store, 0, 40);

    // Nothing listens yet: connection refused until the webhook starts.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut registry = Registry::default();
    let metrics = ExportMetrics::register(&mut registry, "http", &failure_kinds());
    let exporter = Exporter::start(&db, http_sink(addr), settings(), metrics.clone()).await.unwrap();
    wait_for("connection-refused failures", || failures(&metrics, "connect") >= 2).await;
    assert_eq!(exporter.cursor(), Cursor::default(), "nothing acknowledged yet");

    let received = Arc::new(Mutex::new(Received::default()));
    let server = tokio::spawn(serve(TcpListener::bind(addr).await.unwrap(), received.clone()));
    // Events recorded during the outage are exported too.
    ids.extend(add(&store, 40, 10));
    let last = ids.last().unwrap().clone();
    wait_for("the cursor to reach the last event", || exporter.cursor().event_id.as_deref() == Some(last.as_str()))
        .await;
    let cursor = exporter.shutdown(WAIT).await;
    assert_eq!(cursor.event_id.as_deref(), Some(last.as_str()));
    {
        let r = received.lock().unwrap();
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert_eq!(r.unique_in_order(), ids, "every event once after dedup, in order");
        assert_eq!(r.ids.len(), ids.len(), "no batch was delivered twice without a failure");
    }
    assert_eq!(failures(&metrics, "status_5xx"), 3);
    assert_eq!(failures(&metrics, "timeout"), 1);
    assert_eq!(failures(&metrics, "status_4xx"), 1);
    assert!(failures(&metrics, "io") >= 1, "the closed connection");
    assert_eq!(metrics.backlog_events.get(), 0);
    assert_eq!(metrics.lag_seconds.get(), 0.0);

    // A crash between the sink's 200 and the cursor write: the cursor is one batch behind.
    let behind = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            let c = CursorDb::open(&db, "http").unwrap();
            let batch = c.batch(&Cursor::default(), ids_len_minus_batch()).unwrap();
            let behind = Cursor::from(batch.last().unwrap());
            c.save(&behind).unwrap();
            behind
        }
    })
    .await
    .unwrap();
    assert_ne!(behind.event_id.as_deref(), Some(last.as_str()));
    let before = received.lock().unwrap().ids.len();
    ids.extend(add(&store, 50, 5));
    let last = ids.last().unwrap().clone();
    let exporter = Exporter::start(&db, http_sink(addr), settings(), metrics.clone()).await.unwrap();
    wait_for("the restarted exporter to catch up", || exporter.cursor().event_id.as_deref() == Some(last.as_str()))
        .await;
    exporter.shutdown(WAIT).await;
    let r = received.lock().unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(r.unique_in_order(), ids, "dedup leaves every event exactly once");
    let resent = r.ids.len() - before - 5;
    assert_eq!(resent, BATCH, "only the batch after the rewound cursor is resent");
    server.abort();
}

/// 50 events stored before the rewind; the cursor goes back one batch.
fn ids_len_minus_batch() -> usize {
    50 - BATCH
}

fn ndjson_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("every line is one JSON object");
            assert_eq!(v["sensor_id"], "export-it");
            assert!(v.get("timestamp").is_some() && v.get("probe_attempts").is_some(), "{line}");
            v["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_export_writes_one_line_per_event_and_resumes_after_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sensor.sqlite");
    let out = dir.path().join("out/events.ndjson");
    let store = Store::open(&db, StoreOptions::default(), Metrics::new().0).unwrap();
    let mut ids = add(&store, 0, 12);
    let metrics = ExportMetrics::register(&mut Registry::default(), "ndjson", &failure_kinds());
    let sink = Box::new(NdjsonSink::open(out.to_str().unwrap()).unwrap());
    let exporter = Exporter::start(&db, sink, settings(), metrics.clone()).await.unwrap();
    let last = ids.last().unwrap().clone();
    wait_for("ndjson export", || exporter.cursor().event_id.as_deref() == Some(last.as_str())).await;
    exporter.shutdown(WAIT).await;
    assert_eq!(ndjson_ids(&out), ids);

    // Restart: only the new events are appended.
    ids.extend(add(&store, 12, 4));
    let last = ids.last().unwrap().clone();
    let sink = Box::new(NdjsonSink::open(out.to_str().unwrap()).unwrap());
    let exporter = Exporter::start(&db, sink, settings(), metrics).await.unwrap();
    wait_for("ndjson export after restart", || exporter.cursor().event_id.as_deref() == Some(last.as_str())).await;
    exporter.shutdown(WAIT).await;
    assert_eq!(ndjson_ids(&out), ids);
}

fn listen_config(dir: &Path, export: &[(&str, &str)]) -> sensor_core::config::Config {
    use sensor_core::config::{CliOverrides, Config};
    use sensor_core::network::Network;
    let overrides = CliOverrides {
        network: Some(Network::Devnet),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_owned()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..CliOverrides::default()
    };
    let mut env = vec![("SENSOR_STORAGE_FLUSH_INTERVAL_MS".to_owned(), "10".to_owned())];
    env.extend(export.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(None, env, &overrides).unwrap().0
}

async fn get_metrics(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut text)).await.unwrap().unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_listen_exports_stored_events_and_drains_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.ndjson");
    let config = listen_config(
        dir.path(),
        &[
            ("SENSOR_EXPORT_SINK", "ndjson"),
            ("SENSOR_EXPORT_ENDPOINT", out.to_str().unwrap()),
            ("SENSOR_EXPORT_INTERVAL_MS", "100"),
        ],
    );
    let sensor = sensor::listen::Sensor::start(&config).await.unwrap();
    let store = &sensor.context().store;
    let first = event(1);
    let first_id = first.event_id.hyphenated().to_string();
    store.record(first).unwrap();
    wait_for("the first event in the file", || {
        out.exists() && std::fs::read_to_string(&out).unwrap().contains(&first_id)
    })
    .await;
    let mut metrics = String::new();
    let deadline = Instant::now() + WAIT;
    while !metrics.contains("sensor_export_events_total{sink=\"ndjson\"} 1") {
        assert!(Instant::now() < deadline, "export metrics missing:\n{metrics}");
        metrics = get_metrics(sensor.metrics_address).await;
    }
    assert!(metrics.contains("sensor_export_failures_total{sink=\"ndjson\",kind=\"io\"} 0"), "{metrics}");
    assert!(metrics.contains("sensor_export_backlog_events 0"), "{metrics}");
    // Recorded just before shutdown: the store flushes it, then the exporter drains it.
    let last = event(2);
    let last_id = last.event_id.hyphenated().to_string();
    store.record(last).unwrap();
    sensor.shutdown().await.unwrap();
    assert_eq!(ndjson_ids(&out)[1..], [last_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_listen_refuses_to_start_without_its_export_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = listen_config(
        dir.path(),
        &[
            ("SENSOR_EXPORT_SINK", "http"),
            ("SENSOR_EXPORT_ENDPOINT", "http://127.0.0.1:9/hook"),
            ("SENSOR_EXPORT_HMAC_SECRET_ENV", "EXPORT_IT_SURELY_UNSET_SECRET"),
        ],
    );
    match sensor::listen::Sensor::start(&config).await {
        Err(sensor::SensorError::Config { key, reason }) => {
            assert_eq!(key, "export.hmac_secret_env");
            assert!(reason.contains("EXPORT_IT_SURELY_UNSET_SECRET"), "{reason}");
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("started without the secret"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_listen_shutdown_drains_events_the_exporter_has_not_polled_yet() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.ndjson");
    // The exporter's first (empty) poll is followed by a 10-minute pause: only the shutdown drain
    // can export these.
    let config = listen_config(
        dir.path(),
        &[
            ("SENSOR_EXPORT_SINK", "ndjson"),
            ("SENSOR_EXPORT_ENDPOINT", out.to_str().unwrap()),
            ("SENSOR_EXPORT_INTERVAL_MS", "600000"),
        ],
    );
    let sensor = sensor::listen::Sensor::start(&config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let e = event(n);
        ids.push(e.event_id.hyphenated().to_string());
        sensor.context().store.record(e).unwrap();
    }
    let started = Instant::now();
    sensor.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(ndjson_ids(&out), ids);
}
