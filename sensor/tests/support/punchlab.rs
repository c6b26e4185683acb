//! Hole punching across the NAT lab with the real binaries: `sensor relay` on the public host,
//! a reservation-holding `sensor punch` behind router B, and `sensor punch --target B` behind
//! router A, over one transport. Shared by `tests/nat_matrix.rs` (one attempt per case, asserts
//! what NAT theory predicts) and `benches/nat_matrix.rs` (many attempts, success rate and
//! time-to-direct percentiles).

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use serde_json::Value;

use super::natlab::{NatLab, NatType, RELAY_IP};

/// The relay's primary and alternate (address-mapping test) port, TCP and UDP alike.
pub const RELAY_PORT: u16 = 4001;
pub const RELAY_ALT_PORT: u16 = 4002;
/// Local port of both punch clients (fixed, so conntrack listings are readable).
pub const CLIENT_PORT: u16 = 40000;
/// Kaspa P2P port of the `sensor listen` behind B (devnet's default).
pub const KASPA_PORT: u16 = 16611;
/// The relay runs in lab mode: rust-libp2p's default rate limiters (30 circuits per peer, then
/// one every 2 minutes) would refuse a 50-attempt benchmark's later circuits, which would then
/// count as hole-punch failures.
const LAB_RELAY_RATES: &[(&str, &str)] = &[
    ("SENSOR_RELAY_RESERVATION_RATE_PER_PEER", "0"),
    ("SENSOR_RELAY_RESERVATION_RATE_PER_IP", "0"),
    ("SENSOR_RELAY_CIRCUIT_RATE_PER_PEER", "0"),
    ("SENSOR_RELAY_CIRCUIT_RATE_PER_IP", "0"),
];
/// Longest wait for the relay to listen and for B's reservation.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::Quic];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }

    fn suffix(self, port: u16) -> String {
        match self {
            Transport::Tcp => format!("tcp/{port}"),
            Transport::Quic => format!("udp/{port}/quic-v1"),
        }
    }
}

/// What a case should give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Success,
    Failure,
    /// Either, by a race this lab cannot pin down (see [`expected`]).
    Race,
}

impl Expected {
    pub fn name(self) -> &'static str {
        match self {
            Expected::Success => "success",
            Expected::Failure => "failure",
            Expected::Race => "race",
        }
    }
}

/// NAT theory (docs/natlab.md, RFC 4787) plus how rust-libp2p's DCUtR opens TCP, measured here.
///
/// QUIC: a direct connection is possible when either side's NAT forwards anything to a mapped
/// port (full cone), or both map endpoint-independently (restricted ↔ restricted); a symmetric
/// NAT facing a port-restricted or symmetric one cannot be traversed.
///
/// TCP adds a direction rule. Both sides dial at once; B (the reservation holder, which starts
/// the upgrade) dials with its role overridden to *listener* so the crossing SYNs agree on roles.
/// When B's SYN instead reaches A's *listening* socket — A behind a full cone that forwards it
/// before A's own SYN left, or always when B's symmetric NAT gives B's SYN a fresh port that
/// matches no conntrack entry of A's — A also takes the listener role, the security handshake
/// never starts, and the attempt fails ("Failed to negotiate transport protocol(s): Timeout").
/// So: full-cone A × symmetric B fails over TCP; full-cone A × restricted B is a race between
/// A's SYN and B's (it succeeded on the first or second DCUtR round in our runs); B behind a full
/// cone always works (A's dialer-role SYN reaches B's listener).
pub fn expected(a: NatType, b: NatType, transport: Transport) -> Expected {
    let possible = a == NatType::FullCone
        || b == NatType::FullCone
        || (a.endpoint_independent_mapping() && b.endpoint_independent_mapping());
    match (transport, a, b) {
        (_, _, _) if !possible => Expected::Failure,
        (Transport::Tcp, NatType::FullCone, NatType::Symmetric) => Expected::Failure,
        (Transport::Tcp, NatType::FullCone, NatType::Restricted) => Expected::Race,
        _ => Expected::Success,
    }
}

