//! Operator load benchmark: N SensorFleets × M sensors, each sensor pushing a cumulative report
//! every 10 s over real gRPC to the real collector, while the real reconciler requeues every
//! fleet every 10 s against a mocked API server that answers instantly (there is no API server
//! on these machines). Prints operator RSS, reconcile p50/p99 and status patches per second.
//!
//! ```text
//! cargo bench -p operator --bench fleet_load -- [fleets=1000] [sensors=5] [secs=60] [peers=100]
//! ```
//! The report load runs in a child process (this binary, `load` mode) so that the RSS printed is
//! the operator's alone: caches, collector store, reconciler and the mock API server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::{Request, Response};
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use operator::backoff::Backoff;
use operator::collector::metrics::CollectorMetrics;
use operator::collector::store::{ReportStore, StoreLimits};
use operator::context::{Caches, Context, Resync, Settings};
use operator::crd::{SensorFleet, SensorFleetStatus};
use operator::fleet::build::{BuildSettings, Workload, build};
use operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use sensor_report::v1::collector_client::CollectorClient;
use sensor_report::v1::{Owner, PeerSummary, Report, UserAgentCount};
use sensor_report::{OWNER_SENSOR_FLEET, PeerIdSketch};
use serde_json::Value;

const INTERVAL: Duration = Duration::from_secs(10);

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if args.first().map(String::as_str) == Some("load") {
        let addr: SocketAddr = args[1].parse().unwrap();
        let [fleets, sensors, secs, peers] = [2, 3, 4, 5].map(|i| arg(&args, i, 0));
        runtime.block_on(load(addr, fleets, sensors, secs, peers));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it: a
    // small smoke pass that checks the pipeline end to end instead of measuring it.
    let bench = std::env::args().any(|a| a == "--bench");
    let fleets = arg(&args, 0, if bench { 1000 } else { 20 });
    let sensors = arg(&args, 1, if bench { 5 } else { 2 });
    let secs = arg(&args, 2, if bench { 60 } else { 12 });
    let peers = arg(&args, 3, 100);
    runtime.block_on(operator_side(fleets, sensors, secs, peers, bench));
}

/// VmRSS and VmHWM of this process, MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn fleet(i: u64, sensors: u64) -> SensorFleet {
    let mut fleet: SensorFleet = serde_json::from_value(serde_json::json!({
        "apiVersion": "p2psensor.dev/v1alpha1", "kind": "SensorFleet",
        "metadata": {"name": format!("fleet-{i}"), "namespace": format!("ns-{}", i % 20),
                     "uid": format!("00000000-0000-0000-0000-{i:012}"), "generation": 1},
        "spec": {"network": "mainnet", "mode": "StatefulSet", "replicas": sensors}
    }))
    .unwrap();
    fleet.status = Some(SensorFleetStatus::default());
    fleet
}

/// The mocked API server: answers every request at once, and feeds status patches back into
/// the fleet objects the way a watch event would.
async fn mock_api(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    fleets: Arc<Mutex<HashMap<String, Arc<SensorFleet>>>>,
    patches: Arc<AtomicU64>,
) {
    while let Some((request, send)) = handle.next_request().await {
        let path = request.uri().path().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let reply = if path.ends_with("/status") {
            patches.fetch_add(1, Ordering::Relaxed);
            let name = path.rsplit('/').nth(1).unwrap_or_default().to_string();
            let mut map = fleets.lock().unwrap();
            let mut updated = map.get(&name).map(|f| (**f).clone()).expect("known fleet");
            updated.status = serde_json::from_value(body["status"].clone()).ok();
            let reply = serde_json::to_value(&updated).unwrap();
            map.insert(name, Arc::new(updated));
            reply
        } else {
            body
        };
        send.send_response(Response::new(Body::from(serde_json::to_vec(&reply).unwrap())));
    }
}

/// Caches `object` trimmed, as `operator run`'s watches do.
fn cache<K>(writer: &mut Writer<K>, mut object: K)
where
    K: kube::Resource + operator::trim::Trim + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    object.trim();
    writer.apply_watcher_event(&watcher::Event::Apply(object));
}

