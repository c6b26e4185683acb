//! The end-of-crawl summary: a pure function of the visit results ([`Summary::from_visits`])
//! and its human table ([`Summary`]'s `Display`). ASN-free breakdowns: /16 for IPv4, /32 for
//! IPv6, of reachable nodes.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    time::Duration,
};

use serde::Serialize;

use sensor_core::Label;
use sensor_core::crawl::{FilterReason, VisitResult};

/// How many entries the top-N lists keep.
pub const TOP: usize = 10;

/// Totals and breakdowns of one crawl. Lists are `(name, count)` sorted by count descending,
/// then name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub visited: u64,
    pub reachable: u64,
    pub unreachable: u64,
    /// Failed visits by error class (a reachable visit with an error, e.g. an oversized
    /// `Addresses` reply, is counted here too).
    pub errors_by_class: Vec<(String, u64)>,
    /// Reachable nodes by protocol version.
    pub protocol_versions: Vec<(String, u64)>,
    /// The [`TOP`] most common user agents of reachable nodes.
    pub user_agents: Vec<(String, u64)>,
    /// The [`TOP`] most common prefixes of reachable nodes: `a.b.0.0/16` or `x:y::/32`.
    pub prefixes: Vec<(String, u64)>,
    /// Addresses not dialled, by reason.
    pub filtered: Vec<(String, u64)>,
    /// Wall time of the crawl, milliseconds.
    pub duration_ms: u64,
    /// Visits per second of wall time.
    pub nodes_per_second: f64,
}

impl Summary {
    /// Summarises `visits` of a crawl that took `duration` and filtered `filtered` addresses.
    pub fn from_visits(visits: &[VisitResult], filtered: &BTreeMap<FilterReason, u64>, duration: Duration) -> Summary {
        let mut errors = HashMap::new();
        let mut versions = HashMap::new();
        let mut agents = HashMap::new();
        let mut prefixes = HashMap::new();
        let mut reachable = 0;
        for v in visits {
            if let Some(class) = v.error_class {
                *errors.entry(class.as_str().to_owned()).or_default() += 1;
            }
            if !v.reachable {
                continue;
            }
            reachable += 1;
            *prefixes.entry(prefix(v.address.ip())).or_default() += 1;
            if let Some(p) = &v.peer {
                *versions.entry(p.protocol_version.to_string()).or_default() += 1;
                *agents.entry(p.user_agent.clone()).or_default() += 1;
            }
        }
        let visited = visits.len() as u64;
        let secs = duration.as_secs_f64();
        Summary {
            visited,
            reachable,
            unreachable: visited - reachable,
            errors_by_class: sorted(errors, usize::MAX),
            protocol_versions: sorted(versions, usize::MAX),
            user_agents: sorted(agents, TOP),
            prefixes: sorted(prefixes, TOP),
            filtered: filtered.iter().filter(|(_, n)| **n > 0).map(|(r, n)| (r.as_str().to_owned(), *n)).collect(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            nodes_per_second: if secs > 0.0 { visited as f64 / secs } else { 0.0 },
        }
    }
}

/// `a.b.0.0/16` for IPv4, the first 32 bits `x:y::/32` for IPv6.
pub fn prefix(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.0.0/16", o[0], o[1])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}::/32", s[0], s[1])
        }
    }
}

