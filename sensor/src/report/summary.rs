//! The pure step of reporting: who sends + a database [`Snapshot`] → one
//! `sensor_report::v1::Report`. No I/O, no clock: the caller passes the sequence number and time.

use sensor_report::{
    MAX_EXACT_PEER_IDS, MAX_LIST_ITEMS, MAX_STRING_BYTES, MAX_TOP_USER_AGENTS, PeerIdSketch, TIME_TO_DIRECT_BUCKETS,
    time_to_direct_bucket,
    v1::{HolePunchSummary, Owner, PeerSummary, RelaySummary, Report, TransportOutcome, UserAgentCount},
};

use super::snapshot::Snapshot;
use crate::store::PunchSummary;
use sensor_core::Label;
use sensor_core::{config::Config, network::Network, reachability::Reachability};

/// Who a report is from and whom it belongs to; fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The custom resource the report belongs to (`SensorFleet` or `RelayNode`).
    pub owner: Owner,
    /// Unique within the owner: the pod name.
    pub sender: String,
    /// The `sensor_id` stamped on stored events.
    pub sensor_id: String,
    pub network: Network,
    /// Process start, Unix ms; with the sequence it orders this sender's reports.
    pub started_at_unix_ms: i64,
}

impl Origin {
    /// From `[report]` (owner, sender) and the top-level `sensor_id` and `network`.
    pub fn from_config(config: &Config, started_at_unix_ms: i64) -> Origin {
        let r = &config.report;
        Origin {
            owner: Owner {
                namespace: r.owner_namespace.trim().to_owned(),
                kind: r.owner_kind.clone(),
                name: r.owner_name.trim().to_owned(),
            },
            sender: config.report_sender(),
            sensor_id: config.sensor_id(),
            network: config.network,
            started_at_unix_ms,
        }
    }

    /// Report number `sequence`, generated at `generated_at_unix_ms` (Unix ms), with this origin's
    /// owner, sender, sensor id, network (short name) and start, the agent, and no summary: the
    /// one envelope every builder fills in.
    pub fn envelope(&self, sequence: u64, generated_at_unix_ms: i64) -> Report {
        Report {
            owner: Some(self.owner.clone()),
            sender: self.sender.clone(),
            sensor_id: self.sensor_id.clone(),
            network: self.network.short_name().to_owned(),
            started_at_unix_ms: self.started_at_unix_ms,
            sequence,
            generated_at_unix_ms,
            peers: None,
            relay: None,
            hole_punch: None,
            agent: agent(),
            crawl: None,
        }
    }
}

/// Builds report number `sequence` of a relay (`sensor relay`) from its in-memory `relay` state.
/// The peer summary is left out (a relay classifies no Kaspa peers) and `network` is empty. The
/// address list keeps its order, drops duplicates and addresses longer than [`MAX_STRING_BYTES`]
/// (a multiaddr cut in half is no address), and is cut to [`MAX_LIST_ITEMS`], so the report passes
/// the collector's `sensor_report::validate`.
pub fn build_relay_report(origin: &Origin, sequence: u64, generated_at_unix_ms: i64, relay: RelaySummary) -> Report {
    let mut listen_addrs: Vec<String> = Vec::with_capacity(relay.listen_addrs.len().min(MAX_LIST_ITEMS));
    for addr in relay.listen_addrs {
        if listen_addrs.len() < MAX_LIST_ITEMS && addr.len() <= MAX_STRING_BYTES && !listen_addrs.contains(&addr) {
            listen_addrs.push(addr);
        }
    }
    Report {
        network: String::new(),
        relay: Some(RelaySummary {
            peer_id: truncate(&relay.peer_id, MAX_STRING_BYTES).to_owned(),
            listen_addrs,
            ..relay
        }),
        ..origin.envelope(sequence, generated_at_unix_ms)
    }
}

/// What a hole-punch client's report says about the client itself, read when the report is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchLive {
    /// The client's base58 PeerId.
    pub peer_id: String,
    /// A reservation on the relay is held right now.
    pub reservation_held: bool,
    pub reachability: Reachability,
}

