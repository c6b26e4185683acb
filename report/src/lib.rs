//! The report that sensor and relay pods push to the operator's collector (docs/architecture.md).
//!
//! - [`v1`]: the protobuf messages and the tonic `Collector` client/server, generated from
//!   `proto/p2psensor/report/v1/report.proto` (the project's own proto).
//! - [`PeerIdSketch`]: the mergeable distinct-count sketch of peer ids that a report carries.
//! - [`validate`]: the checks the collector applies before it keeps a report.
//! - [`TIME_TO_DIRECT_BOUNDS_MS`] and [`bucket_quantile_ms`]: the mergeable time-to-direct histogram.
//!
//! This crate has no P2P dependency, so the operator can use it without pulling the sensor's stack.

mod sketch;
mod validate;

pub use sketch::{PeerIdSketch, SKETCH_BYTES, SketchError};
pub use validate::{ReportError, validate};

/// Generated messages and services of `p2psensor.report.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("p2psensor.report.v1");
}

pub use sensor_core::report::{
    MAX_EXACT_PEER_IDS, MAX_LIST_ITEMS, MAX_STRING_BYTES, MAX_TOP_USER_AGENTS, OWNER_RELAY_NODE, OWNER_SENSOR_FLEET,
};

/// Upper bounds (ms) of the time-to-direct histogram buckets of `HolePunchSummary`; one more
/// bucket follows for everything slower (+Inf). Senders and the collector must agree on these.
pub const TIME_TO_DIRECT_BOUNDS_MS: [u64; 12] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000];

/// Number of buckets in `HolePunchSummary.time_to_direct_ms_buckets`.
pub const TIME_TO_DIRECT_BUCKETS: usize = TIME_TO_DIRECT_BOUNDS_MS.len() + 1;

/// Index of the bucket that a duration of `ms` falls into.
pub fn time_to_direct_bucket(ms: u64) -> usize {
    TIME_TO_DIRECT_BOUNDS_MS.iter().position(|bound| ms <= *bound).unwrap_or(TIME_TO_DIRECT_BOUNDS_MS.len())
}

/// The `q` quantile (0.0..=1.0) of a time-to-direct histogram, in ms, linearly interpolated
/// inside the bucket it falls in (as Prometheus' `histogram_quantile` does). `None` when the
/// histogram is empty; a quantile in the +Inf bucket returns the largest finite bound.
///
/// Counts are added up in `u128`: the collector sums reports' buckets with saturating adds, so
/// any bucket may be `u64::MAX` (a `u64` total overflowed: a panic in debug builds, a wrong
/// quantile in release builds; `fuzz/corpus/report/bucket-overflow`).
pub fn bucket_quantile_ms(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u128 = buckets.iter().map(|count| u128::from(*count)).sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u128;
    for (i, count) in buckets.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (seen + u128::from(*count)) as f64 >= rank {
            let Some(upper) = TIME_TO_DIRECT_BOUNDS_MS.get(i) else {
                return TIME_TO_DIRECT_BOUNDS_MS.last().copied();
            };
            let lower = if i == 0 { 0 } else { TIME_TO_DIRECT_BOUNDS_MS[i - 1] };
            let within = ((rank - seen as f64) / *count as f64).clamp(0.0, 1.0);
            return Some(lower + ((upper - lower) as f64 * within).round() as u64);
        }
        seen += u128::from(*count);
    }
    TIME_TO_DIRECT_BOUNDS_MS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_include_their_upper_bound() {
        assert_eq!(time_to_direct_bucket(0), 0);
        assert_eq!(time_to_direct_bucket(10), 0);
        assert_eq!(time_to_direct_bucket(11), 1);
        assert_eq!(time_to_direct_bucket(60_000), 11);
        assert_eq!(time_to_direct_bucket(60_001), 12);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let mut buckets = [0u64; TIME_TO_DIRECT_BUCKETS];
        assert_eq!(bucket_quantile_ms(&buckets, 0.5), None);
        // 4 samples in (100, 250]: the median is half-way through that bucket.
        buckets[time_to_direct_bucket(200)] = 4;
        assert_eq!(bucket_quantile_ms(&buckets, 0.5), Some(175));
        // Add 4 samples in (0, 10]: the median is now the top of the first bucket.
        buckets[0] = 4;
        assert_eq!(bucket_quantile_ms(&buckets, 0.5), Some(10));
        let mut slow = [0u64; TIME_TO_DIRECT_BUCKETS];
        slow[TIME_TO_DIRECT_BUCKETS - 1] = 1;
        assert_eq!(bucket_quantile_ms(&slow, 0.5), Some(60_000));
    }

    #[test]
    fn quantile_of_saturated_buckets_does_not_overflow() {
        // A saturated bucket plus any other count overflowed a u64 total (the fuzz input
        // fuzz/corpus/report/bucket-overflow has u64::MAX and 1).
        let mut buckets = [0u64; TIME_TO_DIRECT_BUCKETS];
        buckets[0] = u64::MAX;
        buckets[1] = 1;
        assert_eq!(bucket_quantile_ms(&buckets, 0.5), Some(5));
        buckets[1] = u64::MAX;
        assert_eq!(bucket_quantile_ms(&buckets, 0.5), Some(10));
        assert_eq!(bucket_quantile_ms(&buckets, 1.0), Some(25));
        assert_eq!(bucket_quantile_ms(&[u64::MAX; TIME_TO_DIRECT_BUCKETS], 1.0), Some(60_000));
    }
}
