//! Benchmarks for `sensor listen` (issue 2, "Measure"). Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench -p sensor --bench listen_load -- capacity [PEERS] [noprobe]   # default 5000
//! cargo bench -p sensor --bench listen_load -- throughput [PEERS]   # default 2000
//! cargo bench -p sensor --bench listen_load -- soak [HELD] [RATE] [SECS] [noprobe]   # 5000 1000 60
//! ```
//!
//! * **capacity**: PEERS kept-alive inbound peers, each from its own 127.x.y.z source address
//!   (raw Kaspa handshakes over kaspa-p2p-lib's generated client); prints the sensor process's
//!   RSS before and after, and RSS per 1,000 peers.
//! * **throughput**: PEERS short-lived peers (connect, handshake, leave) against the sensor —
//!   counted when the sensor has stored the peer's accepted event *and* its verdict — then the
//!   same load against a bare kaspa-p2p-lib accept loop (handshake only); prints both rates in
//!   peers/s and their ratio.
//!
//! * **soak** (issue 7, "Load"): HELD kept-alive peers, then RATE new short-lived connections per
//!   second (connect, handshake, leave) for SECS seconds while the held ones stay; prints
//!   connections attempted / completed / refused by reason, events stored by kind and whether
//!   they equal the connections made, the sensor's RSS (start, with held peers, peak, end), its
//!   CPU seconds, and whether it stayed alive without a panic. The driver is
//!   `sensor/tests/support/load.rs`, shared with the CI-sized test `sensor/tests/listen_soak.rs`;
//!   its module docs define what each connection must store. Arguments may also be written
//!   `HELD=…`, `RATE=…`, `SECS=…`.
//!
//! Peers advertise port 9 on their source address, where nothing listens, so every dial-back is
//! refused twice (`private/refused`): the classification work is real but bounded by loopback.
//! The sensor admits at most `listen.max_pending_handshakes` (32) handshakes at once, so clients run 16 at once.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use kaspa_p2p_lib::{Adaptor, ConnectionInitializer, Hub, KaspadHandshake, Router, common::ProtocolError};
use sensor::kaspa::{version::LocalVersion, wire::WireConnection};
use sensor_core::network::Network;
use tokio::sync::Semaphore;
use uuid::Uuid;