/// Builds report number `sequence` of a hole-punch client (`sensor punch`) from its stored
/// attempts through `relay_node`: a `HolePunchSummary` whose `relay` is `relay_node`, no peer
/// summary, empty `network` (the punch client classifies no Kaspa peers).
///
/// `attempts` counts every attempt that ran to a verdict (`cancelled` ones, cut short by a
/// shutdown, are left out), `successes` the `success` ones, `failures` the rest
/// (`failed`, `no_relay_connection`, `timeout`). `by_transport` has one entry per transport seen,
/// sorted by name (at most [`MAX_LIST_ITEMS`]); the histogram always has
/// [`TIME_TO_DIRECT_BUCKETS`] buckets.
pub fn build_punch_report(
    origin: &Origin,
    sequence: u64,
    generated_at_unix_ms: i64,
    relay_node: &str,
    live: &PunchLive,
    summary: &PunchSummary,
) -> Report {
    let (mut attempts, mut successes) = (0u64, 0u64);
    let mut by_transport: Vec<TransportOutcome> = Vec::new();
    for (transport, outcome, n) in &summary.by_transport_outcome {
        if outcome == "cancelled" {
            continue;
        }
        let success = if outcome == "success" { *n } else { 0 };
        attempts = attempts.saturating_add(*n);
        successes = successes.saturating_add(success);
        let name = truncate(transport, MAX_STRING_BYTES);
        match by_transport.iter_mut().find(|t| t.transport == name) {
            Some(t) => {
                t.attempts = t.attempts.saturating_add(*n);
                t.successes = t.successes.saturating_add(success);
            }
            None => {
                by_transport.push(TransportOutcome { transport: name.to_owned(), attempts: *n, successes: success })
            }
        }
    }
    by_transport.sort_by(|a, b| a.transport.cmp(&b.transport));
    by_transport.truncate(MAX_LIST_ITEMS);
    let mut buckets = vec![0u64; TIME_TO_DIRECT_BUCKETS];
    for (ms, n) in &summary.time_to_direct_ms {
        let bucket = &mut buckets[time_to_direct_bucket(*ms)];
        *bucket = bucket.saturating_add(*n);
    }
    Report {
        network: String::new(),
        hole_punch: Some(HolePunchSummary {
            attempts,
            successes,
            failures: attempts - successes,
            by_transport,
            time_to_direct_ms_buckets: buckets,
            relay: truncate(relay_node, MAX_STRING_BYTES).to_owned(),
            peer_id: truncate(&live.peer_id, MAX_STRING_BYTES).to_owned(),
            reservation_held: live.reservation_held,
            reachability: live.reachability.as_str().to_owned(),
            kaspa_handshakes: summary.kaspa_handshakes,
            kaspa_handshake_failures: summary.kaspa_handshake_failures,
        }),
        ..origin.envelope(sequence, generated_at_unix_ms)
    }
}

/// `Report.agent` of this build: `sensor/<crate version>`.
pub fn agent() -> String {
    format!("sensor/{}", env!("CARGO_PKG_VERSION"))
}

/// A built report and what had to be left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltReport {
    pub report: Report,
    /// Stored peer ids that are not 32 hex digits (16 bytes): in neither `peer_ids` nor the
    /// sketch, but still in `distinct_peers` and the verdict counts (they are rows of the table).
    pub skipped_peer_ids: u64,
}

