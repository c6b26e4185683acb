//! Pure builders: a RelayNode in, the Kubernetes objects it wants out.
//!
//! Children (names for relay `r`): ServiceAccount `r-relay`, ConfigMap `r-relay-config`
//! (`relay.toml`), Deployment `r-relay` (one replica, `Recreate`: one identity must never run
//! twice) and the exposure Service `r-relay` (LoadBalancer/NodePort exposure only). All carry the
//! common labels, a controller owner reference and a spec-hash annotation. The identity Secret
//! is not built here (see [`super::identity`]): only its name goes into the pod.
//!
//! Alternate ports (`spec.ports.tcpAlternate` / `quicAlternate`, the clients' address-mapping
//! test) are published like their primaries: container ports `tcp-alt` / `quic-alt` (hostPorts
//! with HostNetwork) and, for a LoadBalancer, ports of the same Service, so they share the
//! primary's IP. NodePort relays never have them (rejected by the validate step).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, EnvVar, KeyToPath, PodSpec, PodTemplateSpec, SecretVolumeSource, Service,
    ServiceAccount, ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::COMPONENT;
use super::identity::{IDENTITY_DIR, IDENTITY_KEY};
use super::relay_config::{self, CONFIG_FILE, METRICS_PORT};
use crate::children::{self, Child, Children};
use crate::context::BuildSettings;
use crate::crd::{ExposureKind, RelayNode};
use crate::error::BuildError;
use crate::fleet::layout::CONFIG_DIR;
use crate::labels::{self, CONFIG_HASH_ANNOTATION, ChildMeta, RELAY_LABEL};
use crate::pod::{self, ContainerParams};

/// File mode of the mounted identity key (owner read; the pod's fsGroup adds group read).
pub const IDENTITY_MODE: i32 = 0o400;
/// Names of the P2P container ports, also the names (and target ports) of the exposure
/// Service's ports. Container port names are IANA service names: at most 15 characters.
pub const PORT_TCP: &str = "tcp";
pub const PORT_QUIC: &str = "quic";
pub const PORT_TCP_ALT: &str = "tcp-alt";
pub const PORT_QUIC_ALT: &str = "quic-alt";

/// Everything a relay wants to exist, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayChildren {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    /// LoadBalancer or NodePort Service; `None` with HostNetwork exposure.
    pub exposure_service: Option<Service>,
}

impl Children for RelayChildren {
    fn each(&self) -> Vec<&dyn Child> {
        let mut each: Vec<&dyn Child> = vec![&self.service_account, &self.config_map];
        each.extend(self.exposure_service.as_ref().map(|s| s as &dyn Child));
        each.push(&self.deployment);
        each
    }

    fn each_mut(&mut self) -> Vec<&mut dyn Child> {
        let mut each: Vec<&mut dyn Child> = vec![&mut self.service_account, &mut self.config_map];
        each.extend(self.exposure_service.as_mut().map(|s| s as &mut dyn Child));
        each.push(&mut self.deployment);
        each
    }
}

/// Child object names of relay `name`.
pub mod names {
    pub fn service_account(relay: &str) -> String {
        format!("{relay}-relay")
    }
    pub fn config_map(relay: &str) -> String {
        format!("{relay}-relay-config")
    }
    pub fn deployment(relay: &str) -> String {
        format!("{relay}-relay")
    }
    pub fn exposure_service(relay: &str) -> String {
        format!("{relay}-relay")
    }
}

