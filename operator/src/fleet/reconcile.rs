//! The SensorFleet reconciler (I/O): validate → build → apply → prune → status.
//!
//! Hole punching: the RelayNode of `spec.relayRef` is read from the relay controller's cache and
//! resolved by [`punch::resolve_relay`]; the targets come from the collector's fleet aggregate.
//! Both are re-read at every reconcile, i.e. at least every status interval (the success
//! requeue), which bounds how fast a new member or a moved relay reaches the pods.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::Resource as _;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, FleetChildren, Workload, names};
use super::punch::{self, Punch, PunchRelay, RELAY_ANNOTATION, RelayProblem};
use super::status::{self, Observed, WorkloadState};
use super::validate::validate;
use crate::children::{self, Children};
use crate::context::{Context, synced};
pub use crate::controller::CACHE_WAIT;
use crate::controller::{self, object_key};
use crate::crd::{RelayNode, SensorFleet, SensorFleetStatus};
use crate::error::{ApplyError, ObjectName, ReconcileError, ValidateError};
use crate::labels::SPEC_HASH_ANNOTATION;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "sensorfleet";

/// Reconciles one fleet. On success the fleet is requeued after the status interval (reports
/// change its status); an invalid spec is `Stalled` and waits for the next change instead (no
/// hot loop). Errors: [`crate::error::ResolveError`], [`crate::error::BuildError`],
/// [`ApplyError`] and [`crate::error::StatusError`] in a [`ReconcileError`]; `error_policy`
/// backs off.
pub async fn reconcile(fleet: Arc<SensorFleet>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    controller::reconciled(CONTROLLER, fleet.as_ref(), &ctx, reconcile_inner(&fleet, &ctx)).await
}

/// Requeue delay after an error: per-object exponential backoff.
pub fn error_policy(fleet: Arc<SensorFleet>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    controller::error_policy(CONTROLLER, fleet.as_ref(), error, &ctx)
}

async fn reconcile_inner(fleet: &SensorFleet, ctx: &Context) -> Result<Action, ReconcileError> {
    let (name, namespace) = controller::name_and_namespace(fleet)?;
    let key = object_key(fleet);
    let caches = &ctx.caches;
    if !caches.all_synced() {
        // Before their first list children look missing (and would be applied again) and the
        // relay too (its sidecar would be removed, restarting every pod, then come back).
        tracing::debug!(fleet = %key, "caches not synced yet; waiting");
        return Ok(Action::requeue(CACHE_WAIT));
    }
    let invalid = validate(fleet, &ctx.settings.build.sensor_image)
        .err()
        .map(|message| ValidateError::invalid_spec(ObjectName::of(fleet), message));
    let reports = ctx.reports.fleet(namespace, name);
    let relay = punch_relay(ctx, fleet, namespace, name);
    if let Some(ValidateError::InvalidSpec { field, message, .. }) = &invalid {
        tracing::info!(fleet = %key, %field, reason = %message, "invalid spec; children left as they are");
    } else {
        let punch = match &relay {
            Some(Ok(relay)) => Some(Punch {
                relay: relay.clone(),
                targets: reports.as_ref().map(|r| r.punch_targets.clone()).unwrap_or_default(),
            }),
            _ => None,
        };
        let children = build::build(fleet, &ctx.settings.build, punch.as_ref())?;
        let force = ctx.resync.due(&key, ctx.settings.resync_interval);
        // After an operator restart the collector knows no punch client until they report again
        // (one report interval): rather than emptying the pods' targets meanwhile, the ConfigMap
        // is left as it is while sensor.toml is unchanged.
        let keep_config_map = punch.is_some()
            && reports.as_ref().is_none_or(|r| r.punch_senders == 0)
            && config_unchanged(ctx, &children);
        let owner = ObjectName::of(fleet);
        apply_children(ctx, &owner, &children, force, keep_config_map).await?;
        prune_children(ctx, fleet, &owner, &children).await?;
        if force {
            ctx.resync.done(&key);
        }
    }

    let workload = workload_state(ctx, namespace, name);
    let relay_problem = relay.as_ref().and_then(|r| r.as_ref().err());
    let observed = Observed {
        invalid: invalid.as_ref().map(ValidateError::message),
        workload,
        reports: reports.as_ref(),
        reports_pending: ctx.reports.uptime() < ctx.settings.report_warm_up,
        relay_problem,
    };
    let now = crate::collector::aggregate::status_time(ctx.now());
    let mut new_status = status::status(fleet, &observed, &now);
    crate::freshness::hold(&mut new_status, fleet.status.as_ref(), ctx.settings.status_heartbeat);
    controller::write_status(ctx, CONTROLLER, fleet, fleet.status.as_ref(), &new_status, conditions).await?;
    ctx.metrics.set_fleet(&key, Some((fleet.spec.network, &new_status)));
    if synced(&caches.fleets) {
        // The fleet being reconciled exists even if the cache has not caught up with it yet.
        let mut live: HashSet<String> = caches.fleets.state().iter().map(|f| object_key(f.as_ref())).collect();
        live.insert(key.clone());
        for gone in ctx.metrics.retain_fleets(|k| live.contains(k)) {
            tracing::info!(fleet = %gone, "fleet deleted: removed from the fleet metrics");
        }
    }
    Ok(if invalid.is_some() { Action::await_change() } else { Action::requeue(ctx.settings.status_interval) })
}