/// Builds report number `sequence` (1, 2, 3, … per process) from `snapshot`, read at
/// `generated_at_unix_ms` (Unix ms).
///
/// `peers` carries the snapshot's counts as they are; `distinct_peers` is the exact row count of
/// the peer table. Every decodable peer id goes into the sketch; they are also listed one by one
/// when the snapshot has at most [`MAX_EXACT_PEER_IDS`] of them, and `peer_ids_complete` says the
/// list holds every peer (so it is false above the bound or when an id had to be skipped).
/// `top_user_agents` is re-sorted (peers descending, then name), cut to
/// [`MAX_TOP_USER_AGENTS`], and each agent to [`MAX_STRING_BYTES`] at a character boundary, so the
/// report passes the collector's `sensor_report::validate`.
pub fn build_report(origin: &Origin, sequence: u64, generated_at_unix_ms: i64, snapshot: &Snapshot) -> BuiltReport {
    let list = snapshot.peer_ids.len() <= MAX_EXACT_PEER_IDS;
    let mut sketch = PeerIdSketch::new();
    let mut peer_ids = Vec::with_capacity(if list { snapshot.peer_ids.len() } else { 0 });
    let (mut inserted, mut skipped) = (0u64, 0u64);
    for text in &snapshot.peer_ids {
        let mut id = [0u8; 16];
        if hex::decode_to_slice(text, &mut id).is_err() {
            skipped += 1;
            continue;
        }
        sketch.insert(&id);
        inserted += 1;
        if list {
            peer_ids.push(id.to_vec());
        }
    }
    let mut top: Vec<&(String, u64)> = snapshot.top_user_agents.iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top_user_agents = top
        .into_iter()
        .take(MAX_TOP_USER_AGENTS)
        .map(|(ua, peers)| UserAgentCount { user_agent: truncate(ua, MAX_STRING_BYTES).to_owned(), peers: *peers })
        .collect();
    let p = &snapshot.peers;
    let peers = PeerSummary {
        public: p.public,
        private: p.private,
        unknown: p.unknown,
        unclassified: p.unclassified,
        connections_accepted: snapshot.connections_accepted,
        connections_rejected: snapshot.connections_rejected,
        top_user_agents,
        peer_ids,
        peer_ids_complete: list && skipped == 0,
        peer_id_sketch: if inserted == 0 { Vec::new() } else { sketch.to_bytes() },
        distinct_peers: p.total,
    };
    let report = Report { peers: Some(peers), ..origin.envelope(sequence, generated_at_unix_ms) };
    BuiltReport { report, skipped_peer_ids: skipped }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(super) fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use sensor_report::{OWNER_SENSOR_FLEET, validate};

    use super::*;
    use crate::store::PeerCounts;

    fn origin() -> Origin {
        Origin {
            owner: Owner { namespace: "lab".into(), kind: OWNER_SENSOR_FLEET.into(), name: "fleet".into() },
            sender: "fleet-0".into(),
            sensor_id: "sensor-a".into(),
            network: Network::Testnet10,
            started_at_unix_ms: 1_700_000_000_000,
        }
    }

    fn live() -> PunchLive {
        PunchLive { peer_id: "12D3KooWPunch".into(), reservation_held: true, reachability: Reachability::PrivateCone }
    }

    /// Peer id `n` as stored: 16 bytes of lower-case hex.
    fn id(n: u32) -> String {
        hex::encode(id_bytes(n))
    }

    fn id_bytes(n: u32) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id[12..].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
        id
    }

    fn snapshot(peers: u32) -> Snapshot {
        Snapshot {
            peers: PeerCounts { total: peers.into(), public: 1, private: 2, unknown: 3, unclassified: 4 },
            connections_accepted: 11,
            connections_rejected: 7,
            top_user_agents: vec![("/kaspad:2.1.0/".into(), 5), ("/other/".into(), 2)],
            peer_ids: (0..peers).map(id).collect(),
        }
    }

    fn summary(report: &Report) -> &PeerSummary {
        report.peers.as_ref().expect("a sensor report has a peer summary")
    }

    #[test]
    fn counts_and_origin_are_copied() {
        let built = build_report(&origin(), 7, 1_700_000_001_234, &snapshot(3));
        let r = &built.report;
        assert_eq!(r.owner, Some(origin().owner));
        assert_eq!(
            (r.sender.as_str(), r.sensor_id.as_str(), r.network.as_str()),
            ("fleet-0", "sensor-a", "testnet-10")
        );
        assert_eq!(
            (r.started_at_unix_ms, r.sequence, r.generated_at_unix_ms),
            (1_700_000_000_000, 7, 1_700_000_001_234)
        );
        assert_eq!(r.agent, format!("sensor/{}", env!("CARGO_PKG_VERSION")));
        assert!(r.relay.is_none() && r.hole_punch.is_none());
        let p = summary(r);
        assert_eq!((p.public, p.private, p.unknown, p.unclassified, p.distinct_peers), (1, 2, 3, 4, 3));
        assert_eq!((p.connections_accepted, p.connections_rejected), (11, 7));
        let uas: Vec<_> = p.top_user_agents.iter().map(|u| (u.user_agent.as_str(), u.peers)).collect();
        assert_eq!(uas, [("/kaspad:2.1.0/", 5), ("/other/", 2)]);
        assert_eq!(built.skipped_peer_ids, 0);
        validate(r).expect("the collector accepts it");
    }

    #[test]
    fn peer_ids_are_listed_up_to_the_bound_and_always_sketched() {
        let small = build_report(&origin(), 1, 0, &snapshot(3)).report;
        let p = summary(&small);
        let expected: Vec<Vec<u8>> = (0..3).map(|n| id_bytes(n).to_vec()).collect();
        assert_eq!(p.peer_ids, expected);
        assert!(p.peer_ids_complete);
        assert_eq!(PeerIdSketch::from_bytes(&p.peer_id_sketch).unwrap().estimate(), 3);

        let bound = u32::try_from(MAX_EXACT_PEER_IDS).unwrap();
        let at_bound = build_report(&origin(), 1, 0, &snapshot(bound)).report;
        assert_eq!(summary(&at_bound).peer_ids.len(), MAX_EXACT_PEER_IDS);
        assert!(summary(&at_bound).peer_ids_complete);
        validate(&at_bound).expect("a full list is within the collector's bound");

        let over = build_report(&origin(), 1, 0, &snapshot(bound + 1)).report;
        let p = summary(&over);
        assert!(p.peer_ids.is_empty(), "above the bound only the sketch is sent");
        assert!(!p.peer_ids_complete);
        assert_eq!(p.distinct_peers, u64::from(bound) + 1, "the distinct count stays exact");
        let estimate = PeerIdSketch::from_bytes(&p.peer_id_sketch).unwrap().estimate() as f64;
        assert!((estimate - f64::from(bound + 1)).abs() / f64::from(bound + 1) < 0.05, "estimate {estimate}");
        validate(&over).expect("the collector accepts it");
    }

    #[test]
    fn undecodable_peer_ids_are_skipped_and_counted() {
        let mut snap = snapshot(2);
        snap.peer_ids.extend(["zz".repeat(16), "0011".into(), format!("{}00", id(9)), String::new()]);
        let built = build_report(&origin(), 1, 0, &snap);
        assert_eq!(built.skipped_peer_ids, 4);
        let p = summary(&built.report);
        assert_eq!(p.peer_ids, [id_bytes(0).to_vec(), id_bytes(1).to_vec()]);
        assert!(!p.peer_ids_complete, "the list misses the skipped peers");
        assert_eq!(PeerIdSketch::from_bytes(&p.peer_id_sketch).unwrap().estimate(), 2);
        validate(&built.report).expect("only 16-byte ids are sent");
    }

    #[test]
    fn no_peers_means_an_empty_complete_list_and_no_sketch() {
        let built = build_report(&origin(), 1, 0, &Snapshot::default());
        let p = summary(&built.report);
        assert!(p.peer_ids.is_empty() && p.peer_id_sketch.is_empty() && p.top_user_agents.is_empty());
        assert!(p.peer_ids_complete);
        assert_eq!(p.distinct_peers, 0);
        validate(&built.report).unwrap();
    }

    #[test]
    fn top_user_agents_are_sorted_and_bounded() {
        let mut snap = snapshot(1);
        // 25 agents in scrambled order; agent k has k peers, and two tie at 30.
        snap.top_user_agents = (1..=25u64).rev().map(|k| (format!("/ua-{k:02}/"), k)).collect();
        snap.top_user_agents.push(("/b-tie/".into(), 30));
        snap.top_user_agents.push(("/a-tie/".into(), 30));
        let long = "é".repeat(400); // 800 bytes
        snap.top_user_agents.push((long.clone(), 40));
        let built = build_report(&origin(), 1, 0, &snap);
        let uas = &summary(&built.report).top_user_agents;
        assert_eq!(uas.len(), MAX_TOP_USER_AGENTS);
        assert_eq!(uas[0].user_agent, long[..MAX_STRING_BYTES], "cut at a character boundary");
        assert_eq!((uas[1].user_agent.as_str(), uas[2].user_agent.as_str()), ("/a-tie/", "/b-tie/"));
        assert_eq!((uas[3].user_agent.as_str(), uas[3].peers), ("/ua-25/", 25));
        assert_eq!(uas[19].user_agent, "/ua-09/");
        assert!(uas.windows(2).all(|w| w[0].peers >= w[1].peers));
        validate(&built.report).expect("within the collector's bounds");
    }

    #[test]
    fn relay_reports_carry_the_relay_summary_and_pass_validation() {
        let mut origin = origin();
        origin.owner.kind = sensor_report::OWNER_RELAY_NODE.into();
        let mut addrs: Vec<String> = (0..40).map(|i| format!("/ip4/10.0.0.{i}/tcp/4001")).collect();
        addrs.insert(1, addrs[0].clone());
        addrs.insert(2, format!("/dns4/{}/tcp/1", "x".repeat(600)));
        let relay = RelaySummary {
            peer_id: "12D3KooWExample".into(),
            listen_addrs: addrs,
            reservations_active: 2,
            circuits_active: 1,
            reservations_accepted_total: 5,
            circuits_total: 3,
            reachability: "public".into(),
        };
        let report = build_relay_report(&origin, 4, 1_700_000_000_500, relay);
        assert!(validate(&report).is_ok());
        assert_eq!((report.sequence, report.network.as_str(), report.peers.is_none()), (4, "", true));
        let r = report.relay.unwrap();
        assert_eq!(r.peer_id, "12D3KooWExample");
        assert_eq!(r.listen_addrs.len(), MAX_LIST_ITEMS);
        assert_eq!(r.listen_addrs[..2], ["/ip4/10.0.0.0/tcp/4001", "/ip4/10.0.0.1/tcp/4001"], "dedup, order kept");
        assert!(r.listen_addrs.iter().all(|a| a.len() <= MAX_STRING_BYTES));
        assert_eq!(
            (r.reservations_active, r.circuits_active, r.reservations_accepted_total, r.circuits_total),
            (2, 1, 5, 3)
        );
    }

    #[test]
    fn punch_reports_sum_attempts_by_transport_and_bucket_time_to_direct() {
        let summary = PunchSummary {
            by_transport_outcome: vec![
                ("quic".into(), "cancelled".into(), 4),
                ("quic".into(), "success".into(), 3),
                ("quic".into(), "timeout".into(), 1),
                ("tcp".into(), "failed".into(), 2),
                ("tcp".into(), "no_relay_connection".into(), 1),
                ("tcp".into(), "success".into(), 1),
            ],
            time_to_direct_ms: vec![(0, 1), (10, 1), (11, 1), (70_000, 1)],
            kaspa_handshakes: 3,
            kaspa_handshake_failures: 1,
        };
        let report = build_punch_report(&origin(), 3, 1_700_000_000_000, "edge", &live(), &summary);
        validate(&report).expect("the collector accepts it");
        assert!(report.peers.is_none() && report.relay.is_none());
        assert_eq!((report.sequence, report.network.as_str()), (3, ""));
        let p = report.hole_punch.unwrap();
        assert_eq!((p.attempts, p.successes, p.failures), (8, 4, 4), "cancelled attempts are left out");
        assert_eq!(p.relay, "edge");
        assert_eq!(
            (p.peer_id.as_str(), p.reservation_held, p.reachability.as_str()),
            ("12D3KooWPunch", true, "private-cone")
        );
        let by: Vec<_> = p.by_transport.iter().map(|t| (t.transport.as_str(), t.attempts, t.successes)).collect();
        assert_eq!(by, [("quic", 4, 3), ("tcp", 4, 1)]);
        assert_eq!((p.kaspa_handshakes, p.kaspa_handshake_failures), (3, 1));
        assert_eq!(p.time_to_direct_ms_buckets.len(), TIME_TO_DIRECT_BUCKETS);
        assert_eq!(p.time_to_direct_ms_buckets[0], 2);
        assert_eq!(p.time_to_direct_ms_buckets[1], 1);
        assert_eq!(p.time_to_direct_ms_buckets[TIME_TO_DIRECT_BUCKETS - 1], 1);
        let empty = build_punch_report(&origin(), 1, 0, "", &live(), &PunchSummary::default()).hole_punch.unwrap();
        assert_eq!((empty.attempts, empty.failures, empty.by_transport.len()), (0, 0, 0));
        assert_eq!(empty.time_to_direct_ms_buckets, vec![0; TIME_TO_DIRECT_BUCKETS]);
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }
}
