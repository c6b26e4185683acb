//! The I/O side of reporting: a tokio task that, every interval, reads a [`Snapshot`] of the
//! event database off the async runtime (or, for `sensor relay`, the relay's in-memory state;
//! see [`Source`]), builds the report and pushes it to the collector.
//!
//! Reports are cumulative, so a failed push loses nothing: the next interval sends everything
//! again. Failures are counted in `sensor_report_pushes_total{result}` and logged at `warn` on the
//! first failure of a streak and then every [`WARN_EVERY`]th (the rest at `debug`).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sensor_report::v1::{PushAck, RelaySummary, collector_client::CollectorClient};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use tonic::{Code, transport::Channel, transport::Endpoint};

use super::{
    crawl::build_crawl_report,
    snapshot::Snapshot,
    summary::{Origin, PunchLive, agent, build_punch_report, build_relay_report, build_report},
};
use crate::{
    error::{Result, SensorError},
    metrics::{Metrics, ResultLabels},
    store::{PunchSummary, Reader},
};
use sensor_core::config::Config;

/// During a streak of failed pushes, one in this many is logged at `warn`.
pub const WARN_EVERY: u64 = 10;
/// Lower bound (ms) applied to a collector's `PushAck.next_report_after_ms`.
pub const NEXT_REPORT_MIN_MS: u64 = 1000;
/// Upper bound (ms) applied to a collector's `PushAck.next_report_after_ms`.
pub const NEXT_REPORT_MAX_MS: u64 = 300_000;

/// Everything the reporter needs; see [`ReporterSettings::from_config`].
#[derive(Debug, Clone)]
pub struct ReporterSettings {
    /// The collector (h2c), with the connect timeout set.
    pub endpoint: Endpoint,
    /// Time between reports until the collector asks for another.
    pub interval: Duration,
    /// Deadline of one push; also bounds the whole final report at shutdown.
    pub timeout: Duration,
    /// What each report summarises.
    pub source: Source,
    pub origin: Origin,
}

/// Where the content of a report comes from.
#[derive(Clone)]
pub enum Source {
    /// `sensor listen`: the SQLite file the store writes (a [`Snapshot`] per report).
    Database(PathBuf),
    /// `sensor relay`: the relay's in-memory state, read once per report (must not block).
    Relay(Arc<dyn Fn() -> RelaySummary + Send + Sync>),
    /// `sensor punch`: the attempts through `relay_node` stored in this SQLite file, and the
    /// client's live state, read once per report (must not block).
    Punch { database: PathBuf, relay_node: String, live: Arc<dyn Fn() -> PunchLive + Send + Sync> },
    /// `sensor crawl` (continuous mode): the crawl tables of this SQLite file.
    Crawl { database: PathBuf },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Database(path) => f.debug_tuple("Database").field(path).finish(),
            Source::Relay(_) => f.write_str("Relay(..)"),
            Source::Punch { database, relay_node, .. } => {
                f.debug_struct("Punch").field("database", database).field("relay_node", relay_node).finish()
            }
            Source::Crawl { database } => f.debug_struct("Crawl").field("database", database).finish(),
        }
    }
}

impl ReporterSettings {
    /// From `[report]`; `None` when `report.endpoint` is empty (reporting off). The process start
    /// (`started_at_unix_ms` of every report) is taken now. The source is the event database
    /// ([`Config::database_path`]); `sensor relay` replaces it with [`Source::Relay`], `sensor
    /// punch` with [`Source::Punch`].
    ///
    /// Errors: [`SensorError::Config`] with key `report.endpoint` when the URL is not usable.
    pub fn from_config(config: &Config) -> Result<Option<ReporterSettings>> {
        let r = &config.report;
        if !r.enabled() {
            return Ok(None);
        }
        let timeout = Duration::from_millis(r.timeout_ms);
        let invalid = |e: tonic::transport::Error| SensorError::Config {
            key: "report.endpoint".into(),
            reason: format!("invalid collector URL {:?}: {e}", r.endpoint),
        };
        let endpoint = Endpoint::from_shared(r.endpoint.trim().to_owned())
            .map_err(invalid)?
            .user_agent(agent())
            .map_err(invalid)?
            .connect_timeout(timeout);
        Ok(Some(ReporterSettings {
            endpoint,
            interval: Duration::from_millis(r.interval_ms),
            timeout,
            source: Source::Database(config.database_path()),
            origin: Origin::from_config(config, unix_ms(SystemTime::now())),
        }))
    }
}

