//! Renders a relay's `relay.toml` (the configuration of `sensor relay`, mounted from a
//! ConfigMap).
//!
//! Rendered from the sensor's own schema ([`Config`], see [`crate::sensor_toml`]): only the
//! limits the spec sets are written, where they differ from the relay's (rust-libp2p's) defaults,
//! which fill the rest. The report section uses the same keys as the fleet's `sensor.toml`. Per-pod values (report
//! sender, sensor id) come from `SENSOR_*` environment variables.

use std::{net::SocketAddr, path::PathBuf};

use sensor_core::config::Config;
use sensor_report::OWNER_RELAY_NODE;

use super::identity::{IDENTITY_DIR, IDENTITY_KEY};
use crate::crd::RelayNode;
use crate::sensor_toml::{KeyPlan, render as render_toml, unsigned};

/// File name of the rendered configuration in the ConfigMap (mounted in
/// [`crate::fleet::layout::CONFIG_DIR`]).
pub const CONFIG_FILE: &str = "relay.toml";
/// Port of the relay's `/metrics`, `/healthz`, `/readyz`. Not the listener's 9102: a
/// host-network relay and host-network sensors on one node would both claim that host port, and
/// the scheduler keeps the second pod Pending ("didn't have free ports"), as the real-node e2e
/// found (sensor/tests/cluster_pods.rs).
pub const METRICS_PORT: i32 = 9105;

/// Every key of `sensor.toml`, as a relay's renderer treats it (checked against the sensor's
/// schema by this module's tests).
pub const PLAN: KeyPlan = KeyPlan {
    always: &[
        "relay.listen_tcp",
        "relay.identity_file",
        "metrics.listen",
        "report.endpoint",
        "report.interval_ms",
        "report.owner_namespace",
        "report.owner_kind",
        "report.owner_name",
    ],
    from_spec: &[
        "relay.listen_quic",
        "relay.listen_tcp_alternate",
        "relay.listen_quic_alternate",
        "relay.max_reservations",
        "relay.max_reservations_per_peer",
        "relay.max_circuits",
        "relay.max_circuits_per_peer",
        "relay.max_circuit_duration_secs",
        "relay.max_circuit_bytes",
        "relay.reservation_rate_per_peer",
        "relay.reservation_rate_per_ip",
        "relay.circuit_rate_per_peer",
        "relay.circuit_rate_per_ip",
    ],
    never: &[
        ("relay.external_addresses", "per pod: SENSOR_RELAY_EXTERNAL_ADDRESSES from the node or Service address"),
        ("relay.allow_private_targets", "no spec field: the relay's default holds"),
        ("sensor_id", "per pod: SENSOR_SENSOR_ID is the pod name"),
        ("report.sender", "per pod: SENSOR_REPORT_SENDER is the pod name"),
        ("report.timeout_ms", "no spec field: the default holds"),
        ("network", "a relay joins no Kaspa network"),
        ("data_dir", "the relay keeps nothing but its identity, which is mounted"),
        ("listen.*", "the Kaspa listener does not run in a relay pod"),
        ("classify.*", "the Kaspa listener does not run in a relay pod"),
        ("storage.*", "the relay stores nothing"),
        ("punch.*", "a fleet's file (crate::fleet::sensor_config), not a relay's"),
        ("crawl.*", "a fleet's file (crate::fleet::sensor_config), not a relay's"),
        ("export.*", "the relay stores no events to export"),
    ],
};

