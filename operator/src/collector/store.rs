//! The newest report of every sender, and the aggregates published from them.
//!
//! [`ReportStore::ingest`] keeps one report per (owner, sender): reporting is cumulative, so the
//! newest report carries everything and older ones are dropped. [`ReportStore::publish`] runs on
//! the operator's status tick: it forgets senders that went silent, recomputes the aggregate of
//! every owner outside the lock, and swaps the published set, so readers ([`ReportStore::fleet`],
//! [`ReportStore::relay`]) see report-driven changes at most once per tick.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use sensor_report::v1::Report;
use sensor_report::{OWNER_RELAY_NODE, OWNER_SENSOR_FLEET, ReportError};

use super::aggregate::{FleetAggregate, RelayAggregate, aggregate_fleet, aggregate_relay, older_than};
use super::stored::StoredReport;

/// Bounds on what the collector keeps; a report beyond one is refused with an [`IngestError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Distinct owners (SensorFleets plus RelayNodes) tracked at once. Default 10,000.
    pub max_owners: usize,
    /// Senders (pods) tracked per owner. Default 1,000.
    pub max_senders_per_owner: usize,
    /// Largest exact union of peer ids per fleet; beyond it `uniqueAcrossFleet` is the merged
    /// sketch's estimate. Default 100,000.
    pub exact_unique_bound: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self { max_owners: 10_000, max_senders_per_owner: 1_000, exact_unique_bound: 100_000 }
    }
}

/// The kind of custom resource a report belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    SensorFleet,
    RelayNode,
}

impl OwnerKind {
    /// The `Owner.kind` string of the report.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::SensorFleet => OWNER_SENSOR_FLEET,
            OwnerKind::RelayNode => OWNER_RELAY_NODE,
        }
    }

    /// Parses `Owner.kind`; `None` for anything but `SensorFleet` and `RelayNode`.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            OWNER_SENSOR_FLEET => Some(OwnerKind::SensorFleet),
            OWNER_RELAY_NODE => Some(OwnerKind::RelayNode),
            _ => None,
        }
    }
}

/// The custom resource a report belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub namespace: String,
    pub kind: OwnerKind,
    pub name: String,
}

impl std::fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What [`ReportStore::ingest`] did with a valid report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingest {
    /// The report is now the sender's latest.
    Stored,
    /// The sender already has a report at least as new (same or larger (started_at, sequence));
    /// this one was dropped. Not an error: pushes are idempotent.
    Stale,
}

impl Ingest {
    /// Metric label: `stored` or `stale`.
    pub fn kind(self) -> &'static str {
        match self {
            Ingest::Stored => "stored",
            Ingest::Stale => "stale",
        }
    }
}

/// Why a report was refused. [`IngestError::Invalid`] maps to gRPC INVALID_ARGUMENT, the bounds
/// to RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The report failed [`sensor_report::validate`].
    #[error(transparent)]
    Invalid(#[from] ReportError),
    /// The report's owner is new and the store already tracks `max` owners.
    #[error("the collector already tracks {max} owners")]
    TooManyOwners { max: usize },
    /// The report's sender is new and its owner already has `max` senders.
    #[error("{owner} already has {max} senders")]
    TooManySenders { owner: String, max: usize },
}

impl IngestError {
    /// Metric label: the validation error's kind, `too_many_owners` or `too_many_senders`.
    pub fn kind(&self) -> &'static str {
        match self {
            IngestError::Invalid(e) => e.kind(),
            IngestError::TooManyOwners { .. } => "too_many_owners",
            IngestError::TooManySenders { .. } => "too_many_senders",
        }
    }
}

/// Sizes after a [`ReportStore::publish`], for the collector's gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Owners with at least one sender.
    pub owners: usize,
    /// Senders over all owners.
    pub senders: usize,
    /// Senders dropped by this publish because they were silent for longer than `forget_after`.
    pub forgotten: usize,
    /// Punch reports, over all fleets, whose PeerId is invalid (left out of the targets).
    pub invalid_punch_peer_ids: usize,
}

