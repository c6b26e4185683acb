//! Layered sensor configuration.
//!
//! Precedence, highest first: command-line flags ([`CliOverrides`]) > `SENSOR_*` environment
//! variables > the TOML file (`sensor.toml`) > built-in defaults. Every key is optional.
//! `sensor config` prints [`Config::default_toml`]: every key with its default and a comment.
//!
//! Environment variables: `SENSOR_` + the dotted key upper-cased with `.` → `_`, e.g.
//! `network` → `SENSOR_NETWORK`, `listen.max_peers_per_ip` → `SENSOR_LISTEN_MAX_PEERS_PER_IP`,
//! `sensor_id` → `SENSOR_SENSOR_ID`. The mapping is built from the list of known keys. Values are
//! parsed by the key's type: booleans `true`/`false`/`1`/`0`, integers in decimal, lists as
//! comma-separated items (`relay.external_addresses`, `punch.targets`, `punch.listen`; `""` =
//! empty), everything else as a string (`""` unsets the optional addresses and paths).
//!
//! Errors: an unreadable or syntactically invalid file is [`ConfigError::File`]; an unknown
//! key, a wrong type or an out-of-range value is [`ConfigError::Key`] whose `key` is the dotted
//! TOML key (e.g. `listen.max_peer`) or, for a value that came from the environment, the variable
//! name (e.g. `SENSOR_LISTEN_ADDRESS`). An unknown `SENSOR_*` variable is only a warning:
//! Kubernetes injects `SENSOR_SERVICE_HOST`, `SENSOR_PORT`, … into pods for a Service named
//! "sensor".

use std::{
    collections::HashMap,
    fmt::Display,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeSeq};

use crate::network::Network;

/// Why a configuration could not be loaded. The sensor turns it into its `SensorError::Config`
/// / `SensorError::ConfigFile` (metric and log kinds `config` / `config_file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key has an invalid value or is unknown. `key` is the dotted TOML path (e.g.
    /// `classify.probe_timeout_ms`), or the environment variable or flag the value came from.
    #[error("invalid configuration: {key}: {reason}")]
    Key { key: String, reason: String },
    /// A configuration file could not be read or is not valid TOML.
    #[error("cannot read configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Result with [`ConfigError`].
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Every key of `sensor.toml`, dotted (`network`, `listen.max_inbound_peers`, …), in the order
/// `sensor config` prints them. Renderers of the file (the operator) classify each one as written
/// or deliberately left to the default, and test that no key is unclassified.
pub fn keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(key, _, _)| *key)
}

/// Prefix of every environment variable the sensor reads.
pub const ENV_PREFIX: &str = "SENSOR_";

/// The whole sensor configuration. See the module docs for sources and precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kaspa network to join (`SENSOR_NETWORK`). Default mainnet.
    pub network: Network,
    /// Directory for the database and the persistent peer identity (`SENSOR_DATA_DIR`).
    /// Default `./data`.
    pub data_dir: PathBuf,
    /// Name of this sensor in reports and events (`SENSOR_SENSOR_ID`); `""` (default) = the host
    /// name, see [`Config::sensor_id`].
    pub sensor_id: String,
    pub listen: ListenConfig,
    pub classify: ClassifyConfig,
    pub storage: StorageConfig,
    pub metrics: MetricsConfig,
    pub report: ReportConfig,
    pub relay: RelayConfig,
    pub punch: PunchConfig,
    pub crawl: CrawlConfig,
    pub export: ExportConfig,
}

/// `[listen]`: the inbound P2P listener and its admission limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// P2P listen address (`SENSOR_LISTEN_ADDRESS`); `None`/`""` = `0.0.0.0:<network default
    /// port>`, see [`Config::listen_address`].
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_addr")]
    pub address: Option<SocketAddr>,
    /// Address advertised in `Version.address` (`SENSOR_LISTEN_EXTERNAL_ADDRESS`); `None`/`""` =
    /// advertise none.
    #[serde(serialize_with = "ser_opt", deserialize_with = "de_opt_addr")]
    pub external_address: Option<SocketAddr>,
    /// Simultaneous inbound peers, ≥ 1. Default 1024.
    pub max_inbound_peers: usize,
    /// Simultaneous peers per source IP, ≥ 1. Default 4.
    pub max_peers_per_ip: usize,
    /// Simultaneous peers per /24 (IPv4) or /48 (IPv6), ≥ 1. Default 32.
    pub max_peers_per_subnet: usize,
    /// Handshakes in progress at once, 1..=32 (kaspa-p2p-lib's own cap). Default 32.
    pub max_pending_handshakes: usize,
    /// Time allowed for Version/Verack/Ready, milliseconds, 1000..=120000. Default 10000.
    pub handshake_timeout_ms: u64,
    /// HTTP/2 PING after this long without a frame from a peer, milliseconds, 1000..=3600000.
    /// Default 30000.
    pub keepalive_interval_ms: u64,
    /// A peer whose PING is not acknowledged within this is dropped, milliseconds,
    /// 1000..=600000. Default 20000 (hyper's default). A peer that vanished without a FIN is
    /// dropped within `keepalive_interval_ms + keepalive_timeout_ms` of its last frame.
    pub keepalive_timeout_ms: u64,
    /// How long a handshaken peer is kept, seconds; 0 = until the peer leaves. Default 3600.
    pub hold_time_secs: u64,
    /// Time to drain connections and flush storage at shutdown, milliseconds. Default 5000.
    pub shutdown_grace_ms: u64,
    /// Ask every accepted peer once for addresses (`RequestAddresses`, as kaspad does with each
    /// new peer) and record its `Addresses` reply for propagation tracking
    /// (`SENSOR_LISTEN_REQUEST_ADDRESSES`). Default true.
    pub request_addresses: bool,
}

