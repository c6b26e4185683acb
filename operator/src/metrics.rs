//! The operator's Prometheus metrics (prometheus-client 0.25, one registry).
//!
//! Controller metrics use controller-runtime's names so existing dashboards work:
//! `controller_runtime_reconcile_total{controller,result}`,
//! `controller_runtime_reconcile_errors_total{controller}`,
//! `controller_runtime_reconcile_time_seconds{controller}`. Measured results are totals over all
//! resources (`p2psensor_fleet_peers{class}`, ...): no label ever names an object.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::SensorFleetStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: &'static str,
    /// `success`, `error` or `requeue` (controller-runtime's values).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    /// [`crate::error::Error::metric_label`].
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kubernetes kind, e.g. `StatefulSet`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// `public`, `private`, `unknown` or `unique`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `desired`, `ready` or `reporting`.
    pub state: &'static str,
}

/// One fleet's contribution to the fleet totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FleetNumbers {
    public: i64,
    private: i64,
    unknown: i64,
    unique: i64,
    desired: i64,
    ready: i64,
    reporting: i64,
}

/// Every operator metric.
pub struct Metrics {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_errors_by_kind: Family<ErrorLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    applies: Family<KindLabels, Counter>,
    deletes: Family<KindLabels, Counter>,
    status_patches: Family<ControllerLabels, Counter>,
    events_failed: Counter,
    fleet_peers: Family<ClassLabels, Gauge>,
    fleet_sensors: Family<StateLabels, Gauge>,
    fleets: Gauge,
    fleet_numbers: Mutex<HashMap<String, FleetNumbers>>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Metrics> {
        let metrics = Metrics {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_errors_by_kind: Family::default(),
            reconcile_time: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15))),
            applies: Family::default(),
            deletes: Family::default(),
            status_patches: Family::default(),
            events_failed: Counter::default(),
            fleet_peers: Family::default(),
            fleet_sensors: Family::default(),
            fleets: Gauge::default(),
            fleet_numbers: Mutex::new(HashMap::new()),
        };
        registry.register(
            "controller_runtime_reconcile",
            "Reconciliations per controller and result",
            metrics.reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconciliations that ended in an error",
            metrics.reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "controller_runtime_reconcile_time",
            "Time per reconciliation",
            prometheus_client::registry::Unit::Seconds,
            metrics.reconcile_time.clone(),
        );
        let p = registry.sub_registry_with_prefix("p2psensor_operator");
        p.register(
            "reconcile_errors_by_kind",
            "Reconciliation errors by error kind",
            metrics.reconcile_errors_by_kind.clone(),
        );
        p.register("applies", "Server-side applies of child objects by kind", metrics.applies.clone());
        p.register("deletes", "Child objects pruned by kind", metrics.deletes.clone());
        p.register("status_patches", "Status patches written", metrics.status_patches.clone());
        p.register("events_failed", "Kubernetes Events that could not be published", metrics.events_failed.clone());
        let f = registry.sub_registry_with_prefix("p2psensor_fleet");
        f.register(
            "peers",
            "Peers over all fleets by latest verdict (sum over sensors), and unique",
            metrics.fleet_peers.clone(),
        );
        f.register("sensors", "Sensor pods over all fleets: desired, ready, reporting", metrics.fleet_sensors.clone());
        registry.register("p2psensor_fleets", "SensorFleets with a computed status", metrics.fleets.clone());
        // Every controller's series exist from the start (at 0), so rates and alerts work before
        // the first reconciliation.
        for controller in ["sensorfleet", "relaynode"] {
            for result in ["success", "error"] {
                let _ = metrics.reconcile_total.get_or_create(&ResultLabels { controller, result });
            }
            let _ = metrics.reconcile_errors.get_or_create(&ControllerLabels { controller });
            let _ = metrics.reconcile_time.get_or_create(&ControllerLabels { controller });
        }
        std::sync::Arc::new(metrics)
    }

    /// Records one finished reconciliation.
    pub fn reconciled(&self, controller: &'static str, result: Result<(), &crate::error::Error>, took: Duration) {
        self.reconcile_time.get_or_create(&ControllerLabels { controller }).observe(took.as_secs_f64());
        let result = match result {
            Ok(()) => "success",
            Err(e) => {
                self.reconcile_errors.get_or_create(&ControllerLabels { controller }).inc();
                self.reconcile_errors_by_kind.get_or_create(&ErrorLabels { controller, error: e.metric_label() }).inc();
                "error"
            }
        };
        self.reconcile_total.get_or_create(&ResultLabels { controller, result }).inc();
    }

    pub fn applied(&self, kind: &'static str) {
        self.applies.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn deleted(&self, kind: &'static str) {
        self.deletes.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn status_patched(&self, controller: &'static str) {
        self.status_patches.get_or_create(&ControllerLabels { controller }).inc();
    }

    pub fn event_failed(&self) {
        self.events_failed.inc();
    }

    /// Sets fleet `key`'s contribution to the totals (`None` removes it) and refreshes the gauges.
    pub fn set_fleet(&self, key: &str, status: Option<&SensorFleetStatus>) {
        let mut numbers = self.fleet_numbers.lock().unwrap_or_else(|e| e.into_inner());
        match status {
            Some(s) => {
                numbers.insert(
                    key.to_string(),
                    FleetNumbers {
                        public: s.peers.public,
                        private: s.peers.private,
                        unknown: s.peers.unknown,
                        unique: s.peers.unique_across_fleet,
                        desired: s.sensors.desired.into(),
                        ready: s.sensors.ready.into(),
                        reporting: s.sensors.reporting.into(),
                    },
                );
            }
            None => {
                numbers.remove(key);
            }
        }
        let sum = |f: fn(&FleetNumbers) -> i64| numbers.values().map(f).sum::<i64>();
        self.fleet_peers.get_or_create(&ClassLabels { class: "public" }).set(sum(|n| n.public));
        self.fleet_peers.get_or_create(&ClassLabels { class: "private" }).set(sum(|n| n.private));
        self.fleet_peers.get_or_create(&ClassLabels { class: "unknown" }).set(sum(|n| n.unknown));
        self.fleet_peers.get_or_create(&ClassLabels { class: "unique" }).set(sum(|n| n.unique));
        self.fleet_sensors.get_or_create(&StateLabels { state: "desired" }).set(sum(|n| n.desired));
        self.fleet_sensors.get_or_create(&StateLabels { state: "ready" }).set(sum(|n| n.ready));
        self.fleet_sensors.get_or_create(&StateLabels { state: "reporting" }).set(sum(|n| n.reporting));
        self.fleets.set(numbers.len() as i64);
    }

    /// Keys of fleets currently counted (to drop deleted fleets).
    pub fn fleet_keys(&self) -> Vec<String> {
        self.fleet_numbers.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }
}
