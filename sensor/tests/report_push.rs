//! The real `sensor` binary pushes its cumulative report to an in-test `Collector` (tonic, on
//! loopback): the report equals what the sensor's SQLite holds, survives a collector outage
//! (nothing lost, sequence keeps growing, the outage is counted on `/metrics`), follows the
//! collector's `next_report_after_ms`, and a final report is sent on SIGTERM.

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sensor::{
    kaspa::{version::LocalVersion, wire::WireConnection},
    store::query::Reader,
};
use sensor_core::network::Network;
use sensor_report::{
    PeerIdSketch,
    v1::{PeerSummary, Report},
};
use support::collector::TestCollector;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::server::TcpIncoming;
use uuid::Uuid;

const INTERVAL_MS: u64 = 1000;
const WAIT: Duration = Duration::from_secs(30);

struct RunningCollector {
    reports: Arc<Mutex<Vec<Report>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningCollector {
    /// Serves on `addr`, retrying the bind for a few seconds (the previous server's socket).
    async fn start(addr: SocketAddr, next_report_after_ms: u64) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("collector bind {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("collector cannot bind {addr}: {e}"),
            }
        };
        let reports = Arc::new(Mutex::new(Vec::new()));
        let service = TestCollector { reports: reports.clone(), next_report_after_ms }.service();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("collector server");
        });
        Self { reports, stop, task }
    }

    fn reports(&self) -> Vec<Report> {
        self.reports.lock().unwrap().clone()
    }

    /// Graceful stop: GOAWAY to open connections, listener closed.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("collector stops within 10 s")
            .expect("collector task");
    }
}

/// The sensor process; killed on drop.
struct SensorProcess {
    child: Child,
    log: PathBuf,
}

