//! `sensor crawl --output FILE`: the crawl as JSON or CSV, chosen by the file's extension.
//!
//! * `.json`: `{"crawl": {…}, "summary": {…}, "nodes": [{"address", "reachable", "error_class",
//!   "protocol_version", "user_agent", "peer_id", …}], "edges": [{"from", "to"}]}`.
//! * `.csv`: a header line, then one row per visited node with the columns of [`NodeRecord`].
//!
//! Nodes are sorted by address text; edges by `(from, to)`.

use std::{io::Write, net::SocketAddr, path::Path};

use serde::Serialize;

use sensor_core::crawl::VisitResult;

use super::summary::Summary;
use crate::error::{Result, SensorError};
use sensor_core::Label;

/// The export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// The format for `path` by extension (`.json` or `.csv`, case-insensitive).
    ///
    /// Errors: [`SensorError::Config`] (key `--output`) for any other extension.
    pub fn for_path(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            _ => Err(SensorError::Config {
                key: "--output".into(),
                reason: format!("{}: the file name must end in .json or .csv", path.display()),
            }),
        }
    }
}

/// The crawl's own facts in the JSON export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrawlInfo {
    pub crawl_id: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    /// Wire name, e.g. `kaspa-mainnet`.
    pub network: String,
    pub seeds: Vec<String>,
    pub concurrency: usize,
    pub timeout_ms: u64,
    pub visited: u64,
    pub reachable: u64,
    /// Distinct dialable addresses learned (seeds included).
    pub known: u64,
    pub duration_ms: u64,
    /// `--max-duration-secs` ended the crawl before every known address was visited.
    pub stopped_early: bool,
}

/// One visited node: a JSON object in `nodes`, a CSV row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// `IP:PORT` dialled.
    pub address: String,
    pub reachable: bool,
    pub error_class: Option<&'static str>,
    pub error: Option<String>,
    pub protocol_version: Option<u32>,
    pub user_agent: Option<String>,
    pub network: Option<String>,
    pub peer_id: Option<String>,
    pub advertised_address: Option<String>,
    pub services: Option<u64>,
    /// Connect start to the peer's `Version`, milliseconds.
    pub rtt_ms: Option<u64>,
    /// Connect to close, milliseconds.
    pub duration_ms: u64,
    /// Distinct well-formed addresses the node gossiped.
    pub addresses_returned: usize,
}

impl NodeRecord {
    pub fn from_visit(v: &VisitResult) -> NodeRecord {
        let p = v.peer.as_ref();
        NodeRecord {
            address: v.address.to_string(),
            reachable: v.reachable,
            error_class: v.error_class.map(|c| c.as_str()),
            error: v.error.as_ref().map(ToString::to_string),
            protocol_version: p.map(|p| p.protocol_version),
            user_agent: p.map(|p| p.user_agent.clone()),
            network: p.map(|p| p.network.clone()),
            peer_id: p.map(|p| p.peer_id.clone()),
            advertised_address: p.and_then(|p| p.advertised_address.clone()),
            services: p.map(|p| p.services),
            rtt_ms: v.rtt_ms,
            duration_ms: v.duration_ms,
            addresses_returned: v.addresses.len(),
        }
    }
}

const CSV_HEADER: [&str; 13] = [
    "address",
    "reachable",
    "error_class",
    "error",
    "protocol_version",
    "user_agent",
    "network",
    "peer_id",
    "advertised_address",
    "services",
    "rtt_ms",
    "duration_ms",
    "addresses_returned",
];

#[derive(Serialize)]
struct Edge {
    from: String,
    to: String,
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    crawl: &'a CrawlInfo,
    summary: &'a Summary,
    nodes: Vec<NodeRecord>,
    edges: Vec<Edge>,
}

fn records(visits: &[VisitResult]) -> Vec<NodeRecord> {
    let mut nodes: Vec<_> = visits.iter().map(NodeRecord::from_visit).collect();
    nodes.sort_by(|a, b| a.address.cmp(&b.address));
    nodes
}

/// Writes the JSON document. Errors: the writer's I/O error.
pub fn write_json(
    out: &mut impl Write,
    crawl: &CrawlInfo,
    summary: &Summary,
    visits: &[VisitResult],
    edges: &[(SocketAddr, SocketAddr)],
) -> std::io::Result<()> {
    let mut edges: Vec<Edge> = edges.iter().map(|(f, t)| Edge { from: f.to_string(), to: t.to_string() }).collect();
    edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    let doc = JsonDoc { crawl, summary, nodes: records(visits), edges };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    out.write_all(b"\n")
}

