//! `sensor crawl`'s tables (migration 3: `crawls`, `crawl_visits`, `crawl_nodes`, `crawl_edges`,
//! `address_sightings`): the write side [`CrawlWriter`] and the reads behind `--from-store`,
//! `--propagation` and the tests ([`Reader`] methods).
//!
//! Writes never run on the async runtime: [`CrawlWriter`] owns a dedicated OS thread with its own
//! SQLite connection (same settings as the event store: WAL, `synchronous=FULL`), fed by an
//! unbounded channel (bounded in practice by the crawl's `--max-nodes`). The thread commits in
//! batches (up to 1024 messages or 50 ms, one `IMMEDIATE` transaction each). It is separate from
//! the event store's writer because a crawl is a short one-shot job that needs none of that
//! writer's acks; both can write the same file (WAL, `busy_timeout`).

use std::{
    net::SocketAddr,
    path::Path,
    sync::mpsc::{Receiver, RecvTimeoutError, Sender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use sensor_core::timestamp::format_timestamp;

use super::{migrations, query::Reader};
use sensor_core::crawl::VisitResult;

use crate::error::{Result, SensorError};
use sensor_core::Label;
use sensor_core::crawl::schedule::{self, Revisit};

/// Most messages per transaction.
const BATCH: usize = 1024;
/// Longest wait for more messages before a partial batch is committed.
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// The `crawls` row written when a crawl starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlStart {
    pub crawl_id: Uuid,
    pub started_at: OffsetDateTime,
    /// Wire name, e.g. `kaspa-devnet`.
    pub network: String,
    pub seeds: Vec<SocketAddr>,
    pub concurrency: usize,
    pub timeout_ms: u64,
    /// Bounds of each visited node's `crawl_nodes.next_visit` ([`schedule::next_visit`]).
    pub revisit: Revisit,
}

/// The totals written when a crawl ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlTotals {
    pub finished_at: OffsetDateTime,
    pub visited: u64,
    pub reachable: u64,
    pub known: u64,
    pub filtered: u64,
    pub duration_ms: u64,
    pub stopped_early: bool,
}

enum Msg {
    /// Addresses learned at `at`, from a gossiping node (`None`: seeds).
    Learned {
        at: OffsetDateTime,
        from: Option<SocketAddr>,
        addresses: Vec<SocketAddr>,
    },
    Visit(Box<VisitResult>),
}

/// The crawl's writer thread. Dropping it without [`finish`](Self::finish) still commits what
/// was queued but leaves `crawls.finished_at` NULL.
pub struct CrawlWriter {
    crawl_id: Uuid,
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<(Connection, Option<String>)>>,
}

