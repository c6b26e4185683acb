//! The PostgreSQL sink: every stored event becomes one row of `sensor_events`, keyed by
//! `event_id` (`uuid PRIMARY KEY`), so a batch sent twice inserts nothing the second time
//! (`ON CONFLICT (event_id) DO NOTHING`).
//!
//! A batch is one statement, `INSERT … SELECT * FROM unnest($1::uuid[], …)`: one round trip
//! and one prepared plan whatever the batch size, with every column bound as a typed array
//! (uuid, timestamptz, inet, integers, text) rather than spliced into SQL text. The statement
//! runs in its own implicit transaction: the batch lands whole or not at all.
//!
//! The sensor owns the schema. On every (re)connect it takes a transaction-scoped advisory lock
//! (several sensors may share one database), creates `sensor_schema_migrations` if needed and
//! applies the [`MIGRATIONS`] it has not applied yet. A database migrated by a newer sensor is
//! refused rather than written with an older idea of the table.
//!
//! Text from the network (user agents above all) may hold NUL characters, which PostgreSQL's
//! `text` cannot store; they are replaced by U+FFFD so that one hostile peer cannot block the
//! export. Everything else is stored as read from SQLite.
//!
//! TLS: `sslmode` of the connection string (`disable`, `prefer` (default), `require`) over
//! [`super::tls`]'s rustls configuration, which always verifies the server certificate against
//! the web roots plus `export.tls_ca_file`.
//!
//! Failures ([`FailureKind`] label of `sensor_export_failures_total`): `connect` (refused,
//! closed), `timeout` (`export.timeout_ms` bounds connect + migrate + insert), `tls`, `io`,
//! `database` (a SQLSTATE; authentication and permission errors are logged as refusals).
//! After any failure the connection is dropped and the next attempt reconnects.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use super::{FailureKind, Sink, SinkError};
use crate::error::{Result, SensorError};
use crate::store::EventRow;
use sensor_core::config::{ConfigError, SINK_POSTGRES, Secret};

/// The schema, in order. Version numbers are never reused; a change is a new entry.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "sensor_events",
    "CREATE TABLE sensor_events (
        event_id uuid PRIMARY KEY,
        timestamp timestamptz NOT NULL,
        sensor_id text NOT NULL,
        kind text NOT NULL,
        result text,
        direction text NOT NULL,
        peer_ip inet NOT NULL,
        peer_port integer NOT NULL,
        peer_id text,
        protocol_version bigint,
        user_agent text,
        network text,
        advertised_address text,
        probe_target text,
        classification text,
        reason text NOT NULL,
        probe_duration_ms bigint,
        probe_attempts integer,
        probe_error text,
        exported_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX sensor_events_timestamp ON sensor_events (timestamp);
    CREATE INDEX sensor_events_sensor_timestamp ON sensor_events (sensor_id, timestamp);
    CREATE INDEX sensor_events_peer_id ON sensor_events (peer_id) WHERE peer_id IS NOT NULL;",
)];

/// The newest schema version this build writes.
pub fn schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Key of the advisory lock that serializes migrations across sensors: "p2psens" in ASCII.
const MIGRATION_LOCK: i64 = 0x0070_3270_7365_6e73;

const INSERT: &str = "INSERT INTO sensor_events (event_id, timestamp, sensor_id, kind, result, \
    direction, peer_ip, peer_port, peer_id, protocol_version, user_agent, network, \
    advertised_address, probe_target, classification, reason, probe_duration_ms, probe_attempts, \
    probe_error) \
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::inet[], $8::int4[], $9::text[], $10::int8[], $11::text[], $12::text[], \
    $13::text[], $14::text[], $15::text[], $16::text[], $17::int8[], $18::int4[], $19::text[]) \
    ON CONFLICT (event_id) DO NOTHING";

/// What [`PostgresSink::new`] needs.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// A libpq connection string without a password (`export.endpoint`).
    pub endpoint: String,
    /// Bound of one delivery: connect (+ migrate) + insert.
    pub timeout: Duration,
    /// `export.password_file` / `export.password_env`.
    pub password: Option<Secret>,
    /// `export.tls_ca_file`.
    pub tls_ca_file: Option<PathBuf>,
}

/// See the module docs.
pub struct PostgresSink {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    timeout: Duration,
    connected: Option<Connected>,
}

struct Connected {
    client: Client,
    insert: Statement,
}