/// The running report task. Stop it with [`Reporter::shutdown`] after the store is flushed, so
/// the final report carries every event.
pub struct Reporter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    timeout: Duration,
}

impl Reporter {
    /// Spawns the task on the current tokio runtime (panics outside one). The channel connects
    /// lazily, so an unreachable collector is not an error here. The first report is pushed at
    /// once, then one every interval.
    pub fn start(settings: ReporterSettings, metrics: Arc<Metrics>) -> Reporter {
        let timeout = settings.timeout;
        let (stop, stopped) = oneshot::channel();
        let client = CollectorClient::new(settings.endpoint.connect_lazy());
        tracing::info!(
            endpoint = %settings.endpoint.uri(), interval = ?settings.interval, sender = %settings.origin.sender,
            owner = %format!("{}/{}/{}", settings.origin.owner.kind, settings.origin.owner.namespace,
                settings.origin.owner.name),
            "reporting to the collector"
        );
        let pusher = Pusher {
            interval: settings.interval,
            settings,
            client,
            metrics,
            reader: None,
            sequence: 0,
            failures: 0,
            pushed: false,
        };
        Reporter { stop, task: tokio::spawn(pusher.run(stopped)), timeout }
    }

    /// Ends the periodic loop (abandoning a push in flight) and sends one final report, bounded
    /// by the push timeout; returns when it is done or the bound passed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let bound = self.timeout + Duration::from_secs(1);
        let mut task = self.task;
        if tokio::time::timeout(bound, &mut task).await.is_err() {
            tracing::warn!("final report not done within {bound:?}; abandoned");
            task.abort();
        }
    }
}

struct Pusher {
    settings: ReporterSettings,
    client: CollectorClient<Channel>,
    metrics: Arc<Metrics>,
    /// Kept open between reports; dropped after an error so the next read reopens the file.
    reader: Option<Reader>,
    /// Reports built so far (the last one's `sequence`).
    sequence: u64,
    /// Consecutive failed attempts.
    failures: u64,
    /// Whether any push was accepted yet.
    pushed: bool,
    /// Current time between reports (the collector may change it).
    interval: Duration,
}

