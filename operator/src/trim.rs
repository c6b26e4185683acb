//! What the caches keep of each watched object. Reconciliation reads names, labels, owner
//! references, the spec-hash annotation, workload status and the primaries' spec and status;
//! everything else (managedFields, `kubectl apply`'s last-applied copy, pod templates, ConfigMap
//! data) is dropped before an object enters a cache. With 1,000 fleets this
//! halves the operator's memory (see the `fleet_load` benchmark in the README).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret, Service, ServiceAccount};
use kube::Resource;

use crate::crd::{RelayNode, SensorFleet};

/// Drops what the reconcilers never read from a cached object.
pub trait Trim {
    fn trim(&mut self);
}

fn trim_meta<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

impl Trim for StatefulSet {
    fn trim(&mut self) {
        trim_meta(self);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = PodTemplateSpec::default();
            spec.volume_claim_templates = None;
        }
    }
}

impl Trim for DaemonSet {
    fn trim(&mut self) {
        trim_meta(self);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = PodTemplateSpec::default();
        }
    }
}

impl Trim for Deployment {
    fn trim(&mut self) {
        trim_meta(self);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = PodTemplateSpec::default();
        }
    }
}

impl Trim for ConfigMap {
    fn trim(&mut self) {
        trim_meta(self);
        self.data = None;
        self.binary_data = None;
    }
}

impl Trim for Service {
    fn trim(&mut self) {
        trim_meta(self);
        self.spec = None;
        self.status = None;
    }
}

impl Trim for ServiceAccount {
    fn trim(&mut self) {
        trim_meta(self);
    }
}

/// The primary resources keep spec and status (the status heartbeat compares with the cached
/// status); only the field-manager bookkeeping and `kubectl apply`'s copy of the spec go.
impl Trim for SensorFleet {
    fn trim(&mut self) {
        trim_meta(self);
    }
}

impl Trim for RelayNode {
    fn trim(&mut self) {
        trim_meta(self);
    }
}

/// Secrets keep their data: the relay's identity key is read from the cache.
impl Trim for Secret {
    fn trim(&mut self) {
        trim_meta(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn trimming_keeps_what_reconciliation_reads() {
        let mut sts = StatefulSet::default();
        sts.metadata.name = Some("f-sensor".into());
        sts.metadata.annotations = Some([("p2psensor.dev/spec-hash".to_string(), "abc".to_string())].into());
        sts.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        let template = PodTemplateSpec { metadata: Some(Default::default()), ..PodTemplateSpec::default() };
        sts.spec = Some(StatefulSetSpec { replicas: Some(3), template, ..StatefulSetSpec::default() });
        sts.trim();
        assert_eq!(sts.metadata.managed_fields, None);
        assert_eq!(sts.metadata.annotations.as_ref().unwrap()["p2psensor.dev/spec-hash"], "abc");
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.template, PodTemplateSpec::default());
    }

    #[test]
    fn a_trimmed_fleet_keeps_spec_and_status() {
        let mut fleet: SensorFleet = serde_json::from_value(serde_json::json!({
            "apiVersion": "p2psensor.dev/v1alpha1", "kind": "SensorFleet",
            "metadata": {"name": "f"}, "spec": {"network": "mainnet", "mode": "StatefulSet", "replicas": 7}
        }))
        .unwrap();
        fleet.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        fleet.metadata.annotations = Some(
            [
                ("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string()),
                ("team".to_string(), "measurement".to_string()),
            ]
            .into(),
        );
        fleet.status = Some(Default::default());
        fleet.trim();
        assert_eq!(fleet.metadata.managed_fields, None);
        assert_eq!(fleet.metadata.annotations, Some([("team".to_string(), "measurement".to_string())].into()));
        assert_eq!(fleet.spec.replicas, Some(7));
        assert!(fleet.status.is_some());
    }
}
