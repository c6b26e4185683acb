//! `SensorFleet`: a set of sensor pods listening on one Kaspa network, and what they measured.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
pub use sensor_core::Network;
use serde::{Deserialize, Serialize};

use super::common::{Exposure, Placement, PullPolicy};
use super::export::Export;

/// Desired state of a fleet of Kaspa sensors.
///
/// Cross-field rules (CEL, enforced by the API server and again by the operator):
/// `replicas` ≥ 1 is required in StatefulSet mode and forbidden in DaemonSet mode;
/// PersistentVolumeClaim storage needs StatefulSet mode; `holePunch` needs `relayRef`;
/// `crawler.minRevisitSecs` ≤ `crawler.maxRevisitSecs`; `network` is immutable.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "p2psensor.dev",
    version = "v1alpha1",
    kind = "SensorFleet",
    namespaced,
    status = "SensorFleetStatus",
    shortname = "sf",
    category = "p2psensor",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Sensors","type":"integer","description":"Ready sensor pods","jsonPath":".status.sensors.ready"}"#,
    printcolumn = r#"{"name":"Public","type":"integer","description":"Peers classified public (sum over sensors)","jsonPath":".status.peers.public"}"#,
    printcolumn = r#"{"name":"Private","type":"integer","description":"Peers classified private (sum over sensors)","jsonPath":".status.peers.private"}"#,
    printcolumn = r#"{"name":"Reachable","type":"integer","description":"Nodes the crawler reached (spec.crawler; max over crawlers)","jsonPath":".status.crawl.reachableNodes"}"#,
    printcolumn = r#"{"name":"Network","type":"string","priority":1,"jsonPath":".spec.network"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'DaemonSet' || (has(self.replicas) && self.replicas >= 1)").message("replicas must be at least 1 in StatefulSet mode"))]
#[x_kube(validation = Rule::new("self.mode != 'DaemonSet' || !has(self.replicas)").message("replicas is not allowed in DaemonSet mode: one sensor runs per selected node"))]
#[x_kube(validation = Rule::new("self.mode == 'StatefulSet' || !has(self.storage) || self.storage.kind != 'PersistentVolumeClaim'").message("PersistentVolumeClaim storage needs StatefulSet mode; use HostPath or EmptyDir with a DaemonSet"))]
#[x_kube(validation = Rule::new("!has(self.holePunch) || has(self.relayRef)").message("holePunch needs relayRef: hole punches go through a RelayNode"))]
pub struct SensorFleetSpec {
    /// Kaspa network the sensors join. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("network is immutable; create a new SensorFleet"))]
    pub network: Network,
    /// DaemonSet (one sensor per selected node; the default) or StatefulSet (`replicas` sensors).
    #[serde(default)]
    pub mode: WorkloadMode,
    /// Number of sensors in StatefulSet mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: Option<i32>,
    /// Sensor image; default: the operator's `--sensor-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// P2P listen port; default: the network's (mainnet 16111, testnet-10 16211, testnet-12 16311,
    /// devnet 16611, simnet 16511).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// How peers reach the sensors. Default: host network.
    #[serde(default)]
    pub exposure: Exposure,
    /// The address sensors advertise in `Version.address`.
    #[serde(default)]
    pub external_address: ExternalAddress,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub probing: Probing,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub storage: Storage,
    /// Where sensors export their stored events (besides their own SQLite): the sensor's
    /// `[export]` section, secrets mounted from Secrets; absent = no export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
    /// Compute resources of each sensor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// RelayNode (same namespace) the sensors use for hole-punch measurements: each sensor pod
    /// gets a `punch` sidecar that holds a reservation on it and punches to the other members of
    /// the fleet (see `holePunch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_ref: Option<RelayRef>,
    /// Tuning of the hole-punch sidecar (needs `relayRef`); absent = the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hole_punch: Option<HolePunch>,
    /// Continuous crawl of the network from every sensor pod: present (even `{}`) = each pod gets
    /// a `crawl` sidecar that maps the network through address gossip, seeded by the peers its
    /// listener saw plus `seeds` and `seedDns`, and revisits known nodes on a schedule that adapts
    /// to their observed uptime. Its summaries appear in `status.crawl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawler: Option<Crawler>,
}