impl PostgresSink {
    /// Parses the connection string and builds the TLS configuration; does not connect (an
    /// unreachable server is a delivery failure, retried like any other).
    ///
    /// Errors: [`SensorError::Config`] naming `export.endpoint` (unparsable) or
    /// `export.tls_ca_file` (unusable CA file).
    pub fn new(settings: PostgresSettings) -> Result<PostgresSink> {
        let mut config: tokio_postgres::Config = settings.endpoint.parse().map_err(|e| SensorError::Config {
            key: "export.endpoint".into(),
            reason: format!("not a PostgreSQL connection string: {e}"),
        })?;
        if let Some(password) = &settings.password {
            config.password(password.expose());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(settings.timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("p2p-sensor");
        }
        let tls = MakeRustlsConnect::new(super::tls::client_config(settings.tls_ca_file.as_deref())?);
        Ok(PostgresSink { config, tls, timeout: settings.timeout, connected: None })
    }

    async fn deliver(&mut self, batch: &[EventRow]) -> std::result::Result<u64, SinkError> {
        let columns = Columns::from_rows(batch)?;
        if self.connected.is_none() {
            self.connected = Some(self.connect().await?);
        }
        let connected = self.connected.as_ref().expect("connected above");
        let params = columns.params();
        connected.client.execute(&connected.insert, &params).await.map_err(|e| classify(&e))
    }

    async fn connect(&self) -> std::result::Result<Connected, SinkError> {
        let (mut client, connection) = self.config.connect(self.tls.clone()).await.map_err(|e| classify(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "export: PostgreSQL connection closed");
            }
        });
        let version = migrate(&mut client).await.map_err(|e| match e {
            MigrateError::Postgres(e) => classify(&e),
            MigrateError::TooNew(found) => SinkError {
                kind: FailureKind::Database,
                message: format!(
                    "the database schema is version {found}, newer than this sensor's {}; upgrade the sensor",
                    schema_version()
                ),
                refused: true,
            },
        })?;
        let insert = client.prepare(INSERT).await.map_err(|e| classify(&e))?;
        tracing::info!(schema_version = version, "export: connected to PostgreSQL");
        Ok(Connected { client, insert })
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        SINK_POSTGRES
    }

    fn send<'a>(&'a mut self, batch: &'a [EventRow]) -> BoxFuture<'a, std::result::Result<(), SinkError>> {
        Box::pin(async move {
            let timeout = self.timeout;
            let result = match tokio::time::timeout(timeout, self.deliver(batch)).await {
                Ok(result) => result,
                Err(_) => Err(SinkError::new(FailureKind::Timeout, format!("no answer within {timeout:?}"))),
            };
            match result {
                Ok(inserted) => {
                    let duplicates = batch.len() as u64 - inserted.min(batch.len() as u64);
                    if duplicates > 0 {
                        tracing::debug!(inserted, duplicates, "export: PostgreSQL skipped events it already had");
                    }
                    Ok(())
                }
                Err(e) => {
                    // Whatever state the session is in, the next attempt starts afresh.
                    self.connected = None;
                    Err(e)
                }
            }
        })
    }
}

enum MigrateError {
    Postgres(tokio_postgres::Error),
    TooNew(i32),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

/// Applies the missing [`MIGRATIONS`] in one transaction under the advisory lock; returns the
/// schema version now in place. Errors: a PostgreSQL error, or [`MigrateError::TooNew`].
async fn migrate(client: &mut Client) -> std::result::Result<i32, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sensor_schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: i32 =
        tx.query_one("SELECT coalesce(max(version), 0) FROM sensor_schema_migrations", &[]).await?.get(0);
    if current > schema_version() {
        return Err(MigrateError::TooNew(current));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO sensor_schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tracing::info!(version, name, "export: PostgreSQL schema migrated");
    }
    tx.commit().await?;
    Ok(schema_version().max(current))
}

/// A batch as 19 typed column arrays, in [`INSERT`]'s parameter order.
struct Columns {
    event_id: Vec<Uuid>,
    timestamp: Vec<OffsetDateTime>,
    sensor_id: Vec<String>,
    kind: Vec<String>,
    result: Vec<Option<String>>,
    direction: Vec<String>,
    peer_ip: Vec<IpAddr>,
    peer_port: Vec<i32>,
    peer_id: Vec<Option<String>>,
    protocol_version: Vec<Option<i64>>,
    user_agent: Vec<Option<String>>,
    network: Vec<Option<String>>,
    advertised_address: Vec<Option<String>>,
    probe_target: Vec<Option<String>>,
    classification: Vec<Option<String>>,
    reason: Vec<String>,
    probe_duration_ms: Vec<Option<i64>>,
    probe_attempts: Vec<Option<i32>>,
    probe_error: Vec<Option<String>>,
}

