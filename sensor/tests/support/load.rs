//! A load driver for a real `sensor listen` process on loopback, shared by the `listen_load`
//! benchmark (`soak`, included with `#[path]`) and the `listen_soak` / `export_crash` tests.
//!
//! Every client is a raw Kaspa peer over kaspa-p2p-lib's generated tonic client
//! ([`WireConnection`]) bound to its own source address [`source`]`(i)` in 127.0.0.0/8, so the
//! sensor's per-IP limit (4) is never reached; the per-subnet limit (one /24 holds 250 sources) and
//! the inbound limit are raised by [`listen_env`]. Each peer advertises port 9 on its source
//! address, where nothing listens: with dial-backs on, every accepted peer costs the sensor a real
//! two-attempt probe that is refused (`private/refused`).
//!
//! What each connection must leave in the sensor's database (the listener's TCP side
//! `sensor/src/listen/transport.rs` accounts for every accepted TCP connection exactly once;
//! `connection.rs` records the handshake's outcome; `sensor/src/classify/mod.rs` the verdict):
//! * a TCP connection the sensor accepted → exactly **one connection event**: `accepted` when the
//!   sensor received our `Ready`, else `rejected/<reason>` (an admission limit at accept, a
//!   handshake timeout or failure, also when we vanish mid-handshake or never open a stream);
//! * every `accepted` → exactly **one verdict event** (the classifier never drops a peer: a full
//!   queue or a shutdown is a verdict too);
//! * a TCP connect that failed (the client's error says `tcp connect error`: refused, unreachable)
//!   → nothing: the listener never saw it.
//!
//! So "events stored = connections made" reads: connection events = connections that reached the
//! sensor (attempted − TCP connects that failed), verdicts = accepted = handshakes the clients
//! completed, and the total is their sum.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sensor::kaspa::{version::LocalVersion, wire::WireConnection};
use sensor::store::{EventCounts, Reader};
use sensor_core::connection::RejectReason;
use sensor_core::network::Network;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::sensor_process::{SensorProcess, Spawn, free_port};
use sensor_core::Label;

/// Bound of a client's TCP + HTTP/2 connect and stream open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of a client's Version/Verack/Ready.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of a short-lived client's polite close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Held peers opened at once. The sensor sheds handshakes past `listen.max_pending_handshakes`
/// (at most 32, kaspa-p2p-lib's cap), counted from its TCP accept until it has *received* our
/// `Ready`. A held peer's slot spans connect → handshake → the sensor's `RequestAddresses`
/// (sent right after it recorded the peer `accepted`), a short-lived one's connect → handshake
/// → close (which waits for the sensor to end its stream): each contains the sensor's pending
/// window, so fewer than 32 slots are never shed.
pub const HELD_AT_ONCE: usize = 16;
/// Short-lived connections in flight at once (same reasoning; 8 slots of margin).
pub const CHURN_IN_FLIGHT: usize = 24;
/// The port every client advertises in `Version.address`: discard, where nothing listens.
pub const ADVERTISED_PORT: u16 = 9;

/// The i-th client source address: 127.0.1.1, 127.0.1.2, … 250 per /24 (never .0 or .255),
/// 62,500 per 127.N.0.0/16; distinct for every `i` below 16 million.
pub fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, (i / 62_500) as u8, ((i / 250) % 250) as u8 + 1, (i % 250) as u8 + 1))
}

/// Raises this process's soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a pointer to a valid local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Memory and CPU of a process, from `/proc/PID/status` and `/proc/PID/stat` (zeros once gone).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size so far, KiB (`VmHWM`).
    pub hwm_kib: u64,
    /// User + system CPU time so far, seconds (`utime + stime` over `_SC_CLK_TCK`).
    pub cpu_secs: f64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ProcStats { rss_kib: kib("VmRSS:"), hwm_kib: kib("VmHWM:"), cpu_secs: ticks as f64 / hz }
}

/// `sensor listen` arguments: devnet, P2P on `p2p`, data in `data_dir`, and lab mode (dial-backs
/// to loopback sources) when `probe`.
pub fn listen_args(data_dir: &Path, p2p: SocketAddr, probe: bool) -> Vec<String> {
    let mut args: Vec<String> =
        ["listen", "--network", "devnet", "--listen", &p2p.to_string(), "--data-dir"].map(str::to_owned).to_vec();
    args.push(data_dir.to_str().expect("UTF-8 temp path").to_owned());
    if probe {
        args.push("--allow-private-targets".into());
    }
    args
}

