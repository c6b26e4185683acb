//! `sensor crawl`: map a Kaspa network through address gossip (issue 5; docs/kaspa-protocol.md, docs/crawl.md).
//!
//! From seeds (`--seed`, `--seed-dns`, `--from-store`) the crawler visits every address it
//! learns: TCP + gRPC, the real Kaspa handshake with a fresh random peer id and no advertised
//! address, the peer's `Version` recorded, `RequestAddresses` until no new addresses, RTT, a polite
//! close ([`visit`]). Failures are normalised into [`ErrorClass`]es. Everything is stored in the
//! sensor's SQLite database ([`crate::store::crawl`]), exported with `--output` ([`output`]) and
//! summarised at the end ([`summary`]). `--propagation ADDRESS` prints how an address spread
//! ([`propagation`]).
//!
//! The parts: [`filter`] (which addresses may be dialled), [`visit`] (one visit), [`engine`]
//! (frontier, politeness, bounds), [`error_class`], [`summary`], [`output`], [`propagation`],
//! [`schedule`] (Nebula's revisit rule, for the continuous mode) and [`progress`]. The synthetic
//! kaspa-p2p-lib network the tests and benchmarks crawl is test support, in `sensor_testkit::lab`.

pub mod continuous;
pub mod engine;
pub mod output;
pub mod progress;
pub mod propagation;
pub mod summary;
pub mod visit;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    error::{Result, SensorError},
    metrics::CrawlMetrics,
    store::{
        crawl::{CrawlStart, CrawlTotals, CrawlWriter},
        query::Reader,
    },
};
use sensor_core::Label;
use sensor_core::crawl::{ErrorClass, FilterReason, MAX_ADDRESSES_PER_REPLY, schedule};
use sensor_core::{config::Config, network::Network, timestamp::format_timestamp};

/// Addresses one peer may add per visit: kaspad's own per-message limit
/// ([`visit::MAX_ADDRESSES_PER_REPLY`]).
pub const MAX_ADDRESSES_PER_VISIT: usize = MAX_ADDRESSES_PER_REPLY;
/// Addresses `--from-store` reads at most.
const FROM_STORE_LIMIT: usize = 10_000;

/// Everything `sensor crawl` was asked to do: `[crawl]` (flags already applied) and the flags
/// that are not settings ([`CrawlCommand::from_config`]).
#[derive(Debug, Clone)]
pub struct CrawlCommand {
    pub network: Network,
    pub seeds: Vec<SocketAddr>,
    /// DNS names, resolved to the network's default port (or `NAME:PORT`).
    pub seed_dns: Vec<String>,
    /// A sensor database whose stored peers (and earlier crawls' nodes) seed the crawl:
    /// `crawl.seed_from_store`, or this crawler's own database with `--from-store`.
    pub seed_store: Option<PathBuf>,
    /// The SQLite database the crawl is written to (`<data dir>/sensor.sqlite` unless configured).
    pub database: PathBuf,
    pub concurrency: usize,
    pub timeout: Duration,
    pub allow_private_targets: bool,
    /// `.json` or `.csv`.
    pub output: Option<PathBuf>,
    pub max_requests: u32,
    pub max_nodes: usize,
    pub max_duration: Duration,
    /// Print this address's propagation timeline from the store and exit.
    pub propagation: Option<String>,
    /// Print the summary (or timeline) as JSON on stdout; the table goes to stderr.
    pub json: bool,
    /// `Some`: the continuous mode, a round every interval ([`continuous`]).
    pub interval: Option<Duration>,
    /// Bounds of each visited node's next visit (Nebula's rule, [`schedule`]).
    pub revisit: schedule::Revisit,
}

/// The flags of `sensor crawl` that are not settings (the rest override `[crawl]` keys through
/// [`sensor_core::config::CliOverrides`]).
#[derive(Debug, Clone, Default)]
pub struct CrawlFlags {
    /// `--from-store`: seed from this crawler's own database.
    pub from_store: bool,
    pub output: Option<PathBuf>,
    pub propagation: Option<String>,
    pub json: bool,
}

