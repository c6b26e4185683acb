//! Operator load benchmark: N SensorFleets × M sensors, each sensor pushing a cumulative report
//! every 10 s over real gRPC to the operator's collector. Two API servers, one command each:
//!
//! ```text
//! cargo bench -p operator --bench fleet_load -- [fleets=1000] [sensors=5] [secs=60] [peers=100]
//! cargo bench -p operator --bench fleet_load -- --real-api [fleets=1000] [sensors=5] [secs=60] [peers=100]
//! ```
//! - mocked ([`mocked`]): the real reconciler and collector in this process against a mocked API
//!   server that answers instantly: the operator's own cost, with no API server in the way.
//! - `--real-api` ([`real_api`], root): `scripts/cluster.sh` starts a real etcd, kube-apiserver,
//!   kube-controller-manager and kube-scheduler (no node: the sensor pods stay Pending), the
//!   fleets are created through the API server, and the `operator` binary runs against it as
//!   `operator run` does in a pod.
//!
//! The report load runs in a child process (this binary, `load` mode) so that the operator's RSS
//! is its own. `cargo test --all-targets` runs this binary without `--bench`: a small mocked smoke
//! pass that checks the pipeline end to end instead of measuring it.

mod mocked;
mod real_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sensor_report::v1::collector_client::CollectorClient;
use sensor_report::v1::{Owner, PeerSummary, Report, UserAgentCount};
use sensor_report::{OWNER_SENSOR_FLEET, PeerIdSketch};

/// The sensors' report interval, the operator's status interval and the reconcile requeue.
const INTERVAL: Duration = Duration::from_secs(10);
/// Fleets are spread over this many namespaces (`ns-0` …).
const NAMESPACES: u64 = 20;

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// Fleet `i`'s (namespace, name).
fn fleet_key(i: u64) -> (String, String) {
    (format!("ns-{}", i % NAMESPACES), format!("fleet-{i}"))
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
    let bench = std::env::args().any(|a| a == "--bench");
    let fleets = arg(&args, 0, if bench { 1000 } else { 20 });
    let sensors = arg(&args, 1, if bench { 5 } else { 2 });
    let secs = arg(&args, 2, if bench { 60 } else { 12 });
    let peers = arg(&args, 3, 100);
    if std::env::args().any(|a| a == "--real-api") {
        if let Err(e) = runtime.block_on(real_api::run(fleets, sensors, secs, peers)) {
            eprintln!("fleet_load --real-api: {e}");
            std::process::exit(1);
        }
    } else {
        runtime.block_on(mocked::run(fleets, sensors, secs, peers, bench));
    }
}

/// Starts the load generator (this binary in `load` mode) against the collector at `addr`.
fn spawn_load(addr: SocketAddr, fleets: u64, sensors: u64, secs: u64, peers: u64) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["load", &addr.to_string()])
        .args([fleets, sensors, secs, peers].map(|n| n.to_string()))
        .spawn()
        .expect("spawn the load generator")
}

/// Field `name` (e.g. `"VmRSS:"`) of `/proc/PID/status` as a number (kB for sizes); 0 when it
/// cannot be read.
fn proc_status(pid: &str, name: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// VmRSS and VmHWM of process `pid` (`"self"` for this one), MiB; 0 when it cannot be read.
fn rss_mib(pid: &str) -> (f64, f64) {
    (proc_status(pid, "VmRSS:") / 1024.0, proc_status(pid, "VmHWM:") / 1024.0)
}

/// What process `pid`'s resident memory is made of: anonymous (heap, stacks), file-backed (the
/// mapped binary and libraries) and shared memory, MiB each, and its thread count.
fn rss_parts(pid: &str) -> String {
    let mib = |name| proc_status(pid, name) / 1024.0;
    format!(
        "anonymous {:.1}, file-backed {:.1}, shared {:.1}; {} threads",
        mib("RssAnon:"),
        mib("RssFile:"),
        mib("RssShmem:"),
        proc_status(pid, "Threads:")
    )
}

/// Percentile `p` (0–1) of `v` by nearest rank; 0 for no samples.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * p).round() as usize] }
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
                owner: Some(Owner { namespace: fleet_key(f).0, kind: OWNER_SENSOR_FLEET.into(), name: fleet_key(f).1 }),
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
