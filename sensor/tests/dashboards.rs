//! The Grafana dashboards under `dashboards/` against the code's real metric registries.
//!
//! Every `dashboards/*.json` must parse, be a Grafana dashboard with a `${datasource}` variable of
//! type prometheus, have unique panel ids, and every panel must name that datasource and have at
//! least one PromQL target. Every metric a query (or a template variable query) names must be
//! registered by the binaries: the sensor's listener, `sensor punch` (with libp2p-metrics and the
//! reachability gauge), `sensor relay`, `sensor crawl` and the operator (controller and collector).
//! The registries are built with the same calls the binaries make and encoded to text; the
//! `# TYPE` lines give the names. No network.
//!
//! docs/metrics.md ("Metrics reference") must list every sensor and operator metric, too (libp2p's own
//! `libp2p_*` metrics are described as a group there). `DASHBOARDS_PRINT_METRICS=1 cargo test -p
//! sensor --test dashboards -- --nocapture` prints the table rows from the registries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use libp2p::metrics::Recorder;
use prometheus_client::registry::Registry;
use sensor::metrics::{Metrics, PunchMetrics, ReachabilityMetrics};
use sensor::p2p::stats::RelayMetrics;
use sensor_core::Label;
use sensor_core::punch::{Outcome, Transport};
use sensor_core::reachability::Reachability;
use serde_json::Value;

/// Prefixes of the metric names a query may use; anything else in a query is PromQL, a label or a
/// variable.
const PREFIXES: [&str; 5] = ["sensor_", "p2psensor_", "operator_", "libp2p_", "controller_runtime_"];

/// One registered metric family, from the encoded registry.
#[derive(Debug, Clone, Default)]
struct Family {
    /// `counter`, `gauge`, `histogram`, `info`, ...
    kind: String,
    help: String,
    /// Label names seen on the pre-created series (empty when the family has none yet).
    labels: BTreeSet<String>,
    /// `sensor` (listener, punch, relay, crawl sidecars) or `operator`.
    source: &'static str,
}

/// The sensor binary's registries: the listener's, plus what `sensor punch`, `sensor relay` and
/// `sensor crawl` register next to it (see `p2p::punch::client`, `p2p::relay`, `crawl`).
///
/// prometheus-client leaves a family without series out of the text entirely, so every family the
/// code does not pre-create gets one series here (through the same handles the binaries use).
fn sensor_registry() -> Registry {
    let (metrics, mut registry) = Metrics::new();
    metrics.storage_error("io");
    let _ = metrics.messages_received.get_or_create(&sensor::metrics::MessageLabels { message_type: "Ping" });
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    let peer = libp2p::PeerId::random();
    libp2p_metrics.record(&libp2p::dcutr::Event {
        remote_peer_id: peer,
        result: Ok(libp2p::swarm::ConnectionId::new_unchecked(1)),
    });
    libp2p_metrics.record(&libp2p::relay::Event::ReservationReqAccepted { src_peer_id: peer, renewed: false });
    let transports = Transport::all_labels();
    let outcomes = Outcome::all_labels();
    let _punch = PunchMetrics::register(&mut registry, &transports, &outcomes);
    let _reachability = ReachabilityMetrics::register(&mut registry, &Reachability::all_labels());
    let _relay = RelayMetrics::register(&mut registry);
    let _crawl = sensor::crawl::register_metrics(&mut registry);
    let _export = sensor::metrics::ExportMetrics::register(&mut registry, "http", &sensor::export::failure_kinds());
    registry
}

/// The operator's one registry (`operator::run`): controller and collector metrics, with one
/// reconciliation error, apply, delete, status patch and a crawling fleet recorded so that every
/// family has a series.
fn operator_registry() -> Registry {
    use operator::crd::{FleetCrawlStats, Network, SensorFleetStatus};
    let mut registry = Registry::default();
    let metrics = operator::metrics::Metrics::register(&mut registry);
    let _collector = operator::collector::metrics::CollectorMetrics::register(&mut registry);
    let object = operator::error::ObjectName { kind: "SensorFleet".into(), namespace: "lab".into(), name: "a".into() };
    let error = operator::error::ReconcileError::Resolve(operator::error::ResolveError::MissingObjectKey {
        object,
        key: "metadata.uid",
    });
    metrics.reconciled("sensorfleet", Err(&error), std::time::Duration::from_millis(3));
    metrics.applied("StatefulSet");
    metrics.deleted("Service");
    metrics.status_patched("sensorfleet");
    let finished = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-06-01T11:55:00Z".parse().unwrap());
    let status = SensorFleetStatus {
        crawl: Some(FleetCrawlStats {
            crawlers: 1,
            known_nodes: 10,
            reachable_nodes: 4,
            last_crawl_time: Some(finished),
            last_crawl_duration_ms: Some(1_000),
            ..FleetCrawlStats::default()
        }),
        ..SensorFleetStatus::default()
    };
    metrics.set_fleet("lab/a", Some((Network::Mainnet, &status)));
    registry
}