/// Environment for a loaded sensor: inbound limit `max_inbound`, 1,024 peers per /24 (250
/// sources per /24 are used), short dial-backs (1 s attempts, 50 ms apart, 256 at once) so a
/// refused probe ends quickly, and `RequestAddresses` on. The per-IP limit stays at its default
/// (each client has its own IP).
pub fn listen_env(max_inbound: usize) -> Vec<(&'static str, String)> {
    vec![
        ("SENSOR_LISTEN_MAX_INBOUND_PEERS", max_inbound.to_string()),
        ("SENSOR_LISTEN_MAX_PEERS_PER_SUBNET", "1024".into()),
        ("SENSOR_CLASSIFY_PROBE_TIMEOUT_MS", "1000".into()),
        ("SENSOR_CLASSIFY_PROBE_RETRY_DELAY_MS", "50".into()),
        ("SENSOR_CLASSIFY_CONCURRENCY", "256".into()),
        // Held peers wait for this message before their slot frees ([`HELD_AT_ONCE`]).
        ("SENSOR_LISTEN_REQUEST_ADDRESSES", "true".into()),
    ]
}

/// Starts `sensor listen` (logs `NAME.out`/`NAME.log` in `dir`) on `p2p` (a free port when
/// `None`) and waits for `/readyz`. Returns the process and its P2P address.
pub async fn start_sensor(
    dir: &Path,
    name: &str,
    p2p: Option<SocketAddr>,
    probe: bool,
    env: &[(&str, String)],
) -> (SensorProcess, SocketAddr) {
    let p2p = p2p.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
    let args = listen_args(&dir.join("data"), p2p, probe);
    let mut sensor = SensorProcess::spawn(Spawn {
        dir,
        name,
        args: &args,
        env,
        metrics: true,
        rust_log: "warn",
        wait: Duration::from_secs(120),
    });
    sensor.wait_ready().await;
    (sensor, p2p)
}

/// The sum of every sample of `name` (any labels) in an OpenMetrics text; 0 when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| matches!(l.strip_prefix(name).and_then(|r| r.bytes().next()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Non-zero `sensor_inbound_rejections_total` by reason.
pub fn rejections(text: &str) -> Vec<(&'static str, u64)> {
    RejectReason::ALL
        .iter()
        .filter_map(|r| {
            let n = super::http::metric(text, "sensor_inbound_rejections_total", &[("reason", r.as_str())])?;
            (n > 0.0).then_some((r.as_str(), n as u64))
        })
        .collect()
}

/// What a set of client connections did.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub attempted: usize,
    /// Handshakes completed (the sensor's `Ready` received).
    pub completed: usize,
    /// TCP connects that failed, by error: the sensor cannot have recorded these.
    pub not_accepted: BTreeMap<String, usize>,
    /// Other failures (the TCP connection was accepted; the sensor's refusals included), by error.
    pub after_accept: BTreeMap<String, usize>,
    /// Source address and time of every completed handshake.
    pub completions: Vec<(IpAddr, Instant)>,
}

impl Tally {
    /// Connections whose stream reached the sensor: each must be one connection event.
    pub fn reached(&self) -> usize {
        self.attempted - self.not_accepted.values().sum::<usize>()
    }

    pub fn failed(&self) -> usize {
        self.attempted - self.completed
    }

    fn add(&mut self, source: IpAddr, result: Result<Instant, (bool, String)>) {
        self.attempted += 1;
        match result {
            Ok(at) => {
                self.completed += 1;
                self.completions.push((source, at));
            }
            Err((false, e)) => *self.not_accepted.entry(e).or_default() += 1,
            Err((true, e)) => *self.after_accept.entry(e).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.attempted += other.attempted;
        self.completed += other.completed;
        self.completions.extend(other.completions);
        for (mine, theirs) in
            [(&mut self.not_accepted, other.not_accepted), (&mut self.after_accept, other.after_accept)]
        {
            for (k, v) in theirs {
                *mine.entry(k).or_default() += v;
            }
        }
    }
}

/// Connects from `source` and completes the handshake. The error says whether the sensor's
/// listener accepted the TCP connection (`true`) and what failed.
async fn handshake(target: SocketAddr, source: IpAddr) -> Result<WireConnection, (bool, String)> {
    let address = Some(SocketAddr::new(source, ADVERTISED_PORT));
    let version = LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address };
    let opened = WireConnection::connect(target, Some(source), CONNECT_TIMEOUT).await;
    // hyper-util's connector says `tcp connect error` when connect(2) itself failed; anything
    // later (HTTP/2 setup, the stream call, a timeout) happened on an accepted connection.
    let mut conn = opened.map_err(|e| {
        let text = e.to_string();
        (!text.contains("tcp connect error"), text)
    })?;
    conn.handshake(version.message(), HANDSHAKE_TIMEOUT).await.map_err(|e| (true, e.to_string()))?;
    Ok(conn)
}