/// The workload kind behind a fleet.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkloadMode {
    /// One sensor on every selected node (default).
    #[default]
    DaemonSet,
    /// `replicas` sensors with stable names and optional PersistentVolumeClaims.
    StatefulSet,
}

/// Where the advertised address comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExternalAddressSource {
    /// The node's IP (downward API `status.hostIP`) and the P2P port (default).
    #[default]
    HostIP,
    /// `address` as given.
    Static,
    /// Advertise nothing.
    None,
}

/// The address sensors advertise to peers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.source != 'Static' || has(self.address)").message("address is required when source is Static"))]
pub struct ExternalAddress {
    #[serde(default)]
    pub source: ExternalAddressSource,
    /// `IP:PORT` (source Static).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Dial-back probing (the sensor's `[classify]` section).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probing {
    /// Per-attempt timeout, ms (100–60000; sensor default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 60000))]
    pub timeout_ms: Option<i64>,
    /// Attempts before a peer is judged private (2–10; default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 10))]
    pub attempts: Option<i32>,
    /// Concurrent probes per sensor (1–4096; default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub concurrency: Option<i32>,
    /// How long a verdict is reused, s (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub cache_ttl_secs: Option<i64>,
    /// Dial non-routable source addresses (labs and devnets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_private_targets: Option<bool>,
}

/// Inbound limits (the sensor's `[listen]` section).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Concurrent inbound peers per sensor (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_inbound_peers: Option<i64>,
    /// Concurrent inbound peers per source IP (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_peers_per_ip: Option<i64>,
    /// Concurrent inbound peers per /24 (IPv4) or /48 (IPv6) (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_peers_per_subnet: Option<i64>,
}

/// Kind of the sensors' data volume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StorageKind {
    /// Scratch space that lives as long as the pod (default).
    #[default]
    EmptyDir,
    /// One PersistentVolumeClaim per sensor (StatefulSet mode only).
    PersistentVolumeClaim,
    /// A directory on the node (DaemonSet mode; survives pod restarts).
    HostPath,
}

/// The sensors' data volume (SQLite database and peer identity).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'PersistentVolumeClaim' || !has(self.storageClassName)").message("storageClassName is only allowed with kind PersistentVolumeClaim"))]
#[x_kube(validation = Rule::new("self.kind == 'HostPath' || !has(self.hostPath)").message("hostPath is only allowed with kind HostPath"))]
pub struct Storage {
    #[serde(default)]
    pub kind: StorageKind,
    /// Volume size as a Kubernetes quantity, e.g. `10Gi` (PVC request, or emptyDir size limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Node directory for kind HostPath; default `/var/lib/p2p-sensor/<namespace>/<fleet>`. The
    /// sensors run as UID/GID 65532 and `fsGroup` does not apply to hostPath volumes: create the
    /// directory owned by 65532 beforehand (a missing one is created by the kubelet as root, mode
    /// 0755, which the sensor cannot write; Kubernetes docs, hostPath type DirectoryOrCreate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
}

/// A RelayNode in the fleet's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RelayRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The `punch` sidecar of each sensor pod (the sensor's `[punch]` section).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HolePunch {
    /// Seconds between two rounds of attempts to every other member of the fleet (default 300).
    #[serde(default = "default_punch_interval_secs")]
    #[schemars(range(min = 10, max = 86400))]
    pub interval_secs: i64,
    /// Attempts per target per round (sensor default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<i32>,
    /// Bound of one attempt, s (sensor default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_secs: Option<i64>,
    /// Compute resources of the sidecar; default requests 10m CPU and 32Mi memory, limit 128Mi
    /// memory (it holds a handful of libp2p connections, far less than the listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Default of `holePunch.intervalSecs`.