/// Families by exposed base name: counters as `<name>_total`, histograms and gauges as `<name>`
/// (a histogram's series are `<name>_bucket`, `_sum`, `_count`).
fn families() -> BTreeMap<String, Family> {
    let mut out = BTreeMap::new();
    for (source, registry) in [("sensor", sensor_registry()), ("operator", operator_registry())] {
        parse_exposition(&sensor::metrics::encode(&registry), source, &mut out);
    }
    out
}

fn parse_exposition(text: &str, source: &'static str, out: &mut BTreeMap<String, Family>) {
    let mut help: BTreeMap<&str, &str> = BTreeMap::new();
    // Family name (as in `# TYPE`) -> exposed base name.
    let mut base_of: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name, h);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let base = match kind {
                "counter" => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_string(),
            };
            base_of.insert(name.to_string(), base.clone());
            let family = Family {
                kind: kind.to_string(),
                help: help.get(name).copied().unwrap_or_default().to_string(),
                labels: BTreeSet::new(),
                source,
            };
            assert!(out.insert(base.clone(), family).is_none(), "{base} registered twice");
        } else if !line.starts_with('#') && !line.is_empty() {
            // A sample: `name{a="x",b="y"} value` or `name value`.
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let series = &line[..end];
            let family = [series, strip_series_suffix(series)]
                .into_iter()
                .chain(["_total", "_info"].into_iter().filter_map(|s| series.strip_suffix(s)))
                .find_map(|n| base_of.get(n));
            let Some(base) = family else { continue };
            if line[end..].starts_with('{') {
                let labels = &line[end + 1..line.find('}').expect("closing brace")];
                for pair in split_labels(labels) {
                    let name = pair.split_once('=').map_or(pair, |(n, _)| n);
                    if name != "le" {
                        out.get_mut(base).expect("family").labels.insert(name.to_string());
                    }
                }
            }
        }
    }
}

/// Splits `a="x",b="y,z"` on the commas outside quotes.
fn split_labels(labels: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        parts.push(&labels[start..]);
    }
    parts
}