/// `[classify]`: the dial-back probe that decides public / private / unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// Lab mode: also probe private, loopback and documentation source IPs. Default false.
    pub allow_private_targets: bool,
    /// Timeout of one attempt (connect + handshake), milliseconds, 100..=60000. Default 5000.
    pub probe_timeout_ms: u64,
    /// Attempts before a peer is private, 2..=10 (the design requires ≥ 2). Default 2.
    pub probe_attempts: u32,
    /// Pause between attempts, milliseconds. Default 2000.
    pub probe_retry_delay_ms: u64,
    /// Probes in flight at once, 1..=4096. Default 64.
    pub concurrency: usize,
    /// Peers waiting for a probe, ≥ 1. Default 4096.
    pub queue_capacity: usize,
    /// Lifetime of a cached verdict per (ip, port), seconds. Default 3600.
    pub cache_ttl_secs: u64,
    /// Cached verdicts at most, ≥ 1. Default 100000.
    pub cache_capacity: usize,
}

/// `[storage]`: the SQLite writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Database file (`SENSOR_STORAGE_PATH`); `None`/`""` = `<data_dir>/sensor.sqlite`, see
    /// [`Config::database_path`].
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub path: Option<PathBuf>,
    /// Events per transaction at most, 1..=100000. Default 512.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written, milliseconds, 1..=60000. Default 50.
    pub flush_interval_ms: u64,
    /// Events buffered for the writer, ≥ `batch_size`. Default 100000.
    pub queue_capacity: usize,
    /// Size cap of the database file, MiB (`0` = none, the disk is the bound). At the cap, or
    /// when the disk is full, the store's disk-full policy applies (README "Storage"): reclaim
    /// exported events, wait `storage.full_grace_ms`, then drop the newest, counted. Default 0.
    pub max_db_mb: u64,
    /// How long a full database is retried before new events are dropped, milliseconds,
    /// 0..=600000. Default 2000.
    pub full_grace_ms: u64,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// HTTP listen address of `/metrics` (`SENSOR_METRICS_LISTEN`). Default `0.0.0.0:9102`.
    #[serde(deserialize_with = "de_addr")]
    pub listen: SocketAddr,
}

/// `[report]`: the cumulative report pushed to the operator's collector (docs/architecture.md). Reporting
/// is off while `endpoint` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Collector URL, `http://HOST:PORT` (gRPC over h2c), e.g. `http://collector.ns.svc:50051`
    /// (`SENSOR_REPORT_ENDPOINT`); `""` (default) = reporting off.
    pub endpoint: String,
    /// Time between reports, milliseconds, ≥ 1000. Default 10000. The collector may ask for
    /// another interval in its reply (`PushAck.next_report_after_ms`).
    pub interval_ms: u64,
    /// Deadline of one push (connect + request), milliseconds, 100..=60000. Default 5000.
    pub timeout_ms: u64,
    /// Namespace of the custom resource the reports belong to; required with `endpoint`.
    pub owner_namespace: String,
    /// Kind of that resource: `SensorFleet` (default) or `RelayNode`.
    pub owner_kind: String,
    /// Name of that resource; required with `endpoint`.
    pub owner_name: String,
    /// This pod's name in the reports (`SENSOR_REPORT_SENDER`, set by the operator); `""`
    /// (default) = the sensor id, see [`Config::report_sender`].
    pub sender: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: Network::Mainnet,
            data_dir: PathBuf::from("./data"),
            sensor_id: String::new(),
            listen: ListenConfig::default(),
            classify: ClassifyConfig::default(),
            storage: StorageConfig::default(),
            metrics: MetricsConfig::default(),
            report: ReportConfig::default(),
            relay: RelayConfig::default(),
            punch: PunchConfig::default(),
            crawl: CrawlConfig::default(),
            export: ExportConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            address: None,
            external_address: None,
            max_inbound_peers: 1024,
            max_peers_per_ip: 4,
            max_peers_per_subnet: 32,
            max_pending_handshakes: 32,
            handshake_timeout_ms: 10_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 20_000,
            hold_time_secs: 3600,
            shutdown_grace_ms: 5000,
            request_addresses: true,
        }
    }
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            probe_timeout_ms: 5000,
            probe_attempts: 2,
            probe_retry_delay_ms: 2000,
            concurrency: 64,
            queue_capacity: 4096,
            cache_ttl_secs: 3600,
            cache_capacity: 100_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: None,
            batch_size: 512,
            flush_interval_ms: 50,
            queue_capacity: 100_000,
            max_db_mb: 0,
            full_grace_ms: 2000,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9102)) }
    }
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            interval_ms: 10_000,
            timeout_ms: 5000,
            owner_namespace: String::new(),
            owner_kind: crate::report::OWNER_SENSOR_FLEET.to_owned(),
            owner_name: String::new(),
            sender: String::new(),
        }
    }
}

