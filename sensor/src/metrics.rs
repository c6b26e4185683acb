//! One prometheus-client registry for everything the sensor exports on `/metrics`.
//!
//! Names follow the seed sensor's (`sensor_connections_total`, …). prometheus-client appends
//! `_total` to counters, so counters are registered without it. Units: seconds for durations,
//! counts otherwise. No label carries a peer address or id (bounded cardinality): labels are
//! closed enums (`direction`, `result`, `reason`, `classification`, `kind`).

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use sensor_core::Label;
use sensor_core::connection::RejectReason;
use sensor_core::verdict::{Classification, VerdictReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `inbound` | `outbound`
    pub direction: &'static str,
    /// `accepted` | `rejected` for inbound; `success` | `failure` for dial-back attempts.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassificationLabels {
    pub classification: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub classification: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// For report pushes: `ok` | `unavailable` | `timeout` | `rejected` | `error`.
    pub result: &'static str,
}

/// Every `result` label of `sensor_report_pushes_total`.
pub const REPORT_PUSH_RESULTS: [&str; 5] = ["ok", "unavailable", "timeout", "rejected", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// kaspa-p2p-lib `KaspadMessagePayloadType` name, e.g. `Ping`, `RequestAddresses`.
    pub message_type: &'static str,
}

/// `result` labels of `sensor_gossip_messages_total`.
pub const GOSSIP_RESULTS: [&str; 3] = ["recorded", "unsolicited", "oversized"];

/// Every metric the sensor exports. Clone the handles freely; they share state.
#[derive(Debug)]
pub struct Metrics {
    /// `sensor_connections_total{direction,result}`: inbound connections accepted/rejected,
    /// dial-back attempts success/failure.
    pub connections: Family<ConnectionLabels, Counter>,
    /// `sensor_connections_active`: inbound peers currently held (goes down on close).
    pub connections_active: Gauge,
    /// `sensor_handshakes_pending`: inbound handshakes in progress.
    pub handshakes_pending: Gauge,
    /// `sensor_inbound_rejections_total{reason}`.
    pub rejections: Family<ReasonLabels, Counter>,
    /// `sensor_probes_total{classification}`: dial-back probes that finished (cache hits excluded).
    pub probes: Family<ClassificationLabels, Counter>,
    /// `sensor_verdicts_total{classification,reason}`: every verdict recorded, cache hits included.
    pub verdicts: Family<VerdictLabels, Counter>,
    /// `sensor_probe_duration_seconds`: wall time of a whole probe (all attempts).
    pub probe_duration_seconds: Histogram,
    /// `sensor_peers_classified_public_total`: verdicts `public` recorded.
    pub peers_classified_public: Counter,
    /// `sensor_peers_classified_private_total`: verdicts `private` recorded.
    pub peers_classified_private: Counter,
    /// `sensor_probe_queue_depth`: peers waiting for a dial-back.
    pub probe_queue_depth: Gauge,
    /// `sensor_probes_in_flight`: dial-backs running now.
    pub probes_in_flight: Gauge,
    /// `sensor_verdict_cache_hits_total`.
    pub verdict_cache_hits: Counter,
    /// `sensor_storage_events_total`: events (and `sensor punch` attempts) committed to SQLite.
    pub storage_events: Counter,
    /// `sensor_storage_errors_total{kind}`: failed write batches (`full`, `locked`, `io`, `other`)
    /// and events refused because the writer queue was full (`queue_full`).
    pub storage_errors: Family<KindLabels, Counter>,
    /// `sensor_storage_queue_depth`: events accepted but not yet committed.
    pub storage_queue_depth: Gauge,
    /// `sensor_peer_disconnects_total{reason}`: held (handshaken) inbound peers that left, by
    /// [`End`](sensor_core::connection::DisconnectReason) reason (`message_too_large`: over the 4 MiB
    /// transport limit).
    pub peer_disconnects: Family<ReasonLabels, Counter>,
    /// `sensor_storage_dropped_events_total{reason}`: events the store gave up on: `disk_full`
    /// (the disk-full policy's last step) or `shutdown` (still failing at shutdown).
    pub storage_dropped_events: Family<ReasonLabels, Counter>,
    /// `sensor_storage_reclaimed_events_total`: exported events deleted to make room when the
    /// database was full.
    pub storage_reclaimed_events: Counter,
    /// `sensor_messages_received_total{message_type}`: post-handshake messages from peers.
    pub messages_received: Family<MessageLabels, Counter>,
    /// `sensor_gossip_messages_total{result}`: `Addresses` messages from inbound peers:
    /// `recorded` (the reply to our one `RequestAddresses`), `unsolicited` (any other; dropped),
    /// `oversized` (over kaspad's 2,500 entries; dropped).
    pub gossip_messages: Family<ResultLabels, Counter>,
    /// `sensor_gossip_addresses_total`: addresses recorded from those replies.
    pub gossip_addresses: Counter,
    /// `sensor_report_pushes_total{result}`: report push attempts to the collector, by outcome
    /// (see [`REPORT_PUSH_RESULTS`]; `error` also covers a database read that failed, nothing sent).
    pub report_pushes: Family<ResultLabels, Counter>,
    /// `sensor_report_last_success_timestamp_seconds`: Unix time of the last accepted push; 0 =
    /// none yet.
    pub report_last_success_timestamp_seconds: Gauge,
    /// `sensor_report_peer_ids_skipped`: peer ids in the database that are not 16-byte hex and
    /// were left out of the latest report (a gauge: every report re-reads the whole table).
    pub report_peer_ids_skipped: Gauge,
}

