//! The crawl loop: a frontier of known addresses, visits run concurrently on a `JoinSet`, and
//! what each visit gossiped fed back into the frontier.
//!
//! Politeness and bounds: at most `concurrency` visits at once; never two concurrent visits to
//! one IP ([`Frontier`] hands out an IP's next address only after its running visit finished);
//! each address visited once per crawl; each visit bounded by its timeout; the whole crawl
//! bounded by `max_duration` (running visits are then aborted, queued ones left unvisited);
//! at most `max_nodes` known addresses. Gossiped addresses pass [`filter::check`] first.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use time::OffsetDateTime;
use tokio::{
    task::JoinSet,
    time::{Instant, sleep_until},
};

use sensor_core::crawl::{FilterReason, VisitResult, filter};

use super::{
    progress::{Counts, Progress},
    visit::{VisitOptions, visit},
};
use crate::{metrics::CrawlMetrics, metrics::CrawlResultLabels, metrics::ReasonLabels, store::crawl::CrawlWriter};
use sensor_core::Label;

/// How the crawl runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub visit: VisitOptions,
    pub seeds: Vec<SocketAddr>,
    /// Known addresses not due for a visit (the continuous mode's schedule): gossip about them
    /// is recorded as edges, but they are not dialled this crawl. A seed listed here is not
    /// dialled either.
    pub not_due: Vec<SocketAddr>,
    /// Visits at once at most (at least 1).
    pub concurrency: usize,
    /// Lab mode: loopback, private and documentation ranges may be dialled.
    pub allow_private: bool,
    /// Known addresses at most; further new addresses are counted as `max_nodes` and dropped.
    pub max_nodes: usize,
    /// Bound of the whole crawl.
    pub max_duration: Duration,
}

/// What a crawl found.
#[derive(Debug, Clone, Default)]
pub struct CrawlResult {
    /// Every finished visit, in completion order. Each visit's `addresses` holds only the
    /// gossiped addresses that passed the filter: the crawl's edges are `(visit.address, a)`.
    pub visits: Vec<VisitResult>,
    /// Addresses not dialled, by reason (seeds and gossip).
    pub filtered: BTreeMap<FilterReason, u64>,
    /// Distinct dialable addresses learned, seeds included.
    pub known: u64,
    /// `max_duration` ended the crawl before every known address was visited.
    pub stopped_early: bool,
    pub duration: Duration,
}

impl CrawlResult {
    /// `(gossiper, gossiped)` pairs of the crawl.
    pub fn edges(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.visits.iter().flat_map(|v| v.addresses.iter().map(|a| (v.address, *a))).collect()
    }

    pub fn reachable(&self) -> u64 {
        self.visits.iter().filter(|v| v.reachable).count() as u64
    }
}

/// Known addresses, queued per IP, handing out at most one address per IP at a time.
#[derive(Debug, Default)]
pub struct Frontier {
    known: HashSet<SocketAddr>,
    queued: HashMap<IpAddr, VecDeque<SocketAddr>>,
    /// IPs with queued addresses and no running visit.
    ready: VecDeque<IpAddr>,
    busy: HashSet<IpAddr>,
    max_nodes: usize,
}

impl Frontier {
    pub fn new(max_nodes: usize) -> Frontier {
        Frontier { max_nodes, ..Frontier::default() }
    }

    /// Adds `a` (already filtered). `Ok(true)`: new and queued; `Ok(false)`: already known;
    /// `Err(MaxNodes)`: the frontier is full.
    pub fn admit(&mut self, a: SocketAddr) -> Result<bool, FilterReason> {
        if self.known.contains(&a) {
            return Ok(false);
        }
        if self.known.len() >= self.max_nodes {
            return Err(FilterReason::MaxNodes);
        }
        self.known.insert(a);
        let q = self.queued.entry(a.ip()).or_default();
        q.push_back(a);
        if q.len() == 1 && !self.busy.contains(&a.ip()) {
            self.ready.push_back(a.ip());
        }
        Ok(true)
    }

    /// Marks `a` known without queueing it (not due this crawl): a later [`admit`](Self::admit)
    /// of `a` says "already known". Counts against `max_nodes` like any known address; `false`
    /// when the frontier is full.
    pub fn know(&mut self, a: SocketAddr) -> bool {
        if self.known.len() >= self.max_nodes && !self.known.contains(&a) {
            return false;
        }
        self.known.insert(a);
        true
    }

