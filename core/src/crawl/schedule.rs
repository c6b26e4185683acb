//! When to revisit a node (issue 5, item 4, for the continuous mode): Nebula's rule, next visit
//! = now + 1.2 × observed uptime, clamped to `[min, max]`. A node seen down (no uptime) is
//! revisited after `min`. Pure; the crawl writer feeds it `crawl_nodes.up_since` after every visit
//! and stores the result in `crawl_nodes.next_visit`.

use std::time::Duration;

use time::OffsetDateTime;

use crate::timestamp::parse_timestamp;

/// Nebula's uptime factor.
pub const UPTIME_FACTOR: f64 = 1.2;

/// The revisit bounds of the continuous mode (`crawl.min_revisit_secs`, `crawl.max_revisit_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisit {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Revisit {
    /// `[crawl]`'s defaults: 5 minutes and 1 day.
    fn default() -> Self {
        Revisit { min: Duration::from_secs(300), max: Duration::from_secs(86_400) }
    }
}

/// When to visit a node again after a visit that started at `visited_at`: `up_since` is the
/// node's `crawl_nodes.up_since` after that visit (RFC 3339; `None` or unparsable: the visit
/// failed, so the node is treated as down). Pure.
pub fn next_visit(visited_at: OffsetDateTime, up_since: Option<&str>, revisit: Revisit) -> OffsetDateTime {
    let uptime = up_since
        .and_then(parse_timestamp)
        .map(|since| Duration::try_from(visited_at - since).unwrap_or(Duration::ZERO));
    visited_at + next_visit_delay(uptime, revisit.min, revisit.max)
}

/// Delay until the next visit of a node up for `uptime` (`None`: the last visit failed).
pub fn next_visit_delay(uptime: Option<Duration>, min: Duration, max: Duration) -> Duration {
    let max = max.max(min);
    match uptime {
        None => min,
        Some(up) => up.mul_f64(UPTIME_FACTOR).clamp(min, max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapts_to_uptime_within_bounds() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(next_visit_delay(None, min, max), min);
        assert_eq!(next_visit_delay(Some(Duration::from_secs(10)), min, max), min);
        assert_eq!(next_visit_delay(Some(Duration::from_secs(100)), min, max), Duration::from_secs(120));
        assert_eq!(next_visit_delay(Some(Duration::from_secs(86_400)), min, max), max);
        assert_eq!(next_visit_delay(Some(Duration::from_secs(5)), max, min), max, "max below min: min wins");
    }

    #[test]
    fn next_visit_counts_uptime_from_up_since() {
        let revisit = Revisit { min: Duration::from_secs(60), max: Duration::from_secs(3600) };
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let since = crate::timestamp::format_timestamp(at - Duration::from_secs(1000));
        assert_eq!(next_visit(at, Some(&since), revisit), at + Duration::from_secs(1200), "1.2 x 1000 s up");
        assert_eq!(next_visit(at, None, revisit), at + revisit.min, "down: the minimum");
        assert_eq!(next_visit(at, Some("garbage"), revisit), at + revisit.min);
        let first = crate::timestamp::format_timestamp(at);
        assert_eq!(next_visit(at, Some(&first), revisit), at + revisit.min, "first reachable visit: no uptime yet");
        let long = crate::timestamp::format_timestamp(at - Duration::from_secs(86_400 * 30));
        assert_eq!(next_visit(at, Some(&long), revisit), at + revisit.max);
    }
}
