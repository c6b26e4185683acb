//! `sensor punch`'s attempts in table `punch_attempts` (migration 2; the Kaspa handshake over the
//! punched connection, migration 4): the insert the writer runs
//! for [`Store::record_punch`](super::Store::record_punch), and the reads behind `--json` checks
//! and the cumulative report ([`Reader::punch_attempts`], [`Reader::punch_summary`]).

use rusqlite::{Row, Transaction, params};

use sensor_core::timestamp::format_timestamp;

use super::query::Reader;
use crate::error::Result;
use sensor_core::Label;
use sensor_core::punch::{KaspaCheck, PunchAttempt, millis, whole_millis};

const INSERT_ATTEMPT: &str = "INSERT OR IGNORE INTO punch_attempts (attempt_id, started_at, sensor_id, \
    relay, relay_node, target, attempt, transport, outcome, dcutr_rounds, relayed_rtt_ms, direct_rtt_ms, \
    time_to_direct_ms, direct_address, duration_ms, nat_verdict, error, kaspa_handshake_ms, kaspa_user_agent, \
    kaspa_network, kaspa_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
    ?17, ?18, ?19, ?20, ?21)";

const ATTEMPT_COLUMNS: &str = "attempt_id, started_at, sensor_id, relay, relay_node, target, attempt, \
    transport, outcome, dcutr_rounds, relayed_rtt_ms, direct_rtt_ms, time_to_direct_ms, direct_address, \
    duration_ms, nat_verdict, error, kaspa_handshake_ms, kaspa_user_agent, kaspa_network, kaspa_error";

/// Inserts one attempt inside the writer's transaction. Returns false for a duplicate id.
pub(super) fn insert(tx: &Transaction<'_>, a: &PunchAttempt) -> rusqlite::Result<bool> {
    let r = &a.result;
    let clamp = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
    let (kaspa_ms, kaspa_user_agent, kaspa_network, kaspa_error) = match &a.kaspa {
        Some(KaspaCheck::Done { user_agent, network, elapsed_ms }) => {
            (Some(clamp(*elapsed_ms)), Some(user_agent.as_str()), Some(network.as_str()), None)
        }
        Some(KaspaCheck::Failed(e)) => (None, None, None, Some(e.as_str())),
        None => (None, None, None, None),
    };
    let rows = tx.prepare_cached(INSERT_ATTEMPT)?.execute(params![
        a.attempt_id.to_string(),
        format_timestamp(a.started_at),
        a.sensor_id,
        a.relay,
        a.relay_node,
        a.target,
        a.attempt,
        r.transport.as_str(),
        r.outcome.as_str(),
        r.dcutr_rounds,
        r.relayed_rtt.map(millis),
        r.direct_rtt.map(millis),
        r.time_to_direct.map(|d| clamp(whole_millis(d))),
        r.direct_address.as_ref().map(ToString::to_string),
        clamp(whole_millis(r.duration)),
        a.nat_verdict.as_str(),
        r.error,
        kaspa_ms,
        kaspa_user_agent,
        kaspa_network,
        kaspa_error,
    ])?;
    Ok(rows == 1)
}

/// One stored attempt (table `punch_attempts`), column for column.
#[derive(Debug, Clone, PartialEq)]
pub struct PunchAttemptRow {
    pub attempt_id: String,
    pub started_at: String,
    pub sensor_id: String,
    pub relay: String,
    pub relay_node: String,
    pub target: String,
    pub attempt: u32,
    /// `tcp` | `quic`
    pub transport: String,
    /// `success` | `failed` | `no_relay_connection` | `cancelled` | `timeout`
    pub outcome: String,
    pub dcutr_rounds: Option<u32>,
    pub relayed_rtt_ms: Option<f64>,
    pub direct_rtt_ms: Option<f64>,
    pub time_to_direct_ms: Option<u64>,
    pub direct_address: Option<String>,
    pub duration_ms: u64,
    /// `public` | `private` | `unknown`
    pub nat_verdict: String,
    pub error: Option<String>,
    /// Kaspa handshake over the punched connection (`--kaspa-handshake`): Version to Ready, ms;
    /// `None` when not tried or failed (then `kaspa_error` says why).
    pub kaspa_handshake_ms: Option<u64>,
    /// The Kaspa node's user agent and network from its Version, when the handshake completed.
    pub kaspa_user_agent: Option<String>,
    pub kaspa_network: Option<String>,
    pub kaspa_error: Option<String>,
}

/// All-time attempts through one RelayNode, as the report needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PunchSummary {
    /// `(transport, outcome, attempts)`, sorted by transport then outcome.
    pub by_transport_outcome: Vec<(String, String, u64)>,
    /// `(time_to_direct_ms, successes)` of successful attempts, ascending.
    pub time_to_direct_ms: Vec<(u64, u64)>,
    /// Kaspa handshakes over punched connections that completed, and that failed.
    pub kaspa_handshakes: u64,
    pub kaspa_handshake_failures: u64,
}