/// Builds every child of `relay`; the pod mounts Secret `identity_secret_name` (key
/// [`IDENTITY_KEY`]) at [`IDENTITY_DIR`]. Errors: [`BuildError::MissingObjectKey`] when the
/// relay has no name, namespace or uid (it was not read from the API server);
/// [`BuildError::Serialization`] if a child does not serialise. Spec problems are caught by
/// `validate` first; this function assumes a valid spec.
pub fn build(
    relay: &RelayNode,
    settings: &BuildSettings,
    identity_secret_name: &str,
) -> Result<RelayChildren, BuildError> {
    let child = ChildMeta::of(relay, RELAY_LABEL, COMPONENT)?;
    let (name, namespace) = (child.owner_name.as_str(), child.namespace.as_str());
    let (labels, selector) = (&child.labels, &child.selector);
    let meta = |object_name: String| child.meta(object_name);
    let spec = &relay.spec;
    let host_network = spec.exposure.kind == ExposureKind::HostNetwork;
    let (tcp, quic) = (spec.ports.tcp, spec.ports.quic);
    // `(container/Service port name, port, protocol)` of the P2P listeners: primaries, then
    // alternates (`validate` guarantees an alternate differs from, and has, its primary).
    let mut p2p_ports = vec![(PORT_TCP, tcp, "TCP")];
    p2p_ports.extend(quic.map(|q| (PORT_QUIC, q, "UDP")));
    p2p_ports.extend(spec.ports.tcp_alternate.map(|p| (PORT_TCP_ALT, p, "TCP")));
    p2p_ports.extend(spec.ports.quic_alternate.map(|p| (PORT_QUIC_ALT, p, "UDP")));

    let service_account = ServiceAccount {
        metadata: meta(names::service_account(name)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };

    let toml = relay_config::render(relay, namespace, name, &settings.collector_endpoint, settings.report_interval_ms);
    let config_hash = labels::short_hash(toml.as_bytes());
    let config_map = ConfigMap {
        metadata: meta(names::config_map(name)),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), toml)])),
        ..ConfigMap::default()
    };

    let exposure_service = (!host_network).then(|| {
        let port = |port_name: &str, port: i32, protocol: &str| ServicePort {
            name: Some(port_name.into()),
            port,
            target_port: Some(IntOrString::String(port_name.into())),
            protocol: Some(protocol.into()),
            node_port: spec.exposure.node_port,
            ..ServicePort::default()
        };
        let ports = p2p_ports.iter().map(|&(port_name, number, protocol)| port(port_name, number, protocol)).collect();
        pod::exposure_service(meta(names::exposure_service(name)), &spec.exposure, selector, ports)
    });

    let mut ports: Vec<_> =
        p2p_ports.iter().map(|&(port_name, number, protocol)| (port_name, number, protocol, host_network)).collect();
    ports.push(("metrics", METRICS_PORT, "TCP", false));
    let container = pod::container(ContainerParams {
        name: COMPONENT,
        image: spec.image.clone().unwrap_or_else(|| settings.sensor_image.clone()),
        pull_policy: spec.image_pull_policy,
        args: vec!["relay".into(), "--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")],
        ports,
        env: relay_env(&external_addresses(relay)),
        mounts: vec![("config", CONFIG_DIR, true), ("identity", IDENTITY_DIR, true)],
        resources: spec.resources.clone(),
        health_port: Some("metrics"),
    });

    let volumes = vec![
        pod::volume("config", |v| {
            v.config_map =
                Some(ConfigMapVolumeSource { name: names::config_map(name), ..ConfigMapVolumeSource::default() })
        }),
        pod::volume("identity", |v| {
            v.secret = Some(SecretVolumeSource {
                secret_name: Some(identity_secret_name.to_string()),
                items: Some(vec![KeyToPath { key: IDENTITY_KEY.into(), path: IDENTITY_KEY.into(), mode: None }]),
                default_mode: Some(IDENTITY_MODE),
                optional: Some(false),
            })
        }),
    ];
    let pod_spec = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        service_account_name: Some(names::service_account(name)),
        automount_service_account_token: Some(false),
        host_network: host_network.then_some(true),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".to_string()),
        ..pod::restricted_pod_spec(&spec.placement)
    };
    let template_annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), METRICS_PORT.to_string()),
    ]);
    let deployment = Deployment {
        metadata: meta(names::deployment(name)),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() },
            // Never two pods with one identity: the old pod is gone before the new one starts.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(template_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let mut children = RelayChildren { service_account, config_map, deployment, exposure_service };
    children::stamp_hashes(&mut children)?;
    Ok(children)
}

