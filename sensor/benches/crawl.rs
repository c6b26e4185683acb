//! Benchmark for `sensor crawl` (issue 5, "Measure"). Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench -p sensor --bench crawl -- [NODES] [DELAY_MS]   # defaults 1000, 0
//! ```
//!
//! Builds a NODES-node synthetic network in this process ([`sensor_testkit::lab`]: kaspa-p2p-lib
//! peers on 127.76.x.y, out-degree 8, every 10th node listed but not listening), then runs the
//! real `sensor crawl` binary against it from node 0 and prints: nodes visited and found vs the
//! graph, wall time, nodes visited per second, the crawler's peak RSS and its CPU share
//! ((user + system CPU time) / wall time, from `getrusage(RUSAGE_CHILDREN)`; 1.0 = one core
//! busy). Target (issue 5): the whole 1,000-node network in ≤ 10 s on 2 cores.
//!
//! Loopback has no latency (and this kernel no netem, docs/natlab.md), so with DELAY_MS = 0 the crawl
//! is CPU-bound by construction. DELAY_MS makes every node wait that long before each
//! `Addresses` reply, an emulated round trip: the CPU share then shows how much of a visit is
//! waiting.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use sensor_core::network::Network;
use sensor_testkit::lab::{Lab, LabSpec};

fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `(peak RSS KiB, user + system CPU)` of the waited-for children.
fn children_usage() -> (i64, Duration) {
    // SAFETY: getrusage with a valid pointer to a zeroed local struct.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
    (u.ru_maxrss, tv(u.ru_utime) + tv(u.ru_stime))
}

fn main() {
    let numbers: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    // `cargo test --all-targets` runs this binary without `--bench`: a 50-node smoke run then
    // (which must find the whole graph), so the benchmark cannot rot unnoticed.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let nodes = if smoke { 50 } else { numbers.first().map_or(1000, |&n| n as usize) };
    let delay = Duration::from_millis(numbers.get(1).copied().unwrap_or(0));
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let spec = LabSpec {
            nodes,
            block: 76,
            degree: 8,
            page: 4,
            dead_every: 10,
            wrong_network_nodes: vec![],
            oversized_nodes: vec![],
            rejecting_nodes: vec![],
            network: Network::Devnet,
            wrong_network: Network::Mainnet,
            seed: 1,
            junk: vec![],
            reply_delay: delay,
        };
        let built = Instant::now();
        let lab = Lab::start(spec).await.expect("synthetic network");
        let expected = lab.expected();
        println!(
            "crawl bench: {nodes} nodes ({} reachable from the seed, {} of them listening), reply delay {} ms, started in {:.1} s",
            expected.visited.len(),
            expected.reachable.len(),
            delay.as_millis(),
            built.elapsed().as_secs_f64()
        );
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("crawl.json");
        let seed = lab.seed().to_string();
        let started = Instant::now();
        let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_sensor"))
            .args(["crawl", "--network", "devnet", "--allow-private-targets", "--seed", &seed])
            .args(["--concurrency", "256", "--timeout-ms", "5000", "--max-duration-secs", "120"])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--output")
            .arg(&output)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .status()
            .await
            .expect("sensor crawl runs");
        let wall = started.elapsed();
        let (rss_kib, cpu) = children_usage();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&output).unwrap_or_default()).unwrap_or_default();
        let visited = doc["crawl"]["visited"].as_u64().unwrap_or(0);
        let reachable = doc["crawl"]["reachable"].as_u64().unwrap_or(0);
        let crawl_ms = doc["crawl"]["duration_ms"].as_u64().unwrap_or(0);
        println!("crawl bench: sensor crawl exited {status}");
        println!(
            "crawl bench: visited {visited} (graph: {}), reachable {reachable} (graph: {})",
            expected.visited.len(),
            expected.reachable.len()
        );
        println!(
            "crawl bench: wall time {:.2} s (process), crawl {:.2} s; {:.0} nodes visited/s (process wall), {:.0}/s (crawl)",
            wall.as_secs_f64(),
            crawl_ms as f64 / 1000.0,
            visited as f64 / wall.as_secs_f64(),
            visited as f64 / (crawl_ms.max(1) as f64 / 1000.0)
        );
        println!(
            "crawl bench: crawler peak RSS {:.1} MiB, CPU {:.2} s = {:.0} % of one core over the wall time",
            rss_kib as f64 / 1024.0,
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
        );
        if smoke {
            assert!(status.success(), "sensor crawl failed: {status}");
            assert_eq!(visited as usize, expected.visited.len(), "smoke run: visited vs the graph");
        }
        lab.stop().await;
    });
}
