//! Renders a fleet's `sensor.toml` (the sensor's configuration file, mounted from a ConfigMap)
//! from the sensor's own schema: a [`Config`] built from the spec, written by
//! [`crate::sensor_toml::render`] with the keys of [`PLAN`].
//!
//! Only keys the spec decides are written, and only where they differ from the sensor's
//! defaults; the sensor image's defaults fill the rest. Per-pod values (sensor id, report sender,
//! advertised address from the node IP) come from `SENSOR_*` environment variables. With a
//! resolvable relay the file also has `[punch]` for the `punch` sidecar (see [`super::punch`]);
//! the sidecar's targets are a separate ConfigMap key, not part of this file. With
//! `spec.crawler` it has `[crawl]` for the `crawl` sidecar (see [`super::crawl`]); with
//! `spec.export` (sink not `none`) it has `[export]`, secrets as files (see [`super::export`]).

use std::{net::SocketAddr, path::PathBuf};

use sensor_core::config::Config;
use sensor_report::OWNER_SENSOR_FLEET;

use super::{
    crawl, export,
    layout::{DATA_DIR, METRICS_PORT},
    punch::{self, PunchRelay},
};
use crate::crd::{ExternalAddressSource, SensorFleet};
use crate::sensor_toml::{KeyPlan, render as render_toml, unsigned};

/// Every key of `sensor.toml`, as a fleet's renderer treats it (checked against the sensor's
/// schema by this module's tests).
pub const PLAN: KeyPlan = KeyPlan {
    always: &[
        "network",
        "data_dir",
        "listen.address",
        "metrics.listen",
        "report.endpoint",
        "report.interval_ms",
        "report.owner_namespace",
        "report.owner_kind",
        "report.owner_name",
    ],
    from_spec: &[
        "listen.external_address",
        "listen.max_inbound_peers",
        "listen.max_peers_per_ip",
        "listen.max_peers_per_subnet",
        "classify.allow_private_targets",
        "classify.probe_timeout_ms",
        "classify.probe_attempts",
        "classify.concurrency",
        "classify.cache_ttl_secs",
        "punch.relay",
        "punch.relay_node",
        "punch.targets_file",
        "punch.interval_secs",
        "punch.attempts",
        "punch.timeout_secs",
        "punch.identity_file",
        "crawl.seeds",
        "crawl.seed_dns",
        "crawl.seed_from_store",
        "crawl.interval_secs",
        "crawl.concurrency",
        "crawl.timeout_ms",
        "crawl.min_revisit_secs",
        "crawl.max_revisit_secs",
        "crawl.allow_private_targets",
        "export.sink",
        "export.endpoint",
        "export.batch_size",
        "export.interval_ms",
        "export.timeout_ms",
        "export.gzip",
        "export.bearer_token_file",
        "export.hmac_secret_file",
        "export.password_file",
        "export.tls_ca_file",
    ],
    never: &[
        ("sensor_id", "per pod: SENSOR_SENSOR_ID is the pod name"),
        ("report.sender", "per pod: SENSOR_REPORT_SENDER is the pod name"),
        ("storage.path", "per container: SENSOR_STORAGE_PATH (the sidecars keep their own databases)"),
        ("storage.batch_size", "no spec field: the sensor's default holds"),
        ("storage.flush_interval_ms", "no spec field: the sensor's default holds"),
        ("storage.queue_capacity", "no spec field: the sensor's default holds"),
        ("storage.max_db_mb", "no spec field: the sensor's default holds"),
        ("storage.full_grace_ms", "no spec field: the sensor's default holds"),
        ("listen.max_pending_handshakes", "no spec field: the sensor's default holds"),
        ("listen.handshake_timeout_ms", "no spec field: the sensor's default holds"),
        ("listen.keepalive_interval_ms", "no spec field: the sensor's default holds"),
        ("listen.keepalive_timeout_ms", "no spec field: the sensor's default holds"),
        ("listen.hold_time_secs", "no spec field: the sensor's default holds"),
        ("listen.shutdown_grace_ms", "no spec field: the sensor's default holds"),
        ("listen.request_addresses", "no spec field: the sensor's default holds"),
        ("classify.probe_retry_delay_ms", "no spec field: the sensor's default holds"),
        ("classify.queue_capacity", "no spec field: the sensor's default holds"),
        ("classify.cache_capacity", "no spec field: the sensor's default holds"),
        ("report.timeout_ms", "no spec field: the sensor's default holds"),
        ("relay.*", "a RelayNode's relay.toml (crate::relay::relay_config), not a fleet's file"),
        ("punch.targets", "the targets come from the punch-targets file the collector maintains"),
        (
            "punch.listen",
            "the sensor's default (TCP and QUIC on port 0 of every interface) suits pods and host networking",
        ),
        ("punch.kaspa_bridge", "no spec field: the sensor's default holds"),
        ("punch.kaspa_handshake", "no spec field: the sensor's default holds"),
        ("crawl.max_requests", "no spec field: the sensor's default holds"),
        ("crawl.max_nodes", "no spec field: the sensor's default holds"),
        ("crawl.max_duration_secs", "no spec field: the sensor's default holds"),
        ("export.bearer_token_env", "secrets are mounted files (the *_file keys), never environment variables"),
        ("export.hmac_secret_env", "secrets are mounted files (the *_file keys), never environment variables"),
        ("export.password_env", "secrets are mounted files (the *_file keys), never environment variables"),
    ],
};