/// Waits (≤ [`HANDSHAKE_TIMEOUT`]) for the sensor's first message after the handshake — its one
/// `RequestAddresses`, sent once it has recorded the peer `accepted` — and answers it.
async fn await_accepted(mut conn: WireConnection) -> Result<WireConnection, (bool, String)> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv()).await {
        Ok(Ok(Some(payload))) => {
            if let Some(reply) = sensor::kaspa::flows::keep_alive_reply(payload, &[]) {
                conn.send(reply).await.map_err(|e| (true, e.to_string()))?;
            }
            Ok(conn)
        }
        Ok(Ok(None)) => Err((true, "stream closed right after the handshake".into())),
        Ok(Err(e)) => Err((true, e.to_string())),
        Err(_) => Err((true, "no message from the sensor after the handshake".into())),
    }
}

/// Opens `count` kept-alive peers from sources `first..first + count`, [`HELD_AT_ONCE`] at a
/// time. Returns the tally and the serving tasks (a finished task = a peer the sensor closed).
pub async fn open_held(target: SocketAddr, first: usize, count: usize) -> (Tally, Vec<JoinHandle<()>>) {
    let permits = Arc::new(Semaphore::new(HELD_AT_ONCE));
    let mut tasks = JoinSet::new();
    for i in first..first + count {
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        tasks.spawn(async move {
            let src = source(i);
            let result = match handshake(target, src).await {
                Ok(conn) => await_accepted(conn).await,
                Err(e) => Err(e),
            };
            drop(permit);
            (src, result.map(|conn| (Instant::now(), tokio::spawn(async move { drop(conn.serve().await) }))))
        });
    }
    let mut tally = Tally::default();
    let mut held = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (src, result) = joined.expect("client task panicked");
        tally.add(
            src,
            result.map(|(at, task)| {
                held.push(task);
                at
            }),
        );
    }
    (tally, held)
}

/// A paced stream of short-lived connections: each connects, handshakes and closes politely.
#[derive(Debug, Clone)]
pub struct ChurnPlan {
    pub target: SocketAddr,
    /// New connections per second (the schedule: connection k starts at k / rate).
    pub rate: u32,
    /// How long new connections are started; the ones in flight are then waited for.
    pub duration: Duration,
    /// Source index of the first connection (connection k uses `source(first_source + k)`).
    pub first_source: usize,
    /// Connections in flight at most; when all are busy the schedule slips (and it shows).
    pub in_flight: usize,
}

#[derive(Debug, Default)]
pub struct ChurnResult {
    pub tally: Tally,
    /// From the first start to the end of the schedule (not including the wait for the last).
    pub elapsed: Duration,
    /// Latest start behind schedule.
    pub max_lag: Duration,
}