impl CrawlWriter {
    /// Opens (creating, migrating) the database at `path`, inserts the `crawls` row and starts
    /// the writer thread. Blocking: call it outside the async runtime or in `spawn_blocking`.
    ///
    /// Errors: [`SensorError::Io`] when the directory or thread cannot be created,
    /// [`SensorError::Storage`] when SQLite fails (including a schema newer than this build).
    pub fn open(path: &Path, start: &CrawlStart) -> Result<CrawlWriter> {
        let conn = open_migrated(path)?;
        let seeds: Vec<String> = start.seeds.iter().map(ToString::to_string).collect();
        conn.execute(
            "INSERT INTO crawls (crawl_id, started_at, network, seeds, concurrency, timeout_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                start.crawl_id.to_string(),
                format_timestamp(start.started_at),
                start.network,
                serde_json::to_string(&seeds).unwrap_or_else(|_| "[]".into()),
                i64::try_from(start.concurrency).unwrap_or(i64::MAX),
                i64::try_from(start.timeout_ms).unwrap_or(i64::MAX),
            ],
        )?;
        let (tx, rx) = std::sync::mpsc::channel();
        let crawl_id = start.crawl_id.to_string();
        let revisit = start.revisit;
        let thread = std::thread::Builder::new()
            .name("sensor-crawl-store".into())
            .spawn(move || run(conn, rx, &crawl_id, revisit))
            .map_err(|e| SensorError::io("spawning the crawl writer thread", e))?;
        Ok(CrawlWriter { crawl_id: start.crawl_id, tx: Some(tx), thread: Some(thread) })
    }

    /// Queues addresses learned at `at` from `from` (`None` for seeds): upserts `crawl_nodes`,
    /// and with a gossiper inserts `crawl_edges` and `address_sightings` (first sighting kept).
    /// Never blocks.
    pub fn learned(&self, at: OffsetDateTime, from: Option<SocketAddr>, addresses: Vec<SocketAddr>) {
        self.send(Msg::Learned { at, from, addresses });
    }

    /// Queues one visit: a `crawl_visits` row and the `crawl_nodes` update. Never blocks.
    pub fn visit(&self, result: VisitResult) {
        self.send(Msg::Visit(Box::new(result)));
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx
            && tx.send(msg).is_err()
        {
            tracing::warn!("crawl writer thread has stopped; crawl record dropped");
        }
    }

    /// Commits everything queued, writes the totals and stops the thread (blocking).
    ///
    /// Errors: [`SensorError::Storage`] when the totals cannot be written, or
    /// [`SensorError::StorageUnavailable`] when a batch failed earlier (logged; its rows are lost).
    pub fn finish(mut self, totals: &CrawlTotals) -> Result<()> {
        self.tx = None;
        let Some(thread) = self.thread.take() else { return Ok(()) };
        let (conn, failed) =
            thread.join().map_err(|_| SensorError::StorageUnavailable("the crawl writer thread panicked"))?;
        conn.execute(
            "UPDATE crawls SET finished_at = ?2, visited = ?3, reachable = ?4, known = ?5, filtered = ?6, \
             duration_ms = ?7, stopped_early = ?8 WHERE crawl_id = ?1",
            params![
                self.crawl_id.to_string(),
                format_timestamp(totals.finished_at),
                clamp(totals.visited),
                clamp(totals.reachable),
                clamp(totals.known),
                clamp(totals.filtered),
                clamp(totals.duration_ms),
                totals.stopped_early,
            ],
        )?;
        match failed {
            Some(e) => {
                tracing::error!(error = %e, "some crawl records were not stored");
                Err(SensorError::StorageUnavailable("some crawl records could not be stored (see the log)"))
            }
            None => Ok(()),
        }
    }
}

impl Drop for CrawlWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens (creating the file and its directory) and migrates the database at `path`, with the
/// writer settings. Blocking. `sensor crawl --from-store` calls it before reading, so a database
/// an older sensor wrote gains the crawl tables first.
///
/// Errors: as [`CrawlWriter::open`].
pub fn open_migrated(path: &Path) -> Result<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| SensorError::io(format!("creating database directory {}", parent.display()), e))?;
    }
    let mut conn = Connection::open(path)?;
    migrations::configure_writer(&conn, Duration::from_secs(5))?;
    migrations::migrate(&mut conn)?;
    Ok(conn)
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The thread body: batches until the channel closes. Returns the connection (for the totals)
/// and the first batch error, if any.
fn run(mut conn: Connection, rx: Receiver<Msg>, crawl_id: &str, revisit: Revisit) -> (Connection, Option<String>) {
    let mut failed = None;
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        let deadline = Instant::now() + BATCH_WAIT;
        let mut open = true;
        while batch.len() < BATCH {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => batch.push(m),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if let Err(e) = write(&mut conn, crawl_id, revisit, &batch) {
            tracing::warn!(error = %e, records = batch.len(), "crawl batch failed; dropped");
            failed.get_or_insert(e.to_string());
        }
        batch.clear();
        if !open {
            break;
        }
    }
    (conn, failed)
}

/// An address learned (by the crawler, or from gossip to `sensor listen`, [`super::gossip`]).
pub(super) const UPSERT_LEARNED: &str = "INSERT INTO crawl_nodes (address, first_seen, last_seen) VALUES (?1, ?2, ?2) \
    ON CONFLICT (address) DO UPDATE SET last_seen = max(crawl_nodes.last_seen, excluded.last_seen)";

