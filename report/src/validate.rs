//! The collector's checks on a received [`Report`](crate::v1::Report).

use crate::v1::Report;
use crate::{
    MAX_EXACT_PEER_IDS, MAX_LIST_ITEMS, MAX_STRING_BYTES, MAX_TOP_USER_AGENTS, OWNER_RELAY_NODE, OWNER_SENSOR_FLEET,
    PeerIdSketch, TIME_TO_DIRECT_BUCKETS,
};

/// Why a report was refused. The variant names are the collector's metric labels
/// (`operator_collector_reports_total{result}` in snake_case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Owner missing, or owner kind not `SensorFleet`/`RelayNode`, or an empty name/namespace.
    #[error("invalid owner: {0}")]
    InvalidOwner(String),
    /// Sender (pod name) missing or too long.
    #[error("invalid sender: {0}")]
    InvalidSender(String),
    /// A list or string over its bound.
    #[error("over bound: {0}")]
    OverBound(String),
    /// A peer id that is not 16 bytes.
    #[error("invalid peer id of {0} bytes (expected 16)")]
    InvalidPeerId(usize),
    /// A sketch that does not decode.
    #[error("{0}")]
    InvalidSketch(String),
    /// A histogram with the wrong number of buckets.
    #[error("time_to_direct_ms_buckets has {0} buckets (expected 0 or {TIME_TO_DIRECT_BUCKETS})")]
    InvalidHistogram(usize),
}

impl ReportError {
    /// Metric label / reason: the variant name in snake_case.
    pub fn kind(&self) -> &'static str {
        match self {
            ReportError::InvalidOwner(_) => "invalid_owner",
            ReportError::InvalidSender(_) => "invalid_sender",
            ReportError::OverBound(_) => "over_bound",
            ReportError::InvalidPeerId(_) => "invalid_peer_id",
            ReportError::InvalidSketch(_) => "invalid_sketch",
            ReportError::InvalidHistogram(_) => "invalid_histogram",
        }
    }
}

fn bounded(what: &str, value: &str) -> Result<(), ReportError> {
    if value.len() > MAX_STRING_BYTES {
        return Err(ReportError::OverBound(format!("{what} is {} bytes (max {MAX_STRING_BYTES})", value.len())));
    }
    Ok(())
}

fn bounded_list(what: &str, len: usize, max: usize) -> Result<(), ReportError> {
    if len > max {
        return Err(ReportError::OverBound(format!("{what} has {len} items (max {max})")));
    }
    Ok(())
}