/// The configuration of relay `namespace/name`, reporting to `collector_endpoint` every
/// `report_interval_ms`. TCP listens on `spec.ports.tcp`, QUIC v1 (UDP) on `spec.ports.quic`
/// when set, both on every address, and each on its alternate port when
/// `spec.ports.tcpAlternate` / `quicAlternate` is set (a NodePort relay never has them: the
/// validate step rejects them); the key is read from the identity Secret's mount.
pub fn config(
    relay: &RelayNode,
    namespace: &str,
    name: &str,
    collector_endpoint: &str,
    report_interval_ms: u64,
) -> Config {
    let spec = &relay.spec;
    let limits = &spec.limits;
    let any = |port: i32| SocketAddr::from(([0, 0, 0, 0], unsigned(Some(port), 0)));
    let mut config = Config::default();
    let r = &mut config.relay;
    r.listen_tcp = Some(any(spec.ports.tcp));
    r.listen_quic = spec.ports.quic.map(any);
    r.listen_tcp_alternate = spec.ports.tcp_alternate.map(any);
    r.listen_quic_alternate = spec.ports.quic_alternate.map(any);
    r.identity_file = Some(PathBuf::from(format!("{IDENTITY_DIR}/{IDENTITY_KEY}")));
    r.max_reservations = unsigned(limits.max_reservations, r.max_reservations);
    r.max_reservations_per_peer = unsigned(limits.max_reservations_per_peer, r.max_reservations_per_peer);
    r.max_circuits = unsigned(limits.max_circuits, r.max_circuits);
    r.max_circuits_per_peer = unsigned(limits.max_circuits_per_peer, r.max_circuits_per_peer);
    r.max_circuit_duration_secs = unsigned(limits.max_circuit_duration_secs, r.max_circuit_duration_secs);
    r.max_circuit_bytes = unsigned(limits.max_circuit_bytes, r.max_circuit_bytes);
    r.reservation_rate_per_peer = unsigned(limits.reservation_rate_per_peer, r.reservation_rate_per_peer);
    r.reservation_rate_per_ip = unsigned(limits.reservation_rate_per_ip, r.reservation_rate_per_ip);
    r.circuit_rate_per_peer = unsigned(limits.circuit_rate_per_peer, r.circuit_rate_per_peer);
    r.circuit_rate_per_ip = unsigned(limits.circuit_rate_per_ip, r.circuit_rate_per_ip);
    config.metrics.listen = any(METRICS_PORT);
    let report = &mut config.report;
    report.endpoint = collector_endpoint.to_owned();
    report.interval_ms = report_interval_ms;
    report.owner_namespace = namespace.to_owned();
    report.owner_kind = OWNER_RELAY_NODE.to_owned();
    report.owner_name = name.to_owned();
    config
}

