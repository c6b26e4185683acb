//! The operator on a real Kubernetes API server, no stand-ins (issue 13): `scripts/cluster.sh`
//! runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from upstream; the
//! operator binary runs outside the cluster with the token of the chart's ServiceAccount; real
//! `sensor` processes run what the fleet's and the relay's pod templates say (as a node would,
//! see [`support::cluster::PodEmulation`]) and push to the operator's collector; a real kaspad
//! 2.1.0 in a network namespace connects to a sensor. Checked: the CRDs and every CEL rule, the
//! chart's RBAC (no request of the operator is denied; what it never uses is printed), children
//! with owner references and our field manager, status with conditions and observedGeneration,
//! Events, a spec change, `.status.peers` and `.status.holePunch` from real reports, garbage
//! collection, no writes after a restart, and leader election with a takeover within the Lease.
//!
//! Needs root (network namespaces, the control plane's processes), Go (the first run builds
//! Kubernetes, ~20 min on 2 cores; cached after) and kaspad 2.1.0 (`scripts/install-prereqs.sh`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{Cluster, EmulatedContainer, Kubectl, PodEmulation, REPO, helm, wait_until};
use support::ensure;
use support::kaspad::{Kaspad, KaspadSpec, Net};
use support::netns::{Lab, ROOT_IP};
use support::process::NsProcess;
use support::sensor_process::free_port;

const OPERATOR_NS: &str = "p2p-system";
const LAB_NS: &str = "p2p-lab";
const RELEASE: &str = "p2p-sensor-operator";
/// The chart's ServiceAccount (release name = chart name, so the fullname is the release name).
const OPERATOR_SA: &str = "p2p-sensor-operator";
const OPERATOR_USER: &str = "system:serviceaccount:p2p-system:p2p-sensor-operator";
/// The fleet's first sensor listens on the lab's root leg, where kaspad in a namespace reaches it.
const SENSOR_P2P: SocketAddrV4 = SocketAddrV4::new(ROOT_IP, 16611);
const KASPAD_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 41);
const KASPAD_NAT_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);
const RELAY_PORT: u16 = 24001;
/// The operator's Lease duration (operator/src/run.rs) and grace.
const LEASE: Duration = Duration::from_secs(15 + 5);
const WAIT: Duration = Duration::from_secs(90);

const FLEET: &str = r#"
apiVersion: p2psensor.dev/v1alpha1
kind: SensorFleet
metadata: {name: lab, namespace: p2p-lab}
spec:
  network: devnet
  mode: StatefulSet
  replicas: 2
  exposure: {kind: HostNetwork}
  externalAddress: {source: None}
  probing: {allowPrivateTargets: true, timeoutMs: 2000, attempts: 2}
  storage: {kind: EmptyDir}
  relayRef: {name: relay}
  holePunch: {intervalSecs: 10, attempts: 1}
"#;

const RELAY: &str = r#"
apiVersion: p2psensor.dev/v1alpha1
kind: RelayNode
metadata: {name: relay, namespace: p2p-lab}
spec:
  ports: {tcp: 24001, quic: 24001}
  exposure: {kind: HostNetwork}
  externalAddresses: ["/ip4/198.51.100.1/tcp/24001", "/ip4/198.51.100.1/udp/24001/quic-v1"]
  limits: {reservationRatePerPeer: 0, reservationRatePerIp: 0, circuitRatePerPeer: 0, circuitRatePerIp: 0}
"#;

/// The operator binary next to the sensor binary (`cargo test --workspace` builds both).
fn operator_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_sensor")).with_file_name("operator");
    assert!(bin.exists(), "{} missing: build it first (cargo build -p operator)", bin.display());
    bin
}

/// `operator run` outside the cluster, as `identity`, with `kubeconfig`.
struct Operator {
    process: NsProcess,
    http: SocketAddr,
}

impl Operator {
    /// `collector` is where the sensors push (the operator Service's address in a cluster); a
    /// replica started while another runs listens on a port of its own (`own_collector`), as a
    /// second pod would on its own IP.
    fn start(
        dir: &Path,
        identity: &str,
        kubeconfig: &Path,
        collector: SocketAddr,
        own_collector: bool,
    ) -> Result<Operator, String> {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let listen = if own_collector { SocketAddr::from(([127, 0, 0, 1], free_port())) } else { collector };
        let env = [
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("OPERATOR_COLLECTOR_LISTEN", listen.to_string()),
            ("OPERATOR_COLLECTOR_ENDPOINT", format!("http://{collector}")),
            ("OPERATOR_HTTP_LISTEN", http.to_string()),
            ("OPERATOR_SENSOR_IMAGE", "p2p-sensor:e2e".into()),
            ("OPERATOR_STATUS_INTERVAL_SECS", "2".into()),
            ("OPERATOR_REPORT_INTERVAL_MS", "1000".into()),
            ("OPERATOR_REPORT_TIMEOUT_SECS", "30".into()),
            ("POD_NAMESPACE", OPERATOR_NS.into()),
            ("POD_NAME", identity.into()),
            ("RUST_LOG", "info,operator=debug".into()),
            ("NO_COLOR", "1".into()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args = vec!["run".to_string()];
        let process =
            NsProcess::spawn_host(identity, &operator_bin(), &args, &env, &dir.join(format!("{identity}.log")))?;
        Ok(Operator { process, http })
    }

    /// HTTP status of `/readyz` (Ready = leading and caches synced).
    fn ready(&self) -> bool {
        support::http::get(self.http, "/readyz", Duration::from_secs(2)).is_ok_and(|(s, _)| s == 200)
    }

    fn metrics(&self) -> Result<String, String> {
        support::http::get(self.http, "/metrics", Duration::from_secs(5)).map(|(_, body)| body)
    }
}

/// Everything the scenario owns, dropped in field order: processes, then the lab, then the
/// cluster (`scripts/cluster.sh down`), then the temp dir.
struct Ctx {
    processes: Vec<NsProcess>,
    kaspads: Vec<Kaspad>,
    operators: Vec<Operator>,
    lab: Option<Lab>,
    cluster: Option<Cluster>,
    dir: tempfile::TempDir,
}

impl Ctx {
    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("cluster up")
    }

    fn admin(&self) -> &Kubectl {
        &self.cluster().admin
    }

    fn report(&mut self) {
        eprintln!("\n========== real-cluster e2e failure report ({}) ==========", self.dir.path().display());
        for o in &mut self.operators {
            eprintln!("{}", o.process.report(60));
        }
        for p in &mut self.processes {
            eprintln!("{}", p.report(30));
        }
        for k in &mut self.kaspads {
            eprintln!("{}", k.process.report(20));
        }
        if let Some(c) = &self.cluster {
            for args in [
                vec![
                    "get",
                    "sensorfleets,relaynodes,statefulsets,deployments,services,configmaps,secrets,leases",
                    "-A",
                    "-o",
                    "wide",
                ],
                vec!["get", "events", "-A"],
            ] {
                eprintln!("----- kubectl {} -----\n{}", args.join(" "), c.admin.run(&args).unwrap_or_else(|e| e));
            }
            for kind in ["sensorfleet/lab", "relaynode/relay"] {
                eprintln!(
                    "----- {kind} -----\n{}",
                    c.admin.run(&["-n", LAB_NS, "get", kind, "-o", "yaml"]).unwrap_or_else(|e| e)
                );
            }
            eprintln!("{}", c.describe());
        }
        eprintln!("========== end of failure report ==========\n");
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
            if std::env::var_os("P2P_E2E_KEEP").is_some() {
                self.dir.disable_cleanup(true);
            }
        }
    }
}