/// The P2P port a fleet listens on: `spec.port` or the network's default.
pub fn p2p_port(fleet: &SensorFleet) -> i32 {
    fleet.spec.port.unwrap_or_else(|| i32::from(fleet.spec.network.default_p2p_port()))
}

/// The configuration every sensor of `fleet` runs with, reporting to `collector_endpoint` every
/// `report_interval_ms`. A Static external address goes into the file; HostIP comes from the
/// pod's environment instead. `relay`: the relay of the `punch` sidecar (`[punch]`);
/// `spec.crawler` fills `[crawl]`, `spec.export` `[export]`.
pub fn config(
    fleet: &SensorFleet,
    namespace: &str,
    name: &str,
    collector_endpoint: &str,
    report_interval_ms: u64,
    relay: Option<&PunchRelay>,
) -> Config {
    let spec = &fleet.spec;
    let mut config = Config { network: spec.network, data_dir: PathBuf::from(DATA_DIR), ..Config::default() };
    let listen = &mut config.listen;
    listen.address = Some(SocketAddr::from(([0, 0, 0, 0], unsigned(Some(p2p_port(fleet)), 0))));
    if spec.external_address.source == ExternalAddressSource::Static {
        // The validate step refuses a Static source without a valid IP:PORT.
        listen.external_address = spec.external_address.address.as_deref().and_then(|a| a.trim().parse().ok());
    }
    listen.max_inbound_peers = unsigned(spec.limits.max_inbound_peers, listen.max_inbound_peers);
    listen.max_peers_per_ip = unsigned(spec.limits.max_peers_per_ip, listen.max_peers_per_ip);
    listen.max_peers_per_subnet = unsigned(spec.limits.max_peers_per_subnet, listen.max_peers_per_subnet);
    let classify = &mut config.classify;
    classify.allow_private_targets = spec.probing.allow_private_targets.unwrap_or(classify.allow_private_targets);
    classify.probe_timeout_ms = unsigned(spec.probing.timeout_ms, classify.probe_timeout_ms);
    classify.probe_attempts = unsigned(spec.probing.attempts, classify.probe_attempts);
    classify.concurrency = unsigned(spec.probing.concurrency, classify.concurrency);
    classify.cache_ttl_secs = unsigned(spec.probing.cache_ttl_secs, classify.cache_ttl_secs);
    config.metrics.listen = SocketAddr::from(([0, 0, 0, 0], unsigned(Some(METRICS_PORT), 0)));
    let report = &mut config.report;
    report.endpoint = collector_endpoint.to_owned();
    report.interval_ms = report_interval_ms;
    report.owner_namespace = namespace.to_owned();
    report.owner_kind = OWNER_SENSOR_FLEET.to_owned();
    report.owner_name = name.to_owned();
    if let Some(export) = &spec.export {
        export::apply(export, &mut config.export);
    }
    if let Some(relay) = relay {
        punch::apply(fleet, relay, &mut config.punch);
    }
    if let Some(crawler) = &spec.crawler {
        crawl::apply(crawler, &mut config.crawl);
    }
    config
}

