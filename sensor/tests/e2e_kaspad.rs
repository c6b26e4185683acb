//! End-to-end: the sensor binary against real kaspad 2.1.0 nodes in a network-namespace lab.
//! Needs root, `ip`/`nft` and kaspad 2.1.0; `scripts/test.sh` installs them and runs these
//! `#[ignore]`d tests.

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::ensure;
use support::http;
use support::kaspad::{self, Kaspad, KaspadSpec, Net};
use support::netns::{self, Lab, ROOT_IP};
use support::process::NsProcess;

/// The lab itself: the root namespace reaches public hosts, a NAT'd host reaches public hosts
/// from its router's WAN address, and unsolicited inbound to the router is silently dropped.
#[test]
#[ignore = "needs root and network namespaces; run by scripts/test.sh"]
fn lab_smoke() {
    let mut lab = Lab::new().expect("lab");
    let public = lab.add_host("pub", Ipv4Addr::new(198, 51, 100, 41)).expect("public host");
    let site = lab.add_nat_site("nat1", Ipv4Addr::new(198, 51, 100, 21), 1).expect("nat site");
    let port = 7000;

    let pub_listener =
        netns::in_ns(&public.ns, || TcpListener::bind((public.ip, port))).expect("setns").expect("bind in public host");
    let lan_listener = netns::in_ns(&site.host.ns, || TcpListener::bind((site.host.ip, port)))
        .expect("setns")
        .expect("bind in private host");
    pub_listener.set_nonblocking(false).unwrap();

    // Root namespace → public host.
    let pub_addr = SocketAddr::from((public.ip, port));
    let c = TcpStream::connect_timeout(&pub_addr, Duration::from_secs(3)).expect("root reaches the public host");
    let (_s, from) = pub_listener.accept().unwrap();
    assert_eq!(from.ip(), ROOT_IP, "root connects from 198.51.100.1");
    drop(c);

    // Private host → public host, masqueraded to the router's WAN address.
    let c = netns::in_ns(&site.host.ns, || TcpStream::connect_timeout(&pub_addr, Duration::from_secs(3)))
        .unwrap()
        .expect("private host reaches the public host through NAT");
    let (_s, from) = pub_listener.accept().unwrap();
    assert_eq!(from.ip(), site.router.ip, "NAT'd connection arrives from the router's WAN address");
    drop(c);

    // Public host → router WAN: new inbound is dropped silently (a timeout, not a refusal).
    let wan = SocketAddr::from((site.router.ip, port));
    let err = netns::in_ns(&public.ns, || TcpStream::connect_timeout(&wan, Duration::from_secs(2)))
        .unwrap()
        .expect_err("unsolicited inbound must not connect");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "dropped, not refused: {err}");
    assert!(!public.tcp_connects(wan, 2), "bash /dev/tcp agrees");
    assert!(site.host.tcp_connects(pub_addr, 2), "bash /dev/tcp from the private host");
    let _ = pub_listener.accept();
    drop(lan_listener);

    let id = lab.id().to_string();
    drop(lab);
    let left: Vec<String> = netns::list_netns().into_iter().filter(|n| n.starts_with(&id)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

// ------------------------------------------------------------------------------------------
// The sensor against real kaspad nodes.
// ------------------------------------------------------------------------------------------

const SENSOR_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const SENSOR_P2P: u16 = 16611;
const SENSOR_METRICS: u16 = 9102;
const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 41);
const NAT_WAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);
const SIMNET_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 43);
/// How long the kaspad peers must stay connected: past kaspad's first ping (120 s).
const STAY_CONNECTED: Duration = Duration::from_secs(135);
/// kaspad's ping flow logs each answered ping at debug.
const KASPAD_LOG_LEVEL: &str = "info,kaspa_p2p_flows::v10::ping=debug";

