//! Inbound admission limits: total inbound peers, peers per source IP, peers per subnet
//! (/24 for IPv4, /48 for IPv6, after unmapping IPv4-mapped IPv6), and pending handshakes.
//!
//! A connection holds an [`AdmissionGuard`] from the moment it is admitted until it closes; the
//! guard counts against every limit while pending *and* while active, so a flood of handshakes
//! from one IP is capped by `max_per_ip` as well as by `max_pending_handshakes`. Dropping the
//! guard releases its slots. The counting is pure bookkeeping under one mutex; no I/O.

use sensor_core::connection::RejectReason;
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// The configured caps. All counts are connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_inbound_peers: usize,
    pub max_peers_per_ip: usize,
    pub max_peers_per_subnet: usize,
    pub max_pending_handshakes: usize,
}

/// The subnet an address is counted in: the /24 of an IPv4 address, the /48 of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subnet {
    V4([u8; 3]),
    V6([u16; 3]),
}

impl Subnet {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Self::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Self::V6([s[0], s[1], s[2]])
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// Admitted connections (pending + active).
    total: usize,
    pending: usize,
    by_ip: HashMap<IpAddr, usize>,
    by_subnet: HashMap<Subnet, usize>,
}

impl Counts {
    fn admit(&mut self, limits: &Limits, ip: IpAddr) -> Result<(), RejectReason> {
        if self.pending >= limits.max_pending_handshakes {
            return Err(RejectReason::PendingHandshakeLimit);
        }
        if self.total >= limits.max_inbound_peers {
            return Err(RejectReason::InboundLimit);
        }
        if self.by_ip.get(&ip).copied().unwrap_or(0) >= limits.max_peers_per_ip {
            return Err(RejectReason::IpLimit);
        }
        let subnet = Subnet::of(ip);
        if self.by_subnet.get(&subnet).copied().unwrap_or(0) >= limits.max_peers_per_subnet {
            return Err(RejectReason::SubnetLimit);
        }
        self.total += 1;
        self.pending += 1;
        *self.by_ip.entry(ip).or_default() += 1;
        *self.by_subnet.entry(subnet).or_default() += 1;
        Ok(())
    }

    fn release(&mut self, ip: IpAddr, was_pending: bool) {
        self.total = self.total.saturating_sub(1);
        if was_pending {
            self.pending = self.pending.saturating_sub(1);
        }
        decrement(&mut self.by_ip, ip);
        decrement(&mut self.by_subnet, Subnet::of(ip));
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// Shared admission state for one listener. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// A counted slot. Pending until [`AdmissionGuard::activate`]; released on drop.
#[derive(Debug)]
pub struct AdmissionGuard {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
    pending: bool,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self { limits, counts: Arc::default() }
    }

    /// Admits a connection from `ip` as a pending handshake, or says which limit refuses it.
    /// Checked in order: pending handshakes, total inbound, per IP, per subnet.
    pub fn try_admit(&self, ip: IpAddr) -> Result<AdmissionGuard, RejectReason> {
        let ip = ip.to_canonical();
        lock(&self.counts).admit(&self.limits, ip)?;
        Ok(AdmissionGuard { counts: self.counts.clone(), ip, pending: true })
    }

    /// Connections admitted and not yet released (pending + active).
    pub fn admitted(&self) -> usize {
        lock(&self.counts).total
    }

    /// Connections still in the handshake.
    pub fn pending(&self) -> usize {
        lock(&self.counts).pending
    }
}

impl AdmissionGuard {
    /// Marks the handshake as done: the slot stops counting as pending but keeps counting
    /// against the inbound, per-IP and per-subnet limits until dropped.
    pub fn activate(&mut self) {
        if self.pending {
            let mut counts = lock(&self.counts);
            counts.pending = counts.pending.saturating_sub(1);
            self.pending = false;
        }
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        lock(&self.counts).release(self.ip, self.pending);
    }
}

/// Poison-tolerant lock: the counts stay consistent because every mutation is a few integer
/// updates that cannot panic half-way.
fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, ip: usize, subnet: usize, pending: usize) -> Admission {
        Admission::new(Limits {
            max_inbound_peers: total,
            max_peers_per_ip: ip,
            max_peers_per_subnet: subnet,
            max_pending_handshakes: pending,
        })
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_counts_pending_and_active() {
        let a = limits(100, 2, 100, 100);
        let mut g1 = a.try_admit(ip("1.2.3.4")).unwrap();
        g1.activate();
        let _g2 = a.try_admit(ip("1.2.3.4")).unwrap();
        assert_eq!(a.try_admit(ip("1.2.3.4")).unwrap_err(), RejectReason::IpLimit);
        // IPv4-mapped IPv6 is the same source.
        assert_eq!(a.try_admit(ip("::ffff:1.2.3.4")).unwrap_err(), RejectReason::IpLimit);
        drop(g1);
        assert!(a.try_admit(ip("1.2.3.4")).is_ok());
    }

    #[test]
    fn subnet_limits_are_slash24_and_slash48() {
        let a = limits(100, 10, 2, 100);
        let _a1 = a.try_admit(ip("1.2.3.4")).unwrap();
        let _a2 = a.try_admit(ip("1.2.3.5")).unwrap();
        assert_eq!(a.try_admit(ip("1.2.3.200")).unwrap_err(), RejectReason::SubnetLimit);
        assert!(a.try_admit(ip("1.2.4.1")).is_ok());
        let _b1 = a.try_admit(ip("2001:db8:1::1")).unwrap();
        let _b2 = a.try_admit(ip("2001:db8:1:ffff::2")).unwrap();
        assert_eq!(a.try_admit(ip("2001:db8:1:1::3")).unwrap_err(), RejectReason::SubnetLimit);
        assert!(a.try_admit(ip("2001:db8:2::1")).is_ok());
    }

    #[test]
    fn pending_limit_frees_on_activate_total_limit_does_not() {
        let a = limits(3, 10, 10, 2);
        let mut g1 = a.try_admit(ip("1.1.1.1")).unwrap();
        let _g2 = a.try_admit(ip("2.2.2.2")).unwrap();
        assert_eq!(a.try_admit(ip("3.3.3.3")).unwrap_err(), RejectReason::PendingHandshakeLimit);
        g1.activate();
        assert_eq!(a.pending(), 1);
        let _g3 = a.try_admit(ip("3.3.3.3")).unwrap();
        assert_eq!(a.admitted(), 3);
        g1.activate(); // idempotent
        assert_eq!(a.try_admit(ip("4.4.4.4")).unwrap_err(), RejectReason::PendingHandshakeLimit);
    }

    #[test]
    fn inbound_limit_and_release_on_drop() {
        let a = limits(2, 10, 10, 10);
        let mut g1 = a.try_admit(ip("1.1.1.1")).unwrap();
        let mut g2 = a.try_admit(ip("2.2.2.2")).unwrap();
        g1.activate();
        g2.activate();
        assert_eq!(a.try_admit(ip("3.3.3.3")).unwrap_err(), RejectReason::InboundLimit);
        drop(g1);
        drop(g2);
        assert_eq!(a.admitted(), 0);
        assert_eq!(a.pending(), 0);
        assert!(a.try_admit(ip("3.3.3.3")).is_ok());
    }
}