impl CrawlCommand {
    /// The command for `config` (its `[crawl]` section, network and database) and `flags`.
    pub fn from_config(config: &Config, flags: CrawlFlags) -> CrawlCommand {
        let c = &config.crawl;
        let database = config.database_path();
        let seed_store = c.seed_from_store.clone().or_else(|| flags.from_store.then(|| database.clone()));
        CrawlCommand {
            network: config.network,
            seeds: c.seeds.clone(),
            seed_dns: c.seed_dns.clone(),
            seed_store,
            database,
            concurrency: c.concurrency,
            timeout: Duration::from_millis(c.timeout_ms),
            allow_private_targets: c.allow_private_targets,
            output: flags.output,
            max_requests: c.max_requests,
            max_nodes: c.max_nodes,
            max_duration: Duration::from_secs(c.max_duration_secs),
            propagation: flags.propagation,
            json: flags.json,
            interval: (c.interval_secs > 0).then(|| Duration::from_secs(c.interval_secs)),
            revisit: schedule::Revisit {
                min: Duration::from_secs(c.min_revisit_secs),
                max: Duration::from_secs(c.max_revisit_secs),
            },
        }
    }
}

fn usage(key: &str, reason: impl Into<String>) -> SensorError {
    SensorError::Config { key: key.into(), reason: reason.into() }
}

/// Runs `sensor crawl`: `--propagation`, one crawl (summary on stdout, `--output`), or the
/// continuous mode when `crawl.interval_secs` > 0 ([`continuous::run`], which also serves
/// `/metrics` and pushes reports as `config` says).
///
/// Errors: [`SensorError::Config`] for usage errors (no seeds, `--output` not .json/.csv, an
/// output file in continuous mode), [`SensorError::Storage`]/[`SensorError::Io`] when the store
/// or the output file cannot be written, [`SensorError::Bind`] when the metrics port is taken.
/// Unreachable peers are data, not errors.
pub async fn run(config: &Config, cmd: CrawlCommand) -> Result<()> {
    if let Some(address) = &cmd.propagation {
        return print_propagation(&cmd, address).await;
    }
    if let Some(path) = &cmd.output {
        output::Format::for_path(path)?;
    }
    if cmd.concurrency == 0 {
        return Err(usage("--concurrency", "must be at least 1"));
    }
    if cmd.interval.is_some() {
        if cmd.output.is_some() {
            return Err(usage(
                "--output",
                "writes one crawl; the continuous mode (crawl.interval_secs > 0) keeps its crawls in the store",
            ));
        }
        return continuous::run(config, cmd).await;
    }
    let seeds = collect_seeds(&cmd).await?;
    if seeds.is_empty() {
        return Err(usage("--seed", "no seeds: give --seed IP:PORT, --seed-dns NAME or --from-store"));
    }
    let mut registry = Registry::default();
    let metrics = register_metrics(&mut registry);
    let mut progress = progress::Progress::for_stderr();
    let round = round(&cmd, seeds, Vec::new(), &metrics, &mut progress, crate::signal::wait_for_signal()).await?;
    progress.finish();
    if let Some(path) = &cmd.output {
        let info = output::CrawlInfo {
            crawl_id: round.start.crawl_id.to_string(),
            started_at: format_timestamp(round.start.started_at),
            finished_at: format_timestamp(round.finished_at),
            network: round.start.network.clone(),
            seeds: round.start.seeds.iter().map(ToString::to_string).collect(),
            concurrency: round.start.concurrency,
            timeout_ms: round.start.timeout_ms,
            visited: round.summary.visited,
            reachable: round.summary.reachable,
            known: round.result.known,
            duration_ms: round.summary.duration_ms,
            stopped_early: round.result.stopped_early,
        };
        output::write_file(path, &info, &round.summary, &round.result.visits, &round.result.edges())?;
        tracing::info!(path = %path.display(), "crawl written");
    }
    if cmd.json {
        eprint!("{}", round.summary);
        println!("{}", serde_json::to_string(&round.summary).unwrap_or_default());
    } else {
        print!("{}", round.summary);
    }
    round.stored
}

/// `sensor_crawl_*` in `registry`, every label pre-created.
pub fn register_metrics(registry: &mut Registry) -> CrawlMetrics {
    let results: Vec<&'static str> =
        std::iter::once("reachable").chain(ErrorClass::ALL.iter().map(|c| c.as_str())).collect();
    let reasons: Vec<&'static str> = FilterReason::ALL.iter().map(|r| r.as_str()).collect();
    CrawlMetrics::register(registry, &results, &reasons)
}

