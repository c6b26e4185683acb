//! A fleet end to end, minus Kubernetes: two real `sensor listen` processes, configured with the
//! `sensor.toml` the operator renders for a SensorFleet, push reports to the operator's real
//! collector; the aggregated fleet status equals what the two SQLite databases hold — before and
//! after the collector is restarted mid-run (it rebuilds everything from the next reports).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use operator::collector::aggregate::FleetAggregate;
use operator::collector::metrics::CollectorMetrics;
use operator::collector::store::{ReportStore, StoreLimits};
use operator::crd::SensorFleet;
use operator::fleet::status::{Observed, WorkloadState, status};
use sensor::kaspa::{version::LocalVersion, wire::WireConnection};
use sensor::store::query::Reader;
use sensor_core::network::Network;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(40);
const FLEET_YAML: &str = "
apiVersion: p2psensor.dev/v1alpha1
kind: SensorFleet
metadata: {name: lab, namespace: sensors, uid: 0b6f1d1e-5b8a-4a8e-9d53-6a3cbb0f0002, generation: 1}
spec:
  network: devnet
  mode: StatefulSet
  replicas: 2
  probing: {timeoutMs: 500, attempts: 2, allowPrivateTargets: true}
";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The operator's collector on a fixed address, with its own (fresh) report store.
struct Collector {
    store: Arc<ReportStore>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Collector {
    async fn start(addr: SocketAddr) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("collector bind {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("collector cannot bind {addr}: {e}"),
            }
        };
        let store = Arc::new(ReportStore::new(StoreLimits::default()));
        let metrics = CollectorMetrics::register(&mut prometheus_client::registry::Registry::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let store = store.clone();
            async move {
                operator::collector::service::serve(listener, store, metrics, async {
                    let _ = stopped.await;
                })
                .await
                .expect("collector serves");
            }
        });
        Self { store, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("collector stops").unwrap();
    }

    /// Publishes now and returns the fleet's aggregate.
    fn aggregate(&self) -> Option<FleetAggregate> {
        self.store.publish(jiff::Timestamp::now(), Duration::from_secs(30), Duration::from_secs(3600));
        self.store.fleet("sensors", "lab")
    }
}

