//! The pure aggregations tested from YAML fixtures in `operator/tests/fixtures/collector/`.
//!
//! A fixture gives reports in a readable form (peer ids as ranges of synthetic peer numbers,
//! time-to-direct as samples in ms, crawl failures as a class → visits map) plus `now` and the
//! report timeout, and the expected aggregate.
//! Reports go through the wire form and [`sensor_report::validate`] exactly as pushed ones do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sensor_report::v1::{
    CrawlSummary, ErrorClassCount, HolePunchSummary, Owner, PeerSummary, RelaySummary, Report, TransportOutcome,
};
use sensor_report::{
    MAX_EXACT_PEER_IDS, OWNER_RELAY_NODE, OWNER_SENSOR_FLEET, PeerIdSketch, TIME_TO_DIRECT_BUCKETS,
    time_to_direct_bucket,
};
use serde::Deserialize;

use super::aggregate::{FleetAggregate, RelayAggregate, aggregate_fleet, aggregate_relay};
use super::stored::StoredReport;
use crate::crd::{FleetCrawlStats, FleetPeerCounts, HolePunchStats, SensorSummary, UserAgentCount};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fixture {
    #[allow(dead_code)]
    description: String,
    now: Time,
    report_timeout_secs: u64,
    #[serde(default = "default_exact_bound")]
    exact_unique_bound: usize,
    #[serde(default)]
    fleet: Option<FleetCase>,
    #[serde(default)]
    relay: Option<RelayCase>,
}