/// `sensor.toml` for every sensor of `fleet`: [`config`] written with the keys of [`PLAN`].
pub fn render(
    fleet: &SensorFleet,
    namespace: &str,
    name: &str,
    collector_endpoint: &str,
    report_interval_ms: u64,
    relay: Option<&PunchRelay>,
) -> String {
    let config = config(fleet, namespace, name, collector_endpoint, report_interval_ms, relay);
    let header = format!("Rendered by p2p-sensor-operator from SensorFleet {namespace}/{name}; edits are overwritten.");
    render_toml(&config, &PLAN, &header)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::crd::SensorFleetSpec;

    fn fleet(spec: serde_json::Value) -> SensorFleet {
        SensorFleet::new("lab", serde_json::from_value::<SensorFleetSpec>(spec).unwrap())
    }

    /// Every spec field that reaches `sensor.toml`, set away from the sensor's defaults; `export`
    /// is one of two sinks (the password file is postgres-only, the token and HMAC http-only).
    fn everything(export: serde_json::Value) -> SensorFleet {
        fleet(json!({
            "network": "testnet-10", "port": 17000,
            "externalAddress": {"source": "Static", "address": "198.51.100.4:17000"},
            "probing": {"timeoutMs": 3000, "attempts": 3, "concurrency": 8, "cacheTtlSecs": 60,
                "allowPrivateTargets": true},
            "limits": {"maxInboundPeers": 100, "maxPeersPerIp": 2, "maxPeersPerSubnet": 8},
            "relayRef": {"name": "edge"},
            "holePunch": {"intervalSecs": 120, "attempts": 3, "timeoutSecs": 30},
            "crawler": {"intervalSecs": 900, "concurrency": 32, "timeoutMs": 2000, "seeds": ["203.0.113.1:16211"],
                "seedDns": ["seeder.example"], "minRevisitSecs": 60, "maxRevisitSecs": 3600,
                "allowPrivateTargets": true},
            "export": export,
        }))
    }

    fn relay() -> PunchRelay {
        PunchRelay {
            node: "edge".into(),
            multiaddr: "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        }
    }

    /// The dotted keys of a rendered file.
    fn written(text: &str) -> BTreeSet<String> {
        let table: toml::Table = text.parse().unwrap();
        let mut keys = BTreeSet::new();
        for (name, value) in table {
            match value {
                toml::Value::Table(section) => keys.extend(section.keys().map(|k| format!("{name}.{k}"))),
                _ => {
                    keys.insert(name);
                }
            }
        }
        keys
    }

    #[test]
    fn every_sensor_key_is_rendered_or_deliberately_not() {
        let (unclassified, stale) = PLAN.gaps();
        assert!(
            unclassified.is_empty(),
            "sensor.toml keys a fleet neither renders nor lists as never: {unclassified:?}"
        );
        assert!(stale.is_empty(), "plan entries that name no sensor key: {stale:?}");
    }

    #[test]
    fn the_file_loads_back_into_the_config_it_was_rendered_from() {
        let http = json!({"sink": "http", "endpoint": "https://c.example/e", "batchSize": 100, "intervalMs": 500,
            "timeoutMs": 3000, "gzip": false, "bearerTokenSecretRef": {"name": "s", "key": "t"},
            "hmacSecretRef": {"name": "s", "key": "h"}, "caSecretRef": {"name": "ca", "key": "ca.crt"}});
        let postgres = json!({"sink": "postgres", "endpoint": "postgres://sensor@pg/kaspa",
            "passwordSecretRef": {"name": "pg", "key": "password"}});
        let mut seen = BTreeSet::new();
        for fleet in [everything(http), everything(postgres), fleet(json!({"network": "mainnet"}))] {
            for relay in [Some(relay()), None] {
                let text = render(&fleet, "sensors", "lab", "http://collector:9000", 5000, relay.as_ref());
                let built = config(&fleet, "sensors", "lab", "http://collector:9000", 5000, relay.as_ref());
                let loaded = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(loaded, built, "{text}");
                loaded
                    .validate()
                    .unwrap_or_else(|e| panic!("the sensor refuses what the operator renders: {e}\n{text}"));
                seen.extend(written(&text));
            }
        }
        let declared: BTreeSet<String> = PLAN.always.iter().chain(PLAN.from_spec).map(|k| k.to_string()).collect();
        assert_eq!(seen, declared, "keys written across full specs = keys the plan declares");
    }
}