/// Writes the CSV table (RFC 4180 quoting: fields with `,`, `"`, CR or LF are quoted, quotes
/// doubled; absent values are empty). Errors: the writer's I/O error.
pub fn write_csv(out: &mut impl Write, visits: &[VisitResult]) -> std::io::Result<()> {
    writeln!(out, "{}", CSV_HEADER.join(","))?;
    let opt = |v: Option<String>| v.unwrap_or_default();
    for n in records(visits) {
        let fields = [
            n.address,
            n.reachable.to_string(),
            n.error_class.unwrap_or_default().to_owned(),
            opt(n.error),
            opt(n.protocol_version.map(|v| v.to_string())),
            opt(n.user_agent),
            opt(n.network),
            opt(n.peer_id),
            opt(n.advertised_address),
            opt(n.services.map(|v| v.to_string())),
            opt(n.rtt_ms.map(|v| v.to_string())),
            n.duration_ms.to_string(),
            n.addresses_returned.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// Writes the export to `path` in the format of its extension.
///
/// Errors: [`SensorError::Config`] for an unknown extension, [`SensorError::Io`] when the file
/// cannot be written.
pub fn write_file(
    path: &Path,
    crawl: &CrawlInfo,
    summary: &Summary,
    visits: &[VisitResult],
    edges: &[(SocketAddr, SocketAddr)],
) -> Result<()> {
    let format = Format::for_path(path)?;
    let io = |e| SensorError::io(format!("writing {}", path.display()), e);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    match format {
        Format::Json => write_json(&mut file, crawl, summary, visits, edges),
        Format::Csv => write_csv(&mut file, visits),
    }
    .map_err(io)?;
    file.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use sensor_core::crawl::PeerFacts;
    use sensor_core::crawl::error_class::{ErrorClass, VisitError};

    fn visits() -> Vec<VisitResult> {
        let base = VisitResult {
            address: "127.0.0.2:16611".parse().unwrap(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            duration_ms: 12,
            rtt_ms: Some(2),
            reachable: true,
            peer: Some(PeerFacts {
                protocol_version: 11,
                user_agent: "/kaspad:2.1.0/,\"x\"".into(),
                network: "kaspa-devnet".into(),
                peer_id: "ab".repeat(16),
                advertised_address: None,
                services: 1,
            }),
            error: None,
            error_class: None,
            addresses: vec!["127.0.0.3:16611".parse().unwrap()],
            malformed: 0,
            capped: 0,
            requests: 2,
        };
        let refused = VisitResult {
            address: "127.0.0.3:16611".parse().unwrap(),
            rtt_ms: None,
            reachable: false,
            peer: None,
            error: Some(VisitError::Connect("Connection refused (os error 111)".into())),
            error_class: Some(ErrorClass::Refused),
            addresses: vec![],
            ..base.clone()
        };
        vec![refused, base]
    }

    fn info() -> CrawlInfo {
        CrawlInfo {
            crawl_id: "id".into(),
            started_at: "2026-11-21T00:00:00.000000000Z".into(),
            finished_at: "2026-11-21T00:00:01.000000000Z".into(),
            network: "kaspa-devnet".into(),
            seeds: vec!["127.0.0.2:16611".into()],
            concurrency: 4,
            timeout_ms: 1000,
            visited: 2,
            reachable: 1,
            known: 2,
            duration_ms: 1000,
            stopped_early: false,
        }
    }

    #[test]
    fn json_has_crawl_nodes_and_edges() {
        let v = visits();
        let summary = Summary::from_visits(&v, &BTreeMap::new(), Duration::from_secs(1));
        let edges = [("127.0.0.2:16611".parse().unwrap(), "127.0.0.3:16611".parse().unwrap())];
        let mut out = Vec::new();
        write_json(&mut out, &info(), &summary, &v, &edges).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["crawl"]["network"], "kaspa-devnet");
        assert_eq!(doc["summary"]["reachable"], 1);
        let nodes = doc["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["address"], "127.0.0.2:16611");
        assert_eq!(nodes[0]["reachable"], true);
        assert_eq!(nodes[0]["protocol_version"], 11);
        assert_eq!(nodes[0]["peer_id"], "ab".repeat(16));
        assert!(nodes[0]["error_class"].is_null());
        assert_eq!(nodes[1]["error_class"], "refused");
        assert!(nodes[1]["user_agent"].is_null());
        assert_eq!(doc["edges"], serde_json::json!([{"from": "127.0.0.2:16611", "to": "127.0.0.3:16611"}]));
    }

    #[test]
    fn csv_has_header_and_quoted_rows() {
        let mut out = Vec::new();
        write_csv(&mut out, &visits()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CSV_HEADER.join(","));
        assert!(
            lines[1].starts_with("127.0.0.2:16611,true,,,11,\"/kaspad:2.1.0/,\"\"x\"\"\",kaspa-devnet,"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("127.0.0.3:16611,false,refused,"), "{}", lines[2]);
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::for_path(Path::new("x.json")).unwrap(), Format::Json);
        assert_eq!(Format::for_path(Path::new("/a/b.CSV")).unwrap(), Format::Csv);
        for bad in ["x.txt", "x", "json"] {
            assert_eq!(Format::for_path(Path::new(bad)).unwrap_err().kind(), "config", "{bad}");
        }
    }
}
