//! The collector's Prometheus metrics (prometheus-client 0.25), without a label per object:
//!
//! - `operator_collector_reports_total{result}`: reports received, by result — `stored`, `stale`,
//!   a validation error kind (`invalid_owner`, `invalid_sender`, `over_bound`, `invalid_peer_id`,
//!   `invalid_sketch`, `invalid_histogram`), `too_many_owners` or `too_many_senders`.
//! - `operator_collector_owners`, `operator_collector_senders`: what the store tracks, set on
//!   every publish.
//! - `operator_collector_report_bytes`: encoded size of received reports, bytes.
//! - `operator_collector_invalid_punch_peer_ids`: punch reports whose `hole_punch.peer_id` is not
//!   a libp2p PeerId (left out of the fleets' hole-punch targets), set on every publish.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::store::{Ingest, IngestError, PublishStats};

/// Every value of the `result` label, registered at zero so dashboards see them before they occur.
pub const REPORT_RESULTS: [&str; 10] = [
    "stored",
    "stale",
    "invalid_owner",
    "invalid_sender",
    "over_bound",
    "invalid_peer_id",
    "invalid_sketch",
    "invalid_histogram",
    "too_many_owners",
    "too_many_senders",
];

/// Label set of `operator_collector_reports_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportResultLabels {
    /// One of [`REPORT_RESULTS`].
    pub result: &'static str,
}

/// The collector's metrics; shared by the gRPC service and the publish loop.
#[derive(Debug)]
pub struct CollectorMetrics {
    reports: Family<ReportResultLabels, Counter>,
    owners: Gauge,
    senders: Gauge,
    report_bytes: Histogram,
    invalid_punch_peer_ids: Gauge,
}

impl CollectorMetrics {
    /// Creates the metrics and registers them into `registry` (names above, unprefixed).
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            reports: Family::default(),
            owners: Gauge::default(),
            senders: Gauge::default(),
            // 256 B .. 4 MiB (the largest accepted message), ×4 per bucket.
            report_bytes: Histogram::new(exponential_buckets(256.0, 4.0, 8)),
            invalid_punch_peer_ids: Gauge::default(),
        };
        for result in REPORT_RESULTS {
            let _ = metrics.reports.get_or_create(&ReportResultLabels { result });
        }
        registry.register(
            "operator_collector_reports",
            "Reports received by the collector, by result",
            metrics.reports.clone(),
        );
        registry.register(
            "operator_collector_owners",
            "SensorFleets and RelayNodes with at least one reporting pod",
            metrics.owners.clone(),
        );
        registry.register("operator_collector_senders", "Pods whose latest report is kept", metrics.senders.clone());
        registry.register(
            "operator_collector_report_bytes",
            "Encoded size of received reports, bytes",
            metrics.report_bytes.clone(),
        );
        registry.register(
            "operator_collector_invalid_punch_peer_ids",
            "Hole-punch clients whose reported PeerId is invalid (left out of the fleets' punch targets)",
            metrics.invalid_punch_peer_ids.clone(),
        );
        Arc::new(metrics)
    }

    /// Counts one report by the outcome of [`ReportStore::ingest`](super::ReportStore::ingest).
    pub fn record_ingest(&self, outcome: &Result<Ingest, IngestError>) {
        let result = match outcome {
            Ok(ingest) => ingest.kind(),
            Err(e) => e.kind(),
        };
        self.reports.get_or_create(&ReportResultLabels { result }).inc();
    }

    /// Records the encoded size of one received report, bytes.
    pub fn observe_report_bytes(&self, bytes: usize) {
        self.report_bytes.observe(bytes as f64);
    }

    /// Sets the owner and sender gauges from a [`ReportStore::publish`](super::ReportStore::publish).
    pub fn record_publish(&self, stats: &PublishStats) {
        self.owners.set(i64::try_from(stats.owners).unwrap_or(i64::MAX));
        self.senders.set(i64::try_from(stats.senders).unwrap_or(i64::MAX));
        self.invalid_punch_peer_ids.set(i64::try_from(stats.invalid_punch_peer_ids).unwrap_or(i64::MAX));
    }
}
