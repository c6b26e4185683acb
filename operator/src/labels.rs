//! Labels, annotations and owner references every child object carries.
//!
//! Children are found again by label (watches and pruning select on
//! `app.kubernetes.io/managed-by=p2p-sensor-operator`), and belong to their custom resource by a
//! controller owner reference, so Kubernetes garbage-collects them with it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::error::{BuildError, ObjectName};

/// The one server-side-apply field manager of the operator.
pub const FIELD_MANAGER: &str = "p2p-sensor-operator";
/// `app.kubernetes.io/managed-by` value of every child.
pub const MANAGED_BY: &str = "p2p-sensor-operator";
/// Label naming the owning SensorFleet.
pub const FLEET_LABEL: &str = "p2psensor.dev/fleet";
/// Label naming the owning RelayNode.
pub const RELAY_LABEL: &str = "p2psensor.dev/relay";
/// Annotation holding the hash of the child as last applied; an unchanged hash skips the apply.
pub const SPEC_HASH_ANNOTATION: &str = "p2psensor.dev/spec-hash";
/// Pod-template annotation holding the hash of the rendered configuration (rolls pods on change).
pub const CONFIG_HASH_ANNOTATION: &str = "p2psensor.dev/config-hash";
/// Label selector of everything the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=p2p-sensor-operator";

/// Labels that select the pods of one component of one owner (stable: they end up in immutable
/// workload selectors).
pub fn selector_labels(owner_label: &str, owner_name: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), owner_name.to_string()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
        (owner_label.to_string(), owner_name.to_string()),
    ])
}

/// The selector labels plus name, part-of, managed-by and version.
pub fn common_labels(owner_label: &str, owner_name: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(owner_label, owner_name, component);
    labels.insert("app.kubernetes.io/name".into(), component.into());
    labels.insert("app.kubernetes.io/part-of".into(), "p2p-sensor-operator".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels.insert("app.kubernetes.io/version".into(), env!("CARGO_PKG_VERSION").into());
    labels
}

/// A controller owner reference to `owner`. Errors:
/// [`BuildError::MissingObjectKey`] when the owner has no uid or name (it was never stored).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference, BuildError> {
    owner.controller_owner_ref(&()).ok_or_else(|| missing_key(owner, "metadata.uid"))
}

/// [`BuildError::MissingObjectKey`] for `owner`'s `key`.
pub fn missing_key<K: Resource<DynamicType = ()>>(owner: &K, key: &'static str) -> BuildError {
    BuildError::MissingObjectKey { object: ObjectName::of(owner), key }
}

/// What every child of one owner shares: its owner's name and namespace, the common and selector
/// labels, and the controller owner reference.
pub struct ChildMeta {
    pub owner_name: String,
    pub namespace: String,
    /// [`common_labels`] of the owner and component.
    pub labels: BTreeMap<String, String>,
    /// [`selector_labels`] of the owner and component.
    pub selector: BTreeMap<String, String>,
    owner: OwnerReference,
}

impl ChildMeta {
    /// For the children of `owner` labelled `owner_label=<name>` and `component`. Errors:
    /// [`BuildError::MissingObjectKey`] when the owner has no name, namespace or uid (it was not
    /// read from the API server).
    pub fn of<K: Resource<DynamicType = ()>>(
        owner: &K,
        owner_label: &str,
        component: &str,
    ) -> Result<Self, BuildError> {
        let meta = owner.meta();
        let owner_name = meta.name.clone().ok_or_else(|| missing_key(owner, "metadata.name"))?;
        let namespace = meta.namespace.clone().ok_or_else(|| missing_key(owner, "metadata.namespace"))?;
        Ok(Self {
            labels: common_labels(owner_label, &owner_name, component),
            selector: selector_labels(owner_label, &owner_name, component),
            owner: controller_ref(owner)?,
            owner_name,
            namespace,
        })
    }

    /// Metadata of the child `name`: namespace, common labels, controller owner reference.
    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Sets [`SPEC_HASH_ANNOTATION`] on `object` to the hash of its own serialised form (taken before
/// the annotation is added). Errors: [`BuildError::Serialization`].
pub fn stamp_spec_hash<K: Resource<DynamicType = ()> + serde::Serialize>(object: &mut K) -> Result<(), BuildError> {
    let hash = short_hash(
        &serde_json::to_vec(object)
            .map_err(|source| BuildError::Serialization { child: ObjectName::of(object), source })?,
    );
    object.meta_mut().annotations.get_or_insert_with(BTreeMap::new).insert(SPEC_HASH_ANNOTATION.into(), hash);
    Ok(())
}

/// First 16 hex digits of SHA-256 over `bytes`: stable across builds and platforms.
pub fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}