/// Everything the scenario owns. Field order is drop order: processes first, then the lab (which
/// kills anything left in its namespaces and deletes them), then the temp dir.
struct Ctx {
    sensor: Option<NsProcess>,
    kaspads: Vec<Kaspad>,
    lab: Option<Lab>,
    last_metrics: String,
    db_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Ctx {
    fn metrics_addr() -> SocketAddr {
        SocketAddr::from((SENSOR_IP, SENSOR_METRICS))
    }

    fn sensor(&mut self) -> &mut NsProcess {
        self.sensor.as_mut().expect("sensor started")
    }

    /// GET /metrics (kept for the failure report).
    fn metrics(&mut self) -> Result<String, String> {
        let (status, body) = http::get(Self::metrics_addr(), "/metrics", Duration::from_secs(5))?;
        if status != 200 {
            return Err(format!("GET /metrics: status {status}: {body}"));
        }
        self.last_metrics = body.clone();
        Ok(body)
    }

    /// Fails when the sensor has exited.
    fn sensor_alive(&mut self) -> Result<(), String> {
        match self.sensor().try_status() {
            None => Ok(()),
            Some(status) => Err(format!("the sensor exited unexpectedly: {status}")),
        }
    }

    fn report(&mut self) {
        eprintln!("\n========== e2e failure report (temp dir {}) ==========", self.dir.path().display());
        if let Some(s) = self.sensor.as_mut() {
            eprintln!("{}", s.report(120));
        }
        for k in &mut self.kaspads {
            eprintln!("{}", k.process.report(40));
        }
        if let Some(lab) = &self.lab {
            eprintln!("----- lab -----\n{}", lab.describe());
        }
        match read_db(&self.db_path) {
            Ok(db) => eprintln!("----- database {} -----\n{}", self.db_path.display(), db.dump()),
            Err(e) => eprintln!("----- database {}: {e}", self.db_path.display()),
        }
        let interesting: Vec<&str> =
            self.last_metrics.lines().filter(|l| l.starts_with("sensor_") && !l.ends_with(" 0")).collect();
        eprintln!("----- last /metrics (non-zero samples) -----\n{}", interesting.join("\n"));
        eprintln!("========== end of e2e failure report ==========\n");
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
            if std::env::var_os("SENSOR_E2E_KEEP").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!("[e2e] SENSOR_E2E_KEEP set: keeping {}", self.dir.path().display());
            }
        }
    }
}

/// One row of the `events` table (the columns the test looks at).
#[derive(Debug, Clone)]
struct EventRow {
    kind: String,
    result: Option<String>,
    direction: Option<String>,
    peer_ip: Option<String>,
    network: Option<String>,
    user_agent: Option<String>,
    protocol_version: Option<i64>,
    classification: Option<String>,
    reason: Option<String>,
    probe_target: Option<String>,
    probe_attempts: Option<i64>,
    probe_duration_ms: Option<i64>,
}

/// One row of the `peers` table.
#[derive(Debug, Clone)]
struct PeerRow {
    peer_id: String,
    last_ip: Option<String>,
    user_agent: Option<String>,
    protocol_version: Option<i64>,
    network: Option<String>,
    connections: Option<i64>,
    classification: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Default)]
struct Db {
    events: Vec<EventRow>,
    peers: Vec<PeerRow>,
}

impl Db {
    fn verdicts(&self, ip: Ipv4Addr) -> impl Iterator<Item = &EventRow> {
        let ip = ip.to_string();
        self.events.iter().filter(move |e| e.kind == "verdict" && e.peer_ip.as_deref() == Some(ip.as_str()))
    }

    fn connections(&self, ip: Ipv4Addr, result: &str) -> impl Iterator<Item = &EventRow> {
        let ip = ip.to_string();
        let result = result.to_string();
        self.events.iter().filter(move |e| {
            e.kind == "connection"
                && e.result.as_deref() == Some(result.as_str())
                && e.direction.as_deref() == Some("inbound")
                && e.peer_ip.as_deref() == Some(ip.as_str())
        })
    }

    fn accepted(&self, ip: Ipv4Addr) -> usize {
        self.connections(ip, "accepted").count()
    }

    fn peer(&self, ip: Ipv4Addr) -> Vec<&PeerRow> {
        let ip = ip.to_string();
        self.peers.iter().filter(|p| p.last_ip.as_deref() == Some(ip.as_str())).collect()
    }

    fn dump(&self) -> String {
        let mut out = format!("{} events, {} peers\n", self.events.len(), self.peers.len());
        for e in &self.events {
            out.push_str(&format!("  event {e:?}\n"));
        }
        for p in &self.peers {
            out.push_str(&format!("  peer {p:?}\n"));
        }
        out
    }

