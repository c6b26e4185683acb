//! Schema and connection setup for the event database.
//!
//! The schema version lives in SQLite's `PRAGMA user_version`. [`migrate`] applies every
//! migration newer than the stored version, each in its own `IMMEDIATE` transaction that also
//! bumps `user_version`, so a crash mid-migration leaves the previous version intact and a reopen
//! resumes where it stopped. Reopening an up-to-date database applies nothing.
//!
//! Migrations are append-only: never edit a released one, add a new entry to [`MIGRATIONS`].

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, SensorError};

/// One schema step: `version` is the `user_version` after it ran.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. The last entry's version is [`LATEST_VERSION`].
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events and peers",
        sql: r#"
CREATE TABLE events (
    event_id           TEXT PRIMARY KEY NOT NULL, -- UUID v7, hyphenated lower-case
    timestamp          TEXT NOT NULL,             -- RFC 3339 UTC, fixed width (9 fraction digits)
    sensor_id          TEXT NOT NULL,
    kind               TEXT NOT NULL,             -- 'connection' | 'verdict'
    result             TEXT,                      -- 'accepted' | 'rejected' | NULL (verdicts)
    direction          TEXT NOT NULL,             -- 'inbound' | 'outbound'
    peer_ip            TEXT NOT NULL,
    peer_port          INTEGER NOT NULL,
    peer_id            TEXT,                      -- 16-byte Kaspa peer id, lower-case hex
    protocol_version   INTEGER,
    user_agent         TEXT,
    network            TEXT,
    advertised_address TEXT,                      -- IP:PORT from Version.address
    probe_target       TEXT,                      -- IP:PORT dialled back
    classification     TEXT,                      -- 'public' | 'private' | 'unknown' | NULL
    reason             TEXT NOT NULL,
    probe_duration_ms  INTEGER,
    probe_attempts     INTEGER,
    probe_error        TEXT
);
CREATE INDEX events_peer_id ON events (peer_id);
CREATE INDEX events_timestamp ON events (timestamp);

