//! `sensor`: command-line entry point. Parses arguments and dispatches; no logic lives here.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use libp2p::{Multiaddr, PeerId};
use sensor_core::{
    config::{CliOverrides, Config, RelayListen},
    network::Network,
};

/// Kaspa P2P sensor: accepts inbound peers, completes the real handshake, classifies each peer
/// public or private by a handshake-verified dial-back, stores every event in SQLite and serves
/// Prometheus metrics. Without a subcommand, runs `listen`.
#[derive(Debug, Parser)]
#[command(name = "sensor", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Print a commented default sensor.toml and exit (same as `sensor config`).
    #[arg(long)]
    generate_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    listen: ListenArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accept, handshake, classify and store inbound Kaspa peers (the main job).
    Listen(ListenArgs),
    /// Print a commented default sensor.toml with every key, its default and its env variable.
    Config,
    /// Print stored peers and verdict counts from the SQLite store.
    #[command(alias = "report")]
    Peers(PeersArgs),
    /// Run a libp2p circuit relay v2 server (+ identify, ping, AutoNAT v1 server) on TCP and
    /// QUIC v1 for the sensors' hole punching.
    Relay(RelayArgs),
    /// Hole-punch through a relay (DCUtR): reserve a slot on it and, for each --target, dial
    /// the target through the relay and record whether a direct connection came up. Without
    /// --target, only hold the reservation so others can punch to this peer.
    Punch(PunchArgs),
    /// Map the network through address gossip: from seeds, handshake with every learned
    /// address, record its Version, ask RequestAddresses, store visits/nodes/edges in SQLite and
    /// print a summary. With --propagation, print one address's gossip timeline and exit.
    Crawl(CrawlArgs),
}

/// `sensor crawl`. Exits 0 whatever the peers did (unreachable peers are data); non-zero for
/// usage and storage errors.
#[derive(Debug, Args)]
struct CrawlArgs {
    /// TOML configuration file (`[crawl]` and the rest; see `sensor config`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A seed node (repeatable; replaces crawl.seeds).
    #[arg(long, value_name = "IP:PORT")]
    seed: Vec<SocketAddr>,
    /// A DNS seed name, resolved to the network's default port (or NAME:PORT) (repeatable;
    /// replaces crawl.seed_dns).
    #[arg(long, value_name = "NAME")]
    seed_dns: Vec<String>,
    /// Also seed from addresses already in this crawler's store (earlier crawls, public peers).
    #[arg(long)]
    from_store: bool,
    /// mainnet | testnet-10 | testnet-12 | devnet | simnet [default: the config's, mainnet].
    #[arg(long, value_name = "NAME")]
    network: Option<Network>,
    /// Visits at once at most [default: crawl.concurrency, 256].
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Bound of one visit (connect, handshake, gossip, close), milliseconds [default: 5000].
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Lab mode: also dial loopback, private (RFC 1918, CGNAT, ULA) and documentation ranges.
    #[arg(long)]
    allow_private_targets: bool,
    /// Write the crawl to FILE: .json (crawl, summary, nodes, edges) or .csv (one row per node).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Directory holding sensor.sqlite [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// RequestAddresses per visit at most [default: 8].
    #[arg(long, value_name = "N")]
    max_requests: Option<u32>,
    /// Known addresses at most; further ones are not dialled [default: 100000].
    #[arg(long, value_name = "N")]
    max_nodes: Option<usize>,
    /// Bound of one crawl round, seconds [default: 600].
    #[arg(long, value_name = "S")]
    max_duration_secs: Option<u64>,
    /// Continuous mode: a crawl round every S seconds until SIGTERM, revisiting known nodes by
    /// their uptime [default: crawl.interval_secs, 0 = one crawl].
    #[arg(long, value_name = "S")]
    interval_secs: Option<u64>,
    /// Prometheus /metrics listen address of the continuous mode.
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Print ADDRESS's propagation timeline (IP:PORT) from the store and exit.
    #[arg(long, value_name = "ADDRESS")]
    propagation: Option<String>,
    /// Print the summary (or timeline) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl CrawlArgs {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            data_dir: self.data_dir.clone(),
            network: self.network,
            metrics_listen: self.metrics_listen,
            crawl_seeds: (!self.seed.is_empty()).then(|| self.seed.clone()),
            crawl_seed_dns: (!self.seed_dns.is_empty()).then(|| self.seed_dns.clone()),
            crawl_concurrency: self.concurrency,
            crawl_timeout_ms: self.timeout_ms,
            crawl_max_requests: self.max_requests,
            crawl_max_nodes: self.max_nodes,
            crawl_max_duration_secs: self.max_duration_secs,
            crawl_interval_secs: self.interval_secs,
            crawl_allow_private_targets: self.allow_private_targets.then_some(true),
            ..CliOverrides::default()
        }
    }
}

