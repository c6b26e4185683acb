//! Thin I/O: server-side apply of children whose spec hash changed, pruning of children the spec
//! no longer wants, status patches and Events.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::error::{ApplyError, ChildAction, ObjectName, StatusError};
use crate::labels::{FIELD_MANAGER, SPEC_HASH_ANNOTATION};
use crate::metrics::Metrics;

/// Applies `desired` (server-side apply, field manager [`FIELD_MANAGER`], forced) unless the
/// cached object carries the same spec hash and `force` is false. Returns whether it applied.
/// Errors: [`ApplyError::KubeApi`] naming `owner` and the child.
pub async fn apply_if_changed<K>(
    client: &Client,
    cache: &Store<K>,
    desired: &K,
    force: bool,
    metrics: &Metrics,
    owner: &ObjectName,
) -> Result<bool, ApplyError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + Debug,
    K: k8s_openapi::Resource,
{
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    if !force {
        let key = ObjectRef::<K>::new(&name).within(&namespace);
        let wanted = desired.annotations().get(SPEC_HASH_ANNOTATION);
        if let Some(cached) = cache.get(&key)
            && cached.annotations().get(SPEC_HASH_ANNOTATION) == wanted
        {
            return Ok(false);
        }
    }
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(desired)).await.map_err(|source| {
        ApplyError::KubeApi {
            object: owner.clone(),
            child: ObjectName::new::<K>(&namespace, &name),
            action: ChildAction::Apply,
            source: Box::new(source),
        }
    })?;
    metrics.applied(<K as k8s_openapi::Resource>::KIND);
    Ok(true)
}

/// Deletes every cached `K` in `owner`'s namespace that is controlled by `owner_uid` and whose
/// name is not in `keep`. Returns the deleted names. A child already gone (404) counts as
/// deleted. Errors: [`ApplyError::KubeApi`] naming `owner` and the child.
pub async fn prune<K>(
    client: &Client,
    cache: &Store<K>,
    owner: &ObjectName,
    owner_uid: &str,
    keep: &[String],
    metrics: &Metrics,
) -> Result<Vec<String>, ApplyError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K: k8s_openapi::Resource,
{
    let mut doomed: Vec<String> = cache
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(&*owner.namespace))
        .filter(|o| o.owner_references().iter().any(|r| r.controller == Some(true) && r.uid == owner_uid))
        .map(|o| o.name_any())
        .filter(|name| !keep.contains(name))
        .collect();
    doomed.sort();
    let namespace: &str = &owner.namespace;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    for name in &doomed {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => metrics.deleted(<K as k8s_openapi::Resource>::KIND),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::KubeApi {
                    object: owner.clone(),
                    child: ObjectName::new::<K>(namespace, name),
                    action: ChildAction::Delete,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(doomed)
}

/// Writes `status` into `K`'s status subresource by server-side apply (one field manager, so
/// the operator owns the whole status). Errors: [`StatusError::KubeApi`].
pub async fn patch_status<K, S>(client: &Client, object: &K, status: &S) -> Result<(), StatusError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await
        .map_err(|source| StatusError::KubeApi { object: ObjectName::of(object), source: Box::new(source) })?;
    Ok(())
}

/// Creates `object` unless it exists; returns the stored object either way (never overwrites).
/// Errors: the API request's (the caller knows what the object was for).
pub async fn create_if_absent<K>(client: &Client, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() }, object).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => api.get(&object.name_any()).await,
        Err(e) => Err(e),
    }
}

/// Publishes one Event per condition transition (see [`crate::conditions::transitions`]):
/// `Warning` for an abnormal state (`Stalled`/`Degraded` True, `Ready` False), `Normal` otherwise. Failures are logged and counted, never
/// returned: an Event is a courtesy, the status is the record.
pub async fn publish_transitions<K>(recorder: &Recorder, object: &K, transitions: &[&Condition], metrics: &Metrics)
where
    K: Resource<DynamicType = ()>,
{
    let reference = object.object_ref(&());
    for condition in transitions {
        let bad = crate::conditions::is_abnormal(condition);
        let note = if condition.message.is_empty() {
            format!("{} is {}", condition.type_, condition.status)
        } else {
            format!("{} is {}: {}", condition.type_, condition.status, condition.message)
        };
        let event = Event {
            type_: if bad { EventType::Warning } else { EventType::Normal },
            reason: condition.reason.clone(),
            note: Some(note.chars().take(1024).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            metrics.event_failed();
            tracing::warn!(error = %e, reason = %condition.reason, "could not publish event");
        }
    }
}
