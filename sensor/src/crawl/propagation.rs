//! Address propagation (issue 5, item 5): for one address, who was first seen gossiping it and
//! when ([`address_sightings`](crate::store::crawl) keeps each `(address, gossiper)` pair once,
//! with its earliest time), and how long it took to reach k distinct gossipers.
//!
//! Within one crawl every gossiper is visited within seconds, so the figures then measure the
//! crawl; across repeated crawls (continuous mode) they measure how the address spread.

use std::{fmt, time::Duration};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// One gossiper's first sighting of the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// `IP:PORT` of the gossiping node.
    pub gossiper: String,
    pub first_seen: OffsetDateTime,
}

/// The propagation of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub address: String,
    /// `(gossiper, offset from the first sighting)`, earliest first (ties by gossiper).
    pub sightings: Vec<(String, Duration)>,
    /// `time_to_k[k - 1]`: time from the first sighting until `k` distinct gossipers had it.
    pub time_to_k: Vec<Duration>,
}

/// Builds the timeline of `address` from its sightings (any order; a gossiper listed twice
/// counts once, at its earliest time).
pub fn timeline(address: &str, sightings: &[Sighting]) -> Timeline {
    let mut earliest: Vec<Sighting> = Vec::new();
    let mut sorted = sightings.to_vec();
    sorted.sort_by(|a, b| (a.first_seen, &a.gossiper).cmp(&(b.first_seen, &b.gossiper)));
    for s in sorted {
        if !earliest.iter().any(|e| e.gossiper == s.gossiper) {
            earliest.push(s);
        }
    }
    let Some(first) = earliest.first().map(|s| s.first_seen) else {
        return Timeline { address: address.to_owned(), sightings: vec![], time_to_k: vec![] };
    };
    let offset = |t: OffsetDateTime| Duration::try_from(t - first).unwrap_or(Duration::ZERO);
    let sightings: Vec<(String, Duration)> =
        earliest.iter().map(|s| (s.gossiper.clone(), offset(s.first_seen))).collect();
    let time_to_k = sightings.iter().map(|(_, d)| *d).collect();
    Timeline { address: address.to_owned(), sightings, time_to_k }
}

/// Parses stored `(gossiper, first_seen)` rows (RFC 3339 text); rows with an unparsable time
/// are skipped.
pub fn parse_rows(rows: &[(String, String)]) -> Vec<Sighting> {
    rows.iter()
        .filter_map(|(g, t)| {
            OffsetDateTime::parse(t, &Rfc3339).ok().map(|first_seen| Sighting { gossiper: g.clone(), first_seen })
        })
        .collect()
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sightings.is_empty() {
            return writeln!(f, "{}: never seen in gossip", self.address);
        }
        writeln!(f, "{}: gossiped by {} node(s)", self.address, self.sightings.len())?;
        writeln!(f, "  offset (s)  gossiper")?;
        for (g, d) in &self.sightings {
            writeln!(f, "  {:>10.3}  {g}", d.as_secs_f64())?;
        }
        writeln!(f, "  time to k gossipers")?;
        for (i, d) in self.time_to_k.iter().enumerate() {
            writeln!(f, "  k={:<4} {:>10.3} s", i + 1, d.as_secs_f64())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    #[test]
    fn time_to_k_counts_distinct_gossipers_from_the_first_sighting() {
        let s = |g: &str, t| Sighting { gossiper: g.into(), first_seen: at(t) };
        let t = timeline("1.2.3.4:16111", &[s("c", 130), s("a", 100), s("b", 105), s("a", 90), s("d", 130)]);
        assert_eq!(
            t.sightings,
            vec![
                ("a".into(), Duration::ZERO),
                ("b".into(), Duration::from_secs(15)),
                ("c".into(), Duration::from_secs(40)),
                ("d".into(), Duration::from_secs(40)),
            ]
        );
        assert_eq!(t.time_to_k, [0, 15, 40, 40].map(Duration::from_secs));
        let text = t.to_string();
        assert!(text.contains("gossiped by 4 node(s)") && text.contains("k=2"), "{text}");
    }

    #[test]
    fn no_sightings_and_stored_rows() {
        let t = timeline("x", &[]);
        assert!(t.time_to_k.is_empty());
        assert!(t.to_string().contains("never seen"));
        let rows = vec![
            ("a".to_owned(), "2026-11-21T04:26:00.000000000Z".to_owned()),
            ("b".to_owned(), "2026-11-21T04:26:02.500000000Z".to_owned()),
            ("c".to_owned(), "garbage".to_owned()),
        ];
        let t = timeline("x", &parse_rows(&rows));
        assert_eq!(t.time_to_k, vec![Duration::ZERO, Duration::from_millis(2500)]);
    }
}