struct SensorProcess {
    child: Child,
    log: PathBuf,
    db: PathBuf,
    p2p: SocketAddr,
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a sensor with the operator-rendered `sensor.toml`; the environment supplies what the
/// pod spec would (sensor id and sender = pod name) plus loopback addresses for this test.
fn start_sensor(dir: &Path, pod: &str, config_toml: &str, collector: SocketAddr) -> SensorProcess {
    let config = dir.join("sensor.toml");
    std::fs::write(&config, config_toml).unwrap();
    let p2p = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = dir.join("sensor.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args(["listen", "--config"])
        .arg(&config)
        .env("SENSOR_SENSOR_ID", pod)
        .env("SENSOR_REPORT_SENDER", pod)
        .env("SENSOR_DATA_DIR", dir.join("data"))
        .env("SENSOR_LISTEN_ADDRESS", p2p.to_string())
        .env("SENSOR_METRICS_LISTEN", metrics.to_string())
        .env("SENSOR_REPORT_ENDPOINT", format!("http://{collector}"))
        .env("SENSOR_REPORT_INTERVAL_MS", "1000")
        .env("SENSOR_CLASSIFY_PROBE_RETRY_DELAY_MS", "100")
        .env("SENSOR_STORAGE_FLUSH_INTERVAL_MS", "10")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn sensor");
    let db = dir.join("data/sensor.sqlite");
    let sensor = SensorProcess { child, log, db, p2p };
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if support::http::get(metrics, "/readyz", Duration::from_secs(1)).is_ok_and(|(s, _)| s == 200) {
            return sensor;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{pod} never ready\n{}", support::process::tail_file(&sensor.log, 60));
}

/// A devnet peer with `id` handshaking from `src`; the connection is served until the test ends.
async fn peer(to: SocketAddr, src: IpAddr, id: Uuid, user_agent: &str) -> JoinHandle<()> {
    let mut version = LocalVersion { network: Network::Devnet, id, address: None }.message();
    version.user_agent = user_agent.to_owned();
    let mut conn = WireConnection::connect(to, Some(src), Duration::from_secs(5)).await.expect("connect");
    conn.handshake(version, Duration::from_secs(5)).await.expect("handshake");
    tokio::spawn(async move {
        let _ = conn.serve().await;
    })
}

/// What both databases hold, in fleet-status terms.
#[derive(Debug, PartialEq, Eq)]
struct Truth {
    public: i64,
    private: i64,
    unknown: i64,
    unique: i64,
    user_agents: BTreeMap<String, i64>,
}

fn truth(sensors: &[&SensorProcess]) -> Option<Truth> {
    let mut t = Truth { public: 0, private: 0, unknown: 0, unique: 0, user_agents: BTreeMap::new() };
    let mut ids = BTreeSet::new();
    for s in sensors {
        let reader = Reader::open(&s.db).ok()?;
        let counts = reader.peer_counts().ok()?;
        if counts.unclassified > 0 {
            return None;
        }
        t.public += counts.public as i64;
        t.private += counts.private as i64;
        t.unknown += counts.unknown as i64;
        reader
            .for_each_peer_id(|id| {
                ids.insert(id.to_owned());
            })
            .ok()?;
        for (ua, n) in reader.top_user_agents(20).ok()? {
            *t.user_agents.entry(ua).or_default() += n as i64;
        }
    }
    t.unique = ids.len() as i64;
    Some(t)
}

fn from_aggregate(a: &FleetAggregate) -> Truth {
    Truth {
        public: a.peers.public,
        private: a.peers.private,
        unknown: a.peers.unknown,
        unique: a.peers.unique_across_fleet,
        user_agents: a.top_user_agents.iter().map(|u| (u.user_agent.clone(), u.peers)).collect(),
    }
}

/// Waits until the collector's aggregate shows both sensors reporting and equals `expected`
/// (reports are read every second, so a few rounds at most).
async fn aggregate_matching(collector: &Collector, expected: &Truth, sensors: &[&SensorProcess]) -> FleetAggregate {
    let start = Instant::now();
    let mut last = None;
    for _ in 0..400 {
        if let Some(a) = collector.aggregate() {
            if a.reporting == 2 && from_aggregate(&a) == *expected {
                return a;
            }
            last = Some(a);
        }
        if start.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs: Vec<String> = sensors.iter().map(|s| support::process::tail_file(&s.log, 30)).collect();
    panic!("aggregate never matched {expected:?}\nlast: {last:?}\n{}", logs.join("\n----\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_equals_the_sensors_databases_across_a_collector_restart() {
    let fleet: SensorFleet = serde_norway::from_str(FLEET_YAML).unwrap();
    let collector_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let rendered = operator::fleet::sensor_config::render(&fleet, "sensors", "lab", "http://unused:1", 10_000, None);
    let collector = Collector::start(collector_addr).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_sensor(dir_a.path(), "lab-sensor-0", &rendered, collector_addr);
    let b = start_sensor(dir_b.path(), "lab-sensor-1", &rendered, collector_addr);

    // Three peers only A sees, two only B sees, two seen by both (same peer id).
    let mut peers = Vec::new();
    for i in 0..3u8 {
        peers.push(peer(a.p2p, IpAddr::from([127, 0, 10, i + 1]), Uuid::new_v4(), "/kaspad:2.1.0/").await);
    }
    for i in 0..2u8 {
        peers.push(peer(b.p2p, IpAddr::from([127, 0, 11, i + 1]), Uuid::new_v4(), "/kaspad:2.0.0/").await);
    }
    for i in 0..2u8 {
        let id = Uuid::new_v4();
        peers.push(peer(a.p2p, IpAddr::from([127, 0, 12, i + 1]), id, "/kaspad:2.1.0/").await);
        peers.push(peer(b.p2p, IpAddr::from([127, 0, 13, i + 1]), id, "/kaspad:2.1.0/").await);
    }

    // Both databases settle: every peer has a verdict.
    let start = Instant::now();
    let expected = loop {
        if let Some(t) = truth(&[&a, &b])
            && t.private + t.public + t.unknown == 9
        {
            break t;
        }
        assert!(start.elapsed() < WAIT, "databases never settled\n{}", support::process::tail_file(&a.log, 40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(expected.unique, 7, "9 sightings of 7 distinct peers");
    assert_eq!(expected.user_agents.values().sum::<i64>(), 9);

    let aggregate = aggregate_matching(&collector, &expected, &[&a, &b]).await;
    assert!(!aggregate.peers.unique_is_estimate);
    assert_eq!(aggregate.senders, 2);
    let names: Vec<&str> = aggregate.summaries.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["lab-sensor-0", "lab-sensor-1"]);

    // The fleet's .status as the reconciler would write it.
    let now = Time(jiff::Timestamp::now());
    let observed = Observed {
        workload: Some(WorkloadState { desired: 2, ready: 2, up_to_date: true }),
        reports: Some(&aggregate),
        ..Observed::default()
    };
    let fleet_status = status(&fleet, &observed, &now);
    assert_eq!(fleet_status.sensors.reporting, 2);
    assert_eq!(
        (fleet_status.peers.public, fleet_status.peers.private, fleet_status.peers.unique_across_fleet),
        (expected.public, expected.private, 7)
    );
    let ready = fleet_status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AllSensorsReporting"));

    // Restart the collector: a fresh store, the same address. The next round rebuilds it all.
    collector.stop().await;
    let collector = Collector::start(collector_addr).await;
    assert!(collector.aggregate().is_none(), "a restarted collector starts empty");
    let rebuilt = aggregate_matching(&collector, &expected, &[&a, &b]).await;
    assert_eq!(rebuilt.peers, aggregate.peers);
    assert_eq!(rebuilt.top_user_agents, aggregate.top_user_agents);
    collector.stop().await;
    for p in peers {
        p.abort();
    }
}

#[test]
fn the_sensor_accepts_every_config_the_operator_renders() {
    for yaml in [
        FLEET_YAML.to_string(),
        FLEET_YAML.replace("  mode: StatefulSet\n  replicas: 2\n", "").replace("devnet", "mainnet"),
        format!(
            "{FLEET_YAML}  externalAddress: {{source: Static, address: '203.0.113.9:16611'}}\n  limits: {{maxInboundPeers: 500, maxPeersPerIp: 2, maxPeersPerSubnet: 8}}\n"
        ),
        // spec.export, each sink with every secret it takes.
        format!(
            "{FLEET_YAML}  export: {{sink: postgres, endpoint: 'postgres://sensor@pg.db.svc:5432/kaspa?sslmode=require', batchSize: 1000, passwordSecretRef: {{name: pg, key: password}}, caSecretRef: {{name: pg-ca, key: ca.crt}}}}\n"
        ),
        format!(
            "{FLEET_YAML}  export: {{sink: http, endpoint: 'https://hooks.example/kaspa', gzip: false, timeoutMs: 5000, bearerTokenSecretRef: {{name: hook, key: token}}, hmacSecretRef: {{name: hook, key: hmac}}}}\n"
        ),
        format!(
            "{FLEET_YAML}  export: {{sink: ndjson, endpoint: /var/lib/p2p-sensor/events.ndjson, intervalMs: 500}}\n"
        ),
    ] {
        let fleet: SensorFleet = serde_norway::from_str(&yaml).unwrap();
        let toml = operator::fleet::sensor_config::render(
            &fleet,
            "sensors",
            "lab",
            "http://collector.ns.svc:50051",
            10_000,
            None,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.toml");
        std::fs::write(&path, &toml).unwrap();
        let env = [("SENSOR_SENSOR_ID", "lab-sensor-0"), ("SENSOR_REPORT_SENDER", "lab-sensor-0")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let (config, warnings) = sensor_core::config::Config::load(Some(&path), env, &Default::default())
            .unwrap_or_else(|e| panic!("sensor refuses the rendered config: {e}\n{toml}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.network, fleet.spec.network);
        assert_eq!(config.report.owner_name, "lab");
        assert_eq!(config.report_sender(), "lab-sensor-0");
        let export = fleet.spec.export.as_ref();
        let want_sink = export.map_or("none".to_owned(), |e| format!("{:?}", e.sink).to_lowercase());
        assert_eq!(config.export.sink, want_sink, "{toml}");
        if let Some(e) = export {
            assert_eq!(config.export.endpoint, e.endpoint.clone().unwrap_or_default(), "{toml}");
            let file = |name: &str| Some(std::path::PathBuf::from(format!("/etc/sensor/export/{name}")));
            let secrets = &config.export;
            assert_eq!(secrets.password_file, e.password_secret_ref.as_ref().and_then(|_| file("password")));
            assert_eq!(secrets.tls_ca_file, e.ca_secret_ref.as_ref().and_then(|_| file("ca.crt")));
            assert_eq!(
                secrets.bearer_token_file,
                e.bearer_token_secret_ref.as_ref().and_then(|_| file("bearer-token"))
            );
            assert_eq!(secrets.hmac_secret_file, e.hmac_secret_ref.as_ref().and_then(|_| file("hmac-secret")));
        }
    }
}

/// The `[punch]` section the operator renders for a fleet with a resolved relay is one the
/// sensor loads: the sidecar's mode is rounds, with the relay, its RelayNode and the targets file.
#[test]
fn the_rendered_punch_section_loads_as_a_rounds_mode_punch_client() {
    use operator::fleet::punch::PunchRelay;
    use sensor::p2p::punch::{Mode, PunchSettings};

    let fleet: SensorFleet = serde_norway::from_str(FLEET_YAML).unwrap();
    let relay_id = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    let relay = PunchRelay { node: "edge".into(), multiaddr: format!("/ip4/203.0.113.7/tcp/4001/p2p/{relay_id}") };
    let rendered =
        operator::fleet::sensor_config::render(&fleet, "sensors", "lab", "http://unused:1", 10_000, Some(&relay));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sensor.toml");
    std::fs::write(&file, &rendered).unwrap();
    let (config, _) = sensor_core::config::Config::load(Some(&file), Vec::new(), &Default::default())
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    let settings = PunchSettings::from_config(&config).expect("a punch client can start from it");
    assert_eq!(settings.relay.to_string(), relay.multiaddr);
    assert_eq!(settings.relay_node, "edge");
    assert!(matches!(settings.mode, Mode::Rounds { .. }), "{:?}", settings.mode);
    assert!(settings.targets_file.is_some(), "{rendered}");
}

/// The `[crawl]` section the operator renders for `spec.crawler` is one the sensor loads: a
/// continuous crawl (the sidecar) seeded by the listener's database, with the fleet's bounds.
#[test]
fn the_rendered_crawl_section_loads_as_a_continuous_crawl() {
    use sensor::crawl::{CrawlCommand, CrawlFlags};

    let yaml = format!(
        "{FLEET_YAML}  crawler:\n    intervalSecs: 900\n    concurrency: 32\n    seeds: ['198.51.100.41:16611', '[2001:db8::1]:16611']\n    seedDns: [seeder.example]\n    minRevisitSecs: 120\n    maxRevisitSecs: 3600\n    allowPrivateTargets: true\n"
    );
    let fleet: SensorFleet = serde_norway::from_str(&yaml).unwrap();
    let rendered = operator::fleet::sensor_config::render(&fleet, "sensors", "lab", "http://unused:1", 10_000, None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sensor.toml");
    std::fs::write(&file, &rendered).unwrap();
    let (config, warnings) = sensor_core::config::Config::load(Some(&file), Vec::new(), &Default::default())
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let cmd = CrawlCommand::from_config(&config, CrawlFlags::default());
    assert_eq!(cmd.interval, Some(Duration::from_secs(900)), "{rendered}");
    assert_eq!(cmd.concurrency, 32);
    assert_eq!(cmd.seeds.len(), 2, "{rendered}");
    assert_eq!(cmd.seed_dns, ["seeder.example"]);
    assert_eq!((cmd.revisit.min, cmd.revisit.max), (Duration::from_secs(120), Duration::from_secs(3600)));
    assert!(cmd.allow_private_targets);
    let store = cmd.seed_store.expect("seeded from the listener's database");
    assert!(store.ends_with("sensor.sqlite"), "{store:?}");
}