    /// The next address to visit; its IP is busy until [`done`](Self::done).
    pub fn next_target(&mut self) -> Option<SocketAddr> {
        let ip = self.ready.pop_front()?;
        let q = self.queued.get_mut(&ip)?;
        let a = q.pop_front()?;
        if q.is_empty() {
            self.queued.remove(&ip);
        }
        self.busy.insert(ip);
        Some(a)
    }

    /// The visit of `a` finished: its IP may be visited again.
    pub fn done(&mut self, a: SocketAddr) {
        if self.busy.remove(&a.ip()) && self.queued.contains_key(&a.ip()) {
            self.ready.push_back(a.ip());
        }
    }

    pub fn known(&self) -> usize {
        self.known.len()
    }
}

/// How often progress is refreshed.
const TICK: Duration = Duration::from_millis(250);

/// Crawls from `options.seeds` until no address is left, `max_duration` passes or `stop`
/// completes (e.g. SIGINT; the last two abort running visits and set `stopped_early`). Visits
/// and learned addresses go to `store` (when given) as they happen.
pub async fn crawl(
    options: &EngineOptions,
    store: Option<&CrawlWriter>,
    metrics: &CrawlMetrics,
    progress: &mut Progress,
    stop: impl std::future::Future<Output = ()>,
) -> CrawlResult {
    let start = Instant::now();
    let deadline = start + options.max_duration;
    let mut result = CrawlResult::default();
    let mut frontier = Frontier::new(options.max_nodes.max(1));
    for &a in &options.not_due {
        if !frontier.know(a) {
            break;
        }
    }
    let filtered = |r: FilterReason, n: u64, result: &mut CrawlResult| {
        if n > 0 {
            *result.filtered.entry(r).or_default() += n;
            metrics.addresses_filtered.get_or_create(&ReasonLabels { reason: r.as_str() }).inc_by(n);
        }
    };
    let mut seeds = Vec::new();
    for &s in &options.seeds {
        match filter::check(s, options.allow_private).and_then(|()| frontier.admit(s)) {
            Ok(true) => seeds.push(s),
            Ok(false) => {}
            Err(r) => {
                tracing::warn!(seed = %s, reason = r.as_str(), "seed not dialled (lab targets need --allow-private-targets)");
                filtered(r, 1, &mut result);
            }
        }
    }
    metrics.nodes_known.set(i64::try_from(frontier.known()).unwrap_or(i64::MAX));
    if let Some(store) = store {
        store.learned(OffsetDateTime::now_utc(), None, seeds);
    }
    let visit_options = Arc::new(options.visit.clone());
    let mut running: JoinSet<VisitResult> = JoinSet::new();
    let mut targets: HashMap<tokio::task::Id, SocketAddr> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    let mut reachable = 0;
    tokio::pin!(stop);
    loop {
        while running.len() < options.concurrency.max(1) {
            let Some(a) = frontier.next_target() else { break };
            let o = visit_options.clone();
            let handle = running.spawn(async move { visit(a, &o).await });
            targets.insert(handle.id(), a);
        }
        if running.is_empty() {
            break;
        }
        let mut v = tokio::select! {
            joined = running.join_next_with_id() => match joined {
                Some(Ok((id, v))) => {
                    targets.remove(&id);
                    v
                }
                Some(Err(e)) => {
                    // A visit never panics by design; if one did, free its IP and go on.
                    if let Some(a) = targets.remove(&e.id()) {
                        tracing::error!(address = %a, error = %e, "crawl visit task failed");
                        frontier.done(a);
                    }
                    continue;
                }
                None => continue,
            },
            _ = ticker.tick() => {
                let counts = Counts {
                    visited: result.visits.len() as u64,
                    known: frontier.known() as u64,
                    reachable,
                    in_flight: running.len() as u64,
                };
                progress.update(counts);
                continue;
            }
            _ = sleep_until(deadline) => {
                result.stopped_early = true;
                tracing::warn!(running = running.len(), "crawl reached --max-duration-secs; stopping");
                running.shutdown().await;
                break;
            }
            _ = &mut stop => {
                result.stopped_early = true;
                tracing::warn!(running = running.len(), "crawl interrupted; stopping");
                running.shutdown().await;
                break;
            }
        };
        frontier.done(v.address);
        let label = v.error_class.map_or("reachable", |c| c.as_str());
        metrics.visits.get_or_create(&CrawlResultLabels { result: label }).inc();
        metrics.visit_duration_seconds.observe(v.duration_ms as f64 / 1000.0);
        reachable += u64::from(v.reachable);
        filtered(FilterReason::Malformed, v.malformed, &mut result);
        filtered(FilterReason::PeerCap, v.capped, &mut result);
        let mut dialable = Vec::with_capacity(v.addresses.len());
        for &a in &v.addresses {
            match filter::check(a, options.allow_private) {
                Ok(()) => {
                    dialable.push(a);
                    if let Err(r) = frontier.admit(a) {
                        filtered(r, 1, &mut result);
                    }
                }
                Err(r) => filtered(r, 1, &mut result),
            }
        }
        v.addresses = dialable;
        metrics.nodes_known.set(i64::try_from(frontier.known()).unwrap_or(i64::MAX));
        if let Some(store) = store {
            if !v.addresses.is_empty() {
                store.learned(OffsetDateTime::now_utc(), Some(v.address), v.addresses.clone());
            }
            store.visit(v.clone());
        }
        result.visits.push(v);
    }
    progress.update(Counts {
        visited: result.visits.len() as u64,
        known: frontier.known() as u64,
        reachable,
        in_flight: 0,
    });
    result.known = frontier.known() as u64;
    result.duration = start.elapsed();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_visit_per_ip_at_a_time_and_one_per_address() {
        let mut f = Frontier::new(10);
        assert_eq!(f.admit(a("1.1.1.1:1")), Ok(true));
        assert_eq!(f.admit(a("1.1.1.1:2")), Ok(true));
        assert_eq!(f.admit(a("2.2.2.2:1")), Ok(true));
        assert_eq!(f.admit(a("1.1.1.1:1")), Ok(false));
        assert_eq!(f.next_target(), Some(a("1.1.1.1:1")));
        assert_eq!(f.next_target(), Some(a("2.2.2.2:1")));
        assert_eq!(f.next_target(), None, "1.1.1.1 is busy");
        f.done(a("2.2.2.2:1"));
        assert_eq!(f.next_target(), None);
        f.done(a("1.1.1.1:1"));
        assert_eq!(f.next_target(), Some(a("1.1.1.1:2")));
        assert_eq!(f.admit(a("1.1.1.1:3")), Ok(true));
        assert_eq!(f.next_target(), None, "still busy with :2");
        f.done(a("1.1.1.1:2"));
        assert_eq!(f.next_target(), Some(a("1.1.1.1:3")));
        f.done(a("1.1.1.1:3"));
        assert_eq!(f.next_target(), None);
        assert_eq!(f.known(), 4);
    }

    #[test]
    fn addresses_not_due_are_known_but_never_handed_out() {
        let mut f = Frontier::new(3);
        assert!(f.know(a("1.1.1.1:1")));
        assert_eq!(f.admit(a("1.1.1.1:1")), Ok(false), "gossip about it does not queue it");
        assert_eq!(f.next_target(), None);
        assert_eq!(f.admit(a("2.2.2.2:1")), Ok(true));
        assert!(f.know(a("3.3.3.3:1")));
        assert!(!f.know(a("4.4.4.4:1")), "max_nodes holds for known-only addresses too");
        assert_eq!(f.admit(a("5.5.5.5:1")), Err(FilterReason::MaxNodes));
        assert_eq!(f.next_target(), Some(a("2.2.2.2:1")));
        assert_eq!(f.known(), 3);
    }

    #[test]
    fn max_nodes_caps_the_frontier() {
        let mut f = Frontier::new(2);
        assert_eq!(f.admit(a("1.1.1.1:1")), Ok(true));
        assert_eq!(f.admit(a("1.1.1.2:1")), Ok(true));
        assert_eq!(f.admit(a("1.1.1.3:1")), Err(FilterReason::MaxNodes));
        assert_eq!(f.admit(a("1.1.1.1:1")), Ok(false));
    }
}