/// The relay's external addresses as the pod will advertise them: `spec.externalAddresses` when
/// set, else `/ip4/$(HOST_IP)/tcp/<port>` and `/ip4/$(HOST_IP)/udp/<port>/quic-v1` with the host
/// ports (HostNetwork) or the node port (NodePort with `exposure.nodePort`); empty for a
/// LoadBalancer without explicit addresses. `$(HOST_IP)` is expanded by the kubelet.
pub fn external_addresses(relay: &RelayNode) -> Vec<String> {
    let spec = &relay.spec;
    if !spec.external_addresses.is_empty() {
        return spec.external_addresses.clone();
    }
    let (tcp, quic) = match (spec.exposure.kind, spec.exposure.node_port) {
        (ExposureKind::HostNetwork, _) => (spec.ports.tcp, spec.ports.quic),
        (ExposureKind::NodePort, Some(node_port)) => (node_port, spec.ports.quic.map(|_| node_port)),
        _ => return Vec::new(),
    };
    let mut addresses = vec![format!("/ip4/$(HOST_IP)/tcp/{tcp}")];
    addresses.extend(quic.map(|port| format!("/ip4/$(HOST_IP)/udp/{port}/quic-v1")));
    addresses
}

/// Environment of the relay container: the downward API for pod name, namespace and node IP,
/// and the `SENSOR_*` overrides built from them (`SENSOR_RELAY_EXTERNAL_ADDRESSES`,
/// comma-separated, when there are external addresses).
fn relay_env(external: &[String]) -> Vec<EnvVar> {
    let mut env = pod::downward_env();
    if !external.is_empty() {
        env.push(pod::env_value("SENSOR_RELAY_EXTERNAL_ADDRESSES", external.join(",")));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Exposure, RelayNodeSpec, TrafficPolicy};

    fn settings() -> BuildSettings {
        BuildSettings {
            sensor_image: "ghcr.io/p2p-sensor/sensor:test".into(),
            collector_endpoint: "http://collector.p2p-sensor-system:9000".into(),
            report_interval_ms: 10_000,
        }
    }

    fn relay(spec: serde_json::Value) -> RelayNode {
        let mut relay = RelayNode::new("edge", serde_json::from_value::<RelayNodeSpec>(spec).unwrap());
        relay.metadata.namespace = Some("lab".into());
        relay.metadata.uid = Some("uid-1".into());
        relay
    }

    fn deployment_pod(children: &RelayChildren) -> &PodSpec {
        children.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn one_replica_recreated_never_rolled() {
        let children = build(&relay(serde_json::json!({})), &settings(), "edge-identity").unwrap();
        let spec = children.deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));
        let pod = deployment_pod(&children);
        assert_eq!(pod.host_network, Some(true));
        let identity = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "identity").unwrap();
        let secret = identity.secret.as_ref().unwrap();
        assert_eq!((secret.secret_name.as_deref(), secret.default_mode), (Some("edge-identity"), Some(0o400)));
        assert!(children.exposure_service.is_none());
    }

    #[test]
    fn config_changes_roll_the_pod_and_change_hashes() {
        let before = build(&relay(serde_json::json!({})), &settings(), "edge-identity").unwrap();
        let after =
            build(&relay(serde_json::json!({"limits": {"maxCircuits": 8}})), &settings(), "edge-identity").unwrap();
        let config_hash = |c: &RelayChildren| {
            c.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
                [CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let spec_hash = |m: &ObjectMeta| m.annotations.as_ref().unwrap()[crate::labels::SPEC_HASH_ANNOTATION].clone();
        assert_ne!(config_hash(&before), config_hash(&after));
        assert_ne!(spec_hash(&before.deployment.metadata), spec_hash(&after.deployment.metadata));
        assert_ne!(spec_hash(&before.config_map.metadata), spec_hash(&after.config_map.metadata));
        assert_eq!(spec_hash(&before.service_account.metadata), spec_hash(&after.service_account.metadata));
        // The same input builds the same objects.
        assert_eq!(before, build(&relay(serde_json::json!({})), &settings(), "edge-identity").unwrap());
        // Another identity Secret changes the pod.
        let other = build(&relay(serde_json::json!({})), &settings(), "my-key").unwrap();
        assert_ne!(spec_hash(&before.deployment.metadata), spec_hash(&other.deployment.metadata));
    }

    #[test]
    fn service_exposure_keeps_pod_network_and_publishes_both_protocols() {
        let mut relay = relay(serde_json::json!({}));
        relay.spec.exposure = Exposure {
            kind: ExposureKind::NodePort,
            external_traffic_policy: TrafficPolicy::Cluster,
            node_port: Some(31001),
            annotations: None,
        };
        let children = build(&relay, &settings(), "edge-identity").unwrap();
        let pod = deployment_pod(&children);
        assert_eq!((pod.host_network, pod.dns_policy.as_deref()), (None, None));
        let ports = pod.containers[0].ports.as_ref().unwrap();
        assert!(ports.iter().all(|p| p.host_port.is_none()), "{ports:?}");
        let service = children.exposure_service.unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap(), p.node_port))
            .collect();
        assert_eq!(
            ports,
            [("tcp".into(), 4001, "TCP".into(), Some(31001)), ("quic".into(), 4001, "UDP".into(), Some(31001))]
        );
    }

    fn container_ports(children: &RelayChildren) -> Vec<(String, i32, String, Option<i32>)> {
        deployment_pod(children).containers[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port, p.protocol.clone().unwrap(), p.host_port))
            .collect()
    }

    #[test]
    fn host_network_alternates_are_host_ports_next_to_their_primaries() {
        let spec =
            serde_json::json!({"ports": {"tcp": 4001, "quic": 4001, "tcpAlternate": 4002, "quicAlternate": 4003}});
        let children = build(&relay(spec), &settings(), "edge-identity").unwrap();
        let p = |name: &str, port, protocol: &str, host| (name.to_string(), port, protocol.to_string(), host);
        assert_eq!(
            container_ports(&children),
            [
                p("tcp", 4001, "TCP", Some(4001)),
                p("quic", 4001, "UDP", Some(4001)),
                p("tcp-alt", 4002, "TCP", Some(4002)),
                p("quic-alt", 4003, "UDP", Some(4003)),
                p("metrics", 9105, "TCP", None),
            ]
        );
        assert!(children.exposure_service.is_none());
        // Port names are IANA service names (at most 15 characters).
        assert!([PORT_TCP, PORT_QUIC, PORT_TCP_ALT, PORT_QUIC_ALT].iter().all(|n| n.len() <= 15));
        // Without alternates: the primaries and metrics only.
        let plain = build(&relay(serde_json::json!({})), &settings(), "edge-identity").unwrap();
        let names: Vec<_> = container_ports(&plain).into_iter().map(|p| p.0).collect();
        assert_eq!(names, ["tcp", "quic", "metrics"]);
    }

    #[test]
    fn load_balancer_publishes_alternates_on_the_same_service() {
        let spec = serde_json::json!({
            "ports": {"tcp": 4001, "quic": 4001, "tcpAlternate": 4002, "quicAlternate": 4002},
            "exposure": {"kind": "LoadBalancer"},
        });
        let children = build(&relay(spec), &settings(), "edge-identity").unwrap();
        assert!(container_ports(&children).iter().all(|p| p.3.is_none()), "no hostPorts off the host network");
        let service = children.exposure_service.unwrap().spec.unwrap();
        assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
        let ports: Vec<_> = service
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap(), p.target_port, p.node_port))
            .collect();
        let p = |name: &str, port, protocol: &str| {
            (name.to_string(), port, protocol.to_string(), Some(IntOrString::String(name.into())), None)
        };
        assert_eq!(
            ports,
            [p("tcp", 4001, "TCP"), p("quic", 4001, "UDP"), p("tcp-alt", 4002, "TCP"), p("quic-alt", 4002, "UDP")]
        );
    }

    #[test]
    fn a_relay_never_stored_cannot_be_built() {
        let mut relay = relay(serde_json::json!({}));
        relay.metadata.uid = None;
        assert!(matches!(build(&relay, &settings(), "x"), Err(BuildError::MissingObjectKey { .. })));
    }
}
