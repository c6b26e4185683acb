//! Pod-template pieces both controllers share: a PodSecurity "restricted" container and pod spec,
//! volumes, probes, and the exposure Service.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{Exposure, ExposureKind, Placement, PullPolicy, TrafficPolicy};

/// UID/GID pods run as (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = 65532;

/// Inputs of [`container`].
pub struct ContainerParams<'a> {
    pub name: &'a str,
    pub image: String,
    pub pull_policy: Option<PullPolicy>,
    pub args: Vec<String>,
    /// `(name, port, protocol, host_port)`: `host_port` publishes the same port on the node.
    pub ports: Vec<(&'a str, i32, &'a str, bool)>,
    pub env: Vec<EnvVar>,
    /// `(volume name, mount path, read only)`.
    pub mounts: Vec<(&'a str, &'a str, bool)>,
    pub resources: Option<ResourceRequirements>,
    /// Name of the container port serving `/healthz` (liveness) and `/readyz` (readiness), if any.
    pub health_port: Option<&'a str>,
}

/// A container with the restricted security context: non-root, no privilege escalation, every
/// capability dropped, read-only root filesystem, RuntimeDefault seccomp.
pub fn container(p: ContainerParams<'_>) -> Container {
    let probe = |port: &str, path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: p.name.into(),
        image: Some(p.image),
        image_pull_policy: p.pull_policy.map(|pp| pp.as_str().to_string()),
        args: Some(p.args),
        ports: Some(
            p.ports
                .into_iter()
                .map(|(name, port, protocol, host)| ContainerPort {
                    name: Some(name.into()),
                    container_port: port,
                    host_port: host.then_some(port),
                    protocol: Some(protocol.into()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        env: Some(p.env),
        volume_mounts: Some(
            p.mounts
                .into_iter()
                .map(|(name, path, read_only)| VolumeMount {
                    name: name.into(),
                    mount_path: path.into(),
                    read_only: read_only.then_some(true),
                    ..VolumeMount::default()
                })
                .collect(),
        ),
        resources: p.resources,
        liveness_probe: p.health_port.map(|port| probe(port, "/healthz", 20)),
        readiness_probe: p.health_port.map(|port| probe(port, "/readyz", 10)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// A pod spec with the restricted pod security context and `placement` applied (containers,
/// volumes and networking are the caller's).
pub fn restricted_pod_spec(placement: &Placement) -> PodSpec {
    PodSpec {
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
            ..PodSecurityContext::default()
        }),
        node_selector: (!placement.node_selector.is_empty()).then(|| placement.node_selector.clone()),
        tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
        topology_spread_constraints: (!placement.topology_spread_constraints.is_empty())
            .then(|| placement.topology_spread_constraints.clone()),
        affinity: placement.affinity.clone(),
        priority_class_name: placement.priority_class_name.clone(),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    }
}

/// A volume named `name`, its source set by `set`.
pub fn volume(name: &str, set: impl FnOnce(&mut Volume)) -> Volume {
    let mut volume = Volume { name: name.into(), ..Volume::default() };
    set(&mut volume);
    volume
}

/// An environment variable with a literal value (`$(VAR)` references are expanded by the kubelet).
pub fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

/// What every sensor and relay container gets: `POD_NAME`, `POD_NAMESPACE` and `HOST_IP` from the
/// downward API, and the pod name as `SENSOR_SENSOR_ID` and `SENSOR_REPORT_SENDER`.
pub fn downward_env() -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("HOST_IP", "status.hostIP"),
        env_value("SENSOR_SENSOR_ID", "$(POD_NAME)"),
        env_value("SENSOR_REPORT_SENDER", "$(POD_NAME)"),
    ]
}

/// The LoadBalancer or NodePort Service of `exposure` (`exposure.kind` HostNetwork gives a
/// LoadBalancer: callers build none for it): `metadata` plus the exposure's annotations, the pods
/// of `selector`, the exposure's `externalTrafficPolicy`, and `ports`.
pub fn exposure_service(
    mut metadata: ObjectMeta,
    exposure: &Exposure,
    selector: &BTreeMap<String, String>,
    ports: Vec<ServicePort>,
) -> Service {
    metadata.annotations = exposure.annotations.clone();
    let kind = match exposure.kind {
        ExposureKind::NodePort => "NodePort",
        _ => "LoadBalancer",
    };
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(kind.into()),
            selector: Some(selector.clone()),
            external_traffic_policy: Some(traffic_policy(exposure.external_traffic_policy).into()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `externalTrafficPolicy` string.
pub fn traffic_policy(policy: TrafficPolicy) -> &'static str {
    match policy {
        TrafficPolicy::Local => "Local",
        TrafficPolicy::Cluster => "Cluster",
    }
}