impl ChurnResult {
    /// Connections started per second.
    pub fn achieved_rate(&self) -> f64 {
        self.tally.attempted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `plan` (see [`ChurnPlan`]): paced by a tokio interval (missed ticks burst to catch up, so
/// a slow start is made up while the in-flight cap allows; [`ChurnResult::achieved_rate`] is what
/// happened). Bounded: no start after `plan.duration`, each connection by its own timeouts.
pub async fn churn(plan: ChurnPlan) -> ChurnResult {
    let period = Duration::from_secs_f64(1.0 / f64::from(plan.rate.max(1)));
    let permits = Arc::new(Semaphore::new(plan.in_flight.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = tokio::time::Instant::now();
    let end = started + plan.duration;
    let mut tasks = JoinSet::new();
    let mut result = ChurnResult::default();
    let mut k = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(end) => break,
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
            _ = tokio::time::sleep_until(end) => break,
        };
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        result.max_lag = result.max_lag.max(now.saturating_duration_since(started + period * k as u32));
        let (target, src) = (plan.target, source(plan.first_source + k));
        tasks.spawn(async move {
            let result = match handshake(target, src).await {
                Ok(conn) => {
                    let at = Instant::now();
                    conn.close(CLOSE_TIMEOUT).await;
                    Ok(at)
                }
                Err(e) => Err(e),
            };
            drop(permit);
            (src, result)
        });
        k += 1;
        while let Some(joined) = tasks.try_join_next() {
            let (src, r) = joined.expect("client task panicked");
            result.tally.add(src, r);
        }
    }
    result.elapsed = started.elapsed();
    while let Some(joined) = tasks.join_next().await {
        let (src, r) = joined.expect("client task panicked");
        result.tally.add(src, r);
    }
    result
}

/// The soak run: `held` kept-alive peers, then `rate` new short-lived connections per second for
/// `secs` seconds while they stay.
#[derive(Debug, Clone, Copy)]
pub struct SoakPlan {
    pub held: usize,
    pub rate: u32,
    pub secs: u64,
    /// Dial-backs on (lab mode): every accepted peer is probed.
    pub probe: bool,
}

/// Everything a soak run measured. [`SoakReport::differences`] compares the stored events with
/// the connections made (module docs).
#[derive(Debug, Default)]
pub struct SoakReport {
    pub held: Tally,
    pub held_took: Duration,
    pub churn: ChurnResult,
    /// Client-side held peers whose stream was still open after the churn.
    pub held_alive: usize,
    /// `sensor_connections_active` after the churn settled.
    pub connections_active: u64,
    pub rejections: Vec<(&'static str, u64)>,
    /// `sensor_storage_errors_total`, all kinds.
    pub storage_errors: u64,
    pub stored: EventCounts,
    /// After `/readyz`, with the held peers, after the churn (before the stop).
    pub stats: [ProcStats; 3],
    pub alive_before_stop: bool,
    /// The exit status of the graceful stop (SIGTERM).
    pub exit: String,
    pub exit_ok: bool,
    /// Lines of the sensor's stderr that mention a panic.
    pub panics: Vec<String>,
}

impl SoakReport {
    /// Both phases together.
    pub fn connections(&self) -> Tally {
        let mut all = self.held.clone();
        all.merge(self.churn.tally.clone());
        all
    }

    /// Each way the stored events differ from the connections made, with its likely cause;
    /// empty when they match.
    pub fn differences(&self) -> Vec<String> {
        let c = self.connections();
        let s = &self.stored;
        let mut out = Vec::new();
        let causes = format!(
            "(client failures on accepted connections: {:?}; storage errors: {}; rejections: {:?})",
            c.after_accept, self.storage_errors, self.rejections
        );
        if s.accepted != c.completed as u64 {
            out.push(format!("accepted events {} != handshakes completed {} {causes}", s.accepted, c.completed));
        }
        if s.accepted + s.rejected != c.reached() as u64 {
            out.push(format!(
                "connection events {} (accepted {} + rejected {}) != connections that reached the sensor {} {causes}",
                s.accepted + s.rejected,
                s.accepted,
                s.rejected,
                c.reached()
            ));
        }
        if s.verdicts != s.accepted {
            out.push(format!("verdict events {} != accepted events {} {causes}", s.verdicts, s.accepted));
        }
        let metric_rejections: u64 = self.rejections.iter().map(|(_, n)| n).sum();
        if s.rejected != metric_rejections {
            out.push(format!("rejected events {} != sensor_inbound_rejections_total {metric_rejections}", s.rejected));
        }
        out
    }

    /// Prints every figure, one `soak:` line each.
    pub fn print(&self, plan: &SoakPlan) {
        let c = self.connections();
        let mib = |k: u64| k as f64 / 1024.0;
        println!("soak: plan held={} rate={}/s secs={} probes={}", plan.held, plan.rate, plan.secs, plan.probe);
        println!(
            "soak: held peers: {} of {} handshaken in {:.1} s; still connected after the churn: {} (sensor_connections_active {})",
            self.held.completed,
            self.held.attempted,
            self.held_took.as_secs_f64(),
            self.held_alive,
            self.connections_active
        );
        let ch = &self.churn;
        println!(
            "soak: short-lived: {} started in {:.1} s = {:.0}/s (target {}/s, latest start {:.0} ms behind schedule), {} handshakes completed",
            ch.tally.attempted,
            ch.elapsed.as_secs_f64(),
            ch.achieved_rate(),
            plan.rate,
            ch.max_lag.as_secs_f64() * 1000.0,
            ch.tally.completed
        );
        println!(
            "soak: connections attempted {} / handshakes completed {} / failed {} (TCP connect failed: {:?}; after accept: {:?})",
            c.attempted,
            c.completed,
            c.failed(),
            c.not_accepted,
            c.after_accept
        );
        println!("soak: refused by the sensor (sensor_inbound_rejections_total): {:?}", self.rejections);
        let s = &self.stored;
        println!(
            "soak: events stored {}: connection/accepted {}, connection/rejected {} {:?}, verdict {} {:?}; storage errors {}",
            s.total,
            s.accepted,
            s.rejected,
            s.rejected_by_reason,
            s.verdicts,
            s.verdicts_by_classification,
            self.storage_errors
        );
        let diffs = self.differences();
        println!(
            "soak: events stored = connections made: {} (connection events {} = reached {}; verdicts {} = accepted {} = completed {})",
            if diffs.is_empty() { "YES" } else { "NO" },
            s.accepted + s.rejected,
            c.reached(),
            s.verdicts,
            s.accepted,
            c.completed
        );
        for d in diffs {
            println!("soak:   difference: {d}");
        }
        let [start, held, end] = self.stats;
        println!(
            "soak: sensor RSS start {:.1} MiB, with held peers {:.1} MiB, peak (VmHWM) {:.1} MiB, end {:.1} MiB",
            mib(start.rss_kib),
            mib(held.rss_kib),
            mib(end.hwm_kib),
            mib(end.rss_kib)
        );
        println!(
            "soak: sensor CPU {:.1} s (user+system) over the run, {:.1} s during the churn",
            end.cpu_secs - start.cpu_secs,
            end.cpu_secs - held.cpu_secs
        );
        println!(
            "soak: sensor alive before the stop: {}; graceful stop: {}; panics in stderr: {}",
            self.alive_before_stop,
            self.exit,
            self.panics.len()
        );
        for p in &self.panics {
            println!("soak:   {p}");
        }
    }
}

/// Polls `ok` on `/metrics` every 100 ms until it holds, `limit` passes or the process exits;
/// returns the last text (empty when `/metrics` did not answer).
async fn wait_metrics(sensor: &mut SensorProcess, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = match super::sensor_process::get(sensor.metrics, "/metrics").await {
            Ok((200, body)) => body,
            _ => String::new(),
        };
        if ok(&text) || Instant::now() >= deadline || sensor.try_exit().is_some() {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the soak (see [`SoakPlan`]) against a new `sensor listen` whose files go to `dir`:
/// held peers, churn, settle (every verdict stored, short-lived peers gone: ≤ 60 s), figures,
/// graceful stop (SIGTERM), then the database is read. Asserts nothing; the caller judges.
pub async fn soak(dir: &Path, plan: &SoakPlan) -> SoakReport {
    raise_fd_limit();
    let env = listen_env(plan.held + 1000);
    let (mut sensor, p2p) = start_sensor(dir, "sensor", None, plan.probe, &env).await;
    let pid = sensor.pid();
    let mut report = SoakReport::default();
    report.stats[0] = proc_stats(pid);

    let started = Instant::now();
    let (held, held_tasks) = open_held(p2p, 0, plan.held).await;
    report.held_took = started.elapsed();
    let want = held.completed as f64;
    wait_metrics(&mut sensor, Duration::from_secs(60), |t| metric_sum(t, "sensor_connections_active") >= want).await;
    report.held = held;
    report.stats[1] = proc_stats(pid);

    report.churn = churn(ChurnPlan {
        target: p2p,
        rate: plan.rate,
        duration: Duration::from_secs(plan.secs),
        first_source: plan.held,
        in_flight: CHURN_IN_FLIGHT,
    })
    .await;

    // Settle: every accepted peer has its verdict, nothing waits for the writer, only the held
    // peers remain.
    let text = wait_metrics(&mut sensor, Duration::from_secs(60), |t| {
        let accepted = super::http::metric(t, "sensor_connections_total", &[("result", "accepted")]).unwrap_or(0.0);
        metric_sum(t, "sensor_verdicts_total") >= accepted
            && metric_sum(t, "sensor_storage_queue_depth") == 0.0
            && metric_sum(t, "sensor_connections_active") <= want
    })
    .await;
    report.connections_active = metric_sum(&text, "sensor_connections_active") as u64;
    report.rejections = rejections(&text);
    report.storage_errors = metric_sum(&text, "sensor_storage_errors_total") as u64;
    report.held_alive = held_tasks.iter().filter(|t| !t.is_finished()).count();
    report.stats[2] = proc_stats(pid);
    let status = match sensor.try_exit() {
        None => {
            report.alive_before_stop = true;
            sensor.terminate().await
        }
        Some(status) => status,
    };
    report.exit_ok = status.success();
    report.exit = status.to_string();
    report.panics = sensor.log_text().lines().filter(|l| l.contains("panicked")).map(str::to_owned).collect();
    for task in held_tasks {
        task.abort();
    }
    let db = dir.join("data").join("sensor.sqlite");
    report.stored =
        Reader::open(&db).and_then(|r| r.event_counts()).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    report
}
