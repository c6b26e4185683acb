//! One report as the collector keeps it ([`StoredReport`]): what the store holds per sender and
//! what the pure aggregation reads.

use std::sync::Arc;

use jiff::Timestamp;
use sensor_report::PeerIdSketch;
use sensor_report::v1::Report;

/// A validated report as kept by the store, compacted: the message without its peer-id list and
/// sketch bytes, the peer ids as 16-byte arrays, the decoded sketch only when the list is
/// incomplete (a complete list rebuilds it on demand), and when it arrived. About 2 KiB for a
/// sensor with 100 peers instead of ~14 KiB as received. Cloning is cheap (all parts shared).
#[derive(Clone, Debug)]
pub struct StoredReport {
    /// The report with `peers.peer_ids` and `peers.peer_id_sketch` emptied.
    pub report: Arc<Report>,
    /// `peers.peer_ids`, each exactly 16 bytes (validation guarantees it).
    pub peer_ids: Arc<[[u8; 16]]>,
    /// The sender's sketch when its peer-id list is incomplete; `None` when the list says it all.
    pub sketch: Option<Arc<PeerIdSketch>>,
    /// When the collector received the report (the operator's clock, not the sender's).
    pub received_at: Timestamp,
}

impl StoredReport {
    /// Compacts a report that passed [`sensor_report::validate`], which returned `sketch`.
    pub fn new(mut report: Report, sketch: PeerIdSketch, received_at: Timestamp) -> Self {
        let (peer_ids, complete) = match report.peers.as_mut() {
            Some(p) => {
                let ids: Vec<[u8; 16]> = std::mem::take(&mut p.peer_ids)
                    .iter()
                    .filter_map(|id| <[u8; 16]>::try_from(id.as_slice()).ok())
                    .collect();
                p.peer_id_sketch = Vec::new();
                (ids, p.peer_ids_complete)
            }
            None => (Vec::new(), true),
        };
        let sketch = (!complete).then(|| Arc::new(sketch));
        Self { report: Arc::new(report), peer_ids: peer_ids.into(), sketch, received_at }
    }

    /// Every peer this sender counted, as a sketch: the stored one, or one built from the list.
    pub fn full_sketch(&self) -> PeerIdSketch {
        let mut sketch = self.sketch.as_deref().cloned().unwrap_or_default();
        self.peer_ids.iter().for_each(|id| sketch.insert(id));
        sketch
    }

    /// The sending pod's name.
    pub fn sender(&self) -> &str {
        &self.report.sender
    }

    /// The order of reports from one sender: (process start, sequence); larger is newer.
    pub fn order(&self) -> (i64, u64) {
        (self.report.started_at_unix_ms, self.report.sequence)
    }
}