const HANDSHAKES_AT_ONCE: usize = 16;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The i-th source address: 127.0.0.2, … spread over /24s, never .0 or .255.
fn source(i: usize) -> IpAddr {
    let n = i + 2;
    IpAddr::V4(Ipv4Addr::new(127, (n / (250 * 250)) as u8, ((n / 250) % 250) as u8 + 1, (n % 250) as u8 + 1))
}

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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct SensorProcess {
    child: Child,
    p2p: SocketAddr,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl SensorProcess {
    /// `probe = false` leaves lab mode off: loopback sources are then `unknown/private_source`
    /// without a dial-back, which isolates the cost of holding connections.
    fn start(max_peers: usize, probe: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p2p = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // BENCH_SENSOR_WRAPPER="valgrind --tool=massif" runs the sensor under a profiler.
        let wrapper = std::env::var("BENCH_SENSOR_WRAPPER").unwrap_or_default();
        let mut argv: Vec<String> = wrapper.split_whitespace().map(str::to_owned).collect();
        argv.push(env!("CARGO_BIN_EXE_sensor").to_owned());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["listen", "--network", "devnet"])
            .args(probe.then_some("--allow-private-targets"))
            .args(["--listen", &p2p.to_string(), "--metrics-listen", &metrics.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .env("SENSOR_LISTEN_MAX_INBOUND_PEERS", (max_peers + 100).to_string())
            .env("SENSOR_LISTEN_MAX_PEERS_PER_SUBNET", "1024")
            .env("SENSOR_CLASSIFY_PROBE_TIMEOUT_MS", "1000")
            .env("SENSOR_CLASSIFY_PROBE_RETRY_DELAY_MS", "50")
            .env("SENSOR_CLASSIFY_CONCURRENCY", "256")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sensor");
        let s = Self { child, p2p, metrics, _dir: dir };
        let start = Instant::now();
        while !http_get(s.metrics, "/readyz").starts_with("HTTP/1.1 200") {
            assert!(start.elapsed() < Duration::from_secs(120), "sensor not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn metric(&self, name: &str) -> f64 {
        http_get(self.metrics, "/metrics")
            .lines()
            .filter(|l| {
                l.starts_with(name)
                    && (l.as_bytes().get(name.len()) == Some(&b' ') || l.as_bytes().get(name.len()) == Some(&b'{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(start.elapsed() < limit, "{what} not reached within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for SensorProcess {
    /// Never leave a sensor behind, even when the benchmark panics.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Connects and handshakes `count` peers against `target`; `keep` holds them open.
async fn run_peers(target: SocketAddr, count: usize, keep: bool) -> (usize, Duration) {
    let permits = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let src = source(i);
            let version =
                LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address: Some(SocketAddr::new(src, 9)) };
            let mut conn =
                WireConnection::connect(target, Some(src), Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
            conn.handshake(version.message(), Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
            drop(permit);
            if keep {
                tokio::spawn(conn.serve());
            } else {
                conn.close(Duration::from_secs(5)).await;
            }
            Ok::<(), String>(())
        });
    }
    let mut ok = 0;
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => *errors.entry(e).or_default() += 1,
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    for (e, n) in errors {
        println!("  client failures: {n} x {e}");
    }
    (ok, started.elapsed())
}

struct BareNode;

#[tonic::async_trait]
impl ConnectionInitializer for BareNode {
    async fn initialize_connection(&self, router: Arc<Router>) -> Result<(), ProtocolError> {
        let mut handshake = KaspadHandshake::new(&router);
        router.start();
        let ours = LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address: None };
        handshake.handshake(ours.message()).await?;
        let _flows = sensor::kaspa::flows::PeerFlows::subscribe_after_handshake(&router);
        handshake.exchange_ready_messages().await?;
        router.close().await;
        Ok(())
    }
}

async fn capacity(peers: usize, probe: bool) {
    let sensor = SensorProcess::start(peers, probe);
    let pid = sensor.child.id();
    let base = rss_kib(pid);
    let (ok, took) = run_peers(sensor.p2p, peers, true).await;
    sensor.wait_for("all peers active and classified", Duration::from_secs(600), |s| {
        s.metric("sensor_connections_active") as usize >= ok
            && s.metric("sensor_verdicts_total") as usize >= ok
            && s.metric("sensor_storage_queue_depth") == 0.0
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(pid);
    let active = sensor.metric("sensor_connections_active");
    println!("capacity: peers_requested={peers} peers_connected={ok} connections_active={active} probes={probe}");
    println!(
        "capacity: connect+handshake time {:.1} s ({:.0} peers/s)",
        took.as_secs_f64(),
        ok as f64 / took.as_secs_f64()
    );
    println!("capacity: sensor RSS idle {:.1} MiB, with peers {:.1} MiB", base as f64 / 1024.0, loaded as f64 / 1024.0);
    println!(
        "capacity: RSS per 1000 peers {:.1} MiB",
        (loaded.saturating_sub(base)) as f64 / 1024.0 / ok.max(1) as f64 * 1000.0
    );
    sensor.stop();
}

async fn throughput(peers: usize) {
    let sensor = SensorProcess::start(peers, true);
    let started = Instant::now();
    let (ok, _) = run_peers(sensor.p2p, peers, false).await;
    sensor.wait_for("all verdicts stored", Duration::from_secs(600), |s| {
        s.metric("sensor_verdicts_total") as usize >= ok && s.metric("sensor_storage_events_total") as usize >= 2 * ok
    });
    let sensor_time = started.elapsed();
    sensor.stop();

    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bare = Adaptor::bidirectional(addr.into(), Hub::new(), Arc::new(BareNode), Default::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (bare_ok, bare_time) = run_peers(addr, peers, false).await;
    bare.close().await;

    let sensor_rate = ok as f64 / sensor_time.as_secs_f64();
    let bare_rate = bare_ok as f64 / bare_time.as_secs_f64();
    println!(
        "throughput: sensor {ok} peers handshaken+classified+stored in {:.2} s = {sensor_rate:.0} peers/s",
        sensor_time.as_secs_f64()
    );
    println!(
        "throughput: bare kaspa-p2p-lib accept loop {bare_ok} peers handshaken in {:.2} s = {bare_rate:.0} peers/s",
        bare_time.as_secs_f64()
    );
    println!("throughput: ratio sensor/bare = {:.2}", sensor_rate / bare_rate);
}

/// `soak [HELD] [RATE] [SECS] [noprobe]`, positional or as `KEY=VALUE`.
async fn soak(args: &[String]) {
    use support::load::SoakPlan;
    let mut plan = SoakPlan { held: 5000, rate: 1000, secs: 60, probe: true };
    let mut positional = 0;
    for arg in args {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), v),
            None if arg == "noprobe" => {
                plan.probe = false;
                continue;
            }
            None => {
                positional += 1;
                (["HELD", "RATE", "SECS"].get(positional - 1).copied().unwrap_or("?").to_owned(), arg.as_str())
            }
        };
        fn parse<T: std::str::FromStr>(arg: &str, value: &str) -> T {
            value
                .parse()
                .unwrap_or_else(|_| panic!("soak: bad argument {arg:?} (use soak [HELD] [RATE] [SECS] [noprobe])"))
        }
        match key.as_str() {
            "HELD" => plan.held = parse(arg, value),
            "RATE" => plan.rate = parse(arg, value),
            "SECS" => plan.secs = parse(arg, value),
            _ => panic!("soak: unknown argument {arg:?} (use soak [HELD] [RATE] [SECS] [noprobe])"),
        }
    }
    println!("soak: open files limit {}", support::load::raise_fd_limit());
    let dir = tempfile::tempdir().unwrap();
    let report = support::load::soak(dir.path(), &plan).await;
    report.print(&plan);
}

fn main() {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run then, so
    // the benchmark cannot rot unnoticed.
    if !std::env::args().any(|a| a == "--bench") {
        runtime.block_on(capacity(50, true));
        runtime.block_on(throughput(50));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let mode = args.first().map(String::as_str).unwrap_or("capacity");
    match mode {
        "capacity" => {
            let peers = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(5000);
            runtime.block_on(capacity(peers, args.get(2).map(String::as_str) != Some("noprobe")))
        }
        "throughput" => runtime.block_on(throughput(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2000))),
        "soak" => runtime.block_on(soak(&args[1..])),
        other => {
            eprintln!("unknown mode {other:?}: use capacity [PEERS], throughput [PEERS] or soak [HELD] [RATE] [SECS]")
        }
    }
}