async fn operator_side(n_fleets: u64, sensors: u64, secs: u64, peers: u64, bench: bool) {
    let (rss_start, _) = rss_mib();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let collector_metrics = CollectorMetrics::register(&mut registry);
    let reports = Arc::new(ReportStore::new(StoreLimits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(operator::collector::service::serve(
        listener,
        reports.clone(),
        collector_metrics.clone(),
        std::future::pending(),
    ));

    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    // Every cache has had its first list, as after start-up: the reconcilers wait for that.
    macro_rules! listed {
        () => {{
            let (reader, mut writer) = reflector::store();
            writer.apply_watcher_event(&watcher::Event::InitDone);
            (reader, writer)
        }};
    }
    let (fleets_store, mut fleets_w) = listed!();
    let (relays, _relays_w) = listed!();
    let (stateful_sets, mut sts_w) = listed!();
    let (daemon_sets, _ds_w) = listed!();
    let (deployments, _dep_w) = listed!();
    let (services, mut svc_w) = listed!();
    let (config_maps, mut cm_w) = listed!();
    let (service_accounts, mut sa_w) = listed!();
    let (secrets, _sec_w) = listed!();
    let settings = Settings {
        build: BuildSettings {
            sensor_image: "sensor:bench".into(),
            collector_endpoint: format!("http://{collector_addr}"),
            report_interval_ms: 10_000,
        },
        status_interval: INTERVAL,
        report_timeout: Duration::from_secs(60),
        resync_interval: Duration::from_secs(600),
        report_warm_up: Duration::ZERO,
    };

    // Steady state: every fleet's children exist (as the watches would show them), ready.
    let fleets = Arc::new(Mutex::new(HashMap::new()));
    for i in 0..n_fleets {
        let f = fleet(i, sensors);
        let children = build(&f, &settings.build, None).unwrap();
        cache(&mut sa_w, children.service_account);
        cache(&mut cm_w, children.config_map);
        cache(&mut svc_w, children.headless_service);
        if let Workload::StatefulSet(mut sts) = children.workload {
            sts.status = Some(StatefulSetStatus {
                replicas: sensors as i32,
                ready_replicas: Some(sensors as i32),
                updated_replicas: Some(sensors as i32),
                current_revision: Some("r".into()),
                update_revision: Some("r".into()),
                ..StatefulSetStatus::default()
            });
            cache(&mut sts_w, sts);
        }
        fleets_w.apply_watcher_event(&watcher::Event::Apply(f.clone()));
        fleets.lock().unwrap().insert(format!("fleet-{i}"), Arc::new(f));
    }
    let patches = Arc::new(AtomicU64::new(0));
    tokio::spawn(mock_api(handle, fleets.clone(), patches.clone()));
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: settings.clone(),
        caches: Caches {
            fleets: fleets_store,
            relays,
            stateful_sets,
            daemon_sets,
            deployments,
            services,
            config_maps,
            service_accounts,
            secrets,
        },
        reports: reports.clone(),
        metrics,
        recorder: Recorder::new(client, Reporter { controller: "bench".into(), instance: None }),
        backoff: Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
        resync: Resync::default(),
        clock: Arc::new(jiff::Timestamp::now),
    });
    let (rss_cached, _) = rss_mib();

    // The report load, in its own process.
    let mut loader = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["load", &collector_addr.to_string()])
        .args([n_fleets, sensors, secs, peers].map(|n| n.to_string()))
        .spawn()
        .expect("spawn the load generator");

    // Publish every interval, as `operator run` does.
    let publisher = {
        let reports = reports.clone();
        let collector_metrics = collector_metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tick.tick().await;
                let stats = reports.publish(jiff::Timestamp::now(), Duration::from_secs(60), Duration::from_secs(3600));
                collector_metrics.record_publish(&stats);
            }
        })
    };

    // The reconciler: every fleet requeued every interval (first round spread over one interval),
    // at most 8 at once, like the controller with --concurrency 8.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let timings = Arc::new(Mutex::new(Vec::<(f64, f64)>::new())); // (at s, took ms)
    let mut tasks = Vec::new();
    for i in 0..n_fleets {
        let (ctx, fleets, limit, timings) = (ctx.clone(), fleets.clone(), limit.clone(), timings.clone());
        let offset = INTERVAL.mul_f64(i as f64 / n_fleets as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let name = format!("fleet-{i}");
            while Instant::now() < deadline {
                let next = Instant::now() + INTERVAL;
                let fleet = fleets.lock().unwrap()[&name].clone();
                let permit = limit.acquire().await.unwrap();
                let t0 = Instant::now();
                operator::fleet::reconcile::reconcile(fleet, ctx.clone()).await.expect("reconcile");
                let took = t0.elapsed().as_secs_f64() * 1000.0;
                drop(permit);
                timings.lock().unwrap().push((started.elapsed().as_secs_f64(), took));
                tokio::time::sleep_until(next.into()).await;
            }
        }));
    }
    let mut peak_during = 0.0f64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_during = peak_during.max(rss_mib().0);
    }
    for t in tasks {
        let _ = t.await;
    }
    publisher.abort();
    let _ = loader.wait();
    let elapsed = started.elapsed().as_secs_f64();

    let timings = timings.lock().unwrap().clone();
    let mut steady: Vec<f64> = timings.iter().filter(|(at, _)| *at >= INTERVAL.as_secs_f64()).map(|t| t.1).collect();
    let mut first: Vec<f64> = timings.iter().filter(|(at, _)| *at < INTERVAL.as_secs_f64()).map(|t| t.1).collect();
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * p).round() as usize] }
    };
    let (rss_end, hwm) = rss_mib();
    let patches = patches.load(Ordering::Relaxed);
    let senders = reports.senders_total();
    println!(
        "fleet_load: {n_fleets} fleets x {sensors} sensors, {peers} peers per sensor, report every 10 s, {secs} s"
    );
    println!("  reports stored: senders {senders}, owners {}", reports.owners_total());
    println!(
        "  reconciles: {} ({:.1}/s); first round p50 {:.2} ms p99 {:.2} ms (full apply after start)",
        timings.len(),
        timings.len() as f64 / elapsed,
        pct(&mut first, 0.5),
        pct(&mut first, 0.99)
    );
    println!(
        "  steady state: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        pct(&mut steady, 0.5),
        pct(&mut steady, 0.9),
        pct(&mut steady, 0.99),
        pct(&mut steady, 1.0)
    );
    println!(
        "  status patches: {patches} ({:.1}/s, {:.2} per fleet per 10 s)",
        patches as f64 / elapsed,
        patches as f64 / n_fleets as f64 / (elapsed / 10.0)
    );
    if !bench {
        assert_eq!(senders as u64, n_fleets * sensors, "every sensor's report is stored");
        // One more publish and reconcile round: every fleet's status now reflects the reports.
        reports.publish(jiff::Timestamp::now(), Duration::from_secs(60), Duration::from_secs(3600));
        let names: Vec<String> = fleets.lock().unwrap().keys().cloned().collect();
        for name in names {
            let fleet = fleets.lock().unwrap()[&name].clone();
            operator::fleet::reconcile::reconcile(fleet, ctx.clone()).await.expect("reconcile");
        }
        let fleets = fleets.lock().unwrap();
        for f in fleets.values() {
            let status = f.status.as_ref().expect("status written");
            assert_eq!(status.sensors.reporting as u64, sensors, "{:?}", f.metadata.name);
            assert_eq!(status.peers.unique_across_fleet as u64, sensors * peers, "{:?}", f.metadata.name);
        }
    }
    println!(
        "  RSS MiB: start {rss_start:.1}, caches filled {rss_cached:.1}, max sampled {peak_during:.1}, end {rss_end:.1}, peak (VmHWM) {hwm:.1}"
    );
}

