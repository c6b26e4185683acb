//! The SensorFleet reconciler (I/O): validate → build → apply → prune → status.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, FleetChildren, Workload, names};
use super::status::{self, Observed, WorkloadState};
use super::validate::validate;
use crate::apply::{apply_if_changed, patch_status, prune, publish_transitions};
use crate::conditions;
use crate::context::Context;
use crate::crd::{RelayNode, SensorFleet};
use crate::error::{Error, Result};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "sensorfleet";

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
    let invalid = validate(fleet, &ctx.settings.build.sensor_image).err();
    if let Some(reason) = &invalid {
        tracing::info!(fleet = %key, %reason, "invalid spec; children left as they are");
    } else {
        let children = build::build(fleet, &ctx.settings.build)?;
        let force = ctx.resync.due(&key, ctx.settings.resync_interval);
        apply_children(ctx, &children, force).await?;
        prune_children(ctx, fleet, namespace, &children).await?;
        if force {
            ctx.resync.done(&key);
        }
    }

    let workload = workload_state(ctx, namespace, name);
    let reports = ctx.reports.fleet(namespace, name);
    let missing_relay = fleet
        .spec
        .relay_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .filter(|relay| ctx.caches.relays.get(&ObjectRef::<RelayNode>::new(relay).within(namespace)).is_none());
    let observed = Observed { invalid: invalid.as_deref(), workload, reports: reports.as_ref(), missing_relay };
    let now = Time(ctx.now());
    let new_status = status::status(fleet, &observed, &now);
    let old_conditions = fleet.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    if fleet.status.as_ref() != Some(&new_status) {
        patch_status(&ctx.client, fleet, &new_status).await?;
        ctx.metrics.status_patched(CONTROLLER);
        let transitions = conditions::transitions(&old_conditions, &new_status.conditions);
        publish_transitions(&ctx.recorder, fleet, &transitions, &ctx.metrics).await;
    }
    ctx.metrics.set_fleet(&key, Some(&new_status));
    Ok(if invalid.is_some() { Action::await_change() } else { Action::requeue(ctx.settings.status_interval) })
}

async fn apply_children(ctx: &Context, children: &FleetChildren, force: bool) -> Result<()> {
    let (client, caches, metrics) = (&ctx.client, &ctx.caches, ctx.metrics.as_ref());
    apply_if_changed(client, &caches.service_accounts, &children.service_account, force, metrics).await?;
    apply_if_changed(client, &caches.config_maps, &children.config_map, force, metrics).await?;
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
