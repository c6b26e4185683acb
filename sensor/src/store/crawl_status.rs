//! The crawler's state as the continuous mode and the cumulative report read it: which known
//! nodes are due for a visit (`crawl_nodes.next_visit`, planned by the crawl writer with
//! Nebula's rule, [`sensor_core::crawl::schedule`]) and the summary behind `Report.crawl`.

use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use sensor_core::timestamp::format_timestamp;

use super::query::Reader;
use crate::error::Result;

/// Known nodes split by whether a visit is due at some instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrawlSchedule {
    /// `IP:PORT` of nodes never visited or whose `next_visit` has passed, most recently seen
    /// first.
    pub due: Vec<String>,
    /// `IP:PORT` of nodes whose `next_visit` is still ahead: known, not dialled this round.
    pub not_due: Vec<String>,
}

/// What `Report.crawl` carries, read from the crawl tables (all time, and the last finished
/// crawl).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrawlStoreSummary {
    /// Finished crawls.
    pub crawls: u64,
    /// Rows of `crawl_nodes`: every address learned or visited.
    pub known_nodes: u64,
    /// Nodes whose latest visit completed the handshake.
    pub reachable_nodes: u64,
    /// The last finished crawl, if any.
    pub last: Option<LastCrawl>,
}

/// One finished crawl's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastCrawl {
    pub network: String,
    pub visited: u64,
    pub reachable: u64,
    pub duration_ms: u64,
    /// `crawls.finished_at`, RFC 3339.
    pub finished_at: String,
    /// `(error_class, failed visits)`, most visits first (then by class), at most `limit` of them.
    pub unreachable_by_class: Vec<(String, u64)>,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Reader {
    /// Known nodes due (or not) at `now`, in one read transaction; `limit` bounds each list.
    pub fn crawl_schedule(&self, now: OffsetDateTime, limit: usize) -> Result<CrawlSchedule> {
        let now = format_timestamp(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.consistent(|r| {
            let mut due = r.conn.prepare(
                "SELECT address FROM crawl_nodes WHERE next_visit IS NULL OR next_visit <= ?1 \
                 ORDER BY last_seen DESC, address LIMIT ?2",
            )?;
            let due = due.query_map(params![now, limit], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
            let mut later =
                r.conn.prepare("SELECT address FROM crawl_nodes WHERE next_visit > ?1 ORDER BY address LIMIT ?2")?;
            let not_due = later.query_map(params![now, limit], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
            Ok(CrawlSchedule { due, not_due })
        })
    }

    /// The crawl figures of `Report.crawl`, in one read transaction; at most `max_classes` error
    /// classes of the last crawl.
    pub fn crawl_summary(&self, max_classes: usize) -> Result<CrawlStoreSummary> {
        let max_classes = i64::try_from(max_classes).unwrap_or(i64::MAX);
        self.consistent(|r| {
            let one = |sql: &str| r.conn.query_row(sql, [], |row| row.get::<_, i64>(0)).map(count);
            let crawls = one("SELECT count(*) FROM crawls WHERE finished_at IS NOT NULL")?;
            let known_nodes = one("SELECT count(*) FROM crawl_nodes")?;
            let reachable_nodes =
                one("SELECT count(*) FROM crawl_nodes WHERE last_visit IS NOT NULL AND last_reachable = last_visit")?;
            let last = r
                .conn
                .query_row(
                    "SELECT crawl_id, network, visited, reachable, coalesce(duration_ms, 0), finished_at FROM crawls \
                     WHERE finished_at IS NOT NULL ORDER BY finished_at DESC, crawl_id DESC LIMIT 1",
                    [],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            LastCrawl {
                                network: row.get(1)?,
                                visited: count(row.get(2)?),
                                reachable: count(row.get(3)?),
                                duration_ms: count(row.get(4)?),
                                finished_at: row.get(5)?,
                                unreachable_by_class: Vec::new(),
                            },
                        ))
                    },
                )
                .optional()?;
            let last = match last {
                None => None,
                Some((crawl_id, mut last)) => {
                    let mut stmt = r.conn.prepare(
                        "SELECT coalesce(error_class, 'other'), count(*) FROM crawl_visits \
                         WHERE crawl_id = ?1 AND reachable = 0 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?2",
                    )?;
                    last.unreachable_by_class = stmt
                        .query_map(params![crawl_id, max_classes], |row| Ok((row.get(0)?, count(row.get(1)?))))?
                        .collect::<rusqlite::Result<_>>()?;
                    Some(last)
                }
            };
            Ok(CrawlStoreSummary { crawls, known_nodes, reachable_nodes, last })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use uuid::Uuid;

    use super::*;
    use sensor_core::crawl::{PeerFacts, VisitResult};

    use crate::store::crawl::{CrawlStart, CrawlTotals, CrawlWriter};
    use sensor_core::crawl::{ErrorClass, VisitError, schedule::Revisit};

    const T0: i64 = 1_700_000_000;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(T0 + secs).unwrap()
    }

    fn start(secs: i64, revisit: Revisit) -> CrawlStart {
        CrawlStart {
            crawl_id: Uuid::now_v7(),
            started_at: at(secs),
            network: "kaspa-devnet".into(),
            seeds: vec!["1.1.1.1:16611".parse().unwrap()],
            concurrency: 2,
            timeout_ms: 1000,
            revisit,
        }
    }

    fn visit(address: &str, secs: i64, reachable: bool, gossiped: &[&str]) -> VisitResult {
        let peer = reachable.then(|| PeerFacts {
            protocol_version: 11,
            user_agent: "/kaspad:2.1.0/".into(),
            network: "kaspa-devnet".into(),
            peer_id: "ab".repeat(16),
            advertised_address: None,
            services: 0,
        });
        VisitResult {
            address: address.parse().unwrap(),
            started_at: at(secs),
            duration_ms: 10,
            rtt_ms: reachable.then_some(2),
            reachable,
            error_class: (!reachable).then_some(ErrorClass::Refused),
            error: (!reachable).then(|| VisitError::Connect("Connection refused (os error 111)".into())),
            peer,
            addresses: gossiped.iter().map(|a| a.parse().unwrap()).collect(),
            requests: u32::from(reachable),
            malformed: 0,
            capped: 0,
        }
    }

    fn finish(w: CrawlWriter, secs: i64, visited: u64, reachable: u64) {
        let totals = CrawlTotals {
            finished_at: at(secs),
            visited,
            reachable,
            known: 3,
            filtered: 0,
            duration_ms: 1500,
            stopped_early: false,
        };
        w.finish(&totals).unwrap();
    }

    #[test]
    fn visits_plan_the_next_visit_by_uptime_and_the_summary_reads_the_last_crawl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.sqlite");
        let revisit = Revisit { min: Duration::from_secs(60), max: Duration::from_secs(3600) };
        let (a, b, c) = ("1.1.1.1:16611", "2.2.2.2:16611", "3.3.3.3:16611");
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();

        // Crawl 1 at t=0: a is up (first sight: the minimum), b refuses, c is only gossiped.
        let w = CrawlWriter::open(&path, &start(0, revisit)).unwrap();
        w.learned(at(0), None, vec![addr(a), addr(b)]);
        w.learned(at(1), Some(addr(a)), vec![addr(c)]);
        w.visit(visit(a, 1, true, &[c]));
        w.visit(visit(b, 1, false, &[]));
        finish(w, 2, 2, 1);
        let reader = Reader::open(&path).unwrap();
        let plan = |secs| reader.crawl_schedule(at(secs), 100).unwrap();
        assert_eq!(plan(30), CrawlSchedule { due: vec![c.into()], not_due: vec![a.into(), b.into()] });
        assert_eq!(plan(61).due.len(), 3, "a and b are due 60 s after their visit");
        drop(reader);

        // Crawl 2 at t=1001: a has been up for 1000 s → next visit 1.2 × 1000 s later.
        let w = CrawlWriter::open(&path, &start(1000, revisit)).unwrap();
        w.visit(visit(a, 1001, true, &[]));
        w.visit(visit(c, 1001, false, &[]));
        finish(w, 1003, 2, 1);
        let reader = Reader::open(&path).unwrap();
        let schedule = reader.crawl_schedule(at(1001 + 1199), 100).unwrap();
        assert!(schedule.not_due.contains(&a.to_owned()), "{schedule:?}");
        assert!(reader.crawl_schedule(at(1001 + 1200), 100).unwrap().due.contains(&a.to_owned()));
        assert_eq!(reader.crawl_schedule(at(5000), 1).unwrap().due.len(), 1, "bounded by the limit");

        let summary = reader.crawl_summary(32).unwrap();
        assert_eq!((summary.crawls, summary.known_nodes, summary.reachable_nodes), (2, 3, 1));
        let last = summary.last.unwrap();
        assert_eq!((last.visited, last.reachable, last.duration_ms), (2, 1, 1500));
        assert_eq!(last.finished_at, format_timestamp(at(1003)));
        assert_eq!(last.network, "kaspa-devnet");
        assert_eq!(last.unreachable_by_class, vec![("refused".to_owned(), 1)]);
        assert!(reader.crawl_summary(0).unwrap().last.unwrap().unreachable_by_class.is_empty());
    }

    #[test]
    fn an_empty_store_has_no_crawls_and_nothing_due() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.sqlite");
        drop(crate::store::crawl::open_migrated(&path).unwrap());
        let reader = Reader::open(&path).unwrap();
        assert_eq!(reader.crawl_summary(32).unwrap(), CrawlStoreSummary::default());
        assert_eq!(reader.crawl_schedule(at(0), 10).unwrap(), CrawlSchedule::default());
    }
}