/// The load generator: `sensors` reporters per fleet, each pushing its cumulative report every
/// 10 s (spread evenly), 64 pushes in flight at most.
async fn load(addr: SocketAddr, fleets: u64, sensors: u64, secs: u64, peers: u64) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let client = CollectorClient::new(channel);
    let mut reports: Vec<Report> = Vec::new();
    for f in 0..fleets {
        for s in 0..sensors {
            // Each sensor sees `peers` ids; a fifth of them are shared with the fleet's next sensor.
            let ids: Vec<[u8; 16]> = (0..peers)
                .map(|p| {
                    let owner = if p < peers / 5 { (s + 1) % sensors } else { s };
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&f.to_be_bytes());
                    id[8..12].copy_from_slice(&(owner as u32).to_be_bytes());
                    id[12..].copy_from_slice(&(p as u32).to_be_bytes());
                    id
                })
                .collect();
            let mut sketch = PeerIdSketch::new();
            ids.iter().for_each(|id| sketch.insert(id));
            reports.push(Report {
                owner: Some(Owner {
                    namespace: format!("ns-{}", f % 20),
                    kind: OWNER_SENSOR_FLEET.into(),
                    name: format!("fleet-{f}"),
                }),
                sender: format!("fleet-{f}-sensor-{s}"),
                sensor_id: format!("fleet-{f}-sensor-{s}"),
                network: "mainnet".into(),
                started_at_unix_ms: 1,
                peers: Some(PeerSummary {
                    public: peers / 3,
                    private: peers - peers / 3,
                    top_user_agents: vec![
                        UserAgentCount { user_agent: "/kaspad:2.1.0/".into(), peers: peers * 2 / 3 },
                        UserAgentCount { user_agent: "/kaspad:2.0.1/".into(), peers: peers / 3 },
                    ],
                    peer_ids: ids.iter().map(|id| id.to_vec()).collect(),
                    peer_ids_complete: true,
                    peer_id_sketch: sketch.to_bytes(),
                    distinct_peers: peers,
                    ..PeerSummary::default()
                }),
                agent: "sensor/bench".into(),
                ..Report::default()
            });
        }
    }
    let total = reports.len().max(1);
    let gap = INTERVAL.div_f64(total as f64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let failures = Arc::new(AtomicU64::new(0));
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        sequence += 1;
        let round = Instant::now();
        let pushes = futures::stream::iter(reports.iter().enumerate().map(|(i, r)| {
            let mut client = client.clone();
            let mut report = r.clone();
            report.sequence = sequence;
            report.generated_at_unix_ms = jiff::Timestamp::now().as_millisecond();
            let failures = failures.clone();
            async move {
                tokio::time::sleep_until((round + gap * i as u32).into()).await;
                if client.push(report).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        pushes.buffer_unordered(64).collect::<Vec<()>>().await;
        tokio::time::sleep_until((round + INTERVAL).into()).await;
    }
    eprintln!("load: {sequence} rounds of {total} reports, {} failed pushes", failures.load(Ordering::Relaxed));
}
