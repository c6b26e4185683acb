//! The SQLite side of the export pipeline: the persisted cursor (table `export_cursor`, migration
//! 5), batches of events after it and the backlog behind it. Blocking: the exporter calls it from
//! `spawn_blocking`, on its own connection (WAL: readers never block the store's writer).
//!
//! Events are read in `rowid` order, which is commit order: an event whose UUID v7 was minted
//! earlier on another task but committed later still comes after the cursor, so nothing is ever
//! skipped. For events recorded in id order (one producer) this is `event_id` order.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::Result;
use crate::store::EventRow;
use crate::store::migrations::{schema_error, schema_version};
use crate::store::query::{EVENT_COLUMNS, event_row};
use sensor_core::timestamp::format_timestamp;

/// The first schema version with table `export_cursor`.
pub const CURSOR_SCHEMA_VERSION: u32 = 5;

/// Where a sink stands: the last event it acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// `events.rowid` of that event; 0 = nothing exported yet.
    pub rowid: i64,
    /// Its `event_id`; `None` = nothing exported yet.
    pub event_id: Option<String>,
}

/// One event to export and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub rowid: i64,
    pub event: EventRow,
}

/// What is waiting behind a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Events after the cursor.
    pub events: u64,
    /// Timestamp (RFC 3339) of the first of them; `None` when there are none.
    pub oldest: Option<String>,
}

/// A read-write connection to the event database for one sink's cursor.
pub struct CursorDb {
    conn: Connection,
    sink: String,
}

impl CursorDb {
    /// Opens the existing, migrated database at `path` (the store creates and migrates it).
    ///
    /// Errors: [`crate::SensorError::Storage`] when SQLite cannot open it or its schema predates
    /// [`CURSOR_SCHEMA_VERSION`].
    pub fn open(path: &Path, sink: &str) -> Result<CursorDb> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version = schema_version(&conn)?;
        if version < CURSOR_SCHEMA_VERSION {
            return Err(schema_error(format!(
                "{} has schema version {version}; the exporter needs {CURSOR_SCHEMA_VERSION} (open the store first)",
                path.display()
            )));
        }
        Ok(CursorDb { conn, sink: sink.to_owned() })
    }

    /// The sink's persisted cursor (the start when none was stored).
    pub fn load(&self) -> Result<Cursor> {
        let row = self
            .conn
            .query_row("SELECT last_rowid, last_event_id FROM export_cursor WHERE sink = ?1", params![self.sink], |r| {
                Ok(Cursor { rowid: r.get(0)?, event_id: r.get(1)? })
            })
            .optional()?;
        Ok(row.unwrap_or_default())
    }

    /// Persists `cursor` (durably: `synchronous=FULL`). Call only after the sink acknowledged
    /// every event up to it.
    pub fn save(&self, cursor: &Cursor) -> Result<()> {
        let now = format_timestamp(time::OffsetDateTime::now_utc());
        self.conn.execute(
            "INSERT INTO export_cursor (sink, last_event_id, updated_at, last_rowid) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (sink) DO UPDATE SET last_event_id = excluded.last_event_id, \
             updated_at = excluded.updated_at, last_rowid = excluded.last_rowid",
            params![self.sink, cursor.event_id, now, cursor.rowid],
        )?;
        Ok(())
    }

    /// Up to `limit` committed events after `cursor`, in order.
    pub fn batch(&self, cursor: &Cursor, limit: usize) -> Result<Vec<Pending>> {
        // The rowid goes last so `event_row` reads the event columns from 0.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, rowid FROM events WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows =
            stmt.query_map(params![cursor.rowid, limit], |r| Ok(Pending { rowid: r.get(19)?, event: event_row(r)? }))?;
        let out: Vec<Pending> = rows.collect::<rusqlite::Result<_>>()?;
        Ok(out)
    }

    /// How many events wait after `cursor`, and the timestamp of the first.
    pub fn backlog(&self, cursor: &Cursor) -> Result<Backlog> {
        let events: i64 =
            self.conn.query_row("SELECT count(*) FROM events WHERE rowid > ?1", params![cursor.rowid], |r| r.get(0))?;
        let oldest: Option<String> = self
            .conn
            .query_row(
                "SELECT timestamp FROM events WHERE rowid > ?1 ORDER BY rowid LIMIT 1",
                params![cursor.rowid],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Backlog { events: events.max(0) as u64, oldest })
    }
}

/// Seconds between the RFC 3339 `timestamp` and now (0 when in the future or unparsable).
pub fn age_seconds(timestamp: &str) -> f64 {
    let parsed = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339);
    match parsed {
        Ok(t) => (time::OffsetDateTime::now_utc() - t).as_seconds_f64().max(0.0),
        Err(_) => 0.0,
    }
}

impl From<&Pending> for Cursor {
    fn from(p: &Pending) -> Self {
        Cursor { rowid: p.rowid, event_id: Some(p.event.event_id.clone()) }
    }
}
