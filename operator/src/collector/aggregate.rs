//! Pure aggregation of stored reports into what a `SensorFleet` or `RelayNode` status shows.
//!
//! No I/O and no clock: `now` is a parameter, so every function here is tested from YAML
//! fixtures (`operator/tests/fixtures/collector/`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sensor_report::{PeerIdSketch, TIME_TO_DIRECT_BUCKETS, bucket_quantile_ms};

use super::stored::StoredReport;
use crate::crd::{
    ErrorClassCount, FleetCrawlStats, FleetPeerCounts, HolePunchStats, SensorSummary, TransportStats, UserAgentCount,
};

/// Most user agents a fleet aggregate lists.
pub const MAX_FLEET_USER_AGENTS: usize = 10;
/// Most per-sensor summaries a fleet aggregate lists (the rest are only counted).
pub const MAX_SENSOR_SUMMARIES: usize = 50;

/// `ts` as a status time: whole seconds, because that is what a `metav1.Time` keeps (k8s-openapi
/// writes RFC 3339 seconds). A finer time never equals the status read back, so every status
/// write was followed by a second, no-op write when the watch delivered it (seen on a real API
/// server: two status patches per resource per interval).
pub fn status_time(ts: Timestamp) -> Time {
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

/// What the sensors of one SensorFleet reported, as its status shows it, and the hole-punch
/// targets of its `punch` sidecars. Sensor counts, peers and summaries come from the listeners'
/// reports only; punch clients' reports ([`is_punch_report`]) only feed `punch_targets`, and
/// crawlers' reports ([`is_crawl_report`]) only feed `crawl`.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetAggregate {
    /// Sensors (senders that are neither punch clients nor crawlers) with a stored report.
    pub senders: i32,
    /// Senders whose latest report was received within the report timeout.
    pub reporting: i32,
    /// Verdict sums over senders and the distinct peers across the fleet (exact or estimated).
    pub peers: FleetPeerCounts,
    /// User agents summed over senders' top lists, at most [`MAX_FLEET_USER_AGENTS`], by peers
    /// descending then name ascending.
    pub top_user_agents: Vec<UserAgentCount>,
    /// Newest receive time of any sender's report.
    pub last_report_time: Option<Timestamp>,
    /// One line per sender sorted by name, at most [`MAX_SENSOR_SUMMARIES`].
    pub summaries: Vec<SensorSummary>,
    /// Accepted inbound connections, all time, summed over senders.
    pub connections_accepted: u64,
    /// Rejected inbound connections, all time, summed over senders.
    pub connections_rejected: u64,
    /// Punch clients (senders of [`is_punch_report`] reports) with a stored report, of any age.
    pub punch_senders: i32,
    /// Base58 PeerIds of the fleet's punch clients that report and hold a reservation, sorted and
    /// de-duplicated: the targets file of the fleet's sidecars (see [`punch_targets`]).
    pub punch_targets: Vec<String>,
    /// Punch reports whose `hole_punch.peer_id` is not a libp2p PeerId (left out of the targets).
    pub invalid_punch_peer_ids: usize,
    /// What the fleet's crawl sidecars reported (see [`crawl_stats`]); `None` without crawl
    /// reports.
    pub crawl: Option<FleetCrawlStats>,
}

/// What one RelayNode and the sensors punching through it reported, as its status shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelayAggregate {
    /// The relay pod's newest report was received within the report timeout.
    pub reporting: bool,
    /// Base58 libp2p PeerId from the newest relay report (`None` before one arrived).
    pub peer_id: Option<String>,
    /// The newest relay report's listen addresses, each ending in `/p2p/<peer_id>`, sorted and
    /// de-duplicated.
    pub multiaddrs: Vec<String>,
    /// Reservations held on the relay (newest relay report).
    pub reservations_active: i64,
    /// Circuits open through the relay (newest relay report).
    pub circuits_active: i64,
    /// DCUtR attempts through this relay summed over the punching sensors.
    pub hole_punch: HolePunchStats,
    /// Newest receive time of the relay pod's own report (punch reports do not count).
    pub last_report_time: Option<Timestamp>,
}