#[test]
#[ignore = "needs root, Go and kaspad: scripts/test.sh runs it"]
fn operator_on_a_real_api_server() {
    let dir = tempfile::Builder::new().prefix("cluster-e2e-").tempdir().expect("temp dir");
    let mut ctx =
        Ctx { processes: Vec::new(), kaspads: Vec::new(), operators: Vec::new(), lab: None, cluster: None, dir };
    if let Err(e) = scenario(&mut ctx) {
        panic!("real-cluster e2e failed: {e}");
    }
}

fn scenario(ctx: &mut Ctx) -> Result<(), String> {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[cluster-e2e +{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    let dir = ctx.dir.path().to_path_buf();

    ctx.cluster = Some(Cluster::up(&dir.join("cluster"))?);
    step("control plane up (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)");

    crds_and_cel(ctx.admin())?;
    step("CRDs established; every CEL rule refuses its example with our message");

    let operator_kubeconfig = install_rbac(ctx)?;
    step("chart RBAC and ServiceAccount applied; operator kubeconfig holds a TokenRequest token");

    let collector = SocketAddr::from(([127, 0, 0, 1], free_port()));
    ctx.operators.push(Operator::start(&dir, "operator-a", &operator_kubeconfig, collector, false)?);
    wait_until("operator-a Ready", WAIT, || Ok(ctx.operators[0].ready().then_some(())))?;
    ensure(lease_holder(ctx.admin())? == "operator-a", || "operator-a Ready without holding the Lease".into())?;
    step("operator-a leads and is Ready");

    ctx.admin().run(&["create", "namespace", LAB_NS])?;
    ctx.admin().apply(RELAY)?;
    ctx.admin().apply(FLEET)?;
    let fleet = wait_reconciled(ctx.admin(), "sensorfleet/lab", 1)?;
    let relay = wait_reconciled(ctx.admin(), "relaynode/relay", 1)?;
    children_owned(
        ctx.admin(),
        &fleet,
        "p2psensor.dev/fleet=lab",
        &["StatefulSet", "Service", "ConfigMap", "ServiceAccount"],
    )?;
    children_owned(
        ctx.admin(),
        &relay,
        "p2psensor.dev/relay=relay",
        &["Deployment", "ConfigMap", "ServiceAccount", "Secret"],
    )?;
    step(
        "SensorFleet and RelayNode reconciled: children owned and applied by p2p-sensor-operator, status at generation 1",
    );

    condition_events(ctx.admin())?;
    step(
        "an invalid spec (beyond CEL) stalls the fleet and its fix un-stalls it: a Warning and a Normal Event from p2p-sensor-operator",
    );

    let generation = spec_change(ctx.admin())?;
    step(&format!(
        "a spec change: observedGeneration {generation}, sensor.toml and the pod template's config hash re-rendered"
    ));

    // --- the mission with real processes -----------------------------------------------------
    let mut lab = Lab::new()?;
    let public_host = lab.add_host("kpub", KASPAD_PUBLIC)?;
    let nat = lab.add_nat_site("knat", KASPAD_NAT_WAN, 1)?;
    ctx.lab = Some(lab);
    start_relay_pod(ctx)?;
    step("relay pod (emulated from the Deployment's template) running with the identity Secret");
    let relay_status = wait_until("RelayNode .status.multiaddrs from the relay's report", WAIT, || {
        let r = ctx.admin().json(&["-n", LAB_NS, "get", "relaynode", "relay"])?;
        Ok(r["status"]["multiaddrs"].as_array().is_some_and(|a| !a.is_empty()).then_some(r))
    })?;
    eprintln!(
        "[cluster-e2e] relay status: peerId {} multiaddrs {}",
        relay_status["status"]["peerId"], relay_status["status"]["multiaddrs"]
    );
    let (sts, punch_relay) = wait_until("StatefulSet with the punch sidecar and the relay's address", WAIT, || {
        let sts = ctx.admin().json(&["-n", LAB_NS, "get", "statefulset", "lab-sensor"])?;
        let relay = sts["metadata"]["annotations"]["p2psensor.dev/punch-relay"].as_str().map(str::to_owned);
        Ok(relay.map(|r| (sts, r)))
    })?;
    ensure(punch_relay.starts_with(&format!("/ip4/{ROOT_IP}/tcp/{RELAY_PORT}/p2p/")), || {
        format!("punch relay {punch_relay}")
    })?;
    let mut pods = Vec::new();
    for (i, listen) in [SENSOR_P2P, SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port())].into_iter().enumerate() {
        pods.push(start_sensor_pod(ctx, &sts, &format!("lab-sensor-{i}"), listen)?);
    }
    step("two sensor pods (listener + punch sidecar each) running what the StatefulSet's template says");

    let kaspad_bin = support::kaspad::find_kaspad()?;
    let kaspads = [
        ("kaspad-public", &public_host, SocketAddrV4::new(KASPAD_PUBLIC, Net::Devnet.p2p_port())),
        ("kaspad-nat", &nat.host, SocketAddrV4::new(nat.host.ip, Net::Devnet.p2p_port())),
    ];
    for (name, host, listen) in kaspads {
        let spec =
            KaspadSpec { net: Net::Devnet, listen, add_peers: vec![SocketAddr::V4(SENSOR_P2P)], log_level: None };
        ctx.kaspads.push(Kaspad::spawn(&kaspad_bin, name, host, &dir, &spec)?);
    }
    let first_connection = Instant::now();
    let status = wait_until("SensorFleet .status.peers: one public, one private", Duration::from_secs(180), || {
        let f = ctx.admin().json(&["-n", LAB_NS, "get", "sensorfleet", "lab"])?;
        let p = &f["status"]["peers"];
        Ok((p["public"] == 1 && p["private"] == 1 && f["status"]["sensors"]["reporting"] == 2).then_some(f))
    })?;
    step(&format!(
        "real kaspad peers classified in .status.peers within {:.1}s of starting them: {}",
        first_connection.elapsed().as_secs_f64(),
        status["status"]["peers"]
    ));
    let ua = status["status"]["topUserAgents"][0]["userAgent"].as_str().unwrap_or_default();
    ensure(ua.contains("kaspad:2.1.0"), || format!("top user agent {ua:?} should be kaspad 2.1.0's"))?;
    let sensor0 =
        status["status"]["sensorSummaries"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "lab-sensor-0"));
    ensure(sensor0.is_some_and(|s| s["public"] == 1 && s["private"] == 1), || {
        format!("sensor summaries: {}", status["status"]["sensorSummaries"])
    })?;

    let hole_punch = wait_until("RelayNode .status.holePunch with attempts", Duration::from_secs(120), || {
        for pod in &pods {
            pod.refresh_volumes(
                ctx.admin(),
                LAB_NS,
                sts["spec"]["template"]["spec"]["volumes"].as_array().map_or(&[][..], |v| v.as_slice()),
            )?;
        }
        let r = ctx.admin().json(&["-n", LAB_NS, "get", "relaynode", "relay"])?;
        let hp = r["status"]["holePunch"].clone();
        Ok((hp["attempts"].as_i64().unwrap_or(0) >= 2 && hp["successes"].as_i64().unwrap_or(0) >= 1).then_some(hp))
    })?;
    step(&format!("punch sidecars found each other through the ConfigMap and punched: .status.holePunch {hole_punch}"));

    metrics_agree(ctx)?;
    step("the operator's fleet gauges equal the fleet's .status");

    // --- restart: no spurious writes -----------------------------------------------------------
    std::thread::sleep(Duration::from_secs(8)); // status settled at the 2 s interval
    let watch = StatusWatch::start(ctx, &["sensorfleet/lab", "relaynode/relay"])?;
    let mark = audit_len(ctx.cluster());
    let before = writes_since(ctx.cluster(), 0, OPERATOR_USER);
    ctx.operators[0].process.signal(libc::SIGTERM)?;
    ctx.operators[0].process.wait_timeout(Duration::from_secs(20)).ok_or("operator-a did not stop on SIGTERM")?;
    ctx.operators.remove(0);
    ctx.operators.push(Operator::start(&dir, "operator-b", &operator_kubeconfig, collector, false)?);
    wait_until("operator-b Ready after operator-a stopped", WAIT, || Ok(ctx.operators[0].ready().then_some(())))?;
    let window = Duration::from_secs(15); // several status intervals and report rounds
    std::thread::sleep(window);
    let after = writes_since(ctx.cluster(), mark, OPERATOR_USER);
    let seen = watch.stop()?;
    eprintln!("[cluster-e2e] the operator's writes before the restart: {}", summarize(&before));
    eprintln!("[cluster-e2e] after the restart ({}s): {}", window.as_secs(), summarize(&after));
    let children: Vec<&String> =
        after.iter().filter(|w| !w.split(' ').nth(1).unwrap_or("").ends_with("/status")).collect();
    ensure(children.is_empty(), || {
        format!("writes other than status after a restart (Leases excluded): {children:#?}")
    })?;
    // Status is rewritten when reports move lastReportTime, at most once per interval per object;
    // what it says must never fall back while the new operator waits for the first reports.
    for (kind, version) in &seen {
        let st = &version["status"];
        let ok = match kind.as_str() {
            "SensorFleet" => {
                st["peers"]["public"] == 1 && st["peers"]["private"] == 1 && st["sensors"]["reporting"] == 2
            }
            _ => st["holePunch"]["attempts"].as_i64().unwrap_or(0) >= 2 && st["peerId"].is_string(),
        };
        ensure(ok, || format!("{kind} status fell back during the restart: {st}"))?;
    }
    let status_writes = after.len();
    ensure(status_writes <= 2 * (window.as_secs() as usize / 2 + 2), || {
        format!("{status_writes} status writes in {window:?}: {after:#?}")
    })?;
    step(&format!(
        "restart: no child or Event written, {status_writes} status writes in {}s, {} status versions watched, none fell back",
        window.as_secs(),
        seen.len()
    ));

    // --- leader election -----------------------------------------------------------------------
    ctx.operators.push(Operator::start(&dir, "operator-c", &operator_kubeconfig, collector, true)?);
    std::thread::sleep(Duration::from_secs(5));
    ensure(!ctx.operators[1].ready() && lease_holder(ctx.admin())? == "operator-b", || {
        "operator-c must wait while operator-b leads".into()
    })?;
    ctx.operators[0].process.signal(libc::SIGKILL)?;
    let killed = Instant::now();
    wait_until("operator-c takes the Lease", LEASE + Duration::from_secs(10), || {
        Ok((lease_holder(ctx.admin())? == "operator-c").then_some(()))
    })?;
    let takeover = killed.elapsed();
    ensure(takeover <= LEASE + Duration::from_secs(2), || {
        format!("takeover took {takeover:?}, more than the Lease {LEASE:?}")
    })?;
    wait_until("operator-c Ready", WAIT, || Ok(ctx.operators[1].ready().then_some(())))?;
    let generation = patch_fleet(ctx.admin(), r#"{"spec":{"probing":{"attempts":3}}}"#)?;
    wait_reconciled(ctx.admin(), "sensorfleet/lab", generation)?;
    step(&format!(
        "leader election: operator-b killed (SIGKILL), operator-c leads after {:.1}s and reconciles generation {generation}",
        takeover.as_secs_f64()
    ));

    rbac_findings(ctx.cluster())?;
    step("RBAC: no request of the operator was denied");

    // --- garbage collection ---------------------------------------------------------------------
    drop(pods);
    ctx.admin().run(&["-n", LAB_NS, "delete", "sensorfleet", "lab", "--wait=true", "--timeout=60s"])?;
    ctx.admin().run(&["-n", LAB_NS, "delete", "relaynode", "relay", "--wait=true", "--timeout=60s"])?;
    wait_until("every child garbage-collected", WAIT, || {
        let left = ctx.admin().json(&[
            "-n",
            LAB_NS,
            "get",
            "statefulsets,deployments,services,configmaps,serviceaccounts,secrets",
            "-l",
            "app.kubernetes.io/managed-by=p2p-sensor-operator",
        ])?;
        let names: Vec<String> = left["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
            .collect();
        Ok(names.is_empty().then_some(()).or_else(|| {
            eprintln!("[cluster-e2e] still there: {names:?}");
            None
        }))
    })?;
    step("fleet and relay deleted: the garbage collector removed every child");
    Ok(())
}

/// `kubectl get -w` of some objects into a file: every version the API server serves meanwhile.
struct StatusWatch {
    children: Vec<std::process::Child>,
    files: Vec<PathBuf>,
}

impl StatusWatch {
    fn start(ctx: &Ctx, objects: &[&str]) -> Result<StatusWatch, String> {
        let admin = ctx.admin();
        let mut watch = StatusWatch { children: Vec::new(), files: Vec::new() };
        for (i, object) in objects.iter().enumerate() {
            let file = ctx.dir.path().join(format!("watch-{i}.json"));
            let out = std::fs::File::create(&file).map_err(|e| e.to_string())?;
            let child = std::process::Command::new(&admin.bin)
                .arg("--kubeconfig")
                .arg(&admin.kubeconfig)
                .args(["-n", LAB_NS, "get", object, "--watch-only", "-o", "json"])
                .stdout(out)
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("kubectl get -w: {e}"))?;
            watch.children.push(child);
            watch.files.push(file);
        }
        std::thread::sleep(Duration::from_secs(1)); // the watches are established
        Ok(watch)
    }

    /// Stops the watches; (kind, object) for every version seen.
    fn stop(mut self) -> Result<Vec<(String, Value)>, String> {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut seen = Vec::new();
        for f in &self.files {
            let text = std::fs::read_to_string(f).map_err(|e| e.to_string())?;
            for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
                let v = v.map_err(|e| format!("{}: {e}", f.display()))?;
                seen.push((v["kind"].as_str().unwrap_or_default().to_owned(), v));
            }
        }
        Ok(seen)
    }
}