/// One `(address, gossiper)` sighting; the first time is kept.
pub(super) const UPSERT_SIGHTING: &str = "INSERT INTO address_sightings (address, gossiper, first_seen) \
    VALUES (?1, ?2, ?3) ON CONFLICT (address, gossiper) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen)";

const INSERT_VISIT: &str = "INSERT OR REPLACE INTO crawl_visits (crawl_id, address, started_at, duration_ms, \
    rtt_ms, reachable, error_class, error, protocol_version, user_agent, network, peer_id, advertised_address, \
    services, addresses_returned, requests) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
    ?15, ?16)";

/// `up_since` starts at the first reachable visit of a run and is cleared by a failed one, so
/// `now - up_since` is the node's observed uptime (Nebula's scheduler input).
const UPSERT_VISITED: &str = "INSERT INTO crawl_nodes (address, first_seen, last_seen, last_visit, last_reachable, \
    up_since, visits, reachable_visits, last_error_class, last_peer_id, last_user_agent, last_protocol_version) \
    VALUES (?1, ?2, ?2, ?2, CASE WHEN ?3 THEN ?2 END, CASE WHEN ?3 THEN ?2 END, 1, ?3, ?4, ?5, ?6, ?7) \
    ON CONFLICT (address) DO UPDATE SET \
      last_seen = max(crawl_nodes.last_seen, excluded.last_seen), \
      last_visit = excluded.last_visit, \
      last_reachable = coalesce(excluded.last_reachable, crawl_nodes.last_reachable), \
      up_since = CASE WHEN ?3 THEN coalesce(crawl_nodes.up_since, excluded.up_since) END, \
      visits = crawl_nodes.visits + 1, \
      reachable_visits = crawl_nodes.reachable_visits + excluded.reachable_visits, \
      last_error_class = excluded.last_error_class, \
      last_peer_id = coalesce(excluded.last_peer_id, crawl_nodes.last_peer_id), \
      last_user_agent = coalesce(excluded.last_user_agent, crawl_nodes.last_user_agent), \
      last_protocol_version = coalesce(excluded.last_protocol_version, crawl_nodes.last_protocol_version) \
    RETURNING up_since";

fn write(conn: &mut Connection, crawl_id: &str, revisit: Revisit, batch: &[Msg]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut learned = tx.prepare_cached(UPSERT_LEARNED)?;
        let mut edge = tx.prepare_cached(
            "INSERT OR IGNORE INTO crawl_edges (crawl_id, from_address, to_address, first_seen) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut sighting = tx.prepare_cached(UPSERT_SIGHTING)?;
        let mut visit = tx.prepare_cached(INSERT_VISIT)?;
        let mut visited = tx.prepare_cached(UPSERT_VISITED)?;
        let mut plan = tx.prepare_cached("UPDATE crawl_nodes SET next_visit = ?2 WHERE address = ?1")?;
        for m in batch {
            match m {
                Msg::Learned { at, from, addresses } => {
                    let at = format_timestamp(*at);
                    let from = from.map(|f| f.to_string());
                    for a in addresses {
                        let a = a.to_string();
                        learned.execute(params![a, at])?;
                        if let Some(from) = &from {
                            edge.execute(params![crawl_id, from, a, at])?;
                            sighting.execute(params![a, from, at])?;
                        }
                    }
                }
                Msg::Visit(v) => {
                    let at = format_timestamp(v.started_at);
                    let peer = v.peer.as_ref();
                    let class = v.error_class.map(|c| c.as_str());
                    visit.execute(params![
                        crawl_id,
                        v.address.to_string(),
                        at,
                        clamp(v.duration_ms),
                        v.rtt_ms.map(clamp),
                        v.reachable,
                        class,
                        v.error.as_ref().map(ToString::to_string),
                        peer.map(|p| p.protocol_version),
                        peer.map(|p| p.user_agent.as_str()),
                        peer.map(|p| p.network.as_str()),
                        peer.map(|p| p.peer_id.as_str()),
                        peer.and_then(|p| p.advertised_address.as_deref()),
                        peer.map(|p| p.services as i64),
                        clamp(v.addresses.len() as u64),
                        v.requests,
                    ])?;
                    let up_since: Option<String> = visited.query_row(
                        params![
                            v.address.to_string(),
                            at,
                            v.reachable,
                            class,
                            peer.map(|p| p.peer_id.as_str()),
                            peer.map(|p| p.user_agent.as_str()),
                            peer.map(|p| p.protocol_version),
                        ],
                        |r| r.get(0),
                    )?;
                    let next = schedule::next_visit(v.started_at, up_since.as_deref(), revisit);
                    plan.execute(params![v.address.to_string(), format_timestamp(next)])?;
                }
            }
        }
    }
    tx.commit()
}