/// The self-reachability verdicts a client behind `nat` may legitimately report: a full-cone
/// host is reachable at its mapped port (AutoNAT may confirm "public" before the mapping test
/// says "private-cone"); restricted maps like a cone; symmetric does not.
pub fn expected_reachability(nat: NatType) -> &'static [&'static str] {
    match nat {
        NatType::FullCone => &["public", "private-cone"],
        NatType::Restricted => &["private-cone"],
        NatType::Symmetric => &["private-symmetric"],
    }
}

/// One case's attempts, as the dialer printed them (`--json`).
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub a: NatType,
    pub b: NatType,
    pub transport: Transport,
    pub attempts: Vec<Value>,
    /// Wall time of the whole case, lab included.
    pub elapsed: Duration,
}

impl CaseResult {
    pub fn successes(&self) -> usize {
        self.attempts.iter().filter(|a| a["outcome"] == "success").count()
    }

    /// Time to direct of the successful attempts, ms, sorted.
    pub fn times_to_direct_ms(&self) -> Vec<u64> {
        let mut t: Vec<u64> = self.attempts.iter().filter_map(|a| a["time_to_direct_ms"].as_u64()).collect();
        t.sort_unstable();
        t
    }

    /// Time to direct of the first attempt, ms, when it succeeded: the only one that meets
    /// fresh NAT state (later attempts reuse the routers' mappings and conntrack entries).
    pub fn first_time_to_direct_ms(&self) -> Option<u64> {
        self.attempts.first().and_then(|a| a["time_to_direct_ms"].as_u64())
    }

    pub fn success_rate(&self) -> f64 {
        if self.attempts.is_empty() { 0.0 } else { self.successes() as f64 / self.attempts.len() as f64 }
    }
}

/// The `q`-quantile (0..=1) of sorted `values`, nearest rank; `None` when empty.
pub fn quantile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// A `sensor` process in a namespace: stdout (the JSON lines) and stderr (logs) in their own
/// files. Killed on drop.
struct Sensor {
    name: String,
    child: Child,
    stdout: PathBuf,
    log: PathBuf,
}

impl Sensor {
    /// Spawns `sensor ARGS` in namespace `ns` with the caller's `SENSOR_*` variables removed and
    /// `env` set.
    fn spawn(dir: &Path, name: &str, ns: &str, args: &[String], env: &[(&str, &str)]) -> Result<Sensor, String> {
        let stdout = dir.join(format!("{name}.out"));
        let log = dir.join(format!("{name}.log"));
        let file = |p: &Path| File::create(p).map_err(|e| format!("{name}: {}: {e}", p.display()));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(env!("CARGO_BIN_EXE_sensor")).args(args);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SENSOR_")) {
            cmd.env_remove(key);
        }
        cmd.env("RUST_LOG", "info,libp2p_dcutr=debug").env("NO_COLOR", "1").envs(env.iter().copied());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file(&stdout)?)
            .stderr(file(&log)?)
            .spawn()
            .map_err(|e| format!("{name}: spawn: {e}"))?;
        Ok(Sensor { name: name.to_owned(), child, stdout, log })
    }

    fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!("== {} (last {lines} log lines)\n{}\n", self.name, all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Polls (every 50 ms, up to `timeout`) until `probe` holds for stdout or the log.
    fn wait_for(&mut self, timeout: Duration, what: &str, probe: impl Fn(&str, &str) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if probe(&self.stdout_text(), &log) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited ({status}) before {what}\n{}", self.name, self.log_tail(40)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{}: no {what} within {timeout:?}\n{}", self.name, self.log_tail(40)))
    }

    /// Waits up to `timeout` for the exit; kills it after that.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        Err(format!("{} still running after {timeout:?}: killed\n{}", self.name, self.log_tail(60)))
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_key(path: &Path) -> Result<libp2p::PeerId, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = Keypair::generate_ed25519();
    let bytes = key.to_protobuf_encoding().map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, &bytes).map_err(|e| e.to_string())?;
    Ok(key.public().to_peer_id())
}