// ---------------------------------------------------------------------------------------------
// CRDs and CEL

/// Every `x-kubernetes-validations` rule of a CRD: (kind, message).
fn cel_rules() -> Vec<(String, String)> {
    fn walk(node: &Value, kind: &str, out: &mut Vec<(String, String)>) {
        if let Some(rules) = node["x-kubernetes-validations"].as_array() {
            for r in rules {
                out.push((kind.to_owned(), r["message"].as_str().unwrap_or_default().to_owned()));
            }
        }
        if let Some(props) = node["properties"].as_object() {
            props.values().for_each(|p| walk(p, kind, out));
        }
        if node["items"].is_object() {
            walk(&node["items"], kind, out);
        }
        if node["additionalProperties"].is_object() {
            walk(&node["additionalProperties"], kind, out);
        }
    }
    let mut out = Vec::new();
    for file in ["sensorfleets.p2psensor.dev.yaml", "relaynodes.p2psensor.dev.yaml"] {
        let crd: Value =
            serde_norway::from_str(&std::fs::read_to_string(format!("{REPO}/crds/{file}")).unwrap()).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        walk(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], &kind, &mut out);
    }
    out
}

/// One invalid object per CEL rule: (kind, the rule's message, the spec that breaks it).
fn cel_cases() -> Vec<(&'static str, &'static str, Value)> {
    let fleet = |extra: Value| {
        let mut spec = json!({"network": "devnet", "mode": "StatefulSet", "replicas": 1});
        merge(&mut spec, extra);
        spec
    };
    let relay = |extra: Value| {
        let mut spec = json!({"ports": {"tcp": 4001, "quic": 4001}});
        merge(&mut spec, extra);
        spec
    };
    vec![
        (
            "RelayNode",
            "limits.maxReservationsPerPeer must not exceed limits.maxReservations",
            relay(json!({"limits": {"maxReservations": 2, "maxReservationsPerPeer": 3}})),
        ),
        (
            "RelayNode",
            "limits.maxCircuitsPerPeer must not exceed limits.maxCircuits",
            relay(json!({"limits": {"maxCircuits": 2, "maxCircuitsPerPeer": 3}})),
        ),
        (
            "RelayNode",
            "ports.tcpAlternate and ports.quicAlternate need exposure kind HostNetwork or LoadBalancer: a NodePort Service has the one exposure.nodePort, none for an alternate",
            relay(json!({"ports": {"tcp": 4001, "tcpAlternate": 4002}, "exposure": {"kind": "NodePort"}})),
        ),
        (
            "RelayNode",
            "nodePort is only allowed with kind NodePort",
            relay(json!({"exposure": {"kind": "LoadBalancer", "nodePort": 30001}})),
        ),
        (
            "RelayNode",
            "annotations apply to a Service; kind HostNetwork creates none",
            relay(json!({"exposure": {"kind": "HostNetwork", "annotations": {"a": "b"}}})),
        ),
        (
            "RelayNode",
            "tcpAlternate must differ from tcp",
            relay(json!({"ports": {"tcp": 4001, "tcpAlternate": 4001}})),
        ),
        (
            "RelayNode",
            "quicAlternate must differ from quic",
            relay(json!({"ports": {"tcp": 4001, "quic": 4001, "quicAlternate": 4001}})),
        ),
        (
            "SensorFleet",
            "replicas must be at least 1 in StatefulSet mode",
            json!({"network": "devnet", "mode": "StatefulSet"}),
        ),
        (
            "SensorFleet",
            "replicas is not allowed in DaemonSet mode: one sensor runs per selected node",
            json!({"network": "devnet", "mode": "DaemonSet", "replicas": 2}),
        ),
        (
            "SensorFleet",
            "PersistentVolumeClaim storage needs StatefulSet mode; use HostPath or EmptyDir with a DaemonSet",
            json!({"network": "devnet", "mode": "DaemonSet", "storage": {"kind": "PersistentVolumeClaim"}}),
        ),
        (
            "SensorFleet",
            "holePunch needs relayRef: hole punches go through a RelayNode",
            fleet(json!({"holePunch": {"intervalSecs": 60}})),
        ),
        (
            "SensorFleet",
            "minRevisitSecs must not exceed maxRevisitSecs",
            fleet(json!({"crawler": {"minRevisitSecs": 600, "maxRevisitSecs": 60}})),
        ),
        ("SensorFleet", "endpoint is required unless sink is none", fleet(json!({"export": {"sink": "http"}}))),
        (
            "SensorFleet",
            "endpoint must be - (stdout) or an absolute file path when sink is ndjson",
            fleet(json!({"export": {"sink": "ndjson", "endpoint": "relative.ndjson"}})),
        ),
        (
            "SensorFleet",
            "endpoint must be an http:// or https:// URL when sink is http",
            fleet(json!({"export": {"sink": "http", "endpoint": "ftp://x"}})),
        ),
        (
            "SensorFleet",
            "endpoint must be a postgres:// or postgresql:// connection URI when sink is postgres",
            fleet(json!({"export": {"sink": "postgres", "endpoint": "mysql://x"}})),
        ),
        (
            "SensorFleet",
            "bearerTokenSecretRef is only used by sink http",
            fleet(
                json!({"export": {"sink": "ndjson", "endpoint": "-", "bearerTokenSecretRef": {"name": "t", "key": "k"}}}),
            ),
        ),
        (
            "SensorFleet",
            "hmacSecretRef is only used by sink http",
            fleet(json!({"export": {"sink": "ndjson", "endpoint": "-", "hmacSecretRef": {"name": "t", "key": "k"}}})),
        ),
        (
            "SensorFleet",
            "passwordSecretRef is only used by sink postgres",
            fleet(
                json!({"export": {"sink": "http", "endpoint": "http://x", "passwordSecretRef": {"name": "t", "key": "k"}}}),
            ),
        ),
        (
            "SensorFleet",
            "gzip is only used by sink http",
            fleet(json!({"export": {"sink": "ndjson", "endpoint": "-", "gzip": true}})),
        ),
        (
            "SensorFleet",
            "set caSecretRef or caConfigMapRef, not both",
            fleet(
                json!({"export": {"sink": "postgres", "endpoint": "postgres://x", "caSecretRef": {"name": "a", "key": "k"}, "caConfigMapRef": {"name": "b", "key": "k"}}}),
            ),
        ),
        (
            "SensorFleet",
            "caSecretRef and caConfigMapRef are only used by sink postgres or an https:// endpoint",
            fleet(
                json!({"export": {"sink": "http", "endpoint": "http://x", "caSecretRef": {"name": "a", "key": "k"}}}),
            ),
        ),
        (
            "SensorFleet",
            "nodePort is only allowed with kind NodePort",
            fleet(json!({"exposure": {"kind": "HostNetwork", "nodePort": 30001}})),
        ),
        (
            "SensorFleet",
            "annotations apply to a Service; kind HostNetwork creates none",
            fleet(json!({"exposure": {"kind": "HostNetwork", "annotations": {"a": "b"}}})),
        ),
        (
            "SensorFleet",
            "address is required when source is Static",
            fleet(json!({"externalAddress": {"source": "Static"}})),
        ),
        (
            "SensorFleet",
            "storageClassName is only allowed with kind PersistentVolumeClaim",
            fleet(json!({"storage": {"kind": "EmptyDir", "storageClassName": "fast"}})),
        ),
        (
            "SensorFleet",
            "hostPath is only allowed with kind HostPath",
            fleet(json!({"storage": {"kind": "EmptyDir", "hostPath": "/x"}})),
        ),
    ]
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "p2psensor.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn crds_and_cel(admin: &Kubectl) -> Result<(), String> {
    admin.run(&["apply", "--server-side", "--field-manager=e2e", "-f", &format!("{REPO}/crds/")])?;
    // Polled: `kubectl wait` fails outright on a CRD whose status has no conditions yet.
    for crd in ["sensorfleets.p2psensor.dev", "relaynodes.p2psensor.dev"] {
        wait_until(&format!("{crd} Established"), WAIT, || {
            let c = admin.json(&["get", "crd", crd])?;
            let conditions = c["status"]["conditions"].as_array().cloned().unwrap_or_default();
            Ok(conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True").then_some(()))
        })?;
    }
    for crd in ["sensorfleets.p2psensor.dev", "relaynodes.p2psensor.dev"] {
        let c = admin.json(&["get", "crd", crd])?;
        for cond in c["status"]["conditions"].as_array().cloned().unwrap_or_default() {
            let bad = ["NonStructuralSchema", "KubernetesAPIApprovalPolicyConformant"]
                .contains(&cond["type"].as_str().unwrap_or(""))
                && cond["status"] == "True"
                && cond["type"] == "NonStructuralSchema";
            ensure(!bad, || format!("{crd}: {cond}"))?;
        }
    }
    // Every rule has a case, and every case breaks exactly the rule it names.
    let rules = cel_rules();
    let cases = cel_cases();
    const TRANSITION_RULE: &str = "network is immutable; create a new SensorFleet"; // checked below
    for (kind, message) in rules.iter().filter(|(_, m)| m != TRANSITION_RULE) {
        ensure(cases.iter().any(|(k, m, _)| k == kind && m == message), || {
            format!("no invalid example for the {kind} CEL rule {message:?}: add one to cel_cases()")
        })?;
    }
    ensure(rules.len() == cases.len() + 1, || {
        format!("{} rules (+ network immutability) but {} cases", rules.len(), cases.len())
    })?;
    for (kind, message, spec) in cases {
        let manifest = object(kind, "cel-case", spec).to_string();
        match admin.run_stdin(&["create", "--dry-run=server", "-f", "-"], Some(&manifest)) {
            Ok(out) => return Err(format!("the API server accepted {manifest} ({out}); expected {message:?}")),
            Err(e) => ensure(e.contains(message), || format!("{manifest}: expected {message:?}, got: {e}"))?,
        }
    }
    // The valid bases pass, so each refusal above is the rule's own.
    for (kind, spec) in [
        ("SensorFleet", json!({"network": "devnet", "mode": "StatefulSet", "replicas": 1})),
        ("RelayNode", json!({"ports": {"tcp": 4001, "quic": 4001}})),
    ] {
        admin
            .run_stdin(&["create", "--dry-run=server", "-f", "-"], Some(&object(kind, "cel-base", spec).to_string()))?;
    }
    // A transition rule: network is immutable.
    admin.run_stdin(
        &["create", "-f", "-"],
        Some(
            &object("SensorFleet", "immutable", json!({"network": "devnet", "mode": "StatefulSet", "replicas": 1}))
                .to_string(),
        ),
    )?;
    let patched = admin.run(&[
        "-n",
        "default",
        "patch",
        "sensorfleet",
        "immutable",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"network":"mainnet"}}"#,
    ]);
    ensure(patched.as_ref().is_err_and(|e| e.contains(TRANSITION_RULE)), || format!("network change: {patched:?}"))?;
    admin.run(&["-n", "default", "delete", "sensorfleet", "immutable"])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RBAC from the chart, and the operator's identity