/// Command-line overrides, filled by `main.rs` from clap flags; `None` = flag not given. They win
/// over the environment, the file and the defaults.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub network: Option<Network>,
    pub listen: Option<SocketAddr>,
    pub external_address: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub allow_private_targets: Option<bool>,
    /// `sensor relay --listen`: replaces `relay.listen_tcp`, `relay.listen_quic` and their alternates.
    pub relay_listen: Option<RelayListen>,
    /// `sensor relay --external-address`: replaces `relay.external_addresses`.
    pub relay_external_addresses: Option<Vec<Multiaddr>>,
    /// `sensor relay --identity`.
    pub relay_identity_file: Option<PathBuf>,
    /// `sensor relay --allow-private-targets`.
    pub relay_allow_private_targets: Option<bool>,
    /// `sensor punch --relay`.
    pub punch_relay: Option<Multiaddr>,
    /// `sensor punch --target`: replaces `punch.targets`.
    pub punch_targets: Option<Vec<PeerId>>,
    /// `sensor punch --attempts`.
    pub punch_attempts: Option<u32>,
    /// `sensor punch --timeout-secs`.
    pub punch_timeout_secs: Option<u64>,
    /// `sensor punch --identity`.
    pub punch_identity_file: Option<PathBuf>,
    /// `sensor punch --listen`: replaces `punch.listen`.
    pub punch_listen: Option<Vec<Multiaddr>>,
    /// `sensor punch --kaspa-bridge`.
    pub punch_kaspa_bridge: Option<SocketAddr>,
    /// `sensor punch --kaspa-handshake`.
    pub punch_kaspa_handshake: Option<bool>,
    /// `sensor crawl --seed`: replaces `crawl.seeds`.
    pub crawl_seeds: Option<Vec<SocketAddr>>,
    /// `sensor crawl --seed-dns`: replaces `crawl.seed_dns`.
    pub crawl_seed_dns: Option<Vec<String>>,
    /// `sensor crawl --concurrency`.
    pub crawl_concurrency: Option<usize>,
    /// `sensor crawl --timeout-ms`.
    pub crawl_timeout_ms: Option<u64>,
    /// `sensor crawl --max-requests`.
    pub crawl_max_requests: Option<u32>,
    /// `sensor crawl --max-nodes`.
    pub crawl_max_nodes: Option<usize>,
    /// `sensor crawl --max-duration-secs`.
    pub crawl_max_duration_secs: Option<u64>,
    /// `sensor crawl --interval-secs`.
    pub crawl_interval_secs: Option<u64>,
    /// `sensor crawl --allow-private-targets`.
    pub crawl_allow_private_targets: Option<bool>,
}

/// How an environment value is turned into a TOML value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Bool,
    Int,
    /// Comma-separated strings (an array in TOML).
    List,
}