fn strip_series_suffix(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// Every metric identifier in a PromQL expression: tokens `[a-zA-Z_:][a-zA-Z0-9_:]*` that start
/// with one of [`PREFIXES`], outside string literals, not preceded by `$` (a Grafana variable).
/// Histogram series suffixes are kept; [`known`] strips them.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let (mut names, mut i) = (Vec::new(), 0);
    let ident_start = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b == b':';
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' || b == b'`' {
            // Skip a string literal (label values, regexes).
            i += 1;
            while i < bytes.len() && bytes[i] != b {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ident_start(b) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let token = &expr[start..i];
            let variable = start > 0 && (bytes[start - 1] == b'$' || bytes[start - 1] == b'{');
            if !variable && PREFIXES.iter().any(|p| token.starts_with(p)) {
                names.push(token.to_string());
            }
        } else if b.is_ascii_digit() {
            // A number or duration (`5m`, `1e3`): not an identifier.
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Whether `name` (a series name a query uses) is registered.
fn known(name: &str, families: &BTreeMap<String, Family>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    let base = strip_series_suffix(name);
    base != name && families.get(base).is_some_and(|f| f.kind == "histogram")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = workspace().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected the three dashboards in {}, found {files:?}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p, json)
        })
        .collect()
}

/// Panels, rows' nested panels included (rows themselves are not returned).
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().map(|a| a.iter().rev().collect()).unwrap_or_default();
    while let Some(p) = stack.pop() {
        if p["type"] == "row" {
            stack.extend(p["panels"].as_array().into_iter().flatten().rev());
        } else {
            out.push(p);
        }
    }
    out
}

fn is_datasource_ref(v: &Value) -> bool {
    v == "${datasource}" || (v["uid"] == "${datasource}" && v["type"].as_str().is_none_or(|t| t == "prometheus"))
}

/// Structural problems of one dashboard, and the metric names its queries use (with where).
fn check_dashboard(name: &str, d: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let (mut problems, mut used) = (Vec::new(), Vec::new());
    if d["title"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("{name}: no title"));
    }
    if d["uid"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("{name}: no uid"));
    }
    if d["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        problems.push(format!("{name}: schemaVersion {} < 36", d["schemaVersion"]));
    }
    let variables: Vec<&Value> = d["templating"]["list"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let datasource = variables.iter().find(|v| v["name"] == "datasource");
    match datasource {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push(format!("{name}: no `datasource` variable of type datasource, query prometheus")),
    }
    for v in variables.iter().filter(|v| v["type"] == "query") {
        if !is_datasource_ref(&v["datasource"]) {
            problems.push(format!("{name}: variable {} does not use ${{datasource}}", v["name"]));
        }
        let query = v["query"].as_str().or_else(|| v["query"]["query"].as_str()).unwrap_or_default();
        for m in metric_names(query) {
            used.push((m, format!("{name}: variable {}", v["name"])));
        }
    }
    let mut ids = BTreeSet::new();
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or("?");
        let Some(id) = p["id"].as_u64() else {
            problems.push(format!("{name}: panel {title:?} has no id"));
            continue;
        };
        if !ids.insert(id) {
            problems.push(format!("{name}: panel id {id} ({title:?}) is not unique"));
        }
        if p["type"] == "text" {
            continue;
        }
        if !is_datasource_ref(&p["datasource"]) {
            problems.push(format!("{name}: panel {title:?} does not use the ${{datasource}} variable"));
        }
        let exprs: Vec<&str> =
            p["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str()).collect();
        if exprs.iter().all(|e| e.trim().is_empty()) {
            problems.push(format!("{name}: panel {title:?} has no target expr"));
        }
        for e in exprs {
            let names = metric_names(e);
            if names.is_empty() {
                problems.push(format!("{name}: panel {title:?}: expr names no known-prefix metric: {e}"));
            }
            used.extend(names.into_iter().map(|m| (m, format!("{name}: panel {title:?}"))));
        }
    }
    (problems, used)
}

#[test]
fn extractor_finds_metric_names_only() {
    let expr = r#"histogram_quantile(0.95, sum by (le, pod) (rate(sensor_probe_duration_seconds_bucket{namespace=~"$namespace", job="sensor_x"}[$__rate_interval])))
        / on() group_left sum(p2psensor_fleet_peers{class='public'}) + libp2p_swarm_connections_incoming_total offset 5m"#;
    assert_eq!(
        metric_names(expr),
        ["sensor_probe_duration_seconds_bucket", "p2psensor_fleet_peers", "libp2p_swarm_connections_incoming_total"]
    );
    let families = families();
    assert!(known("sensor_probe_duration_seconds_bucket", &families));
    assert!(known("sensor_probe_duration_seconds_count", &families));
    assert!(known("sensor_connections_total", &families));
    assert!(!known("sensor_connections", &families), "counters are exposed with _total only");
    assert!(!known("sensor_connections_active_bucket", &families), "a gauge has no buckets");
    // A dashboard naming a metric that does not exist fails with its name.
    let bogus = serde_json::json!({
        "title": "t", "uid": "u", "schemaVersion": 39,
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": [{"id": 1, "title": "p", "type": "timeseries",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "targets": [{"expr": "rate(sensor_no_such_metric_total[5m])"}]},
            {"id": 1, "title": "q", "type": "timeseries", "targets": []}]
    });
    let (problems, used) = check_dashboard("bogus.json", &bogus);
    let unknown: Vec<&str> = used.iter().map(|(m, _)| m.as_str()).filter(|m| !known(m, &families)).collect();
    assert_eq!(unknown, ["sensor_no_such_metric_total"]);
    assert!(problems.iter().any(|p| p.contains("panel id 1")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("\"q\" does not use")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("\"q\" has no target expr")), "{problems:?}");
}

#[test]
fn registries_have_the_names_the_docs_promise() {
    let families = families();
    for name in [
        "sensor_connections_total",
        "sensor_probe_duration_seconds",
        "sensor_punch_attempts_total",
        "sensor_punch_time_to_direct_seconds",
        "sensor_reachability",
        "sensor_relay_reservations_active",
        "sensor_crawl_visits_total",
        "p2psensor_fleet_peers",
        "operator_collector_reports_total",
        "controller_runtime_reconcile_time_seconds",
    ] {
        assert!(families.contains_key(name), "{name} not registered; have {:?}", families.keys());
    }
    assert!(families.keys().any(|n| n.starts_with("libp2p_")), "libp2p-metrics registered nothing");
    assert_eq!(families["sensor_punch_attempts_total"].labels, BTreeSet::from(["outcome".into(), "transport".into()]));
}

#[test]
fn dashboards_are_valid_and_use_only_registered_metrics() {
    let families = families();
    let (mut problems, mut uids) = (Vec::new(), BTreeSet::new());
    for (path, d) in dashboards() {
        let name = path.file_name().expect("file name").to_string_lossy().into_owned();
        if let Some(uid) = d["uid"].as_str()
            && !uids.insert(uid.to_string())
        {
            problems.push(format!("{name}: uid {uid} is used by another dashboard"));
        }
        let (p, used) = check_dashboard(&name, &d);
        problems.extend(p);
        for (metric, at) in used {
            if !known(&metric, &families) {
                problems.push(format!("{at}: unknown metric {metric}"));
            }
        }
    }
    assert!(problems.is_empty(), "dashboard problems:\n{}", problems.join("\n"));
}

/// Which process serves `name` on which port (docs/metrics.md table column).
fn exporter(name: &str, f: &Family) -> &'static str {
    match name {
        _ if f.source == "operator" => "operator :8080",
        "sensor_reachability" => "punch :9103, relay :9105",
        _ if name.starts_with("sensor_punch_") => "punch :9103",
        _ if name.starts_with("sensor_relay_") => "relay :9105",
        _ if name.starts_with("sensor_crawl_") => "crawl :9104",
        _ => "listen :9102",
    }
}

/// One row of the metrics table in docs/metrics.md: `| `name` | exported by | type | labels | meaning |`.
fn table_row(name: &str, f: &Family) -> String {
    let labels: Vec<String> = f.labels.iter().map(|l| format!("`{l}`")).collect();
    let labels = if labels.is_empty() { "—".to_string() } else { labels.join(", ") };
    format!("| `{name}` | {} | {} | {labels} | {} |", exporter(name, f), f.kind, f.help.replace('|', "\\|"))
}

#[test]
fn readme_metrics_reference_lists_every_metric() {
    let families = families();
    let ours: Vec<(&String, &Family)> = families.iter().filter(|(n, _)| !n.starts_with("libp2p_")).collect();
    if std::env::var_os("DASHBOARDS_PRINT_METRICS").is_some() {
        for (name, f) in &ours {
            println!("{}", table_row(name, f));
        }
    }
    let readme = std::fs::read_to_string(workspace().join("docs/metrics.md")).expect("docs/metrics.md");
    let section =
        readme.split("# Metrics reference").nth(1).expect("docs/metrics.md has a \"# Metrics reference\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let missing: Vec<&str> =
        ours.iter().map(|(n, _)| n.as_str()).filter(|n| !section.contains(&format!("| `{n}` |"))).collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md \"Metrics reference\" lacks {missing:?}; regenerate the rows with \
         DASHBOARDS_PRINT_METRICS=1 cargo test -p sensor --test dashboards readme -- --nocapture"
    );
}

/// A minimal Kaspa node for [`example_lab_database`]: the library's handshake plus the sensor's
/// keep-alive flows (as in `listen_loopback.rs`), with its own user agent.
struct LabPeer {
    version: sensor::kaspa::version::LocalVersion,
    user_agent: &'static str,
}

#[tonic::async_trait]
impl kaspa_p2p_lib::ConnectionInitializer for LabPeer {
    async fn initialize_connection(
        &self,
        router: std::sync::Arc<kaspa_p2p_lib::Router>,
    ) -> Result<(), kaspa_p2p_lib::common::ProtocolError> {
        let mut handshake = kaspa_p2p_lib::KaspadHandshake::new(&router);
        router.start();
        let mut version = self.version.message();
        version.user_agent = self.user_agent.to_owned();
        let theirs = handshake.handshake(version).await?;
        router.set_identity(kaspa_utils::networking::PeerId::from_slice(&theirs.id)?);
        let flows = sensor::kaspa::flows::PeerFlows::subscribe_after_handshake(&router);
        handshake.exchange_ready_messages().await?;
        let (metrics, _) = sensor::metrics::Metrics::new();
        tokio::spawn(flows.run(router, vec![], None, metrics, std::future::pending()));
        Ok(())
    }
}

/// Builds the example SQLite store (into `$LAB_DB_OUT`, e.g. `docs/examples/data`; without it
/// into a temporary directory, so the `--ignored` phase of CI checks the build without touching
/// the committed file) that the example plots in `docs/examples/plots/` come from; nothing here is invented but the lab's
/// inputs (the graph, the peers' source addresses and user agents). It runs the real binary:
///
/// 1. an in-process synthetic Kaspa network ([`sensor_testkit::lab`]: 150 kaspa-p2p-lib nodes on
///    127.78.0.x, some listed but not listening, two on the wrong network, one oversized gossiper,
///    two rejecting the handshake);
/// 2. `sensor crawl` from node 0, twice, into the store (tables `crawls`, `crawl_visits`,
///    `crawl_nodes`, ...);
/// 3. `sensor listen` on the same store, with inbound devnet peers in waves: kaspa-p2p-lib nodes
///    listening on the 127.0.0.1 port they advertise (the dial-back completes a handshake with the
///    same id: `public`), peers from 127.0.3x.y advertising a lab node's address (the dial-back
///    meets another id: `different_node`) or nothing (`refused`), and a burst over the per-IP cap
///    (`ip_limit` rejections); tables `events`, `peers`.
///
/// `crawl_edges` and `address_sightings` (not plotted) are emptied to keep the file small.
///
/// `LAB_DB_OUT=docs/examples/data cargo test -p sensor --test dashboards -- --ignored example_lab_database --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 s of real binaries; LAB_DB_OUT=docs/examples/data refreshes the committed example"]
async fn example_lab_database() {
    use std::net::{IpAddr, SocketAddr};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use sensor::kaspa::{version::LocalVersion, wire::WireConnection};
    use sensor_core::network::Network;
    use sensor_testkit::lab::{Lab, LabSpec};

    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let work = tempfile::tempdir().unwrap();
    let out = std::env::var_os("LAB_DB_OUT").map(PathBuf::from).unwrap_or_else(|| work.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let spec = LabSpec {
        nodes: 150,
        block: 78,
        degree: 6,
        page: 4,
        dead_every: 9,
        wrong_network_nodes: vec![5, 17],
        oversized_nodes: vec![23],
        rejecting_nodes: vec![31, 44],
        network: Network::Devnet,
        wrong_network: Network::Mainnet,
        seed: 6,
        junk: vec![],
        reply_delay: Duration::from_millis(5),
    };
    let lab = Lab::start(spec).await.expect("synthetic network");
    let seed = lab.seed().to_string();
    let bin = env!("CARGO_BIN_EXE_sensor");
    for round in 0..2 {
        let status = Command::new(bin)
            .args(["crawl", "--network", "devnet", "--allow-private-targets", "--seed", &seed])
            .args(["--concurrency", "32", "--timeout-ms", "3000", "--max-duration-secs", "60"])
            .arg("--data-dir")
            .arg(work.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .status()
            .expect("sensor crawl runs");
        assert!(status.success(), "crawl round {round}: {status}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let p2p = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(work.path().join("listen.log")).unwrap();
    let mut listen = Command::new(bin)
        .arg("listen")
        .env("SENSOR_NETWORK", "devnet")
        .env("SENSOR_SENSOR_ID", "lab-sensor-0")
        .env("SENSOR_DATA_DIR", work.path())
        .env("SENSOR_LISTEN_ADDRESS", p2p.to_string())
        .env("SENSOR_METRICS_LISTEN", metrics.to_string())
        .env("SENSOR_CLASSIFY_ALLOW_PRIVATE_TARGETS", "true")
        .env("SENSOR_CLASSIFY_PROBE_RETRY_DELAY_MS", "100")
        .env("SENSOR_LISTEN_MAX_PEERS_PER_IP", "20")
        .env("SENSOR_STORAGE_FLUSH_INTERVAL_MS", "10")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn sensor listen");
    let start = Instant::now();
    while std::net::TcpStream::connect(p2p).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "sensor listen never bound {p2p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let agents = ["/kaspad:1.0.1/", "/kaspad:1.0.0/", "/kaspad:0.16.2/", "/kaspad:1.0.1/kaspa-ng:1.0.0/"];
    let live: Vec<usize> = (1..lab.addresses.len()).filter(|&i| lab.live[i]).collect();
    let mut held = Vec::new();
    let mut nodes = Vec::new();
    let mut n = 0usize;
    for wave in 0..6usize {
        for k in 0..8usize {
            n += 1;
            let agent = agents[(n * 7 + wave) % agents.len()];
            if k % 3 == 0 {
                // Public: listens where it says, and leaves from 127.0.0.1 (loopback).
                let advertised = SocketAddr::from(([127, 0, 0, 1], free_port()));
                let init = std::sync::Arc::new(LabPeer {
                    version: LocalVersion {
                        network: Network::Devnet,
                        id: uuid::Uuid::new_v4(),
                        address: Some(advertised),
                    },
                    user_agent: agent,
                });
                let adaptor = kaspa_p2p_lib::Adaptor::bidirectional(
                    advertised.into(),
                    kaspa_p2p_lib::Hub::new(),
                    init,
                    Default::default(),
                )
                .unwrap();
                match adaptor.connect_peer(p2p.to_string()).await {
                    Ok(_) => nodes.push(adaptor),
                    Err(e) => eprintln!("public peer {n}: {e:?}"),
                }
                continue;
            }
            // Different node: from a lab node's IP, advertising its address (the dial-back meets
            // the lab node, another id). Refused: from an IP nobody listens on.
            let (src, advertised) = if k % 3 == 1 {
                let node = lab.addresses[live[(wave * 8 + k) % live.len()]];
                (node.ip(), Some(node))
            } else {
                (IpAddr::from([127, 0, 30 + wave as u8, k as u8 + 1]), None)
            };
            let mut version =
                LocalVersion { network: Network::Devnet, id: uuid::Uuid::new_v4(), address: advertised }.message();
            version.user_agent = agent.to_owned();
            match WireConnection::connect(p2p, Some(src), Duration::from_secs(5)).await {
                Ok(mut conn) => {
                    if conn.handshake(version, Duration::from_secs(5)).await.is_ok() {
                        held.push(tokio::spawn(async move {
                            let _ = conn.serve().await;
                        }));
                    }
                }
                Err(e) => eprintln!("peer {n} from {src}: {e}"),
            }
        }
        // Three more from one IP than the per-IP cap (20) allows: rejected connections.
        if wave == 3 {
            for _ in 0..23 {
                let version =
                    LocalVersion { network: Network::Devnet, id: uuid::Uuid::new_v4(), address: None }.message();
                if let Ok(mut conn) =
                    WireConnection::connect(p2p, Some([127, 0, 41, 1].into()), Duration::from_secs(5)).await
                    && conn.handshake(version, Duration::from_secs(5)).await.is_ok()
                {
                    held.push(tokio::spawn(async move {
                        let _ = conn.serve().await;
                    }));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // Let the dial-backs finish, then stop the sensor gracefully (SIGTERM flushes the store).
    tokio::time::sleep(Duration::from_secs(8)).await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(listen.id() as i32, libc::SIGTERM);
    }
    let status = listen.wait().unwrap();
    for h in held {
        h.abort();
    }
    for node in nodes {
        node.close().await;
    }
    lab.stop().await;
    assert!(
        status.success(),
        "sensor listen: {status}\n{}",
        std::fs::read_to_string(work.path().join("listen.log")).unwrap()
    );

    let db = work.path().join("sensor.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DELETE FROM crawl_edges; DELETE FROM address_sightings; PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA journal_mode = DELETE;",
    )
    .unwrap();
    let count = |t: &str| conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).unwrap();
    let counts: Vec<(&str, i64)> =
        ["events", "peers", "crawls", "crawl_visits", "crawl_nodes"].into_iter().map(|t| (t, count(t))).collect();
    drop(conn);
    println!("lab database: {counts:?}");
    assert!(counts.iter().all(|(_, n)| *n > 0), "every table has rows: {counts:?}");
    std::fs::copy(&db, out.join("lab-sensor.sqlite")).unwrap();
}