    /// `None` when everything the scenario waits for is stored, else what is still missing.
    fn missing(&self) -> Option<String> {
        let mut missing = Vec::new();
        let public_ok = self.verdicts(PUBLIC_IP).any(|e| {
            e.classification.as_deref() == Some("public")
                && matches!(e.reason.as_deref(), Some("handshake_verified" | "version_verified"))
        });
        if !public_ok {
            missing.push(format!("verdict public (handshake_verified|version_verified) for {PUBLIC_IP}"));
        }
        let private_ok = self
            .verdicts(NAT_WAN_IP)
            .any(|e| e.classification.as_deref() == Some("private") && e.reason.as_deref() == Some("timeout"));
        if !private_ok {
            missing.push(format!("verdict private/timeout for {NAT_WAN_IP}"));
        }
        let wrong_network_ok = self
            .connections(SIMNET_IP, "rejected")
            .any(|e| e.reason.as_deref() == Some("wrong_network") && e.network.as_deref() == Some("kaspa-simnet"));
        if !wrong_network_ok {
            missing.push(format!("connection rejected/wrong_network (network kaspa-simnet) from {SIMNET_IP}"));
        }
        for (ip, class) in [(PUBLIC_IP, "public"), (NAT_WAN_IP, "private")] {
            if !self.peer(ip).iter().any(|p| p.classification.as_deref() == Some(class)) {
                missing.push(format!("peers row for {ip} classified {class}"));
            }
        }
        if missing.is_empty() { None } else { Some(missing.join("; ")) }
    }
}

fn open_db(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(2))?;
    Ok(conn)
}

/// Reads both tables read-only while the sensor writes (WAL). Retries SQLITE_BUSY a few times.
fn read_db(path: &Path) -> Result<Db, String> {
    if !path.exists() {
        return Err(format!("{} does not exist (yet)", path.display()));
    }
    let mut last = String::new();
    for _ in 0..5 {
        match read_db_once(path) {
            Ok(db) => return Ok(db),
            Err(e) => {
                let busy = matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                );
                last = e.to_string();
                if !busy {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Err(format!("read {}: {last}", path.display()))
}

fn read_db_once(path: &Path) -> rusqlite::Result<Db> {
    let conn = open_db(path)?;
    let mut db = Db::default();
    let mut stmt = conn.prepare(
        "SELECT kind, result, direction, peer_ip, network, user_agent, protocol_version, classification, \
         reason, probe_target, probe_attempts, probe_duration_ms FROM events ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(EventRow {
            kind: r.get(0)?,
            result: r.get(1)?,
            direction: r.get(2)?,
            peer_ip: r.get(3)?,
            network: r.get(4)?,
            user_agent: r.get(5)?,
            protocol_version: r.get(6)?,
            classification: r.get(7)?,
            reason: r.get(8)?,
            probe_target: r.get(9)?,
            probe_attempts: r.get(10)?,
            probe_duration_ms: r.get(11)?,
        })
    })?;
    for row in rows {
        db.events.push(row?);
    }
    let mut stmt = conn.prepare(
        "SELECT peer_id, last_ip, user_agent, protocol_version, network, connections, classification, reason \
         FROM peers ORDER BY first_seen",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PeerRow {
            peer_id: r.get(0)?,
            last_ip: r.get(1)?,
            user_agent: r.get(2)?,
            protocol_version: r.get(3)?,
            network: r.get(4)?,
            connections: r.get(5)?,
            classification: r.get(6)?,
            reason: r.get(7)?,
        })
    })?;
    for row in rows {
        db.peers.push(row?);
    }
    Ok(db)
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    http::metric(text, name, labels).ok_or_else(|| format!("metric {name}{labels:?} missing from /metrics"))
}

#[test]
#[ignore = "needs root, network namespaces and kaspad 2.1.0; run by scripts/test.sh"]
fn sensor_classifies_real_kaspad_peers() {
    let kaspad_bin = kaspad::find_kaspad().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::Builder::new().prefix("sensor-e2e-").tempdir().expect("temp dir");
    let data_dir = dir.path().join("sensor");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let mut ctx = Ctx {
        sensor: None,
        kaspads: Vec::new(),
        lab: None,
        last_metrics: String::new(),
        db_path: data_dir.join("sensor.sqlite"),
        dir,
    };
    if let Err(e) = scenario(&mut ctx, &kaspad_bin, &data_dir) {
        // Ctx's Drop prints the report (logs, lab, database, metrics) while unwinding.
        panic!("e2e failed: {e}");
    }
}