impl Reader {
    /// Every stored attempt, oldest first.
    pub fn punch_attempts(&self) -> Result<Vec<PunchAttemptRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {ATTEMPT_COLUMNS} FROM punch_attempts ORDER BY started_at, attempt_id"))?;
        let rows = stmt.query_map([], attempt_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Counts of the attempts whose `relay_node` is `relay_node`, in one read transaction.
    pub fn punch_summary(&self, relay_node: &str) -> Result<PunchSummary> {
        self.consistent(|r| {
            let mut stmt = r.conn.prepare(
                "SELECT transport, outcome, count(*) FROM punch_attempts WHERE relay_node = ?1 \
                 GROUP BY transport, outcome ORDER BY transport, outcome",
            )?;
            let by_transport_outcome = stmt
                .query_map(params![relay_node], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = r.conn.prepare(
                "SELECT time_to_direct_ms, count(*) FROM punch_attempts WHERE relay_node = ?1 \
                 AND outcome = 'success' AND time_to_direct_ms IS NOT NULL \
                 GROUP BY time_to_direct_ms ORDER BY time_to_direct_ms",
            )?;
            let time_to_direct_ms = stmt
                .query_map(params![relay_node], |row| Ok((row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let (kaspa_handshakes, kaspa_handshake_failures) = r.conn.query_row(
                "SELECT count(kaspa_handshake_ms), count(kaspa_error) FROM punch_attempts WHERE relay_node = ?1",
                params![relay_node],
                |row| Ok((row.get::<_, i64>(0)?.max(0) as u64, row.get::<_, i64>(1)?.max(0) as u64)),
            )?;
            Ok(PunchSummary { by_transport_outcome, time_to_direct_ms, kaspa_handshakes, kaspa_handshake_failures })
        })
    }
}

fn attempt_row(r: &Row<'_>) -> rusqlite::Result<PunchAttemptRow> {
    Ok(PunchAttemptRow {
        attempt_id: r.get(0)?,
        started_at: r.get(1)?,
        sensor_id: r.get(2)?,
        relay: r.get(3)?,
        relay_node: r.get(4)?,
        target: r.get(5)?,
        attempt: r.get(6)?,
        transport: r.get(7)?,
        outcome: r.get(8)?,
        dcutr_rounds: r.get(9)?,
        relayed_rtt_ms: r.get(10)?,
        direct_rtt_ms: r.get(11)?,
        time_to_direct_ms: r.get(12)?,
        direct_address: r.get(13)?,
        duration_ms: r.get(14)?,
        nat_verdict: r.get(15)?,
        error: r.get(16)?,
        kaspa_handshake_ms: r.get(17)?,
        kaspa_user_agent: r.get(18)?,
        kaspa_network: r.get(19)?,
        kaspa_error: r.get(20)?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use libp2p::swarm::ConnectionId;
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;
    use crate::{
        metrics::Metrics,
        p2p::punch::attempt::AttemptTracker,
        store::{Store, StoreOptions},
    };
    use sensor_core::{punch::Transport, reachability::Reachability};

    fn attempt(relay_node: &str, n: u32, ttd_ms: Option<u64>, transport: Transport) -> PunchAttempt {
        attempt_with(relay_node, n, ttd_ms, transport, None)
    }

    fn attempt_with(
        relay_node: &str,
        n: u32,
        ttd_ms: Option<u64>,
        transport: Transport,
        kaspa: Option<KaspaCheck>,
    ) -> PunchAttempt {
        let t0 = Instant::now();
        let mut t = AttemptTracker::new(t0, transport);
        t.circuit_dial_started(ConnectionId::new_unchecked(1));
        let circuit = "/ip4/127.0.0.1/tcp/4001/p2p-circuit".parse().unwrap();
        let result = match ttd_ms {
            Some(ms) => {
                t.connection_established(t0, ConnectionId::new_unchecked(1), true, &circuit);
                let direct =
                    if transport == Transport::Quic { "/ip4/10.0.0.2/udp/9/quic-v1" } else { "/ip4/10.0.0.2/tcp/9" };
                let at = t0 + Duration::from_millis(ms);
                t.connection_established(at, ConnectionId::new_unchecked(2), false, &direct.parse().unwrap());
                t.ping(at, ConnectionId::new_unchecked(2), Ok(Duration::from_micros(750))).unwrap().clone()
            }
            None => t.dial_failed(t0, None, "NO_RESERVATION".into()).unwrap().clone(),
        };
        PunchAttempt {
            attempt_id: Uuid::now_v7(),
            started_at: OffsetDateTime::now_utc(),
            sensor_id: "s-1".into(),
            relay: "/ip4/127.0.0.1/tcp/4001/p2p/relay".into(),
            relay_node: relay_node.into(),
            target: "12D3KooWtarget".into(),
            attempt: n,
            nat_verdict: Reachability::PrivateCone,
            kaspa,
            result,
        }
    }

    #[test]
    fn attempts_are_stored_column_for_column_and_summarised_per_relay_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.sqlite");
        let options = StoreOptions { flush_interval: Duration::from_millis(5), ..StoreOptions::default() };
        let store = Store::open(&path, options, Metrics::new().0).unwrap();
        let first = attempt("edge", 1, Some(12), Transport::Tcp);
        store.record_punch(first.clone()).unwrap();
        store.record_punch(first.clone()).unwrap(); // a duplicate id is ignored
        let done =
            KaspaCheck::Done { user_agent: "/kaspad:2.1.0/".into(), network: "kaspa-devnet".into(), elapsed_ms: 9 };
        let with_kaspa = attempt_with("edge", 2, Some(12), Transport::Quic, Some(done));
        store.record_punch(with_kaspa.clone()).unwrap();
        store.record_punch(attempt("edge", 3, None, Transport::Quic)).unwrap();
        let failed_kaspa = KaspaCheck::Failed("the target serves no /p2psensor/kaspa/1".into());
        store.record_punch(attempt_with("other", 2, Some(30), Transport::Tcp, Some(failed_kaspa))).unwrap();
        store.record_punch(attempt("other", 1, Some(40), Transport::Tcp)).unwrap();
        store.flush().unwrap();

        let reader = Reader::open(&path).unwrap();
        let rows = reader.punch_attempts().unwrap();
        assert_eq!(rows.len(), 5);
        let row = rows.iter().find(|r| r.attempt_id == first.attempt_id.to_string()).unwrap();
        assert_eq!(row.started_at, format_timestamp(first.started_at));
        assert_eq!((row.relay_node.as_str(), row.target.as_str(), row.attempt), ("edge", "12D3KooWtarget", 1));
        assert_eq!((row.transport.as_str(), row.outcome.as_str()), ("tcp", "success"));
        assert_eq!((row.dcutr_rounds, row.time_to_direct_ms, row.duration_ms), (Some(0), Some(12), 12));
        assert_eq!((row.direct_rtt_ms, row.relayed_rtt_ms), (Some(0.75), None));
        assert_eq!(row.direct_address.as_deref(), Some("/ip4/10.0.0.2/tcp/9"));
        assert_eq!((row.nat_verdict.as_str(), row.error.as_deref()), ("private-cone", None));
        assert_eq!((row.kaspa_handshake_ms, row.kaspa_error.as_deref()), (None, None), "no handshake tried");
        let row = rows.iter().find(|r| r.attempt_id == with_kaspa.attempt_id.to_string()).unwrap();
        assert_eq!(row.kaspa_handshake_ms, Some(9));
        assert_eq!(
            (row.kaspa_user_agent.as_deref(), row.kaspa_network.as_deref()),
            (Some("/kaspad:2.1.0/"), Some("kaspa-devnet"))
        );
        let row = rows.iter().find(|r| r.relay_node == "other" && r.attempt == 2).unwrap();
        assert_eq!(
            (row.kaspa_handshake_ms, row.kaspa_error.as_deref()),
            (None, Some("the target serves no /p2psensor/kaspa/1"))
        );
        let failed = rows.iter().find(|r| r.outcome == "no_relay_connection").unwrap();
        assert_eq!((failed.dcutr_rounds, failed.time_to_direct_ms), (None, None));
        assert_eq!(failed.error.as_deref(), Some("NO_RESERVATION"));

        let summary = reader.punch_summary("edge").unwrap();
        let expected = [("quic", "no_relay_connection", 1), ("quic", "success", 1), ("tcp", "success", 1)];
        let got: Vec<(&str, &str, u64)> =
            summary.by_transport_outcome.iter().map(|(t, o, n)| (t.as_str(), o.as_str(), *n)).collect();
        assert_eq!(got, expected);
        assert_eq!(summary.time_to_direct_ms, [(12, 2)]);
        assert_eq!((summary.kaspa_handshakes, summary.kaspa_handshake_failures), (1, 0));
        let other = reader.punch_summary("other").unwrap();
        assert_eq!((other.kaspa_handshakes, other.kaspa_handshake_failures), (0, 1));
        assert_eq!(reader.punch_summary("nobody").unwrap(), PunchSummary::default());
        drop(reader);
        store.close().unwrap();
    }
}
