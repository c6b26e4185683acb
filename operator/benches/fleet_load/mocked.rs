//! The mocked API server run: the real reconciler (`operator::fleet::reconcile`) and collector in
//! this process, every fleet requeued every [`INTERVAL`] at most 8 at once (`--concurrency 8`),
//! against a tower-test API server that answers every request at once and feeds status patches
//! back into the fleet objects. Prints RSS, reconcile p50/p99 and status patches per fleet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use serde_json::Value;

use crate::{INTERVAL, fleet_key, percentile, rss_mib, rss_parts, spawn_load};

fn fleet(i: u64, sensors: u64) -> SensorFleet {
    let (namespace, name) = fleet_key(i);
    let mut fleet: SensorFleet = serde_json::from_value(serde_json::json!({
        "apiVersion": "p2psensor.dev/v1alpha1", "kind": "SensorFleet",
        "metadata": {"name": name, "namespace": namespace,
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

/// The mocked run; with `bench` false, a smoke pass that asserts every fleet's status reflects
/// every sensor's report at the end.
pub async fn run(n_fleets: u64, sensors: u64, secs: u64, peers: u64, bench: bool) {
    let (rss_start, _) = rss_mib("self");
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
        status_heartbeat: Duration::from_secs(60), // `operator run`'s default
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
        fleets.lock().unwrap().insert(fleet_key(i).1, Arc::new(f));
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
    let (rss_cached, _) = rss_mib("self");

    // The report load, in its own process.
    let mut loader = spawn_load(collector_addr, n_fleets, sensors, secs, peers);

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
            let name = fleet_key(i).1;
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
        peak_during = peak_during.max(rss_mib("self").0);
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
    let (rss_end, hwm) = rss_mib("self");
    let patches = patches.load(Ordering::Relaxed);
    let senders = reports.senders_total();
    println!(
        "fleet_load: {n_fleets} fleets x {sensors} sensors, {peers} peers per sensor, report every 10 s, {secs} s"
    );
    println!("  reports stored: senders {senders}, owners {}", reports.owners_total());
    println!(
        "  reconciles: {} ({:.1}/s); first round p50 {:.2} ms p99 {:.2} ms (after start)",
        timings.len(),
        timings.len() as f64 / elapsed,
        percentile(&mut first, 0.5),
        percentile(&mut first, 0.99)
    );
    println!(
        "  steady state: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        percentile(&mut steady, 0.5),
        percentile(&mut steady, 0.9),
        percentile(&mut steady, 0.99),
        percentile(&mut steady, 1.0)
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
    println!("    of which MiB: {}", rss_parts("self"));
}