fn sorted(counts: HashMap<String, u64>, limit: usize) -> Vec<(String, u64)> {
    let mut list: Vec<_> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(limit);
    list
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "crawl summary")?;
        writeln!(f, "  visited      {:>8}", self.visited)?;
        writeln!(f, "  reachable    {:>8}", self.reachable)?;
        writeln!(f, "  unreachable  {:>8}", self.unreachable)?;
        writeln!(f, "  duration     {:>8.1} s", self.duration_ms as f64 / 1000.0)?;
        writeln!(f, "  rate         {:>8.1} nodes/s", self.nodes_per_second)?;
        for (title, list) in [
            ("errors by class", &self.errors_by_class),
            ("protocol versions (reachable)", &self.protocol_versions),
            ("user agents (reachable, top 10)", &self.user_agents),
            ("prefixes /16 IPv4, /32 IPv6 (reachable, top 10)", &self.prefixes),
            ("addresses not dialled, by reason", &self.filtered),
        ] {
            if list.is_empty() {
                continue;
            }
            writeln!(f, "  {title}")?;
            for (name, n) in list {
                writeln!(f, "    {n:>8}  {name}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_core::crawl::PeerFacts;
    use sensor_core::crawl::error_class::ErrorClass;

    fn visit(addr: &str, agent: Option<&str>, class: Option<ErrorClass>) -> VisitResult {
        VisitResult {
            address: addr.parse().unwrap(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            duration_ms: 3,
            rtt_ms: agent.map(|_| 1),
            reachable: agent.is_some() && class != Some(ErrorClass::WrongNetwork),
            peer: agent.map(|a| PeerFacts {
                protocol_version: 11,
                user_agent: a.to_owned(),
                network: "kaspa-mainnet".into(),
                peer_id: "00".repeat(16),
                advertised_address: None,
                services: 0,
            }),
            error: None,
            error_class: class,
            addresses: vec![],
            malformed: 0,
            capped: 0,
            requests: 1,
        }
    }

    #[test]
    fn counts_and_breakdowns() {
        let visits = vec![
            visit("1.2.3.4:16111", Some("/kaspad:2.1.0/"), None),
            visit("1.2.9.9:16111", Some("/kaspad:2.1.0/"), None),
            visit("5.6.7.8:16111", Some("/kaspad:1.0.0/"), None),
            visit("[2a01:4f8:1::1]:16111", Some("/kaspad:2.1.0/"), None),
            visit("9.9.9.9:16111", None, Some(ErrorClass::Refused)),
            visit("9.9.9.8:16111", None, Some(ErrorClass::Refused)),
            visit("9.9.9.7:16111", Some("/other/"), Some(ErrorClass::WrongNetwork)),
        ];
        let filtered = BTreeMap::from([(FilterReason::Private, 4), (FilterReason::Loopback, 0)]);
        let s = Summary::from_visits(&visits, &filtered, Duration::from_millis(3500));
        assert_eq!((s.visited, s.reachable, s.unreachable), (7, 4, 3));
        assert_eq!(s.errors_by_class, vec![("refused".into(), 2), ("wrong_network".into(), 1)]);
        assert_eq!(s.protocol_versions, vec![("11".into(), 4)]);
        assert_eq!(s.user_agents, vec![("/kaspad:2.1.0/".into(), 3), ("/kaspad:1.0.0/".into(), 1)]);
        assert_eq!(s.prefixes, vec![("1.2.0.0/16".into(), 2), ("2a01:4f8::/32".into(), 1), ("5.6.0.0/16".into(), 1)]);
        assert_eq!(s.filtered, vec![("private".into(), 4)]);
        assert_eq!(s.duration_ms, 3500);
        assert!((s.nodes_per_second - 2.0).abs() < 1e-9);
        let table = s.to_string();
        assert!(table.contains("reachable           4"), "{table}");
        assert!(table.contains("refused"), "{table}");
    }

    #[test]
    fn empty_crawl_and_top_n() {
        let s = Summary::from_visits(&[], &BTreeMap::new(), Duration::ZERO);
        assert_eq!((s.visited, s.nodes_per_second), (0, 0.0));
        let many: Vec<_> = (0..15).map(|i| visit(&format!("{i}.0.0.1:1"), Some(&format!("/ua{i}/")), None)).collect();
        let s = Summary::from_visits(&many, &BTreeMap::new(), Duration::from_secs(1));
        assert_eq!(s.user_agents.len(), TOP);
        assert_eq!(s.prefixes.len(), TOP);
    }
}