impl Pusher {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                () = async {
                    tokio::time::sleep(delay).await;
                    self.report(None).await;
                } => delay = self.interval,
            }
        }
        let deadline = Instant::now() + self.settings.timeout;
        self.report(Some(deadline)).await;
        tracing::debug!(sequence = self.sequence, "final report done");
    }

    /// One report: read, build, push, count. With a `deadline`, the read and the push together
    /// end by then; otherwise the push alone gets `timeout`.
    async fn report(&mut self, deadline: Option<Instant>) {
        let generated_at = unix_ms(SystemTime::now());
        if let Source::Relay(read) = &self.settings.source {
            let summary = read();
            self.sequence += 1;
            let report = build_relay_report(&self.settings.origin, self.sequence, generated_at, summary);
            return self.push(report, deadline).await;
        }
        if let Source::Punch { relay_node, live, .. } = &self.settings.source {
            let (relay_node, live) = (relay_node.clone(), live());
            let summary = match deadline {
                None => self.read_punch(&relay_node).await,
                Some(at) => match tokio::time::timeout_at(at, self.read_punch(&relay_node)).await {
                    Ok(read) => read,
                    Err(_) => return self.failed("timeout", "the database read did not finish in time"),
                },
            };
            let summary = match summary {
                Ok(summary) => summary,
                Err(e) => return self.failed("error", &format!("reading the punch attempts: {e}")),
            };
            self.sequence += 1;
            let report =
                build_punch_report(&self.settings.origin, self.sequence, generated_at, &relay_node, &live, &summary);
            return self.push(report, deadline).await;
        }
        if let Source::Crawl { database } = &self.settings.source {
            let database = database.clone();
            let read = self.read_with(database, |reader| reader.crawl_summary(sensor_report::MAX_LIST_ITEMS));
            let summary = match deadline {
                None => read.await,
                Some(at) => match tokio::time::timeout_at(at, read).await {
                    Ok(read) => read,
                    Err(_) => return self.failed("timeout", "the database read did not finish in time"),
                },
            };
            let summary = match summary {
                Ok(summary) => summary,
                Err(e) => return self.failed("error", &format!("reading the crawl tables: {e}")),
            };
            self.sequence += 1;
            let report = build_crawl_report(&self.settings.origin, self.sequence, generated_at, &summary);
            return self.push(report, deadline).await;
        }
        let snapshot = match deadline {
            None => self.read().await,
            Some(at) => match tokio::time::timeout_at(at, self.read()).await {
                Ok(read) => read,
                Err(_) => return self.failed("timeout", "the database read did not finish in time"),
            },
        };
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(e) => return self.failed("error", &format!("reading the event database: {e}")),
        };
        self.sequence += 1;
        let built = build_report(&self.settings.origin, self.sequence, generated_at, &snapshot);
        self.metrics.report_peer_ids_skipped.set(i64::try_from(built.skipped_peer_ids).unwrap_or(i64::MAX));
        if built.skipped_peer_ids > 0 && self.sequence == 1 {
            tracing::warn!(skipped = built.skipped_peer_ids, "peer ids that are not 16-byte hex left out of reports");
        }
        self.push(built.report, deadline).await;
    }

    /// Pushes one built report and counts the outcome.
    async fn push(&mut self, report: sensor_report::v1::Report, deadline: Option<Instant>) {
        let push_deadline = deadline.unwrap_or_else(|| Instant::now() + self.settings.timeout);
        let mut request = tonic::Request::new(report);
        request.set_timeout(push_deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout_at(push_deadline, self.client.push(request)).await {
            Ok(Ok(ack)) => self.succeeded(ack.into_inner()),
            Ok(Err(status)) => {
                let detail = format!("{:?}: {}", status.code(), status.message());
                self.failed(push_result(status.code()), &detail)
            }
            Err(_) => self.failed("timeout", "no answer within the push timeout"),
        }
    }

    /// Reads the snapshot on the blocking pool, reusing the open reader.
    async fn read(&mut self) -> Result<Snapshot> {
        let reader = self.reader.take();
        let Source::Database(path) = &self.settings.source else {
            return Err(SensorError::StorageUnavailable("this reporter has no event database"));
        };
        let path = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let reader = match reader {
                Some(reader) => reader,
                None => Reader::open(&path)?,
            };
            Snapshot::read(&reader).map(|snapshot| (reader, snapshot))
        });
        let (reader, snapshot) =
            read.await.map_err(|_| SensorError::StorageUnavailable("the report read task failed"))??;
        self.reader = Some(reader);
        Ok(snapshot)
    }

    /// Runs `read` on the blocking pool with the open reader of `path` (opened on first use and
    /// kept for the next report).
    async fn read_with<T: Send + 'static>(
        &mut self,
        path: PathBuf,
        read: impl FnOnce(&Reader) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let reader = self.reader.take();
        let task = tokio::task::spawn_blocking(move || {
            let reader = match reader {
                Some(reader) => reader,
                None => Reader::open(&path)?,
            };
            read(&reader).map(|value| (reader, value))
        });
        let (reader, value) =
            task.await.map_err(|_| SensorError::StorageUnavailable("the report read task failed"))??;
        self.reader = Some(reader);
        Ok(value)
    }

    /// Reads the punch summary on the blocking pool, reusing the open reader.
    async fn read_punch(&mut self, relay_node: &str) -> Result<PunchSummary> {
        let reader = self.reader.take();
        let Source::Punch { database, .. } = &self.settings.source else {
            return Err(SensorError::StorageUnavailable("this reporter has no punch database"));
        };
        let (path, relay_node) = (database.clone(), relay_node.to_owned());
        let read = tokio::task::spawn_blocking(move || {
            let reader = match reader {
                Some(reader) => reader,
                None => Reader::open(&path)?,
            };
            reader.punch_summary(&relay_node).map(|summary| (reader, summary))
        });
        let (reader, summary) =
            read.await.map_err(|_| SensorError::StorageUnavailable("the report read task failed"))??;
        self.reader = Some(reader);
        Ok(summary)
    }

    fn succeeded(&mut self, ack: PushAck) {
        self.metrics.report_pushes.get_or_create(&ResultLabels { result: "ok" }).inc();
        let now = unix_ms(SystemTime::now()) / 1000;
        self.metrics.report_last_success_timestamp_seconds.set(now);
        if self.failures > 0 {
            tracing::info!(failures = self.failures, sequence = self.sequence, "report push recovered");
        } else if !self.pushed {
            tracing::info!(sequence = self.sequence, "first report accepted by the collector");
        }
        self.failures = 0;
        self.pushed = true;
        if ack.next_report_after_ms != 0 {
            let ms = ack.next_report_after_ms.clamp(NEXT_REPORT_MIN_MS, NEXT_REPORT_MAX_MS);
            let asked = Duration::from_millis(ms);
            if asked != self.interval {
                tracing::info!(interval = ?asked, "the collector changed the report interval");
                self.interval = asked;
            }
        }
    }

    fn failed(&mut self, result: &'static str, detail: &str) {
        self.metrics.report_pushes.get_or_create(&ResultLabels { result }).inc();
        self.failures += 1;
        if self.failures == 1 || self.failures.is_multiple_of(WARN_EVERY) {
            tracing::warn!(
                endpoint = %self.settings.endpoint.uri(), result, failures = self.failures,
                sequence = self.sequence, "report not delivered, retrying every {:?}: {detail}", self.interval
            );
        } else {
            tracing::debug!(result, failures = self.failures, "report not delivered: {detail}");
        }
    }
}

