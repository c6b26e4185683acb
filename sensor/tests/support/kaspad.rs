//! Real kaspad 2.1.0 nodes inside lab namespaces.
//!
//! Facts (kaspad 2.1.0 source and runs here): `--connect=ADDR` makes kaspad dial ADDR but also
//! sets its inbound limit and outbound target to 0 (so it would drop a dial-back within 30 s);
//! `--addpeer=ADDR` dials ADDR as a permanent peer (retries after 30 s · 2^attempts, at most
//! 480 s) and keeps normal inbound service — the lab uses `--addpeer`. All flags with values
//! need `=` (`require_equals`).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::netns::Host;
use super::process::NsProcess;

pub const KASPAD_VERSION: &str = "2.1.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    Devnet,
    Simnet,
}

impl Net {
    pub fn flag(self) -> &'static str {
        match self {
            Net::Devnet => "--devnet",
            Net::Simnet => "--simnet",
        }
    }

    /// Default P2P port (docs/kaspa-protocol.md).
    pub fn p2p_port(self) -> u16 {
        match self {
            Net::Devnet => 16611,
            Net::Simnet => 16511,
        }
    }
}

/// Finds kaspad 2.1.0: `$KASPAD_BIN`, then `PATH`, then `~/.cargo/bin/kaspad`.
pub fn find_kaspad() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("KASPAD_BIN") {
        candidates.push(p.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("kaspad")));
    }
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/kaspad"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/kaspad"));
    }
    let mut seen = Vec::new();
    for c in candidates.into_iter().filter(|c| c.is_file()) {
        let out = std::process::Command::new(&c).arg("--version").output();
        let version = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        if version.split_whitespace().any(|w| w == KASPAD_VERSION) {
            return Ok(c);
        }
        seen.push(format!("{} ({version})", c.display()));
    }
    Err(format!(
        "kaspad {KASPAD_VERSION} not found (seen: {seen:?}); install it with scripts/install-prereqs.sh \
         (cargo install kaspad --version {KASPAD_VERSION} --locked)"
    ))
}

pub struct KaspadSpec {
    pub net: Net,
    /// P2P listen address (an address of the host's namespace).
    pub listen: SocketAddrV4,
    /// Peers to dial (`--addpeer`, permanent).
    pub add_peers: Vec<SocketAddr>,
    /// `--loglevel=…`, e.g. `info,kaspa_p2p_flows::v10::ping=debug` (the ping flow logs
    /// "Successful ping with peer IP:PORT" at debug once a Pong with the right nonce arrived).
    pub log_level: Option<String>,
}

pub struct Kaspad {
    pub process: NsProcess,
    pub listen: SocketAddrV4,
    pub appdir: PathBuf,
}

impl Kaspad {
    /// Starts kaspad in `host`'s namespace with its app dir and log under `dir`.
    pub fn spawn(bin: &Path, name: &str, host: &Host, dir: &Path, spec: &KaspadSpec) -> Result<Self, String> {
        let appdir = dir.join(format!("{name}-appdir"));
        std::fs::create_dir_all(&appdir).map_err(|e| format!("{name}: {e}"))?;
        let ip = spec.listen.ip();
        let p2p = spec.listen.port();
        // RPC ports next to the P2P port's network defaults (devnet 16610/17610, simnet 16510/17510).
        let rpc = p2p - 1;
        let borsh = p2p + 999;
        let mut args = vec![
            spec.net.flag().to_string(),
            format!("--appdir={}", appdir.display()),
            "--nologfiles".into(),
            "--nodnsseed".into(),
            "--disable-upnp".into(),
            "--yes".into(),
            format!("--listen={ip}:{p2p}"),
            format!("--rpclisten={ip}:{rpc}"),
            format!("--rpclisten-borsh={ip}:{borsh}"),
        ];
        if let Some(level) = &spec.log_level {
            args.push(format!("--loglevel={level}"));
        }
        args.extend(spec.add_peers.iter().map(|p| format!("--addpeer={p}")));
        let log = dir.join(format!("{name}.log"));
        let process = NsProcess::spawn(name, &host.ns, bin, &args, &[], &log)?;
        Ok(Self { process, listen: spec.listen, appdir })
    }

    /// Waits until the P2P port accepts connections, probing from `from` (any lab namespace
    /// that can reach it; the node's own host always can).
    pub fn wait_listening(&mut self, from: &Host, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.process.is_running() {
                let report = self.process.report(40);
                return Err(format!("{} exited before listening\n{report}", self.process.name()));
            }
            if from.tcp_connects(SocketAddr::V4(self.listen), 2) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let report = self.process.report(40);
        Err(format!("{} not listening on {} within {timeout:?}\n{report}", self.process.name(), self.listen))
    }

    /// Waits until the log contains `needle` (bounded).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.process.log_text().contains(needle) {
                return Ok(());
            }
            if !self.process.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let report = self.process.report(40);
        Err(format!("{}: {needle:?} not logged within {timeout:?}\n{report}", self.process.name()))
    }
}
