//! `sensor peers`: a human summary of the event database (no SQL needed).
//!
//! ```text
//! Database:    /var/lib/sensor/sensor.db
//! Peers:       3 (public 1, private 1, unknown 0, unclassified 1)
//! Connections: 4 accepted, 2 rejected (inbound_limit 1, wrong_network 1)
//! Verdicts:    2 (private 1, public 1)
//! Events:      8 total
//!
//! PEER ID            ADDRESS           USER AGENT                PROTO  CLASS   REASON  …
//! 0011223344556677…  203.0.113.5:16111 /kaspad:2.1.0/kaspad:2.1… 11     public  handshake_verified …
//! ```

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::error::{Result, SensorError};
use crate::store::{PeerRow, Reader};

/// Longest user agent shown (characters, ellipsis included).
const USER_AGENT_WIDTH: usize = 32;
/// Hex characters of the peer id shown before the ellipsis.
const PEER_ID_WIDTH: usize = 16;

/// Writes the report for the database at `db` to `out`: a summary block (peers by latest
/// classification, connections accepted/rejected by reason, verdicts, events total), then an
/// aligned table of at most `limit` peers, most recently seen first.
///
/// Errors: [`SensorError::Io`] (`NotFound`) when `db` does not exist — no database is created;
/// [`SensorError::Storage`] when it cannot be read or is not a sensor database;
/// [`SensorError::Io`] when writing to `out` fails.
pub fn write_report(db: &Path, out: &mut impl Write, limit: usize) -> Result<()> {
    let reader = Reader::open(db)?;
    let peers = reader.peer_counts()?;
    let events = reader.event_counts()?;
    let rows = reader.peers(limit)?;
    render(db, &peers, &events, &rows, out).map_err(|e| SensorError::io("writing the report", e))
}

fn render(
    db: &Path,
    peers: &crate::store::PeerCounts,
    events: &crate::store::EventCounts,
    rows: &[PeerRow],
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "Database:    {}", db.display())?;
    writeln!(
        out,
        "Peers:       {} (public {}, private {}, unknown {}, unclassified {})",
        peers.total, peers.public, peers.private, peers.unknown, peers.unclassified
    )?;
    writeln!(
        out,
        "Connections: {} accepted, {} rejected{}",
        events.accepted,
        events.rejected,
        breakdown(&events.rejected_by_reason)
    )?;
    writeln!(out, "Verdicts:    {}{}", events.verdicts, breakdown(&events.verdicts_by_classification))?;
    writeln!(out, "Events:      {} total", events.total)?;
    writeln!(out)?;
    if rows.is_empty() {
        writeln!(out, "No peers recorded yet.")?;
        return Ok(());
    }

    const HEADER: [&str; 8] = ["PEER ID", "ADDRESS", "USER AGENT", "PROTO", "CLASS", "REASON", "CONN", "LAST SEEN"];
    let table: Vec<[String; 8]> = rows.iter().map(cells).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    write_row(out, &HEADER.map(String::from), &widths)?;
    for row in &table {
        write_row(out, row, &widths)?;
    }
    if (rows.len() as u64) < peers.total {
        writeln!(out, "\n(showing the {} most recently seen of {} peers)", rows.len(), peers.total)?;
    }
    Ok(())
}

fn write_row(out: &mut impl Write, cells: &[String; 8], widths: &[usize; 8]) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

fn cells(p: &PeerRow) -> [String; 8] {
    let dash = || "-".to_owned();
    [
        truncate(&p.peer_id, PEER_ID_WIDTH + 1),
        address(p.last_ip.as_deref(), p.last_port),
        p.user_agent.as_deref().map_or_else(dash, |ua| truncate(ua, USER_AGENT_WIDTH)),
        p.protocol_version.map_or_else(dash, |v| v.to_string()),
        p.classification.clone().unwrap_or_else(dash),
        p.reason.clone().unwrap_or_else(dash),
        p.connections.to_string(),
        short_time(&p.last_seen),
    ]
}

/// ` (a 3, b 1)` or the empty string.
fn breakdown(list: &[(String, u64)]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = list.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(" ({})", parts.join(", "))
}

