//! The real `sensor` binary as a child process on loopback, for the libp2p tests (relay, punch):
//! stdout and stderr in their own files under the test's directory, `--metrics-listen` on a free
//! port, the caller's `SENSOR_*` variables removed, and bounded async waits on `/readyz`, stdout
//! lines, `/metrics` and exit. Killed on drop. (Processes inside network namespaces use
//! [`super::process::NsProcess`] instead.)

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use libp2p::{PeerId, identity::Keypair};
use serde_json::Value;

/// How a [`SensorProcess`] is started.
pub struct Spawn<'a> {
    /// Directory of the stdout/log files and the working directory of the process.
    pub dir: &'a Path,
    /// Names the files (`NAME.out`, `NAME.log`) and the process in failure messages.
    pub name: &'a str,
    /// Arguments after the binary, subcommand first.
    pub args: &'a [String],
    /// Extra environment.
    pub env: &'a [(&'a str, String)],
    /// Adds `--metrics-listen 127.0.0.1:<free port>`.
    pub metrics: bool,
    /// `RUST_LOG` of the process.
    pub rust_log: &'a str,
    /// Bound of every wait on this process.
    pub wait: Duration,
}

pub struct SensorProcess {
    name: String,
    child: Child,
    stdout: PathBuf,
    log: PathBuf,
    /// The `--metrics-listen` address (port 0 when the process was started without one).
    pub metrics: SocketAddr,
    wait: Duration,
}

impl SensorProcess {
    /// Starts the process (panics when it cannot be spawned: a broken test setup).
    pub fn spawn(s: Spawn<'_>) -> SensorProcess {
        let stdout = s.dir.join(format!("{}.out", s.name));
        let log = s.dir.join(format!("{}.log", s.name));
        let metrics = SocketAddr::from(([127, 0, 0, 1], if s.metrics { free_port() } else { 0 }));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sensor"));
        cmd.args(s.args).current_dir(s.dir);
        if s.metrics {
            cmd.args(["--metrics-listen", &metrics.to_string()]);
        }
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SENSOR_")) {
            cmd.env_remove(key);
        }
        cmd.env("RUST_LOG", s.rust_log).env("NO_COLOR", "1");
        for (key, value) in s.env {
            cmd.env(key, value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: spawn: {e}", s.name));
        SensorProcess { name: s.name.to_owned(), child, stdout, log, metrics, wait: s.wait }
    }

    /// The log (stderr) so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Stdout's lines, each parsed as JSON (panics on a line that is not: `--json` prints only
    /// JSON objects).
    pub fn lines(&self) -> Vec<Value> {
        self.stdout_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not JSON: {l:?}: {e}", self.name)))
            .collect()
    }

    /// The process id (for `/proc/PID/*` figures and signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (polling every 100 ms, bounded) until `/readyz` answers 200; panics with the log
    /// when the process exits first or the bound passes.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Ok((200, _)) = get(self.metrics, "/readyz").await {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!("{} exited during start-up ({status}):\n{}", self.name, self.log_text());
            }
            assert!(Instant::now() < deadline, "{} not ready within {:?}:\n{}", self.name, self.wait, self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until stdout has `n` lines; returns them parsed.
    pub async fn wait_lines(&mut self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + self.wait;
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            if let Some(status) = self.try_exit() {
                panic!("{} exited ({status}) after {} lines:\n{}", self.name, lines.len(), self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{}: {n} lines not printed within {:?}:\n{}",
                self.name,
                self.wait,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {:?}:\n{}",
                self.name,
                self.wait,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then [`Self::wait_exit`].
    pub async fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child, not yet reaped (so the pid is not reused).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        self.wait_exit().await
    }

    /// `GET /metrics` (panics unless 200).
    pub async fn metrics_text(&self) -> String {
        match get(self.metrics, "/metrics").await {
            Ok((200, body)) => body,
            other => panic!("{}: GET /metrics: {other:?}", self.name),
        }
    }

    /// Polls `/metrics` (every 100 ms, bounded) until every line of `want` is present.
    pub async fn wait_metrics(&self, want: &[&str]) -> String {
        let deadline = Instant::now() + self.wait;
        loop {
            let text = self.metrics_text().await;
            if want.iter().all(|line| text.lines().any(|l| l == *line)) {
                return text;
            }
            assert!(Instant::now() < deadline, "{}: metrics never showed {want:?}:\n{text}", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both TCP and UDP on 127.0.0.1 (a libp2p node's TCP and QUIC listeners),
/// from 20000..32000: below Linux's ephemeral range (32768..60999 by default), so no outbound
/// connection of a parallel test can take it as its source port between this check and the
/// sensor's bind. (One did: a punch client's port-reusing dial from its listen port then failed
/// with `EADDRINUSE` for a whole test.) Candidates start at a per-process offset and step
/// through the range, at most 2,000 tries.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let offset = std::process::id().wrapping_mul(7_919);
    for _ in 0..2_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + offset.wrapping_add(n.wrapping_mul(97)) % SPAN) as u16;
        let Ok(_tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) else { continue };
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port in 20000..32000 free for both TCP and UDP");
}

/// `GET path` → (status, body), off the async runtime, bounded at 10 s.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || super::http::get(addr, &path, Duration::from_secs(10)))
        .await
        .map_err(|e| e.to_string())?
}

/// The value of one series (`name{labels}` exactly as printed) in an OpenMetrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Writes a new Ed25519 keypair (protobuf-encoded, as `--identity` reads it); returns its PeerId.
pub fn write_key(path: &Path) -> PeerId {
    let key = Keypair::generate_ed25519();
    std::fs::write(path, key.to_protobuf_encoding().unwrap()).unwrap();
    key.public().to_peer_id()
}

/// The PeerId of the keypair in `file` (e.g. written by the relay).
pub fn peer_id_of(file: &Path) -> PeerId {
    let bytes = std::fs::read(file).unwrap();
    Keypair::from_protobuf_encoding(&bytes).unwrap().public().to_peer_id()
}