/// True when `then` is more than `limit` before `now` (a report from the future is never old).
pub fn older_than(then: Timestamp, now: Timestamp, limit: Duration) -> bool {
    let age_ms = i128::from(now.as_millisecond()) - i128::from(then.as_millisecond());
    age_ms > 0 && age_ms.unsigned_abs() > limit.as_millis()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `successes / attempts` in percent with one decimal, at most 100; `None` for 0 attempts.
pub fn success_rate(successes: u64, attempts: u64) -> Option<f64> {
    (attempts > 0).then(|| ((successes as f64 * 1000.0 / attempts as f64).round() / 10.0).min(100.0))
}

/// True for the report of a hole-punch client (`sensor punch`, sender `<pod>-punch`): a
/// `HolePunchSummary` and no peer summary. Its sender is a fleet's punch member, not a sensor.
pub fn is_punch_report(r: &StoredReport) -> bool {
    r.report.hole_punch.is_some() && r.report.peers.is_none()
}

/// True for the report of a crawl sidecar (`sensor crawl`, sender `<pod>-crawl`): a
/// `CrawlSummary` and neither a peer nor a hole-punch summary. Its sender is a fleet's crawler,
/// not a sensor.
pub fn is_crawl_report(r: &StoredReport) -> bool {
    r.report.crawl.is_some() && r.report.peers.is_none() && r.report.hole_punch.is_none()
}

/// The crawl figures of the crawl reports among `reports` (others are skipped); `None` when there
/// are none. `crawlers` counts those received within `report_timeout`. Every crawler maps the
/// whole network, so `known_nodes` and `reachable_nodes` are the maximum over the stored crawlers
/// (like sensors' peer counts, a silent crawler's figures count until the store forgets it), not
/// a sum. The last round's figures (duration, end, visits, failures by class) are those of the
/// crawler whose last round finished most recently (ties: newest report, then sender name);
/// absent while no crawler has finished a round.
pub fn crawl_stats<'a>(
    reports: impl IntoIterator<Item = &'a StoredReport>,
    now: Timestamp,
    report_timeout: Duration,
) -> Option<FleetCrawlStats> {
    let crawlers: Vec<&StoredReport> = reports.into_iter().filter(|r| is_crawl_report(r)).collect();
    let summaries = || crawlers.iter().filter_map(|r| r.report.crawl.as_ref().map(|c| (*r, c)));
    if crawlers.is_empty() {
        return None;
    }
    let mut stats = FleetCrawlStats {
        crawlers: to_i32(crawlers.iter().filter(|r| !older_than(r.received_at, now, report_timeout)).count()),
        known_nodes: to_i64(summaries().map(|(_, c)| c.known_nodes).max().unwrap_or(0)),
        reachable_nodes: to_i64(summaries().map(|(_, c)| c.reachable_nodes).max().unwrap_or(0)),
        ..FleetCrawlStats::default()
    };
    let latest = summaries().filter(|(_, c)| c.last_finished_unix_ms > 0).max_by(|(a, ca), (b, cb)| {
        ca.last_finished_unix_ms
            .cmp(&cb.last_finished_unix_ms)
            .then_with(|| a.received_at.cmp(&b.received_at))
            .then_with(|| b.sender().cmp(a.sender()))
    });
    if let Some((_, c)) = latest {
        stats.last_crawl_duration_ms = Some(to_i64(c.last_duration_ms));
        stats.last_crawl_time = Timestamp::from_millisecond(c.last_finished_unix_ms).ok().map(status_time);
        stats.last_visited = to_i64(c.last_visited);
        stats.last_reachable = to_i64(c.last_reachable);
        stats.unreachable_by_class = c
            .last_unreachable_by_class
            .iter()
            .map(|e| ErrorClassCount { error_class: e.error_class.clone(), visits: to_i64(e.visits) })
            .collect();
        stats
            .unreachable_by_class
            .sort_by(|a, b| b.visits.cmp(&a.visits).then_with(|| a.error_class.cmp(&b.error_class)));
    }
    Some(stats)
}

/// The hole-punch targets among `reports` (any reports of one fleet; others are skipped): the
/// `hole_punch.peer_id` of every punch report received within `report_timeout` whose client holds
/// a reservation (`reservation_held`; without one it cannot be punched to), parsed as a libp2p
/// PeerId, in canonical base58, sorted and de-duplicated. Also returns how many punch reports
/// carry a non-empty PeerId that does not parse (dropped, whatever their age).
pub fn punch_targets<'a>(
    reports: impl IntoIterator<Item = &'a StoredReport>,
    now: Timestamp,
    report_timeout: Duration,
) -> (Vec<String>, usize) {
    let mut targets = BTreeSet::new();
    let mut invalid = 0;
    for r in reports.into_iter().filter(|r| is_punch_report(r)) {
        let Some(punch) = r.report.hole_punch.as_ref().filter(|p| !p.peer_id.is_empty()) else { continue };
        match libp2p_identity::PeerId::from_str(&punch.peer_id) {
            Err(_) => invalid += 1,
            Ok(id) if punch.reservation_held && !older_than(r.received_at, now, report_timeout) => {
                targets.insert(id.to_string());
            }
            Ok(_) => {}
        }
    }
    (targets.into_iter().collect(), invalid)
}