/// Runs one case: a fresh lab (A behind `a`, B behind `b`), the relay, B holding a reservation,
/// and A making `attempts` attempts to B over `transport`, each bounded by `attempt_timeout_secs`.
/// With `kaspa`, B also runs `sensor listen` (devnet, on its LAN address) and bridges
/// `/p2psensor/kaspa/1` to it, and A handshakes with it after every success
/// (`--kaspa-handshake`).
/// The lab and every process are gone when this returns, whatever happened. Errors carry the
/// processes' log tails and the lab's state.
pub fn run_case(
    work: &Path,
    a: NatType,
    b: NatType,
    transport: Transport,
    attempts: u32,
    attempt_timeout_secs: u64,
    kaspa: bool,
) -> Result<CaseResult, String> {
    let started = Instant::now();
    let dir = work.join(format!("{}-{}-{}", a.name(), b.name(), transport.name()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lab = NatLab::new(a, b)?;
    let result = run_in_lab(&lab, &dir, transport, attempts, attempt_timeout_secs, kaspa);
    let result = result.map_err(|e| format!("{e}\n== lab\n{}\n== conntrack\n{}", lab.describe(), lab.conntrack()));
    drop(lab);
    let attempts = result?;
    Ok(CaseResult { a, b, transport, attempts, elapsed: started.elapsed() })
}

fn run_in_lab(
    lab: &NatLab,
    dir: &Path,
    transport: Transport,
    attempts: u32,
    attempt_timeout_secs: u64,
    kaspa: bool,
) -> Result<Vec<Value>, String> {
    let relay_id = write_key(&dir.join("relay.key"))?;
    let b_id = write_key(&dir.join("b.key"))?;
    write_key(&dir.join("a.key"))?;
    let s = |v: &str| v.to_owned();
    let path = |p: &str| dir.join(p).display().to_string();
    let listen = |ip: &str, port: u16| format!("/ip4/{ip}/{}", transport.suffix(port));
    let relay_ip = RELAY_IP.to_string();
    let mut relay_args = vec![s("relay"), s("--identity"), path("relay.key")];
    for t in Transport::ALL {
        for port in [RELAY_PORT, RELAY_ALT_PORT] {
            relay_args.extend([s("--listen"), format!("/ip4/{relay_ip}/{}", t.suffix(port))]);
        }
        relay_args.extend([s("--external-address"), format!("/ip4/{relay_ip}/{}", t.suffix(RELAY_PORT))]);
    }
    relay_args.extend([s("--metrics-listen"), format!("{relay_ip}:9102"), s("--allow-private-targets")]);
    let mut relay = Sensor::spawn(dir, "relay", &lab.relay.ns, &relay_args, LAB_RELAY_RATES)?;
    relay.wait_for(SETUP_TIMEOUT, "\"relay ready\"", |_, log| log.contains("relay ready"))?;

    let relay_addr = format!("{}/p2p/{relay_id}", listen(&relay_ip, RELAY_PORT));
    let client = |name: &str| {
        vec![
            s("punch"),
            s("--relay"),
            relay_addr.clone(),
            s("--identity"),
            path(&format!("{name}.key")),
            s("--listen"),
            listen("0.0.0.0", CLIENT_PORT),
            s("--json"),
            s("--data-dir"),
            path(&format!("{name}-data")),
            s("--metrics-listen"),
            s("0.0.0.0:9103"),
        ]
    };
    let mut node = None;
    let mut holder_args = client("b");
    if kaspa {
        let p2p = format!("{}:{KASPA_PORT}", lab.b.ip);
        let args = [
            "listen",
            "--network",
            "devnet",
            "--listen",
            &p2p,
            "--data-dir",
            &path("b-node"),
            "--metrics-listen",
            &format!("{}:9104", lab.b.ip),
        ]
        .map(s);
        let mut listen = Sensor::spawn(dir, "b-node", &lab.b.ns, &args, &[])?;
        listen.wait_for(SETUP_TIMEOUT, "\"sensor ready\"", |_, log| log.contains("sensor ready"))?;
        node = Some(listen);
        holder_args.extend([s("--kaspa-bridge"), p2p]);
    }
    let mut holder = Sensor::spawn(dir, "b", &lab.b.ns, &holder_args, &[])?;
    let on_relay = |out: &str, _: &str| out.contains("\"event\":\"reservation\"");
    holder.wait_for(SETUP_TIMEOUT, "reservation", on_relay).map_err(|e| e + &relay.log_tail(30))?;

    let mut args = client("a");
    args.extend([
        s("--target"),
        b_id.to_string(),
        s("--attempts"),
        attempts.to_string(),
        s("--timeout-secs"),
        attempt_timeout_secs.to_string(),
    ]);
    if kaspa {
        args.extend([s("--kaspa-handshake"), s("--network"), s("devnet")]);
    }
    let mut dialer = Sensor::spawn(dir, "a", &lab.a.ns, &args, &[])?;
    // Set-up (≤ 10 s) plus every attempt, its disconnect (≤ 5 s) and a margin.
    let bound = Duration::from_secs(30 + u64::from(attempts) * (attempt_timeout_secs + 6));
    let logs = |dialer: &Sensor, holder: &Sensor, relay: &Sensor| {
        format!("{}{}{}", dialer.log_tail(60), holder.log_tail(30), relay.log_tail(20))
    };
    let status = dialer.wait_exit(bound).map_err(|e| e + &logs(&dialer, &holder, &relay))?;
    if !status.success() {
        return Err(format!("the dialer exited with {status}\n{}", logs(&dialer, &holder, &relay)));
    }
    let lines: Vec<Value> = dialer
        .stdout_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "attempt")
        .collect();
    if lines.len() != attempts as usize {
        return Err(format!("{} attempt lines, expected {attempts}\n{}", lines.len(), logs(&dialer, &holder, &relay)));
    }
    drop(node);
    Ok(lines)
}

/// `target/nat-matrix/` next to this test binary (`target/<profile>/deps/…`).
pub fn output_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"));
    target.join("nat-matrix")
}