pub const DEFAULT_PUNCH_INTERVAL_SECS: i64 = 300;

fn default_punch_interval_secs() -> i64 {
    DEFAULT_PUNCH_INTERVAL_SECS
}

impl Default for HolePunch {
    fn default() -> Self {
        Self { interval_secs: DEFAULT_PUNCH_INTERVAL_SECS, attempts: None, timeout_secs: None, resources: None }
    }
}

/// The `crawl` sidecar of each sensor pod (the sensor's `[crawl]` section): `sensor crawl` in
/// continuous mode. Every pod's crawler maps the whole network on its own (independent vantage
/// points, not shards of one crawl).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minRevisitSecs) || !has(self.maxRevisitSecs) || self.minRevisitSecs <= self.maxRevisitSecs").message("minRevisitSecs must not exceed maxRevisitSecs"))]
pub struct Crawler {
    /// Seconds between the starts of two crawl rounds (default 600). Each round visits the
    /// addresses learned since the last one and the known nodes whose revisit is due.
    #[serde(default = "default_crawl_interval_secs")]
    #[schemars(range(min = 1, max = 86400))]
    pub interval_secs: i64,
    /// Visits in flight at most per crawler (default 64). Never more than one at a time per IP.
    #[serde(default = "default_crawl_concurrency")]
    #[schemars(range(min = 1, max = 10000))]
    pub concurrency: i32,
    /// Bound of one visit (connect, Kaspa handshake, address requests, close), ms (default 5000).
    #[serde(default = "default_crawl_timeout_ms")]
    #[schemars(range(min = 100, max = 600000))]
    pub timeout_ms: i64,
    /// Extra seed addresses, `IP:PORT` (IPv6 as `[IP]:PORT`), besides the peers the pod's
    /// listener has stored; at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub seeds: Vec<String>,
    /// DNS seeders, `NAME` (their addresses on the network's default port) or `NAME:PORT`; at
    /// most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 259)))]
    pub seed_dns: Vec<String>,
    /// Shortest time before a node is visited again, s (default 300). A node is revisited after
    /// 1.2 × its observed uptime (Nebula's rule) clamped to [`minRevisitSecs`, `maxRevisitSecs`];
    /// an unreachable one after `minRevisitSecs`.
    #[serde(default = "default_crawl_min_revisit_secs")]
    #[schemars(range(min = 1, max = 604800))]
    pub min_revisit_secs: i64,
    /// Longest time before a node is visited again, s (default 86400); at least `minRevisitSecs`.
    #[serde(default = "default_crawl_max_revisit_secs")]
    #[schemars(range(min = 1, max = 604800))]
    pub max_revisit_secs: i64,
    /// Also visit private, loopback, CGNAT and documentation addresses (labs and devnets only;
    /// default false).
    #[serde(default)]
    pub allow_private_targets: bool,
    /// Compute resources of the sidecar; default requests 50m CPU and 64Mi memory, limit 512Mi
    /// memory (the node table and `concurrency` open connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Default of `crawler.intervalSecs`.
pub const DEFAULT_CRAWL_INTERVAL_SECS: i64 = 600;
/// Default of `crawler.concurrency`.
pub const DEFAULT_CRAWL_CONCURRENCY: i32 = 64;
/// Default of `crawler.timeoutMs`.
pub const DEFAULT_CRAWL_TIMEOUT_MS: i64 = 5000;
/// Default of `crawler.minRevisitSecs`.
pub const DEFAULT_CRAWL_MIN_REVISIT_SECS: i64 = 300;
/// Default of `crawler.maxRevisitSecs`.
pub const DEFAULT_CRAWL_MAX_REVISIT_SECS: i64 = 86400;

fn default_crawl_interval_secs() -> i64 {
    DEFAULT_CRAWL_INTERVAL_SECS
}

fn default_crawl_concurrency() -> i32 {
    DEFAULT_CRAWL_CONCURRENCY
}

fn default_crawl_timeout_ms() -> i64 {
    DEFAULT_CRAWL_TIMEOUT_MS
}

fn default_crawl_min_revisit_secs() -> i64 {
    DEFAULT_CRAWL_MIN_REVISIT_SECS
}

fn default_crawl_max_revisit_secs() -> i64 {
    DEFAULT_CRAWL_MAX_REVISIT_SECS
}

impl Default for Crawler {
    fn default() -> Self {
        Self {
            interval_secs: DEFAULT_CRAWL_INTERVAL_SECS,
            concurrency: DEFAULT_CRAWL_CONCURRENCY,
            timeout_ms: DEFAULT_CRAWL_TIMEOUT_MS,
            seeds: Vec::new(),
            seed_dns: Vec::new(),
            min_revisit_secs: DEFAULT_CRAWL_MIN_REVISIT_SECS,
            max_revisit_secs: DEFAULT_CRAWL_MAX_REVISIT_SECS,
            allow_private_targets: false,
            resources: None,
        }
    }
}

/// Observed state of a fleet, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorFleetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Degraded (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub sensors: SensorCounts,
    #[serde(default)]
    pub peers: FleetPeerCounts,
    /// Most common user agents by distinct peers, summed over sensors; at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_user_agents: Vec<UserAgentCount>,
    /// Newest report received from any sensor of the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
    /// One line per sensor, by name; at most 50 (the rest are counted in `sensors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensor_summaries: Vec<SensorSummary>,
    /// What the `crawl` sidecars (`spec.crawler`) reported; absent before the first crawl report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawl: Option<FleetCrawlStats>,
}

