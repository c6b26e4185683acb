//! The real API server run (`--real-api`, root): `scripts/cluster.sh up --control-plane-only` starts etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler built from upstream, in a temporary
//! state directory on ports of its own (API 26443, etcd 22379). The CRDs, 20 namespaces and the
//! fleets (StatefulSet mode, `sensors` replicas each) are created through the API server; the
//! `operator` binary runs `operator run` against it with the admin kubeconfig (its RBAC is proven
//! by `sensor/tests/cluster_operator.rs`), and the load generator pushes every sensor's report to
//! its collector.
//!
//! There is no node, so the controller manager creates every sensor pod and the scheduler marks
//! each Unschedulable: the run waits for that (and for every fleet's status to show all its
//! sensors reporting) before it measures, so the window sees the steady state only. Measured over
//! the window of `secs` seconds:
//! - operator: RSS (sampled every second, and VmHWM), CPU;
//! - reconciles per second and p50/p99, estimated from the operator's own
//!   `controller_runtime_reconcile_time_seconds` histogram (linear within a bucket, as
//!   `histogram_quantile` does; buckets double from 1 ms);
//! - API requests per fleet per minute and status writes per fleet per 10 s, counted in the API
//!   server's audit log by the operator's User-Agent;
//! - kube-apiserver and etcd CPU (share of one core, from `/proc/<pid>/stat`) and RSS.
//!
//! Environment: `P2P_BENCH_SETTLE_SECS` bounds the wait for the steady state (default 1200);
//! `P2P_BENCH_KEEP_CLUSTER` keeps the control plane and its state directory afterwards;
//! `P2P_BENCH_OPERATOR_WRAPPER` runs the operator under a profiler, e.g. `heaptrack -o FILE` (the
//! RSS figures are then the wrapper's, not the operator's).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use operator::crd::SensorFleet;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{NAMESPACES, fleet_key, rss_mib, rss_parts, spawn_load};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const API_PORT: u16 = 26443;
const ETCD_PORT: u16 = 22379;
const MANAGER: &str = "fleet-load-bench";
/// How the operator's requests are told apart in the audit log (`operator::run::USER_AGENT`).
const OPERATOR_AGENT: &str = "p2p-sensor-operator/";

type Result<T, E = String> = std::result::Result<T, E>;

/// The control plane; `scripts/cluster.sh down` on drop unless `P2P_BENCH_KEEP_CLUSTER` is set.
struct ControlPlane {
    dir: tempfile::TempDir,
}

impl ControlPlane {
    fn up() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("fleet-load-cluster-").tempdir().map_err(|e| e.to_string())?;
        let plane = ControlPlane { dir };
        let started = Instant::now();
        plane.script(&["up", "--clean", "--control-plane-only"])?;
        println!("control plane up in {:.1} s ({})", started.elapsed().as_secs_f64(), plane.dir.path().display());
        Ok(plane)
    }

    fn script(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("bash")
            .arg(format!("{REPO}/scripts/cluster.sh"))
            .args(args)
            .env("P2P_CLUSTER_DIR", self.dir.path())
            .env("P2P_CLUSTER_API_PORT", API_PORT.to_string())
            .env("P2P_CLUSTER_ETCD_PORT", ETCD_PORT.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("scripts/cluster.sh {args:?}: {e}"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("scripts/cluster.sh {args:?}: {}\n{text}", out.status))
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The pid of component `name` (etcd, kube-apiserver, …) from its pid file.
    fn pid(&self, name: &str) -> Result<u32> {
        let file = self.path(&format!("run/{name}.pid"));
        std::fs::read_to_string(&file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", file.display()))
    }

    async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(self.path("admin.kubeconfig")).map_err(|e| e.to_string())?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Client::try_from(config).map_err(|e| e.to_string())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::env::var_os("P2P_BENCH_KEEP_CLUSTER").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
            eprintln!(
                "P2P_BENCH_KEEP_CLUSTER: kept; P2P_CLUSTER_DIR={} scripts/cluster.sh down removes it",
                kept.display()
            );
            return;
        }
        if let Err(e) = self.script(&["down"]) {
            eprintln!("{e}");
        }
    }
}

/// A child process killed on drop.
/// A child process, killed on drop together with its process group when it leads one (a
/// profiler wrapper's own children go too).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; ESRCH when the child
            // leads none, which is fine.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1 (bound and released; nothing else on this machine picks ports here).
fn free_port() -> Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())
}

/// `GET path` over HTTP/1.0 on loopback; the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

