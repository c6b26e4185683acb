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
#[x_kube(validation = Rule::new("!has(self.ports) || (!has(self.ports.tcpAlternate) && !has(self.ports.quicAlternate)) || !has(self.exposure) || !has(self.exposure.kind) || self.exposure.kind != 'NodePort'").message("ports.tcpAlternate and ports.quicAlternate need exposure kind HostNetwork or LoadBalancer: a NodePort Service has the one exposure.nodePort, none for an alternate"))]
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
///
/// The alternates are a second listener per transport (same IP, another port) for the punch
/// clients' address-mapping test (RFC 5780 §4.3): a client connects to the primary and to the
/// alternate port (found among the relay's identify listen addresses on the host it dialled)
/// and compares the two addresses the relay observes it at: the same = cone NAT (endpoint-
/// independent mapping), different = symmetric NAT. The test needs the alternate reachable at
/// the same IP as the primary, which holds for exposure HostNetwork (a hostPort on the node's
/// IP) and LoadBalancer (both ports on the one Service, hence the same load-balancer IP). With
/// exposure NodePort they are rejected: the Service has the one `exposure.nodePort` (shared by
/// TCP and QUIC), an alternate would need a node port of its own that the spec cannot name, and
/// clients would have to be told that port (another NAT mapping in front of the relay).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tcpAlternate) || self.tcpAlternate != self.tcp").message("tcpAlternate must differ from tcp"))]
#[x_kube(validation = Rule::new("!has(self.quicAlternate) || !has(self.quic) || self.quicAlternate != self.quic").message("quicAlternate must differ from quic"))]
pub struct RelayPorts {
    /// TCP port (default 4001).
    #[serde(default = "default_relay_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp: i32,
    /// UDP port for QUIC v1; absent = no QUIC listener. Default 4001.
    #[serde(default = "default_quic_port", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub quic: Option<i32>,
    /// Second TCP port (same IP, another port) for the clients' address-mapping test; absent =
    /// none. Published like `tcp` (a hostPort with HostNetwork, a port of the LoadBalancer
    /// Service); not allowed with exposure NodePort. With `externalAddresses` set (always for a
    /// LoadBalancer) also list `/ip4/<IP>/tcp/<tcpAlternate>` there, after the primary: clients
    /// find the alternate among the relay's identify addresses on the IP they dialled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp_alternate: Option<i32>,
    /// Second UDP port for QUIC v1, the same for QUIC as `tcpAlternate`; needs `quic` (not
    /// null), must differ from it. Absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub quic_alternate: Option<i32>,
}

fn default_relay_port() -> i32 {
    4001
}

fn default_quic_port() -> Option<i32> {
    Some(4001)
}

impl Default for RelayPorts {
    fn default() -> Self {
        Self { tcp: default_relay_port(), quic: default_quic_port(), tcp_alternate: None, quic_alternate: None }
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
    /// Reservation rate limit per peer: a token bucket of this many reservations (renewals
    /// included) that refills one every 2 minutes (default 30, rust-libp2p's). 0 = no limit (lab
    /// use, e.g. a benchmark of many attempts from one peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub reservation_rate_per_peer: Option<i32>,
    /// Reservation rate limit per source IP: a token bucket of this many reservations that
    /// refills one every minute (default 60, rust-libp2p's). 0 = no limit (lab use, e.g. many
    /// peers behind one NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub reservation_rate_per_ip: Option<i32>,
    /// Circuit rate limit per source peer: a token bucket of this many circuits that refills one
    /// every 2 minutes (default 30, rust-libp2p's). 0 = no limit (lab use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub circuit_rate_per_peer: Option<i32>,
    /// Circuit rate limit per source IP: a token bucket of this many circuits that refills one
    /// every minute (default 60, rust-libp2p's). 0 = no limit (lab use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub circuit_rate_per_ip: Option<i32>,
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
    /// 95th percentile of the same, ms (from the merged histogram, interpolated in a bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_direct_p95_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_transport: Vec<TransportStats>,
    /// Kaspa handshakes (Version/Verack/Ready over `/p2psensor/kaspa/1`) completed on
    /// hole-punched connections, and failed; 0 when the clients do not try them.
    #[serde(default)]
    pub kaspa_handshakes: i64,
    #[serde(default)]
    pub kaspa_handshake_failures: i64,
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
