//! The verdict cache: the last verdict per dial-back target `(ip, port)` for a TTL (docs/classification.md).
//!
//! A cached *public* verdict is reused only for the same peer id — another node behind the same
//! address must be probed, since the address answers with the cached node's id. Private verdicts
//! are about the address (nothing answered), so they apply to any peer id. Bounded: when full,
//! expired entries are purged, then the oldest entry is evicted.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sensor_core::verdict::{Classification, VerdictReason};

#[derive(Debug, Clone)]
struct Entry {
    reason: VerdictReason,
    peer_id: String,
    at: Instant,
}

/// Verdicts by target. Not thread-safe by itself; the classifier holds it under a mutex.
#[derive(Debug)]
pub struct VerdictCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<SocketAddr, Entry>,
}

impl VerdictCache {
    /// `ttl` = how long a verdict stays valid; `capacity` ≥ 1 entries.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity: capacity.max(1), entries: HashMap::new() }
    }

    /// The cached verdict reason for `target`, if fresh at `now` and applicable to `peer_id`.
    pub fn get(&self, target: SocketAddr, peer_id: &str, now: Instant) -> Option<VerdictReason> {
        let e = self.entries.get(&target)?;
        let fresh = now.saturating_duration_since(e.at) < self.ttl;
        let applies = e.reason.classification() != Classification::Public || e.peer_id == peer_id;
        (fresh && applies).then_some(e.reason)
    }

    /// Stores a probe's verdict. Unknown verdicts are not cached (nothing was learnt).
    pub fn insert(&mut self, target: SocketAddr, peer_id: &str, reason: VerdictReason, now: Instant) {
        if reason.classification() == Classification::Unknown {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&target) {
            let ttl = self.ttl;
            self.entries.retain(|_, e| now.saturating_duration_since(e.at) < ttl);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(target, Entry { reason, peer_id: peer_id.to_owned(), at: now });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fresh_entries_hit_expired_ones_miss() {
        let t0 = Instant::now();
        let mut c = VerdictCache::new(Duration::from_secs(60), 10);
        c.insert(addr("8.8.8.8:16111"), "a", VerdictReason::HandshakeVerified, t0);
        assert_eq!(
            c.get(addr("8.8.8.8:16111"), "a", t0 + Duration::from_secs(59)),
            Some(VerdictReason::HandshakeVerified)
        );
        assert_eq!(c.get(addr("8.8.8.8:16111"), "a", t0 + Duration::from_secs(60)), None);
        assert_eq!(c.get(addr("8.8.8.8:16112"), "a", t0), None);
    }

    #[test]
    fn public_applies_only_to_the_same_peer_private_to_any() {
        let t0 = Instant::now();
        let mut c = VerdictCache::new(Duration::from_secs(60), 10);
        c.insert(addr("8.8.8.8:16111"), "a", VerdictReason::HandshakeVerified, t0);
        c.insert(addr("9.9.9.9:16111"), "a", VerdictReason::Timeout, t0);
        assert_eq!(c.get(addr("8.8.8.8:16111"), "b", t0), None);
        assert_eq!(c.get(addr("9.9.9.9:16111"), "b", t0), Some(VerdictReason::Timeout));
    }

    #[test]
    fn unknown_is_not_cached_and_capacity_is_bounded() {
        let t0 = Instant::now();
        let mut c = VerdictCache::new(Duration::from_secs(60), 2);
        c.insert(addr("1.1.1.1:1"), "a", VerdictReason::QueueFull, t0);
        assert!(c.is_empty());
        c.insert(addr("1.1.1.1:1"), "a", VerdictReason::Refused, t0);
        c.insert(addr("2.2.2.2:1"), "a", VerdictReason::Refused, t0 + Duration::from_secs(1));
        c.insert(addr("3.3.3.3:1"), "a", VerdictReason::Refused, t0 + Duration::from_secs(2));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(addr("1.1.1.1:1"), "a", t0 + Duration::from_secs(3)), None, "oldest evicted");
        assert!(c.get(addr("3.3.3.3:1"), "a", t0 + Duration::from_secs(3)).is_some());
    }
}
