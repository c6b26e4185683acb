//! Pure builders: a SensorFleet in, the Kubernetes objects it wants out.
//!
//! Children (names for fleet `f`): ServiceAccount `f-sensor`, ConfigMap `f-sensor-config`
//! (`sensor.toml`, plus `punch-targets` with hole punching), headless Service `f-sensors`,
//! exposure Service `f-p2p` (LoadBalancer/NodePort exposure only), and the workload `f-sensor`
//! (DaemonSet or StatefulSet). All carry the common labels, a controller owner reference and a
//! spec-hash annotation.
//!
//! With a resolved relay ([`Punch`]) every pod also runs the `punch` sidecar ([`super::punch`]);
//! with `spec.crawler` it runs the `crawl` sidecar ([`super::crawl`]); with `spec.export` secrets
//! the `sensor` container mounts them from the projected volume `export-secrets`
//! ([`super::export`]), whose Secret references are part of the pod template: changing one rolls
//! the pods, while a Secret's content is read by the sensor at start-up only.
//! The pod template's config hash covers `sensor.toml` only: a change of the targets list
//! re-applies the ConfigMap (the kubelet refreshes the mounted file) but never restarts a pod.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodSpec, PodTemplateSpec, Service,
    ServiceAccount, ServicePort, ServiceSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::crawl;
use super::export;
use super::layout::{CONFIG_DIR, CONFIG_FILE, DATA_DIR, METRICS_PORT};
use super::punch::{self, Punch, RELAY_ANNOTATION, TARGETS_KEY};
use super::sensor_config;
use crate::children::{self, Child, Children};
pub use crate::context::BuildSettings;
use crate::crd::{ExposureKind, ExternalAddressSource, SensorFleet, StorageKind, WorkloadMode};
use crate::error::BuildError;
use crate::labels::{self, CONFIG_HASH_ANNOTATION, ChildMeta, FLEET_LABEL};
use crate::pod::{self, ContainerParams};

/// `app.kubernetes.io/component` of sensor pods.
pub const COMPONENT: &str = "sensor";

/// The workload behind a fleet.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    DaemonSet(DaemonSet),
    StatefulSet(StatefulSet),
}

/// Everything a fleet wants to exist, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetChildren {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub exposure_service: Option<Service>,
    pub workload: Workload,
}

impl Workload {
    /// The DaemonSet or StatefulSet, as a [`Child`].
    pub fn as_child(&self) -> &dyn Child {
        match self {
            Workload::DaemonSet(ds) => ds,
            Workload::StatefulSet(sts) => sts,
        }
    }

    fn as_child_mut(&mut self) -> &mut dyn Child {
        match self {
            Workload::DaemonSet(ds) => ds,
            Workload::StatefulSet(sts) => sts,
        }
    }
}

impl Children for FleetChildren {
    fn each(&self) -> Vec<&dyn Child> {
        let mut each: Vec<&dyn Child> = vec![&self.service_account, &self.config_map, &self.headless_service];
        each.extend(self.exposure_service.as_ref().map(|s| s as &dyn Child));
        each.push(self.workload.as_child());
        each
    }

    fn each_mut(&mut self) -> Vec<&mut dyn Child> {
        let mut each: Vec<&mut dyn Child> =
            vec![&mut self.service_account, &mut self.config_map, &mut self.headless_service];
        each.extend(self.exposure_service.as_mut().map(|s| s as &mut dyn Child));
        each.push(self.workload.as_child_mut());
        each
    }
}

/// Child object names of fleet `name`.
pub mod names {
    pub fn service_account(fleet: &str) -> String {
        format!("{fleet}-sensor")
    }
    pub fn config_map(fleet: &str) -> String {
        format!("{fleet}-sensor-config")
    }
    pub fn headless_service(fleet: &str) -> String {
        format!("{fleet}-sensors")
    }
    pub fn exposure_service(fleet: &str) -> String {
        format!("{fleet}-p2p")
    }
    pub fn workload(fleet: &str) -> String {
        format!("{fleet}-sensor")
    }
}

