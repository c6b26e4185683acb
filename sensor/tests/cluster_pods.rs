//! The whole mission with pods on a real node (issue 14), no stand-ins: `scripts/cluster.sh
//! load-images` builds our images from the repository's Dockerfile, `up` runs the control plane
//! and a node (containerd, kubelet, kube-proxy, CoreDNS, bridge CNI) built from upstream; `helm
//! install` starts the operator as a pod under the chart's ServiceAccount and `helm test` passes;
//! a host-network SensorFleet, a pod-network fleet with the punch sidecars and a RelayNode run as
//! pods; real kaspad 2.1.0 nodes in network namespaces — one public, one behind a NAT — connect to
//! the sensor pod on the node and come out public and private in `.status`; the sensor's and the
//! operator's metrics agree; the punch sidecars punch through the relay pod; a spec change rolls
//! the pods; a killed sensor pod comes back with its SQLite data (HostPath); deleting the fleets
//! removes every child; `helm uninstall` leaves only the CRDs. Prints the figures of the issue:
//! `helm install` to Ready, `kubectl apply` to Ready, first connection to verdict, pod memory.
//!
//! Needs root, Go, buildah and debootstrap (the first run builds Kubernetes and the images) and
//! kaspad 2.1.0 (`scripts/install-prereqs.sh`). Uses the machine's one node (kubelet's ports, the
//! bridge p2pbr0): run alone (`--test-threads=1`).

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{Cluster, Kubectl, REPO, helm, wait_until};
use support::ensure;
use support::kaspad::{Kaspad, KaspadSpec, Net};
use support::netns::{Lab, ROOT_IP};

const OPERATOR_NS: &str = "p2p-system";
const LAB_NS: &str = "p2p-lab";
const RELEASE: &str = "p2p-sensor-operator";
const KASPAD_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 41);
const KASPAD_NAT_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);
/// The host-network sensor's P2P port (devnet), reached from the lab at its root leg.
const SENSOR_P2P: SocketAddrV4 = SocketAddrV4::new(ROOT_IP, 16611);
/// The host-network sensor's /metrics on the node.
const SENSOR_METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9102);
const WAIT: Duration = Duration::from_secs(180);

/// Host-network sensors, one per node, data in a node directory (`{data}`: the test's own).
const LAB_FLEET: &str = r#"
apiVersion: p2psensor.dev/v1alpha1
kind: SensorFleet
metadata: {name: lab, namespace: p2p-lab}
spec:
  network: devnet
  mode: DaemonSet
  exposure: {kind: HostNetwork}
  externalAddress: {source: None}
  probing: {allowPrivateTargets: true, timeoutMs: 2000, attempts: 2}
  storage: {kind: HostPath, hostPath: "{data}"}
"#;

/// Two pod-network sensors whose punch sidecars punch each other through the relay.
const MESH_FLEET: &str = r#"
apiVersion: p2psensor.dev/v1alpha1
kind: SensorFleet
metadata: {name: mesh, namespace: p2p-lab}
spec:
  network: devnet
  mode: StatefulSet
  replicas: 2
  exposure: {kind: NodePort}
  externalAddress: {source: None}
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
  limits: {reservationRatePerPeer: 0, reservationRatePerIp: 0, circuitRatePerPeer: 0, circuitRatePerIp: 0}
"#;

struct Ctx {
    kaspads: Vec<Kaspad>,
    lab: Option<Lab>,
    cluster: Option<Cluster>,
    dir: tempfile::TempDir,
}

impl Ctx {
    fn admin(&self) -> &Kubectl {
        &self.cluster.as_ref().expect("cluster up").admin
    }