#[derive(Default)]
struct Live {
    owners: HashMap<OwnerKey, HashMap<String, StoredReport>>,
    senders: usize,
}

/// Published aggregates by namespace, then name.
#[derive(Default)]
struct Published {
    fleets: HashMap<String, HashMap<String, FleetAggregate>>,
    relays: HashMap<String, HashMap<String, RelayAggregate>>,
}

/// The newest report per (owner, sender) and the last published aggregates. Thread-safe; every
/// method is synchronous and short, and no lock is held across an `.await`.
pub struct ReportStore {
    limits: StoreLimits,
    live: Mutex<Live>,
    published: Mutex<Published>,
    /// Serialises publishers so an older snapshot never replaces a newer one.
    publishing: Mutex<()>,
    /// When this store was made (the collector started): see [`ReportStore::uptime`].
    created: std::time::Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked: every update is a single insert.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReportStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            live: Mutex::new(Live::default()),
            published: Mutex::new(Published::default()),
            publishing: Mutex::new(()),
            created: std::time::Instant::now(),
        }
    }

    /// Time since the store was made. Until every live sender has reported once (one report
    /// interval after an operator restart) its aggregates are partial: the reconcilers keep the
    /// report-derived status as it was meanwhile ([`crate::context::Settings::report_warm_up`]).
    pub fn uptime(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    /// The bounds this store enforces.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Validates `report` and keeps it as its sender's latest when it is newer than the stored one
    /// (by (started_at_unix_ms, sequence)); `now` becomes its receive time. Readers see it after
    /// the next [`publish`](Self::publish).
    ///
    /// Errors: [`IngestError::Invalid`] when validation fails; [`IngestError::TooManyOwners`] /
    /// [`IngestError::TooManySenders`] when a new owner or sender would exceed [`StoreLimits`].
    pub fn ingest(&self, report: Report, now: Timestamp) -> Result<Ingest, IngestError> {
        // Validation decodes the sketch: done before taking the lock.
        let sketch = sensor_report::validate(&report)?;
        let key = {
            let owner = report.owner.as_ref().ok_or_else(|| ReportError::InvalidOwner("missing".into()))?;
            let kind = OwnerKind::parse(&owner.kind)
                .ok_or_else(|| ReportError::InvalidOwner(format!("kind {:?}", owner.kind)))?;
            OwnerKey { namespace: owner.namespace.clone(), kind, name: owner.name.clone() }
        };
        let sender = report.sender.clone();
        let stored = StoredReport::new(report, sketch, now);
        let replaced;
        {
            let mut live = lock(&self.live);
            let Live { owners, senders } = &mut *live;
            if !owners.contains_key(&key) {
                if owners.len() >= self.limits.max_owners {
                    return Err(IngestError::TooManyOwners { max: self.limits.max_owners });
                }
                if self.limits.max_senders_per_owner == 0 {
                    return Err(IngestError::TooManySenders { owner: key.to_string(), max: 0 });
                }
            }
            let by_sender = owners.entry(key.clone()).or_default();
            match by_sender.get_mut(&sender) {
                Some(existing) if stored.order() <= existing.order() => return Ok(Ingest::Stale),
                Some(existing) => replaced = Some(std::mem::replace(existing, stored)),
                None => {
                    if by_sender.len() >= self.limits.max_senders_per_owner {
                        let max = self.limits.max_senders_per_owner;
                        return Err(IngestError::TooManySenders { owner: key.to_string(), max });
                    }
                    by_sender.insert(sender, stored);
                    *senders += 1;
                    replaced = None;
                }
            }
        }
        // The replaced report (up to 64 KiB of peer ids) is freed outside the lock.
        drop(replaced);
        Ok(Ingest::Stored)
    }

    /// Forgets senders whose latest report is older than `forget_after`, then recomputes every
    /// owner's aggregate (`report_timeout` decides who counts as reporting) and publishes them,
    /// replacing the previous set. Aggregation runs outside the ingest lock. Returns the store's
    /// size for the collector's gauges.
    pub fn publish(&self, now: Timestamp, report_timeout: Duration, forget_after: Duration) -> PublishStats {
        let _publishing = lock(&self.publishing);
        let (snapshot, mut stats) = {
            let mut live = lock(&self.live);
            let mut forgotten = 0;
            live.owners.retain(|_, by_sender| {
                by_sender.retain(|_, r| {
                    let keep = !older_than(r.received_at, now, forget_after);
                    forgotten += usize::from(!keep);
                    keep
                });
                !by_sender.is_empty()
            });
            live.senders -= forgotten;
            let snapshot: Vec<(OwnerKey, Vec<StoredReport>)> = live
                .owners
                .iter()
                .map(|(key, by_sender)| (key.clone(), by_sender.values().cloned().collect()))
                .collect();
            let stats =
                PublishStats { owners: live.owners.len(), senders: live.senders, forgotten, invalid_punch_peer_ids: 0 };
            (snapshot, stats)
        };

        let mut published = Published::default();
        let mut relay_reports: HashMap<(String, String), Vec<StoredReport>> = HashMap::new();
        let mut punch_reports: HashMap<(String, String), Vec<StoredReport>> = HashMap::new();
        for (key, reports) in snapshot {
            match key.kind {
                OwnerKind::SensorFleet => {
                    for r in &reports {
                        if let Some(punch) = r.report.hole_punch.as_ref().filter(|p| !p.relay.is_empty()) {
                            punch_reports
                                .entry((key.namespace.clone(), punch.relay.clone()))
                                .or_default()
                                .push(r.clone());
                        }
                    }
                    let aggregate = aggregate_fleet(&reports, now, report_timeout, self.limits.exact_unique_bound);
                    stats.invalid_punch_peer_ids += aggregate.invalid_punch_peer_ids;
                    published.fleets.entry(key.namespace).or_default().insert(key.name, aggregate);
                }
                OwnerKind::RelayNode => {
                    relay_reports.insert((key.namespace, key.name), reports);
                }
            }
        }
        // A relay's aggregate exists once the relay or any sensor punching through it reported.
        let mut relays: Vec<(String, String)> = relay_reports.keys().chain(punch_reports.keys()).cloned().collect();
        relays.sort_unstable();
        relays.dedup();
        for (namespace, name) in relays {
            let key = (namespace, name);
            let own = relay_reports.get(&key).map_or(&[][..], Vec::as_slice);
            let punches = punch_reports.get(&key).map_or(&[][..], Vec::as_slice);
            let aggregate = aggregate_relay(own, punches, now, report_timeout);
            published.relays.entry(key.0).or_default().insert(key.1, aggregate);
        }
        *lock(&self.published) = published;
        stats
    }

    /// The aggregate of SensorFleet `namespace/name` as of the last [`publish`](Self::publish);
    /// `None` when none of its sensors has reported (or all were forgotten).
    pub fn fleet(&self, namespace: &str, name: &str) -> Option<FleetAggregate> {
        lock(&self.published).fleets.get(namespace)?.get(name).cloned()
    }

    /// The aggregate of RelayNode `namespace/name` as of the last [`publish`](Self::publish);
    /// `None` when neither the relay nor a sensor punching through it has reported.
    pub fn relay(&self, namespace: &str, name: &str) -> Option<RelayAggregate> {
        lock(&self.published).relays.get(namespace)?.get(name).cloned()
    }

    /// Owners with at least one live sender (not yet forgotten).
    pub fn owners_total(&self) -> usize {
        lock(&self.live).owners.len()
    }

    /// Live senders over all owners.
    pub fn senders_total(&self) -> usize {
        lock(&self.live).senders
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