impl Columns {
    /// Errors: a row whose `event_id`, `timestamp` or `peer_ip` does not parse (the store only
    /// writes valid ones, so this means a damaged database): refused, naming the row.
    fn from_rows(rows: &[EventRow]) -> std::result::Result<Columns, SinkError> {
        let n = rows.len();
        let mut c = Columns {
            event_id: Vec::with_capacity(n),
            timestamp: Vec::with_capacity(n),
            sensor_id: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            result: Vec::with_capacity(n),
            direction: Vec::with_capacity(n),
            peer_ip: Vec::with_capacity(n),
            peer_port: Vec::with_capacity(n),
            peer_id: Vec::with_capacity(n),
            protocol_version: Vec::with_capacity(n),
            user_agent: Vec::with_capacity(n),
            network: Vec::with_capacity(n),
            advertised_address: Vec::with_capacity(n),
            probe_target: Vec::with_capacity(n),
            classification: Vec::with_capacity(n),
            reason: Vec::with_capacity(n),
            probe_duration_ms: Vec::with_capacity(n),
            probe_attempts: Vec::with_capacity(n),
            probe_error: Vec::with_capacity(n),
        };
        for row in rows {
            let damaged = |field: &str| SinkError {
                kind: FailureKind::Other,
                message: format!("stored event {:?} has an unreadable {field}", row.event_id),
                refused: true,
            };
            c.event_id.push(Uuid::parse_str(&row.event_id).map_err(|_| damaged("event_id"))?);
            c.timestamp.push(OffsetDateTime::parse(&row.timestamp, &Rfc3339).map_err(|_| damaged("timestamp"))?);
            c.peer_ip.push(row.peer_ip.parse().map_err(|_| damaged("peer_ip"))?);
            c.sensor_id.push(text(&row.sensor_id));
            c.kind.push(text(&row.kind));
            c.result.push(opt_text(&row.result));
            c.direction.push(text(&row.direction));
            c.peer_port.push(i32::from(row.peer_port));
            c.peer_id.push(opt_text(&row.peer_id));
            c.protocol_version.push(row.protocol_version.map(i64::from));
            c.user_agent.push(opt_text(&row.user_agent));
            c.network.push(opt_text(&row.network));
            c.advertised_address.push(opt_text(&row.advertised_address));
            c.probe_target.push(opt_text(&row.probe_target));
            c.classification.push(opt_text(&row.classification));
            c.reason.push(text(&row.reason));
            c.probe_duration_ms.push(row.probe_duration_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX)));
            c.probe_attempts.push(row.probe_attempts.map(|v| i32::try_from(v).unwrap_or(i32::MAX)));
            c.probe_error.push(opt_text(&row.probe_error));
        }
        Ok(c)
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 19] {
        [
            &self.event_id,
            &self.timestamp,
            &self.sensor_id,
            &self.kind,
            &self.result,
            &self.direction,
            &self.peer_ip,
            &self.peer_port,
            &self.peer_id,
            &self.protocol_version,
            &self.user_agent,
            &self.network,
            &self.advertised_address,
            &self.probe_target,
            &self.classification,
            &self.reason,
            &self.probe_duration_ms,
            &self.probe_attempts,
            &self.probe_error,
        ]
    }
}

/// PostgreSQL `text` cannot hold NUL: it becomes U+FFFD (REPLACEMENT CHARACTER).
pub fn text(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s.to_owned() }
}

fn opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(text)
}

/// Maps a tokio-postgres error to a failure kind: a server error by its SQLSTATE class
/// (28: authorization, 3D: no such database, 42501: insufficient privilege are refusals), a
/// rustls error anywhere in the source chain to `tls`, an I/O error by its kind.
fn classify(e: &tokio_postgres::Error) -> SinkError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let refused = code.starts_with("28") || code.starts_with("3D") || code == "42501";
        return SinkError {
            kind: FailureKind::Database,
            message: format!("{} (SQLSTATE {code}): {}", db.severity(), db.message()),
            refused,
        };
    }
    let detail = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
    if super::tls::caused_by_tls(e) {
        return SinkError::new(FailureKind::Tls, format!("{e}{detail}"));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut io_kind = None;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        source = err.source();
    }
    use std::io::ErrorKind as K;
    let kind = match io_kind {
        Some(K::TimedOut) => FailureKind::Timeout,
        Some(K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted | K::NotConnected) => {
            FailureKind::Connect
        }
        Some(_) => FailureKind::Io,
        None if e.is_closed() => FailureKind::Connect,
        None => FailureKind::Other,
    };
    SinkError::new(kind, format!("{e}{detail}"))
}

