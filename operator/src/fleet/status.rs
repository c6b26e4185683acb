//! Pure status of a SensorFleet: conditions (kstatus), sensor counts and the collector's
//! aggregate of the sensors' reports.

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::punch::RelayProblem;
use crate::collector::aggregate::FleetAggregate;
use crate::conditions::{self, Desired};
use crate::crd::{SensorCounts, SensorFleet, SensorFleetStatus, condition};

/// What the workload's own status says, reduced to what the fleet status needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkloadState {
    /// Pods wanted: StatefulSet `spec.replicas`, DaemonSet `status.desiredNumberScheduled`.
    pub desired: i32,
    /// Pods ready.
    pub ready: i32,
    /// The workload controller has seen the latest spec and every pod runs it.
    pub up_to_date: bool,
}

/// State of a cached StatefulSet.
pub fn stateful_set_state(sts: &StatefulSet) -> WorkloadState {
    let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = sts.status.as_ref() else {
        return WorkloadState { desired, ready: 0, up_to_date: false };
    };
    let seen = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0) >= desired
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision;
    WorkloadState { desired, ready: status.ready_replicas.unwrap_or(0), up_to_date: seen && (updated || desired == 0) }
}

/// State of a cached DaemonSet.
pub fn daemon_set_state(ds: &DaemonSet) -> WorkloadState {
    let Some(status) = ds.status.as_ref() else {
        return WorkloadState::default();
    };
    let seen = status.observed_generation.unwrap_or(0) >= ds.metadata.generation.unwrap_or(0);
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0) >= desired;
    WorkloadState { desired, ready: status.number_ready, up_to_date: seen && updated }
}

/// Everything the status is computed from besides the fleet itself.
#[derive(Debug, Clone, Default)]
pub struct Observed<'a> {
    /// Why the spec is invalid (`Stalled`), if it is.
    pub invalid: Option<&'a str>,
    /// The workload, when it exists.
    pub workload: Option<WorkloadState>,
    /// The collector's last published aggregate of the fleet's reports.
    pub reports: Option<&'a FleetAggregate>,
    /// The collector started too recently for its aggregate to be complete (an operator
    /// restart): the report-derived fields of the current status stand instead.
    pub reports_pending: bool,
    /// Why `spec.relayRef` gives no hole-punch sidecar (relay missing, no PeerId, no address).
    pub relay_problem: Option<&'a RelayProblem>,
}

/// The conditions, in the order Ready, Reconciling, Stalled, Degraded.
pub fn desired_conditions(fleet: &SensorFleet, observed: &Observed<'_>) -> Vec<Desired> {
    use condition::{DEGRADED, READY, RECONCILING, STALLED};
    let reporting = match (observed.reports_pending, fleet.status.as_ref()) {
        (true, Some(old)) => old.sensors.reporting,
        _ => observed.reports.map_or(0, |r| r.reporting),
    };
    let degraded = if fleet.spec.exposure.hides_source_ip() {
        Desired::new(
            DEGRADED,
            true,
            "SourceIPHidden",
            "externalTrafficPolicy Cluster SNATs inbound peers: sensors cannot see their source IPs, so dial-back \
             classification is impossible; use Local or HostNetwork",
        )
    } else if let Some(problem) = observed.relay_problem {
        Desired::new(DEGRADED, true, problem.reason(), problem.message())
    } else {
        Desired::new(DEGRADED, false, "AsExpected", "")
    };
    if let Some(reason) = observed.invalid {
        return vec![
            Desired::new(READY, false, "InvalidSpec", reason),
            Desired::new(RECONCILING, false, "InvalidSpec", "waiting for the spec to be fixed"),
            Desired::new(STALLED, true, "InvalidSpec", reason),
            degraded,
        ];
    }
    let stalled = Desired::new(STALLED, false, "SpecValid", "");
    let (ready, reconciling) = match observed.workload {
        None => (
            Desired::new(READY, false, "WorkloadNotFound", "the sensor workload does not exist yet"),
            Desired::new(RECONCILING, true, "Creating", "creating the sensor workload"),
        ),
        Some(w) if !w.up_to_date || w.ready < w.desired => {
            let message = format!("{} of {} sensors ready", w.ready, w.desired);
            (
                Desired::new(READY, false, "SensorsNotReady", &message),
                Desired::new(RECONCILING, true, "RollingOut", message),
            )
        }
        Some(w) if w.desired == 0 => (
            Desired::new(READY, false, "NoSensorsScheduled", "no node matches the fleet's placement"),
            Desired::new(RECONCILING, false, "RolledOut", ""),
        ),
        Some(w) if reporting < w.ready => (
            Desired::new(
                READY,
                false,
                "SensorsNotReporting",
                format!("{reporting} of {} ready sensors reported recently", w.ready),
            ),
            Desired::new(RECONCILING, false, "RolledOut", ""),
        ),
        Some(w) => (
            Desired::new(READY, true, "AllSensorsReporting", format!("{} sensors ready and reporting", w.ready)),
            Desired::new(RECONCILING, false, "RolledOut", ""),
        ),
    };
    vec![ready, reconciling, stalled, degraded]
}