/// Every configuration key, in `default_toml` order (top-level keys first), with its type and a
/// one-line description. Kept in sync with the structs by the tests.
#[rustfmt::skip]
const KEYS: &[(&str, Kind, &str)] = &[
    ("network", Kind::Str, "Kaspa network: mainnet, testnet-10, testnet-12, devnet or simnet (kaspa- prefix accepted)"),
    ("data_dir", Kind::Str, "Directory for the database and the persistent peer identity; created if missing"),
    ("sensor_id", Kind::Str, "Name of this sensor in reports and events; \"\" = host name ($HOSTNAME), else \"sensor\""),
    ("listen.address", Kind::Str, "P2P listen address ip:port; \"\" = 0.0.0.0 on the network's default P2P port (mainnet 16111)"),
    ("listen.external_address", Kind::Str, "Address ip:port advertised to peers in Version.address; \"\" = advertise none"),
    ("listen.max_inbound_peers", Kind::Int, "Simultaneous inbound peers at most; >= 1"),
    ("listen.max_peers_per_ip", Kind::Int, "Simultaneous peers from one source IP at most; >= 1"),
    ("listen.max_peers_per_subnet", Kind::Int, "Simultaneous peers from one /24 (IPv4) or /48 (IPv6) at most; >= 1"),
    ("listen.max_pending_handshakes", Kind::Int, "Handshakes in progress at once; 1..=32 (kaspa-p2p-lib caps them at 32)"),
    ("listen.handshake_timeout_ms", Kind::Int, "Time allowed for Version/Verack/Ready, milliseconds; 1000..=120000"),
    ("listen.keepalive_interval_ms", Kind::Int, "HTTP/2 PING to a peer silent for this long, milliseconds; 1000..=3600000"),
    ("listen.keepalive_timeout_ms", Kind::Int, "Drop a peer whose PING is not acknowledged within this, milliseconds; 1000..=600000"),
    ("listen.hold_time_secs", Kind::Int, "How long a handshaken peer is kept connected, seconds; 0 = until it leaves"),
    ("listen.shutdown_grace_ms", Kind::Int, "Time to drain connections and flush storage at shutdown, milliseconds"),
    ("listen.request_addresses", Kind::Bool, "Ask each accepted peer once for addresses and record its reply (who gossiped what, when); true or false"),
    ("classify.allow_private_targets", Kind::Bool, "Lab mode: also dial back private/loopback/documentation IPs; true or false"),
    ("classify.probe_timeout_ms", Kind::Int, "Timeout of one dial-back attempt (connect + handshake), milliseconds; 100..=60000"),
    ("classify.probe_attempts", Kind::Int, "Dial-back attempts before a peer is judged private; 2..=10"),
    ("classify.probe_retry_delay_ms", Kind::Int, "Pause between dial-back attempts, milliseconds"),
    ("classify.concurrency", Kind::Int, "Dial-backs in flight at once; 1..=4096"),
    ("classify.queue_capacity", Kind::Int, "Peers waiting for a dial-back at most; >= 1"),
    ("classify.cache_ttl_secs", Kind::Int, "How long a verdict per (ip, port) is reused, seconds"),
    ("classify.cache_capacity", Kind::Int, "Cached verdicts at most; >= 1"),
    ("storage.path", Kind::Str, "SQLite database file; \"\" = <data_dir>/sensor.sqlite"),
    ("storage.batch_size", Kind::Int, "Events written per SQLite transaction at most; 1..=100000"),
    ("storage.flush_interval_ms", Kind::Int, "Longest wait before a partial batch is written, milliseconds; 1..=60000"),
    ("storage.queue_capacity", Kind::Int, "Events buffered for the SQLite writer at most; >= storage.batch_size"),
    ("storage.max_db_mb", Kind::Int, "Size cap of the database file, MiB; 0 = none (the disk is the bound); past it the disk-full policy applies"),
    ("storage.full_grace_ms", Kind::Int, "How long a full database is retried before new events are dropped (counted), milliseconds; 0..=600000"),
    ("metrics.listen", Kind::Str, "Prometheus /metrics HTTP listen address ip:port"),
    ("report.endpoint", Kind::Str, "Collector URL http://host:port (gRPC, h2c) for cumulative reports; \"\" = reporting off"),
    ("report.interval_ms", Kind::Int, "Time between reports, milliseconds; >= 1000 (the collector may ask for another)"),
    ("report.timeout_ms", Kind::Int, "Deadline of one report push (connect + request), milliseconds; 100..=60000"),
    ("report.owner_namespace", Kind::Str, "Namespace of the custom resource the reports belong to; required with report.endpoint"),
    ("report.owner_kind", Kind::Str, "Kind of that custom resource: SensorFleet or RelayNode"),
    ("report.owner_name", Kind::Str, "Name of that custom resource; required with report.endpoint"),
    ("report.sender", Kind::Str, "This pod's name in reports; \"\" = the sensor id"),
    ("relay.listen_tcp", Kind::Str, "sensor relay: TCP listen address ip:port; \"\" = no TCP listener"),
    ("relay.listen_quic", Kind::Str, "sensor relay: QUIC v1 (UDP) listen address ip:port; \"\" = no QUIC listener"),
    ("relay.listen_tcp_alternate", Kind::Str, "sensor relay: a second TCP listen address ip:port (same IP, another port) for clients' address-mapping test; \"\" = none"),
    ("relay.listen_quic_alternate", Kind::Str, "sensor relay: a second QUIC listen address ip:port for clients' address-mapping test; \"\" = none"),
    ("relay.external_addresses", Kind::List, "sensor relay: multiaddrs it is reachable at (/ip4|ip6|dns*/HOST/tcp/PORT or .../udp/PORT/quic-v1), given to clients in reservations; none = every reservation is refused; the environment variable is a comma-separated list"),
    ("relay.identity_file", Kind::Str, "sensor relay: protobuf-encoded libp2p keypair; created (Ed25519, mode 0600) when absent; \"\" = <data_dir>/relay_identity.key"),
    ("relay.max_reservations", Kind::Int, "sensor relay: reservations held at once at most; 1..=100000"),
    ("relay.max_reservations_per_peer", Kind::Int, "sensor relay: reservations of one peer at once at most; 1..=100000"),
    ("relay.max_circuits", Kind::Int, "sensor relay: circuits relayed at once at most; 1..=100000"),
    ("relay.max_circuits_per_peer", Kind::Int, "sensor relay: circuits of one peer at once at most; 1..=100000"),
    ("relay.max_circuit_duration_secs", Kind::Int, "sensor relay: lifetime of one circuit, seconds; 1..=86400"),
    ("relay.max_circuit_bytes", Kind::Int, "sensor relay: bytes relayed per circuit at most; 1024..=1073741824"),
    ("relay.reservation_rate_per_peer", Kind::Int, "sensor relay: reservations per peer, a bucket refilled one every 2 minutes; 0 = no limit; 0..=100000"),
    ("relay.reservation_rate_per_ip", Kind::Int, "sensor relay: reservations per source IP, a bucket refilled one every minute; 0 = no limit; 0..=100000"),
    ("relay.circuit_rate_per_peer", Kind::Int, "sensor relay: circuits per source peer, a bucket refilled one every 2 minutes; 0 = no limit; 0..=100000"),
    ("relay.circuit_rate_per_ip", Kind::Int, "sensor relay: circuits per source IP, a bucket refilled one every minute; 0 = no limit; 0..=100000"),
    ("relay.allow_private_targets", Kind::Bool, "sensor relay lab mode: AutoNAT also serves clients at private/loopback/documentation IPs; true or false"),
    ("punch.relay", Kind::Str, "sensor punch: the relay, /ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT/p2p/ID or .../udp/PORT/quic-v1/p2p/ID; \"\" = none (sensor punch needs one)"),
    ("punch.targets", Kind::List, "sensor punch: PeerIds to hole-punch to through the relay; none = only hold a reservation; the environment variable is a comma-separated list"),
    ("punch.attempts", Kind::Int, "sensor punch: attempts per target; 1..=1000"),
    ("punch.timeout_secs", Kind::Int, "sensor punch: with targets, the bound of one attempt (0 = 30); without, how long the reservation is held (0 = until SIGTERM), seconds; 0..=86400"),
    ("punch.relay_node", Kind::Str, "sensor punch: name of the RelayNode the relay belongs to, carried in reports; \"\" = not attributed"),
    ("punch.identity_file", Kind::Str, "sensor punch: protobuf-encoded libp2p keypair; created (Ed25519, mode 0600) when absent; \"\" = <data_dir>/punch_identity.key"),
    ("punch.targets_file", Kind::Str, "sensor punch: file of PeerIds to punch to besides punch.targets, one per line (# comments), re-read every round; \"\" = none"),
    ("punch.interval_secs", Kind::Int, "sensor punch: 0 = one round of attempts, then exit; > 0 = hold the reservation and run a round every interval, seconds; 0..=86400"),
    ("punch.kaspa_bridge", Kind::Str, "sensor punch: pipe incoming /p2psensor/kaspa/1 streams to this Kaspa P2P address ip:port (kaspad or sensor listen); \"\" = not served"),
    ("punch.kaspa_handshake", Kind::Bool, "sensor punch: after each successful attempt, complete a Kaspa handshake over /p2psensor/kaspa/1 on the direct connection; true or false"),
    ("punch.listen", Kind::List, "sensor punch: local listen multiaddrs (/ip4|ip6/IP/tcp/PORT, .../udp/PORT/quic-v1), at least one; hole-punch dials reuse their ports; the environment variable is a comma-separated list"),
    ("crawl.seeds", Kind::List, "sensor crawl: seed addresses ip:port; the environment variable is a comma-separated list"),
    ("crawl.seed_dns", Kind::List, "sensor crawl: DNS seed names, NAME (network default port) or NAME:PORT; the environment variable is a comma-separated list"),
    ("crawl.seed_from_store", Kind::Str, "sensor crawl: a sensor SQLite database whose stored peers seed the crawl; \"\" = none"),
    ("crawl.interval_secs", Kind::Int, "sensor crawl: 0 = one crawl, then exit; > 0 = continuous, a round every interval, seconds; 0..=86400"),
    ("crawl.concurrency", Kind::Int, "sensor crawl: visits in flight at most; 1..=10000"),
    ("crawl.timeout_ms", Kind::Int, "sensor crawl: bound of one visit, milliseconds; 100..=600000"),
    ("crawl.max_requests", Kind::Int, "sensor crawl: RequestAddresses per visit at most; 1..=100"),
    ("crawl.max_nodes", Kind::Int, "sensor crawl: addresses known at most; 1..=10000000"),
    ("crawl.max_duration_secs", Kind::Int, "sensor crawl: bound of one crawl round, seconds; 1..=86400"),
    ("crawl.min_revisit_secs", Kind::Int, "sensor crawl continuous mode: earliest revisit of a node (also of a node that was down), seconds; 1..=604800"),
    ("crawl.max_revisit_secs", Kind::Int, "sensor crawl continuous mode: latest revisit (1.2 x uptime clamped to min..max), seconds; 1..=604800, >= crawl.min_revisit_secs"),
    ("crawl.allow_private_targets", Kind::Bool, "sensor crawl lab mode: also visit private, loopback, CGNAT and documentation addresses; true or false"),
    ("export.sink", Kind::Str, "sensor listen: where stored events are exported: none, ndjson (a file or stdout), http (a webhook) or postgres (a table)"),
    ("export.endpoint", Kind::Str, "ndjson: a file path, or - for stdout; http: an http:// or https:// URL; postgres: a connection string without a password; required unless export.sink is none"),
    ("export.batch_size", Kind::Int, "events per export batch at most; 1..=10000"),
    ("export.interval_ms", Kind::Int, "pause between polls of the store once the export backlog is empty, milliseconds; 100..=600000"),
    ("export.timeout_ms", Kind::Int, "bound of one delivery to the sink (http: connect, request and response), milliseconds; 100..=120000"),
    ("export.bearer_token_file", Kind::Str, "http: file holding the bearer token sent as Authorization: Bearer; read at start-up, never logged; \"\" = none"),
    ("export.bearer_token_env", Kind::Str, "http: name of an environment variable holding the bearer token (not the token itself); \"\" = none"),
    ("export.hmac_secret_file", Kind::Str, "http: file holding the HMAC-SHA256 secret that signs each body (X-Signature-256: sha256=HEX); read at start-up, never logged; \"\" = none"),
    ("export.hmac_secret_env", Kind::Str, "http: name of an environment variable holding the HMAC secret (not the secret itself); \"\" = none"),
    ("export.gzip", Kind::Bool, "http: gzip request bodies (Content-Encoding: gzip); true or false"),
    ("export.password_file", Kind::Str, "postgres: file holding the database password; read at start-up, never logged; \"\" = none"),
    ("export.password_env", Kind::Str, "postgres: name of an environment variable holding the database password (not the password itself); \"\" = none"),
    ("export.tls_ca_file", Kind::Str, "https and postgres TLS: PEM file of CA certificates trusted besides the built-in web roots; \"\" = web roots only"),
];

