//! Pure status of a RelayNode: conditions (kstatus), the PeerId of its identity and the
//! collector's aggregate of the relay's own reports and of the hole punches through it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::collector::aggregate::RelayAggregate;
use crate::conditions::{self, Desired};
use crate::crd::{RelayNode, RelayNodeStatus, condition};
pub use crate::fleet::status::WorkloadState;

/// State of a cached Deployment: `desired` is `spec.replicas` (1 for a relay), `ready` the ready
/// replicas, `up_to_date` when the Deployment controller has seen the latest spec, every replica
/// runs it and no pod of an older revision is left.
pub fn deployment_state(deployment: &Deployment) -> WorkloadState {
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return WorkloadState { desired, ready: 0, up_to_date: false };
    };
    let seen = status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let up_to_date = seen && updated >= desired && status.replicas.unwrap_or(0) <= updated;
    WorkloadState { desired, ready: status.ready_replicas.unwrap_or(0), up_to_date }
}

/// Everything the status is computed from besides the relay itself.
#[derive(Debug, Clone, Default)]
pub struct Observed<'a> {
    /// Why the spec is invalid (`Stalled`, reason `InvalidSpec`), if it is.
    pub invalid: Option<&'a str>,
    /// Why the identity Secret is unusable (`Stalled`, reason `InvalidIdentity`), if it is.
    pub invalid_identity: Option<&'a str>,
    /// Base58 PeerId of the identity the operator resolved (known before the pod reports).
    pub peer_id: Option<&'a str>,
    /// The Deployment, when it exists.
    pub workload: Option<WorkloadState>,
    /// The collector's last published aggregate of the relay's and punchers' reports.
    pub reports: Option<&'a RelayAggregate>,
    /// The collector started too recently for its aggregate to be complete (an operator
    /// restart): the report-derived fields of the current status stand instead.
    pub reports_pending: bool,
}

/// The conditions, in the order Ready, Reconciling, Stalled, Degraded.
pub fn desired_conditions(relay: &RelayNode, observed: &Observed<'_>) -> Vec<Desired> {
    use condition::{DEGRADED, READY, RECONCILING, STALLED};
    let degraded = if relay.spec.exposure.hides_source_ip() {
        Desired::new(
            DEGRADED,
            true,
            "SourceIPHidden",
            "externalTrafficPolicy Cluster SNATs inbound peers: the relay observes wrong addresses for them, so \
             DCUtR hole punching cannot work; use Local or HostNetwork",
        )
    } else if super::build::external_addresses(relay).is_empty() {
        Desired::new(
            DEGRADED,
            true,
            "NoExternalAddress",
            "a LoadBalancer or NodePort without exposure.nodePort gives the relay no known external address, and \
             a circuit relay refuses every reservation without one; set spec.externalAddresses",
        )
    } else {
        Desired::new(DEGRADED, false, "AsExpected", "")
    };
    let stalled_by = match (observed.invalid, observed.invalid_identity) {
        (Some(reason), _) => Some(("InvalidSpec", reason)),
        (None, Some(reason)) => Some(("InvalidIdentity", reason)),
        (None, None) => None,
    };
    if let Some((why, message)) = stalled_by {
        let waiting = if why == "InvalidSpec" {
            "waiting for the spec to be fixed"
        } else {
            "waiting for a usable identity Secret"
        };
        return vec![
            Desired::new(READY, false, why, message),
            Desired::new(RECONCILING, false, why, waiting),
            Desired::new(STALLED, true, why, message),
            degraded,
        ];
    }
    let stalled = Desired::new(STALLED, false, "SpecValid", "");
    let was_reporting = relay
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == READY && c.reason == "RelayReporting"));
    let reporting = if observed.reports_pending && relay.status.is_some() {
        was_reporting
    } else {
        observed.reports.is_some_and(|r| r.reporting)
    };
    let (ready, reconciling) = match observed.workload {
        None => (
            Desired::new(READY, false, "WorkloadNotFound", "the relay Deployment does not exist yet"),
            Desired::new(RECONCILING, true, "Creating", "creating the relay Deployment"),
        ),
        Some(w) if !w.up_to_date || w.ready < w.desired.max(1) => {
            let rolling = if w.up_to_date { "" } else { "rolling out the latest spec; " };
            let message = format!("{rolling}{} of {} relay pods ready", w.ready, w.desired);
            (
                Desired::new(READY, false, "RelayNotReady", &message),
                Desired::new(RECONCILING, true, "RollingOut", message),
            )
        }
        Some(_) if !reporting => (
            Desired::new(READY, false, "RelayNotReporting", "the relay pod is ready but has not reported recently"),
            Desired::new(RECONCILING, false, "RolledOut", ""),
        ),
        Some(_) => (
            Desired::new(READY, true, "RelayReporting", "the relay is ready and reporting"),
            Desired::new(RECONCILING, false, "RolledOut", ""),
        ),
    };
    vec![ready, reconciling, stalled, degraded]
}

