//! The read side of the event database: plain rows and counts for reports and tests.
//!
//! A [`Reader`] never creates, migrates or writes a database; it can run next to a live
//! [`Store`](super::Store) (WAL readers do not block the writer).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row, params};

use super::migrations::{LATEST_VERSION, schema_error, schema_version};
use crate::error::{Result, SensorError};

/// Latest known state of one peer (table `peers`). Timestamps are RFC 3339 UTC text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    /// 16-byte Kaspa peer id, lower-case hex.
    pub peer_id: String,
    pub first_seen: String,
    /// Time of the latest connection event (or of the first verdict for a peer only seen there).
    pub last_seen: String,
    pub last_ip: Option<String>,
    pub last_port: Option<u16>,
    pub user_agent: Option<String>,
    pub protocol_version: Option<u32>,
    pub network: Option<String>,
    /// Accepted inbound connections.
    pub connections: u64,
    /// Latest verdict: `public` | `private` | `unknown`; `None` when never classified.
    pub classification: Option<String>,
    /// The latest verdict's reason (closed enum, snake_case).
    pub reason: Option<String>,
    pub verdict_at: Option<String>,
    /// `IP:PORT` the latest verdict's probe dialled.
    pub probe_target: Option<String>,
}

/// One stored event (table `events`), column for column. Serializes as a JSON object whose field
/// names are the column names (the export format).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    pub event_id: String,
    pub timestamp: String,
    pub sensor_id: String,
    /// `connection` | `verdict`
    pub kind: String,
    /// `accepted` | `rejected` for connections, `None` for verdicts.
    pub result: Option<String>,
    /// `inbound` | `outbound`
    pub direction: String,
    pub peer_ip: String,
    pub peer_port: u16,
    pub peer_id: Option<String>,
    pub protocol_version: Option<u32>,
    pub user_agent: Option<String>,
    pub network: Option<String>,
    pub advertised_address: Option<String>,
    pub probe_target: Option<String>,
    /// `public` | `private` | `unknown` for verdicts, `None` for connections.
    pub classification: Option<String>,
    pub reason: String,
    pub probe_duration_ms: Option<u64>,
    pub probe_attempts: Option<u32>,
    pub probe_error: Option<String>,
}

/// Peers by their latest verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCounts {
    pub total: u64,
    pub public: u64,
    pub private: u64,
    pub unknown: u64,
    /// Peers without any verdict yet.
    pub unclassified: u64,
}

/// Totals over every stored event. Lists are sorted by count (descending), then name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// All events.
    pub total: u64,
    /// Connection events with result `accepted`.
    pub accepted: u64,
    /// Connection events with result `rejected`.
    pub rejected: u64,
    /// `(reason, count)` of rejected connections.
    pub rejected_by_reason: Vec<(String, u64)>,
    /// Verdict events (cache hits included).
    pub verdicts: u64,
    /// `(classification, count)` of verdict events.
    pub verdicts_by_classification: Vec<(String, u64)>,
}

pub(crate) const EVENT_COLUMNS: &str = "event_id, timestamp, sensor_id, kind, result, direction, peer_ip, \
    peer_port, peer_id, protocol_version, user_agent, network, advertised_address, probe_target, \
    classification, reason, probe_duration_ms, probe_attempts, probe_error";

/// A read-only connection to an existing event database.
pub struct Reader {
    pub(super) conn: Connection,
}

