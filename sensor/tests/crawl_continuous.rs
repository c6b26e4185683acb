//! `sensor crawl`'s continuous mode (a fleet's crawl sidecar) with the real binary against a
//! synthetic kaspa-p2p-lib network on 127.80.x.y: the first round maps the network and plans
//! every visited node's next visit (1.2 × uptime clamped to the revisit bounds, here an hour
//! away), so the following rounds are skipped; a node made due is visited alone in the next
//! round. `/metrics` counts the visits, the reports carry `Report.crawl` as `<sender>-crawl`,
//! and SIGTERM exits 0. Loopback only; every wait is bounded.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use sensor_core::network::Network;
use sensor_testkit::lab::{Lab, LabSpec};
use support::{
    collector::TestCollector,
    sensor_process::{SensorProcess, Spawn, metric},
};

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(30);

fn query(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Polls (every 100 ms, bounded by [`WAIT`]) until `sql` returns at least `want`.
async fn wait_count(db: &Path, sql: &str, want: i64, crawler: &SensorProcess) {
    let deadline = Instant::now() + WAIT;
    loop {
        if db.exists() && query(db, sql) >= want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql} never reached {want}:\n{}", crawler.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_revisit_only_due_nodes_and_report_the_crawl() {
    let spec = LabSpec {
        nodes: 16,
        block: 80,
        degree: 3,
        page: 2,
        dead_every: 5,
        wrong_network_nodes: vec![],
        oversized_nodes: vec![],
        rejecting_nodes: vec![],
        network: Network::Devnet,
        wrong_network: Network::Mainnet,
        seed: 21,
        junk: vec![],
        reply_delay: Duration::ZERO,
    };
    let lab = Lab::start(spec).await.expect("synthetic network");
    let expected = lab.expected();
    assert!(expected.visited.len() > 3 && !expected.refused.is_empty(), "a graph worth crawling: {expected:?}");
    let collector = TestCollector::default();
    let collector_addr = collector.serve().await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("crawler");
    let db = data.join("sensor.sqlite");
    let args: Vec<String> = [
        "crawl",
        "--network",
        "devnet",
        "--seed",
        &lab.seed().to_string(),
        "--allow-private-targets",
        "--interval-secs",
        "1",
        "--timeout-ms",
        "2000",
        "--data-dir",
        &data.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let env = [
        ("SENSOR_REPORT_ENDPOINT", format!("http://{collector_addr}")),
        ("SENSOR_REPORT_OWNER_NAMESPACE", "lab".to_owned()),
        ("SENSOR_REPORT_OWNER_NAME", "fleet".to_owned()),
        ("SENSOR_REPORT_SENDER", "fleet-0".to_owned()),
        ("SENSOR_REPORT_INTERVAL_MS", "1000".to_owned()),
        ("SENSOR_CRAWL_MIN_REVISIT_SECS", "3600".to_owned()),
        ("SENSOR_CRAWL_MAX_REVISIT_SECS", "7200".to_owned()),
    ];
    let mut crawler = SensorProcess::spawn(Spawn {
        dir: dir.path(),
        name: "crawler",
        args: &args,
        env: &env,
        metrics: true,
        rust_log: "info",
        wait: WAIT,
    });
    crawler.wait_ready().await;

    // Round 1 maps the network; the report says so.
    let visited = expected.visited.len() as u64;
    let report = collector
        .wait_for("with the first round", WAIT, |r| {
            r.crawl.as_ref().is_some_and(|c| c.crawls >= 1 && c.last_visited == visited)
        })
        .await;
    assert_eq!(report.sender, "fleet-0-crawl");
    assert!(report.peers.is_none() && report.hole_punch.is_none());
    let c = report.crawl.unwrap();
    assert_eq!(c.network, "kaspa-devnet");
    assert_eq!(c.reachable_nodes, expected.reachable.len() as u64, "{c:?}");
    assert_eq!(c.last_reachable, expected.reachable.len() as u64);
    let refused = c.last_unreachable_by_class.iter().find(|e| e.error_class == "refused").map(|e| e.visits);
    assert_eq!(refused, Some(expected.refused.len() as u64), "{c:?}");
    assert!(c.last_finished_unix_ms > 0);

    // Every visited node's next visit is the minimum (first sight: no uptime yet), an hour out,
    // so the next rounds find nothing due and are skipped.
    let in_50_minutes = time::OffsetDateTime::now_utc() + Duration::from_secs(3000);
    let planned = format!(
        "SELECT count(*) FROM crawl_nodes WHERE last_visit IS NOT NULL AND next_visit > '{}'",
        sensor_core::timestamp::format_timestamp(in_50_minutes)
    );
    assert_eq!(query(&db, &planned), visited as i64, "every visited node planned an hour out");
    let deadline = Instant::now() + WAIT;
    while !crawler.log_text().contains("round skipped") {
        assert!(Instant::now() < deadline, "no round was skipped:\n{}", crawler.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(query(&db, "SELECT count(*) FROM crawls"), 1, "no second crawl while nothing is due");

    // A node made due is visited alone in the next round.
    let due = expected.reachable.iter().find(|a| **a != lab.seed()).expect("a reachable node besides the seed");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE crawl_nodes SET next_visit = '2000-01-01T00:00:00.000000000Z' WHERE address = ?1",
        [due.to_string()],
    )
    .unwrap();
    drop(conn);
    wait_count(&db, "SELECT count(*) FROM crawls WHERE finished_at IS NOT NULL", 2, &crawler).await;
    let second = "(SELECT crawl_id FROM crawls ORDER BY started_at DESC LIMIT 1)";
    assert_eq!(query(&db, &format!("SELECT count(*) FROM crawl_visits WHERE crawl_id = {second}")), 1);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let address: String = conn
        .query_row(&format!("SELECT address FROM crawl_visits WHERE crawl_id = {second}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(address, due.to_string());
    let uptime_edges: i64 = conn
        .query_row(&format!("SELECT count(*) FROM crawl_edges WHERE crawl_id = {second}"), [], |r| r.get(0))
        .unwrap();
    assert!(uptime_edges > 0, "gossip about known, not-due nodes is still recorded as edges");
    drop(conn);

    // /metrics counts both rounds' visits.
    let text = crawler.metrics_text().await;
    let reachable_visits = metric(&text, "sensor_crawl_visits_total{result=\"reachable\"}").unwrap_or(0.0);
    assert_eq!(reachable_visits as usize, expected.reachable.len() + 1, "{text}");

    let status = crawler.terminate().await;
    assert!(status.success(), "SIGTERM exits 0: {status}\n{}", crawler.log_text());
    assert!(crawler.log_text().contains("continuous crawl stopped"));
    lab.stop().await;
}
