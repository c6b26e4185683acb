//! Renders a relay's `relay.toml` (the configuration of `sensor relay`, mounted from a
//! ConfigMap).
//!
//! Only the limits the spec sets are written; the relay's (rust-libp2p's) defaults fill the rest.
//! The report section uses the same keys as the fleet's `sensor.toml`. Per-pod values (report
//! sender, sensor id) come from `SENSOR_*` environment variables.

use sensor_report::OWNER_RELAY_NODE;
use serde::Serialize;

use super::identity::{IDENTITY_DIR, IDENTITY_KEY};
use crate::crd::RelayNode;

/// File name of the rendered configuration in the ConfigMap (mounted in
/// [`crate::fleet::sensor_config::CONFIG_DIR`]).
pub const CONFIG_FILE: &str = "relay.toml";
/// Port of the relay's `/metrics`, `/healthz`, `/readyz`. Not the listener's 9102: a
/// host-network relay and host-network sensors on one node would both claim that host port, and
/// the scheduler keeps the second pod Pending ("didn't have free ports"), as the real-node e2e
/// found (sensor/tests/cluster_pods.rs).
pub const METRICS_PORT: i32 = 9105;

#[derive(Serialize)]
struct RelayToml<'a> {
    relay: RelaySection,
    metrics: MetricsSection,
    report: ReportSection<'a>,
}

#[derive(Serialize)]
struct RelaySection {
    listen_tcp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_quic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_tcp_alternate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_quic_alternate: Option<String>,
    identity_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_reservations: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_reservations_per_peer: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_circuits: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_circuits_per_peer: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_circuit_duration_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_circuit_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation_rate_per_peer: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation_rate_per_ip: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_rate_per_peer: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_rate_per_ip: Option<i32>,
}

#[derive(Serialize)]
struct MetricsSection {
    listen: String,
}

#[derive(Serialize)]
struct ReportSection<'a> {
    endpoint: &'a str,
    interval_ms: u64,
    owner_namespace: &'a str,
    owner_kind: &'a str,
    owner_name: &'a str,
}

/// `relay.toml` for relay `namespace/name`, reporting to `collector_endpoint` every
/// `report_interval_ms`. TCP listens on `spec.ports.tcp`, QUIC v1 (UDP) on `spec.ports.quic`
/// when set, both on every address, and each on its alternate port when
/// `spec.ports.tcpAlternate` / `quicAlternate` is set (a NodePort relay never has them: the
/// validate step rejects them); the key is read from the identity Secret's mount.
pub fn render(
    relay: &RelayNode,
    namespace: &str,
    name: &str,
    collector_endpoint: &str,
    report_interval_ms: u64,
) -> String {
    let spec = &relay.spec;
    let limits = &spec.limits;
    let config = RelayToml {
        relay: RelaySection {
            listen_tcp: format!("0.0.0.0:{}", spec.ports.tcp),
            listen_quic: spec.ports.quic.map(|port| format!("0.0.0.0:{port}")),
            listen_tcp_alternate: spec.ports.tcp_alternate.map(|port| format!("0.0.0.0:{port}")),
            listen_quic_alternate: spec.ports.quic_alternate.map(|port| format!("0.0.0.0:{port}")),
            identity_file: format!("{IDENTITY_DIR}/{IDENTITY_KEY}"),
            max_reservations: limits.max_reservations,
            max_reservations_per_peer: limits.max_reservations_per_peer,
            max_circuits: limits.max_circuits,
            max_circuits_per_peer: limits.max_circuits_per_peer,
            max_circuit_duration_secs: limits.max_circuit_duration_secs,
            max_circuit_bytes: limits.max_circuit_bytes,
            reservation_rate_per_peer: limits.reservation_rate_per_peer,
            reservation_rate_per_ip: limits.reservation_rate_per_ip,
            circuit_rate_per_peer: limits.circuit_rate_per_peer,
            circuit_rate_per_ip: limits.circuit_rate_per_ip,
        },
        metrics: MetricsSection { listen: format!("0.0.0.0:{METRICS_PORT}") },
        report: ReportSection {
            endpoint: collector_endpoint,
            interval_ms: report_interval_ms,
            owner_namespace: namespace,
            owner_kind: OWNER_RELAY_NODE,
            owner_name: name,
        },
    };
    let body = toml::to_string(&config).unwrap_or_default();
    format!("# Rendered by p2p-sensor-operator from RelayNode {namespace}/{name}; edits are overwritten.\n{body}")
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
}