impl Metrics {
    /// Builds the metrics and a registry that exposes them, prefixed `sensor_`. The registry is a
    /// root without a prefix: metrics registered on it later keep their own names.
    pub fn new() -> (std::sync::Arc<Self>, Registry) {
        let metrics = Self {
            connections: Family::default(),
            connections_active: Gauge::default(),
            handshakes_pending: Gauge::default(),
            rejections: Family::default(),
            probes: Family::default(),
            verdicts: Family::default(),
            probe_duration_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            peers_classified_public: Counter::default(),
            peers_classified_private: Counter::default(),
            probe_queue_depth: Gauge::default(),
            probes_in_flight: Gauge::default(),
            verdict_cache_hits: Counter::default(),
            storage_events: Counter::default(),
            storage_errors: Family::default(),
            storage_queue_depth: Gauge::default(),
            storage_dropped_events: Family::default(),
            peer_disconnects: Family::default(),
            storage_reclaimed_events: Counter::default(),
            messages_received: Family::default(),
            gossip_messages: Family::default(),
            gossip_addresses: Counter::default(),
            report_pushes: Family::default(),
            report_last_success_timestamp_seconds: Gauge::default(),
            report_peer_ids_skipped: Gauge::default(),
        };
        // The sensor's metrics live in a `sensor_` sub-registry of a root registry, so other parts
        // can register their own prefixes next to them (`sensor relay`: libp2p-metrics' `libp2p_*`).
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("sensor");
        let m = &metrics;
        registry.register(
            "connections",
            "Inbound connections by result and dial-back attempts by result",
            m.connections.clone(),
        );
        registry.register("connections_active", "Inbound peers currently held", m.connections_active.clone());
        registry.register("handshakes_pending", "Inbound handshakes in progress", m.handshakes_pending.clone());
        registry.register("inbound_rejections", "Inbound connections refused, by reason", m.rejections.clone());
        registry.register("probes", "Dial-back probes finished, by classification", m.probes.clone());
        registry.register(
            "verdicts",
            "Verdicts recorded (cache hits included), by classification and reason",
            m.verdicts.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "Wall time of a dial-back probe, all attempts",
            m.probe_duration_seconds.clone(),
        );
        registry.register("peers_classified_public", "Verdicts 'public' recorded", m.peers_classified_public.clone());
        registry.register(
            "peers_classified_private",
            "Verdicts 'private' recorded",
            m.peers_classified_private.clone(),
        );
        registry.register("probe_queue_depth", "Peers waiting for a dial-back probe", m.probe_queue_depth.clone());
        registry.register("probes_in_flight", "Dial-back probes running", m.probes_in_flight.clone());
        registry.register(
            "verdict_cache_hits",
            "Verdicts served from the (ip,port) cache",
            m.verdict_cache_hits.clone(),
        );
        registry.register("storage_events", "Events committed to SQLite", m.storage_events.clone());
        for result in GOSSIP_RESULTS {
            let _ = m.gossip_messages.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "gossip_messages",
            "Addresses messages from inbound peers: recorded (our request's reply), unsolicited, oversized",
            m.gossip_messages.clone(),
        );
        registry.register(
            "gossip_addresses",
            "Addresses recorded from inbound peers' gossip",
            m.gossip_addresses.clone(),
        );
        registry.register("storage_errors", "Storage failures by kind", m.storage_errors.clone());
        registry.register(
            "storage_queue_depth",
            "Events accepted but not yet committed",
            m.storage_queue_depth.clone(),
        );
        for end in sensor_core::connection::DisconnectReason::ALL {
            let _ = m.peer_disconnects.get_or_create(&ReasonLabels { reason: end.as_str() });
        }
        registry.register(
            "peer_disconnects",
            "Handshaken inbound peers that left, by reason (message_too_large: over the transport limit)",
            m.peer_disconnects.clone(),
        );
        for reason in STORAGE_DROP_REASONS {
            let _ = m.storage_dropped_events.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "storage_dropped_events",
            "Events the store dropped: disk_full (nothing left to reclaim), shutdown",
            m.storage_dropped_events.clone(),
        );
        registry.register(
            "storage_reclaimed_events",
            "Exported events deleted to make room in a full database",
            m.storage_reclaimed_events.clone(),
        );
        registry.register(
            "messages_received",
            "Post-handshake messages received, by type",
            m.messages_received.clone(),
        );
        registry.register("report_pushes", "Report pushes to the collector, by result", m.report_pushes.clone());
        registry.register(
            "report_last_success_timestamp_seconds",
            "Unix time of the last report the collector accepted (0: none yet)",
            m.report_last_success_timestamp_seconds.clone(),
        );
        registry.register(
            "report_peer_ids_skipped",
            "Peer ids that are not 16-byte hex, left out of the latest report",
            m.report_peer_ids_skipped.clone(),
        );
        // Pre-create the closed label sets so dashboards see zeros, not gaps.
        for r in RejectReason::ALL {
            let _ = m.rejections.get_or_create(&ReasonLabels { reason: r.as_str() });
        }
        for c in Classification::ALL {
            let _ = m.probes.get_or_create(&ClassificationLabels { classification: c.as_str() });
        }
        for r in VerdictReason::ALL {
            let _ = m
                .verdicts
                .get_or_create(&VerdictLabels { classification: r.classification().as_str(), reason: r.as_str() });
        }
        for result in ["accepted", "rejected"] {
            let _ = m.connections.get_or_create(&ConnectionLabels { direction: "inbound", result });
        }
        for result in REPORT_PUSH_RESULTS {
            let _ = m.report_pushes.get_or_create(&ResultLabels { result });
        }
        (std::sync::Arc::new(metrics), root)
    }

