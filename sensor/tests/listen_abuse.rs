//! A real `sensor listen` process on loopback, attacked at its network edge: connections that
//! never speak HTTP/2, stop half-way through the preface, or open the Kaspa stream and stall
//! (slowloris); a peer that vanishes without a FIN (half-open); more connections than the per-IP
//! and per-/24 caps; a flood of 200 concurrent handshakes; and a message over the 4 MiB
//! transport limit. Each is closed within its bound, counted under its reason in
//! `sensor_inbound_rejections_total` and stored, and the listener keeps serving normal peers.
//!
//! Every client connects from its own 127.x.y.z source address (a distinct IP and /24 per test)
//! over a socket the test binds itself, and speaks gRPC on that one socket
//! (`WireConnection::connect_over`), so one client is exactly one TCP connection. Every wait is
//! bounded.

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use kaspa_p2p_lib::pb::{AddressesMessage, NetAddress, kaspad_message::Payload};
use sensor::{
    kaspa::{version::LocalVersion, wire::WireConnection},
    store::query::{EventCounts, Reader},
};
use sensor_core::network::Network;
use support::sensor_process::{SensorProcess, Spawn, free_port};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpSocket, TcpStream},
};

/// Bound of every single wait in this file.
const WAIT: Duration = Duration::from_secs(20);
/// `listen.handshake_timeout_ms` of the slowloris test (the smallest the config allows).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Scheduling slack on top of a bound (2 shared cores).
const SLACK: Duration = Duration::from_millis(2500);
/// Bound of one client's connect + handshake.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

