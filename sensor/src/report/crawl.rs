//! The pure step of a crawler's report (`sensor crawl`'s continuous mode): the crawl tables'
//! summary ([`CrawlStoreSummary`]) → a `Report` whose only summary is `Report.crawl`.

use sensor_report::{
    MAX_LIST_ITEMS, MAX_STRING_BYTES,
    v1::{CrawlSummary, ErrorClassCount, Report},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::summary::{Origin, truncate};
use crate::store::crawl_status::CrawlStoreSummary;

/// Builds report number `sequence` of a crawler from its stored crawls, read at
/// `generated_at_unix_ms` (Unix ms). No peer, relay or hole-punch summary; `network` is the
/// origin's. Strings are cut to [`MAX_STRING_BYTES`] and the error classes to [`MAX_LIST_ITEMS`],
/// so the report passes the collector's `sensor_report::validate`. A `finished_at` that does not
/// parse gives `last_finished_unix_ms` 0.
pub fn build_crawl_report(
    origin: &Origin,
    sequence: u64,
    generated_at_unix_ms: i64,
    stored: &CrawlStoreSummary,
) -> Report {
    let mut crawl = CrawlSummary {
        network: origin.network.wire_name().to_owned(),
        crawls: stored.crawls,
        known_nodes: stored.known_nodes,
        reachable_nodes: stored.reachable_nodes,
        ..CrawlSummary::default()
    };
    if let Some(last) = &stored.last {
        crawl.last_visited = last.visited;
        crawl.last_reachable = last.reachable;
        crawl.last_duration_ms = last.duration_ms;
        crawl.last_finished_unix_ms = OffsetDateTime::parse(&last.finished_at, &Rfc3339)
            .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
            .unwrap_or(0);
        crawl.last_unreachable_by_class = last
            .unreachable_by_class
            .iter()
            .take(MAX_LIST_ITEMS)
            .map(|(class, visits)| ErrorClassCount {
                error_class: truncate(class, MAX_STRING_BYTES).to_owned(),
                visits: *visits,
            })
            .collect();
    }
    Report { crawl: Some(crawl), ..origin.envelope(sequence, generated_at_unix_ms) }
}

#[cfg(test)]
mod tests {
    use sensor_report::{OWNER_SENSOR_FLEET, v1::Owner, validate};

    use super::*;
    use crate::store::crawl_status::LastCrawl;
    use sensor_core::network::Network;

    fn origin() -> Origin {
        Origin {
            owner: Owner { namespace: "lab".into(), kind: OWNER_SENSOR_FLEET.into(), name: "fleet".into() },
            sender: "fleet-0-crawl".into(),
            sensor_id: "sensor-a".into(),
            network: Network::Devnet,
            started_at_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_crawl_report_carries_the_stored_figures_and_nothing_else() {
        let classes: Vec<(String, u64)> = (0..40).map(|n| (format!("class-{n}"), 40 - n)).collect();
        let stored = CrawlStoreSummary {
            crawls: 3,
            known_nodes: 120,
            reachable_nodes: 80,
            last: Some(LastCrawl {
                network: "kaspa-devnet".into(),
                visited: 110,
                reachable: 79,
                duration_ms: 4200,
                finished_at: "2023-11-14T22:13:20.500000000Z".into(),
                unreachable_by_class: classes,
            }),
        };
        let report = build_crawl_report(&origin(), 4, 1_700_000_001_000, &stored);
        validate(&report).expect("the collector accepts it");
        assert!(report.peers.is_none() && report.relay.is_none() && report.hole_punch.is_none());
        assert_eq!((report.sender.as_str(), report.sequence, report.network.as_str()), ("fleet-0-crawl", 4, "devnet"));
        let c = report.crawl.unwrap();
        assert_eq!((c.network.as_str(), c.crawls, c.known_nodes, c.reachable_nodes), ("kaspa-devnet", 3, 120, 80));
        assert_eq!((c.last_visited, c.last_reachable, c.last_duration_ms), (110, 79, 4200));
        assert_eq!(c.last_finished_unix_ms, 1_700_000_000_500);
        assert_eq!(c.last_unreachable_by_class.len(), MAX_LIST_ITEMS, "cut to the bound");
        assert_eq!(c.last_unreachable_by_class[0].error_class, "class-0");

        let empty = build_crawl_report(&origin(), 1, 0, &CrawlStoreSummary::default()).crawl.unwrap();
        assert_eq!((empty.crawls, empty.last_finished_unix_ms, empty.last_unreachable_by_class.len()), (0, 0, 0));
    }
}