/// The `sensor_report_pushes_total` label of a failed push's gRPC status: an unreachable
/// collector (refused, reset, DNS) is `unavailable`, a deadline `timeout`, a report the collector
/// refused as invalid `rejected`, anything else `error`.
pub fn push_result(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded | Code::Cancelled => "timeout",
        Code::InvalidArgument => "rejected",
        _ => "error",
    }
}

/// `time` as Unix milliseconds (0 before the epoch).
fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use sensor_report::v1::{
        Report,
        collector_server::{Collector, CollectorServer},
    };

    use super::*;
    use crate::store::{Store, StoreOptions};

    /// A collector that refuses every report, or never answers.
    struct Hostile {
        hang: bool,
    }

    #[tonic::async_trait]
    impl Collector for Hostile {
        async fn push(
            &self,
            _: tonic::Request<Report>,
        ) -> std::result::Result<tonic::Response<PushAck>, tonic::Status> {
            if self.hang {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Err(tonic::Status::invalid_argument("owner.kind is not a thing"))
        }
    }

    async fn serve(collector: Hostile) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tonic::transport::Server::builder().add_service(CollectorServer::new(collector));
        tokio::spawn(server.serve_with_incoming(incoming));
        addr
    }

    fn pushes(metrics: &Metrics, result: &'static str) -> u64 {
        metrics.report_pushes.get_or_create(&ResultLabels { result }).get()
    }

    /// Runs a reporter against `collector` until `result` was counted twice (bounded), then
    /// shuts it down; returns the metrics.
    async fn count_until(collector: Hostile, result: &'static str) -> Arc<Metrics> {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("sensor.db");
        let (metrics, _) = Metrics::new();
        let store = Store::open(&database, StoreOptions::default(), metrics.clone()).unwrap();
        let mut config = Config::default();
        config.report.endpoint = format!("http://{}", serve(collector).await);
        config.report.owner_namespace = "lab".into();
        config.report.owner_name = "fleet".into();
        config.storage.path = Some(database);
        let mut settings = ReporterSettings::from_config(&config).unwrap().unwrap();
        settings.interval = Duration::from_millis(50);
        settings.timeout = Duration::from_millis(200);
        let reporter = Reporter::start(settings, metrics.clone());
        let started = std::time::Instant::now();
        while pushes(&metrics, result) < 2 {
            assert!(started.elapsed() < Duration::from_secs(20), "no {result:?} push counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopping = std::time::Instant::now();
        reporter.shutdown().await;
        assert!(stopping.elapsed() < Duration::from_millis(1500), "the final report is bounded by the timeout");
        store.close().unwrap();
        metrics
    }

    #[tokio::test]
    async fn refused_reports_are_counted_rejected_and_retried() {
        let metrics = count_until(Hostile { hang: false }, "rejected").await;
        assert_eq!(pushes(&metrics, "ok"), 0);
        assert_eq!(metrics.report_last_success_timestamp_seconds.get(), 0);
    }

    #[tokio::test]
    async fn a_collector_that_never_answers_is_a_timeout() {
        let metrics = count_until(Hostile { hang: true }, "timeout").await;
        assert_eq!(pushes(&metrics, "ok") + pushes(&metrics, "rejected"), 0);
    }

    #[test]
    fn status_codes_map_to_closed_labels() {
        assert_eq!(push_result(Code::Unavailable), "unavailable");
        assert_eq!(push_result(Code::DeadlineExceeded), "timeout");
        assert_eq!(push_result(Code::Cancelled), "timeout");
        assert_eq!(push_result(Code::InvalidArgument), "rejected");
        assert_eq!(push_result(Code::Internal), "error");
        assert_eq!(push_result(Code::Unimplemented), "error");
        for code in [Code::Ok, Code::Unavailable, Code::DeadlineExceeded, Code::InvalidArgument, Code::Unknown] {
            assert!(crate::metrics::REPORT_PUSH_RESULTS.contains(&push_result(code)));
        }
    }

    #[test]
    fn settings_follow_the_config() {
        let mut config = Config::default();
        assert!(ReporterSettings::from_config(&config).unwrap().is_none(), "no endpoint: reporting off");
        config.sensor_id = "s-1".into();
        config.report.endpoint = "http://collector.lab.svc:50051".into();
        config.report.owner_namespace = "lab".into();
        config.report.owner_name = "fleet".into();
        config.report.interval_ms = 2500;
        let settings = ReporterSettings::from_config(&config).unwrap().expect("enabled");
        assert_eq!(settings.endpoint.uri().to_string(), "http://collector.lab.svc:50051/");
        assert_eq!((settings.interval, settings.timeout), (Duration::from_millis(2500), Duration::from_secs(5)));
        assert_eq!(settings.origin.sender, "s-1", "the sender defaults to the sensor id");
        assert_eq!(settings.origin.owner.name, "fleet");
        assert!(settings.origin.started_at_unix_ms > 1_600_000_000_000);
        config.report.sender = "fleet-abc12".into();
        assert_eq!(ReporterSettings::from_config(&config).unwrap().unwrap().origin.sender, "fleet-abc12");
    }
}