/// The whole `.status` of `fleet` at `now`. `lastTransitionTime`s come from the fleet's current
/// status unless the condition flipped.
pub fn status(fleet: &SensorFleet, observed: &Observed<'_>, now: &Time) -> SensorFleetStatus {
    let generation = fleet.metadata.generation;
    let old = fleet.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = conditions::merge(old, &desired_conditions(fleet, observed), generation, now);
    let workload = observed.workload.unwrap_or_default();
    let mut status = SensorFleetStatus {
        observed_generation: generation,
        conditions,
        sensors: SensorCounts { desired: workload.desired, ready: workload.ready, reporting: 0 },
        ..SensorFleetStatus::default()
    };
    if let (true, Some(old)) = (observed.reports_pending, fleet.status.as_ref()) {
        status.sensors.reporting = old.sensors.reporting;
        status.peers = old.peers.clone();
        status.top_user_agents = old.top_user_agents.clone();
        status.last_report_time = old.last_report_time.clone();
        status.sensor_summaries = old.sensor_summaries.clone();
        status.crawl = old.crawl.clone();
    } else if let Some(reports) = observed.reports {
        status.sensors.reporting = reports.reporting;
        status.peers = reports.peers.clone();
        status.top_user_agents = reports.top_user_agents.clone();
        status.last_report_time = reports.last_report_time.map(crate::collector::aggregate::status_time);
        status.sensor_summaries = reports.summaries.clone();
        status.crawl = reports.crawl.clone();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(spec: serde_json::Value) -> SensorFleet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "p2psensor.dev/v1alpha1", "kind": "SensorFleet",
            "metadata": {"name": "f", "namespace": "lab"}, "spec": spec
        }))
        .unwrap()
    }

    fn degraded(fleet: &SensorFleet, problem: Option<&RelayProblem>) -> (bool, &'static str, String) {
        let observed = Observed { relay_problem: problem, ..Observed::default() };
        let d = desired_conditions(fleet, &observed).into_iter().find(|c| c.type_ == condition::DEGRADED).unwrap();
        (d.status, d.reason, d.message)
    }

    #[test]
    fn an_unresolvable_relay_degrades_the_fleet_with_its_reason() {
        let f = fleet(serde_json::json!({"network": "devnet", "relayRef": {"name": "edge"}}));
        assert!(!degraded(&f, None).0);
        for (problem, reason) in [
            (RelayProblem::NotFound("edge".into()), "RelayNotFound"),
            (RelayProblem::NotReady("edge".into()), "RelayNotReady"),
            (RelayProblem::AddressUnknown("edge".into()), "RelayAddressUnknown"),
        ] {
            let (status, got, message) = degraded(&f, Some(&problem));
            assert_eq!((status, got), (true, reason));
            assert!(message.contains("\"edge\""), "{message}");
        }
        // Hidden source IPs matter more: they spoil every measurement, not only hole punching.
        let hidden = fleet(serde_json::json!({"network": "devnet", "relayRef": {"name": "edge"},
            "exposure": {"kind": "LoadBalancer", "externalTrafficPolicy": "Cluster"}}));
        assert_eq!(degraded(&hidden, Some(&RelayProblem::NotFound("edge".into()))).1, "SourceIPHidden");
    }

    #[test]
    fn crawl_figures_reach_the_status_and_crawlers_do_not_make_a_fleet_ready() {
        let f = fleet(serde_json::json!({"network": "devnet", "crawler": {}}));
        let reports = FleetAggregate {
            crawl: Some(crate::crd::FleetCrawlStats { crawlers: 1, reachable_nodes: 7, ..Default::default() }),
            ..FleetAggregate::default()
        };
        let workload = WorkloadState { desired: 1, ready: 1, up_to_date: true };
        let observed = Observed { workload: Some(workload), reports: Some(&reports), ..Observed::default() };
        let now = Time("2026-11-21T00:00:00Z".parse().unwrap());
        let s = status(&f, &observed, &now);
        assert_eq!(s.crawl.as_ref().map(|c| c.reachable_nodes), Some(7));
        let ready = s.conditions.iter().find(|c| c.type_ == condition::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "SensorsNotReporting"));
        let value = serde_json::to_value(&s).unwrap();
        assert_eq!(value["crawl"]["reachableNodes"], 7, "the printer column's path");
        assert!(status(&f, &Observed::default(), &now).crawl.is_none());
    }

    #[test]
    fn while_reports_are_pending_the_report_derived_status_stands() {
        let mut f = fleet(serde_json::json!({"network": "devnet"}));
        let workload = WorkloadState { desired: 2, ready: 2, up_to_date: true };
        let now = Time("2026-12-05T00:00:00Z".parse().unwrap());
        let full = FleetAggregate {
            reporting: 2,
            peers: crate::crd::FleetPeerCounts { public: 3, private: 5, ..Default::default() },
            ..FleetAggregate::default()
        };
        let observed = Observed { workload: Some(workload), reports: Some(&full), ..Observed::default() };
        let before = status(&f, &observed, &now);
        assert_eq!((before.peers.public, before.peers.private, before.sensors.reporting), (3, 5, 2));
        f.status = Some(before.clone());

        // An operator restart: the collector is empty, then knows one of the two sensors.
        let partial = FleetAggregate { reporting: 1, ..FleetAggregate::default() };
        for reports in [None, Some(&partial)] {
            let pending = Observed { workload: Some(workload), reports, reports_pending: true, ..Observed::default() };
            assert_eq!(status(&f, &pending, &now), before, "no write while the collector warms up");
            // Once warm, what the collector knows is the truth, even when it is less.
            let warm = Observed { reports_pending: false, ..pending };
            let after = status(&f, &warm, &now);
            assert_eq!(after.sensors.reporting, reports.map_or(0, |r| r.reporting));
            assert_eq!(after.peers.public, 0);
            let ready = after.conditions.iter().find(|c| c.type_ == condition::READY).unwrap();
            assert_eq!(ready.reason, "SensorsNotReporting");
        }
        // A new fleet has no status to keep: the aggregate is used as it is.
        f.status = None;
        let pending =
            Observed { workload: Some(workload), reports: Some(&full), reports_pending: true, ..Observed::default() };
        assert_eq!(status(&f, &pending, &now).peers.private, 5);
    }
}
