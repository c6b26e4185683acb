//! `RelayNode`: a libp2p circuit relay (v2) pod, and the hole punches measured through it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Exposure, Placement, PullPolicy};

/// Desired state of one libp2p relay.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "p2psensor.dev",
    version = "v1alpha1",
    kind = "RelayNode",
    namespaced,
    status = "RelayNodeStatus",
    shortname = "rn",
    category = "p2psensor",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"PeerID","type":"string","jsonPath":".status.peerId"}"#,
    printcolumn = r#"{"name":"Success%","type":"number","description":"Hole-punch success rate, percent","jsonPath":".status.holePunch.successRate"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.limits) || !has(self.limits.maxReservationsPerPeer) || !has(self.limits.maxReservations) || self.limits.maxReservationsPerPeer <= self.limits.maxReservations").message("limits.maxReservationsPerPeer must not exceed limits.maxReservations"))]
#[x_kube(validation = Rule::new("!has(self.limits) || !has(self.limits.maxCircuitsPerPeer) || !has(self.limits.maxCircuits) || self.limits.maxCircuitsPerPeer <= self.limits.maxCircuits").message("limits.maxCircuitsPerPeer must not exceed limits.maxCircuits"))]
pub struct RelayNodeSpec {
    /// Image running `sensor relay`; default: the operator's `--sensor-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default)]
    pub ports: RelayPorts,
    /// How peers reach the relay. Default: host network.
    #[serde(default)]
    pub exposure: Exposure,
    /// Multiaddrs peers reach the relay at (e.g. `/ip4/203.0.113.7/tcp/4001`). Absent: derived
    /// from the node IP for HostNetwork, and from the node IP and `exposure.nodePort` for NodePort;
    /// a LoadBalancer needs them set. A relay without any refuses every reservation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub external_addresses: Vec<String>,
    #[serde(default)]
    pub identity: RelayIdentity,
    #[serde(default)]
    pub limits: RelayLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub placement: Placement,
}

/// Listen ports of the relay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayPorts {
    /// TCP port (default 4001).
    #[serde(default = "default_relay_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp: i32,
    /// UDP port for QUIC v1; absent = no QUIC listener. Default 4001.
    #[serde(default = "default_quic_port", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub quic: Option<i32>,
}

fn default_relay_port() -> i32 {
    4001
}

fn default_quic_port() -> Option<i32> {
    Some(4001)
}

impl Default for RelayPorts {
    fn default() -> Self {
        Self { tcp: default_relay_port(), quic: default_quic_port() }
    }
}

/// The relay's libp2p identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayIdentity {
    /// Secret holding the protobuf-encoded libp2p keypair under key `identity.key`. Absent: the
    /// operator generates an Ed25519 key into `<name>-identity` once and keeps it, so the PeerId
    /// stays stable across restarts and spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// A Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Resource limits of the relay (rust-libp2p `relay::Config`; defaults are libp2p's).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayLimits {
    /// Concurrent reservations (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_reservations: Option<i32>,
    /// Reservations per peer (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_reservations_per_peer: Option<i32>,
    /// Concurrent circuits (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_circuits: Option<i32>,
    /// Circuits per peer (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_circuits_per_peer: Option<i32>,
    /// Lifetime of one circuit, s (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_circuit_duration_secs: Option<i64>,
    /// Bytes relayed per circuit in each direction (default 131072).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_circuit_bytes: Option<i64>,
}

/// Observed state of a relay, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayNodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Base58 libp2p PeerId of the relay (from its identity Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Multiaddrs the relay reported, `/p2p/<peerId>` included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multiaddrs: Vec<String>,
    #[serde(default)]
    pub reservations_active: i64,
    #[serde(default)]
    pub circuits_active: i64,
    #[serde(default)]
    pub hole_punch: HolePunchStats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
}

/// DCUtR attempts through this relay, summed over every reporting sensor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HolePunchStats {
    pub attempts: i64,
    pub successes: i64,
    pub failures: i64,
    /// Successes per attempt, percent (0–100, one decimal); absent before the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Median time from relayed circuit to direct connection of successful attempts, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_direct_p50_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_transport: Vec<TransportStats>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportStats {
    /// `tcp` or `quic`.
    pub transport: String,
    pub attempts: i64,
    pub successes: i64,
    /// Percent, one decimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
}