/// The environment variable of a dotted key: `listen.address` → `SENSOR_LISTEN_ADDRESS`.
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase().replace('.', "_"))
}

fn config_err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.into(), reason: reason.into() }
}

impl Kind {
    fn parse(self, value: &str) -> std::result::Result<toml::Value, String> {
        match self {
            Kind::Str => Ok(toml::Value::String(value.to_owned())),
            Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(toml::Value::Boolean(true)),
                "false" | "0" => Ok(toml::Value::Boolean(false)),
                _ => Err(format!("expected true, false, 1 or 0, got {value:?}")),
            },
            Kind::Int => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| format!("expected an integer, got {value:?}")),
            Kind::List => Ok(toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_owned()))
                    .collect(),
            )),
        }
    }
}

/// Sets `table[a][b] = value` for the dotted key `a.b`, creating the section when missing.
fn insert(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
            Ok(())
        }
        Some((section, rest)) => {
            let entry = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => insert(t, rest, value),
                other => Err(config_err(section, format!("expected a table, got {}", other.type_str()))),
            }
        }
    }
}

impl Config {
    /// Loads defaults < `file` < `env` < `cli`, then [`validate`](Self::validate)s the result.
    ///
    /// `env` is the process environment as `(name, value)` pairs (`std::env::vars()` in
    /// production, a `Vec` in tests); only names starting with `SENSOR_` are looked at. Returns
    /// the configuration and warnings for the operator's log: one per unknown `SENSOR_*`
    /// variable. Unknown variables are not errors because Kubernetes injects service-link
    /// variables such as `SENSOR_SERVICE_HOST` and `SENSOR_PORT` for a Service named "sensor".
    ///
    /// Errors: [`ConfigError::File`] when the file cannot be read or is not valid TOML;
    /// [`ConfigError::Key`] for an unknown key (`key` = dotted path, e.g. `listen.max_peer`),
    /// a wrong type or invalid value (`key` = dotted path, or the `SENSOR_*` variable name when
    /// the value came from the environment), or a failed validation.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        cli: &CliOverrides,
    ) -> Result<(Config, Vec<String>)> {
        let root = match file {
            None => toml::Table::new(),
            Some(path) => {
                let file_err = |reason: String| ConfigError::File { path: path.to_owned(), reason };
                let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
                text.parse::<toml::Table>().map_err(|e| file_err(e.to_string()))?
            }
        };
        Self::from_layers(root, env, cli)
    }

    /// The content of a `sensor.toml` (`text`) over the defaults, then
    /// [`validate`](Self::validate)d: [`load`](Self::load) of a file holding `text`, without
    /// environment variables or flags. The seam of the `config` fuzz target (`fuzz/`).
    ///
    /// Errors: [`ConfigError::File`] (path `<string>`) when `text` is not valid TOML;
    /// [`ConfigError::Key`] as for [`load`](Self::load).
    pub fn from_toml_str(text: &str) -> Result<Config> {
        let root = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::File { path: PathBuf::from("<string>"), reason: e.to_string() })?;
        Self::from_layers(root, std::iter::empty(), &CliOverrides::default()).map(|(config, _)| config)
    }

    /// [`load`](Self::load) after the file is parsed: `env` and `cli` over `root`, validated.
    fn from_layers(
        mut root: toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
        cli: &CliOverrides,
    ) -> Result<(Config, Vec<String>)> {
        let mut warnings = Vec::new();
        let mut from_env: HashMap<&str, String> = HashMap::new();
        for (name, value) in env {
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            let Some(&(key, kind, _)) = KEYS.iter().find(|(key, _, _)| env_var_name(key) == name) else {
                warnings.push(format!(
                    "ignoring unknown environment variable {name}: not a sensor setting \
                     (Kubernetes service links also look like this)"
                ));
                continue;
            };
            let parsed = kind.parse(&value).map_err(|reason| config_err(&name, reason))?;
            insert(&mut root, key, parsed)?;
            from_env.insert(key, name);
        }
        let mut config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let path = e.path().to_string();
            let key = from_env.get(path.as_str()).cloned().unwrap_or(path);
            let inner = e.into_inner();
            let message = inner.message();
            let reason = match message.strip_prefix("unknown field") {
                Some(rest) => format!("unknown key{rest}"),
                None => message.to_owned(),
            };
            config_err(key, reason)
        })?;
        cli.apply(&mut config);
        config.validate()?;
        Ok((config, warnings))
    }

    /// Checks the ranges documented on each field. The error names the first offending dotted
    /// key, e.g. `ConfigError::Key { key: "classify.probe_attempts", reason: "must be between
    /// 2 and 10, got 1" }`.
    pub fn validate(&self) -> Result<()> {
        fn range<T: PartialOrd + Display + Copy>(key: &str, v: T, min: T, max: Option<T>) -> Result<()> {
            match max {
                Some(max) if v < min || v > max => {
                    Err(config_err(key, format!("must be between {min} and {max}, got {v}")))
                }
                None if v < min => Err(config_err(key, format!("must be at least {min}, got {v}"))),
                _ => Ok(()),
            }
        }
        let (l, c, s) = (&self.listen, &self.classify, &self.storage);
        range("listen.max_inbound_peers", l.max_inbound_peers, 1, None)?;
        range("listen.max_peers_per_ip", l.max_peers_per_ip, 1, None)?;
        range("listen.max_peers_per_subnet", l.max_peers_per_subnet, 1, None)?;
        range("listen.max_pending_handshakes", l.max_pending_handshakes, 1, Some(32))?;
        range("listen.handshake_timeout_ms", l.handshake_timeout_ms, 1000, Some(120_000))?;
        range("listen.keepalive_interval_ms", l.keepalive_interval_ms, 1000, Some(3_600_000))?;
        range("listen.keepalive_timeout_ms", l.keepalive_timeout_ms, 1000, Some(600_000))?;
        range("classify.probe_timeout_ms", c.probe_timeout_ms, 100, Some(60_000))?;
        range("classify.probe_attempts", c.probe_attempts, 2, Some(10))?;
        range("classify.concurrency", c.concurrency, 1, Some(4096))?;
        range("classify.queue_capacity", c.queue_capacity, 1, None)?;
        range("classify.cache_capacity", c.cache_capacity, 1, None)?;
        range("storage.batch_size", s.batch_size, 1, Some(100_000))?;
        range("storage.flush_interval_ms", s.flush_interval_ms, 1, Some(60_000))?;
        range("storage.max_db_mb", s.max_db_mb, 0, Some(16 << 20))?;
        range("storage.full_grace_ms", s.full_grace_ms, 0, Some(600_000))?;
        if s.queue_capacity < s.batch_size {
            let reason = format!("must be at least storage.batch_size ({}), got {}", s.batch_size, s.queue_capacity);
            return Err(config_err("storage.queue_capacity", reason));
        }
        self.report.validate(range::<u64>)?;
        self.relay.validate(range::<u64>)?;
        self.punch.validate(range::<u64>)?;
        self.crawl.validate(range::<u64>)?;
        self.export.validate(range::<u64>)?;
        // An NDJSON file over the database (or its WAL) would destroy what it exports.
        if self.export.sink.trim() == SINK_NDJSON {
            let db = self.database_path();
            let endpoint = Path::new(self.export.endpoint.trim());
            let wal = PathBuf::from(format!("{}-wal", db.display()));
            if endpoint == db || endpoint == wal {
                return Err(config_err("export.endpoint", "is the event database itself; pick another file"));
            }
        }
        Ok(())
    }

    /// A commented `sensor.toml`: every key with its default value, preceded by a one-line
    /// comment giving meaning, unit, range and environment variable. Parses back to
    /// [`Config::default`].
    pub fn default_toml() -> String {
        let defaults = toml::Table::try_from(Config::default()).expect("the default config serializes to TOML");
        let mut out = String::from(
            "# Kaspa P2P sensor configuration (sensor.toml).\n\
             # Precedence: command-line flags > SENSOR_* environment variables > this file\n\
             # > built-in defaults.\n\
             # Every key is optional; the values below are the defaults. Unknown keys are errors.\n",
        );
        let mut section = "";
        for &(key, _, doc) in KEYS {
            let (sect, name) = key.split_once('.').unwrap_or(("", key));
            if sect != section {
                out.push_str(&format!("\n[{sect}]\n"));
                section = sect;
            }
            let table = if sect.is_empty() { Some(&defaults) } else { defaults[sect].as_table() };
            let value = table.and_then(|t| t.get(name)).expect("every key has a default");
            out.push_str(&format!("\n# {doc}. Env: {}.\n{name} = {value}\n", env_var_name(key)));
        }
        out
    }

    /// The P2P listen address: `listen.address`, or `0.0.0.0:<network default P2P port>`.
    pub fn listen_address(&self) -> SocketAddr {
        let port = self.network.default_p2p_port();
        self.listen.address.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    }

    /// The SQLite file: `storage.path`, or `<data_dir>/sensor.sqlite`.
    pub fn database_path(&self) -> PathBuf {
        self.storage.path.clone().unwrap_or_else(|| self.data_dir.join("sensor.sqlite"))
    }

    /// The relay's keypair file: `relay.identity_file`, or `<data_dir>/relay_identity.key`.
    pub fn relay_identity_file(&self) -> PathBuf {
        self.relay.identity_file.clone().unwrap_or_else(|| self.data_dir.join("relay_identity.key"))
    }

    /// The hole-punch client's keypair file: `punch.identity_file`, or
    /// `<data_dir>/punch_identity.key`.
    pub fn punch_identity_file(&self) -> PathBuf {
        self.punch.identity_file.clone().unwrap_or_else(|| self.data_dir.join("punch_identity.key"))
    }

    /// The sender name of reports: `report.sender`, or [`Config::sensor_id`].
    pub fn report_sender(&self) -> String {
        let sender = self.report.sender.trim();
        if sender.is_empty() { self.sensor_id() } else { sender.to_owned() }
    }

    /// The sensor's name: `sensor_id`, or the `HOSTNAME` environment variable (set in every
    /// Kubernetes pod), or `"sensor"`.
    pub fn sensor_id(&self) -> String {
        let hostname = || std::env::var("HOSTNAME").ok().filter(|h| !h.trim().is_empty());
        let id = self.sensor_id.trim();
        if id.is_empty() { hostname().unwrap_or_else(|| "sensor".to_owned()) } else { id.to_owned() }
    }
}