    fn report(&mut self) {
        eprintln!("\n========== pods e2e failure report ({}) ==========", self.dir.path().display());
        for k in &mut self.kaspads {
            eprintln!("{}", k.process.report(20));
        }
        if let Some(c) = &self.cluster {
            let a = &c.admin;
            for args in [
                vec!["get", "pods,sensorfleets,relaynodes,statefulsets,daemonsets,deployments", "-A", "-o", "wide"],
                vec!["get", "events", "-A"],
                vec!["-n", OPERATOR_NS, "logs", "deploy/p2p-sensor-operator", "--tail=40"],
                vec!["-n", LAB_NS, "logs", "-l", "p2psensor.dev/fleet=lab", "--all-containers", "--tail=30"],
                vec!["-n", LAB_NS, "logs", "-l", "p2psensor.dev/fleet=mesh", "--all-containers", "--tail=20"],
                vec!["-n", LAB_NS, "logs", "-l", "p2psensor.dev/relay=relay", "--tail=20"],
                vec!["-n", LAB_NS, "get", "sensorfleets,relaynodes", "-o", "yaml"],
            ] {
                eprintln!("----- kubectl {} -----\n{}", args.join(" "), a.run(&args).unwrap_or_else(|e| e));
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
#[ignore = "needs root, Go, buildah, debootstrap and kaspad: scripts/test.sh runs it"]
fn the_mission_with_pods_on_a_real_node() {
    let dir = tempfile::Builder::new().prefix("pods-e2e-").tempdir().expect("temp dir");
    let mut ctx = Ctx { kaspads: Vec::new(), lab: None, cluster: None, dir };
    if let Err(e) = scenario(&mut ctx) {
        panic!("pods e2e failed: {e}");
    }
}

fn scenario(ctx: &mut Ctx) -> Result<(), String> {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[pods-e2e +{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    let dir = ctx.dir.path().to_path_buf();

    ctx.cluster = Some(Cluster::up_with_node(&dir.join("cluster"))?);
    let node = node_name(ctx.admin())?;
    // The kubelet lists the node's images in its status every 10 s (nodeStatusUpdateFrequency).
    let test_image = wait_until("the helm-test image in the node's .status.images", Duration::from_secs(60), || {
        node_image(ctx.admin(), &node, "localhost/p2p-sensor/busybox:").map(Some)
    })?;
    step(&format!("cluster up: control plane, node {node} with CoreDNS, our images imported"));

    // --- helm install, the operator as a pod ---------------------------------------------------
    let bin = ctx.cluster.as_ref().expect("cluster").bin.clone();
    let kubeconfig = ctx.admin().kubeconfig.display().to_string();
    let chart = format!("{REPO}/charts/p2p-sensor-operator");
    let (test_repo, test_tag) = test_image.rsplit_once(':').ok_or("test image without a tag")?;
    let installed = Instant::now();
    helm(
        &bin,
        &[
            "install",
            RELEASE,
            &chart,
            "--kubeconfig",
            &kubeconfig,
            "-n",
            OPERATOR_NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
            "--set",
            &format!("test.image.repository={test_repo},test.image.tag={test_tag}"),
            "--set",
            "operator.statusIntervalSecs=2",
            "--set-json",
            r#"operator.extraEnv=[{"name":"OPERATOR_REPORT_INTERVAL_MS","value":"2000"}]"#,
        ],
    )?;
    let operator_ready = installed.elapsed();
    let operator_pod =
        ctx.admin().json(&["-n", OPERATOR_NS, "get", "pods", "-l", "app.kubernetes.io/component=operator"])?;
    let pod = &operator_pod["items"][0];
    ensure(pod["spec"]["serviceAccountName"] == RELEASE, || format!("operator pod's ServiceAccount: {}", pod["spec"]))?;
    let images: Vec<&str> = pod["status"]["containerStatuses"]
        .as_array()
        .map(|s| s.iter().filter_map(|c| c["image"].as_str()).collect())
        .unwrap_or_default();
    ensure(images.iter().any(|i| i.contains("p2p-sensor-operator:")), || format!("operator images {images:?}"))?;
    step(&format!(
        "helm install: the operator pod (image {images:?}, ServiceAccount {RELEASE}) Ready {:.1}s after install",
        operator_ready.as_secs_f64()
    ));
    let tested = helm(&bin, &["test", RELEASE, "--kubeconfig", &kubeconfig, "-n", OPERATOR_NS, "--timeout", "2m"])?;
    ensure(tested.contains("Phase:          Succeeded"), || format!("helm test: {tested}"))?;
    step("helm test: the test pod fetched /readyz through the operator's Service (CoreDNS, kube-proxy)");

    // --- fleets and relay as pods --------------------------------------------------------------
    let data = dir.join("lab-data");
    // The sensor runs as UID 65532; a HostPath directory the kubelet creates belongs to root.
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    std::os::unix::fs::chown(&data, Some(65532), Some(65532)).map_err(|e| format!("chown {}: {e}", data.display()))?;
    ctx.admin().run(&["create", "namespace", LAB_NS])?;
    let applied = Instant::now();
    ctx.admin().apply(RELAY)?;
    ctx.admin().apply(&LAB_FLEET.replace("{data}", &data.display().to_string()))?;
    ctx.admin().apply(MESH_FLEET)?;
    let wait = |what: &str| {
        ctx.admin().run(&["-n", LAB_NS, "wait", "--for=condition=Ready", what, "--timeout=240s"]).map(|_| ())
    };
    wait("relaynode/relay")?;
    wait("sensorfleet/lab")?;
    let lab_ready = applied.elapsed();
    wait("sensorfleet/mesh")?;
    let all_ready = applied.elapsed();
    let running = ctx.admin().json(&["-n", LAB_NS, "get", "pods"])?;
    let phases: Vec<String> = items(&running)
        .iter()
        .map(|p| format!("{}={}", p["metadata"]["name"].as_str().unwrap_or("?"), p["status"]["phase"]))
        .collect();
    ensure(items(&running).len() == 4 && items(&running).iter().all(|p| p["status"]["phase"] == "Running"), || {
        format!("pods: {phases:?}")
    })?;
    step(&format!(
        "kubectl apply: RelayNode and SensorFleet lab Ready after {:.1}s, fleet mesh after {:.1}s; pods {phases:?}",
        lab_ready.as_secs_f64(),
        all_ready.as_secs_f64()
    ));

    // --- real kaspad peers against the sensor pod ----------------------------------------------
    let mut lab = Lab::new()?;
    let public_host = lab.add_host("kpub", KASPAD_PUBLIC)?;
    let nat = lab.add_nat_site("knat", KASPAD_NAT_WAN, 1)?;
    ctx.lab = Some(lab);
    let kaspad_bin = support::kaspad::find_kaspad()?;
    let first_connection = Instant::now();
    for (name, host, listen) in [
        ("kaspad-public", &public_host, SocketAddrV4::new(KASPAD_PUBLIC, Net::Devnet.p2p_port())),
        ("kaspad-nat", &nat.host, SocketAddrV4::new(nat.host.ip, Net::Devnet.p2p_port())),
    ] {
        let spec =
            KaspadSpec { net: Net::Devnet, listen, add_peers: vec![SocketAddr::V4(SENSOR_P2P)], log_level: None };
        ctx.kaspads.push(Kaspad::spawn(&kaspad_bin, name, host, &dir, &spec)?);
    }
    let status = wait_until("SensorFleet lab .status.peers: one public, one private", WAIT, || {
        let f = ctx.admin().json(&["-n", LAB_NS, "get", "sensorfleet", "lab"])?;
        let p = &f["status"]["peers"];
        Ok((p["public"] == 1 && p["private"] == 1).then_some(f))
    })?;
    let verdict_in_status = first_connection.elapsed();
    let ua = status["status"]["topUserAgents"][0]["userAgent"].as_str().unwrap_or_default();
    ensure(ua.contains("kaspad:2.1.0"), || format!("top user agent {ua:?} should be kaspad 2.1.0's"))?;
    step(&format!(
        "kaspad public and behind a NAT: .status.peers {} within {:.1}s of starting them",
        status["status"]["peers"],
        verdict_in_status.as_secs_f64()
    ));
    metrics_agree(ctx)?;
    step("the sensor pod's verdict counters, the operator's fleet gauges and .status.peers agree");

    let hole_punch = wait_until("RelayNode .status.holePunch with attempts", WAIT, || {
        let r = ctx.admin().json(&["-n", LAB_NS, "get", "relaynode", "relay"])?;
        let hp = r["status"]["holePunch"].clone();
        Ok((hp["attempts"].as_i64().unwrap_or(0) >= 2).then_some(hp))
    })?;
    step(&format!("the mesh fleet's punch sidecars punched through the relay pod: .status.holePunch {hole_punch}"));

    let memory = pod_memory(ctx.admin(), &node)?;
    step(&format!("memory (kubelet /metrics/resource, working set): {memory}"));
    step(&format!("memory (the same processes' VmRSS, RssAnon from /proc): {}", process_memory()));

    // --- a spec change rolls the pods ----------------------------------------------------------
    let before = pod_uids(ctx.admin(), "p2psensor.dev/fleet=mesh")?;
    ctx.admin().run(&[
        "-n",
        LAB_NS,
        "patch",
        "sensorfleet",
        "mesh",
        "--type=merge",
        "-p",
        r#"{"spec":{"probing":{"attempts":3}}}"#,
    ])?;
    wait_until("the mesh fleet's pods replaced and Ready", WAIT, || {
        let now = pod_uids(ctx.admin(), "p2psensor.dev/fleet=mesh")?;
        let ready = ctx.admin().json(&["-n", LAB_NS, "get", "statefulset", "mesh-sensor"])?;
        let rolled = now.len() == 2 && now.iter().all(|u| !before.contains(u));
        Ok((rolled && ready["status"]["readyReplicas"] == 2 && ready["status"]["updatedReplicas"] == 2).then_some(()))
    })?;
    step("a spec change (probing.attempts) rolled both mesh pods");

    // --- a sensor pod killed: restored, with its data ------------------------------------------
    let db = data.join("sensor.sqlite");
    let verdicts_before = verdict_rows(&db)?;
    ensure(verdicts_before >= 2, || format!("{} holds {verdicts_before} verdicts", db.display()))?;
    let killed = pod_uids(ctx.admin(), "p2psensor.dev/fleet=lab")?;
    ctx.admin().run(&[
        "-n",
        LAB_NS,
        "delete",
        "pod",
        "-l",
        "p2psensor.dev/fleet=lab",
        "--grace-period=0",
        "--force",
    ])?;
    let restored_at = Instant::now();
    let replacement = wait_until("the DaemonSet's new sensor pod Ready", WAIT, || {
        let pods = ctx.admin().json(&["-n", LAB_NS, "get", "pods", "-l", "p2psensor.dev/fleet=lab"])?;
        Ok(items(&pods).into_iter().find_map(|p| {
            let fresh = !killed.iter().any(|k| p["metadata"]["uid"] == k.as_str());
            let ready = p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            (fresh && ready).then(|| p["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        }))
    })?;
    // The new pod reports under its own name, with the counts of its database (the peers table
    // the old pod filled). The old pod's summary stays, silent, until the operator forgets it
    // (--forget-after-secs), and `.status.peers.public/private` are sums over sensors, so they
    // count both for that long; the distinct count stays right.
    wait_until("the new sensor pod in .status.sensorSummaries with one public, one private", WAIT, || {
        let f = ctx.admin().json(&["-n", LAB_NS, "get", "sensorfleet", "lab"])?;
        let summary = f["status"]["sensorSummaries"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == replacement.as_str()).cloned());
        let unique = &f["status"]["peers"]["uniqueAcrossFleet"];
        Ok(summary.filter(|s| s["reporting"] == true && s["public"] == 1 && s["private"] == 1 && *unique == 2))
    })?;
    let verdicts_after = verdict_rows(&db)?;
    ensure(verdicts_after >= verdicts_before, || format!("verdicts {verdicts_before} -> {verdicts_after}"))?;
    step(&format!(
        "sensor pod killed: a new one Ready and the fleet's status back after {:.1}s; SQLite on the HostPath kept {verdicts_before} verdicts (now {verdicts_after})",
        restored_at.elapsed().as_secs_f64()
    ));

    // --- deletion and uninstall ----------------------------------------------------------------
    for object in ["sensorfleet/lab", "sensorfleet/mesh", "relaynode/relay"] {
        ctx.admin().run(&["-n", LAB_NS, "delete", object, "--wait=true", "--timeout=90s"])?;
    }
    wait_until("every child and pod of the fleets and the relay gone", WAIT, || {
        let left = ctx.admin().json(&[
            "-n",
            LAB_NS,
            "get",
            "pods,statefulsets,daemonsets,deployments,services,configmaps,serviceaccounts,secrets",
            "-l",
            "app.kubernetes.io/managed-by=p2p-sensor-operator",
        ])?;
        let pods = ctx.admin().json(&["-n", LAB_NS, "get", "pods"])?;
        Ok((items(&left).is_empty() && items(&pods).is_empty()).then_some(()))
    })?;
    step("fleets and relay deleted: the garbage collector removed every child and pod");
    helm(&bin, &["uninstall", RELEASE, "--kubeconfig", &kubeconfig, "-n", OPERATOR_NS, "--wait", "--timeout", "2m"])?;
    // `--wait` covers the release's objects; their pods terminate after it (grace period).
    wait_until("nothing of the release left after helm uninstall", WAIT, || {
        let left = ctx.admin().run(&[
            "get",
            "all,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,leases,configmaps,secrets",
            "-A",
            "-l",
            "app.kubernetes.io/instance=p2p-sensor-operator",
            "-o",
            "name",
        ])?;
        if left.trim().is_empty() { Ok(Some(())) } else { Err(format!("left: {}", left.trim())) }
    })?;
    let crds = ctx.admin().run(&["get", "crd", "-o", "name"])?;
    ensure(crds.contains("sensorfleets.p2psensor.dev") && crds.contains("relaynodes.p2psensor.dev"), || {
        format!("CRDs after helm uninstall: {crds}")
    })?;
    step("helm uninstall: nothing of the release left but the CRDs (Helm never deletes crds/)");

    crd_upgrade(ctx, &bin, &kubeconfig, &chart)?;
    step(
        "CRD upgrade as the README says: helm upgrade left the previous CRD as it was; kubectl apply --server-side -f crds/ served the new field",
    );
    Ok(())
}

/// A fleet that uses `spec.crawler`, the field the "previous" CRD lacks.
const CRAWL_FLEET: &str = r#"
apiVersion: p2psensor.dev/v1alpha1
kind: SensorFleet
metadata: {name: crawl, namespace: p2p-lab}
spec:
  network: devnet
  mode: StatefulSet
  replicas: 1
  exposure: {kind: NodePort}
  externalAddress: {source: None}
  storage: {kind: EmptyDir}
  crawler: {intervalSecs: 60, allowPrivateTargets: true}
"#;

/// The README's CRD upgrade (the way kube-prometheus-stack documents it): Helm installs the
/// chart's `crds/` once and never upgrades them, so an upgrade applies `crds/` first. The
/// previous release: this chart as version 0.0.0-previous whose SensorFleet CRD lacks
/// `spec.crawler`. Checked: the API server refuses a fleet with a crawler under that CRD;
/// `helm upgrade` alone leaves the CRD unchanged; `kubectl apply --server-side -f crds/` then
/// serves the field and the upgraded operator runs that fleet to Ready.
fn crd_upgrade(ctx: &Ctx, bin: &Path, kubeconfig: &str, chart: &str) -> Result<(), String> {
    let admin = ctx.admin();
    let crd_name = "sensorfleets.p2psensor.dev";
    admin.run(&["delete", "crd", crd_name, "relaynodes.p2psensor.dev", "--wait=true", "--timeout=60s"])?;
    let previous = ctx.dir.path().join("previous-chart");
    support::netns::run("cp", &["-r", chart, &previous.display().to_string()])?;
    let chart_yaml = previous.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml).map_err(|e| format!("{}: {e}", chart_yaml.display()))?;
    let text = text.replacen("\nversion: ", "\nversion: 0.0.0-previous\n# was: ", 1);
    std::fs::write(&chart_yaml, text).map_err(|e| format!("{}: {e}", chart_yaml.display()))?;
    let crd_file = previous.join(format!("crds/{crd_name}.yaml"));
    let mut crd: Value = serde_norway::from_str(
        &std::fs::read_to_string(&crd_file).map_err(|e| format!("{}: {e}", crd_file.display()))?,
    )
    .map_err(|e| format!("{}: {e}", crd_file.display()))?;
    for version in crd["spec"]["versions"].as_array_mut().ok_or("CRD without versions")? {
        let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        spec.as_object_mut().and_then(|p| p.remove("crawler")).ok_or("CRD without spec.crawler")?;
    }
    std::fs::write(&crd_file, serde_norway::to_string(&crd).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", crd_file.display()))?;
    let previous = previous.display().to_string();
    helm(
        bin,
        &["install", RELEASE, &previous, "--kubeconfig", kubeconfig, "-n", OPERATOR_NS, "--wait", "--timeout", "3m"],
    )?;
    let has_crawler = || -> Result<bool, String> {
        let crd = admin.json(&["get", "crd", crd_name])?;
        Ok(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["crawler"]
            .is_object())
    };
    ensure(!has_crawler()?, || "the previous chart's CRD has spec.crawler".into())?;
    let refused = admin.apply(CRAWL_FLEET).err().unwrap_or_default();
    ensure(refused.contains("crawler"), || format!("a crawler under the previous CRD: {refused:?}"))?;

    helm(
        bin,
        &["upgrade", RELEASE, chart, "--kubeconfig", kubeconfig, "-n", OPERATOR_NS, "--wait", "--timeout", "3m"],
    )?;
    ensure(!has_crawler()?, || "helm upgrade changed the CRD: Helm never upgrades crds/".into())?;
    admin.run(&["apply", "--server-side", "--force-conflicts", "-f", &format!("{REPO}/crds/")])?;
    ensure(has_crawler()?, || "kubectl apply -f crds/ did not serve spec.crawler".into())?;
    admin.apply(CRAWL_FLEET)?;
    admin.run(&["-n", LAB_NS, "wait", "--for=condition=Ready", "sensorfleet/crawl", "--timeout=240s"])?;
    admin.run(&["-n", LAB_NS, "delete", "sensorfleet", "crawl", "--wait=true", "--timeout=90s"])?;
    helm(bin, &["uninstall", RELEASE, "--kubeconfig", kubeconfig, "-n", OPERATOR_NS, "--wait", "--timeout", "2m"])?;
    Ok(())
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn node_name(admin: &Kubectl) -> Result<String, String> {
    let nodes = admin.json(&["get", "nodes"])?;
    items(&nodes)
        .first()
        .and_then(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .ok_or_else(|| "no node".to_owned())
}

/// The first image name on `node` starting with `prefix` (the node's `.status.images`).
fn node_image(admin: &Kubectl, node: &str, prefix: &str) -> Result<String, String> {
    let n = admin.json(&["get", "node", node])?;
    n["status"]["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .find(|n| n.starts_with(prefix))
        .ok_or_else(|| format!("no image {prefix}* on node {node}"))
}

fn pod_uids(admin: &Kubectl, selector: &str) -> Result<Vec<String>, String> {
    let pods = admin.json(&["-n", LAB_NS, "get", "pods", "-l", selector])?;
    Ok(items(&pods)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
        .collect())
}

/// Verdict events in the sensor's SQLite file (read-only, beside the running sensor: WAL).
fn verdict_rows(db: &Path) -> Result<i64, String> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", db.display()))?;
    conn.query_row("SELECT count(*) FROM events WHERE kind = 'verdict'", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", db.display()))
}

/// The host-network sensor's verdict counters, the operator's fleet gauges (through the API
/// server's Service proxy) and `.status.peers` say the same.
fn metrics_agree(ctx: &Ctx) -> Result<(), String> {
    wait_until("sensor metrics, operator metrics and .status.peers agree", WAIT, || {
        let f = ctx.admin().json(&["-n", LAB_NS, "get", "sensorfleet", "lab"])?;
        let status = (f["status"]["peers"]["public"].as_f64(), f["status"]["peers"]["private"].as_f64());
        // The operator's gauges are totals over all fleets (no label names an object).
        let all = ctx.admin().json(&["-n", LAB_NS, "get", "sensorfleets"])?;
        let total = |class: &str| items(&all).iter().map(|f| f["status"]["peers"][class].as_f64().unwrap_or(0.0)).sum();
        let totals: (f64, f64) = (total("public"), total("private"));
        let (code, sensor) = support::http::get(SocketAddr::V4(SENSOR_METRICS), "/metrics", Duration::from_secs(5))?;
        ensure(code == 200, || format!("sensor /metrics: HTTP {code}"))?;
        let sensor = (
            support::http::metric(&sensor, "sensor_peers_classified_public_total", &[]),
            support::http::metric(&sensor, "sensor_peers_classified_private_total", &[]),
        );
        let operator = ctx.admin().run(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{OPERATOR_NS}/services/http:{RELEASE}:http/proxy/metrics"),
        ])?;
        let operator = (
            support::http::metric(&operator, "p2psensor_fleet_peers", &[("class", "public")]),
            support::http::metric(&operator, "p2psensor_fleet_peers", &[("class", "private")]),
        );
        if status == (Some(1.0), Some(1.0)) && sensor == status && operator == (Some(totals.0), Some(totals.1)) {
            Ok(Some(()))
        } else {
            Err(format!("status {status:?}, sensor {sensor:?}, operator {operator:?}"))
        }
    })
}

/// VmRSS and RssAnon of our containers' processes (`/usr/local/bin/sensor|operator`), by command:
/// the working set of a cgroup v1 container leaves out the binary's page cache when another
/// cgroup (the image import) faulted it in first, so both are shown.
fn process_memory() -> String {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).take(2).collect();
        if !matches!(args.first().map(String::as_str), Some("/usr/local/bin/sensor" | "/usr/local/bin/operator")) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let kib = |key: &str| {
            status.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches(" kB").parse::<f64>().ok())
        };
        let (Some(rss), Some(anon)) = (kib("VmRSS:"), kib("RssAnon:")) else { continue };
        let name = args.join(" ").replace("/usr/local/bin/", "");
        out.push(format!("{name} {:.1} MiB (anon {:.1})", rss / 1024.0, anon / 1024.0));
    }
    out.sort();
    out.join(", ")
}

/// Working-set bytes of every container in our namespaces, from the kubelet's
/// `/metrics/resource` (through the API server's node proxy), as "pod/container MiB" pairs.
fn pod_memory(admin: &Kubectl, node: &str) -> Result<String, String> {
    let text = admin.run(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/metrics/resource")])?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("container_memory_working_set_bytes{")) {
        let label =
            |name: &str| line.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("");
        if ![OPERATOR_NS, LAB_NS].contains(&label("namespace")) {
            continue;
        }
        let bytes: f64 = line.rsplit(' ').nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        out.push(format!("{}/{} {:.1} MiB", label("pod"), label("container"), bytes / 1048576.0));
    }
    ensure(!out.is_empty(), || format!("no container_memory_working_set_bytes for our pods in:\n{text}"))?;
    out.sort();
    Ok(out.join(", "))
}
