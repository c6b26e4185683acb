//! The continuous mode of `sensor crawl` (`crawl.interval_secs` > 0; a SensorFleet's crawl
//! sidecar, issue 5 item 4): a crawl round every interval until SIGTERM/SIGINT.
//!
//! Each round starts from the configured seeds (static, DNS, the seed store) plus every known
//! node that is due — never visited, or past its `crawl_nodes.next_visit`, which the crawl writer
//! sets after each visit to now + 1.2 × the node's observed uptime, clamped to
//! `[crawl.min_revisit_secs, crawl.max_revisit_secs]` (Nebula's rule, [`super::schedule`]). Known
//! nodes that are not due are passed to the engine as known-but-not-dialled, so gossip about them
//! is still recorded as edges. `/metrics` serves `sensor_crawl_*` (and the report counters) on
//! `metrics.listen`; with `report.endpoint` set, a report carrying `Report.crawl` is pushed every
//! `report.interval_ms` as `<sender>-crawl`, and once more at shutdown.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use time::OffsetDateTime;
use tokio::{sync::watch, time::Instant};

use super::{CrawlCommand, blocking, collect_seeds, progress::Progress, register_metrics, round};
use crate::{
    error::Result,
    http,
    metrics::Metrics,
    report::{Reporter, ReporterSettings, Source},
    store::{crawl::open_migrated, crawl_status::CrawlSchedule, query::Reader},
};
use sensor_core::config::Config;

/// Runs rounds every `cmd.interval` until SIGTERM/SIGINT (a round in progress is stopped and its
/// visits so far are stored). A round without anything to visit is skipped (logged). Seeds
/// that cannot be read this round (an unreadable seed store) are logged and the round goes on
/// with the rest.
///
/// Errors: [`crate::SensorError::Bind`] when `metrics.listen` cannot be bound, [`crate::SensorError::Config`]
/// for an unusable `report.endpoint`, [`crate::SensorError::Storage`] when the crawl database cannot be
/// opened.
pub async fn run(config: &Config, cmd: CrawlCommand) -> Result<()> {
    let interval = cmd.interval.unwrap_or(Duration::from_secs(600));
    let report = ReporterSettings::from_config(config)?;
    let (metrics, mut registry) = Metrics::new();
    let crawl_metrics = register_metrics(&mut registry);
    let db = cmd.database.clone();
    blocking(move || open_migrated(&db).map(drop)).await?;

    let http_listener = http::bind(config.metrics.listen).await?;
    let ready = Arc::new(AtomicBool::new(true));
    let (http_shutdown, http_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(http_listener, Arc::new(registry), ready, http_rx));
    let reporter = report.map(|settings| {
        let mut origin = settings.origin;
        origin.sender = format!("{}-crawl", origin.sender);
        let source = Source::Crawl { database: cmd.database.clone() };
        Reporter::start(ReporterSettings { source, origin, ..settings }, metrics.clone())
    });
    let (stop_tx, mut stop) = watch::channel(false);
    let signal = tokio::spawn(async move {
        crate::signal::wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    tracing::info!(
        interval_secs = interval.as_secs(), min_revisit_secs = cmd.revisit.min.as_secs(),
        max_revisit_secs = cmd.revisit.max.as_secs(), metrics = %config.metrics.listen, "continuous crawl started"
    );

    let mut progress = Progress::for_stderr();
    let mut next_round = Instant::now();
    let mut result = Ok(());
    while !*stop.borrow() {
        let (seeds, not_due) = round_targets(&cmd).await;
        if seeds.is_empty() {
            tracing::info!(not_due = not_due.len(), "no seeds and no node due: round skipped");
        } else {
            let mut stopped = stop.clone();
            let stop_round = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            match round(&cmd, seeds, not_due, &crawl_metrics, &mut progress, stop_round).await {
                Ok(r) => {
                    if let Err(e) = r.stored {
                        tracing::error!(error = %e, "crawl round not fully stored");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "crawl round could not start; stopping");
                    result = Err(e);
                    break;
                }
            }
        }
        next_round += interval;
        let now = Instant::now();
        if next_round < now {
            next_round = now;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_round) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    progress.finish();
    signal.abort();
    if let Some(reporter) = reporter {
        reporter.shutdown().await;
    }
    let _ = http_shutdown.send(true);
    http::stop(http_task).await;
    tracing::info!("continuous crawl stopped");
    result
}

/// This round's seeds (configured seeds and due nodes, without the nodes not due) and the known
/// nodes that are not due.
async fn round_targets(cmd: &CrawlCommand) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let configured = match collect_seeds(cmd).await {
        Ok(seeds) => seeds,
        Err(e) => {
            tracing::warn!(error = %e, "seeds could not all be read this round; using the static ones");
            cmd.seeds.clone()
        }
    };
    let db = cmd.database.clone();
    let limit = cmd.max_nodes;
    let schedule = blocking(move || Reader::open(&db)?.crawl_schedule(OffsetDateTime::now_utc(), limit))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the crawl schedule could not be read; visiting the seeds only");
            CrawlSchedule::default()
        });
    plan_round(configured, &schedule)
}

/// Pure: seeds = configured ∪ due, in that order, once each, without the not-due nodes;
/// unparsable stored addresses are skipped.
pub fn plan_round(configured: Vec<SocketAddr>, schedule: &CrawlSchedule) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let not_due: Vec<SocketAddr> = schedule.not_due.iter().filter_map(|a| a.parse().ok()).collect();
    let skip: HashSet<SocketAddr> = not_due.iter().copied().collect();
    let mut seen = HashSet::new();
    let seeds = configured
        .into_iter()
        .chain(schedule.due.iter().filter_map(|a| a.parse().ok()))
        .filter(|a| !skip.contains(a) && seen.insert(*a))
        .collect();
    (seeds, not_due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_visits_seeds_and_due_nodes_but_not_nodes_that_are_not_due() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let schedule = CrawlSchedule {
            due: vec!["2.2.2.2:16111".into(), "1.1.1.1:16111".into(), "not an address".into()],
            not_due: vec!["3.3.3.3:16111".into(), "bad".into()],
        };
        let (seeds, not_due) = plan_round(vec![a("1.1.1.1:16111"), a("3.3.3.3:16111")], &schedule);
        assert_eq!(seeds, [a("1.1.1.1:16111"), a("2.2.2.2:16111")], "a seed that is not due waits too");
        assert_eq!(not_due, [a("3.3.3.3:16111")]);
        let (seeds, not_due) = plan_round(Vec::new(), &CrawlSchedule::default());
        assert!(seeds.is_empty() && not_due.is_empty());
    }
}
