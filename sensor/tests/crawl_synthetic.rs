//! `sensor crawl` (the real binary) against a synthetic network of kaspa-p2p-lib peers
//! ([`sensor_testkit::lab`], 127.77–79.x.y, one block per test as they run at once): the crawl must
//! find exactly the nodes reachable from the seed in the generated graph, classify the dead ones
//! `refused`, the one on another network `wrong_network`, the one that rejects our version
//! `protocol_version_rejected` and the one with an oversized reply `oversized_addresses`, report
//! the gossiped edges, and store the same in SQLite. Loopback only; every wait is bounded.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use sensor::store::query::Reader;
use sensor_core::network::Network;
use sensor_testkit::lab::{Lab, LabSpec, graph};

/// Bound of one `sensor crawl` run.
const RUN_LIMIT: Duration = Duration::from_secs(40);

fn spec() -> LabSpec {
    let mut spec = LabSpec {
        nodes: 48,
        block: 77,
        degree: 4,
        page: 2,
        dead_every: 7,
        wrong_network_nodes: vec![],
        oversized_nodes: vec![],
        rejecting_nodes: vec![],
        network: Network::Devnet,
        wrong_network: Network::Mainnet,
        seed: 5,
        junk: vec![
            "0.0.0.0:16611".parse().unwrap(),
            "224.0.0.1:16611".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ],
        reply_delay: Duration::ZERO,
    };
    // Live neighbours of the seed run on the wrong network and send an oversized Addresses
    // reply, so the crawl surely meets both.
    let mut live = graph(&spec)[0].clone().into_iter().filter(|&j| j % spec.dead_every != 0);
    spec.wrong_network_nodes = vec![live.next().expect("a live neighbour")];
    spec.oversized_nodes = vec![live.next().expect("two live neighbours")];
    spec.rejecting_nodes = vec![live.next().expect("three live neighbours")];
    spec
}