/// Applies the chart's ServiceAccount and RBAC (`helm template`), then writes a kubeconfig with a
/// TokenRequest token of that ServiceAccount; returns its path.
fn install_rbac(ctx: &Ctx) -> Result<PathBuf, String> {
    let admin = ctx.admin();
    admin.run(&["create", "namespace", OPERATOR_NS])?;
    let chart = format!("{REPO}/charts/p2p-sensor-operator");
    let rendered = helm(&ctx.cluster().bin, &["template", RELEASE, &chart, "--namespace", OPERATOR_NS])?;
    let wanted = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    let mut items = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&rendered) {
        let value: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => return Err(format!("helm template output: {e}")),
        };
        if value["kind"].as_str().is_some_and(|k| wanted.contains(&k)) {
            items.push(value);
        }
    }
    let kinds: BTreeSet<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    ensure(kinds.len() == wanted.len(), || format!("the chart rendered {kinds:?}, expected {wanted:?}"))?;
    admin.apply(&json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string())?;
    let token = admin.run(&["-n", OPERATOR_NS, "create", "token", OPERATOR_SA, "--duration=2h"])?;
    let operator = ctx.cluster().kubectl_with_token("operator", token.trim())?;
    let whoami = operator.json(&["auth", "whoami"])?;
    ensure(whoami["status"]["userInfo"]["username"] == OPERATOR_USER, || format!("token user: {whoami}"))?;
    Ok(operator.kubeconfig)
}

