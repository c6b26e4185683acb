//! Renders a fleet's `sensor.toml` (the sensor's configuration file, mounted from a ConfigMap).
//!
//! Keys follow the sensor's `config.rs` (`sensor config` prints them all). Only keys the spec
//! sets are written; the sensor's defaults fill the rest. Per-pod values (sensor id, report
//! sender, advertised address from the node IP) come from `SENSOR_*` environment variables.
//! With a resolvable relay the file also has `[punch]` for the `punch` sidecar (see
//! [`super::punch`]); the sidecar's targets are a separate ConfigMap key, not part of this file.
//! With `spec.crawler` it has `[crawl]` for the `crawl` sidecar (see [`super::crawl`]); with
//! `spec.export` (sink not `none`) it has `[export]`, secrets as files (see [`super::export`]).

use serde::Serialize;

use super::crawl::{self, CrawlToml};
use super::export::{self, ExportToml};
use super::punch::{self, PunchRelay, PunchToml};
use crate::crd::{ExternalAddressSource, SensorFleet};
use sensor_report::OWNER_SENSOR_FLEET;

/// Where the sensor keeps its database and peer id inside the pod.
pub const DATA_DIR: &str = "/var/lib/p2p-sensor";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/p2p-sensor";
/// File name of the rendered configuration in the ConfigMap.
pub const CONFIG_FILE: &str = "sensor.toml";
/// Port of the sensor's `/metrics`, `/healthz`, `/readyz`.
pub const METRICS_PORT: i32 = 9102;
/// The listener's SQLite file under [`DATA_DIR`] (the sensor's default `<data_dir>/sensor.sqlite`;
/// `storage.path` is not rendered). The crawl sidecar seeds from it.
pub const LISTENER_DATABASE_FILE: &str = "sensor.sqlite";

/// The environment of a sidecar (`punch`, `crawl`): the listener's downward API and `SENSOR_*`
/// overrides (`SENSOR_REPORT_SENDER` = pod name; a sidecar reports as `<sender>-<its name>`),
/// plus its own metrics port and database file under [`DATA_DIR`].
pub fn sidecar_env(metrics_port: i32, database_file: &str) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let mut env = crate::pod::downward_env();
    env.push(crate::pod::env_value("SENSOR_METRICS_LISTEN", format!("0.0.0.0:{metrics_port}")));
    env.push(crate::pod::env_value("SENSOR_STORAGE_PATH", format!("{DATA_DIR}/{database_file}")));
    env
}

#[derive(Serialize)]
struct SensorToml<'a> {
    network: &'a str,
    data_dir: &'a str,
    listen: ListenToml,
    classify: ClassifyToml,
    metrics: MetricsToml,
    report: ReportToml<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export: Option<ExportToml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    punch: Option<PunchToml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crawl: Option<CrawlToml>,
}

#[derive(Serialize)]
struct ListenToml {
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_inbound_peers: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_peers_per_ip: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_peers_per_subnet: Option<i64>,
}

#[derive(Serialize)]
struct ClassifyToml {
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_private_targets: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_timeout_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_attempts: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_ttl_secs: Option<i64>,
}

#[derive(Serialize)]
struct MetricsToml {
    listen: String,
}

#[derive(Serialize)]
struct ReportToml<'a> {
    endpoint: &'a str,
    interval_ms: u64,
    owner_namespace: &'a str,
    owner_kind: &'a str,
    owner_name: &'a str,
}

/// The P2P port a fleet listens on: `spec.port` or the network's default.
pub fn p2p_port(fleet: &SensorFleet) -> i32 {
    fleet.spec.port.unwrap_or_else(|| fleet.spec.network.default_port())
}

/// `sensor.toml` for every sensor of `fleet`, reporting to `collector_endpoint` every
/// `report_interval_ms`. A Static external address goes into the file; HostIP comes from the
/// pod's environment instead. `relay`: the relay of the `punch` sidecar, rendered as `[punch]`;
/// `spec.crawler` is rendered as `[crawl]`, `spec.export` as `[export]`.
pub fn render(
    fleet: &SensorFleet,
    namespace: &str,
    name: &str,
    collector_endpoint: &str,
    report_interval_ms: u64,
    relay: Option<&PunchRelay>,
) -> String {
    let spec = &fleet.spec;
    let port = p2p_port(fleet);
    let config = SensorToml {
        network: spec.network.as_str(),
        data_dir: DATA_DIR,
        listen: ListenToml {
            address: format!("0.0.0.0:{port}"),
            external_address: match spec.external_address.source {
                ExternalAddressSource::Static => spec.external_address.address.clone(),
                _ => None,
            },
            max_inbound_peers: spec.limits.max_inbound_peers,
            max_peers_per_ip: spec.limits.max_peers_per_ip,
            max_peers_per_subnet: spec.limits.max_peers_per_subnet,
        },
        classify: ClassifyToml {
            allow_private_targets: spec.probing.allow_private_targets,
            probe_timeout_ms: spec.probing.timeout_ms,
            probe_attempts: spec.probing.attempts,
            concurrency: spec.probing.concurrency,
            cache_ttl_secs: spec.probing.cache_ttl_secs,
        },
        metrics: MetricsToml { listen: format!("0.0.0.0:{METRICS_PORT}") },
        report: ReportToml {
            endpoint: collector_endpoint,
            interval_ms: report_interval_ms,
            owner_namespace: namespace,
            owner_kind: OWNER_SENSOR_FLEET,
            owner_name: name,
        },
        export: spec.export.as_ref().and_then(export::toml_section),
        punch: relay.map(|relay| punch::toml_section(fleet, relay)),
        crawl: spec.crawler.as_ref().map(crawl::toml_section),
    };
    let body = toml::to_string(&config).unwrap_or_default();
    format!("# Rendered by p2p-sensor-operator from SensorFleet {namespace}/{name}; edits are overwritten.\n{body}")
}