async fn sensor(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sensor"));
    cmd.arg("crawl").args(args).env("RUST_LOG", "info").kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output()).await.expect("sensor crawl within the limit").unwrap();
    eprintln!(
        "sensor crawl {} -> {} in {:.1}s\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn set(doc: &serde_json::Value, filter: impl Fn(&serde_json::Value) -> bool) -> BTreeSet<SocketAddr> {
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| filter(n))
        .map(|n| n["address"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn filtered(doc: &serde_json::Value, reason: &str) -> u64 {
    doc["summary"]["filtered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == reason)
        .and_then(|p| p[1].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_finds_exactly_the_reachable_graph() {
    let lab = Lab::start(spec()).await.expect("synthetic network");
    let expected = lab.expected();
    assert!(!expected.refused.is_empty() && expected.wrong_network.len() == 1 && expected.oversized.len() == 1);
    assert_eq!(expected.rejecting.len(), 1);
    assert!(expected.reachable.len() >= 10, "graph too small: {:?}", expected.reachable.len());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let json_path = dir.path().join("crawl.json");
    let seed = lab.seed().to_string();
    let base = ["--network", "devnet", "--allow-private-targets", "--data-dir", data, "--timeout-ms", "3000"];

    let mut args = base.to_vec();
    args.extend(["--seed", &seed, "--concurrency", "16", "--max-duration-secs", "30", "--json"]);
    args.extend(["--output", json_path.to_str().unwrap()]);
    let out = sensor(&args).await;
    assert!(out.status.success());
    let stdout_summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json summary on stdout");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    // Nodes: exactly the graph-reachable set, each classified as the lab made it.
    assert_eq!(set(&doc, |_| true), expected.visited);
    assert_eq!(set(&doc, |n| n["reachable"] == true), expected.reachable);
    assert_eq!(set(&doc, |n| n["error_class"] == "refused"), expected.refused);
    assert_eq!(set(&doc, |n| n["error_class"] == "wrong_network"), expected.wrong_network);
    assert_eq!(set(&doc, |n| n["error_class"] == "oversized_addresses"), expected.oversized);
    let failed: Vec<String> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["error"].is_null())
        .map(|n| format!("{} {} {}", n["address"], n["error_class"], n["error"]))
        .collect();
    assert_eq!(
        set(&doc, |n| n["error_class"] == "protocol_version_rejected"),
        expected.rejecting,
        "failed visits:\n{}",
        failed.join("\n")
    );
    for n in doc["nodes"].as_array().unwrap().iter().filter(|n| n["reachable"] == true) {
        assert_eq!(n["protocol_version"], 11, "{n}");
        assert_eq!(n["network"], "kaspa-devnet", "{n}");
        assert_eq!(n["peer_id"].as_str().unwrap().len(), 32, "{n}");
        assert!(n["user_agent"].as_str().unwrap().starts_with("/kaspa-sensor:"), "{n}");
        let oversized = expected.oversized.contains(&n["address"].as_str().unwrap().parse().unwrap());
        assert_eq!(n["error_class"].is_null(), !oversized, "{n}");
    }
    let wrong = &doc["nodes"].as_array().unwrap().iter().find(|n| n["error_class"] == "wrong_network").unwrap();
    assert_eq!(wrong["network"], "kaspa-mainnet");

    // Edges: every gossiped neighbour of every reachable node (pages needed repeated requests).
    let edges: BTreeSet<(SocketAddr, SocketAddr)> = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_str().unwrap().parse().unwrap(), e["to"].as_str().unwrap().parse().unwrap()))
        .collect();
    assert_eq!(edges, expected.edges);
    for reason in ["unspecified", "multicast", "port_zero"] {
        assert_eq!(filtered(&doc, reason), 1, "{reason}");
    }
    assert_eq!(stdout_summary["visited"], expected.visited.len());
    assert_eq!(doc["crawl"]["visited"], expected.visited.len());
    assert_eq!(doc["crawl"]["stopped_early"], false);

    // SQLite agrees.
    let db = dir.path().join("sensor.sqlite");
    let reader = Reader::open(&db).unwrap();
    let crawl = reader.latest_crawl().unwrap().expect("a stored crawl");
    assert!(crawl.finished_at.is_some());
    assert_eq!((crawl.visited, crawl.reachable), (expected.visited.len() as u64, expected.reachable.len() as u64));
    let visits = reader.crawl_visits(&crawl.crawl_id).unwrap();
    let stored: BTreeSet<SocketAddr> = visits.iter().map(|v| v.address.parse().unwrap()).collect();
    assert_eq!(stored, expected.visited);
    for v in &visits {
        let a: SocketAddr = v.address.parse().unwrap();
        let class = v.error_class.as_deref();
        assert_eq!(v.reachable, expected.reachable.contains(&a), "{v:?}");
        assert_eq!(class == Some("refused"), expected.refused.contains(&a), "{v:?}");
        assert_eq!(class == Some("wrong_network"), expected.wrong_network.contains(&a), "{v:?}");
    }
    let stored_edges: BTreeSet<(SocketAddr, SocketAddr)> = reader
        .crawl_edges(&crawl.crawl_id)
        .unwrap()
        .iter()
        .map(|(f, t)| (f.parse().unwrap(), t.parse().unwrap()))
        .collect();
    assert_eq!(stored_edges, expected.edges);

    // Propagation: the most gossiped address has one sighting per gossiper.
    let (target, gossipers) = expected
        .visited
        .iter()
        .map(|a| (*a, expected.edges.iter().filter(|(_, to)| to == a).count()))
        .max_by_key(|(_, n)| *n)
        .unwrap();
    assert_eq!(reader.address_sightings(&target.to_string()).unwrap().len(), gossipers);
    drop(reader);
    let target = target.to_string();
    let out = sensor(&["--data-dir", data, "--propagation", &target, "--json"]).await;
    assert!(out.status.success());
    let timeline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(timeline["time_to_k_ms"].as_array().unwrap().len(), gossipers);

    // A second crawl seeded from the store alone, exported as CSV: the same nodes again.
    let csv_path = dir.path().join("crawl.csv");
    let mut args = base.to_vec();
    args.extend(["--from-store", "--concurrency", "64", "--output", csv_path.to_str().unwrap()]);
    assert!(sensor(&args).await.status.success());
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("address,reachable,error_class,"));
    let rows: BTreeSet<SocketAddr> = lines.map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(rows, expected.visited);

    lab.stop().await;
}

#[tokio::test]
async fn usage_errors_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = sensor(&["--data-dir", data, "--seed", "127.0.0.1:1", "--output", "x.txt"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(".json or .csv"));
    let out = sensor(&["--data-dir", data]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no seeds"));
    assert!(!Path::new("x.txt").exists());
}

/// The library entry (no binary, no store): the same crawl, and the metrics it counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_crawl_counts_metrics_and_filters_without_lab_mode() {
    use sensor::{
        crawl::{
            engine::{EngineOptions, crawl},
            progress::Progress,
            visit::VisitOptions,
        },
        metrics::{CrawlMetrics, encode},
    };
    let lab = Lab::start(LabSpec { nodes: 20, block: 78, seed: 9, ..spec() }).await.expect("synthetic network");
    let expected = lab.expected();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = CrawlMetrics::register(&mut registry, &["reachable", "refused"], &["loopback"]);
    let mut options = EngineOptions {
        visit: VisitOptions {
            network: Network::Devnet,
            peer_id: uuid::Uuid::new_v4(),
            timeout: Duration::from_secs(3),
            max_requests: 8,
            max_addresses: 2500,
        },
        seeds: vec![lab.seed()],
        not_due: Vec::new(),
        concurrency: 4,
        allow_private: true,
        max_nodes: 1000,
        max_duration: Duration::from_secs(20),
    };
    let result = crawl(&options, None, &metrics, &mut Progress::Hidden, std::future::pending()).await;
    let visited: BTreeSet<SocketAddr> = result.visits.iter().map(|v| v.address).collect();
    assert_eq!(visited, expected.visited);
    assert!(!result.stopped_early);
    let text = encode(&registry);
    let reachable_ok = expected.reachable.len() - expected.oversized.len();
    for line in [
        format!("sensor_crawl_visits_total{{result=\"reachable\"}} {reachable_ok}"),
        format!("sensor_crawl_visits_total{{result=\"refused\"}} {}", expected.refused.len()),
        format!("sensor_crawl_nodes_known {}", expected.visited.len()),
        format!("sensor_crawl_visit_duration_seconds_count {}", expected.visited.len()),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }

    // Without lab mode the loopback seed is not dialled, only counted.
    options.allow_private = false;
    let result = crawl(&options, None, &metrics, &mut Progress::Hidden, std::future::pending()).await;
    assert!(result.visits.is_empty());
    assert_eq!(result.filtered.values().sum::<u64>(), 1);
    assert!(encode(&registry).lines().any(|l| l == "sensor_crawl_addresses_filtered_total{reason=\"loopback\"} 1"));
    lab.stop().await;
}

/// `max_duration` bounds the crawl: with every node slow to answer, it stops on time and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_stops_a_slow_crawl() {
    use sensor::{
        crawl::{
            engine::{EngineOptions, crawl},
            progress::Progress,
            visit::VisitOptions,
        },
        metrics::CrawlMetrics,
    };
    let spec = LabSpec { nodes: 10, block: 79, seed: 3, reply_delay: Duration::from_secs(3), ..spec() };
    let lab = Lab::start(spec).await.expect("synthetic network");
    let metrics = CrawlMetrics::register(&mut prometheus_client::registry::Registry::default(), &[], &[]);
    let options = EngineOptions {
        visit: VisitOptions {
            network: Network::Devnet,
            peer_id: uuid::Uuid::new_v4(),
            timeout: Duration::from_secs(10),
            max_requests: 8,
            max_addresses: 2500,
        },
        seeds: vec![lab.seed()],
        not_due: Vec::new(),
        concurrency: 4,
        allow_private: true,
        max_nodes: 1000,
        max_duration: Duration::from_millis(500),
    };
    let started = Instant::now();
    let result = crawl(&options, None, &metrics, &mut Progress::Hidden, std::future::pending()).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(result.stopped_early);
    assert!(result.visits.is_empty(), "the seed's visit was still waiting for its reply");
    assert_eq!(result.known, 1);
    lab.stop().await;
}