/// Checks every bound the proto documents and decodes the sketch; returns the decoded sketch
/// (empty when the report has none). Errors: [`ReportError`].
pub fn validate(report: &Report) -> Result<PeerIdSketch, ReportError> {
    let owner = report.owner.as_ref().ok_or_else(|| ReportError::InvalidOwner("missing".into()))?;
    if owner.kind != OWNER_SENSOR_FLEET && owner.kind != OWNER_RELAY_NODE {
        return Err(ReportError::InvalidOwner(format!("kind {:?}", owner.kind)));
    }
    if owner.namespace.is_empty() || owner.name.is_empty() {
        return Err(ReportError::InvalidOwner("empty namespace or name".into()));
    }
    bounded("owner.namespace", &owner.namespace)?;
    bounded("owner.name", &owner.name)?;
    if report.sender.is_empty() || report.sender.len() > MAX_STRING_BYTES {
        return Err(ReportError::InvalidSender(format!("{} bytes", report.sender.len())));
    }
    bounded("sensor_id", &report.sensor_id)?;
    bounded("network", &report.network)?;
    bounded("agent", &report.agent)?;
    let mut sketch = PeerIdSketch::new();
    if let Some(peers) = &report.peers {
        bounded_list("top_user_agents", peers.top_user_agents.len(), MAX_TOP_USER_AGENTS)?;
        for ua in &peers.top_user_agents {
            bounded("user_agent", &ua.user_agent)?;
        }
        bounded_list("peer_ids", peers.peer_ids.len(), MAX_EXACT_PEER_IDS)?;
        if let Some(bad) = peers.peer_ids.iter().find(|id| id.len() != 16) {
            return Err(ReportError::InvalidPeerId(bad.len()));
        }
        sketch =
            PeerIdSketch::from_bytes(&peers.peer_id_sketch).map_err(|e| ReportError::InvalidSketch(e.to_string()))?;
    }
    if let Some(relay) = &report.relay {
        bounded("relay.peer_id", &relay.peer_id)?;
        bounded("relay.reachability", &relay.reachability)?;
        bounded_list("listen_addrs", relay.listen_addrs.len(), MAX_LIST_ITEMS)?;
        for addr in &relay.listen_addrs {
            bounded("listen_addr", addr)?;
        }
    }
    if let Some(punch) = &report.hole_punch {
        bounded_list("by_transport", punch.by_transport.len(), MAX_LIST_ITEMS)?;
        for t in &punch.by_transport {
            bounded("transport", &t.transport)?;
        }
        bounded("hole_punch.relay", &punch.relay)?;
        bounded("hole_punch.peer_id", &punch.peer_id)?;
        bounded("hole_punch.reachability", &punch.reachability)?;
        let n = punch.time_to_direct_ms_buckets.len();
        if n != 0 && n != TIME_TO_DIRECT_BUCKETS {
            return Err(ReportError::InvalidHistogram(n));
        }
    }
    if let Some(crawl) = &report.crawl {
        bounded("crawl.network", &crawl.network)?;
        bounded_list("last_unreachable_by_class", crawl.last_unreachable_by_class.len(), MAX_LIST_ITEMS)?;
        for c in &crawl.last_unreachable_by_class {
            bounded("error_class", &c.error_class)?;
        }
    }
    Ok(sketch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{CrawlSummary, ErrorClassCount, HolePunchSummary, Owner, PeerSummary};

    fn report() -> Report {
        Report {
            owner: Some(Owner { namespace: "default".into(), kind: OWNER_SENSOR_FLEET.into(), name: "fleet".into() }),
            sender: "fleet-0".into(),
            peers: Some(PeerSummary { peer_ids: vec![vec![7; 16]], peer_ids_complete: true, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_well_formed_report_passes() {
        assert!(validate(&report()).is_ok());
    }

    #[test]
    fn each_bound_has_its_own_error() {
        let mut r = report();
        r.owner = None;
        assert_eq!(validate(&r).unwrap_err().kind(), "invalid_owner");
        let mut r = report();
        r.owner.as_mut().unwrap().kind = "Pod".into();
        assert_eq!(validate(&r).unwrap_err().kind(), "invalid_owner");
        let mut r = report();
        r.sender.clear();
        assert_eq!(validate(&r).unwrap_err().kind(), "invalid_sender");
        let mut r = report();
        r.peers.as_mut().unwrap().peer_ids.push(vec![1; 15]);
        assert_eq!(validate(&r).unwrap_err(), ReportError::InvalidPeerId(15));
        let mut r = report();
        r.peers.as_mut().unwrap().peer_ids = vec![vec![1; 16]; MAX_EXACT_PEER_IDS + 1];
        assert_eq!(validate(&r).unwrap_err().kind(), "over_bound");
        let mut r = report();
        r.peers.as_mut().unwrap().peer_id_sketch = b"not json".to_vec();
        assert_eq!(validate(&r).unwrap_err().kind(), "invalid_sketch");
        let mut r = report();
        r.hole_punch = Some(HolePunchSummary { time_to_direct_ms_buckets: vec![1, 2], ..Default::default() });
        assert_eq!(validate(&r).unwrap_err(), ReportError::InvalidHistogram(2));
        let mut r = report();
        r.network = "x".repeat(MAX_STRING_BYTES + 1);
        assert_eq!(validate(&r).unwrap_err().kind(), "over_bound");
        let buckets = vec![0; crate::TIME_TO_DIRECT_BUCKETS];
        let mut r = report();
        r.crawl = Some(CrawlSummary {
            last_unreachable_by_class: vec![ErrorClassCount::default(); MAX_LIST_ITEMS + 1],
            ..Default::default()
        });
        assert_eq!(validate(&r).unwrap_err().kind(), "over_bound");
        let mut r = report();
        r.crawl = Some(CrawlSummary {
            last_unreachable_by_class: vec![ErrorClassCount {
                error_class: "x".repeat(MAX_STRING_BYTES + 1),
                visits: 1,
            }],
            ..Default::default()
        });
        assert_eq!(validate(&r).unwrap_err().kind(), "over_bound");
        let mut r = report();
        r.crawl = Some(CrawlSummary { network: "kaspa-devnet".into(), reachable_nodes: 5, ..Default::default() });
        assert!(validate(&r).is_ok());
        for long in [
            HolePunchSummary { peer_id: "x".repeat(MAX_STRING_BYTES + 1), ..Default::default() },
            HolePunchSummary { reachability: "x".repeat(MAX_STRING_BYTES + 1), ..Default::default() },
        ] {
            let mut r = report();
            r.hole_punch = Some(HolePunchSummary { time_to_direct_ms_buckets: buckets.clone(), ..long });
            assert_eq!(validate(&r).unwrap_err().kind(), "over_bound");
        }
    }
}