CREATE TABLE peers (
    peer_id          TEXT PRIMARY KEY NOT NULL,
    first_seen       TEXT NOT NULL,
    last_seen        TEXT NOT NULL,
    last_ip          TEXT,
    last_port        INTEGER,
    user_agent       TEXT,
    protocol_version INTEGER,
    network          TEXT,
    connections      INTEGER NOT NULL DEFAULT 0, -- accepted connection events
    classification   TEXT,                       -- latest verdict
    reason           TEXT,
    verdict_at       TEXT,
    verdict_event_id TEXT,                       -- tie-break between verdicts at the same instant
    probe_target     TEXT
);
CREATE INDEX peers_last_seen ON peers (last_seen);
"#,
    },
    Migration {
        version: 2,
        name: "punch attempts",
        sql: r#"
CREATE TABLE punch_attempts (
    attempt_id        TEXT PRIMARY KEY NOT NULL, -- UUID v7, hyphenated lower-case
    started_at        TEXT NOT NULL,             -- RFC 3339 UTC, fixed width (9 fraction digits)
    sensor_id         TEXT NOT NULL,
    relay             TEXT NOT NULL,             -- relay multiaddr dialled, ending in /p2p/<relay id>
    relay_node        TEXT NOT NULL,             -- punch.relay_node ('' = not attributed)
    target            TEXT NOT NULL,             -- the target's libp2p PeerId, base58
    attempt           INTEGER NOT NULL,          -- 1-based, per target and run
    transport         TEXT NOT NULL,             -- 'tcp' | 'quic' (direct connection, else relay address)
    outcome           TEXT NOT NULL,             -- 'success' | 'failed' | 'no_relay_connection' | 'cancelled' | 'timeout'
    dcutr_rounds      INTEGER,                   -- direct dials after the relayed connection; NULL without one
    relayed_rtt_ms    REAL,
    direct_rtt_ms     REAL,
    time_to_direct_ms INTEGER,                   -- relayed connection established -> direct established
    direct_address    TEXT,                      -- remote multiaddr of the confirmed direct connection
    duration_ms       INTEGER NOT NULL,
    nat_verdict       TEXT NOT NULL,             -- 'public' | 'private' | 'unknown' (AutoNAT v1)
    error             TEXT
);
CREATE INDEX punch_attempts_started_at ON punch_attempts (started_at);
CREATE INDEX punch_attempts_relay_node ON punch_attempts (relay_node, outcome);
"#,
    },
    Migration {
        version: 3,
        name: "crawls",
        sql: r#"
CREATE TABLE crawls (
    crawl_id     TEXT PRIMARY KEY NOT NULL, -- UUID v7, hyphenated lower-case
    started_at   TEXT NOT NULL,             -- RFC 3339 UTC, fixed width (9 fraction digits)
    finished_at  TEXT,                      -- NULL while running (or after a crash)
    network      TEXT NOT NULL,             -- wire name, e.g. 'kaspa-mainnet'
    seeds        TEXT NOT NULL,             -- JSON array of 'IP:PORT'
    concurrency  INTEGER NOT NULL,
    timeout_ms   INTEGER NOT NULL,
    visited      INTEGER NOT NULL DEFAULT 0,
    reachable    INTEGER NOT NULL DEFAULT 0,
    known        INTEGER NOT NULL DEFAULT 0,  -- distinct dialable addresses learned (seeds included)
    filtered     INTEGER NOT NULL DEFAULT 0,  -- addresses not dialled (filter, caps)
    duration_ms  INTEGER,
    stopped_early INTEGER NOT NULL DEFAULT 0  -- 1 when --max-duration-secs ended it
);

CREATE TABLE crawl_visits (
    crawl_id           TEXT NOT NULL REFERENCES crawls (crawl_id),
    address            TEXT NOT NULL,         -- 'IP:PORT' dialled
    started_at         TEXT NOT NULL,
    duration_ms        INTEGER NOT NULL,      -- connect to close
    rtt_ms             INTEGER,               -- connect start to the peer's Version
    reachable          INTEGER NOT NULL,      -- 1 = Version/Verack/Ready completed
    error_class        TEXT,                  -- crawl::ErrorClass::as_str, NULL when none
    error              TEXT,
    protocol_version   INTEGER,
    user_agent         TEXT,
    network            TEXT,
    peer_id            TEXT,                  -- 16-byte Kaspa peer id, lower-case hex
    advertised_address TEXT,
    services           INTEGER,
    addresses_returned INTEGER NOT NULL,      -- distinct well-formed addresses gossiped
    requests           INTEGER NOT NULL,      -- RequestAddresses sent
    PRIMARY KEY (crawl_id, address)
);
CREATE INDEX crawl_visits_address ON crawl_visits (address, started_at);

CREATE TABLE crawl_nodes (
    address          TEXT PRIMARY KEY NOT NULL, -- 'IP:PORT'
    first_seen       TEXT NOT NULL,             -- first learned (seed or gossip) or visited
    last_seen        TEXT NOT NULL,             -- last learned or visited
    last_visit       TEXT,
    last_reachable   TEXT,                      -- start of the last visit that completed the handshake
    up_since         TEXT,                      -- start of the current run of reachable visits; NULL when the last failed
    visits           INTEGER NOT NULL DEFAULT 0,
    reachable_visits INTEGER NOT NULL DEFAULT 0,
    last_error_class TEXT,
    last_peer_id     TEXT,
    last_user_agent  TEXT,
    last_protocol_version INTEGER,
    next_visit       TEXT                       -- for the continuous scheduler; NULL = not planned
);

CREATE TABLE crawl_edges (
    crawl_id     TEXT NOT NULL REFERENCES crawls (crawl_id),
    from_address TEXT NOT NULL,               -- the gossiping node
    to_address   TEXT NOT NULL,               -- an address it gossiped (dialable by the filter)
    first_seen   TEXT NOT NULL,
    PRIMARY KEY (crawl_id, from_address, to_address)
);

CREATE TABLE address_sightings (
    address    TEXT NOT NULL,                 -- 'IP:PORT' learned
    gossiper   TEXT NOT NULL,                 -- 'IP:PORT' of the node that gossiped it
    first_seen TEXT NOT NULL,                 -- when this gossiper was first seen giving it
    PRIMARY KEY (address, gossiper)
);
CREATE INDEX address_sightings_first_seen ON address_sightings (address, first_seen);
"#,
    },
    Migration {
        version: 4,
        name: "kaspa handshakes over punched connections",
        sql: r#"
-- `sensor punch --kaspa-handshake`: after a successful attempt, a Kaspa handshake over a
-- /p2psensor/kaspa/1 stream on the direct connection. All NULL when none was tried.
ALTER TABLE punch_attempts ADD COLUMN kaspa_handshake_ms INTEGER; -- Version to Ready, ms
ALTER TABLE punch_attempts ADD COLUMN kaspa_user_agent   TEXT;    -- the node's Version.userAgent
ALTER TABLE punch_attempts ADD COLUMN kaspa_network      TEXT;    -- the node's Version.network
ALTER TABLE punch_attempts ADD COLUMN kaspa_error        TEXT;    -- why the handshake failed
"#,
    },
    Migration {
        version: 5,
        name: "export cursors",
        sql: r#"
-- The export pipeline (export/): one row per sink, the position of the last event the sink
-- acknowledged. Events after it are the backlog; it is only advanced after an acknowledgement.
-- `last_rowid` is the events table's rowid of that event: rows are read in rowid (commit) order,
-- so an event committed late (a smaller UUID v7 minted earlier on another task) is never
-- skipped. Events are never deleted and the database is never VACUUMed, so rowids only grow.
CREATE TABLE export_cursor (
    sink          TEXT PRIMARY KEY NOT NULL, -- 'ndjson' | 'http' | ...
    last_event_id TEXT,                      -- UUID v7 of the last acknowledged event
    updated_at    TEXT,                      -- RFC 3339 UTC, fixed width (9 fraction digits)
    last_rowid    INTEGER NOT NULL DEFAULT 0 -- events.rowid of last_event_id
);
"#,
    },
];