/// Builds every child of `fleet`; `hole_punch` adds the hole-punch sidecar and its targets (the
/// reconciler passes it when `spec.relayRef` resolves). Errors:
/// [`BuildError::MissingObjectKey`] when the fleet has no name, namespace or uid (it was not read
/// from the API server); [`BuildError::Serialization`] if a child does not serialise. Spec
/// problems are caught by `validate` first; this function assumes a valid spec.
pub fn build(
    fleet: &SensorFleet,
    settings: &BuildSettings,
    hole_punch: Option<&Punch>,
) -> Result<FleetChildren, BuildError> {
    let child = ChildMeta::of(fleet, FLEET_LABEL, COMPONENT)?;
    let (name, namespace) = (child.owner_name.as_str(), child.namespace.as_str());
    let (labels, selector) = (&child.labels, &child.selector);
    let meta = |object_name: String| child.meta(object_name);
    let spec = &fleet.spec;
    let port = sensor_config::p2p_port(fleet);
    let host_network = spec.exposure.kind == ExposureKind::HostNetwork;

    let service_account = ServiceAccount {
        metadata: meta(names::service_account(name)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };

    let relay = hole_punch.map(|p| &p.relay);
    let toml =
        sensor_config::render(fleet, namespace, name, &settings.collector_endpoint, settings.report_interval_ms, relay);
    // Only sensor.toml rolls the pods; the targets file is refreshed in place by the kubelet.
    let config_hash = labels::short_hash(toml.as_bytes());
    let mut data = BTreeMap::from([(CONFIG_FILE.to_string(), toml)]);
    if let Some(p) = hole_punch {
        data.insert(TARGETS_KEY.to_string(), punch::render_targets(namespace, name, &p.targets));
    }
    let config_map = ConfigMap { metadata: meta(names::config_map(name)), data: Some(data), ..ConfigMap::default() };

    let p2p_service_port = |node_port: Option<i32>| ServicePort {
        name: Some("p2p".into()),
        port,
        target_port: Some(IntOrString::String("p2p".into())),
        protocol: Some("TCP".into()),
        node_port,
        ..ServicePort::default()
    };
    let metrics_service_port = |port_name: &str, port: i32| ServicePort {
        name: Some(port_name.into()),
        port,
        target_port: Some(IntOrString::String(port_name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let mut headless_ports = vec![p2p_service_port(None), metrics_service_port("metrics", METRICS_PORT)];
    if hole_punch.is_some() {
        headless_ports.push(metrics_service_port(punch::METRICS_PORT_NAME, punch::METRICS_PORT));
    }
    if spec.crawler.is_some() {
        headless_ports.push(metrics_service_port(crawl::METRICS_PORT_NAME, crawl::METRICS_PORT));
    }
    let headless_service = Service {
        metadata: meta(names::headless_service(name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector.clone()),
            publish_not_ready_addresses: Some(true),
            ports: Some(headless_ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let exposure_service = (!host_network).then(|| {
        let ports = vec![p2p_service_port(spec.exposure.node_port)];
        pod::exposure_service(meta(names::exposure_service(name)), &spec.exposure, selector, ports)
    });

    let image = spec.image.clone().unwrap_or_else(|| settings.sensor_image.clone());
    let export_volume = spec.export.as_ref().and_then(export::volume);
    let mut mounts = vec![("config", CONFIG_DIR, true), ("data", DATA_DIR, false)];
    if export_volume.is_some() {
        mounts.push((export::VOLUME, export::EXPORT_DIR, true));
    }
    let mut containers = vec![pod::container(ContainerParams {
        name: COMPONENT,
        image: image.clone(),
        pull_policy: spec.image_pull_policy,
        args: vec!["listen".into(), "--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")],
        ports: vec![("p2p", port, "TCP", host_network), ("metrics", METRICS_PORT, "TCP", false)],
        env: sensor_env(fleet, port),
        mounts,
        resources: spec.resources.clone(),
        health_port: Some("metrics"),
    })];
    if hole_punch.is_some() {
        containers.push(punch::sidecar(fleet, image.clone()));
    }
    containers.extend(crawl::sidecar(fleet, image));

    let mut volumes = vec![pod::volume("config", |v| {
        v.config_map = Some(ConfigMapVolumeSource { name: names::config_map(name), ..ConfigMapVolumeSource::default() })
    })];
    let storage = &spec.storage;
    let size = storage.size.clone().map(Quantity);
    match storage.kind {
        StorageKind::EmptyDir => volumes.push(pod::volume("data", |v| {
            v.empty_dir = Some(EmptyDirVolumeSource { size_limit: size.clone(), ..EmptyDirVolumeSource::default() })
        })),
        StorageKind::HostPath => {
            let path = storage.host_path.clone().unwrap_or_else(|| format!("/var/lib/p2p-sensor/{namespace}/{name}"));
            volumes.push(pod::volume("data", |v| {
                v.host_path = Some(HostPathVolumeSource { path, type_: Some("DirectoryOrCreate".into()) })
            }))
        }
        StorageKind::PersistentVolumeClaim => {} // volumeClaimTemplates below
    }
    volumes.extend(export_volume);

    let mut affinity = spec.placement.affinity.clone();
    if host_network && spec.mode == WorkloadMode::StatefulSet {
        // Two sensors on one node would fight over the host port: spread them, one per node.
        affinity = Some(with_one_per_node(affinity, selector));
    }
    let pod_spec = PodSpec {
        containers,
        volumes: Some(volumes),
        service_account_name: Some(names::service_account(name)),
        automount_service_account_token: Some(false),
        host_network: host_network.then_some(true),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".to_string()),
        affinity,
        ..pod::restricted_pod_spec(&spec.placement)
    };
    let mut template_annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), config_hash)]);
    template_annotations.insert("prometheus.io/scrape".into(), "true".into());
    template_annotations.insert("prometheus.io/port".into(), METRICS_PORT.to_string());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            annotations: Some(template_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec),
    };
    let label_selector = LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() };

    let mut workload = match spec.mode {
        WorkloadMode::DaemonSet => Workload::DaemonSet(DaemonSet {
            metadata: meta(names::workload(name)),
            spec: Some(DaemonSetSpec {
                selector: label_selector,
                template,
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::String("10%".into())),
                        ..RollingUpdateDaemonSet::default()
                    }),
                }),
                ..DaemonSetSpec::default()
            }),
            ..DaemonSet::default()
        }),
        WorkloadMode::StatefulSet => {
            let claims = (storage.kind == StorageKind::PersistentVolumeClaim).then(|| {
                vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("data".into()),
                        labels: Some(labels.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        storage_class_name: storage.storage_class_name.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_string(),
                                size.clone().unwrap_or_else(|| Quantity("1Gi".into())),
                            )])),
                            ..VolumeResourceRequirements::default()
                        }),
                        ..PersistentVolumeClaimSpec::default()
                    }),
                    ..PersistentVolumeClaim::default()
                }]
            });
            Workload::StatefulSet(StatefulSet {
                metadata: meta(names::workload(name)),
                spec: Some(StatefulSetSpec {
                    replicas: Some(spec.replicas.unwrap_or(1)),
                    service_name: Some(names::headless_service(name)),
                    selector: label_selector,
                    template,
                    pod_management_policy: Some("Parallel".into()),
                    volume_claim_templates: claims,
                    // Measurements outlive a scale-down or a deleted fleet; users delete PVCs.
                    persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some("Retain".into()),
                        when_scaled: Some("Retain".into()),
                    }),
                    ..StatefulSetSpec::default()
                }),
                ..StatefulSet::default()
            })
        }
    };

    if let Some(p) = hole_punch {
        let metadata = match &mut workload {
            Workload::DaemonSet(ds) => &mut ds.metadata,
            Workload::StatefulSet(sts) => &mut sts.metadata,
        };
        metadata.annotations = Some(BTreeMap::from([(RELAY_ANNOTATION.to_string(), p.relay.multiaddr.clone())]));
    }
    let mut children = FleetChildren { service_account, config_map, headless_service, exposure_service, workload };
    children::stamp_hashes(&mut children)?;
    Ok(children)
}