fn default_exact_bound() -> usize {
    100_000
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FleetCase {
    reports: Vec<FixtureReport>,
    expect: ExpectFleet,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RelayCase {
    #[serde(default)]
    relay_reports: Vec<FixtureReport>,
    #[serde(default)]
    punch_reports: Vec<FixtureReport>,
    expect: ExpectRelay,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FixtureReport {
    /// `SensorFleet/<name>` or `RelayNode/<name>` in namespace `lab`; default `SensorFleet/alpha`.
    #[serde(default)]
    owner: Option<String>,
    sender: String,
    #[serde(default)]
    started_at_unix_ms: i64,
    #[serde(default)]
    sequence: u64,
    received_at: Time,
    #[serde(default)]
    peers: Option<FixturePeers>,
    #[serde(default)]
    relay: Option<FixtureRelay>,
    #[serde(default)]
    hole_punch: Option<FixturePunch>,
    #[serde(default)]
    crawl: Option<FixtureCrawl>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FixturePeers {
    #[serde(default)]
    public: u64,
    #[serde(default)]
    private: u64,
    #[serde(default)]
    unknown: u64,
    #[serde(default)]
    connections_accepted: u64,
    #[serde(default)]
    connections_rejected: u64,
    /// Half-open ranges `[start, end)` of synthetic peer numbers the sensor has seen.
    #[serde(default)]
    ids: Vec<[u32; 2]>,
    /// Whether the ids are listed one by one; default: when there are at most 4096 (as a sensor).
    #[serde(default)]
    list_ids: Option<bool>,
    /// User agent → distinct peers.
    #[serde(default)]
    top_user_agents: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FixtureRelay {
    peer_id: String,
    #[serde(default)]
    listen_addrs: Vec<String>,
    #[serde(default)]
    reservations_active: u64,
    #[serde(default)]
    circuits_active: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FixturePunch {
    relay: String,
    attempts: u64,
    successes: u64,
    failures: u64,
    /// Transport → [attempts, successes].
    #[serde(default)]
    by_transport: BTreeMap<String, [u64; 2]>,
    /// Time to direct connection of each success, ms.
    #[serde(default)]
    time_to_direct_ms: Vec<u64>,
    /// The punch client's own PeerId (what its fleet's members punch to).
    #[serde(default)]
    peer_id: String,
    #[serde(default)]
    reservation_held: bool,
    /// Kaspa handshakes over punched connections: completed, failed.
    #[serde(default)]
    kaspa_handshakes: u64,
    #[serde(default)]
    kaspa_handshake_failures: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FixtureCrawl {
    #[serde(default)]
    network: String,
    #[serde(default)]
    crawls: u64,
    #[serde(default)]
    known_nodes: u64,
    #[serde(default)]
    reachable_nodes: u64,
    #[serde(default)]
    last_visited: u64,
    #[serde(default)]
    last_reachable: u64,
    #[serde(default)]
    last_duration_ms: u64,
    /// End of the last round; absent = no round finished yet.
    #[serde(default)]
    last_finished_at: Option<Time>,
    /// Error class → failed visits in the last round.
    #[serde(default)]
    last_unreachable_by_class: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectFleet {
    senders: i32,
    reporting: i32,
    peers: FleetPeerCounts,
    /// Allowed relative error of `peers.uniqueAcrossFleet`, percent (for estimates); default 0.
    #[serde(default)]
    unique_tolerance_percent: f64,
    #[serde(default)]
    top_user_agents: Vec<UserAgentCount>,
    #[serde(default)]
    last_report_time: Option<Time>,
    #[serde(default)]
    summaries: Vec<SensorSummary>,
    #[serde(default)]
    connections_accepted: u64,
    #[serde(default)]
    connections_rejected: u64,
    #[serde(default)]
    punch_senders: i32,
    #[serde(default)]
    punch_targets: Vec<String>,
    #[serde(default)]
    invalid_punch_peer_ids: usize,
    #[serde(default)]
    crawl: Option<FleetCrawlStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectRelay {
    reporting: bool,
    #[serde(default)]
    peer_id: Option<String>,
    #[serde(default)]
    multiaddrs: Vec<String>,
    #[serde(default)]
    reservations_active: i64,
    #[serde(default)]
    circuits_active: i64,
    hole_punch: HolePunchStats,
    #[serde(default)]
    last_report_time: Option<Time>,
}

/// The 16-byte peer id of synthetic peer number `n`.
fn peer_id(n: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[12..].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
    id
}

impl FixtureReport {
    fn to_report(&self) -> Report {
        let (kind, name) =
            self.owner.as_deref().unwrap_or("SensorFleet/alpha").split_once('/').expect("owner kind/name");
        assert!([OWNER_SENSOR_FLEET, OWNER_RELAY_NODE].contains(&kind), "owner kind {kind}");
        Report {
            owner: Some(Owner { namespace: "lab".into(), kind: kind.into(), name: name.into() }),
            sender: self.sender.clone(),
            started_at_unix_ms: self.started_at_unix_ms,
            sequence: self.sequence,
            peers: self.peers.as_ref().map(FixturePeers::to_summary),
            relay: self.relay.as_ref().map(|r| RelaySummary {
                peer_id: r.peer_id.clone(),
                listen_addrs: r.listen_addrs.clone(),
                reservations_active: r.reservations_active,
                circuits_active: r.circuits_active,
                ..Default::default()
            }),
            hole_punch: self.hole_punch.as_ref().map(FixturePunch::to_summary),
            crawl: self.crawl.as_ref().map(FixtureCrawl::to_summary),
            ..Default::default()
        }
    }

    /// Through the wire form and validation, as the store receives it.
    fn to_stored(&self) -> StoredReport {
        let report = self.to_report();
        let sketch = sensor_report::validate(&report).unwrap_or_else(|e| panic!("{}: {e}", self.sender));
        StoredReport::new(report, sketch, self.received_at.0)
    }
}

impl FixturePeers {
    fn to_summary(&self) -> PeerSummary {
        let ids: BTreeSet<u32> = self.ids.iter().flat_map(|[start, end]| *start..*end).collect();
        let listed = self.list_ids.unwrap_or(ids.len() <= MAX_EXACT_PEER_IDS);
        let mut sketch = PeerIdSketch::new();
        ids.iter().for_each(|n| sketch.insert(&peer_id(*n)));
        let mut top_user_agents: Vec<_> = self
            .top_user_agents
            .iter()
            .map(|(ua, peers)| sensor_report::v1::UserAgentCount { user_agent: ua.clone(), peers: *peers })
            .collect();
        top_user_agents.sort_by_key(|ua| std::cmp::Reverse(ua.peers));
        PeerSummary {
            public: self.public,
            private: self.private,
            unknown: self.unknown,
            connections_accepted: self.connections_accepted,
            connections_rejected: self.connections_rejected,
            top_user_agents,
            peer_ids: if listed { ids.iter().map(|n| peer_id(*n).to_vec()).collect() } else { Vec::new() },
            peer_ids_complete: listed,
            peer_id_sketch: if ids.is_empty() { Vec::new() } else { sketch.to_bytes() },
            distinct_peers: ids.len() as u64,
            ..Default::default()
        }
    }
}

impl FixturePunch {
    fn to_summary(&self) -> HolePunchSummary {
        let mut buckets = vec![0u64; TIME_TO_DIRECT_BUCKETS];
        self.time_to_direct_ms.iter().for_each(|ms| buckets[time_to_direct_bucket(*ms)] += 1);
        HolePunchSummary {
            attempts: self.attempts,
            successes: self.successes,
            failures: self.failures,
            by_transport: self
                .by_transport
                .iter()
                .map(|(t, [attempts, successes])| TransportOutcome {
                    transport: t.clone(),
                    attempts: *attempts,
                    successes: *successes,
                })
                .collect(),
            time_to_direct_ms_buckets: if self.time_to_direct_ms.is_empty() { Vec::new() } else { buckets },
            relay: self.relay.clone(),
            peer_id: self.peer_id.clone(),
            reservation_held: self.reservation_held,
            kaspa_handshakes: self.kaspa_handshakes,
            kaspa_handshake_failures: self.kaspa_handshake_failures,
            ..Default::default()
        }
    }
}

impl FixtureCrawl {
    fn to_summary(&self) -> CrawlSummary {
        let mut by_class: Vec<ErrorClassCount> = self
            .last_unreachable_by_class
            .iter()
            .map(|(class, visits)| ErrorClassCount { error_class: class.clone(), visits: *visits })
            .collect();
        by_class.sort_by_key(|c| std::cmp::Reverse(c.visits));
        CrawlSummary {
            network: self.network.clone(),
            crawls: self.crawls,
            known_nodes: self.known_nodes,
            reachable_nodes: self.reachable_nodes,
            last_visited: self.last_visited,
            last_reachable: self.last_reachable,
            last_duration_ms: self.last_duration_ms,
            last_finished_unix_ms: self.last_finished_at.as_ref().map_or(0, |t| t.0.as_millisecond()),
            last_unreachable_by_class: by_class,
        }
    }
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/collector")
}

fn load(name: &str) -> Fixture {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stored(reports: &[FixtureReport]) -> Vec<StoredReport> {
    reports.iter().map(FixtureReport::to_stored).collect()
}

fn check(name: &str) {
    let fixture = load(name);
    let timeout = Duration::from_secs(fixture.report_timeout_secs);
    assert!(fixture.fleet.is_some() || fixture.relay.is_some(), "{name}: neither fleet nor relay");
    if let Some(case) = fixture.fleet {
        let mut got = aggregate_fleet(&stored(&case.reports), fixture.now.0, timeout, fixture.exact_unique_bound);
        let e = case.expect;
        let (truth, estimate) = (e.peers.unique_across_fleet as f64, got.peers.unique_across_fleet as f64);
        let tolerance = truth * e.unique_tolerance_percent / 100.0;
        eprintln!("{name}: unique {estimate} (truth {truth})");
        assert!((estimate - truth).abs() <= tolerance, "{name}: unique {estimate} vs {truth} ± {tolerance}");
        got.peers.unique_across_fleet = e.peers.unique_across_fleet;
        let want = FleetAggregate {
            senders: e.senders,
            reporting: e.reporting,
            peers: e.peers,
            top_user_agents: e.top_user_agents,
            last_report_time: e.last_report_time.map(|t| t.0),
            summaries: e.summaries,
            connections_accepted: e.connections_accepted,
            connections_rejected: e.connections_rejected,
            punch_senders: e.punch_senders,
            punch_targets: e.punch_targets,
            invalid_punch_peer_ids: e.invalid_punch_peer_ids,
            crawl: e.crawl,
        };
        assert_eq!(got, want, "{name}: fleet aggregate");
    }
    if let Some(case) = fixture.relay {
        let got = aggregate_relay(&stored(&case.relay_reports), &stored(&case.punch_reports), fixture.now.0, timeout);
        let e = case.expect;
        let want = RelayAggregate {
            reporting: e.reporting,
            peer_id: e.peer_id,
            multiaddrs: e.multiaddrs,
            reservations_active: e.reservations_active,
            circuits_active: e.circuits_active,
            hole_punch: e.hole_punch,
            last_report_time: e.last_report_time.map(|t| t.0),
        };
        assert_eq!(got, want, "{name}: relay aggregate");
    }
}

const FIXTURES: [&str; 10] = [
    "fleet-crawlers.yaml",
    "fleet-crawlers-only-stale.yaml",
    "fleet-punch-targets.yaml",
    "fleet-shared-peers.yaml",
    "fleet-over-exact-bound.yaml",
    "fleet-union-over-bound.yaml",
    "fleet-stale-sender.yaml",
    "fleet-top-user-agents.yaml",
    "relay-two-fleets.yaml",
    "empty.yaml",
];

#[test]
fn two_sensors_sharing_peers_count_the_exact_union() {
    check("fleet-shared-peers.yaml");
}

#[test]
fn a_sender_over_the_exact_bound_makes_an_estimate() {
    check("fleet-over-exact-bound.yaml");
}

#[test]
fn a_union_over_the_operator_bound_makes_an_estimate() {
    check("fleet-union-over-bound.yaml");
}

#[test]
fn a_stale_sender_is_not_reporting() {
    check("fleet-stale-sender.yaml");
}

#[test]
fn user_agents_merge_and_stay_bounded() {
    check("fleet-top-user-agents.yaml");
}

#[test]
fn punch_clients_become_targets_and_are_not_counted_as_sensors() {
    check("fleet-punch-targets.yaml");
}

#[test]
fn crawlers_feed_the_crawl_figures_and_are_not_counted_as_sensors() {
    check("fleet-crawlers.yaml");
}

#[test]
fn stale_crawlers_keep_their_figures_but_do_not_count_as_crawling() {
    check("fleet-crawlers-only-stale.yaml");
}

#[test]
fn a_relay_sums_punches_from_two_fleets() {
    check("relay-two-fleets.yaml");
}

#[test]
fn empty_input_gives_empty_aggregates() {
    check("empty.yaml");
}

#[test]
fn every_fixture_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn summaries_stop_at_fifty_sorted_by_name() {
    let now: Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
    let reports: Vec<StoredReport> = (0..60)
        .rev()
        .map(|i| {
            FixtureReport {
                owner: None,
                sender: format!("alpha-{i:02}"),
                started_at_unix_ms: 1,
                sequence: 1,
                received_at: Time(now),
                peers: None,
                relay: None,
                hole_punch: None,
                crawl: None,
            }
            .to_stored()
        })
        .collect();
    let got = aggregate_fleet(&reports, now, Duration::from_secs(60), 100_000);
    assert_eq!((got.senders, got.reporting, got.summaries.len()), (60, 60, 50));
    assert_eq!(got.summaries.first().map(|s| s.name.as_str()), Some("alpha-00"));
    assert_eq!(got.summaries.last().map(|s| s.name.as_str()), Some("alpha-49"));
    assert_eq!(got.summaries[0].last_report_time, Some(Time(now)));
}