/// Flags override environment variables (`SENSOR_…`), which override the file, which overrides
/// the defaults.
#[derive(Debug, Args, Clone, Default)]
struct ListenArgs {
    /// TOML configuration file (see `sensor config`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// mainnet | testnet-10 | testnet-12 | devnet | simnet.
    #[arg(long, value_name = "NAME")]
    network: Option<Network>,
    /// P2P listen address [default: 0.0.0.0:<network default port>].
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// Address advertised in our Version so peers gossip the sensor.
    #[arg(long, value_name = "IP:PORT")]
    external_address: Option<SocketAddr>,
    /// Directory for the peer id and the SQLite store [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz [default: 0.0.0.0:9102].
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Lab mode: also probe private, loopback and documentation-range source IPs.
    #[arg(long)]
    allow_private_targets: bool,
}

#[derive(Debug, Args)]
struct PeersArgs {
    /// TOML configuration file, to find the data dir / database.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory holding sensor.sqlite [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The SQLite file itself (overrides --data-dir).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// How many peers to list, most recently seen first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// `sensor relay`. Flags override environment variables (`SENSOR_RELAY_…`), which override the
/// `[relay]` section of the file, which overrides the defaults.
#[derive(Debug, Args)]
struct RelayArgs {
    /// TOML configuration file (see `sensor config`, section [relay]).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Protobuf-encoded libp2p keypair; created (Ed25519, mode 0600) when absent
    /// [default: <data dir>/relay_identity.key].
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Listen multiaddrs, replacing relay.listen_tcp/listen_quic: /ip4|ip6/IP/tcp/PORT and/or
    /// /ip4|ip6/IP/udp/PORT/quic-v1 [default: /ip4/0.0.0.0/tcp/4001].
    #[arg(long, value_name = "MULTIADDR", num_args = 1.., action = clap::ArgAction::Append)]
    listen: Vec<Multiaddr>,
    /// Multiaddrs the relay is reachable at, told to clients in reservations (replacing
    /// relay.external_addresses). Without one every reservation is refused.
    #[arg(long, value_name = "MULTIADDR", num_args = 1.., action = clap::ArgAction::Append)]
    external_address: Vec<Multiaddr>,
    /// Address of /metrics, /healthz and /readyz [default: 0.0.0.0:9102].
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Lab mode: the AutoNAT server also serves clients at private/loopback/documentation IPs.
    #[arg(long)]
    allow_private_targets: bool,
}

/// `sensor punch`. Flags override environment variables (`SENSOR_PUNCH_…`), which override the
/// `[punch]` section of the file, which overrides the defaults. Exits 0 after its attempts
/// whatever their outcome; non-zero only for usage and set-up errors.
#[derive(Debug, Args)]
struct PunchArgs {
    /// TOML configuration file (see `sensor config`, section [punch]).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The relay: /ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT/p2p/RELAY_ID or …/udp/PORT/quic-v1/p2p/RELAY_ID.
    #[arg(long, value_name = "MULTIADDR")]
    relay: Option<Multiaddr>,
    /// PeerIds to punch to through the relay (replacing punch.targets); none = only hold the
    /// reservation until SIGTERM or --timeout-secs.
    #[arg(long, value_name = "PEER_ID", num_args = 1.., action = clap::ArgAction::Append)]
    target: Vec<PeerId>,
    /// Protobuf-encoded libp2p keypair; created (Ed25519, mode 0600) when absent
    /// [default: <data dir>/punch_identity.key].
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Local listen multiaddrs (hole-punch dials reuse their ports), replacing punch.listen
    /// [default: /ip4/0.0.0.0/tcp/0 /ip4/0.0.0.0/udp/0/quic-v1].
    #[arg(long, value_name = "MULTIADDR", num_args = 1.., action = clap::ArgAction::Append)]
    listen: Vec<Multiaddr>,
    /// Print one JSON object per attempt on stdout (without --target: one per reservation
    /// address, with this peer's PeerId).
    #[arg(long)]
    json: bool,
    /// Pipe incoming /p2psensor/kaspa/1 streams to this Kaspa P2P address (kaspad or `sensor
    /// listen`), so punching peers can handshake with it over the direct connection.
    #[arg(long, value_name = "IP:PORT")]
    kaspa_bridge: Option<SocketAddr>,
    /// Kaspa network of the Version sent with --kaspa-handshake [default: mainnet].
    #[arg(long, value_name = "NAME")]
    network: Option<Network>,
    /// After each successful attempt, complete a Kaspa handshake (Version/Verack/Ready) over a
    /// /p2psensor/kaspa/1 stream on the direct connection, and record it with the attempt.
    #[arg(long)]
    kaspa_handshake: bool,
    /// Attempts per target [default: 1].
    #[arg(long, value_name = "N")]
    attempts: Option<u32>,
    /// With --target: the bound of one attempt [default: 30]; without: how long the reservation
    /// is held [default: until SIGTERM].
    #[arg(long, value_name = "S")]
    timeout_secs: Option<u64>,
    /// Directory for the identity and the SQLite store [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz [default: 0.0.0.0:9102].
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
}

impl PunchArgs {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            data_dir: self.data_dir.clone(),
            metrics_listen: self.metrics_listen,
            punch_relay: self.relay.clone(),
            punch_targets: (!self.target.is_empty()).then(|| self.target.clone()),
            punch_attempts: self.attempts,
            punch_timeout_secs: self.timeout_secs,
            punch_identity_file: self.identity.clone(),
            punch_listen: (!self.listen.is_empty()).then(|| self.listen.clone()),
            network: self.network,
            punch_kaspa_bridge: self.kaspa_bridge,
            punch_kaspa_handshake: self.kaspa_handshake.then_some(true),
            ..CliOverrides::default()
        }
    }
}

