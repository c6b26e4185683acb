use super::*;
use sensor_report::v1::{CrawlSummary, ErrorClassCount, HolePunchSummary, Owner, PeerSummary, RelaySummary};

const TIMEOUT: Duration = Duration::from_secs(60);
const FORGET: Duration = Duration::from_secs(600);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + secs).unwrap()
}

fn report(kind: &str, namespace: &str, name: &str, sender: &str, started: i64, sequence: u64) -> Report {
    Report {
        owner: Some(Owner { namespace: namespace.into(), kind: kind.into(), name: name.into() }),
        sender: sender.into(),
        started_at_unix_ms: started,
        sequence,
        peers: Some(PeerSummary { public: sequence, peer_ids_complete: true, ..Default::default() }),
        ..Default::default()
    }
}

fn sensor(fleet: &str, sender: &str, started: i64, sequence: u64) -> Report {
    report(OWNER_SENSOR_FLEET, "lab", fleet, sender, started, sequence)
}

fn punch(namespace: &str, fleet: &str, sender: &str, relay: &str, attempts: u64, successes: u64) -> Report {
    let mut r = report(OWNER_SENSOR_FLEET, namespace, fleet, sender, 1, 1);
    r.hole_punch = Some(HolePunchSummary {
        attempts,
        successes,
        failures: attempts - successes,
        relay: relay.into(),
        ..Default::default()
    });
    r
}

#[test]
fn newest_report_per_sender_wins() {
    let store = ReportStore::new(StoreLimits::default());
    assert_eq!(store.ingest(sensor("alpha", "alpha-0", 1000, 2), at(0)), Ok(Ingest::Stored));
    assert_eq!(store.ingest(sensor("alpha", "alpha-0", 1000, 1), at(1)), Ok(Ingest::Stale));
    assert_eq!(store.ingest(sensor("alpha", "alpha-0", 1000, 2), at(2)), Ok(Ingest::Stale));
    assert_eq!(store.ingest(sensor("alpha", "alpha-0", 1000, 5), at(3)), Ok(Ingest::Stored));
    // A restarted sensor starts at sequence 1 with a later start time.
    assert_eq!(store.ingest(sensor("alpha", "alpha-0", 2000, 1), at(4)), Ok(Ingest::Stored));
    assert_eq!(store.ingest(sensor("alpha", "alpha-0", 1000, 9), at(5)), Ok(Ingest::Stale));
    assert_eq!((store.owners_total(), store.senders_total()), (1, 1));

    assert_eq!(store.fleet("lab", "alpha"), None, "nothing is visible before the first publish");
    store.publish(at(6), TIMEOUT, FORGET);
    let fleet = store.fleet("lab", "alpha").unwrap();
    assert_eq!((fleet.senders, fleet.peers.public), (1, 1));
    assert_eq!(fleet.last_report_time, Some(at(4)), "a stale report does not refresh the receive time");
    assert_eq!(store.fleet("lab", "beta"), None);
    assert_eq!(store.fleet("other", "alpha"), None);
}

#[test]
fn changes_show_once_per_publish() {
    let store = ReportStore::new(StoreLimits::default());
    store.ingest(sensor("alpha", "alpha-0", 1, 1), at(0)).unwrap();
    store.publish(at(0), TIMEOUT, FORGET);
    store.ingest(sensor("alpha", "alpha-0", 1, 7), at(1)).unwrap();
    store.ingest(sensor("alpha", "alpha-1", 1, 3), at(1)).unwrap();
    assert_eq!(store.fleet("lab", "alpha").unwrap().peers.public, 1);
    let stats = store.publish(at(2), TIMEOUT, FORGET);
    assert_eq!(stats, PublishStats { owners: 1, senders: 2, forgotten: 0, invalid_punch_peer_ids: 0 });
    let fleet = store.fleet("lab", "alpha").unwrap();
    assert_eq!((fleet.senders, fleet.reporting, fleet.peers.public), (2, 2, 10));
}