type RangeCheck = fn(&str, u64, u64, Option<u64>) -> Result<()>;

impl ReportConfig {
    /// `true` when reports are pushed (`endpoint` is set).
    pub fn enabled(&self) -> bool {
        !self.endpoint.trim().is_empty()
    }

    /// The ranges and, when [`enabled`](Self::enabled), the endpoint URL and the owner.
    fn validate(&self, range: RangeCheck) -> Result<()> {
        use crate::report::{MAX_STRING_BYTES, OWNER_RELAY_NODE, OWNER_SENSOR_FLEET};
        range("report.interval_ms", self.interval_ms, 1000, None)?;
        range("report.timeout_ms", self.timeout_ms, 100, Some(60_000))?;
        if self.owner_kind != OWNER_SENSOR_FLEET && self.owner_kind != OWNER_RELAY_NODE {
            let reason = format!("must be {OWNER_SENSOR_FLEET} or {OWNER_RELAY_NODE}, got {:?}", self.owner_kind);
            return Err(config_err("report.owner_kind", reason));
        }
        for (key, value) in [
            ("report.owner_namespace", &self.owner_namespace),
            ("report.owner_name", &self.owner_name),
            ("report.sender", &self.sender),
        ] {
            if value.len() > MAX_STRING_BYTES {
                return Err(config_err(key, format!("must be at most {MAX_STRING_BYTES} bytes, got {}", value.len())));
            }
        }
        if !self.enabled() {
            return Ok(());
        }
        let endpoint = self.endpoint.trim();
        let uri: http::Uri =
            endpoint.parse().map_err(|_| config_err("report.endpoint", format!("invalid URL {endpoint:?}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
            let reason = format!("must be http://HOST:PORT (gRPC over h2c), got {endpoint:?}");
            return Err(config_err("report.endpoint", reason));
        }
        for (key, value) in [("report.owner_namespace", &self.owner_namespace), ("report.owner_name", &self.owner_name)]
        {
            if value.trim().is_empty() {
                return Err(config_err(key, "must be set when report.endpoint is set"));
            }
        }
        Ok(())
    }
}

impl CliOverrides {
    fn apply(&self, config: &mut Config) {
        if let Some(network) = self.network {
            config.network = network;
        }
        if let Some(address) = self.listen {
            config.listen.address = Some(address);
        }
        if let Some(address) = self.external_address {
            config.listen.external_address = Some(address);
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(address) = self.metrics_listen {
            config.metrics.listen = address;
        }
        if let Some(allow) = self.allow_private_targets {
            config.classify.allow_private_targets = allow;
        }
        if let Some(listen) = self.relay_listen {
            config.relay.listen_tcp = listen.tcp;
            config.relay.listen_quic = listen.quic;
            config.relay.listen_tcp_alternate = listen.tcp_alternate;
            config.relay.listen_quic_alternate = listen.quic_alternate;
        }
        if let Some(addrs) = &self.relay_external_addresses {
            config.relay.external_addresses = addrs.clone();
        }
        if let Some(file) = &self.relay_identity_file {
            config.relay.identity_file = Some(file.clone());
        }
        if let Some(allow) = self.relay_allow_private_targets {
            config.relay.allow_private_targets = allow;
        }
        if let Some(relay) = &self.punch_relay {
            config.punch.relay = Some(relay.clone());
        }
        if let Some(targets) = &self.punch_targets {
            config.punch.targets = targets.clone();
        }
        if let Some(attempts) = self.punch_attempts {
            config.punch.attempts = attempts;
        }
        if let Some(secs) = self.punch_timeout_secs {
            config.punch.timeout_secs = secs;
        }
        if let Some(file) = &self.punch_identity_file {
            config.punch.identity_file = Some(file.clone());
        }
        if let Some(address) = self.punch_kaspa_bridge {
            config.punch.kaspa_bridge = Some(address);
        }
        if let Some(on) = self.punch_kaspa_handshake {
            config.punch.kaspa_handshake = on;
        }
        if let Some(listen) = &self.punch_listen {
            config.punch.listen = listen.clone();
        }
        let c = &mut config.crawl;
        if let Some(seeds) = &self.crawl_seeds {
            c.seeds = seeds.clone();
        }
        if let Some(names) = &self.crawl_seed_dns {
            c.seed_dns = names.clone();
        }
        c.concurrency = self.crawl_concurrency.unwrap_or(c.concurrency);
        c.timeout_ms = self.crawl_timeout_ms.unwrap_or(c.timeout_ms);
        c.max_requests = self.crawl_max_requests.unwrap_or(c.max_requests);
        c.max_nodes = self.crawl_max_nodes.unwrap_or(c.max_nodes);
        c.max_duration_secs = self.crawl_max_duration_secs.unwrap_or(c.max_duration_secs);
        c.interval_secs = self.crawl_interval_secs.unwrap_or(c.interval_secs);
        c.allow_private_targets = self.crawl_allow_private_targets.unwrap_or(c.allow_private_targets);
    }
}

/// Serializes `None` as `""` (how the TOML file spells "unset") and `Some(v)` as `v`'s text.
fn ser_opt<S: Serializer, T: Display>(value: &Option<T>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&value.as_ref().map(ToString::to_string).unwrap_or_default())
}

fn ser_opt_path<S: Serializer>(value: &Option<PathBuf>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(path) => path.serialize(s),
        None => s.serialize_str(""),
    }
}

fn parse_addr<E: serde::de::Error>(text: &str) -> std::result::Result<SocketAddr, E> {
    text.trim().parse().map_err(|_| E::custom(format!("invalid socket address {text:?}")))
}

fn de_addr<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<SocketAddr, D::Error> {
    parse_addr(&String::deserialize(d)?)
}

fn de_opt_addr<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() { Ok(None) } else { parse_addr(&text).map(Some) }
}

fn de_opt_path<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(d)?;
    Ok(if text.is_empty() { None } else { Some(PathBuf::from(text)) })
}

mod crawl;
mod export;
mod p2p;

pub use crawl::CrawlConfig;
pub use export::{ExportConfig, ExportCredentials, SINK_HTTP, SINK_NDJSON, SINK_NONE, SINK_POSTGRES, Secret};
pub use p2p::{
    DEFAULT_PUNCH_TIMEOUT_SECS, PunchConfig, RATE_PER_IP, RATE_PER_PEER, RelayConfig, RelayListen,
    check_external_address, check_punch_relay, is_direct_transport,
};

#[cfg(test)]
mod tests;