fn conditions(status: &SensorFleetStatus) -> &[Condition] {
    &status.conditions
}

/// Applies the children that changed (all with `force`), except the ConfigMap with
/// `keep_config_map`.
async fn apply_children(
    ctx: &Context,
    owner: &ObjectName,
    children: &FleetChildren,
    force: bool,
    keep_config_map: bool,
) -> Result<(), ApplyError> {
    let mut wanted = children.each();
    wanted.retain(|c| !(keep_config_map && c.kind() == ConfigMap::KIND));
    children::apply_all(ctx, owner, wanted, force).await
}

/// Deletes Services and workloads of this fleet that the spec no longer wants (exposure turned
/// off, DaemonSet ↔ StatefulSet switch). The ServiceAccount and ConfigMap never change name.
async fn prune_children(
    ctx: &Context,
    fleet: &SensorFleet,
    owner: &ObjectName,
    children: &FleetChildren,
) -> Result<(), ReconcileError> {
    let uid = controller::uid(fleet)?;
    children::prune::<Service>(ctx, owner, uid, children).await?;
    children::prune::<DaemonSet>(ctx, owner, uid, children).await?;
    children::prune::<StatefulSet>(ctx, owner, uid, children).await?;
    Ok(())
}

/// True when the ConfigMap exists and the cached workload carries the desired spec hash: then the
/// ConfigMap holds the desired `sensor.toml` (the pod template's config hash covers it, and the
/// ConfigMap is applied before the workload), and only its targets may differ.
fn config_unchanged(ctx: &Context, children: &FleetChildren) -> bool {
    if ctx.caches.config_maps.get(&ObjectRef::from_obj(&children.config_map)).is_none() {
        return false;
    }
    let (cached, wanted) = match &children.workload {
        Workload::DaemonSet(ds) => {
            let cached = ctx.caches.daemon_sets.get(&ObjectRef::from_obj(ds));
            (cached.and_then(|c| c.annotations().get(SPEC_HASH_ANNOTATION).cloned()), ds.annotations())
        }
        Workload::StatefulSet(sts) => {
            let cached = ctx.caches.stateful_sets.get(&ObjectRef::from_obj(sts));
            (cached.and_then(|c| c.annotations().get(SPEC_HASH_ANNOTATION).cloned()), sts.annotations())
        }
    };
    cached.is_some() && cached.as_ref() == wanted.get(SPEC_HASH_ANNOTATION)
}

/// The relay of the fleet's `punch` sidecars, or why there is none; `None` without
/// `spec.relayRef`.
fn punch_relay(
    ctx: &Context,
    fleet: &SensorFleet,
    namespace: &str,
    name: &str,
) -> Option<Result<PunchRelay, RelayProblem>> {
    let relay_name = fleet.spec.relay_ref.as_ref()?.name.as_str();
    let relay = ctx.caches.relays.get(&ObjectRef::<RelayNode>::new(relay_name).within(namespace));
    let workload = names::workload(name);
    let applied = ctx
        .caches
        .stateful_sets
        .get(&ObjectRef::<StatefulSet>::new(&workload).within(namespace))
        .and_then(|sts| sts.annotations().get(RELAY_ANNOTATION).cloned())
        .or_else(|| {
            let ds = ctx.caches.daemon_sets.get(&ObjectRef::<DaemonSet>::new(&workload).within(namespace))?;
            ds.annotations().get(RELAY_ANNOTATION).cloned()
        });
    Some(punch::resolve_relay(relay_name, relay.as_deref(), applied.as_deref()))
}

/// The fleet's workload as last seen by the caches (either kind; `None` before it exists).
fn workload_state(ctx: &Context, namespace: &str, name: &str) -> Option<WorkloadState> {
    let workload = names::workload(name);
    if let Some(sts) = ctx.caches.stateful_sets.get(&ObjectRef::<StatefulSet>::new(&workload).within(namespace)) {
        return Some(status::stateful_set_state(&sts));
    }
    ctx.caches
        .daemon_sets
        .get(&ObjectRef::<DaemonSet>::new(&workload).within(namespace))
        .map(|ds| status::daemon_set_state(&ds))
}