/// One finished crawl round.
pub struct Round {
    pub start: CrawlStart,
    pub finished_at: OffsetDateTime,
    pub result: engine::CrawlResult,
    pub summary: summary::Summary,
    /// Whether every record reached the store (the crawl itself finished either way).
    pub stored: Result<()>,
}

/// One crawl: the `crawls` row, the engine from `seeds` (the `not_due` addresses are known but
/// not dialled), every visit and learned address stored, the totals written.
///
/// Errors: [`SensorError::Storage`]/[`SensorError::Io`] when the store cannot be opened; later
/// store failures are in [`Round::stored`].
pub async fn round(
    cmd: &CrawlCommand,
    seeds: Vec<SocketAddr>,
    not_due: Vec<SocketAddr>,
    metrics: &CrawlMetrics,
    progress: &mut progress::Progress,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Round> {
    let start = CrawlStart {
        crawl_id: Uuid::now_v7(),
        started_at: OffsetDateTime::now_utc(),
        network: cmd.network.wire_name().to_owned(),
        seeds: seeds.clone(),
        concurrency: cmd.concurrency,
        timeout_ms: u64::try_from(cmd.timeout.as_millis()).unwrap_or(u64::MAX),
        revisit: cmd.revisit,
    };
    let db = cmd.database.clone();
    let start_row = start.clone();
    let writer = blocking(move || CrawlWriter::open(&db, &start_row)).await?;
    tracing::info!(crawl_id = %start.crawl_id, seeds = seeds.len(), not_due = not_due.len(), network = %cmd.network, "crawl started");
    let options = engine::EngineOptions {
        visit: visit::VisitOptions {
            network: cmd.network,
            peer_id: Uuid::new_v4(),
            timeout: cmd.timeout,
            max_requests: cmd.max_requests.max(1),
            max_addresses: MAX_ADDRESSES_PER_VISIT,
        },
        seeds,
        not_due,
        concurrency: cmd.concurrency,
        allow_private: cmd.allow_private_targets,
        max_nodes: cmd.max_nodes,
        max_duration: cmd.max_duration,
    };
    let result = engine::crawl(&options, Some(&writer), metrics, progress, stop).await;
    let finished_at = OffsetDateTime::now_utc();
    let summary = summary::Summary::from_visits(&result.visits, &result.filtered, result.duration);
    let totals = CrawlTotals {
        finished_at,
        visited: result.visits.len() as u64,
        reachable: result.reachable(),
        known: result.known,
        filtered: result.filtered.values().sum(),
        duration_ms: summary.duration_ms,
        stopped_early: result.stopped_early,
    };
    let stored = blocking(move || writer.finish(&totals)).await;
    tracing::info!(
        crawl_id = %start.crawl_id, visited = summary.visited, reachable = summary.reachable,
        known = result.known, duration_ms = summary.duration_ms, "crawl finished"
    );
    Ok(Round { start, finished_at, result, summary, stored })
}

/// Runs blocking store work off the async worker threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        SensorError::StorageUnavailable(if e.is_panic() { "storage task panicked" } else { "storage task cancelled" })
    })?
}

/// `--seed`s, then `--seed-dns` names resolved, then the seed store's addresses; duplicates
/// kept once, in that order.
pub(crate) async fn collect_seeds(cmd: &CrawlCommand) -> Result<Vec<SocketAddr>> {
    let mut seeds = cmd.seeds.clone();
    for name in &cmd.seed_dns {
        let query =
            if name.contains(':') { name.clone() } else { format!("{name}:{}", cmd.network.default_p2p_port()) };
        match tokio::net::lookup_host(query.as_str()).await {
            Ok(addrs) => {
                let found: Vec<SocketAddr> = addrs.collect();
                tracing::info!(name, addresses = found.len(), "DNS seed resolved");
                seeds.extend(found);
            }
            Err(e) => tracing::warn!(name, error = %e, "DNS seed did not resolve"),
        }
    }
    if let Some(db) = cmd.seed_store.clone() {
        let rows = blocking(move || {
            drop(crate::store::crawl::open_migrated(&db)?);
            Reader::open(&db)?.crawl_seed_addresses(FROM_STORE_LIMIT)
        })
        .await?;
        let parsed: Vec<SocketAddr> = rows.iter().filter_map(|r| r.parse().ok()).collect();
        tracing::info!(addresses = parsed.len(), "seeds from the store");
        seeds.extend(parsed);
    }
    let mut seen = std::collections::HashSet::new();
    seeds.retain(|s| seen.insert(*s));
    Ok(seeds)
}

