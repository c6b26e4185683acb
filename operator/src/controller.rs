//! What both reconcilers share around their steps: the object's keys (resolve), timing and
//! metrics of each reconciliation, the per-object backoff of `error_policy`, and the status
//! step (one patch when the status changed, then an Event per condition transition).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply::{patch_status, publish_transitions};
use crate::conditions;
use crate::context::Context;
use crate::error::{ObjectName, ReconcileError, ResolveError, StatusError};

/// Requeue delay while the caches the reconcilers read have not been listed.
pub const CACHE_WAIT: Duration = Duration::from_secs(1);

/// `namespace/name` of `object`: the key of its backoff, resync and metrics state.
pub fn object_key<K: Resource>(object: &K) -> String {
    format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

/// `object`'s `(name, namespace)`. Errors: [`ResolveError::MissingObjectKey`] when it has
/// neither (it was not read from the API server).
pub fn name_and_namespace<K: Resource<DynamicType = ()>>(object: &K) -> Result<(&str, &str), ResolveError> {
    let meta = object.meta();
    let name = meta.name.as_deref().ok_or_else(|| missing_key(object, "metadata.name"))?;
    let namespace = meta.namespace.as_deref().ok_or_else(|| missing_key(object, "metadata.namespace"))?;
    Ok((name, namespace))
}

/// `object`'s uid. Errors: [`ResolveError::MissingObjectKey`].
pub fn uid<K: Resource<DynamicType = ()>>(object: &K) -> Result<&str, ResolveError> {
    object.meta().uid.as_deref().ok_or_else(|| missing_key(object, "metadata.uid"))
}

fn missing_key<K: Resource<DynamicType = ()>>(object: &K, key: &'static str) -> ResolveError {
    ResolveError::MissingObjectKey { object: ObjectName::of(object), key }
}

/// Runs one reconciliation of `object` (`run`), records its duration and result for
/// `controller` in the metrics, and forgets the object's backoff when it succeeded. Returns
/// `run`'s result.
pub async fn reconciled<K: Resource>(
    controller: &'static str,
    object: &K,
    ctx: &Context,
    run: impl Future<Output = Result<Action, ReconcileError>>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = run.await;
    ctx.metrics.reconciled(controller, result.as_ref().map(|_| ()), started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&object_key(object));
    }
    result
}

/// Requeue delay after `error`: per-object exponential backoff ([`crate::backoff::Backoff`]),
/// logged with the error's `reason` and failed `step`.
pub fn error_policy<K: Resource>(
    controller: &'static str,
    object: &K,
    error: &ReconcileError,
    ctx: &Context,
) -> Action {
    let key = object_key(object);
    let delay = ctx.backoff.failed(&key);
    tracing::warn!(
        controller,
        object = %key,
        error = %error,
        reason = error.reason(),
        step = error.step(),
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// The status step: patches `object`'s status to `new` unless it already is `new` (then writes
/// nothing), counts the patch for `controller` and publishes an Event per condition transition
/// (`conditions_of` reads them from a status). Errors: [`StatusError::KubeApi`].
pub async fn write_status<K, S>(
    ctx: &Context,
    controller: &'static str,
    object: &K,
    old: Option<&S>,
    new: &S,
    conditions_of: impl Fn(&S) -> &[Condition],
) -> Result<(), StatusError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(());
    }
    patch_status(&ctx.client, object, new).await?;
    ctx.metrics.status_patched(controller);
    let old_conditions = old.map(&conditions_of).unwrap_or_default();
    let transitions = conditions::transitions(old_conditions, conditions_of(new));
    publish_transitions(&ctx.recorder, object, &transitions, &ctx.metrics).await;
    Ok(())
}