/// Environment of a sensor container: the downward API for pod name, namespace and node IP, and
/// the `SENSOR_*` overrides built from them. (Export settings are in `sensor.toml`, its secrets
/// are files: nothing of `spec.export` is in the environment.)
fn sensor_env(fleet: &SensorFleet, port: i32) -> Vec<EnvVar> {
    let value = pod::env_value;
    let mut env = pod::downward_env();
    if fleet.spec.external_address.source == ExternalAddressSource::HostIP {
        env.push(value("SENSOR_LISTEN_EXTERNAL_ADDRESS", format!("$(HOST_IP):{port}")));
    }
    env
}

/// Adds a required pod anti-affinity on `kubernetes.io/hostname` among the fleet's own pods.
fn with_one_per_node(affinity: Option<Affinity>, selector: &BTreeMap<String, String>) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let mut anti = affinity.pod_anti_affinity.take().unwrap_or_default();
    let mut required = anti.required_during_scheduling_ignored_during_execution.take().unwrap_or_default();
    required.push(PodAffinityTerm {
        label_selector: Some(LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() }),
        topology_key: "kubernetes.io/hostname".into(),
        ..PodAffinityTerm::default()
    });
    anti.required_during_scheduling_ignored_during_execution = Some(required);
    affinity.pod_anti_affinity = Some(anti);
    affinity
}