fn lease_holder(admin: &Kubectl) -> Result<String, String> {
    let lease = admin.get(&["-n", OPERATOR_NS, "lease", "p2p-sensor-operator"])?;
    Ok(lease.and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned)).unwrap_or_default())
}

/// Requests of `user` that changed something (create, update, patch, delete), Leases excluded,
/// among the audit events from line `from` on: "verb resource namespace/name code".
fn writes_since(cluster: &Cluster, from: usize, user: &str) -> Vec<String> {
    cluster
        .audit_events()
        .into_iter()
        .skip(from)
        .filter(|e| e["user"]["username"] == user && e["stage"] == "ResponseComplete")
        .filter(|e| ["create", "update", "patch", "delete"].contains(&e["verb"].as_str().unwrap_or("")))
        .filter(|e| e["objectRef"]["resource"] != "leases")
        .map(|e| {
            let o = &e["objectRef"];
            let sub = o["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default();
            format!(
                "{} {}{} {}/{} {} at {}",
                e["verb"].as_str().unwrap_or(""),
                o["resource"].as_str().unwrap_or(""),
                sub,
                o["namespace"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or(""),
                e["responseStatus"]["code"],
                e["requestReceivedTimestamp"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn audit_len(cluster: &Cluster) -> usize {
    cluster.audit_events().len()
}

fn summarize(writes: &[String]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for w in writes {
        let key: Vec<&str> = w.split(' ').take(2).collect();
        *by.entry(key.join(" ")).or_default() += 1;
    }
    format!("{by:?}")
}

/// No request of the operator was denied (403) or failed for want of a permission; the
/// (resource, verb) pairs its role grants but it never used are printed as findings.
fn rbac_findings(cluster: &Cluster) -> Result<(), String> {
    let events = cluster.audit_events();
    // The test's own `kubectl auth whoami` with the operator's token is not the operator.
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["user"]["username"] == OPERATOR_USER && e["stage"] == "ResponseComplete")
        .filter(|e| !e["userAgent"].as_str().unwrap_or("").starts_with("kubectl/"))
        .collect();
    let denied: Vec<String> = mine
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {} {}", e["verb"], e["objectRef"]["resource"], e["objectRef"]["namespace"]))
        .collect();
    ensure(denied.is_empty(), || format!("the operator was denied: {denied:?}"))?;
    // Every request says who sent it, so that audit logs and request metrics can tell it apart.
    let agents: BTreeSet<&str> = mine.iter().map(|e| e["userAgent"].as_str().unwrap_or("(none)")).collect();
    ensure(agents.iter().all(|a| a.starts_with("p2p-sensor-operator/")), || {
        format!("the operator's requests carry User-Agent {agents:?}, not p2p-sensor-operator/<version>")
    })?;
    let used: BTreeSet<(String, String)> = mine
        .iter()
        .map(|e| {
            let o = &e["objectRef"];
            let res = match o["subresource"].as_str() {
                Some(s) => format!("{}/{s}", o["resource"].as_str().unwrap_or("")),
                None => o["resource"].as_str().unwrap_or("").to_owned(),
            };
            (res, e["verb"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    eprintln!("[cluster-e2e] the operator used: {used:?}");
    let role = cluster.admin.json(&["get", "clusterrole", RELEASE])?;
    let mut unused = Vec::new();
    for rule in role["rules"].as_array().cloned().unwrap_or_default() {
        for res in rule["resources"].as_array().cloned().unwrap_or_default() {
            for verb in rule["verbs"].as_array().cloned().unwrap_or_default() {
                let (res, verb) = (res.as_str().unwrap_or("").to_owned(), verb.as_str().unwrap_or("").to_owned());
                // kubectl/client-go "watch" arrives as a list with watch=true: audit verb "watch".
                if !used.contains(&(res.clone(), verb.clone())) {
                    unused.push(format!("{verb} {res}"));
                }
            }
        }
    }
    eprintln!("[cluster-e2e] RBAC finding: granted but not used in this run: {unused:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reconciled objects

/// Waits until `kind/name` has `.status.observedGeneration == generation == metadata.generation`
/// and the three standard conditions, each at that generation; returns the object.
fn wait_reconciled(admin: &Kubectl, object: &str, generation: i64) -> Result<Value, String> {
    wait_until(&format!("{object} reconciled at generation {generation}"), WAIT, || {
        let o = admin.json(&["-n", LAB_NS, "get", object])?;
        let s = &o["status"];
        if o["metadata"]["generation"] != generation || s["observedGeneration"] != generation {
            return Ok(None);
        }
        let conditions = s["conditions"].as_array().cloned().unwrap_or_default();
        let types: BTreeSet<&str> = conditions.iter().filter_map(|c| c["type"].as_str()).collect();
        for t in ["Ready", "Reconciling", "Stalled"] {
            ensure(types.contains(t), || format!("{object}: no {t} condition: {conditions:?}"))?;
        }
        for c in &conditions {
            ensure(c["observedGeneration"] == generation, || {
                format!("{object}: condition not at generation {generation}: {c}")
            })?;
            ensure(c["lastTransitionTime"].is_string() && c["reason"].is_string(), || {
                format!("{object}: condition shape: {c}")
            })?;
        }
        let stalled = conditions.iter().find(|c| c["type"] == "Stalled");
        ensure(stalled.is_some_and(|c| c["status"] == "False"), || format!("{object}: Stalled: {stalled:?}"))?;
        Ok(Some(o))
    })
}

/// Every child of `owner` (selected by `selector`) has a controller owner reference to it and
/// was applied by the field manager p2p-sensor-operator; each of `kinds` exists.
fn children_owned(admin: &Kubectl, owner: &Value, selector: &str, kinds: &[&str]) -> Result<(), String> {
    let uid = owner["metadata"]["uid"].as_str().ok_or("owner without uid")?;
    let list = admin.json(&[
        "-n",
        LAB_NS,
        "get",
        "statefulsets,daemonsets,deployments,services,configmaps,serviceaccounts,secrets",
        "-l",
        selector,
        "--show-managed-fields",
    ])?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut seen = BTreeSet::new();
    for item in &items {
        let kind = item["kind"].as_str().unwrap_or("");
        let name = format!("{kind}/{}", item["metadata"]["name"].as_str().unwrap_or(""));
        seen.insert(kind.to_owned());
        let refs = item["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
        ensure(
            refs.len() == 1
                && refs[0]["uid"] == uid
                && refs[0]["controller"] == true
                && refs[0]["kind"] == owner["kind"],
            || format!("{name}: owner references {refs:?}, expected one controller reference to {uid}"),
        )?;
        // Managers of the object itself; a workload's status belongs to its controller.
        let managers: Vec<(&str, &str)> = item["metadata"]["managedFields"].as_array().map_or(Vec::new(), |m| {
            m.iter()
                .filter(|f| f["subresource"].is_null())
                .filter_map(|f| Some((f["manager"].as_str()?, f["operation"].as_str()?)))
                .collect()
        });
        let ours = if kind == "Secret" { ("p2p-sensor-operator", "Update") } else { ("p2p-sensor-operator", "Apply") };
        ensure(managers == [ours], || format!("{name}: field managers {managers:?}, expected [{ours:?}]"))?;
    }
    for kind in kinds {
        ensure(seen.contains(*kind), || {
            format!("no {kind} among the children of {}: {seen:?}", owner["metadata"]["name"])
        })?;
    }
    Ok(())
}

/// Merge-patches the fleet; returns its new `metadata.generation`.
fn patch_fleet(admin: &Kubectl, patch: &str) -> Result<i64, String> {
    let out =
        admin.run(&["-n", LAB_NS, "patch", "sensorfleet", "lab", "--type", "merge", "-p", patch, "-o", "json"])?;
    let fleet: Value = serde_json::from_str(&out).map_err(|e| format!("patch output: {e}"))?;
    fleet["metadata"]["generation"].as_i64().ok_or_else(|| format!("no generation: {fleet}"))
}

/// Events of `reason` about the fleet from our reporting controller, as "type reason: note".
fn fleet_events(admin: &Kubectl) -> Result<Vec<String>, String> {
    let events = admin.json(&[
        "-n",
        LAB_NS,
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=SensorFleet,involvedObject.name=lab",
    ])?;
    Ok(events["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            e["reportingComponent"] == "p2p-sensor-operator" || e["source"]["component"] == "p2p-sensor-operator"
        })
        .map(|e| {
            format!(
                "{} {}: {}",
                e["type"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect())
}

/// A spec the CRD accepts but the operator refuses (an unparsable static address) makes the fleet
/// Stalled with a Warning Event; fixing it clears Stalled with a Normal Event.
fn condition_events(admin: &Kubectl) -> Result<(), String> {
    let generation =
        patch_fleet(admin, r#"{"spec":{"externalAddress":{"source":"Static","address":"not-an-address"}}}"#)?;
    wait_until("Stalled True with reason InvalidSpec", WAIT, || {
        let f = admin.json(&["-n", LAB_NS, "get", "sensorfleet", "lab"])?;
        let stalled =
            f["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Stalled").cloned());
        Ok((f["status"]["observedGeneration"] == generation
            && stalled.is_some_and(|c| c["status"] == "True" && c["reason"] == "InvalidSpec"))
        .then_some(()))
    })?;
    wait_until("a Warning Event InvalidSpec", WAIT, || {
        Ok(fleet_events(admin)?
            .iter()
            .any(|e| e.starts_with("Warning InvalidSpec: Stalled is True") && e.contains("not-an-address"))
            .then_some(()))
    })?;
    let generation = patch_fleet(admin, r#"{"spec":{"externalAddress":{"source":"None","address":null}}}"#)?;
    wait_reconciled(admin, "sensorfleet/lab", generation)?;
    wait_until("a Normal Event SpecValid", WAIT, || {
        Ok(fleet_events(admin)?.iter().any(|e| e.starts_with("Normal SpecValid: Stalled is False")).then_some(()))
    })?;
    Ok(())
}

/// Changes the probe timeout; returns the generation it was reconciled at.
fn spec_change(admin: &Kubectl) -> Result<i64, String> {
    let before = admin.json(&["-n", LAB_NS, "get", "configmap", "lab-sensor-config"])?;
    let sts_before = admin.json(&["-n", LAB_NS, "get", "statefulset", "lab-sensor"])?;
    let generation = patch_fleet(admin, r#"{"spec":{"probing":{"timeoutMs":2500}}}"#)?;
    wait_reconciled(admin, "sensorfleet/lab", generation)?;
    let after = admin.json(&["-n", LAB_NS, "get", "configmap", "lab-sensor-config"])?;
    let toml = after["data"]["sensor.toml"].as_str().unwrap_or("");
    ensure(toml.contains("2500") && before["data"]["sensor.toml"] != after["data"]["sensor.toml"], || {
        format!("sensor.toml not re-rendered:\n{toml}")
    })?;
    let sts_after = admin.json(&["-n", LAB_NS, "get", "statefulset", "lab-sensor"])?;
    let hash = |s: &Value| s["spec"]["template"]["metadata"]["annotations"]["p2psensor.dev/config-hash"].clone();
    ensure(hash(&sts_before) != hash(&sts_after) && hash(&sts_after).is_string(), || {
        format!("config hash {} -> {}", hash(&sts_before), hash(&sts_after))
    })?;
    Ok(generation)
}

// ---------------------------------------------------------------------------------------------
// Pods run as local processes

/// Starts `container` of `pod` with the test's overrides (loopback ports instead of the node's).
fn run_container(
    ctx: &mut Ctx,
    pod: &PodEmulation,
    container: &EmulatedContainer,
    overrides: &[(&str, String)],
) -> Result<(), String> {
    let mut env: Vec<(String, String)> = container.env.clone();
    for (k, v) in overrides {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), v.clone()));
    }
    env.push(("RUST_LOG".into(), "info".into()));
    env.push(("NO_COLOR".into(), "1".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let name = format!("{}-{}", pod.name, container.name);
    let log = pod.root.join(format!("{}.log", container.name));
    let process =
        NsProcess::spawn_host(&name, Path::new(env!("CARGO_BIN_EXE_sensor")), &container.args, &env_refs, &log)?;
    ctx.processes.push(process);
    Ok(())
}

fn wait_http_ready(addr: SocketAddr, what: &str) -> Result<(), String> {
    wait_until(&format!("{what} /readyz"), WAIT, || {
        Ok(support::http::get(addr, "/readyz", Duration::from_secs(2)).is_ok_and(|(s, _)| s == 200).then_some(()))
    })
}

fn start_relay_pod(ctx: &mut Ctx) -> Result<(), String> {
    let deployment = ctx.admin().json(&["-n", LAB_NS, "get", "deployment", "relay-relay"])?;
    let root = ctx.dir.path().join("pods/relay");
    let pod = PodEmulation::new(ctx.admin(), LAB_NS, "relay-relay-0", &deployment["spec"]["template"], &root)?;
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let relay = pod.container("relay")?.clone();
    run_container(ctx, &pod, &relay, &[("SENSOR_METRICS_LISTEN", metrics.to_string())])?;
    wait_http_ready(metrics, "relay")
}

/// Starts the listener and the punch sidecar of `pod_name` from the StatefulSet's template; the
/// listener on `listen`. Returns the emulation (its volumes are refreshed by the caller).
fn start_sensor_pod(ctx: &mut Ctx, sts: &Value, pod_name: &str, listen: SocketAddrV4) -> Result<PodEmulation, String> {
    let root = ctx.dir.path().join("pods").join(pod_name);
    let pod = PodEmulation::new(ctx.admin(), LAB_NS, pod_name, &sts["spec"]["template"], &root)?;
    let (metrics, punch_metrics) =
        (SocketAddr::from(([127, 0, 0, 1], free_port())), SocketAddr::from(([127, 0, 0, 1], free_port())));
    let sensor = pod.container("sensor")?.clone();
    run_container(
        ctx,
        &pod,
        &sensor,
        &[("SENSOR_METRICS_LISTEN", metrics.to_string()), ("SENSOR_LISTEN_ADDRESS", listen.to_string())],
    )?;
    wait_http_ready(metrics, pod_name)?;
    let punch = pod.container("punch")?.clone();
    let port = free_port();
    // On the lab's root leg, where the relay observes it: DCUtR dials the observed address.
    let punch_listen = format!("/ip4/{ROOT_IP}/tcp/{port},/ip4/{ROOT_IP}/udp/{port}/quic-v1");
    run_container(
        ctx,
        &pod,
        &punch,
        &[("SENSOR_METRICS_LISTEN", punch_metrics.to_string()), ("SENSOR_PUNCH_LISTEN", punch_listen)],
    )?;
    Ok(pod)
}

// ---------------------------------------------------------------------------------------------

/// The operator's `sensorfleet_*` gauges for the fleet equal its `.status`.
fn metrics_agree(ctx: &Ctx) -> Result<(), String> {
    let fleet = ctx.admin().json(&["-n", LAB_NS, "get", "sensorfleet", "lab"])?;
    wait_until("the operator's fleet gauges equal .status.peers", WAIT, || {
        let text = ctx.operators[0].metrics()?;
        // Totals over all fleets: this cluster has one.
        let public = support::http::metric(&text, "p2psensor_fleet_peers", &[("class", "public")]);
        let private = support::http::metric(&text, "p2psensor_fleet_peers", &[("class", "private")]);
        let want = (fleet["status"]["peers"]["public"].as_f64(), fleet["status"]["peers"]["private"].as_f64());
        if (public, private) == want {
            Ok(Some(()))
        } else {
            Err(format!("metrics public {public:?} private {private:?}, status {want:?}"))
        }
    })
}