#[test]
fn invalid_reports_are_refused_with_their_kind() {
    let store = ReportStore::new(StoreLimits::default());
    let mut bad = sensor("alpha", "alpha-0", 1, 1);
    bad.peers.as_mut().unwrap().peer_ids.push(vec![0; 15]);
    let err = store.ingest(bad, at(0)).unwrap_err();
    assert_eq!(err, IngestError::Invalid(ReportError::InvalidPeerId(15)));
    assert_eq!(err.kind(), "invalid_peer_id");
    let err = store.ingest(report("Pod", "lab", "x", "x-0", 1, 1), at(0)).unwrap_err();
    assert_eq!(err.kind(), "invalid_owner");
    let err = store.ingest(sensor("alpha", "", 1, 1), at(0)).unwrap_err();
    assert_eq!(err.kind(), "invalid_sender");
    assert_eq!((store.owners_total(), store.senders_total()), (0, 0));
}

#[test]
fn bounds_refuse_new_owners_and_senders_but_not_known_ones() {
    let limits = StoreLimits { max_owners: 1, max_senders_per_owner: 2, ..StoreLimits::default() };
    let store = ReportStore::new(limits);
    store.ingest(sensor("alpha", "alpha-0", 1, 1), at(0)).unwrap();
    store.ingest(sensor("alpha", "alpha-1", 1, 1), at(0)).unwrap();
    let err = store.ingest(sensor("alpha", "alpha-2", 1, 1), at(0)).unwrap_err();
    assert_eq!(err, IngestError::TooManySenders { owner: "SensorFleet/lab/alpha".into(), max: 2 });
    assert_eq!(err.kind(), "too_many_senders");
    let err = store.ingest(sensor("beta", "beta-0", 1, 1), at(0)).unwrap_err();
    assert_eq!(err, IngestError::TooManyOwners { max: 1 });
    assert_eq!(err.kind(), "too_many_owners");
    assert_eq!(store.ingest(sensor("alpha", "alpha-1", 1, 2), at(1)), Ok(Ingest::Stored));
    assert_eq!((store.owners_total(), store.senders_total()), (1, 2));

    let none = ReportStore::new(StoreLimits { max_senders_per_owner: 0, ..StoreLimits::default() });
    assert_eq!(none.ingest(sensor("alpha", "alpha-0", 1, 1), at(0)).unwrap_err().kind(), "too_many_senders");
    assert_eq!(none.owners_total(), 0, "a refused first sender leaves no empty owner behind");
}

#[test]
fn silent_senders_are_forgotten_on_publish() {
    let store = ReportStore::new(StoreLimits::default());
    store.ingest(sensor("alpha", "alpha-0", 1, 1), at(0)).unwrap();
    store.ingest(sensor("alpha", "alpha-1", 1, 1), at(500)).unwrap();
    // At 600 s alpha-0 is exactly `forget_after` old: kept, but not reporting.
    assert_eq!(
        store.publish(at(600), TIMEOUT, FORGET),
        PublishStats { owners: 1, senders: 2, forgotten: 0, invalid_punch_peer_ids: 0 }
    );
    assert_eq!(store.fleet("lab", "alpha").unwrap().reporting, 0);
    assert_eq!(
        store.publish(at(601), TIMEOUT, FORGET),
        PublishStats { owners: 1, senders: 1, forgotten: 1, invalid_punch_peer_ids: 0 }
    );
    let fleet = store.fleet("lab", "alpha").unwrap();
    assert_eq!(fleet.summaries.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["alpha-1"]);
    assert_eq!(
        store.publish(at(1200), TIMEOUT, FORGET),
        PublishStats { owners: 0, senders: 0, forgotten: 1, invalid_punch_peer_ids: 0 }
    );
    assert_eq!(store.fleet("lab", "alpha"), None);
    assert_eq!((store.owners_total(), store.senders_total()), (0, 0));
    // A forgotten sender comes back with its next report, whatever its sequence.
    assert_eq!(store.ingest(sensor("alpha", "alpha-0", 1, 1), at(1300)), Ok(Ingest::Stored));
}

