//! The RelayNode reconciler (I/O): validate → identity → build → apply → prune → status.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, RelayChildren, names};
use super::identity;
use super::status::{self, Observed};
use super::validate::validate;
use crate::children::{self, Children};
use crate::context::Context;
use crate::controller::{self, CACHE_WAIT, object_key};
use crate::crd::{RelayNode, RelayNodeStatus};
use crate::error::{ObjectName, ReconcileError, ResolveError, ValidateError};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "relaynode";

/// Reconciles one relay. On success the relay is requeued after the status interval (reports
/// change its status). An invalid spec waits for the next change (no hot loop). An unusable
/// identity Secret (missing, bad key: [`ResolveError::IdentitySecret`]) is `Stalled` too, not
/// an error; it is re-read at the status interval because a user's Secret is not watched.
/// Errors: [`ResolveError`] (API failures reading or creating the identity Secret, missing
/// keys), [`crate::error::BuildError`], [`crate::error::ApplyError`] and
/// [`crate::error::StatusError`] in a [`ReconcileError`]; `error_policy` backs off.
pub async fn reconcile(relay: Arc<RelayNode>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    controller::reconciled(CONTROLLER, relay.as_ref(), &ctx, reconcile_inner(&relay, &ctx)).await
}

/// Requeue delay after an error: per-object exponential backoff.
pub fn error_policy(relay: Arc<RelayNode>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    controller::error_policy(CONTROLLER, relay.as_ref(), error, &ctx)
}

async fn reconcile_inner(relay: &RelayNode, ctx: &Context) -> Result<Action, ReconcileError> {
    let (name, namespace) = controller::name_and_namespace(relay)?;
    let key = object_key(relay);
    if !ctx.caches.all_synced() {
        tracing::debug!(relay = %key, "caches not synced yet; waiting");
        return Ok(Action::requeue(CACHE_WAIT));
    }
    let invalid = validate(relay, &ctx.settings.build.sensor_image)
        .err()
        .map(|message| ValidateError::invalid_spec(ObjectName::of(relay), message));
    let mut invalid_identity = None;
    let mut peer_id = None;
    if let Some(ValidateError::InvalidSpec { field, message, .. }) = &invalid {
        tracing::info!(relay = %key, %field, reason = %message, "invalid spec; children left as they are");
    } else {
        match identity::ensure(ctx, relay).await {
            Ok(identity) => {
                let children = build::build(relay, &ctx.settings.build, &identity.secret_name)?;
                let force = ctx.resync.due(&key, ctx.settings.resync_interval);
                let owner = ObjectName::of(relay);
                children::apply_all(ctx, &owner, children.each(), force).await?;
                prune_children(ctx, relay, &owner, &children).await?;
                if force {
                    ctx.resync.done(&key);
                }
                peer_id = Some(identity.peer_id);
            }
            Err(ReconcileError::Resolve(e @ ResolveError::IdentitySecret { .. })) => {
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
        invalid: invalid.as_ref().map(ValidateError::message),
        invalid_identity: invalid_identity.as_deref(),
        peer_id: peer_id.as_deref(),
        workload,
        reports: reports.as_ref(),
        reports_pending: ctx.reports.uptime() < ctx.settings.report_warm_up,
    };
    let now = crate::collector::aggregate::status_time(ctx.now());
    let mut new_status = status::status(relay, &observed, &now);
    crate::freshness::hold(&mut new_status, relay.status.as_ref(), ctx.settings.status_heartbeat);
    controller::write_status(ctx, CONTROLLER, relay, relay.status.as_ref(), &new_status, conditions).await?;
    Ok(if invalid.is_some() { Action::await_change() } else { Action::requeue(ctx.settings.status_interval) })
}

fn conditions(status: &RelayNodeStatus) -> &[Condition] {
    &status.conditions
}

/// Deletes Services and Deployments controlled by this relay that the spec no longer wants
/// (exposure switched to HostNetwork). The ServiceAccount and ConfigMap never change name; the
/// owned identity Secret is kept (switching back to it keeps the PeerId) and is
/// garbage-collected with the relay.
async fn prune_children(
    ctx: &Context,
    relay: &RelayNode,
    owner: &ObjectName,
    children: &RelayChildren,
) -> Result<(), ReconcileError> {
    let uid = controller::uid(relay)?;
    children::prune::<Service>(ctx, owner, uid, children).await?;
    children::prune::<Deployment>(ctx, owner, uid, children).await?;
    Ok(())
}