/// Polls `check` every `every` until it returns Some, for at most `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {} s waiting for {what}", limit.as_secs()));
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn run(n_fleets: u64, sensors: u64, secs: u64, peers: u64) -> Result<()> {
    let plane = ControlPlane::up()?;
    let client = plane.client().await?;
    let apply = PatchParams::apply(MANAGER).force();

    // CRDs, then namespaces and fleets, as `kubectl apply` would send them.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(format!("{REPO}/crds")).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let crd: CustomResourceDefinition =
            serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &apply, &Patch::Apply(&crd)).await.map_err(|e| format!("apply CRD {name}: {e}"))?;
        wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), Duration::from_millis(250), || async {
            let crd = crds.get(&name).await.map_err(|e| e.to_string())?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
        })
        .await?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for n in 0..NAMESPACES.min(n_fleets) {
        let name = format!("ns-{n}");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        namespaces.patch(&name, &apply, &Patch::Apply(&ns)).await.map_err(|e| format!("namespace {name}: {e}"))?;
    }
    let created = Instant::now();
    futures::stream::iter(0..n_fleets)
        .map(|i| {
            let client = client.clone();
            let apply = apply.clone();
            async move {
                let (namespace, name) = fleet_key(i);
                let fleet = json!({
                    "apiVersion": "p2psensor.dev/v1alpha1", "kind": "SensorFleet",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"network": "mainnet", "mode": "StatefulSet", "replicas": sensors}
                });
                let api: Api<SensorFleet> = Api::namespaced(client, &namespace);
                api.patch(&name, &apply, &Patch::Apply(&fleet)).await.map(drop).map_err(|e| format!("{name}: {e}"))
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    println!("{n_fleets} SensorFleets created in {:.1} s", created.elapsed().as_secs_f64());

    // The operator, as `operator run` in its pod: leader election off (one replica).
    let collector = free_port()?;
    let http = free_port()?;
    let log = std::fs::File::create(plane.path("operator.log")).map_err(|e| e.to_string())?;
    let wrapper = std::env::var("P2P_BENCH_OPERATOR_WRAPPER").unwrap_or_default();
    let mut command = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_operator"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_operator")),
    };
    let operator = Process(
        command
            .process_group(0)
            .arg("run")
            .args(["--collector-listen", &collector.to_string(), "--http-listen", &http.to_string()])
            .args(["--collector-endpoint", &format!("http://{collector}"), "--sensor-image", "sensor:bench"])
            .args(["--leader-election", "false", "--log-filter", "warn"])
            .env("KUBECONFIG", plane.path("admin.kubeconfig"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", env!("CARGO_BIN_EXE_operator")))?,
    );
    let operator_pid = operator.0.id().to_string();
    let settle =
        Duration::from_secs(std::env::var("P2P_BENCH_SETTLE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(1200));
    // The load runs until it is killed at the end (its own clock would not know the settle time).
    let _load = Process(spawn_load(collector, n_fleets, sensors, settle.as_secs() + secs + 120, peers));

    // The steady state: every pod created and marked by the scheduler, every fleet reconciled at
    // its generation with all its sensors reporting.
    let settling = Instant::now();
    let pods: Api<Pod> = Api::all(client.clone());
    let fleets: Api<SensorFleet> = Api::all(client.clone());
    let want_pods = n_fleets * sensors;
    let mut last_print = Instant::now();
    loop {
        let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let total = list.items.len() as u64;
        let scheduled = list
            .items
            .iter()
            .filter(|p| {
                let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
                conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled"))
            })
            .count() as u64;
        let list = fleets.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let reporting = list.items.iter().filter(|f| reports_all(f, sensors)).count() as u64;
        if scheduled == want_pods && total == want_pods && reporting == n_fleets {
            break;
        }
        let progress = format!(
            "pods {total}/{want_pods} ({scheduled} marked by the scheduler), fleets reporting {reporting}/{n_fleets}"
        );
        if settling.elapsed() >= settle {
            return Err(format!("no steady state after {} s: {progress}", settle.as_secs()));
        }
        if last_print.elapsed() >= Duration::from_secs(30) {
            last_print = Instant::now();
            println!("  settling {:>4.0} s: {progress}", settling.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!(
        "steady state after {:.0} s (operator started → every pod marked, every fleet reporting)",
        settling.elapsed().as_secs_f64()
    );

    // The window.
    let audit = plane.path("logs/audit.log");
    let audit_from = std::fs::metadata(&audit).map(|m| m.len()).map_err(|e| format!("{}: {e}", audit.display()))?;
    let pids = [
        ("operator", operator_pid.clone()),
        ("kube-apiserver", plane.pid("kube-apiserver")?.to_string()),
        ("etcd", plane.pid("etcd")?.to_string()),
    ];
    let cpu_before: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(p)).collect::<Result<_>>()?;
    let metrics_before = http_get(http, "/metrics").await?;
    let started = Instant::now();
    let mut peak = 0.0f64;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_mib(&operator_pid).0);
    }
    let metrics_after = http_get(http, "/metrics").await?;
    let cpu_after: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(p)).collect::<Result<_>>()?;
    let window = started.elapsed().as_secs_f64();
    let requests = operator_requests(&audit, audit_from)?;
    let list = fleets.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    let reporting_at_end = list.items.iter().filter(|f| reports_all(f, sensors)).count();

    // Figures.
    let reconciles = histogram_delta(&metrics_before, &metrics_after, "sensorfleet");
    let count: f64 = reconciles.last().map_or(0.0, |b| b.1);
    let total: u64 = requests.values().sum();
    let status_writes = requests.get("patch sensorfleets/status").copied().unwrap_or(0);
    let per_fleet_min = |n: u64| n as f64 / n_fleets as f64 / (window / 60.0);
    println!(
        "fleet_load --real-api: {n_fleets} fleets x {sensors} sensors, {peers} peers per sensor, report every 10 s, window {window:.0} s"
    );
    println!("  fleets whose status shows every sensor reporting at the end: {reporting_at_end}/{n_fleets}");
    println!(
        "  reconciles: {count:.0} ({:.1}/s); p50 {:.1} ms  p99 {:.1} ms (histogram estimate)",
        count / window,
        quantile(&reconciles, 0.5) * 1000.0,
        quantile(&reconciles, 0.99) * 1000.0
    );
    println!("  API requests by the operator: {total} ({:.2} per fleet per minute)", per_fleet_min(total));
    for (what, n) in &requests {
        println!("    {what}: {n}");
    }
    println!(
        "  status writes: {status_writes} ({:.3} per fleet per 10 s)",
        status_writes as f64 / n_fleets as f64 / (window / 10.0)
    );
    let (rss_end, hwm) = rss_mib(&operator_pid);
    println!("  operator RSS MiB: end {rss_end:.1}, max sampled {peak:.1}, peak (VmHWM) {hwm:.1}");
    println!("    of which MiB: {}", rss_parts(&operator_pid));
    for (i, (name, pid)) in pids.iter().enumerate() {
        println!(
            "  {name}: CPU {:.1} % of one core, RSS {:.0} MiB",
            (cpu_after[i] - cpu_before[i]) / window * 100.0,
            rss_mib(pid).0
        );
    }
    drop(operator);
    Ok(())
}

/// True when `fleet`'s status was written for its generation and counts `sensors` reporting.
fn reports_all(fleet: &SensorFleet, sensors: u64) -> bool {
    fleet
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == fleet.metadata.generation && s.sensors.reporting as u64 == sensors)
}

/// User plus system CPU time of process `pid`, seconds (`/proc/<pid>/stat` fields 14 and 15, in
/// clock ticks of `getconf CLK_TCK`).
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("no ')' in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or(format!("/proc/{pid}/stat: field"));
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    // Fields 14 and 15 of the whole line are 12 and 13 after the name (field 3 is index 0).
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// The operator's completed requests in the audit log from byte `from` on, by "verb
/// resource[/subresource]"; watches are counted once each, when they start.
fn operator_requests(audit: &Path, from: u64) -> Result<BTreeMap<String, u64>> {
    let mut file = std::fs::File::open(audit).map_err(|e| format!("{}: {e}", audit.display()))?;
    file.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut by = BTreeMap::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        let watch = event["verb"] == "watch";
        let stage = if watch { "ResponseStarted" } else { "ResponseComplete" };
        if event["stage"] != stage || !event["userAgent"].as_str().is_some_and(|a| a.starts_with(OPERATOR_AGENT)) {
            continue;
        }
        let o = &event["objectRef"];
        let resource = match o["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", o["resource"].as_str().unwrap_or("")),
            None => o["resource"].as_str().unwrap_or("").to_string(),
        };
        *by.entry(format!("{} {resource}", event["verb"].as_str().unwrap_or(""))).or_default() += 1;
    }
    Ok(by)
}

/// The cumulative buckets (upper bound s, count) of `controller_runtime_reconcile_time_seconds`
/// for `controller`, as the difference between two scrapes; the last entry is +Inf.
fn histogram_delta(before: &str, after: &str, controller: &str) -> Vec<(f64, f64)> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| l.starts_with("controller_runtime_reconcile_time_seconds_bucket{"))
            .filter(|l| l.contains(&format!("controller=\"{controller}\"")))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                let count = l.rsplit(' ').next()?.parse().ok()?;
                Some((le, count))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let (b, a) = (buckets(before), buckets(after));
    a.iter().map(|(le, n)| (*le, n - b.iter().find(|x| x.0 == *le).map_or(0.0, |x| x.1))).collect()
}

/// Quantile `q` (0–1) from cumulative buckets, interpolating linearly within the bucket (seconds;
/// the last finite bound when it falls in +Inf; 0 for no observations).
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return 0.0 };
    if total == 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 0.0 };
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, count);
    }
    lower.0
}
