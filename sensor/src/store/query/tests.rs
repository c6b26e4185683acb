//! Tests of the report queries of [`super::Reader`] against real SQLite files: top user agents,
//! the peer id walk, and consistent reads next to the live writer.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::metrics::Metrics;
use crate::store::{Store, StoreOptions};
use sensor_core::event::{Direction, Event, EventKind};

fn accepted(peer_id: &str, user_agent: Option<&str>) -> Event {
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let mut e = Event::now("sensor-1", EventKind::Accepted, Direction::Inbound, ip, 40000);
    e.peer.peer_id = Some(peer_id.into());
    e.peer.user_agent = user_agent.map(str::to_owned);
    e
}

/// The 16-byte peer id `n` as stored: 32 lower-case hex digits.
fn id(n: u32) -> String {
    format!("{:032x}", u128::from(n) * 0x0001_0000_0000_0000_0000_0000_0000_0001)
}

fn open_store(path: &Path) -> Store {
    let options = StoreOptions { flush_interval: Duration::from_millis(5), ..StoreOptions::default() };
    Store::open(path, options, Metrics::new().0).unwrap()
}

fn record_all(store: &Store, events: impl IntoIterator<Item = Event>) {
    for e in events {
        store.record(e).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn top_user_agents_count_distinct_peers_by_latest_agent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let store = open_store(&path);
    let mut events = Vec::new();
    // /a/: peers 1, 2 and 3 (peer 1 twice: still one peer).
    for n in [1, 1, 2, 3] {
        events.push(accepted(&id(n), Some("/a/")));
    }
    // /b/ and /c/: two peers each (a tie, broken by name).
    for (n, ua) in [(4, "/c/"), (5, "/c/"), (6, "/b/"), (7, "/b/")] {
        events.push(accepted(&id(n), Some(ua)));
    }
    // Peer 8 moved from /d/ to /b/: only its latest agent counts, so /d/ has no peer left.
    events.push(accepted(&id(8), Some("/d/")));
    events.push(accepted(&id(8), Some("/b/")));
    // A peer without a user agent is not counted.
    events.push(accepted(&id(9), None));
    record_all(&store, events);

    let reader = Reader::open(&path).unwrap();
    let all = reader.top_user_agents(100).unwrap();
    let expected = [("/a/", 3), ("/b/", 3), ("/c/", 2)].map(|(ua, n)| (ua.to_owned(), n));
    assert_eq!(all, expected);
    assert_eq!(reader.top_user_agents(2).unwrap(), expected[..2]);
    assert!(reader.top_user_agents(0).unwrap().is_empty());
    store.close().unwrap();
}

#[test]
fn every_peer_id_is_visited_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let store = open_store(&path);
    let reader = Reader::open(&path).unwrap();
    assert_eq!(reader.for_each_peer_id(|_| panic!("no peers yet")).unwrap(), 0);

    // 300 peers in shuffled order, some connecting twice.
    let order: Vec<u32> = (0..300u32).map(|n| (n * 7919) % 300).chain([5, 17, 299]).collect();
    record_all(&store, order.iter().map(|n| accepted(&id(*n), Some("/x/"))));

    let mut seen = Vec::new();
    let visited = reader.for_each_peer_id(|peer| seen.push(peer.to_owned())).unwrap();
    let mut expected: Vec<String> = (0..300).map(id).collect();
    expected.sort();
    assert_eq!(visited, 300);
    assert_eq!(seen, expected);
    assert_eq!(reader.peer_counts().unwrap().total, visited);
    store.close().unwrap();
}

#[test]
fn consistent_reads_see_one_snapshot_while_the_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.db");
    let store = open_store(&path);
    record_all(&store, [accepted(&id(1), Some("/a/"))]);
    let reader = Reader::open(&path).unwrap();

    let (before, after, walked) = reader
        .consistent(|r| {
            let before = r.peer_counts()?.total;
            // The writer commits a new peer in the middle of the read: not blocked, not seen.
            record_all(&store, [accepted(&id(2), Some("/a/"))]);
            let after = r.peer_counts()?.total;
            let walked = r.for_each_peer_id(|_| {})?;
            Ok((before, after, walked))
        })
        .unwrap();
    assert_eq!((before, after, walked), (1, 1, 1));
    // Outside the transaction the new peer is visible.
    assert_eq!(reader.peer_counts().unwrap().total, 2);
    assert_eq!(reader.top_user_agents(5).unwrap(), [("/a/".to_owned(), 2)]);

    // An error inside ends the transaction too: the next consistent read works.
    let failed: Result<()> = reader.consistent(|_| Err(SensorError::StorageUnavailable("test")));
    assert!(matches!(failed, Err(SensorError::StorageUnavailable("test"))));
    assert_eq!(reader.consistent(|r| r.peer_counts()).unwrap().total, 2);
    store.close().unwrap();
}