/// Aggregates the stored reports of one SensorFleet (all with that owner). `report_timeout`
/// decides who counts as reporting; `exact_unique_bound` caps the exact union of peer ids.
///
/// `peers.unique_across_fleet` is the exact union of the listed peer ids when every sender's list
/// is complete and the union has at most `exact_unique_bound` ids; otherwise it is the estimate of
/// the merged sketches (±2 % typical) and `unique_is_estimate` is true.
pub fn aggregate_fleet(
    reports: &[StoredReport],
    now: Timestamp,
    report_timeout: Duration,
    exact_unique_bound: usize,
) -> FleetAggregate {
    let reporting = |r: &StoredReport| !older_than(r.received_at, now, report_timeout);
    let crawl = crawl_stats(reports, now, report_timeout);
    let (punches, sensors): (Vec<&StoredReport>, Vec<&StoredReport>) =
        reports.iter().filter(|r| !is_crawl_report(r)).partition(|r| is_punch_report(r));
    let punch_senders = to_i32(punches.len());
    let (punch_targets, invalid_punch_peer_ids) = punch_targets(punches, now, report_timeout);
    let (mut public, mut private, mut unknown, mut accepted, mut rejected) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut user_agents: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &sensors {
        let Some(p) = &r.report.peers else { continue };
        public = public.saturating_add(p.public);
        private = private.saturating_add(p.private);
        unknown = unknown.saturating_add(p.unknown);
        accepted = accepted.saturating_add(p.connections_accepted);
        rejected = rejected.saturating_add(p.connections_rejected);
        for ua in &p.top_user_agents {
            let sum = user_agents.entry(ua.user_agent.as_str()).or_default();
            *sum = sum.saturating_add(ua.peers);
        }
    }
    let mut top_user_agents: Vec<(&str, u64)> = user_agents.into_iter().collect();
    top_user_agents.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let top_user_agents = top_user_agents
        .into_iter()
        .take(MAX_FLEET_USER_AGENTS)
        .map(|(user_agent, peers)| UserAgentCount { user_agent: user_agent.to_owned(), peers: to_i64(peers) })
        .collect();

    let mut by_name = sensors.clone();
    by_name.sort_by(|a, b| a.sender().cmp(b.sender()));
    let summaries = by_name
        .into_iter()
        .take(MAX_SENSOR_SUMMARIES)
        .map(|r| {
            let p = r.report.peers.clone().unwrap_or_default();
            SensorSummary {
                name: r.sender().to_owned(),
                reporting: reporting(r),
                public: to_i64(p.public),
                private: to_i64(p.private),
                unknown: to_i64(p.unknown),
                last_report_time: Some(status_time(r.received_at)),
            }
        })
        .collect();

    let (unique_across_fleet, unique_is_estimate) = unique_peers(&sensors, exact_unique_bound);
    FleetAggregate {
        senders: to_i32(sensors.len()),
        reporting: to_i32(sensors.iter().filter(|r| reporting(r)).count()),
        peers: FleetPeerCounts {
            public: to_i64(public),
            private: to_i64(private),
            unknown: to_i64(unknown),
            unique_across_fleet: to_i64(unique_across_fleet),
            unique_is_estimate,
        },
        top_user_agents,
        last_report_time: sensors.iter().map(|r| r.received_at).max(),
        summaries,
        connections_accepted: accepted,
        connections_rejected: rejected,
        punch_senders,
        punch_targets,
        invalid_punch_peer_ids,
        crawl,
    }
}

/// Distinct peer ids over `reports`: (count, is_estimate).
fn unique_peers(reports: &[&StoredReport], exact_unique_bound: usize) -> (u64, bool) {
    let complete = reports.iter().all(|r| r.report.peers.as_ref().is_none_or(|p| p.peer_ids_complete));
    if complete {
        let mut union: HashSet<&[u8; 16]> = HashSet::new();
        let within_bound = reports.iter().all(|r| {
            r.peer_ids.iter().all(|id| {
                union.insert(id);
                union.len() <= exact_unique_bound
            })
        });
        if within_bound {
            return (union.len() as u64, false);
        }
    }
    // Each sender's full sketch: the one it sent (incomplete lists) or one built from its list.
    let mut merged = PeerIdSketch::new();
    for r in reports {
        merged.merge(&r.full_sketch());
    }
    (merged.estimate(), true)
}

