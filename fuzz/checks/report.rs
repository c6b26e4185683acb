//! The property checks of fuzz target `report`, called by the libFuzzer target
//! (`fuzz/fuzz_targets/report.rs`) and by the corpus replay under `cargo test`
//! (`sensor/tests/fuzz_corpus.rs`).
//!
//! Input: the protobuf messages of `p2psensor.report.v1` that cross the network — a `Report` as
//! the operator's collector receives it from a sensor or relay pod (`Push`), and the `PushAck` a
//! sensor receives back — through what follows the decode: the collector's
//! [`sensor_report::validate`], then, for an accepted report, what its aggregation does
//! (`operator/src/collector`): the peer-id sketch built from the sent sketch and the exact ids
//! (`StoredReport::full_sketch`), merged and estimated, and the time-to-direct quantiles
//! ([`bucket_quantile_ms`]) of the hole-punch histogram.
//!
//! Properties: never panics; an accepted report's peer ids are 16 bytes and its histogram has 0
//! or [`TIME_TO_DIRECT_BUCKETS`] buckets; its sketch survives its wire form; merging a sketch
//! into an empty one gives the sketch; quantiles are within the largest finite bucket bound;
//! every refusal has a metric label.

use sensor_report::{
    PeerIdSketch, TIME_TO_DIRECT_BOUNDS_MS, TIME_TO_DIRECT_BUCKETS, bucket_quantile_ms,
    v1::{PushAck, Report},
    validate,
};
use tonic_prost::prost::Message;

/// Panics when `data` breaks a property.
pub fn check(data: &[u8]) {
    if let Ok(ack) = PushAck::decode(data) {
        assert_eq!(PushAck::decode(ack.encode_to_vec().as_slice()).as_ref(), Ok(&ack));
    }
    let Ok(report) = Report::decode(data) else { return };
    let sketch = match validate(&report) {
        Ok(sketch) => sketch,
        Err(e) => {
            assert!(!e.kind().is_empty() && !e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(PeerIdSketch::from_bytes(&sketch.to_bytes()).expect("a sketch's own wire form decodes"), sketch);
    let mut full = sketch.clone();
    for id in report.peers.iter().flat_map(|p| &p.peer_ids) {
        let id: [u8; 16] = id.as_slice().try_into().expect("validate accepts only 16-byte peer ids");
        full.insert(&id);
    }
    let mut merged = PeerIdSketch::new();
    merged.merge(&full);
    assert_eq!(merged, full);
    let _ = merged.estimate();
    if let Some(punch) = &report.hole_punch {
        let n = punch.time_to_direct_ms_buckets.len();
        assert!(n == 0 || n == TIME_TO_DIRECT_BUCKETS, "accepted a histogram of {n} buckets");
        let largest = TIME_TO_DIRECT_BOUNDS_MS[TIME_TO_DIRECT_BOUNDS_MS.len() - 1];
        for q in [0.0, 0.5, 0.95, 1.0] {
            if let Some(ms) = bucket_quantile_ms(&punch.time_to_direct_ms_buckets, q) {
                assert!(ms <= largest, "quantile {q} is {ms} ms");
            }
        }
    }
}