impl RelayArgs {
    fn overrides(&self) -> sensor::Result<CliOverrides> {
        let listen = if self.listen.is_empty() { None } else { Some(RelayListen::from_multiaddrs(&self.listen)?) };
        Ok(CliOverrides {
            metrics_listen: self.metrics_listen,
            relay_listen: listen,
            relay_external_addresses: (!self.external_address.is_empty()).then(|| self.external_address.clone()),
            relay_identity_file: self.identity.clone(),
            relay_allow_private_targets: self.allow_private_targets.then_some(true),
            ..CliOverrides::default()
        })
    }
}

impl ListenArgs {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            network: self.network,
            listen: self.listen,
            external_address: self.external_address,
            data_dir: self.data_dir.clone(),
            metrics_listen: self.metrics_listen,
            allow_private_targets: self.allow_private_targets.then_some(true),
            ..CliOverrides::default()
        }
    }
}

fn load_config(file: Option<&std::path::Path>, cli: &CliOverrides) -> sensor::Result<Config> {
    let (config, warnings) = Config::load(file, std::env::vars(), cli)?;
    if config.export.sink == sensor_core::config::SINK_POSTGRES {
        sensor::export::postgres::validate_endpoint(&config.export.endpoint)?;
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run(cli: Cli) -> sensor::Result<()> {
    if cli.generate_config {
        print!("{}", Config::default_toml());
        return Ok(());
    }
    match cli.command {
        Some(Command::Config) => {
            print!("{}", Config::default_toml());
            Ok(())
        }
        Some(Command::Peers(args)) => {
            let overrides = CliOverrides { data_dir: args.data_dir.clone(), ..CliOverrides::default() };
            let config = load_config(args.config.as_deref(), &overrides)?;
            let db = args.db.unwrap_or_else(|| config.database_path());
            let stdout = std::io::stdout();
            sensor::peer_report::write_report(&db, &mut stdout.lock(), args.limit)
        }
        Some(Command::Listen(args)) => listen(args),
        Some(Command::Relay(args)) => relay(args),
        Some(Command::Punch(args)) => punch(args),
        Some(Command::Crawl(args)) => crawl(args),
        None => listen(cli.listen),
    }
}

fn listen(args: ListenArgs) -> sensor::Result<()> {
    let config = load_config(args.config.as_deref(), &args.overrides())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| sensor::SensorError::io("starting the async runtime", e))?;
    runtime.block_on(sensor::listen::run(config))
}

fn relay(args: RelayArgs) -> sensor::Result<()> {
    let config = load_config(args.config.as_deref(), &args.overrides()?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| sensor::SensorError::io("starting the async runtime", e))?;
    runtime.block_on(sensor::p2p::relay::run(config))
}

fn punch(args: PunchArgs) -> sensor::Result<()> {
    let config = load_config(args.config.as_deref(), &args.overrides())?;
    let output = if args.json { sensor::p2p::punch::Output::Json } else { sensor::p2p::punch::Output::Text };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| sensor::SensorError::io("starting the async runtime", e))?;
    runtime.block_on(sensor::p2p::punch::run(config, output))
}

fn crawl(args: CrawlArgs) -> sensor::Result<()> {
    let config = load_config(args.config.as_deref(), &args.overrides())?;
    let flags = sensor::crawl::CrawlFlags {
        from_store: args.from_store,
        output: args.output,
        propagation: args.propagation,
        json: args.json,
    };
    let command = sensor::crawl::CrawlCommand::from_config(&config, flags);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| sensor::SensorError::io("starting the async runtime", e))?;
    runtime.block_on(sensor::crawl::run(&config, command))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(kind = e.kind(), "{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