/// Aggregates one RelayNode: `relay_reports` are the relay pods' own reports (owner RelayNode),
/// `punch_reports` the sensor reports of the same namespace whose `hole_punch.relay` names this
/// relay (from any fleet). Relay state comes from the newest relay report; hole-punch counters,
/// per-transport counters and time-to-direct histograms are summed over `punch_reports`, and
/// `time_to_direct_p50_ms` and `_p95_ms` are quantiles of the merged histogram.
pub fn aggregate_relay(
    relay_reports: &[StoredReport],
    punch_reports: &[StoredReport],
    now: Timestamp,
    report_timeout: Duration,
) -> RelayAggregate {
    let newest = relay_reports.iter().max_by(|a, b| {
        a.received_at
            .cmp(&b.received_at)
            .then_with(|| a.order().cmp(&b.order()))
            .then_with(|| a.sender().cmp(b.sender()))
    });
    let mut aggregate = RelayAggregate {
        reporting: newest.is_some_and(|r| !older_than(r.received_at, now, report_timeout)),
        last_report_time: newest.map(|r| r.received_at),
        hole_punch: hole_punch_stats(punch_reports),
        ..RelayAggregate::default()
    };
    if let Some(relay) = newest.and_then(|r| r.report.relay.as_ref()) {
        aggregate.peer_id = (!relay.peer_id.is_empty()).then(|| relay.peer_id.clone());
        let suffix = format!("/p2p/{}", relay.peer_id);
        let addrs: BTreeSet<String> = relay
            .listen_addrs
            .iter()
            .map(|a| if relay.peer_id.is_empty() || a.contains("/p2p/") { a.clone() } else { format!("{a}{suffix}") })
            .collect();
        aggregate.multiaddrs = addrs.into_iter().collect();
        aggregate.reservations_active = to_i64(relay.reservations_active);
        aggregate.circuits_active = to_i64(relay.circuits_active);
    }
    aggregate
}

fn hole_punch_stats(punch_reports: &[StoredReport]) -> HolePunchStats {
    let (mut attempts, mut successes, mut failures) = (0u64, 0u64, 0u64);
    let (mut kaspa_handshakes, mut kaspa_handshake_failures) = (0u64, 0u64);
    let mut buckets = [0u64; TIME_TO_DIRECT_BUCKETS];
    let mut by_transport: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for punch in punch_reports.iter().filter_map(|r| r.report.hole_punch.as_ref()) {
        attempts = attempts.saturating_add(punch.attempts);
        successes = successes.saturating_add(punch.successes);
        failures = failures.saturating_add(punch.failures);
        kaspa_handshakes = kaspa_handshakes.saturating_add(punch.kaspa_handshakes);
        kaspa_handshake_failures = kaspa_handshake_failures.saturating_add(punch.kaspa_handshake_failures);
        if punch.time_to_direct_ms_buckets.len() == TIME_TO_DIRECT_BUCKETS {
            for (sum, n) in buckets.iter_mut().zip(&punch.time_to_direct_ms_buckets) {
                *sum = sum.saturating_add(*n);
            }
        }
        for t in &punch.by_transport {
            let (a, s) = by_transport.entry(t.transport.as_str()).or_default();
            *a = a.saturating_add(t.attempts);
            *s = s.saturating_add(t.successes);
        }
    }
    HolePunchStats {
        attempts: to_i64(attempts),
        successes: to_i64(successes),
        failures: to_i64(failures),
        success_rate: success_rate(successes, attempts),
        time_to_direct_p50_ms: bucket_quantile_ms(&buckets, 0.5).map(to_i64),
        time_to_direct_p95_ms: bucket_quantile_ms(&buckets, 0.95).map(to_i64),
        kaspa_handshakes: to_i64(kaspa_handshakes),
        kaspa_handshake_failures: to_i64(kaspa_handshake_failures),
        by_transport: by_transport
            .into_iter()
            .map(|(transport, (attempts, successes))| TransportStats {
                transport: transport.to_owned(),
                attempts: to_i64(attempts),
                successes: to_i64(successes),
                success_rate: success_rate(successes, attempts),
            })
            .collect(),
    }
}

#[cfg(test)]
mod status_time_tests {
    use super::*;

    #[test]
    fn a_status_time_survives_the_round_trip_through_the_api_server() {
        let t: Timestamp = "2026-12-05T10:28:00.085641Z".parse().unwrap();
        let written = status_time(t);
        let read_back: Time = serde_json::from_value(serde_json::to_value(&written).unwrap()).unwrap();
        assert_eq!(read_back, written, "what is written equals what the watch delivers");
        assert_eq!(written.0.as_second(), t.as_second());
    }
}
