//! What one report summarises, read from the event database in one consistent read.

use crate::error::Result;
use crate::store::{PeerCounts, Reader};

/// The database facts behind one report, all from the same committed state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Distinct peers by latest verdict (`total` is the exact distinct count).
    pub peers: PeerCounts,
    /// Accepted inbound connection events, all time.
    pub connections_accepted: u64,
    /// Rejected inbound connection events, all time.
    pub connections_rejected: u64,
    /// `(user_agent, distinct peers)`, most common first (then by name), at most
    /// [`sensor_report::MAX_TOP_USER_AGENTS`].
    pub top_user_agents: Vec<(String, u64)>,
    /// Every peer id as stored (lower-case hex of 16 bytes), ascending.
    pub peer_ids: Vec<String>,
}

impl Snapshot {
    /// Reads everything inside one read transaction ([`Reader::consistent`]), so the counts and
    /// the peer ids agree even while the writer commits. Blocking (SQLite): call it on
    /// `spawn_blocking`. Cost: one pass over the `events` table and one over `peers`.
    ///
    /// Errors: [`SensorError::Storage`](crate::SensorError::Storage) when a query fails.
    pub fn read(reader: &Reader) -> Result<Snapshot> {
        reader.consistent(|r| {
            let peers = r.peer_counts()?;
            let events = r.event_counts()?;
            let top_user_agents = r.top_user_agents(sensor_report::MAX_TOP_USER_AGENTS)?;
            let mut peer_ids = Vec::with_capacity(usize::try_from(peers.total).unwrap_or(0));
            r.for_each_peer_id(|id| peer_ids.push(id.to_owned()))?;
            Ok(Snapshot {
                peers,
                connections_accepted: events.accepted,
                connections_rejected: events.rejected,
                top_user_agents,
                peer_ids,
            })
        })
    }
}