/// The whole `.status` of `relay` at `now`. `lastTransitionTime`s come from the relay's current
/// status unless the condition flipped. `peerId` is the identity's, or the relay's own report's
/// when the identity was not resolved (invalid spec); the rest comes from the aggregate.
pub fn status(relay: &RelayNode, observed: &Observed<'_>, now: &Time) -> RelayNodeStatus {
    let generation = relay.metadata.generation;
    let old = relay.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = conditions::merge(old, &desired_conditions(relay, observed), generation, now);
    let reported_peer_id = observed.reports.and_then(|r| r.peer_id.as_deref());
    let mut status = RelayNodeStatus {
        observed_generation: generation,
        conditions,
        peer_id: observed.peer_id.or(reported_peer_id).map(str::to_string),
        ..RelayNodeStatus::default()
    };
    if let (true, Some(old)) = (observed.reports_pending, relay.status.as_ref()) {
        status.multiaddrs = old.multiaddrs.clone();
        status.reservations_active = old.reservations_active;
        status.circuits_active = old.circuits_active;
        status.hole_punch = old.hole_punch.clone();
        status.last_report_time = old.last_report_time.clone();
    } else if let Some(reports) = observed.reports {
        status.multiaddrs = reports.multiaddrs.clone();
        status.reservations_active = reports.reservations_active;
        status.circuits_active = reports.circuits_active;
        status.hole_punch = reports.hole_punch.clone();
        status.last_report_time = reports.last_report_time.map(crate::collector::aggregate::status_time);
    }
    status
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    use super::*;

    fn deployment(generation: i64, status: Option<DeploymentStatus>) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec { replicas: Some(1), ..DeploymentSpec::default() }),
            status,
            ..Deployment::default()
        };
        d.metadata.generation = Some(generation);
        d
    }

    #[test]
    fn deployment_state_needs_the_latest_spec_on_every_pod() {
        let status = |observed: i64, replicas: i32, updated: i32, ready: i32| DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        };
        assert_eq!(deployment_state(&deployment(1, None)), WorkloadState { desired: 1, ready: 0, up_to_date: false });
        let done = deployment_state(&deployment(2, Some(status(2, 1, 1, 1))));
        assert_eq!(done, WorkloadState { desired: 1, ready: 1, up_to_date: true });
        assert!(!deployment_state(&deployment(3, Some(status(2, 1, 1, 1)))).up_to_date, "spec not observed");
        assert!(!deployment_state(&deployment(2, Some(status(2, 2, 1, 1)))).up_to_date, "an old pod is left");
        assert!(!deployment_state(&deployment(2, Some(status(2, 1, 0, 1)))).up_to_date, "pod of the old revision");
    }

    #[test]
    fn a_relay_without_an_external_address_is_degraded() {
        let relay = |spec: serde_json::Value| -> RelayNode {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "p2psensor.dev/v1alpha1", "kind": "RelayNode",
                "metadata": {"name": "edge", "namespace": "lab"}, "spec": spec
            }))
            .unwrap()
        };
        let degraded = |r: &RelayNode| {
            let d = desired_conditions(r, &Observed::default()).into_iter().find(|c| c.type_ == "Degraded").unwrap();
            (d.status, d.reason)
        };
        let lb = serde_json::json!({"exposure": {"kind": "LoadBalancer"}});
        assert_eq!(degraded(&relay(lb.clone())), (true, "NoExternalAddress"));
        let mut with_addresses = lb;
        with_addresses["externalAddresses"] = serde_json::json!(["/ip4/203.0.113.7/tcp/4001"]);
        assert_eq!(degraded(&relay(with_addresses)), (false, "AsExpected"));
        assert_eq!(degraded(&relay(serde_json::json!({}))), (false, "AsExpected"), "host network derives them");
    }

    #[test]
    fn while_reports_are_pending_the_relay_status_stands() {
        let mut relay: RelayNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "p2psensor.dev/v1alpha1", "kind": "RelayNode",
            "metadata": {"name": "edge", "namespace": "lab"}, "spec": {}
        }))
        .unwrap();
        let workload = WorkloadState { desired: 1, ready: 1, up_to_date: true };
        let now = Time("2026-12-05T00:00:00Z".parse().unwrap());
        let reports = RelayAggregate {
            reporting: true,
            multiaddrs: vec!["/ip4/198.51.100.1/tcp/4001".into()],
            reservations_active: 2,
            hole_punch: crate::crd::HolePunchStats { attempts: 4, successes: 3, ..Default::default() },
            ..RelayAggregate::default()
        };
        let observed = Observed { workload: Some(workload), reports: Some(&reports), ..Observed::default() };
        let before = status(&relay, &observed, &now);
        let ready = before.conditions.iter().find(|c| c.type_ == condition::READY).unwrap();
        assert_eq!(ready.reason, "RelayReporting");
        relay.status = Some(before.clone());
        let pending =
            Observed { workload: Some(workload), reports: None, reports_pending: true, ..Observed::default() };
        assert_eq!(status(&relay, &pending, &now), before, "no write while the collector warms up");
        let warm = Observed { reports_pending: false, ..pending };
        let after = status(&relay, &warm, &now);
        assert_eq!((after.hole_punch.attempts, after.multiaddrs.len()), (0, 0));
        let ready = after.conditions.iter().find(|c| c.type_ == condition::READY).unwrap();
        assert_eq!(ready.reason, "RelayNotReporting");
    }
}