struct Listener {
    process: SensorProcess,
    p2p: SocketAddr,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `sensor listen` on devnet with `env` (small limits) on top of a 1 s handshake timeout.
async fn start(name: &str, env: &[(&str, &str)]) -> Listener {
    let dir = tempfile::tempdir().unwrap();
    let p2p = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let data = dir.path().join("data");
    let args: Vec<String> = ["listen", "--network", "devnet", "--listen", &p2p.to_string(), "--data-dir"]
        .into_iter()
        .map(str::to_owned)
        .chain([data.display().to_string()])
        .collect();
    let mut vars = vec![
        ("SENSOR_LISTEN_HANDSHAKE_TIMEOUT_MS", HANDSHAKE_TIMEOUT.as_millis().to_string()),
        ("SENSOR_STORAGE_FLUSH_INTERVAL_MS", "10".to_owned()),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut process = SensorProcess::spawn(Spawn {
        dir: dir.path(),
        name,
        args: &args,
        env: &vars,
        metrics: true,
        rust_log: "info",
        wait: WAIT,
    });
    process.wait_ready().await;
    Listener { process, p2p, db: data.join("sensor.sqlite"), _dir: dir }
}

impl Listener {
    async fn metrics(&self) -> String {
        self.process.metrics_text().await
    }

    /// Polls `/metrics` (every 100 ms, bounded by [`WAIT`]) until `f` holds; returns the text.
    async fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.metrics().await;
            if f(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {WAIT:?}:\n{text}\n{}",
                self.process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The stored event counts once `f` holds for them (bounded by [`WAIT`]).
    async fn stored(&self, what: &str, f: impl Fn(&EventCounts) -> bool) -> EventCounts {
        let deadline = Instant::now() + WAIT;
        loop {
            let counts = Reader::open(&self.db).ok().and_then(|r| r.event_counts().ok());
            match counts {
                Some(c) if f(&c) => return c,
                c => assert!(Instant::now() < deadline, "{what}: stored counts never matched: {c:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn gauge(text: &str, name: &str) -> f64 {
    support::http::metric(text, name, &[]).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// `sensor_inbound_rejections_total{reason}`; 0 when the series is absent.
fn rejections(text: &str, reason: &str) -> f64 {
    support::http::metric(text, "sensor_inbound_rejections_total", &[("reason", reason)]).unwrap_or(0.0)
}

/// All inbound rejections, every reason.
fn rejections_total(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("sensor_inbound_rejections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn inbound_accepted(text: &str) -> f64 {
    support::http::metric(text, "sensor_connections_total", &[("direction", "inbound"), ("result", "accepted")])
        .unwrap_or(0.0)
}

fn stored_rejected(counts: &EventCounts, reason: &str) -> u64 {
    counts.rejected_by_reason.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n)
}

fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// A TCP connection to `to` from `src` (bounded).
async fn tcp_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    tokio::time::timeout(CLIENT_TIMEOUT, socket.connect(to))
        .await
        .unwrap_or_else(|_| panic!("connect from {src}: timed out"))
        .unwrap_or_else(|e| panic!("connect from {src}: {e}"))
}

fn version() -> kaspa_p2p_lib::pb::VersionMessage {
    LocalVersion { network: Network::Devnet, id: uuid::Uuid::new_v4(), address: None }.message()
}

/// A Kaspa peer over `io` (one TCP connection): the stream and the full handshake, bounded.
async fn handshake_over<IO>(io: IO) -> Result<WireConnection, String>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut conn = WireConnection::connect_over(io, CLIENT_TIMEOUT).await.map_err(|e| e.to_string())?;
    conn.handshake(version(), CLIENT_TIMEOUT).await.map_err(|e| e.to_string())?;
    Ok(conn)
}

/// A Kaspa peer from `src`.
async fn peer(src: IpAddr, to: SocketAddr) -> Result<WireConnection, String> {
    handshake_over(tcp_from(src, to).await).await
}

/// Reads `tcp` until the sensor closes it (EOF or reset); returns when. Panics after `limit`
/// or 1 MiB.
async fn wait_closed(tcp: &mut TcpStream, limit: Duration) -> Instant {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    loop {
        match tokio::time::timeout_at((start + limit).into(), tcp.read(&mut buf)).await {
            Err(_) => panic!("the sensor did not close the connection within {limit:?}"),
            Ok(Ok(0) | Err(_)) => return Instant::now(),
            Ok(Ok(n)) => total += n,
        }
        assert!(total < 1 << 20, "the sensor sent over 1 MiB to a silent client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_time_out_are_counted_and_free_their_slots() {
    let sensor = start("slowloris", &[("SENSOR_LISTEN_MAX_PENDING_HANDSHAKES", "3")]).await;
    let opened = Instant::now();
    // 1. TCP only, never a byte.
    let mut silent = tcp_from(ip(11, 0, 1), sensor.p2p).await;
    // 2. Half of the HTTP/2 client preface (RFC 9113 §3.4), then nothing.
    let mut partial = tcp_from(ip(11, 0, 2), sensor.p2p).await;
    partial.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12]).await.unwrap();
    // 3. HTTP/2 and the gRPC stream, but never a Kaspa Version.
    let mut stalled = WireConnection::connect_over(tcp_from(ip(11, 0, 3), sensor.p2p).await, CLIENT_TIMEOUT)
        .await
        .expect("the stalled client opens its stream");

    // All three hold the 3 pending-handshake slots: a normal peer is shed meanwhile.
    let refused = peer(ip(11, 0, 4), sensor.p2p).await;
    assert!(refused.is_err(), "a fourth pending handshake must be refused");
    let text = sensor.metrics().await;
    assert_eq!(rejections(&text, "pending_handshake_limit"), 1.0, "{text}");
    assert_eq!(gauge(&text, "sensor_handshakes_pending"), 3.0, "{text}");

    // The sensor closes the raw connections at the handshake timeout, not before.
    let bound = HANDSHAKE_TIMEOUT + SLACK;
    let (a, b) = tokio::join!(wait_closed(&mut silent, bound), wait_closed(&mut partial, bound));
    for (what, closed) in [("silent", a), ("partial preface", b)] {
        let took = closed - opened;
        eprintln!("{what} connection closed by the sensor {took:?} after connect");
        // Accepted after `opened`, cut at accept + timeout (10 ms of timer rounding allowed).
        assert!(took + Duration::from_millis(10) >= HANDSHAKE_TIMEOUT, "{what}: closed early, {took:?}");
        assert!(took <= HANDSHAKE_TIMEOUT + SLACK, "{what}: closed after {took:?}");
    }
    // The stalled stream gets our Version, then a Reject naming the reason, then its end.
    let read_all = async {
        let mut seen = Vec::new();
        for _ in 0..16 {
            match stalled.recv().await {
                Ok(Some(Payload::Reject(r))) => seen.push(format!("reject: {}", r.reason)),
                Ok(Some(p)) => seen.push(format!("{:?}", kaspa_p2p_lib::KaspadMessagePayloadType::from(&p))),
                Ok(None) | Err(_) => return seen,
            }
        }
        seen
    };
    let seen = tokio::time::timeout(bound, read_all).await.expect("the stalled stream is ended");
    assert!(seen.iter().any(|s| s.contains("handshake_timeout")), "{seen:?}");
    assert!(opened.elapsed() <= HANDSHAKE_TIMEOUT + 2 * SLACK, "{:?}", opened.elapsed());

    let text = sensor
        .wait_for("three handshake timeouts, no pending slot", |t| {
            rejections(t, "handshake_timeout") == 3.0 && gauge(t, "sensor_handshakes_pending") == 0.0
        })
        .await;
    assert_eq!(rejections_total(&text), 4.0, "{text}");

    // The slots are free again: a normal peer gets in.
    let good = peer(ip(11, 0, 4), sensor.p2p).await.expect("a normal peer is accepted after the slowloris");
    sensor.wait_for("one active peer", |t| gauge(t, "sensor_connections_active") == 1.0).await;
    let counts = sensor.stored("4 rejections and 1 accept", |c| c.rejected == 4 && c.accepted == 1).await;
    assert_eq!(stored_rejected(&counts, "handshake_timeout"), 3, "{counts:?}");
    assert_eq!(stored_rejected(&counts, "pending_handshake_limit"), 1, "{counts:?}");
    good.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_and_per_subnet_caps_admit_exactly_their_limit() {
    let sensor =
        start("caps", &[("SENSOR_LISTEN_MAX_PEERS_PER_IP", "2"), ("SENSOR_LISTEN_MAX_PEERS_PER_SUBNET", "3")]).await;
    // One IP, 2 + 2 connections.
    let mut one_ip = Vec::new();
    let mut refused_ip = 0;
    for _ in 0..4 {
        match peer(ip(12, 1, 1), sensor.p2p).await {
            Ok(c) => one_ip.push(c),
            Err(_) => refused_ip += 1,
        }
    }
    assert_eq!((one_ip.len(), refused_ip), (2, 2), "max_peers_per_ip = 2");
    // One /24, five IPs: 3 admitted, 2 refused.
    let mut one_subnet = Vec::new();
    let mut refused_subnet = Vec::new();
    for last in 1..=5 {
        match peer(ip(12, 2, last), sensor.p2p).await {
            Ok(c) => one_subnet.push(c),
            Err(_) => refused_subnet.push(last),
        }
    }
    assert_eq!(one_subnet.len(), 3, "max_peers_per_subnet = 3");
    assert_eq!(refused_subnet, vec![4, 5], "the first three of the /24 get in");
    // Another /24 is served meanwhile.
    let other = peer(ip(12, 3, 1), sensor.p2p).await.expect("another /24 is still served");

    let text = sensor.wait_for("six active peers", |t| gauge(t, "sensor_connections_active") == 6.0).await;
    assert_eq!(rejections(&text, "ip_limit"), 2.0, "{text}");
    assert_eq!(rejections(&text, "subnet_limit"), 2.0, "{text}");
    assert_eq!(rejections_total(&text), 4.0, "{text}");
    let counts = sensor.stored("6 accepts and 4 rejections", |c| c.accepted == 6 && c.rejected == 4).await;
    assert_eq!((stored_rejected(&counts, "ip_limit"), stored_rejected(&counts, "subnet_limit")), (2, 2));

    // A peer that leaves frees its slot for the same IP.
    one_ip.pop().unwrap().close(Duration::from_secs(2)).await;
    sensor.wait_for("five active peers", |t| gauge(t, "sensor_connections_active") == 5.0).await;
    let again = peer(ip(12, 1, 1), sensor.p2p).await.expect("the freed per-IP slot is usable");
    for c in one_ip.into_iter().chain(one_subnet).chain([other, again]) {
        c.close(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_is_shed_counted_and_every_attempt_accounted_for() {
    const ATTEMPTS: usize = 200;
    let mut sensor = start(
        "flood",
        &[
            ("SENSOR_LISTEN_MAX_PENDING_HANDSHAKES", "8"),
            ("SENSOR_LISTEN_MAX_INBOUND_PEERS", "1000"),
            ("SENSOR_LISTEN_MAX_PEERS_PER_SUBNET", "1000"),
            ("SENSOR_LISTEN_HANDSHAKE_TIMEOUT_MS", "5000"),
        ],
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    // /metrics answers throughout the flood.
    let poller = {
        let (addr, done) = (sensor.process.metrics, done.clone());
        tokio::spawn(async move {
            let (mut polls, deadline) = (0u32, Instant::now() + 2 * WAIT);
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                let got = support::sensor_process::get(addr, "/metrics").await;
                assert!(matches!(got, Ok((200, _))), "/metrics failed during the flood: {got:?}");
                polls += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            polls
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..ATTEMPTS)
        .map(|i| {
            let (src, to) = (ip(13, (i / 250) as u8, (i % 250) as u8 + 1), sensor.p2p);
            tokio::spawn(async move { peer(src, to).await })
        })
        .collect();
    let mut held = Vec::new();
    for c in clients {
        let result = tokio::time::timeout(2 * WAIT, c).await.expect("a flood client finished").unwrap();
        held.extend(result.ok());
    }
    let flood_time = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let polls = poller.await.unwrap();
    assert!(polls >= 1, "/metrics was polled during the flood");
    assert!(sensor.process.try_exit().is_none(), "the sensor survived the flood");

    let text = sensor
        .wait_for("every attempt accounted for", |t| {
            gauge(t, "sensor_handshakes_pending") == 0.0 && inbound_accepted(t) + rejections_total(t) == ATTEMPTS as f64
        })
        .await;
    let accepted = held.len();
    eprintln!(
        "flood: {ATTEMPTS} attempts in {flood_time:?}: {accepted} accepted, {} shed by pending_handshake_limit, \
         {} rejected in all; /metrics polled {polls} times",
        rejections(&text, "pending_handshake_limit"),
        rejections_total(&text)
    );
    assert_eq!(inbound_accepted(&text), accepted as f64, "{text}");
    assert!(rejections(&text, "pending_handshake_limit") > 0.0, "{text}");
    assert_eq!(gauge(&text, "sensor_connections_active"), accepted as f64, "{text}");
    let counts =
        sensor.stored("one connection event per attempt", |c| c.accepted + c.rejected == ATTEMPTS as u64).await;
    assert_eq!(counts.accepted, accepted as u64, "{counts:?}");
    assert!(stored_rejected(&counts, "pending_handshake_limit") > 0, "{counts:?}");
    // And it still serves: a peer after the flood gets in.
    let after = peer(ip(13, 9, 1), sensor.p2p).await.expect("a peer after the flood");
    drop((held, after));
}

/// A byte stream that can be frozen: once frozen, reads and writes never complete — a peer that
/// vanished without a FIN (its kernel still ACKs, but nothing reads or answers).
struct Freezable {
    io: TcpStream,
    frozen: Arc<AtomicBool>,
}

impl AsyncRead for Freezable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Freezable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_without_fin_is_dropped_by_http2_keepalive() {
    const KEEPALIVE: Duration = Duration::from_millis(1000);
    let sensor = start(
        "half-open",
        &[
            ("SENSOR_LISTEN_MAX_PEERS_PER_IP", "1"),
            ("SENSOR_LISTEN_KEEPALIVE_INTERVAL_MS", "1000"),
            ("SENSOR_LISTEN_KEEPALIVE_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let healthy = peer(ip(14, 0, 1), sensor.p2p).await.expect("healthy peer");
    let frozen = Arc::new(AtomicBool::new(false));
    let io = Freezable { io: tcp_from(ip(14, 0, 2), sensor.p2p).await, frozen: frozen.clone() };
    let vanishing = handshake_over(io).await.expect("the peer that will vanish");
    sensor.wait_for("two active peers", |t| gauge(t, "sensor_connections_active") == 2.0).await;

    frozen.store(true, Ordering::SeqCst);
    let vanished = Instant::now();
    sensor.wait_for("the vanished peer dropped", |t| gauge(t, "sensor_connections_active") == 1.0).await;
    let took = vanished.elapsed();
    eprintln!("half-open peer dropped {took:?} after it went silent (keep-alive {KEEPALIVE:?} + {KEEPALIVE:?})");
    assert!(took <= 2 * KEEPALIVE + SLACK, "dropped after {took:?}");
    // At least one keep-alive timeout after the last PING it could have answered (less a margin
    // for a PING that was on the wire when the peer froze).
    assert!(took + Duration::from_millis(200) >= KEEPALIVE, "dropped after {took:?}, before a keep-alive failed");

    // Keep-alive does not touch a peer that answers: the healthy one stays past several rounds.
    tokio::time::sleep(3 * KEEPALIVE).await;
    let text = sensor.metrics().await;
    assert_eq!(gauge(&text, "sensor_connections_active"), 1.0, "{text}");
    // The slot is free: the same IP (max_peers_per_ip = 1) gets in again.
    let back = peer(ip(14, 0, 2), sensor.p2p).await.expect("the freed slot is usable");
    drop((healthy, vanishing, back));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_ends_that_peer_and_no_other() {
    let sensor = start("oversized", &[]).await;
    let bystander = peer(ip(15, 0, 1), sensor.p2p).await.expect("bystander");
    let mut big = peer(ip(15, 0, 2), sensor.p2p).await.expect("the peer that sends 5 MiB");
    sensor.wait_for("two active peers", |t| gauge(t, "sensor_connections_active") == 2.0).await;

    // 5 MiB of Addresses, over the sensor's 4 MiB `MAX_MESSAGE_BYTES`.
    let address_list = vec![NetAddress { timestamp: 0, ip: vec![1; 16], port: 1 }; 5 * 1024 * 1024 / 20];
    let _ = big.send(Payload::Addresses(AddressesMessage { address_list })).await;
    let ended = async {
        for _ in 0..64 {
            if !matches!(big.recv().await, Ok(Some(_))) {
                return;
            }
        }
        panic!("the stream did not end after 64 messages");
    };
    tokio::time::timeout(WAIT, ended).await.expect("the sensor ends the oversized peer's stream");
    let text = sensor.wait_for("the oversized peer dropped", |t| gauge(t, "sensor_connections_active") == 1.0).await;
    assert_eq!(rejections_total(&text), 0.0, "an accepted peer's failure is not a rejection: {text}");
    let disconnects = |reason: &str| {
        support::http::metric(&text, "sensor_peer_disconnects_total", &[("reason", reason)]).unwrap_or(-1.0)
    };
    assert_eq!(disconnects("message_too_large"), 1.0, "{text}");
    assert_eq!(disconnects("stream_error") + disconnects("peer_closed"), 0.0, "{text}");
    let log = sensor.process.log_text();
    assert!(log.contains("peer stream failed") && log.contains("OutOfRange"), "{log}");

    // The sensor keeps serving: the bystander is still held and a new peer gets in.
    let newcomer = peer(ip(15, 0, 3), sensor.p2p).await.expect("a new peer after the oversized message");
    sensor.wait_for("two active peers again", |t| gauge(t, "sensor_connections_active") == 2.0).await;
    drop((bystander, newcomer));
}
