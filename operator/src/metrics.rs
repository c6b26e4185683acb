//! The operator's Prometheus metrics (prometheus-client 0.25, one registry).
//!
//! Controller metrics use controller-runtime's names so existing dashboards work:
//! `controller_runtime_reconcile_total{controller,result}`,
//! `controller_runtime_reconcile_errors_total{controller}`,
//! `controller_runtime_reconcile_time_seconds{controller}`. Measured results are totals over all
//! resources (`p2psensor_fleet_peers{class}`, ...): no label ever names an object. Crawl figures
//! are per Kaspa network instead (`p2psensor_fleet_crawl_nodes{network,state}`): every crawler
//! maps its whole network, so two fleets on one network give the maximum, not a sum.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{Network, SensorFleetStatus};

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
    /// [`crate::error::ReconcileError::metric_label`]: the failed step's variant in snake_case,
    /// e.g. `kube_api`, `missing_object_key`, `serialization`.
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkLabels {
    /// Kaspa network (`mainnet`, `testnet-10`, ...).
    pub network: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrawlNodeLabels {
    pub network: &'static str,
    /// `known` or `reachable`.
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
    crawl: Option<CrawlNumbers>,
}

/// One fleet's `status.crawl`, on its network.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CrawlNumbers {
    network: Network,
    crawlers: i64,
    known: i64,
    reachable: i64,
    /// (end of the last round as Unix ms, its duration in ms).
    last_round: Option<(i64, i64)>,
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
    fleet_crawlers: Gauge,
    fleet_crawl_nodes: Family<CrawlNodeLabels, Gauge>,
    fleet_crawl_duration: Family<NetworkLabels, Gauge<f64, AtomicU64>>,
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
            fleet_crawlers: Gauge::default(),
            fleet_crawl_nodes: Family::default(),
            fleet_crawl_duration: Family::default(),
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
        f.register(
            "crawlers",
            "Crawl sidecars over all fleets that reported within the report timeout",
            metrics.fleet_crawlers.clone(),
        );
        f.register(
            "crawl_nodes",
            "Nodes known to and reached by the crawlers of a network (maximum over fleets and crawlers)",
            metrics.fleet_crawl_nodes.clone(),
        );
        f.register_with_unit(
            "crawl_last_duration",
            "Wall time of the network's most recently finished crawl round",
            prometheus_client::registry::Unit::Seconds,
            metrics.fleet_crawl_duration.clone(),
        );
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
    pub fn reconciled(
        &self,
        controller: &'static str,
        result: Result<(), &crate::error::ReconcileError>,
        took: Duration,
    ) {
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
    /// `network` places its crawl figures. A network's crawl series exist while some fleet of it
    /// has `status.crawl`, and are removed after.
    pub fn set_fleet(&self, key: &str, fleet: Option<(Network, &SensorFleetStatus)>) {
        let mut numbers = self.fleet_numbers.lock().unwrap_or_else(|e| e.into_inner());
        match fleet {
            Some((network, s)) => {
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
                        crawl: s.crawl.as_ref().map(|c| CrawlNumbers {
                            network,
                            crawlers: c.crawlers.into(),
                            known: c.known_nodes,
                            reachable: c.reachable_nodes,
                            last_round: c
                                .last_crawl_time
                                .as_ref()
                                .zip(c.last_crawl_duration_ms)
                                .map(|(t, ms)| (t.0.as_millisecond(), ms)),
                        }),
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
        self.fleet_crawlers.set(numbers.values().filter_map(|n| n.crawl.as_ref()).map(|c| c.crawlers).sum());
        for network in Network::ALL.iter().copied() {
            let crawls: Vec<&CrawlNumbers> =
                numbers.values().filter_map(|n| n.crawl.as_ref()).filter(|c| c.network == network).collect();
            let labels = NetworkLabels { network: network.short_name() };
            let nodes = |state| CrawlNodeLabels { network: network.short_name(), state };
            if crawls.is_empty() {
                self.fleet_crawl_nodes.remove(&nodes("known"));
                self.fleet_crawl_nodes.remove(&nodes("reachable"));
                self.fleet_crawl_duration.remove(&labels);
                continue;
            }
            let max = |f: fn(&CrawlNumbers) -> i64| crawls.iter().map(|c| f(c)).max().unwrap_or(0);
            self.fleet_crawl_nodes.get_or_create(&nodes("known")).set(max(|c| c.known));
            self.fleet_crawl_nodes.get_or_create(&nodes("reachable")).set(max(|c| c.reachable));
            match crawls.iter().filter_map(|c| c.last_round).max() {
                Some((_, ms)) => {
                    self.fleet_crawl_duration.get_or_create(&labels).set(ms as f64 / 1000.0);
                }
                None => {
                    self.fleet_crawl_duration.remove(&labels);
                }
            }
        }
    }

    /// Keys of fleets currently counted (to drop deleted fleets).
    pub fn fleet_keys(&self) -> Vec<String> {
        self.fleet_numbers.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// Drops every counted fleet whose key (`namespace/name`) `exists` says is gone, so a deleted
    /// fleet leaves the totals at the next reconcile of any fleet (the controller does not call
    /// reconcile for a deleted object, and this operator uses no finalizer). Returns the keys
    /// dropped.
    pub fn retain_fleets(&self, exists: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.fleet_keys().into_iter().filter(|k| !exists(k)).collect();
        for key in &gone {
            self.set_fleet(key, None);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FleetCrawlStats;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn crawled(known: i64, reachable: i64, crawlers: i32, finished: Option<(&str, i64)>) -> SensorFleetStatus {
        SensorFleetStatus {
            crawl: Some(FleetCrawlStats {
                crawlers,
                known_nodes: known,
                reachable_nodes: reachable,
                last_crawl_time: finished
                    .map(|(t, _)| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.parse().unwrap())),
                last_crawl_duration_ms: finished.map(|(_, ms)| ms),
                ..FleetCrawlStats::default()
            }),
            ..SensorFleetStatus::default()
        }
    }

    #[test]
    fn crawl_figures_are_per_network_maxima_and_leave_with_their_fleets() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let (a, b) = (
            crawled(900, 410, 2, Some(("2025-06-01T11:55:00Z", 62_000))),
            crawled(1000, 380, 1, Some(("2025-06-01T11:50:00Z", 75_000))),
        );
        metrics.set_fleet("lab/a", Some((Network::Mainnet, &a)));
        metrics.set_fleet("lab/b", Some((Network::Mainnet, &b)));
        metrics.set_fleet("lab/plain", Some((Network::Devnet, &SensorFleetStatus::default())));
        let out = text(&registry);
        for line in [
            "p2psensor_fleet_crawlers 3",
            "p2psensor_fleet_crawl_nodes{network=\"mainnet\",state=\"known\"} 1000",
            "p2psensor_fleet_crawl_nodes{network=\"mainnet\",state=\"reachable\"} 410",
            "p2psensor_fleet_crawl_last_duration_seconds{network=\"mainnet\"} 62.0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}:\n{out}");
        }
        assert!(!out.contains("network=\"devnet\""), "no crawler on devnet: no series\n{out}");
        metrics.set_fleet("lab/a", None);
        metrics.set_fleet("lab/b", None);
        let out = text(&registry);
        assert!(!out.contains("network=\"mainnet\""), "series leave with the last crawling fleet\n{out}");
        assert!(out.lines().any(|l| l == "p2psensor_fleet_crawlers 0"), "{out}");
    }

    #[test]
    fn deleted_fleets_leave_the_totals() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let a = crawled(900, 410, 2, Some(("2025-06-01T11:55:00Z", 62_000)));
        metrics.set_fleet("lab/a", Some((Network::Mainnet, &a)));
        metrics.set_fleet("lab/b", Some((Network::Devnet, &SensorFleetStatus::default())));
        assert_eq!(metrics.retain_fleets(|k| k == "lab/b"), ["lab/a"]);
        assert_eq!(metrics.fleet_keys(), ["lab/b"]);
        let out = text(&registry);
        assert!(out.lines().any(|l| l == "p2psensor_fleets 1"), "{out}");
        assert!(!out.contains("network=\"mainnet\""), "the deleted fleet's crawl series are gone\n{out}");
        assert!(metrics.retain_fleets(|_| true).is_empty());
    }
}
