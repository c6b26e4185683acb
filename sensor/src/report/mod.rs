//! The cumulative report pushed to the operator's collector (docs/architecture.md).
//!
//! Every `report.interval_ms` the [`Reporter`] reads a [`Snapshot`] of the whole event database
//! (peers by latest verdict, connection totals, top user agents, every peer id), turns it into a
//! `sensor_report::v1::Report` with the pure [`build_report`], and pushes it with the generated
//! tonic `Collector` client. Reports are whole summaries, never deltas: the collector keeps the
//! newest per sender, so a lost push or an operator restart loses nothing.
//!
//! - [`snapshot`]: the consistent database read (blocking; run on `spawn_blocking`).
//! - [`summary`]: snapshot → report (pure).
//! - [`client`]: the task, its timing, metrics and logging.
//!
//! `sensor relay` uses the same task with [`Source::Relay`]: its reports carry a `RelaySummary`
//! (built by the pure [`build_relay_report`]) read from the relay's memory, and no peer summary.
//! `sensor punch` uses [`Source::Punch`]: its reports carry a `HolePunchSummary` (built by the
//! pure [`build_punch_report`]) of every attempt stored through `punch.relay_node`, and no peer
//! summary. `sensor crawl`'s continuous mode uses [`Source::Crawl`]: its reports carry a
//! `CrawlSummary` (built by the pure [`crawl::build_crawl_report`]) of its stored crawls.
//!
//! The protobuf messages and the sketch live in the `sensor-report` crate, which has no P2P
//! dependency so the operator can use it.

pub mod client;
pub mod crawl;
pub mod snapshot;
pub mod summary;

pub use client::{Reporter, ReporterSettings, Source};
pub use snapshot::Snapshot;
pub use summary::{BuiltReport, Origin, PunchLive, build_punch_report, build_relay_report, build_report};
