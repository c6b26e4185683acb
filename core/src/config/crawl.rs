//! `[crawl]`: `sensor crawl`, the address-gossip crawler (issue 5). Flags of `sensor crawl`
//! override these keys; the operator renders them for a fleet's crawl sidecar
//! (`SensorFleet.spec.crawler`). Split from `config.rs`; the loading rules live there.

use super::*;

/// `[crawl]`: where a crawl starts, how hard it pushes, and (continuous mode) how often nodes are
/// revisited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrawlConfig {
    /// Seed addresses `IP:PORT` (`SENSOR_CRAWL_SEEDS`, comma-separated). Default none.
    pub seeds: Vec<SocketAddr>,
    /// DNS seed names, `NAME` (the network's default port) or `NAME:PORT`
    /// (`SENSOR_CRAWL_SEED_DNS`, comma-separated). Default none.
    pub seed_dns: Vec<String>,
    /// A sensor SQLite database whose stored peers (source IP : advertised port) seed the crawl
    /// (`SENSOR_CRAWL_SEED_FROM_STORE`); in a fleet pod, the listener's database. `None`/`""`
    /// (default) = none.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub seed_from_store: Option<PathBuf>,
    /// Seconds between crawl rounds, 0..=86400. 0 (default): one crawl, then exit. > 0: the
    /// continuous mode — a round every interval visits the new addresses and the known nodes that
    /// are due (see `min_revisit_secs`), until SIGTERM.
    pub interval_secs: u64,
    /// Visits in flight at most, 1..=10000. Default 256.
    pub concurrency: usize,
    /// Bound of one visit (connect, handshake, address requests, close), ms, 100..=600000.
    /// Default 5000.
    pub timeout_ms: u64,
    /// `RequestAddresses` per visit at most, 1..=100 (kaspad answers each with up to 1000 random
    /// addresses of its book). Default 8.
    pub max_requests: u32,
    /// Addresses known at most (a bound on memory against gossip floods), 1..=10000000.
    /// Default 100000.
    pub max_nodes: usize,
    /// Bound of one crawl round, seconds, 1..=86400. Default 600.
    pub max_duration_secs: u64,
    /// Continuous mode: a node is revisited after 1.2 × its observed uptime (Nebula's rule),
    /// clamped to [`min_revisit_secs`, `max_revisit_secs`]; a node that was down, after
    /// `min_revisit_secs`. Seconds, 1..=604800, min ≤ max. Defaults 300 and 86400.
    pub min_revisit_secs: u64,
    pub max_revisit_secs: u64,
    /// Lab mode: also visit private, loopback, CGNAT and documentation addresses. Default false.
    pub allow_private_targets: bool,
}

impl Default for CrawlConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            seed_dns: Vec::new(),
            seed_from_store: None,
            interval_secs: 0,
            concurrency: 256,
            timeout_ms: 5000,
            max_requests: 8,
            max_nodes: 100_000,
            max_duration_secs: 600,
            min_revisit_secs: 300,
            max_revisit_secs: 86_400,
            allow_private_targets: false,
        }
    }
}

impl CrawlConfig {
    /// The ranges documented on each field, and seed names that are not empty and not over 253
    /// bytes (a DNS name's limit, RFC 1035).
    pub(super) fn validate(&self, range: RangeCheck) -> Result<()> {
        range("crawl.interval_secs", self.interval_secs, 0, Some(86_400))?;
        range("crawl.concurrency", self.concurrency as u64, 1, Some(10_000))?;
        range("crawl.timeout_ms", self.timeout_ms, 100, Some(600_000))?;
        range("crawl.max_requests", u64::from(self.max_requests), 1, Some(100))?;
        range("crawl.max_nodes", self.max_nodes as u64, 1, Some(10_000_000))?;
        range("crawl.max_duration_secs", self.max_duration_secs, 1, Some(86_400))?;
        range("crawl.min_revisit_secs", self.min_revisit_secs, 1, Some(604_800))?;
        range("crawl.max_revisit_secs", self.max_revisit_secs, 1, Some(604_800))?;
        if self.min_revisit_secs > self.max_revisit_secs {
            let reason = format!(
                "must be at least crawl.min_revisit_secs ({}), got {}",
                self.min_revisit_secs, self.max_revisit_secs
            );
            return Err(config_err("crawl.max_revisit_secs", reason));
        }
        if let Some(name) = self.seed_dns.iter().find(|n| n.trim().is_empty() || n.len() > 253) {
            return Err(config_err("crawl.seed_dns", format!("{name:?} is not a DNS name (1 to 253 bytes)")));
        }
        Ok(())
    }
}
