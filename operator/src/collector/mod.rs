//! The collector: gRPC ingest of the cumulative reports that sensor and relay pods push, and their
//! aggregation per `SensorFleet` and per `RelayNode` (docs/architecture.md).
//!
//! One report's path: [`service`] (tonic `Collector::Push`) → [`store::ReportStore::ingest`]
//! (validate, keep only the newest report per owner and sender) → [`store::ReportStore::publish`]
//! on the operator's status tick (forget silent senders, recompute every owner's aggregate with the
//! pure functions of [`aggregate`]) → the status writers read [`store::ReportStore::fleet`] and
//! [`store::ReportStore::relay`]. [`metrics`] counts reports by result without per-object labels.
//!
//! A fleet's `punch` sidecars report as senders `<pod>-punch` ([`aggregate::is_punch_report`]):
//! they are not counted as sensors; their PeerIds become the fleet's hole-punch targets
//! ([`aggregate::punch_targets`], written into the fleet's ConfigMap by `fleet::reconcile`), and
//! their attempts count for the RelayNode they name.
//!
//! A fleet's `crawl` sidecars report as senders `<pod>-crawl` ([`aggregate::is_crawl_report`]):
//! they are not counted as sensors either; their crawl summaries become the fleet's
//! `status.crawl` ([`aggregate::crawl_stats`]).
//!
//! Reporting is push, cumulative and idempotent: an operator that restarts starts empty and is
//! complete again after the next round of reports.

pub mod aggregate;
pub mod metrics;
pub mod service;
pub mod store;
pub mod stored;

pub use aggregate::{FleetAggregate, RelayAggregate, aggregate_fleet, aggregate_relay};
pub use metrics::CollectorMetrics;
pub use service::{CollectorService, serve};
pub use store::{Ingest, IngestError, OwnerKey, OwnerKind, PublishStats, ReportStore, StoreLimits};
pub use stored::StoredReport;

#[cfg(test)]
mod fixture_tests;