/// `relay.toml` for relay `namespace/name`: [`config`] written with the keys of [`PLAN`].
pub fn render(
    relay: &RelayNode,
    namespace: &str,
    name: &str,
    collector_endpoint: &str,
    report_interval_ms: u64,
) -> String {
    let config = config(relay, namespace, name, collector_endpoint, report_interval_ms);
    render_toml(
        &config,
        &PLAN,
        &format!("Rendered by p2p-sensor-operator from RelayNode {namespace}/{name}; edits are overwritten."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RelayLimits, RelayNodeSpec};

    fn relay(spec: serde_json::Value) -> RelayNode {
        RelayNode::new("edge", serde_json::from_value::<RelayNodeSpec>(spec).unwrap())
    }

    fn parse(toml_text: &str) -> toml::Table {
        toml_text.parse().unwrap()
    }

    #[test]
    fn defaults_listen_on_tcp_and_quic_and_write_no_limits() {
        let text = render(&relay(serde_json::json!({})), "lab", "edge", "http://collector:9000", 5000);
        assert!(text.starts_with("# Rendered by p2p-sensor-operator from RelayNode lab/edge"));
        let t = parse(&text);
        let r = t["relay"].as_table().unwrap();
        assert_eq!(r["listen_tcp"].as_str(), Some("0.0.0.0:4001"));
        assert_eq!(r["listen_quic"].as_str(), Some("0.0.0.0:4001"));
        assert_eq!(r["identity_file"].as_str(), Some("/var/run/p2p-sensor/identity/identity.key"));
        assert_eq!(r.len(), 3, "no limits and no alternates unless set: {r:?}");
        assert_eq!(t["metrics"]["listen"].as_str(), Some("0.0.0.0:9105"));
        let report = t["report"].as_table().unwrap();
        assert_eq!(report["endpoint"].as_str(), Some("http://collector:9000"));
        assert_eq!(report["interval_ms"].as_integer(), Some(5000));
        assert_eq!(report["owner_namespace"].as_str(), Some("lab"));
        assert_eq!(report["owner_kind"].as_str(), Some("RelayNode"));
        assert_eq!(report["owner_name"].as_str(), Some("edge"));
    }

    #[test]
    fn no_quic_port_means_no_quic_listener_and_set_limits_are_written() {
        let mut relay = relay(serde_json::json!({"ports": {"tcp": 4101, "quic": null}}));
        relay.spec.limits = RelayLimits {
            max_reservations: Some(256),
            max_reservations_per_peer: Some(2),
            max_circuits: Some(32),
            max_circuits_per_peer: Some(8),
            max_circuit_duration_secs: Some(600),
            max_circuit_bytes: Some(1 << 20),
            reservation_rate_per_peer: Some(300),
            reservation_rate_per_ip: Some(600),
            circuit_rate_per_peer: Some(0),
            circuit_rate_per_ip: Some(100_000),
        };
        let t = parse(&render(&relay, "lab", "edge", "http://c", 1));
        let r = t["relay"].as_table().unwrap();
        assert_eq!(r["listen_tcp"].as_str(), Some("0.0.0.0:4101"));
        assert!(!r.contains_key("listen_quic"));
        assert!(!r.contains_key("listen_tcp_alternate") && !r.contains_key("listen_quic_alternate"), "{r:?}");
        let ints: Vec<_> = [
            "max_reservations",
            "max_reservations_per_peer",
            "max_circuits",
            "max_circuits_per_peer",
            "max_circuit_duration_secs",
            "max_circuit_bytes",
            "reservation_rate_per_peer",
            "reservation_rate_per_ip",
            "circuit_rate_per_peer",
            "circuit_rate_per_ip",
        ]
        .iter()
        .map(|k| r[*k].as_integer())
        .collect();
        assert_eq!(
            ints,
            [
                Some(256),
                Some(2),
                Some(32),
                Some(8),
                Some(600),
                Some(1 << 20),
                Some(300),
                Some(600),
                Some(0),
                Some(100_000)
            ]
        );
        assert_eq!(r.len(), 12, "{r:?}");
    }

    #[test]
    fn only_the_rate_limits_that_are_set_are_written() {
        let relay = relay(serde_json::json!({"limits": {"reservationRatePerIp": 0, "circuitRatePerPeer": 5}}));
        let t = parse(&render(&relay, "lab", "edge", "http://c", 1));
        let r = t["relay"].as_table().unwrap();
        assert_eq!(r["reservation_rate_per_ip"].as_integer(), Some(0), "0 = no limit is written, not dropped");
        assert_eq!(r["circuit_rate_per_peer"].as_integer(), Some(5));
        for absent in ["reservation_rate_per_peer", "circuit_rate_per_ip", "max_reservations"] {
            assert!(!r.contains_key(absent), "{absent}: {r:?}");
        }
    }

    #[test]
    fn alternate_ports_listen_on_every_address() {
        let both = relay(
            serde_json::json!({"ports": {"tcp": 4001, "quic": 4001, "tcpAlternate": 4002, "quicAlternate": 4003}}),
        );
        let t = parse(&render(&both, "lab", "edge", "http://c", 1));
        let r = t["relay"].as_table().unwrap();
        assert_eq!(r["listen_tcp"].as_str(), Some("0.0.0.0:4001"));
        assert_eq!(r["listen_tcp_alternate"].as_str(), Some("0.0.0.0:4002"));
        assert_eq!(r["listen_quic"].as_str(), Some("0.0.0.0:4001"));
        assert_eq!(r["listen_quic_alternate"].as_str(), Some("0.0.0.0:4003"));
        let tcp_only = relay(serde_json::json!({"ports": {"tcp": 4100, "tcpAlternate": 4101}}));
        let t = parse(&render(&tcp_only, "lab", "edge", "http://c", 1));
        let r = t["relay"].as_table().unwrap();
        assert_eq!(r["listen_tcp_alternate"].as_str(), Some("0.0.0.0:4101"));
        assert!(!r.contains_key("listen_quic_alternate"), "{r:?}");
    }

    #[test]
    fn every_sensor_key_is_rendered_or_deliberately_not() {
        let (unclassified, stale) = PLAN.gaps();
        assert!(unclassified.is_empty(), "keys a relay neither renders nor lists as never: {unclassified:?}");
        assert!(stale.is_empty(), "plan entries that name no sensor key: {stale:?}");
    }

    #[test]
    fn the_file_loads_back_into_the_config_it_was_rendered_from() {
        let full = relay(serde_json::json!({
            "ports": {"tcp": 4100, "quic": 4200, "tcpAlternate": 4101, "quicAlternate": 4201},
            "limits": {"maxReservations": 64, "maxReservationsPerPeer": 2, "maxCircuits": 8, "maxCircuitsPerPeer": 2,
                "maxCircuitDurationSecs": 60, "maxCircuitBytes": 65536, "reservationRatePerPeer": 10,
                "reservationRatePerIp": 20, "circuitRatePerPeer": 10, "circuitRatePerIp": 20},
        }));
        let mut seen = std::collections::BTreeSet::new();
        for relay in [full, relay(serde_json::json!({}))] {
            let text = render(&relay, "lab", "edge", "http://collector:9000", 5000);
            let built = config(&relay, "lab", "edge", "http://collector:9000", 5000);
            let loaded = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(loaded, built, "{text}");
            loaded.validate().unwrap_or_else(|e| panic!("the relay refuses what the operator renders: {e}\n{text}"));
            for (name, section) in parse(&text) {
                seen.extend(section.as_table().unwrap().keys().map(|k| format!("{name}.{k}")));
            }
        }
        let declared: std::collections::BTreeSet<String> =
            PLAN.always.iter().chain(PLAN.from_spec).map(|k| k.to_string()).collect();
        assert_eq!(seen, declared, "keys written across full specs = keys the plan declares");
    }
}