    /// Counts one held peer that left, by `reason` (`End::as_str`).
    pub fn peer_disconnect(&self, reason: &'static str) {
        self.peer_disconnects.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts `n` events dropped by the store for `reason` (`disk_full`, `shutdown`).
    pub fn storage_dropped(&self, reason: &'static str, n: u64) {
        self.storage_dropped_events.get_or_create(&ReasonLabels { reason }).inc_by(n);
    }

    /// Counts one storage failure of `kind`.
    pub fn storage_error(&self, kind: &'static str) {
        self.storage_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts one verdict, with the classification-specific counters.
    pub fn verdict(&self, reason: VerdictReason) {
        let classification = reason.classification();
        self.verdicts
            .get_or_create(&VerdictLabels { classification: classification.as_str(), reason: reason.as_str() })
            .inc();
        match classification {
            Classification::Public => self.peers_classified_public.inc(),
            Classification::Private => self.peers_classified_private.inc(),
            Classification::Unknown => 0,
        };
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PunchLabels {
    /// `tcp` | `quic`: the direct connection's transport, else the relay address's.
    pub transport: &'static str,
    /// `success` | `failed` | `no_relay_connection` | `cancelled` | `timeout`.
    pub outcome: &'static str,
}

/// `sensor punch`'s metrics (registered only by that subcommand, next to [`Metrics`]); cheap
/// handles that share state.
#[derive(Debug, Clone)]
pub struct PunchMetrics {
    /// `sensor_punch_attempts_total{transport,outcome}`: hole-punch attempts finished.
    pub attempts: Family<PunchLabels, Counter>,
    /// `sensor_punch_time_to_direct_seconds`: relayed connection established → direct connection
    /// established, of successful attempts. Bucket bounds are the report's
    /// `sensor_report::TIME_TO_DIRECT_BOUNDS_MS` in seconds.
    pub time_to_direct_seconds: Histogram,
}

impl PunchMetrics {
    /// Registers the metrics under `registry` as `sensor_punch_*`, with every
    /// `transport` × `outcome` label pair pre-created.
    pub fn register(registry: &mut Registry, transports: &[&'static str], outcomes: &[&'static str]) -> PunchMetrics {
        let bounds = sensor_report::TIME_TO_DIRECT_BOUNDS_MS.map(|ms| ms as f64 / 1000.0);
        let m = PunchMetrics { attempts: Family::default(), time_to_direct_seconds: Histogram::new(bounds) };
        let r = registry.sub_registry_with_prefix("sensor_punch");
        r.register("attempts", "Hole-punch attempts finished, by transport and outcome", m.attempts.clone());
        r.register(
            "time_to_direct_seconds",
            "Relayed connection established to direct connection established, successful attempts",
            m.time_to_direct_seconds.clone(),
        );
        for &transport in transports {
            for &outcome in outcomes {
                let _ = m.attempts.get_or_create(&PunchLabels { transport, outcome });
            }
        }
        m
    }

    /// Counts one finished attempt (and its time to direct, for a success).
    pub fn attempt(&self, transport: &'static str, outcome: &'static str, time_to_direct: Option<Duration>) {
        self.attempts.get_or_create(&PunchLabels { transport, outcome }).inc();
        if let Some(d) = time_to_direct {
            self.time_to_direct_seconds.observe(d.as_secs_f64());
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrawlResultLabels {
    /// `reachable` or an error class (`sensor_core::crawl::ErrorClass::as_str`).
    pub result: &'static str,
}

/// `sensor crawl`'s metrics (registered by the crawler next to [`Metrics`]); cheap handles
/// that share state.
#[derive(Debug, Clone)]
pub struct CrawlMetrics {
    /// `sensor_crawl_visits_total{result}`: finished visits, `reachable` or by error class.
    pub visits: Family<CrawlResultLabels, Counter>,
    /// `sensor_crawl_nodes_known`: distinct addresses the current crawl knows (visited or queued).
    pub nodes_known: Gauge,
    /// `sensor_crawl_visit_duration_seconds`: wall time of one visit (connect to close).
    pub visit_duration_seconds: Histogram,
    /// `sensor_crawl_addresses_filtered_total{reason}`: gossiped or seed addresses not dialled.
    pub addresses_filtered: Family<ReasonLabels, Counter>,
}

impl CrawlMetrics {
    /// Registers the metrics under `registry` as `sensor_crawl_*`, with every `results` and
    /// `reasons` label pre-created.
    pub fn register(registry: &mut Registry, results: &[&'static str], reasons: &[&'static str]) -> CrawlMetrics {
        let m = CrawlMetrics {
            visits: Family::default(),
            nodes_known: Gauge::default(),
            visit_duration_seconds: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            addresses_filtered: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("sensor_crawl");
        r.register("visits", "Crawl visits finished: reachable or by error class", m.visits.clone());
        r.register("nodes_known", "Distinct addresses the current crawl knows", m.nodes_known.clone());
        r.register(
            "visit_duration_seconds",
            "Wall time of one crawl visit, connect to close",
            m.visit_duration_seconds.clone(),
        );
        r.register("addresses_filtered", "Addresses the crawler did not dial, by reason", m.addresses_filtered.clone());
        for &result in results {
            let _ = m.visits.get_or_create(&CrawlResultLabels { result });
        }
        for &reason in reasons {
            let _ = m.addresses_filtered.get_or_create(&ReasonLabels { reason });
        }
        m
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReachabilityLabels {
    /// `public` | `private-cone` | `private-symmetric` | `unknown`.
    pub verdict: &'static str,
}

/// `sensor_reachability{verdict}`: 1 for the node's current self-reachability verdict, 0 for the
/// others (every label pre-created), in `sensor relay` and `sensor punch`.
#[derive(Clone, Debug)]
pub struct ReachabilityMetrics {
    pub verdict: Family<ReachabilityLabels, Gauge>,
    labels: Vec<&'static str>,
}

impl ReachabilityMetrics {
    /// Registers `sensor_reachability` with one series per label in `verdicts`.
    pub fn register(registry: &mut Registry, verdicts: &[&'static str]) -> ReachabilityMetrics {
        let m = ReachabilityMetrics { verdict: Family::default(), labels: verdicts.to_vec() };
        registry.register(
            "sensor_reachability",
            "Self-reachability verdict of this libp2p node (AutoNAT and the address-mapping test): 1 = current",
            m.verdict.clone(),
        );
        for &verdict in verdicts {
            let _ = m.verdict.get_or_create(&ReachabilityLabels { verdict });
        }
        m
    }

    /// Makes `current` the one series at 1.
    pub fn set(&self, current: &'static str) {
        for &verdict in &self.labels {
            self.verdict.get_or_create(&ReachabilityLabels { verdict }).set(i64::from(verdict == current));
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// `ndjson` | `http`.
    pub sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkFailureLabels {
    pub sink: &'static str,
    /// `timeout` | `connect` | `status_5xx` | `status_4xx` | `io` | `other`.
    pub kind: &'static str,
}

/// The export pipeline's metrics (`sensor listen` with `export.sink` set); cheap handles that
/// share state.
#[derive(Debug, Clone)]
pub struct ExportMetrics {
    sink: &'static str,
    /// `sensor_export_events_total{sink}`: events the sink acknowledged (a resent batch counts
    /// again).
    pub events: Family<SinkLabels, Counter>,
    /// `sensor_export_failures_total{sink,kind}`: failed deliveries (each is retried).
    pub failures: Family<SinkFailureLabels, Counter>,
    /// `sensor_export_backlog_events`: stored events after the sink's cursor.
    pub backlog_events: Gauge,
    /// `sensor_export_lag_seconds`: age of the oldest event not exported yet; 0 when none.
    pub lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ExportMetrics {
    /// Registers the metrics under `registry` as `sensor_export_*` for `sink`, with every
    /// failure `kinds` label pre-created.
    pub fn register(registry: &mut Registry, sink: &'static str, kinds: &[&'static str]) -> ExportMetrics {
        let m = ExportMetrics {
            sink,
            events: Family::default(),
            failures: Family::default(),
            backlog_events: Gauge::default(),
            lag_seconds: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("sensor_export");
        r.register("events", "Events acknowledged by the export sink", m.events.clone());
        r.register("failures", "Failed export deliveries (retried), by kind", m.failures.clone());
        r.register("backlog_events", "Stored events not exported yet", m.backlog_events.clone());
        r.register("lag_seconds", "Age of the oldest event not exported yet (0: none)", m.lag_seconds.clone());
        let _ = m.events.get_or_create(&SinkLabels { sink });
        for &kind in kinds {
            let _ = m.failures.get_or_create(&SinkFailureLabels { sink, kind });
        }
        m
    }

    /// Counts `n` acknowledged events.
    pub fn exported(&self, n: u64) {
        self.events.get_or_create(&SinkLabels { sink: self.sink }).inc_by(n);
    }

    /// Counts one failed delivery of `kind`.
    pub fn failure(&self, kind: &'static str) {
        self.failures.get_or_create(&SinkFailureLabels { sink: self.sink, kind }).inc();
    }
}

/// Renders the registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Encoding into a String cannot fail (fmt::Write on String is infallible).
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The `reason` labels of `sensor_storage_dropped_events_total`.
pub const STORAGE_DROP_REASONS: [&str; 2] = ["disk_full", "shutdown"];
