//! What every reconciliation shares: the client, settings, caches of owned objects, the
//! collector's reports, metrics, the event recorder and the per-object retry state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use crate::backoff::Backoff;
use crate::collector::store::ReportStore;
use crate::crd::{RelayNode, SensorFleet};
use crate::metrics::Metrics;

/// What the operator adds to every fleet and relay (also `crate::fleet::build::BuildSettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// Image when `spec.image` is absent (`--sensor-image`).
    pub sensor_image: String,
    /// Collector URL sensors push reports to (`--collector-endpoint`).
    pub collector_endpoint: String,
    /// Sensors' report interval, ms.
    pub report_interval_ms: u64,
}

/// Operator-wide settings (from the command line).
#[derive(Debug, Clone)]
pub struct Settings {
    pub build: BuildSettings,
    /// Success requeue and collector publish interval: status changes driven by reports are
    /// written at most once per fleet per this interval.
    pub status_interval: Duration,
    /// A sensor whose newest report is older than this is not `reporting`.
    pub report_timeout: Duration,
    /// Every child is re-applied at least this often, even when its spec hash is unchanged
    /// (reverts manual edits of fields the operator owns).
    pub resync_interval: Duration,
    /// For this long after the collector starts, report-derived status fields are kept as the
    /// resources' `.status` has them instead of being rebuilt from partial aggregates: after an
    /// operator restart the collector is empty until each sensor reports again, and writing that
    /// would flap every fleet's peers to 0 and back (found on a real API server). `operator run`
    /// sets two report intervals plus one status interval; zero turns it off.
    pub report_warm_up: Duration,
    /// Report timestamps in `.status` are refreshed at most this often when nothing else in the
    /// status changed ([`crate::freshness`]); zero writes every change.
    pub status_heartbeat: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            build: BuildSettings {
                sensor_image: String::new(),
                collector_endpoint: String::new(),
                report_interval_ms: 10_000,
            },
            status_interval: Duration::from_secs(10),
            report_timeout: Duration::from_secs(60),
            resync_interval: Duration::from_secs(600),
            report_warm_up: Duration::ZERO,
            status_heartbeat: Duration::ZERO,
        }
    }
}

/// Read-only caches (reflector stores) of everything the controllers own or reference. Filled
/// by label-selected watches in `run`, by hand in tests.
#[derive(Clone)]
pub struct Caches {
    pub fleets: Store<SensorFleet>,
    pub relays: Store<RelayNode>,
    pub stateful_sets: Store<StatefulSet>,
    pub daemon_sets: Store<DaemonSet>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub config_maps: Store<ConfigMap>,
    pub service_accounts: Store<ServiceAccount>,
    pub secrets: Store<Secret>,
}

impl Caches {
    /// True once every cache has its first complete list. Before that a child missing from its
    /// cache is indistinguishable from one that does not exist, and would be applied again
    /// (found on a real API server: every ServiceAccount re-applied after an operator restart,
    /// whose reconciles began before the ServiceAccount cache was listed).
    pub fn all_synced(&self) -> bool {
        synced(&self.fleets)
            && synced(&self.relays)
            && synced(&self.stateful_sets)
            && synced(&self.daemon_sets)
            && synced(&self.deployments)
            && synced(&self.services)
            && synced(&self.config_maps)
            && synced(&self.service_accounts)
            && synced(&self.secrets)
    }
}

/// True once `store` has its first complete list. Never blocks: a store's readiness is a oneshot
/// that wakes only its latest waiter, so it is polled rather than awaited.
pub fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// When each object's children were last applied in full. A process that starts trusts the
/// spec-hash annotations it finds: an object's first full apply comes one `every` after this
/// process first saw it, not at once, so that an operator restart writes nothing when nothing
/// changed (a forced apply of every child of every resource was found on a real API server).
#[derive(Debug, Default)]
pub struct Resync {
    last_full: Mutex<HashMap<String, Instant>>,
}

impl Resync {
    /// True when `key` was applied in full (or first seen) by this process `every` or longer ago.
    pub fn due(&self, key: &str, every: Duration) -> bool {
        let mut last = self.last_full.lock().unwrap_or_else(|e| e.into_inner());
        last.entry(key.to_string()).or_insert_with(Instant::now).elapsed() >= every
    }

    /// Records a complete full apply of `key`.
    pub fn done(&self, key: &str) {
        self.last_full.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), Instant::now());
    }
}

/// Clock of the reconcilers (replaced in tests).
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// Shared by every reconciliation of both controllers.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub caches: Caches,
    pub reports: Arc<ReportStore>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub backoff: Backoff,
    pub resync: Resync,
    pub clock: Clock,
}

impl Context {
    /// Current time from the context's clock.
    pub fn now(&self) -> jiff::Timestamp {
        (self.clock)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_apply_is_due_one_interval_after_first_sight_not_at_it() {
        let resync = Resync::default();
        let hour = Duration::from_secs(3600);
        assert!(!resync.due("ns/a", hour), "a restarted operator does not re-apply at once");
        assert!(!resync.due("ns/a", hour));
        assert!(resync.due("ns/a", Duration::ZERO), "due once the interval has passed");
        resync.done("ns/b");
        assert!(!resync.due("ns/b", hour));
    }
}