impl Reader {
    /// Opens the database at `path` for reading. Never creates a file.
    ///
    /// Errors: [`SensorError::Io`] (`NotFound`) when the file does not exist;
    /// [`SensorError::Storage`] when it is not a sensor database (schema version 0), was written
    /// by a newer sensor, or SQLite cannot open it.
    pub fn open(path: &Path) -> Result<Reader> {
        if !path.is_file() {
            return Err(SensorError::io(
                format!("event database {} does not exist (is this the sensor's data directory?)", path.display()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version = schema_version(&conn)?;
        if version == 0 {
            return Err(schema_error(format!("{} is not a sensor event database (schema version 0)", path.display())));
        }
        if version > LATEST_VERSION {
            return Err(schema_error(format!(
                "{} has schema version {version}, newer than this sensor reads ({LATEST_VERSION})",
                path.display()
            )));
        }
        Ok(Reader { conn })
    }

    /// Up to `limit` peers, most recently seen first.
    pub fn peers(&self, limit: usize) -> Result<Vec<PeerRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT peer_id, first_seen, last_seen, last_ip, last_port, user_agent, \
             protocol_version, network, connections, classification, reason, verdict_at, \
             probe_target FROM peers ORDER BY last_seen DESC, peer_id LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![limit], |r| {
            Ok(PeerRow {
                peer_id: r.get(0)?,
                first_seen: r.get(1)?,
                last_seen: r.get(2)?,
                last_ip: r.get(3)?,
                last_port: r.get(4)?,
                user_agent: r.get(5)?,
                protocol_version: r.get(6)?,
                network: r.get(7)?,
                connections: r.get(8)?,
                classification: r.get(9)?,
                reason: r.get(10)?,
                verdict_at: r.get(11)?,
                probe_target: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of peers by latest classification.
    pub fn peer_counts(&self) -> Result<PeerCounts> {
        let mut stmt = self.conn.prepare("SELECT classification, count(*) FROM peers GROUP BY classification")?;
        let mut counts = PeerCounts::default();
        for row in stmt.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, u64>(1)?)))? {
            let (class, n) = row?;
            counts.total += n;
            match class.as_deref() {
                Some("public") => counts.public += n,
                Some("private") => counts.private += n,
                Some(_) => counts.unknown += n,
                None => counts.unclassified += n,
            }
        }
        Ok(counts)
    }

    /// `(classification, reason, peers)` over the peers' latest verdicts, sorted by
    /// classification then reason. Unclassified peers are not included. Only the store's tests
    /// read it.
    #[cfg(test)]
    pub fn verdict_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT classification, reason, count(*) FROM peers WHERE classification IS NOT NULL \
             GROUP BY classification, reason ORDER BY classification, reason",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Totals over all events.
    pub fn event_counts(&self) -> Result<EventCounts> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, result, reason, classification, count(*) FROM events \
             GROUP BY kind, result, reason, classification",
        )?;
        let mut counts = EventCounts::default();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, u64>(4)?,
            ))
        })?;
        for row in rows {
            let (kind, result, reason, class, n) = row?;
            counts.total += n;
            match (kind.as_str(), result.as_deref()) {
                ("connection", Some("accepted")) => counts.accepted += n,
                ("connection", Some("rejected")) => {
                    counts.rejected += n;
                    add(&mut counts.rejected_by_reason, reason, n);
                }
                ("verdict", _) => {
                    counts.verdicts += n;
                    add(&mut counts.verdicts_by_classification, class.unwrap_or_default(), n);
                }
                _ => {}
            }
        }
        for list in [&mut counts.rejected_by_reason, &mut counts.verdicts_by_classification] {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        Ok(counts)
    }

    /// The `limit` most common user agents by distinct peers (each peer counted once, with its
    /// latest user agent): `(user_agent, peers)`, sorted by peers descending, then user agent.
    /// Peers that never sent a user agent are not counted.
    pub fn top_user_agents(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT user_agent, count(*) AS n FROM peers WHERE user_agent IS NOT NULL \
             GROUP BY user_agent ORDER BY n DESC, user_agent LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Calls `visit` with every peer id in the `peers` table (as stored: lower-case hex of 16
    /// bytes), in ascending order, streaming — the ids are not collected in memory. Returns how
    /// many were visited.
    pub fn for_each_peer_id(&self, mut visit: impl FnMut(&str)) -> Result<u64> {
        let mut stmt = self.conn.prepare("SELECT peer_id FROM peers ORDER BY peer_id")?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            visit(&row.get::<_, String>(0)?);
            n += 1;
        }
        Ok(n)
    }

    /// Runs `read` inside one read transaction, so every query it makes sees the same committed
    /// state (one WAL snapshot) even while the writer commits. The writer is never blocked.
    ///
    /// Errors: whatever `read` returns, or [`SensorError::Storage`] when the transaction cannot
    /// be opened.
    pub fn consistent<T>(&self, read: impl FnOnce(&Reader) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let result = read(self);
        // A read-only transaction has nothing to commit; ending it releases the snapshot.
        let ended = self.conn.execute_batch("ROLLBACK");
        let value = result?;
        ended?;
        Ok(value)
    }

    /// Every event that carries `peer_id`, oldest first.
    pub fn events_for_peer(&self, peer_id: &str) -> Result<Vec<EventRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE peer_id = ?1 ORDER BY timestamp, event_id"))?;
        let rows = stmt.query_map(params![peer_id], event_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The event with this id (hyphenated UUID), if stored.
    pub fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        let mut stmt = self.conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1"))?;
        let mut rows = stmt.query_map(params![event_id], event_row)?;
        Ok(rows.next().transpose()?)
    }
}

fn add(list: &mut Vec<(String, u64)>, name: String, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == name) {
        Some((_, total)) => *total += n,
        None => list.push((name, n)),
    }
}

pub(crate) fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        event_id: r.get(0)?,
        timestamp: r.get(1)?,
        sensor_id: r.get(2)?,
        kind: r.get(3)?,
        result: r.get(4)?,
        direction: r.get(5)?,
        peer_ip: r.get(6)?,
        peer_port: r.get(7)?,
        peer_id: r.get(8)?,
        protocol_version: r.get(9)?,
        user_agent: r.get(10)?,
        network: r.get(11)?,
        advertised_address: r.get(12)?,
        probe_target: r.get(13)?,
        classification: r.get(14)?,
        reason: r.get(15)?,
        probe_duration_ms: r.get(16)?,
        probe_attempts: r.get(17)?,
        probe_error: r.get(18)?,
    })
}

#[cfg(test)]
mod tests;
