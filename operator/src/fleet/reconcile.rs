//! The SensorFleet reconciler (I/O): validate → build → apply → prune → status.
//!
//! Hole punching: the RelayNode of `spec.relayRef` is read from the relay controller's cache and
//! resolved by [`punch::resolve_relay`]; the targets come from the collector's fleet aggregate.
//! Both are re-read at every reconcile, i.e. at least every status interval (the success
//! requeue), which bounds how fast a new member or a moved relay reaches the pods.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, FleetChildren, Workload, names};
use super::punch::{self, Punch, PunchRelay, RELAY_ANNOTATION, RelayProblem};
use super::status::{self, Observed, WorkloadState};
use super::validate::validate;
use crate::apply::{apply_if_changed, patch_status, prune, publish_transitions};
use crate::conditions;
use crate::context::{Context, synced};
use crate::crd::{RelayNode, SensorFleet};
use crate::error::{Error, Result};
use crate::labels::SPEC_HASH_ANNOTATION;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "sensorfleet";

/// Requeue delay while the caches the reconcilers read have not been listed.
pub const CACHE_WAIT: Duration = Duration::from_secs(1);

/// Reconciles one fleet. On success the fleet is requeued after the status interval (reports
/// change its status); an invalid spec waits for the next change instead (no hot loop).
/// Errors: [`Error::KubeApi`] and [`Error::MissingObjectKey`]; `error_policy` backs off.
pub async fn reconcile(fleet: Arc<SensorFleet>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&fleet, &ctx).await;
    let key = object_key(&fleet);
    ctx.metrics.reconciled(CONTROLLER, result.as_ref().map(|_| ()), started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Requeue delay after an error: per-object exponential backoff.
pub fn error_policy(fleet: Arc<SensorFleet>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&fleet);
    let delay = ctx.backoff.failed(&key);
    tracing::warn!(fleet = %key, error = %error, reason = error.reason(), retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

fn object_key(fleet: &SensorFleet) -> String {
    format!("{}/{}", fleet.namespace().unwrap_or_default(), fleet.name_any())
}

async fn reconcile_inner(fleet: &SensorFleet, ctx: &Context) -> Result<Action> {
    let name = fleet.metadata.name.as_deref().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = fleet.metadata.namespace.as_deref().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let key = object_key(fleet);
    let caches = &ctx.caches;
    if !caches.all_synced() {
        // Before their first list children look missing (and would be applied again) and the
        // relay too (its sidecar would be removed, restarting every pod, then come back).
        tracing::debug!(fleet = %key, "caches not synced yet; waiting");
        return Ok(Action::requeue(CACHE_WAIT));
    }
    let invalid = validate(fleet, &ctx.settings.build.sensor_image).err();
    let reports = ctx.reports.fleet(namespace, name);
    let relay = punch_relay(ctx, fleet, namespace, name);
    if let Some(reason) = &invalid {
        tracing::info!(fleet = %key, %reason, "invalid spec; children left as they are");
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
        apply_children(ctx, &children, force, keep_config_map).await?;
        prune_children(ctx, fleet, namespace, &children).await?;
        if force {
            ctx.resync.done(&key);
        }
    }

    let workload = workload_state(ctx, namespace, name);
    let relay_problem = relay.as_ref().and_then(|r| r.as_ref().err());
    let observed = Observed {
        invalid: invalid.as_deref(),
        workload,
        reports: reports.as_ref(),
        reports_pending: ctx.reports.uptime() < ctx.settings.report_warm_up,
        relay_problem,
    };
    let now = crate::collector::aggregate::status_time(ctx.now());
    let mut new_status = status::status(fleet, &observed, &now);
    crate::freshness::hold(&mut new_status, fleet.status.as_ref(), ctx.settings.status_heartbeat);
    let old_conditions = fleet.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    if fleet.status.as_ref() != Some(&new_status) {
        patch_status(&ctx.client, fleet, &new_status).await?;
        ctx.metrics.status_patched(CONTROLLER);
        let transitions = conditions::transitions(&old_conditions, &new_status.conditions);
        publish_transitions(&ctx.recorder, fleet, &transitions, &ctx.metrics).await;
    }
    ctx.metrics.set_fleet(&key, Some((fleet.spec.network, &new_status)));
    if synced(&caches.fleets) {
        // The fleet being reconciled exists even if the cache has not caught up with it yet.
        let mut live: HashSet<String> = caches.fleets.state().iter().map(|f| object_key(f)).collect();
        live.insert(key.clone());
        for gone in ctx.metrics.retain_fleets(|k| live.contains(k)) {
            tracing::info!(fleet = %gone, "fleet deleted: removed from the fleet metrics");
        }
    }
    Ok(if invalid.is_some() { Action::await_change() } else { Action::requeue(ctx.settings.status_interval) })
}

/// Applies the children that changed (all with `force`), except the ConfigMap with
/// `keep_config_map`.
async fn apply_children(ctx: &Context, children: &FleetChildren, force: bool, keep_config_map: bool) -> Result<()> {
    let (client, caches, metrics) = (&ctx.client, &ctx.caches, ctx.metrics.as_ref());
    apply_if_changed(client, &caches.service_accounts, &children.service_account, force, metrics).await?;
    if !keep_config_map {
        apply_if_changed(client, &caches.config_maps, &children.config_map, force, metrics).await?;
    }
    apply_if_changed(client, &caches.services, &children.headless_service, force, metrics).await?;
    if let Some(service) = &children.exposure_service {
        apply_if_changed(client, &caches.services, service, force, metrics).await?;
    }
    match &children.workload {
        Workload::DaemonSet(ds) => apply_if_changed(client, &caches.daemon_sets, ds, force, metrics).await?,
        Workload::StatefulSet(sts) => apply_if_changed(client, &caches.stateful_sets, sts, force, metrics).await?,
    };
    Ok(())
}

/// Deletes Services and workloads of this fleet that the spec no longer wants (exposure turned
/// off, DaemonSet ↔ StatefulSet switch). The ServiceAccount and ConfigMap never change name.
async fn prune_children(ctx: &Context, fleet: &SensorFleet, namespace: &str, children: &FleetChildren) -> Result<()> {
    let uid = fleet.metadata.uid.as_deref().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let (client, caches, metrics) = (&ctx.client, &ctx.caches, ctx.metrics.as_ref());
    let mut services = vec![children.headless_service.name_any()];
    services.extend(children.exposure_service.as_ref().map(|s| s.name_any()));
    prune::<Service>(client, &caches.services, namespace, uid, &services, metrics).await?;
    let (keep_ds, keep_sts) = match &children.workload {
        Workload::DaemonSet(ds) => (vec![ds.name_any()], vec![]),
        Workload::StatefulSet(sts) => (vec![], vec![sts.name_any()]),
    };
    prune::<DaemonSet>(client, &caches.daemon_sets, namespace, uid, &keep_ds, metrics).await?;
    prune::<StatefulSet>(client, &caches.stateful_sets, namespace, uid, &keep_sts, metrics).await?;
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