impl SensorProcess {
    fn log_tail(&self) -> String {
        support::process::tail_file(&self.log, 60)
    }
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn start_sensor(dir: &Path, p2p: SocketAddr, metrics: SocketAddr, collector: SocketAddr) -> SensorProcess {
    let config = dir.join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            "network = \"devnet\"\ndata_dir = \"{data}\"\nsensor_id = \"report-test\"\n\
             [listen]\naddress = \"{p2p}\"\nhandshake_timeout_ms = 2000\n\
             [classify]\nallow_private_targets = true\nprobe_timeout_ms = 500\nprobe_retry_delay_ms = 100\n\
             [storage]\nflush_interval_ms = 10\n[metrics]\nlisten = \"{metrics}\"\n\
             [report]\nendpoint = \"http://{collector}\"\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = 500\n\
             owner_namespace = \"lab\"\nowner_name = \"fleet\"\n",
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    let log = dir.join("sensor.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args(["listen", "--config"])
        .arg(&config)
        // The operator sets the sender to the pod name through the environment.
        .env("SENSOR_REPORT_SENDER", "fleet-pod-0")
        .env("RUST_LOG", "info,sensor=debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn the sensor binary");
    SensorProcess { child, log }
}

/// Polls `f` every 100 ms until it returns `Some`, at most `WAIT` and 600 rounds.
async fn eventually<T>(what: &str, sensor: &SensorProcess, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    for _ in 0..600 {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}\n{}", sensor.log_tail());
}

fn metrics_value(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (status, body) = support::http::get(addr, "/metrics", Duration::from_secs(2)).ok()?;
    (status == 200).then(|| support::http::metric(&body, name, labels)).flatten()
}

/// Peer id number `n` of this test. Fixed, not random, so that the HyperLogLog estimate of the
/// report is deterministic: six random ids share one of the sketch's 4096 registers about 0.4 %
/// of the time, and the estimate is then 5. The ids 1-5 and 99 hash (SHA-256) to six different
/// registers, so the estimate is exactly 6 on every run; the test checks that from the ids it
/// reads back from the database, so another choice of ids cannot bring a collision back silently.
fn peer_uuid(n: u8) -> Uuid {
    Uuid::from_u128(u128::from(n))
}

/// Handshakes as a devnet peer with id `id` from `src` with `user_agent` and keeps the
/// connection served.
async fn peer(p2p: SocketAddr, src: IpAddr, id: Uuid, user_agent: &str) -> JoinHandle<()> {
    let mut version = LocalVersion { network: Network::Devnet, id, address: None }.message();
    version.user_agent = user_agent.to_owned();
    let mut conn = WireConnection::connect(p2p, Some(src), Duration::from_secs(5)).await.expect("connect");
    conn.handshake(version, Duration::from_secs(5)).await.expect("handshake");
    tokio::spawn(async move {
        let _ = conn.serve().await;
    })
}

/// What the sensor's database holds, in report terms.
#[derive(Debug, PartialEq)]
struct Expected {
    counts: [u64; 5], // distinct, public, private, unknown, unclassified
    connections: (u64, u64),
    top_user_agents: Vec<(String, u64)>,
    peer_ids: Vec<String>,
}

fn expected_from_db(db: &Path) -> Option<Expected> {
    let reader = Reader::open(db).ok()?;
    let p = reader.peer_counts().ok()?;
    let e = reader.event_counts().ok()?;
    let mut peer_ids = Vec::new();
    reader.for_each_peer_id(|id| peer_ids.push(id.to_owned())).ok()?;
    Some(Expected {
        counts: [p.total, p.public, p.private, p.unknown, p.unclassified],
        connections: (e.accepted, e.rejected),
        top_user_agents: reader.top_user_agents(sensor_report::MAX_TOP_USER_AGENTS).ok()?,
        peer_ids,
    })
}

fn expected_from_report(r: &Report) -> Expected {
    let p = r.peers.as_ref().expect("peer summary");
    let mut peer_ids: Vec<String> = p.peer_ids.iter().map(hex::encode).collect();
    peer_ids.sort();
    Expected {
        counts: [p.distinct_peers, p.public, p.private, p.unknown, p.unclassified],
        connections: (p.connections_accepted, p.connections_rejected),
        top_user_agents: p.top_user_agents.iter().map(|u| (u.user_agent.clone(), u.peers)).collect(),
        peer_ids,
    }
}

/// The peer summary, sketch included: its wire form is canonical (same set, same bytes).
fn summary(r: &Report) -> PeerSummary {
    r.peers.clone().expect("peer summary")
}

fn sketch(r: &Report) -> PeerIdSketch {
    PeerIdSketch::from_bytes(&r.peers.as_ref().expect("peer summary").peer_id_sketch).expect("sketch")
}

fn sketch_estimate(r: &Report) -> u64 {
    sketch(r).estimate()
}

/// The sketch of `peer_ids` (32 hex characters each, as the database holds them).
fn sketch_of(peer_ids: &[String]) -> PeerIdSketch {
    let mut sketch = PeerIdSketch::new();
    for text in peer_ids {
        let mut id = [0u8; 16];
        hex::decode_to_slice(text, &mut id).expect("a 16-byte peer id");
        sketch.insert(&id);
    }
    sketch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_match_the_database_and_survive_a_collector_outage() {
    let dir = tempfile::tempdir().unwrap();
    let collector_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let collector = RunningCollector::start(collector_addr, 0).await;
    let (p2p, metrics) =
        (SocketAddr::from(([127, 0, 0, 1], free_port())), SocketAddr::from(([127, 0, 0, 1], free_port())));
    let mut sensor = start_sensor(dir.path(), p2p, metrics, collector_addr);
    let db = dir.path().join("data/sensor.sqlite");
    eventually("/readyz 200", &sensor, || {
        let ready = support::http::get(metrics, "/readyz", Duration::from_secs(1)).ok()?.0 == 200;
        ready.then_some(())
    })
    .await;

    // Five accepted peers with distinct ids and two user agents, one refused (wrong network).
    let mut peers = Vec::new();
    for (i, ua) in ["/peer-a/", "/peer-a/", "/peer-a/", "/peer-b/", "/peer-b/"].into_iter().enumerate() {
        let n = i as u8 + 1;
        peers.push(peer(p2p, IpAddr::from([127, 0, 9, n]), peer_uuid(n), ua).await);
    }
    let mut simnet = LocalVersion { network: Network::Simnet, id: peer_uuid(99), address: None }.message();
    simnet.user_agent = "/peer-c/".into();
    let mut wrong =
        WireConnection::connect(p2p, Some(IpAddr::from([127, 0, 9, 99])), Duration::from_secs(5)).await.unwrap();
    assert!(wrong.handshake(simnet, Duration::from_secs(5)).await.is_err(), "a simnet peer is refused");

    // Settled: 6 peers (the refused one never classified), every accepted one has a verdict.
    let expected = eventually("the database to settle", &sensor, || {
        let e = expected_from_db(&db)?;
        (e.counts[0] == 6 && e.counts[4] == 1 && e.connections == (5, 1)).then_some(e)
    })
    .await;
    let settled_at = now_ms();
    let agents = [("/peer-a/", 3), ("/peer-b/", 2), ("/peer-c/", 1)].map(|(ua, n)| (ua.to_owned(), n));
    assert_eq!(expected.top_user_agents, agents, "distinct peers by their user agent");
    let ids: Vec<String> = [1, 2, 3, 4, 5, 99].map(|n| peer_uuid(n).simple().to_string()).into();
    assert_eq!(expected.peer_ids, ids, "the database holds the peers' ids");
    let db_sketch = sketch_of(&expected.peer_ids);
    assert_eq!(db_sketch.estimate(), 6, "the fixed ids fall into six different sketch registers");

    // A report read after that point carries exactly the database's content.
    let before_outage = eventually("a report of the settled database", &sensor, || {
        collector.reports().into_iter().rfind(|r| r.generated_at_unix_ms > settled_at)
    })
    .await;
    assert_eq!(expected_from_report(&before_outage), expected);
    let p = before_outage.peers.as_ref().unwrap();
    assert!(p.peer_ids_complete);
    assert_eq!(sketch(&before_outage), db_sketch, "the report's sketch is the sketch of the database's ids");
    assert_eq!(sketch_estimate(&before_outage), 6);
    let owner = before_outage.owner.as_ref().unwrap();
    assert_eq!((owner.namespace.as_str(), owner.kind.as_str(), owner.name.as_str()), ("lab", "SensorFleet", "fleet"));
    assert_eq!((before_outage.sender.as_str(), before_outage.sensor_id.as_str()), ("fleet-pod-0", "report-test"));
    assert_eq!(before_outage.network, "devnet");
    assert_eq!(before_outage.agent, format!("sensor/{}", env!("CARGO_PKG_VERSION")));
    let received = collector.reports();
    assert!(received.windows(2).all(|w| w[0].sequence < w[1].sequence), "sequence grows");
    assert!(received.iter().all(|r| r.started_at_unix_ms == before_outage.started_at_unix_ms));
    assert_eq!(received[0].sequence, 1);

    // Outage: the collector goes away for more than an interval; failures are counted.
    let unavailable = |m| metrics_value(m, "sensor_report_pushes_total", &[("result", "unavailable")]);
    let unavailable_before = unavailable(metrics).expect("pre-created label");
    let reports_before_outage = collector.reports.clone();
    collector.stop().await;
    let last_before_outage = reports_before_outage.lock().unwrap().last().expect("reports").sequence;
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS * 5 / 2)).await;
    eventually("unavailable pushes on /metrics", &sensor, || {
        (unavailable(metrics)? > unavailable_before).then_some(())
    })
    .await;
    let ok_pushes = metrics_value(metrics, "sensor_report_pushes_total", &[("result", "ok")]).unwrap();
    assert!(ok_pushes >= received.len() as f64, "{ok_pushes} ok pushes, {} received", received.len());

    // The collector comes back on the same port (and asks for a 10-minute interval, clamped to
    // 5 minutes): reports resume with a larger sequence and the same cumulative content.
    let collector = RunningCollector::start(collector_addr, 600_000).await;
    let resumed = eventually("a report after the outage", &sensor, || collector.reports().into_iter().next()).await;
    assert!(
        resumed.sequence >= last_before_outage + 2,
        "failed attempts consume sequence numbers: {} after {last_before_outage}",
        resumed.sequence
    );
    assert_eq!(resumed.started_at_unix_ms, before_outage.started_at_unix_ms);
    assert_eq!(summary(&resumed), summary(&before_outage), "cumulative: nothing lost, nothing doubled");
    assert_eq!(sketch_estimate(&resumed), 6);
    assert_eq!(expected_from_db(&db).unwrap(), expected);

    // The collector's interval is respected: no regular report for a while.
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS * 3)).await;
    assert_eq!(collector.reports().len(), 1, "the collector asked for the next report in 5 minutes");
    assert!(metrics_value(metrics, "sensor_report_last_success_timestamp_seconds", &[]).unwrap() > 1.6e9);
    assert_eq!(metrics_value(metrics, "sensor_report_peer_ids_skipped", &[]), Some(0.0));

    // SIGTERM: one final report, after the store was flushed, then exit 0.
    // SAFETY: kill(2) on our own, not yet reaped child.
    assert_eq!(unsafe { libc::kill(sensor.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = wait_for_exit(&mut sensor).await;
    assert!(status.success(), "sensor exit {status}\n{}", sensor.log_tail());
    let after = collector.reports();
    assert_eq!(after.len(), 2, "exactly the final report after SIGTERM\n{}", sensor.log_tail());
    assert_eq!(after[1].sequence, resumed.sequence + 1);
    assert_eq!(expected_from_report(&after[1]), expected_from_db(&db).unwrap());
    for handle in peers {
        handle.abort();
    }
    collector.stop().await;
}

/// Waits (≤ `WAIT`) for the sensor process to exit.
async fn wait_for_exit(sensor: &mut SensorProcess) -> std::process::ExitStatus {
    let start = Instant::now();
    for _ in 0..600 {
        if let Some(status) = sensor.child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sensor did not exit after SIGTERM\n{}", sensor.log_tail());
}