/// The crawl sidecars' view of the network. Every crawler maps the whole network, so node counts
/// are the maximum over crawlers, not a sum; the last round's figures are those of the crawler
/// whose last round finished most recently.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetCrawlStats {
    /// Crawlers whose latest report is younger than the operator's report timeout.
    pub crawlers: i32,
    /// Addresses in a crawler's node table (learned through gossip or seeds), all time; the
    /// maximum over crawlers.
    pub known_nodes: i64,
    /// Distinct addresses whose latest visit completed the Kaspa handshake; the maximum over
    /// crawlers.
    pub reachable_nodes: i64,
    /// Wall time of the most recently finished crawl round, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crawl_duration_ms: Option<i64>,
    /// When the most recently finished crawl round ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crawl_time: Option<Time>,
    /// Visits in that round.
    #[serde(default)]
    pub last_visited: i64,
    /// Visits in that round that completed the handshake.
    #[serde(default)]
    pub last_reachable: i64,
    /// That round's failed visits by error class (`refused`, `timeout`, ...), descending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_by_class: Vec<ErrorClassCount>,
}

/// Failed visits of one error class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorClassCount {
    pub error_class: String,
    pub visits: i64,
}

/// Sensor pods: wanted, ready (workload status) and reporting (collector).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorCounts {
    pub desired: i32,
    pub ready: i32,
    /// Sensors whose latest report is younger than the operator's report timeout.
    pub reporting: i32,
}

/// Peers the fleet has classified.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetPeerCounts {
    /// Sum over sensors of peers whose latest verdict is public (a peer seen by two sensors
    /// counts twice; see `uniqueAcrossFleet`).
    pub public: i64,
    pub private: i64,
    pub unknown: i64,
    /// Distinct peer ids across the whole fleet: exact while every sensor lists its ids and the
    /// union stays under the operator's bound, a HyperLogLog estimate (±2 %) beyond.
    pub unique_across_fleet: i64,
    /// True when `uniqueAcrossFleet` is an estimate.
    #[serde(default)]
    pub unique_is_estimate: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserAgentCount {
    pub user_agent: String,
    pub peers: i64,
}

/// The latest report of one sensor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorSummary {
    /// Pod name.
    pub name: String,
    pub reporting: bool,
    pub public: i64,
    pub private: i64,
    pub unknown: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
}
