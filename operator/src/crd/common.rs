//! Types both custom resources use: images, placement, exposure, condition names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types (kstatus): `Ready` when the workload is rolled out and reporting;
/// `Reconciling` while the operator or the workload is converging; `Stalled` when the spec cannot
/// be realised without a user's change; `Degraded` when it runs but measures less than it should.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const DEGRADED: &str = "Degraded";
}

/// Where pods run. Copied verbatim into the pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// How peers on the Internet reach the pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExposureKind {
    /// The pod uses its node's network: peers' source IPs arrive untouched (default).
    #[default]
    HostNetwork,
    /// A `LoadBalancer` Service in front of the pods.
    LoadBalancer,
    /// A `NodePort` Service in front of the pods.
    NodePort,
}

/// `externalTrafficPolicy` of the exposure Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    /// Traffic goes only to pods on the receiving node, and the peer's source IP is kept (default).
    #[default]
    Local,
    /// Traffic may be forwarded between nodes and is SNATed: peers' source IPs are hidden, so
    /// dial-back classification is impossible (the resource becomes `Degraded`).
    Cluster,
}

/// The exposure of a SensorFleet's or RelayNode's P2P ports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'NodePort' || !has(self.nodePort)").message("nodePort is only allowed with kind NodePort"))]
#[x_kube(validation = Rule::new("self.kind != 'HostNetwork' || !has(self.annotations)").message("annotations apply to a Service; kind HostNetwork creates none"))]
pub struct Exposure {
    #[serde(default)]
    pub kind: ExposureKind,
    /// `externalTrafficPolicy` of the Service (kinds LoadBalancer and NodePort). Default Local.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// Node port (kind NodePort only), 30000–32767 on a default cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// Annotations of the Service, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Exposure {
    /// True when peers' source IPs cannot be seen by the pods (SNAT by kube-proxy).
    pub fn hides_source_ip(&self) -> bool {
        self.kind != ExposureKind::HostNetwork && self.external_traffic_policy == TrafficPolicy::Cluster
    }
}

/// A reference to a Secret key in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name (a DNS-1123 subdomain).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret (letters, digits, `-`, `_`, `.`).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to a ConfigMap key in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap name (a DNS-1123 subdomain).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the ConfigMap (letters, digits, `-`, `_`, `.`).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// `imagePullPolicy` of the pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}