/// Keeps at most `max` characters, the last one an ellipsis when something was cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn address(ip: Option<&str>, port: Option<u16>) -> String {
    match (ip, port) {
        (Some(ip), Some(port)) => match ip.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{ip}:{port}"),
        },
        (Some(ip), None) => ip.to_owned(),
        _ => "-".to_owned(),
    }
}

/// `2026-11-21T04:26:00.123456789Z` → `2026-11-21 04:26:00Z`.
fn short_time(ts: &str) -> String {
    match ts.get(..19) {
        Some(head) if ts.len() > 19 => format!("{}Z", head.replacen('T', " ", 1)),
        _ => ts.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::{Store, StoreOptions};
    use sensor_core::connection::RejectReason;
    use sensor_core::event::{Direction, Event, EventKind};
    use sensor_core::verdict::{Classification, VerdictReason};

    fn event(kind: EventKind, ip: &str, peer_id: Option<&str>) -> Event {
        let ip: IpAddr = ip.parse().unwrap();
        let mut e = Event::now("sensor-a", kind, Direction::Inbound, ip, 40000);
        e.peer.peer_id = peer_id.map(String::from);
        e.peer.protocol_version = Some(11);
        e.peer.user_agent = Some("/kaspad:2.1.0/kaspad:2.1.0/with-a-long-suffix-here/".into());
        e
    }

    #[test]
    fn report_lists_peers_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sensor.db");
        let (metrics, _) = Metrics::new();
        let store = Store::open(&db, StoreOptions::default(), metrics).unwrap();
        let a = "00112233445566778899aabbccddeeff";
        let b = "ffeeddccbbaa99887766554433221100";
        store.record(event(EventKind::Accepted, "203.0.113.5", Some(a))).unwrap();
        store.record(event(EventKind::Accepted, "203.0.113.5", Some(a))).unwrap();
        store.record(event(EventKind::Accepted, "2001:db8::7", Some(b))).unwrap();
        store.record(event(EventKind::Rejected(RejectReason::InboundLimit), "198.51.100.9", None)).unwrap();
        let verdict =
            EventKind::Verdict { classification: Classification::Public, reason: VerdictReason::HandshakeVerified };
        store.record(event(verdict, "203.0.113.5", Some(a))).unwrap();
        store.close().unwrap();

        let mut out = Vec::new();
        write_report(&db, &mut out, 50).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Peers:       2 (public 1, private 0, unknown 0, unclassified 1)"), "{text}");
        assert!(text.contains("Connections: 3 accepted, 1 rejected (inbound_limit 1)"), "{text}");
        assert!(text.contains("Verdicts:    1 (public 1)"), "{text}");
        assert!(text.contains("Events:      5 total"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("PEER ID")).expect("header");
        assert_eq!(lines.len(), header + 3, "{text}");
        let row_a = lines.iter().find(|l| l.starts_with("0011223344556677…")).expect("row a");
        for want in ["203.0.113.5:40000", "11", "public", "handshake_verified", " 2 "] {
            assert!(row_a.contains(want), "{want} missing in {row_a}");
        }
        assert!(row_a.contains("/kaspad:2.1.0/kaspad:2.1.0/with…"), "{row_a}");
        let row_b = lines.iter().find(|l| l.starts_with("ffeeddccbbaa9988…")).expect("row b");
        assert!(row_b.contains("[2001:db8::7]:40000"), "{row_b}");
        // Columns are aligned: every cell of a column starts at the header's offset.
        let class_col = lines[header].find("CLASS").unwrap();
        assert_eq!(&row_a[row_a.char_indices().nth(class_col).unwrap().0..][..6], "public");

        let mut out = Vec::new();
        write_report(&db, &mut out, 1).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("(showing the 1 most recently seen of 2 peers)"), "{text}");
    }

    #[test]
    fn missing_database_is_a_clear_error_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nope.db");
        let err = write_report(&db, &mut Vec::new(), 10).unwrap_err();
        assert!(matches!(err, SensorError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!db.exists());
    }
}