#[test]
fn relay_aggregate_takes_punches_of_every_fleet_in_its_namespace() {
    let store = ReportStore::new(StoreLimits::default());
    let mut relay = report(OWNER_RELAY_NODE, "lab", "r1", "r1-0", 1, 1);
    relay.peers = None;
    relay.relay = Some(RelaySummary {
        peer_id: "12D3KooWRelay".into(),
        listen_addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
        reservations_active: 3,
        circuits_active: 1,
        ..Default::default()
    });
    // A RelayNode report that carries hole-punch counters is not a sensor's: ignored.
    relay.hole_punch = Some(HolePunchSummary { attempts: 1000, relay: "r1".into(), ..Default::default() });
    store.ingest(relay, at(0)).unwrap();
    store.ingest(punch("lab", "alpha", "alpha-0", "r1", 10, 7), at(0)).unwrap();
    store.ingest(punch("lab", "beta", "beta-0", "r1", 10, 5), at(0)).unwrap();
    store.ingest(punch("other", "gamma", "gamma-0", "r1", 100, 100), at(0)).unwrap();
    store.ingest(punch("lab", "alpha", "alpha-1", "r2", 4, 1), at(0)).unwrap();
    store.publish(at(10), TIMEOUT, FORGET);

    let r1 = store.relay("lab", "r1").unwrap();
    assert!(r1.reporting);
    assert_eq!(r1.peer_id.as_deref(), Some("12D3KooWRelay"));
    assert_eq!(r1.multiaddrs, ["/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWRelay"]);
    assert_eq!((r1.reservations_active, r1.circuits_active), (3, 1));
    assert_eq!((r1.hole_punch.attempts, r1.hole_punch.successes, r1.hole_punch.failures), (20, 12, 8));
    assert_eq!(r1.hole_punch.success_rate, Some(60.0));
    assert_eq!(r1.last_report_time, Some(at(0)));

    // Sensors name r2, which never reported itself: its punches are still counted.
    let r2 = store.relay("lab", "r2").unwrap();
    assert!(!r2.reporting);
    assert_eq!((r2.peer_id, r2.last_report_time, r2.hole_punch.attempts), (None, None, 4));
    assert_eq!(store.relay("other", "r1").unwrap().hole_punch.attempts, 100);
    assert_eq!(store.relay("lab", "r3"), None);
    // The punching sensors still count in their own fleets.
    assert_eq!(store.fleet("lab", "alpha").unwrap().senders, 2);
}

/// The report of a `sensor punch` sidecar of fleet `alpha`: no peer summary, its own PeerId.
fn punch_client(sender: &str, sequence: u64, peer_id: &str, reservation_held: bool) -> Report {
    let mut r = report(OWNER_SENSOR_FLEET, "lab", "alpha", sender, 1, sequence);
    r.peers = None;
    r.hole_punch = Some(HolePunchSummary {
        relay: "r1".into(),
        attempts: 2,
        successes: 1,
        failures: 1,
        peer_id: peer_id.into(),
        reservation_held,
        reachability: "private-cone".into(),
        ..Default::default()
    });
    r
}