/// One stored visit (table `crawl_visits`), the columns tests and exports need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlVisitRow {
    pub address: String,
    pub reachable: bool,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub protocol_version: Option<u32>,
    pub user_agent: Option<String>,
    pub network: Option<String>,
    pub peer_id: Option<String>,
    pub addresses_returned: u64,
}

/// The crawler's state of one address (table `crawl_nodes`); only the store's tests read it (the
/// scheduler reads `crawl_nodes` through [`Reader::crawl_schedule`]).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlNodeRow {
    pub address: String,
    pub first_seen: String,
    pub last_seen: String,
    pub last_visit: Option<String>,
    pub last_reachable: Option<String>,
    /// Start of the current run of reachable visits; `None` after a failed visit.
    pub up_since: Option<String>,
    pub visits: u64,
    pub reachable_visits: u64,
    pub last_error_class: Option<String>,
    pub last_peer_id: Option<String>,
    pub last_user_agent: Option<String>,
}

/// One stored crawl (table `crawls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlRow {
    pub crawl_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub network: String,
    pub visited: u64,
    pub reachable: u64,
    pub known: u64,
}

impl Reader {
    /// The most recently started crawl, if any.
    pub fn latest_crawl(&self) -> Result<Option<CrawlRow>> {
        let row = self
            .conn
            .query_row(
                "SELECT crawl_id, started_at, finished_at, network, visited, reachable, known FROM crawls \
                 ORDER BY started_at DESC, crawl_id DESC LIMIT 1",
                [],
                |r| {
                    Ok(CrawlRow {
                        crawl_id: r.get(0)?,
                        started_at: r.get(1)?,
                        finished_at: r.get(2)?,
                        network: r.get(3)?,
                        visited: r.get(4)?,
                        reachable: r.get(5)?,
                        known: r.get(6)?,
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// Every visit of crawl `crawl_id`, by address.
    pub fn crawl_visits(&self, crawl_id: &str) -> Result<Vec<CrawlVisitRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT address, reachable, error_class, error, protocol_version, user_agent, network, peer_id, \
             addresses_returned FROM crawl_visits WHERE crawl_id = ?1 ORDER BY address",
        )?;
        let rows = stmt.query_map(params![crawl_id], |r| {
            Ok(CrawlVisitRow {
                address: r.get(0)?,
                reachable: r.get(1)?,
                error_class: r.get(2)?,
                error: r.get(3)?,
                protocol_version: r.get(4)?,
                user_agent: r.get(5)?,
                network: r.get(6)?,
                peer_id: r.get(7)?,
                addresses_returned: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `(from, to)` edges of crawl `crawl_id`, sorted.
    pub fn crawl_edges(&self, crawl_id: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT from_address, to_address FROM crawl_edges WHERE crawl_id = ?1 ORDER BY from_address, to_address",
        )?;
        let rows = stmt.query_map(params![crawl_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The crawler's state of `address` (`IP:PORT` text), if it was ever learned.
    #[cfg(test)]
    pub fn crawl_node(&self, address: &str) -> Result<Option<CrawlNodeRow>> {
        let row = self
            .conn
            .query_row(
                "SELECT address, first_seen, last_seen, last_visit, last_reachable, up_since, visits, \
                 reachable_visits, last_error_class, last_peer_id, last_user_agent FROM crawl_nodes WHERE address = ?1",
                params![address],
                |r| {
                    Ok(CrawlNodeRow {
                        address: r.get(0)?,
                        first_seen: r.get(1)?,
                        last_seen: r.get(2)?,
                        last_visit: r.get(3)?,
                        last_reachable: r.get(4)?,
                        up_since: r.get(5)?,
                        visits: r.get(6)?,
                        reachable_visits: r.get(7)?,
                        last_error_class: r.get(8)?,
                        last_peer_id: r.get(9)?,
                        last_user_agent: r.get(10)?,
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// `(gossiper, first_seen)` of every node seen gossiping `address`, earliest first.
    pub fn address_sightings(&self, address: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT gossiper, first_seen FROM address_sightings WHERE address = ?1 ORDER BY first_seen, gossiper",
        )?;
        let rows = stmt.query_map(params![address], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Up to `limit` candidate addresses (`IP:PORT` text, unparsed) for `sensor crawl
    /// --from-store`: nodes earlier crawls learned (most recently seen first), then the dial-back
    /// targets of peers the listener classified public, then addresses inbound peers advertised
    /// in their `Version` (the crawler's filter still applies to all of them).
    pub fn crawl_seed_addresses(&self, limit: usize) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(
            "SELECT address FROM (SELECT address, 0 AS k, last_seen AS t FROM crawl_nodes \
             UNION ALL SELECT probe_target, 1, last_seen FROM peers \
               WHERE classification = 'public' AND probe_target IS NOT NULL \
             UNION ALL SELECT advertised_address, 2, max(timestamp) FROM events \
               WHERE advertised_address IS NOT NULL GROUP BY advertised_address) \
             GROUP BY address ORDER BY min(k), max(t) DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_core::crawl::PeerFacts;
    use sensor_core::crawl::{ErrorClass, VisitError};

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + secs)
    }

    fn start(secs: i64) -> CrawlStart {
        CrawlStart {
            crawl_id: Uuid::now_v7(),
            started_at: at(secs),
            network: "kaspa-devnet".into(),
            seeds: vec!["1.1.1.1:16611".parse().unwrap()],
            concurrency: 2,
            timeout_ms: 1000,
            revisit: Revisit::default(),
        }
    }

    fn visit(secs: i64, reachable: bool, addresses: &[&str]) -> VisitResult {
        VisitResult {
            address: "1.1.1.1:16611".parse().unwrap(),
            started_at: at(secs),
            duration_ms: 5,
            rtt_ms: reachable.then_some(1),
            reachable,
            peer: reachable.then(|| PeerFacts {
                protocol_version: 11,
                user_agent: "/kaspad:2.1.0/".into(),
                network: "kaspa-devnet".into(),
                peer_id: "ab".repeat(16),
                advertised_address: None,
                services: 1,
            }),
            error: (!reachable).then(|| VisitError::Connect("Connection refused (os error 111)".into())),
            error_class: (!reachable).then_some(ErrorClass::Refused),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            malformed: 0,
            capped: 0,
            requests: 1,
        }
    }

    fn totals(visited: u64, reachable: u64) -> CrawlTotals {
        CrawlTotals {
            finished_at: at(100),
            visited,
            reachable,
            known: 3,
            filtered: 0,
            duration_ms: 10,
            stopped_early: false,
        }
    }

    #[test]
    fn visits_nodes_edges_and_sightings_across_crawls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.sqlite");
        let seed: SocketAddr = "1.1.1.1:16611".parse().unwrap();
        let gossiped = ["2.2.2.2:16611", "3.3.3.3:16611"];

        // Crawl 1: reachable twice over two crawls, then down.
        let first = start(0);
        let w = CrawlWriter::open(&path, &first).unwrap();
        w.learned(at(0), None, vec![seed]);
        let v = visit(1, true, &gossiped);
        w.learned(at(2), Some(seed), v.addresses.clone());
        w.visit(v);
        w.finish(&totals(1, 1)).unwrap();

        let second = start(10);
        let w = CrawlWriter::open(&path, &second).unwrap();
        let v = visit(11, true, &gossiped[..1]);
        w.learned(at(12), Some(seed), v.addresses.clone());
        w.visit(v);
        w.finish(&totals(1, 1)).unwrap();

        let reader = Reader::open(&path).unwrap();
        let node = reader.crawl_node("1.1.1.1:16611").unwrap().unwrap();
        assert_eq!((node.visits, node.reachable_visits), (2, 2));
        assert_eq!(node.up_since.as_deref(), Some(format_timestamp(at(1)).as_str()), "uptime runs from the first");
        assert_eq!(node.first_seen, format_timestamp(at(0)));
        assert_eq!(node.last_peer_id, Some("ab".repeat(16)));
        let learned = reader.crawl_node("3.3.3.3:16611").unwrap().unwrap();
        assert_eq!((learned.visits, learned.last_visit), (0, None));
        // Each (address, gossiper) once, with its first time.
        assert_eq!(
            reader.address_sightings("2.2.2.2:16611").unwrap(),
            vec![("1.1.1.1:16611".to_owned(), format_timestamp(at(2)))]
        );
        assert_eq!(reader.crawl_edges(&first.crawl_id.to_string()).unwrap().len(), 2);
        assert_eq!(reader.crawl_edges(&second.crawl_id.to_string()).unwrap().len(), 1);
        let latest = reader.latest_crawl().unwrap().unwrap();
        assert_eq!(latest.crawl_id, second.crawl_id.to_string());
        assert_eq!(latest.finished_at, Some(format_timestamp(at(100))));
        drop(reader);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO peers (peer_id, first_seen, last_seen, classification, probe_target) \
               VALUES ('p1', 'a', 'b', 'public', '4.4.4.4:16111'), ('p2', 'a', 'b', 'private', '6.6.6.6:16111'); \
             INSERT INTO events (event_id, timestamp, sensor_id, kind, direction, peer_ip, peer_port, reason, \
               advertised_address) VALUES ('e1', 't', 's', 'connection', 'inbound', '5.5.5.5', 1, 'r', '5.5.5.5:16111');",
        )
        .unwrap();
        drop(conn);
        let reader = Reader::open(&path).unwrap();
        let seeds = reader.crawl_seed_addresses(10).unwrap();
        assert_eq!(seeds.len(), 5, "{seeds:?}");
        assert_eq!(&seeds[3..], ["4.4.4.4:16111", "5.5.5.5:16111"], "crawl nodes, then public peers, then advertised");
        assert_eq!(reader.crawl_seed_addresses(2).unwrap().len(), 2);
        drop(reader);

        // Crawl 3: down. Uptime resets, the last good facts stay.
        let w = CrawlWriter::open(&path, &start(20)).unwrap();
        w.visit(visit(21, false, &[]));
        w.finish(&totals(1, 0)).unwrap();
        let reader = Reader::open(&path).unwrap();
        let node = reader.crawl_node("1.1.1.1:16611").unwrap().unwrap();
        assert_eq!((node.visits, node.reachable_visits, node.up_since), (3, 2, None));
        assert_eq!(node.last_reachable, Some(format_timestamp(at(11))));
        assert_eq!(node.last_error_class.as_deref(), Some("refused"));
        assert_eq!(node.last_user_agent.as_deref(), Some("/kaspad:2.1.0/"));
        let visits = reader.crawl_visits(&latest_id(&reader)).unwrap();
        assert_eq!(visits.len(), 1);
        assert_eq!(visits[0].error_class.as_deref(), Some("refused"));
        assert!(!visits[0].reachable);
    }

    fn latest_id(reader: &Reader) -> String {
        reader.latest_crawl().unwrap().unwrap().crawl_id
    }
}