/// A PostgreSQL endpoint must parse as a libpq connection string (tokio-postgres's
/// `Config::from_str`: URI or `key=value` form), name at least one host and carry no password:
/// secrets belong in `export.password_file` / `export.password_env`, never in the config file.
/// The sensor runs it after loading its configuration, when `export.sink` is `postgres`.
///
/// Errors: [`ConfigError::Key`] naming `export.endpoint`; the endpoint itself is never echoed.
pub fn validate_endpoint(endpoint: &str) -> std::result::Result<(), ConfigError> {
    if endpoint.is_empty() {
        return Err(endpoint_err(
            "export.endpoint",
            "must be a PostgreSQL connection string (postgres://user@host:5432/db) when export.sink is postgres",
        ));
    }
    // tokio-postgres's parse error names the offending key, not its value; the endpoint itself
    // is not echoed because a malformed one may still hold a password.
    let parsed: tokio_postgres::Config = endpoint
        .parse()
        .map_err(|e| endpoint_err("export.endpoint", format!("not a PostgreSQL connection string: {e}")))?;
    if parsed.get_hosts().is_empty() {
        return Err(endpoint_err("export.endpoint", "the PostgreSQL connection string names no host"));
    }
    if parsed.get_password().is_some() {
        return Err(endpoint_err(
            "export.endpoint",
            "holds a password; put it in export.password_file or export.password_env instead",
        ));
    }
    Ok(())
}

fn endpoint_err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.to_owned(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_validation_names_the_key_and_never_echoes_a_password() {
        let cases: &[(&str, &str)] = &[
            ("", "PostgreSQL connection string"),
            ("postgres://u:hunter2@db/x", "password_file"),
            ("host=db password=hunter2", "password_env"),
            ("postgres://db/x?sslmode=maybe", "not a PostgreSQL"),
            ("dbname=x", "names no host"),
        ];
        for (endpoint, reason_part) in cases {
            match validate_endpoint(endpoint) {
                Err(ConfigError::Key { key, reason }) => {
                    assert_eq!(key, "export.endpoint", "{endpoint}: {reason}");
                    assert!(reason.contains(reason_part), "{endpoint}: {reason}");
                    assert!(!reason.contains("hunter2"), "a password is never echoed: {reason}");
                }
                other => panic!("{endpoint}: {other:?}"),
            }
        }
        assert_eq!(validate_endpoint("postgres://sensor@db:5432/kaspa?sslmode=require"), Ok(()));
    }

    fn row(id: &str) -> EventRow {
        EventRow {
            event_id: id.into(),
            timestamp: "2026-11-21T04:26:00.123456789Z".into(),
            sensor_id: "s".into(),
            kind: "connection".into(),
            result: Some("accepted".into()),
            direction: "inbound".into(),
            peer_ip: "203.0.113.9".into(),
            peer_port: 16111,
            peer_id: Some("00".repeat(16)),
            protocol_version: Some(7),
            user_agent: Some("/evil\0agent/".into()),
            network: Some("kaspa-mainnet".into()),
            advertised_address: None,
            probe_target: None,
            classification: None,
            reason: "accepted".into(),
            probe_duration_ms: Some(u64::MAX),
            probe_attempts: Some(2),
            probe_error: None,
        }
    }

    #[test]
    fn columns_keep_every_row_in_order_and_replace_nul() {
        let a = "0193a1f2-0000-7000-8000-000000000001";
        let b = "0193a1f2-0000-7000-8000-000000000002";
        let c = Columns::from_rows(&[row(a), row(b)]).unwrap();
        assert_eq!(c.event_id, vec![Uuid::parse_str(a).unwrap(), Uuid::parse_str(b).unwrap()]);
        assert_eq!(c.user_agent[0].as_deref(), Some("/evil\u{FFFD}agent/"));
        assert_eq!(c.probe_duration_ms[0], Some(i64::MAX), "u64 beyond bigint saturates");
        assert_eq!(c.timestamp[0].nanosecond(), 123_456_789);
        assert_eq!(c.peer_ip[0], "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(c.params().len(), INSERT.matches("::").count(), "one array per unnest argument");
    }

    #[test]
    fn a_damaged_row_is_refused_by_name() {
        let mut bad = row("0193a1f2-0000-7000-8000-000000000003");
        bad.peer_ip = "not-an-ip".into();
        let e = Columns::from_rows(&[bad]).err().unwrap();
        assert!(e.refused);
        assert!(e.message.contains("peer_ip") && e.message.contains("0193a1f2"), "{}", e.message);
        let e = Columns::from_rows(&[row("nope")]).err().unwrap();
        assert!(e.message.contains("event_id"), "{}", e.message);
    }

    #[test]
    fn migrations_are_numbered_upwards_from_one() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
        assert_eq!(schema_version(), MIGRATIONS.len() as i32);
    }

    #[test]
    fn a_password_is_never_in_the_debug_output() {
        let settings = PostgresSettings {
            endpoint: "postgres://sensor@127.0.0.1:1/db".into(),
            timeout: Duration::from_secs(1),
            password: Some(Secret::new("pg-very-secret")),
            tls_ca_file: None,
        };
        assert!(!format!("{settings:?}").contains("pg-very-secret"));
        PostgresSink::new(settings).unwrap();
    }
}