#[test]
fn punch_clients_publish_their_fleet_targets_and_invalid_peer_ids_are_counted() {
    const A: &str = "12D3KooW9tHTtS3inCZiYykw4u5G4frbjVFqhkmJX12gSNCVeH3e";
    const B: &str = "12D3KooW9xCm2jWjNVrwh51SWCQBMYdMyeU3NpT85QhLVkF6PcNM";
    let store = ReportStore::new(StoreLimits::default());
    store.ingest(sensor("alpha", "alpha-0", 1, 1), at(0)).unwrap();
    store.ingest(punch_client("alpha-0-punch", 1, B, true), at(0)).unwrap();
    store.ingest(punch_client("alpha-1-punch", 1, A, true), at(0)).unwrap();
    store.ingest(punch_client("alpha-2-punch", 1, "garbage", true), at(0)).unwrap();
    store.ingest(punch_client("alpha-3-punch", 1, B, false), at(0)).unwrap();
    let stats = store.publish(at(1), TIMEOUT, FORGET);
    assert_eq!((stats.senders, stats.invalid_punch_peer_ids), (5, 1));
    let fleet = store.fleet("lab", "alpha").unwrap();
    assert_eq!(fleet.punch_targets, [A, B], "sorted, de-duplicated, only clients holding a reservation");
    assert_eq!((fleet.senders, fleet.punch_senders, fleet.invalid_punch_peer_ids), (1, 4, 1));
    assert_eq!(fleet.summaries.len(), 1, "punch clients are not sensors");
    // Their attempts still reach the relay's aggregate.
    assert_eq!(store.relay("lab", "r1").unwrap().hole_punch.attempts, 8);

    // alpha-1's client goes silent: past the report timeout it is no target any more (long
    // before it is forgotten); alpha-0's client restarted with a new identity.
    store.ingest(punch_client("alpha-0-punch", 2, A, true), at(50)).unwrap();
    store.publish(at(61), TIMEOUT, FORGET);
    assert_eq!(store.fleet("lab", "alpha").unwrap().punch_targets, [A]);
    store.publish(at(120), TIMEOUT, FORGET);
    assert_eq!(store.fleet("lab", "alpha").unwrap().punch_targets, Vec::<String>::new());

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = super::super::CollectorMetrics::register(&mut registry);
    metrics.record_publish(&stats);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("operator_collector_invalid_punch_peer_ids 1"), "{text}");
}

/// The report of a `sensor crawl` sidecar of fleet `alpha`: only a crawl summary.
fn crawler(sender: &str, sequence: u64, reachable: u64, finished_secs: i64) -> Report {
    let mut r = report(OWNER_SENSOR_FLEET, "lab", "alpha", sender, 1, sequence);
    r.peers = None;
    r.crawl = Some(CrawlSummary {
        network: "kaspa-mainnet".into(),
        crawls: sequence,
        known_nodes: 2 * reachable,
        reachable_nodes: reachable,
        last_visited: 2 * reachable,
        last_reachable: reachable,
        last_duration_ms: 30_000,
        last_finished_unix_ms: at(finished_secs).as_millisecond(),
        last_unreachable_by_class: vec![ErrorClassCount { error_class: "timeout".into(), visits: reachable }],
    });
    r
}

#[test]
fn crawlers_publish_the_fleet_crawl_figures_and_are_not_sensors() {
    let store = ReportStore::new(StoreLimits::default());
    store.ingest(sensor("alpha", "alpha-0", 1, 1), at(0)).unwrap();
    store.ingest(crawler("alpha-0-crawl", 1, 300, -5), at(0)).unwrap();
    store.ingest(crawler("alpha-1-crawl", 1, 320, -20), at(0)).unwrap();
    store.publish(at(1), TIMEOUT, FORGET);
    let fleet = store.fleet("lab", "alpha").unwrap();
    assert_eq!((fleet.senders, fleet.reporting, fleet.summaries.len(), fleet.punch_senders), (1, 1, 1, 0));
    let crawl = fleet.crawl.unwrap();
    assert_eq!((crawl.crawlers, crawl.known_nodes, crawl.reachable_nodes), (2, 640, 320));
    assert_eq!((crawl.last_reachable, crawl.last_crawl_time.map(|t| t.0)), (300, Some(at(-5))), "alpha-0's round");
    // A second round of alpha-1 finishes later; then alpha-0 goes silent and is forgotten.
    store.ingest(crawler("alpha-1-crawl", 2, 330, 30), at(30)).unwrap();
    store.publish(at(70), TIMEOUT, FORGET);
    let crawl = store.fleet("lab", "alpha").unwrap().crawl.unwrap();
    assert_eq!((crawl.crawlers, crawl.reachable_nodes, crawl.last_reachable), (1, 330, 330));
    store.publish(at(700), TIMEOUT, FORGET);
    assert_eq!(store.fleet("lab", "alpha").map(|f| f.crawl), None, "everyone forgotten");
}