/// Writes `results` as `<stem>.csv` and `<stem>.json` under [`output_dir`] and returns the
/// printed matrix (rows: A's NAT → B's NAT; success rate, time-to-direct p50/p95 per transport).
pub fn write_matrix(stem: &str, results: &[CaseResult]) -> Result<String, String> {
    let out = output_dir();
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut csv = String::from(
        "nat_a,nat_b,transport,attempts,successes,success_rate,ttd_first_ms,ttd_p50_ms,ttd_p95_ms,theory\n",
    );
    let mut json = Vec::new();
    let mut table = format!(
        "{:<12} {:<12} {:<5} {:>9} {:>8} {:>8} {:>8} {:>8}  theory\n",
        "A", "B", "tr", "success", "rate", "1st ms", "p50 ms", "p95 ms"
    );
    for r in results {
        let t = r.times_to_direct_ms();
        let (p50, p95) = (quantile(&t, 0.5), quantile(&t, 0.95));
        let fmt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let theory = expected(r.a, r.b, r.transport).name();
        let first = r.first_time_to_direct_ms();
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.3},{},{},{},{theory}",
            r.a.name(),
            r.b.name(),
            r.transport.name(),
            r.attempts.len(),
            r.successes(),
            r.success_rate(),
            fmt(first),
            fmt(p50),
            fmt(p95)
        );
        let _ = writeln!(
            table,
            "{:<12} {:<12} {:<5} {:>4}/{:<4} {:>7.1}% {:>8} {:>8} {:>8}  {theory}",
            r.a.name(),
            r.b.name(),
            r.transport.name(),
            r.successes(),
            r.attempts.len(),
            100.0 * r.success_rate(),
            fmt(first),
            fmt(p50),
            fmt(p95)
        );
        json.push(serde_json::json!({
            "nat_a": r.a.name(), "nat_b": r.b.name(), "transport": r.transport.name(),
            "attempts": r.attempts.len(), "successes": r.successes(), "success_rate": r.success_rate(),
            "time_to_direct_ms_p50": p50, "time_to_direct_ms_p95": p95, "theory": theory,
            "elapsed_s": r.elapsed.as_secs_f64(), "outcomes": r.attempts.iter().map(|a| a["outcome"].clone()).collect::<Vec<_>>(),
            "time_to_direct_ms_first": first,
            // Every attempt's JSON line as `sensor punch --json` printed it (errors, RTTs, …).
            "attempt_lines": r.attempts,
        }));
    }
    std::fs::write(out.join(format!("{stem}.csv")), csv).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(out.join(format!("{stem}.json")), json).map_err(|e| e.to_string())?;
    Ok(table)
}