fn scenario(ctx: &mut Ctx, kaspad_bin: &Path, data_dir: &Path) -> Result<(), String> {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[e2e +{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let dir = ctx.dir.path().to_path_buf();

    // --- the lab -------------------------------------------------------------------------
    let mut lab = Lab::new()?;
    let sensor_host = lab.add_host("sensor", SENSOR_IP)?;
    let public_host = lab.add_host("kpub", PUBLIC_IP)?;
    let nat = lab.add_nat_site("knat", NAT_WAN_IP, 1)?;
    let simnet_host = lab.add_host("ksim", SIMNET_IP)?;
    ctx.lab = Some(lab);
    step("lab built");

    // --- the sensor ----------------------------------------------------------------------
    let sensor_bin = PathBuf::from(env!("CARGO_BIN_EXE_sensor"));
    let args: Vec<String> = [
        "listen",
        "--network",
        "devnet",
        "--listen",
        &format!("{SENSOR_IP}:{SENSOR_P2P}"),
        "--data-dir",
        &data_dir.display().to_string(),
        "--metrics-listen",
        &format!("{SENSOR_IP}:{SENSOR_METRICS}"),
        "--allow-private-targets",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [
        ("SENSOR_CLASSIFY_PROBE_TIMEOUT_MS", "3000"),
        ("SENSOR_CLASSIFY_PROBE_RETRY_DELAY_MS", "500"),
        ("RUST_LOG", "info"),
        ("RUST_BACKTRACE", "1"),
        ("NO_COLOR", "1"),
    ];
    ctx.sensor = Some(NsProcess::spawn("sensor", &sensor_host.ns, &sensor_bin, &args, &env, &dir.join("sensor.log"))?);
    wait_ready(ctx, Duration::from_secs(30))?;
    step("sensor ready (/readyz 200)");

    // --- the kaspad peers, each dialling the sensor (--addpeer) ------------------------------
    let sensor_p2p = SocketAddr::from((SENSOR_IP, SENSOR_P2P));
    let peers = [
        ("kaspad-public", &public_host, Net::Devnet, SocketAddrV4::new(PUBLIC_IP, Net::Devnet.p2p_port())),
        ("kaspad-nat", &nat.host, Net::Devnet, SocketAddrV4::new(nat.host.ip, Net::Devnet.p2p_port())),
        ("kaspad-simnet", &simnet_host, Net::Simnet, SocketAddrV4::new(SIMNET_IP, Net::Simnet.p2p_port())),
    ];
    for (name, host, net, listen) in peers {
        let spec =
            KaspadSpec { net, listen, add_peers: vec![sensor_p2p], log_level: Some(KASPAD_LOG_LEVEL.to_string()) };
        ctx.kaspads.push(Kaspad::spawn(kaspad_bin, name, host, &dir, &spec)?);
    }
    for (k, host) in ctx.kaspads.iter_mut().zip([&public_host, &nat.host, &simnet_host]) {
        k.wait_listening(host, Duration::from_secs(60))?;
    }
    step("kaspad nodes listening (public 198.51.100.41, NAT'd 10.0.1.2 via 198.51.100.21, simnet 198.51.100.43)");

    // --- verdicts and rejections in the database ------------------------------------------
    let db = wait_db(ctx, Duration::from_secs(90))?;
    step("database shows public, private/timeout and wrong_network");
    for (ip, class) in [(PUBLIC_IP, "public"), (NAT_WAN_IP, "private")] {
        let rows = db.peer(ip);
        ensure(rows.len() == 1, || format!("expected one peers row for {ip}, got {rows:?}"))?;
        let p = rows[0];
        ensure(p.classification.as_deref() == Some(class), || format!("peers row for {ip}: {p:?}"))?;
        ensure(p.user_agent.as_deref().is_some_and(|ua| ua.contains("kaspad:2.1.0")), || {
            format!("peers row for {ip}: user agent should name kaspad:2.1.0: {p:?}")
        })?;
        ensure(p.protocol_version == Some(11), || format!("peers row for {ip}: protocol version 11: {p:?}"))?;
        ensure(p.network.as_deref() == Some("kaspa-devnet"), || format!("peers row for {ip}: network: {p:?}"))?;
        ensure(p.peer_id.len() == 32, || format!("peers row for {ip}: peer_id should be 16 bytes hex: {p:?}"))?;
        let reasons: &[&str] =
            if class == "public" { &["handshake_verified", "version_verified"] } else { &["timeout"] };
        ensure(p.reason.as_deref().is_some_and(|r| reasons.contains(&r)), || {
            format!("peers row for {ip}: reason: {p:?}")
        })?;
        ensure(p.connections.unwrap_or(0) >= 1, || format!("peers row for {ip}: connections: {p:?}"))?;
        let accepted: Vec<&EventRow> = db.connections(ip, "accepted").collect();
        ensure(accepted.len() == 1, || format!("{ip}: expected 1 accepted connection, got {accepted:?}"))?;
        let a = accepted[0];
        ensure(
            a.user_agent.as_deref().is_some_and(|ua| ua.contains("kaspad:2.1.0")) && a.protocol_version == Some(11),
            || format!("accepted event for {ip} should carry kaspad's user agent and protocol 11: {a:?}"),
        )?;
    }
    for v in db.verdicts(PUBLIC_IP).chain(db.verdicts(NAT_WAN_IP)) {
        ensure(v.classification.as_deref() != Some("unknown"), || format!("unexpected unknown verdict {v:?}"))?;
    }
    for v in db.events.iter().filter(|e| e.kind == "verdict") {
        eprintln!(
            "[e2e] verdict for {}: {}/{} (dial-back to {}, {} attempts, {} ms)",
            v.peer_ip.as_deref().unwrap_or("?"),
            v.classification.as_deref().unwrap_or("?"),
            v.reason.as_deref().unwrap_or("?"),
            v.probe_target.as_deref().unwrap_or("?"),
            v.probe_attempts.unwrap_or(-1),
            v.probe_duration_ms.unwrap_or(-1)
        );
    }
    let private = db.verdicts(NAT_WAN_IP).find(|v| v.classification.as_deref() == Some("private")).cloned();
    if let Some(v) = &private {
        ensure(v.probe_attempts.unwrap_or(0) >= 2, || format!("private needs >= 2 attempts: {v:?}"))?;
        ensure(v.probe_target.as_deref().is_some_and(|t| t.starts_with(&NAT_WAN_IP.to_string())), || {
            format!("the dial-back must target the source IP {NAT_WAN_IP}: {v:?}")
        })?;
    }
    let simnet_rejections = db.connections(SIMNET_IP, "rejected").count();
    eprintln!("[e2e] simnet rejections so far: {simnet_rejections}");

    // --- metrics ---------------------------------------------------------------------------
    let events_seen = db.events.len() as f64;
    let m = wait_metrics(ctx, Duration::from_secs(15), |m| Ok(metric(m, "sensor_connections_active", &[])? == 2.0))?;
    let public_total = metric(&m, "sensor_peers_classified_public_total", &[])?;
    let private_total = metric(&m, "sensor_peers_classified_private_total", &[])?;
    let wrong_network = metric(&m, "sensor_inbound_rejections_total", &[("reason", "wrong_network")])?;
    let active = metric(&m, "sensor_connections_active", &[])?;
    let stored = metric(&m, "sensor_storage_events_total", &[])?;
    eprintln!(
        "[e2e] metrics: public {public_total}, private {private_total}, wrong_network {wrong_network}, \
         active {active}, stored events {stored} (rows seen {events_seen})"
    );
    ensure(public_total >= 1.0, || format!("sensor_peers_classified_public_total = {public_total}"))?;
    ensure(private_total >= 1.0, || format!("sensor_peers_classified_private_total = {private_total}"))?;
    ensure(wrong_network >= 1.0, || format!("sensor_inbound_rejections_total{{wrong_network}} = {wrong_network}"))?;
    ensure(active == 2.0, || format!("sensor_connections_active = {active}, expected the 2 devnet kaspads"))?;
    ensure(stored >= events_seen, || format!("sensor_storage_events_total {stored} < {events_seen} rows"))?;
    step("metrics agree");

    // --- stay connected past kaspad's 120 s ping --------------------------------------------
    // kaspad pings every 120 s and waits up to 120 s for the Pong; its p2p flows log at debug
    // "Successful ping with peer …" once the Pong with the right nonce arrived.
    let stay_from = Instant::now();
    let mut pinged = [false, false];
    let mut polls = 0u32;
    while stay_from.elapsed() < STAY_CONNECTED || !pinged.iter().all(|p| *p) {
        if stay_from.elapsed() > STAY_CONNECTED + Duration::from_secs(60) {
            return Err(format!(
                "kaspad never logged a successful ping with the sensor within {:?} (public: {}, NAT'd: {})",
                stay_from.elapsed(),
                pinged[0],
                pinged[1]
            ));
        }
        std::thread::sleep(Duration::from_secs(5));
        polls += 1;
        ctx.sensor_alive()?;
        for (i, k) in ctx.kaspads.iter_mut().enumerate().take(2) {
            ensure(k.process.is_running(), || format!("{} exited", k.process.name()))?;
            if !pinged[i] && k.process.log_text().contains(&format!("Successful ping with peer {sensor_p2p}")) {
                pinged[i] = true;
                eprintln!("[e2e] {} got the sensor's Pong after {:?}", k.process.name(), stay_from.elapsed());
            }
        }
        let db = read_db(&ctx.db_path)?;
        for ip in [PUBLIC_IP, NAT_WAN_IP] {
            let n = db.accepted(ip);
            ensure(n == 1, || format!("{ip} reconnected: {n} accepted connections after {:?}", stay_from.elapsed()))?;
        }
        let m = ctx.metrics()?;
        let active = metric(&m, "sensor_connections_active", &[])?;
        ensure(active == 2.0, || format!("sensor_connections_active = {active} after {:?}", stay_from.elapsed()))?;
        if polls.is_multiple_of(6) {
            step(&format!("still connected ({:?} of {STAY_CONNECTED:?})", stay_from.elapsed()));
        }
    }
    let m = ctx.metrics()?;
    let pings = http::metric(&m, "sensor_messages_received_total", &[("message_type", "Ping")]);
    step(&format!("both devnet kaspads stayed connected past their ping (sensor saw Ping messages: {pings:?})"));

    // --- graceful shutdown ---------------------------------------------------------------------
    let stored_before = metric(&m, "sensor_storage_events_total", &[])?;
    ctx.sensor().signal(libc::SIGTERM)?;
    let status = ctx.sensor().wait_timeout(Duration::from_secs(10));
    let status = status.ok_or("the sensor did not exit within 10 s of SIGTERM")?;
    ensure(status.success(), || format!("the sensor exited with {status} after SIGTERM"))?;
    step("sensor exited 0 after SIGTERM");
    let db = read_db(&ctx.db_path)?;
    let rows = db.events.len() as f64;
    eprintln!("[e2e] events stored: {rows} rows; the last /metrics reported {stored_before}");
    ensure(rows >= stored_before, || format!("{rows} event rows < {stored_before} reported stored: events lost"))?;
    let log = ctx.sensor().log_text();
    ensure(!log.contains("panicked"), || "the sensor's log shows a panic".to_string())?;
    step("done");
    Ok(())
}

fn wait_ready(ctx: &mut Ctx, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        ctx.sensor_alive()?;
        match http::get(Ctx::metrics_addr(), "/readyz", Duration::from_secs(2)) {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => last = format!("status {status}: {body}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("/readyz not 200 within {timeout:?}: {last}"))
}

fn wait_db(ctx: &mut Ctx, timeout: Duration) -> Result<Db, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing read yet");
    while Instant::now() < deadline {
        ctx.sensor_alive()?;
        match read_db(&ctx.db_path) {
            Ok(db) => match db.missing() {
                None => return Ok(db),
                Some(m) => last = format!("missing: {m}"),
            },
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!("database incomplete after {timeout:?}: {last}"))
}

fn wait_metrics(ctx: &mut Ctx, timeout: Duration, ok: impl Fn(&str) -> Result<bool, String>) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = ctx.metrics()?;
        if ok(&m)? || Instant::now() >= deadline {
            return Ok(m);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