async fn print_propagation(cmd: &CrawlCommand, address: &str) -> Result<()> {
    let key = address.parse::<SocketAddr>().map(|a| a.to_string()).unwrap_or_else(|_| address.to_owned());
    let db = cmd.database.clone();
    let lookup = key.clone();
    let rows = blocking(move || Reader::open(&db)?.address_sightings(&lookup)).await?;
    let timeline = propagation::timeline(&key, &propagation::parse_rows(&rows));
    if cmd.json {
        let doc = serde_json::json!({
            "address": timeline.address,
            "sightings": timeline.sightings.iter()
                .map(|(g, d)| serde_json::json!({"gossiper": g, "offset_ms": d.as_millis() as u64}))
                .collect::<Vec<_>>(),
            "time_to_k_ms": timeline.time_to_k.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        print!("{timeline}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> CrawlCommand {
        CrawlCommand {
            network: Network::Devnet,
            seeds: vec!["127.0.0.2:1".parse().unwrap()],
            seed_dns: vec![],
            seed_store: None,
            database: PathBuf::from("/nonexistent/sensor.sqlite"),
            concurrency: 1,
            timeout: Duration::from_millis(100),
            allow_private_targets: true,
            output: None,
            max_requests: 1,
            max_nodes: 10,
            max_duration: Duration::from_secs(1),
            propagation: None,
            json: false,
            interval: None,
            revisit: schedule::Revisit::default(),
        }
    }

    #[test]
    fn the_command_comes_from_crawl_settings_and_the_other_flags() {
        let mut config = Config::default();
        config.crawl.seeds = vec!["198.51.100.41:16611".parse().unwrap()];
        config.crawl.interval_secs = 600;
        config.crawl.min_revisit_secs = 60;
        let flags = CrawlFlags { from_store: true, json: true, ..CrawlFlags::default() };
        let cmd = CrawlCommand::from_config(&config, flags);
        assert_eq!(cmd.seeds, config.crawl.seeds);
        assert_eq!(cmd.interval, Some(Duration::from_secs(600)));
        assert_eq!(cmd.revisit.min, Duration::from_secs(60));
        assert_eq!(cmd.seed_store.as_deref(), Some(config.database_path().as_path()), "--from-store: own database");
        assert!(cmd.json);
        config.crawl.seed_from_store = Some("/data/listener.sqlite".into());
        config.crawl.interval_secs = 0;
        let cmd = CrawlCommand::from_config(&config, CrawlFlags::default());
        assert_eq!(cmd.seed_store.as_deref(), Some(std::path::Path::new("/data/listener.sqlite")));
        assert_eq!(cmd.interval, None, "0 = one crawl");
    }

    #[tokio::test]
    async fn dns_seeds_get_the_default_port_and_duplicates_go() {
        let cmd = CrawlCommand {
            seed_dns: vec!["127.0.0.3".into(), "127.0.0.2:1".into(), "name.invalid".into()],
            ..command()
        };
        let seeds = collect_seeds(&cmd).await.unwrap();
        assert_eq!(seeds, vec!["127.0.0.2:1".parse().unwrap(), "127.0.0.3:16611".parse().unwrap()]);
    }

    #[tokio::test]
    async fn usage_errors_come_before_any_io() {
        let config = Config::default();
        let bad_output = CrawlCommand { output: Some("x.txt".into()), ..command() };
        assert_eq!(run(&config, bad_output).await.unwrap_err().kind(), "config");
        let no_seeds = CrawlCommand { seeds: vec![], ..command() };
        assert_eq!(run(&config, no_seeds).await.unwrap_err().kind(), "config");
        let zero = CrawlCommand { concurrency: 0, ..command() };
        assert_eq!(run(&config, zero).await.unwrap_err().kind(), "config");
        let continuous_file =
            CrawlCommand { output: Some("x.json".into()), interval: Some(Duration::from_secs(1)), ..command() };
        assert_eq!(run(&config, continuous_file).await.unwrap_err().kind(), "config");
    }
}