/// The schema version this build writes and reads.
pub const LATEST_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Connection settings for the writer: WAL journal, `synchronous=FULL` (a committed transaction
/// survives power loss), `busy_timeout`, foreign keys on.
pub fn configure_writer(conn: &Connection, busy_timeout: Duration) -> Result<()> {
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; writes are still durable");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Caps the main database file of this connection at `max_db_bytes` (SQLite `max_page_count`,
/// rounded down to whole pages, never below the current size; per connection, not persisted).
/// Writes beyond it fail with `SQLITE_FULL`. Set it after [`migrate`] so the schema always fits.
/// Returns the effective cap in bytes.
pub fn set_max_db_bytes(conn: &Connection, max_db_bytes: u64) -> Result<u64> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let page_size = page_size.max(1) as u64;
    let pages = (max_db_bytes / page_size).clamp(1, i64::MAX as u64) as i64;
    let effective: i64 = conn.pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))?;
    let bytes = (effective.max(0) as u64).saturating_mul(page_size);
    tracing::debug!(max_db_bytes, effective_bytes = bytes, "database size cap set");
    Ok(bytes)
}

/// The stored schema version (`PRAGMA user_version`); 0 for a fresh file.
pub fn schema_version(conn: &Connection) -> Result<u32> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok(v.clamp(0, u32::MAX as i64) as u32)
}

/// Applies every pending migration. Returns the number applied (0 when up to date).
///
/// Errors: [`SensorError::Storage`] when SQLite fails, or when the database was written by a
/// newer sensor (`user_version` above [`LATEST_VERSION`]) — it is never downgraded.
pub fn migrate(conn: &mut Connection) -> Result<usize> {
    let current = schema_version(conn)?;
    check_not_newer(current)?;
    if current == LATEST_VERSION {
        return Ok(0);
    }
    let mut applied = 0;
    for m in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let current = schema_version(&tx)?;
        check_not_newer(current)?;
        if current >= m.version {
            continue;
        }
        tx.execute_batch(m.sql)?;
        tx.pragma_update(None, "user_version", m.version)?;
        tx.commit()?;
        tracing::info!(version = m.version, name = m.name, "database migration applied");
        applied += 1;
    }
    Ok(applied)
}

fn check_not_newer(current: u32) -> Result<()> {
    if current > LATEST_VERSION {
        return Err(schema_error(format!(
            "database schema version {current} is newer than this sensor supports \
             ({LATEST_VERSION}); refusing to use it"
        )));
    }
    Ok(())
}

/// A storage error with a human message (schema mismatch, not a sensor database).
pub(crate) fn schema_error(message: String) -> SensorError {
    SensorError::Storage(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
        Some(message),
    ))
}
