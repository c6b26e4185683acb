//! `operator`: `run` (controllers + collector) and `crd` (prints the CRD YAML). No logic here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use operator::context::Settings;
use operator::fleet::build::BuildSettings;
use operator::run::{RunOptions, Shutdown, run, termination_signal};
use operator::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "operator",
    version,
    about = "Reconciles SensorFleet and RelayNode resources into sensor and relay pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers, the report collector and the HTTP endpoints.
    Run(Box<RunArgs>),
    /// Print both CRDs as YAML (or write one file per CRD into --dir).
    Crd {
        /// Write `sensorfleets.p2psensor.dev.yaml` and `relaynodes.p2psensor.dev.yaml` here.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// gRPC address sensor and relay pods push reports to.
    #[arg(long, env = "OPERATOR_COLLECTOR_LISTEN", default_value = "0.0.0.0:50051")]
    collector_listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "OPERATOR_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// URL of this collector as sensor pods reach it, e.g. http://p2p-sensor-operator.p2p-system.svc:50051.
    #[arg(long, env = "OPERATOR_COLLECTOR_ENDPOINT")]
    collector_endpoint: String,
    /// Image of sensor and relay pods whose resource does not set one.
    #[arg(long, env = "OPERATOR_SENSOR_IMAGE", default_value = "")]
    sensor_image: String,
    /// Hold a Lease before reconciling, so that only one replica acts.
    #[arg(long, env = "OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "OPERATOR_LEASE_NAME", default_value = "p2p-sensor-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "operator")]
    identity: String,
    /// Watch only this namespace; empty = all namespaces.
    #[arg(long, env = "OPERATOR_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// Report-driven status changes are written at most once per resource per this many seconds.
    #[arg(long, env = "OPERATOR_STATUS_INTERVAL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    status_interval_secs: u64,
    /// When nothing else in a status changed, its report timestamps (lastReportTime) are
    /// refreshed at most once per this many seconds, not at every report; 0 refreshes them always.
    #[arg(long, env = "OPERATOR_STATUS_HEARTBEAT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86400))]
    status_heartbeat_secs: u64,
    /// A sensor silent for this many seconds is shown as not reporting.
    #[arg(long, env = "OPERATOR_REPORT_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    report_timeout_secs: u64,
    /// A sensor silent for this many seconds is forgotten (its counts leave the status).
    #[arg(long, env = "OPERATOR_FORGET_AFTER_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604800))]
    forget_after_secs: u64,
    /// Sensors' report interval, ms (rendered into their configuration).
    #[arg(long, env = "OPERATOR_REPORT_INTERVAL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1000..=300_000))]
    report_interval_ms: u64,
    /// Children are re-applied at least this often even when unchanged, s.
    #[arg(long, env = "OPERATOR_RESYNC_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86400))]
    resync_secs: u64,
    /// Reconciliations at once per controller.
    #[arg(long, env = "OPERATOR_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    #[arg(long, env = "OPERATOR_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// tracing EnvFilter directive; RUST_LOG overrides it.
    #[arg(long, env = "OPERATOR_LOG_FILTER", default_value = "info")]
    log_filter: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { dir } => match crd(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("operator crd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            // kube's TLS uses rustls with ring; a workspace build also links aws-lc-rs (libp2p's
            // QUIC in the sensor), and rustls refuses to guess between two providers.
            let _ = rustls::crypto::ring::default_provider().install_default();
            operator::allocator::limit_arenas();
            if let Err(e) = telemetry::init(args.log_format, &args.log_filter) {
                eprintln!("operator run: {e}");
                return ExitCode::from(2);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("operator run: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                let shutdown = Shutdown::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    termination_signal().await;
                    tracing::info!("termination signal; shutting down");
                    on_signal.trigger();
                });
                match run(options(*args), shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, reason = e.reason(), "operator stopped");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

fn options(args: RunArgs) -> RunOptions {
    RunOptions {
        collector_listen: args.collector_listen,
        http_listen: args.http_listen,
        settings: Settings {
            build: BuildSettings {
                sensor_image: args.sensor_image,
                collector_endpoint: args.collector_endpoint,
                report_interval_ms: args.report_interval_ms,
            },
            status_interval: Duration::from_secs(args.status_interval_secs),
            report_timeout: Duration::from_secs(args.report_timeout_secs),
            resync_interval: Duration::from_secs(args.resync_secs),
            report_warm_up: Duration::from_millis(2 * args.report_interval_ms)
                + Duration::from_secs(args.status_interval_secs),
            status_heartbeat: Duration::from_secs(args.status_heartbeat_secs),
        },
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        identity: args.identity,
        watch_namespace: Some(args.watch_namespace).filter(|ns| !ns.is_empty()),
        forget_after: Duration::from_secs(args.forget_after_secs),
        concurrency: args.concurrency,
    }
}

fn crd(dir: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    for (file, crd) in operator::crd::all() {
        let yaml = operator::crd::to_yaml(&crd)?;
        match &dir {
            Some(dir) => std::fs::write(dir.join(file), yaml)?,
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
