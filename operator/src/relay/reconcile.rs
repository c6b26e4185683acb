//! The RelayNode reconciler (I/O): validate → identity → build → apply → prune → status.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, RelayChildren, names};
use super::identity;
use super::status::{self, Observed};
use super::validate::validate;
use crate::apply::{apply_if_changed, patch_status, prune, publish_transitions};
use crate::conditions;
use crate::context::Context;
use crate::crd::RelayNode;
use crate::error::{Error, Result};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "relaynode";

/// Reconciles one relay. On success the relay is requeued after the status interval (reports
/// change its status). An invalid spec waits for the next change (no hot loop). An unusable
/// identity Secret (missing, bad key) is `Stalled` too, not an error; it is re-read at the status
/// interval because a user's Secret is not watched.
/// Errors: [`Error::KubeApi`] and [`Error::MissingObjectKey`]; `error_policy` backs off.
pub async fn reconcile(relay: Arc<RelayNode>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&relay, &ctx).await;
    let key = object_key(&relay);
    ctx.metrics.reconciled(CONTROLLER, result.as_ref().map(|_| ()), started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Requeue delay after an error: per-object exponential backoff.
pub fn error_policy(relay: Arc<RelayNode>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&relay);
    let delay = ctx.backoff.failed(&key);
    tracing::warn!(relay = %key, error = %error, reason = error.reason(), retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

fn object_key(relay: &RelayNode) -> String {
    format!("{}/{}", relay.namespace().unwrap_or_default(), relay.name_any())
}

async fn reconcile_inner(relay: &RelayNode, ctx: &Context) -> Result<Action> {
    let name = relay.metadata.name.as_deref().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = relay.metadata.namespace.as_deref().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let key = object_key(relay);
    if !ctx.caches.all_synced() {
        tracing::debug!(relay = %key, "caches not synced yet; waiting");
        return Ok(Action::requeue(crate::fleet::reconcile::CACHE_WAIT));
    }
    let invalid = validate(relay, &ctx.settings.build.sensor_image).err();
    let mut invalid_identity = None;
    let mut peer_id = None;
    if let Some(reason) = &invalid {
        tracing::info!(relay = %key, %reason, "invalid spec; children left as they are");
    } else {
        match identity::ensure(ctx, relay).await {
            Ok(identity) => {
                let children = build::build(relay, &ctx.settings.build, &identity.secret_name)?;
                let force = ctx.resync.due(&key, ctx.settings.resync_interval);
                apply_children(ctx, &children, force).await?;
                prune_children(ctx, relay, namespace, &children).await?;
                if force {
                    ctx.resync.done(&key);
                }
                peer_id = Some(identity.peer_id);
            }
            Err(e @ Error::IdentitySecret { .. }) => {
                tracing::info!(relay = %key, error = %e, "unusable identity; children left as they are");
                invalid_identity = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }

    let workload = ctx
        .caches
        .deployments
        .get(&ObjectRef::<Deployment>::new(&names::deployment(name)).within(namespace))
        .map(|d| status::deployment_state(&d));
    let reports = ctx.reports.relay(namespace, name);
    let observed = Observed {
        invalid: invalid.as_deref(),
        invalid_identity: invalid_identity.as_deref(),
        peer_id: peer_id.as_deref(),
        workload,
        reports: reports.as_ref(),
        reports_pending: ctx.reports.uptime() < ctx.settings.report_warm_up,
    };
    let now = crate::collector::aggregate::status_time(ctx.now());
    let mut new_status = status::status(relay, &observed, &now);
    crate::freshness::hold(&mut new_status, relay.status.as_ref(), ctx.settings.status_heartbeat);
    let old_conditions = relay.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    if relay.status.as_ref() != Some(&new_status) {
        patch_status(&ctx.client, relay, &new_status).await?;
        ctx.metrics.status_patched(CONTROLLER);
        let transitions = conditions::transitions(&old_conditions, &new_status.conditions);
        publish_transitions(&ctx.recorder, relay, &transitions, &ctx.metrics).await;
    }
    Ok(if invalid.is_some() { Action::await_change() } else { Action::requeue(ctx.settings.status_interval) })
}

async fn apply_children(ctx: &Context, children: &RelayChildren, force: bool) -> Result<()> {
    let (client, caches, metrics) = (&ctx.client, &ctx.caches, ctx.metrics.as_ref());
    apply_if_changed(client, &caches.service_accounts, &children.service_account, force, metrics).await?;
    apply_if_changed(client, &caches.config_maps, &children.config_map, force, metrics).await?;
    if let Some(service) = &children.exposure_service {
        apply_if_changed(client, &caches.services, service, force, metrics).await?;
    }
    apply_if_changed(client, &caches.deployments, &children.deployment, force, metrics).await?;
    Ok(())
}

/// Deletes Services and Deployments controlled by this relay that the spec no longer wants
/// (exposure switched to HostNetwork). The ServiceAccount and ConfigMap never change name; the
/// owned identity Secret is kept (switching back to it keeps the PeerId) and is
/// garbage-collected with the relay.
async fn prune_children(ctx: &Context, relay: &RelayNode, namespace: &str, children: &RelayChildren) -> Result<()> {
    let uid = relay.metadata.uid.as_deref().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let (client, caches, metrics) = (&ctx.client, &ctx.caches, ctx.metrics.as_ref());
    let services: Vec<String> = children.exposure_service.iter().map(|s| s.name_any()).collect();
    prune::<Service>(client, &caches.services, namespace, uid, &services, metrics).await?;
    prune::<Deployment>(client, &caches.deployments, namespace, uid, &[children.deployment.name_any()], metrics)
        .await?;
    Ok(())
}
