//! Kaspa P2P over a libp2p stream (`sensor::p2p::kaspa_stream`), with real parts on 127.0.0.1:
//! two rust-libp2p swarms (TCP + Noise + Yamux + `libp2p_stream::Behaviour`) connected directly;
//! the responder bridges `/p2psensor/kaspa/1` streams to the real `sensor listen` binary
//! (devnet); the initiator completes Version/Verack/Ready with it through the bridge. Failure
//! paths: the bridge's Kaspa port closed, more streams than the bridge's limit, a peer without
//! the protocol. Every wait is bounded in rounds and time.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, multiaddr::Protocol, noise, swarm::SwarmEvent, tcp, yamux};
use libp2p_stream::Control;
use sensor::{
    error::SensorError,
    kaspa::version::LocalVersion,
    p2p::kaspa_stream::{self, BridgeConfig, BridgeCounts, BridgeStats, PROTOCOL},
    store::Reader,
};
use sensor_core::network::Network;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Bound of every single wait in this file.
const WAIT: Duration = Duration::from_secs(30);
/// The handshake timeout given to `kaspa_stream::handshake`.
const HANDSHAKE: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` every 50 ms until it returns `Some`, at most `WAIT` and 1000 rounds.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    for _ in 0..1000 {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

// ---------------------------------------------------------------------------------------------
// The real `sensor listen`

/// `sensor listen` on devnet, P2P and metrics on free loopback ports; killed on drop.
struct SensorProcess {
    child: Child,
    log: PathBuf,
    p2p: SocketAddr,
    metrics: SocketAddr,
    db: PathBuf,
}

impl SensorProcess {
    async fn start(dir: &Path) -> SensorProcess {
        let p2p = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let data = dir.join("data");
        let log = dir.join("sensor.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sensor"));
        cmd.args(["listen", "--network", "devnet", "--listen", &p2p.to_string()])
            .args(["--metrics-listen", &metrics.to_string(), "--data-dir"])
            .arg(&data);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SENSOR_")) {
            cmd.env_remove(key);
        }
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("RUST_LOG", "info,sensor=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn the sensor binary");
        let mut sensor = SensorProcess { child, log, p2p, metrics, db: data.join("sensor.sqlite") };
        let start = Instant::now();
        for _ in 0..600 {
            if let Ok((200, _)) = support::http::get(metrics, "/readyz", Duration::from_secs(1)) {
                return sensor;
            }
            if let Some(status) = sensor.child.try_wait().unwrap() {
                panic!("sensor exited during start-up ({status}):\n{}", sensor.log_tail());
            }
            if start.elapsed() > WAIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("sensor not ready within {WAIT:?}:\n{}", sensor.log_tail());
    }

    fn log_tail(&self) -> String {
        support::process::tail_file(&self.log, 60)
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, body) = support::http::get(self.metrics, "/metrics", Duration::from_secs(2)).ok()?;
        (status == 200).then(|| support::http::metric(&body, name, labels)).flatten()
    }
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// libp2p

/// One swarm driven by its own task (aborted on drop), and a stream control for it.
struct Node {
    peer: PeerId,
    control: Control,
    driver: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn swarm() -> Swarm<libp2p_stream::Behaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn drive(mut swarm: Swarm<libp2p_stream::Behaviour>) -> Node {
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    let driver = tokio::spawn(async move {
        loop {
            let _ = swarm.select_next_some().await;
        }
    });
    Node { peer, control, driver }
}

/// Two swarms on 127.0.0.1 with a direct TCP connection: (initiator, responder).
async fn connected_pair() -> (Node, Node) {
    let (mut a, mut b) = (swarm(), swarm());
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let listen: Multiaddr = tokio::time::timeout(WAIT, async {
        for _ in 0..100 {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                return Some(address);
            }
        }
        None
    })
    .await
    .expect("listen address within WAIT")
    .expect("listen address within 100 events");
    let b_peer = *b.local_peer_id();
    a.dial(listen.with(Protocol::P2p(b_peer))).unwrap();
    let connected = tokio::time::timeout(WAIT, async {
        let (mut a_up, mut b_up) = (false, false);
        for _ in 0..200 {
            tokio::select! {
                e = a.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == b_peer => a_up = true,
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                    _ => {}
                },
                e = b.select_next_some() => if let SwarmEvent::ConnectionEstablished { .. } = e { b_up = true },
            }
            if a_up && b_up {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(connected, Ok(true), "direct connection within WAIT and 200 events");
    (drive(a), drive(b))
}

/// Makes `node` a bridge to `target` with at most `max_streams` streams; the bridge task ends
/// with the test's runtime.
fn bridge(node: &mut Node, target: SocketAddr, max_streams: usize) -> Arc<BridgeStats> {
    let incoming = kaspa_stream::accept(&mut node.control).expect("register the protocol");
    let config = BridgeConfig { max_streams, connect_timeout: Duration::from_secs(2), ..BridgeConfig::new(target) };
    let stats = Arc::new(BridgeStats::default());
    tokio::spawn(kaspa_stream::run_bridge(incoming, config, stats.clone()));
    stats
}

fn devnet_version(id: Uuid) -> kaspa_p2p_lib::pb::VersionMessage {
    LocalVersion { network: Network::Devnet, id, address: None }.message()
}

async fn counts_become(stats: &BridgeStats, want: BridgeCounts) {
    let what = format!("bridge counts {want:?}");
    eventually(&what, || (stats.snapshot() == want).then_some(())).await;
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaspa_handshake_over_a_libp2p_stream_reaches_the_sensor_behind_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let sensor = SensorProcess::start(dir.path()).await;
    let (mut initiator, mut responder) = connected_pair().await;
    let stats = bridge(&mut responder, sensor.p2p, 4);

    let id = Uuid::new_v4();
    let got = kaspa_stream::handshake(&mut initiator.control, responder.peer, devnet_version(id), HANDSHAKE)
        .await
        .unwrap_or_else(|e| panic!("handshake over the bridge: {e}\n{}", sensor.log_tail()));
    eprintln!("over the bridge: {got:?}");
    assert_eq!(got.user_agent, sensor::kaspa::version::user_agent());
    assert_eq!(got.network, "kaspa-devnet");
    assert_eq!(got.protocol_version, 11);
    assert_eq!(got.libp2p_peer, responder.peer);
    assert!(got.elapsed_ms < HANDSHAKE.as_millis() as u64, "{got:?}");
    let sensor_id = std::fs::read_to_string(dir.path().join("data/peer_id")).unwrap();
    assert_eq!(got.kaspa_id.simple().to_string(), sensor_id.trim(), "the Version came from this sensor");

    // The sensor saw our Version through the bridge and accepted the connection.
    let accepted = eventually("sensor_connections_total{inbound,accepted} = 1", || {
        sensor
            .metric("sensor_connections_total", &[("direction", "inbound"), ("result", "accepted")])
            .filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(accepted, 1.0);
    let row = eventually("our peer row in the sensor's database", || {
        let rows = Reader::open(&sensor.db).ok()?.peers(10).ok()?;
        rows.into_iter().find(|r| r.peer_id == id.simple().to_string())
    })
    .await;
    assert_eq!(row.connections, 1);
    assert_eq!(row.last_ip.as_deref(), Some("127.0.0.1"), "the bridge connects from loopback");
    assert_eq!(row.network.as_deref(), Some("kaspa-devnet"));

    // The polite close ends the bridged stream on both sides: nothing stays open.
    counts_become(&stats, BridgeCounts { accepted: 1, bridged: 1, ..BridgeCounts::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_kaspa_port_behind_the_bridge_is_a_clear_error_and_counted() {
    let (mut initiator, mut responder) = connected_pair().await;
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let stats = bridge(&mut responder, closed, 4);

    let started = Instant::now();
    let err =
        kaspa_stream::handshake(&mut initiator.control, responder.peer, devnet_version(Uuid::new_v4()), HANDSHAKE)
            .await
            .expect_err("no Kaspa node behind the bridge");
    eprintln!("closed port: {err}");
    assert!(matches!(err, SensorError::KaspaStream { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&responder.peer.to_string()) && text.contains(PROTOCOL.as_ref()), "{text}");
    assert!(text.contains("opening the Kaspa stream"), "{text}");
    assert!(started.elapsed() < HANDSHAKE, "an error, not the timeout: {text}");
    counts_become(&stats, BridgeCounts { accepted: 1, connect_failed: 1, ..BridgeCounts::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_bridge_limit_are_refused_and_counted() {
    // The bridge only pipes bytes, so its target here is a TCP server that reads each of (at
    // most 8) connections until the end and then closes it.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut socket, _)) = target.accept().await else { break };
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink)).await;
            });
        }
    });
    let (mut initiator, mut responder) = connected_pair().await;
    let stats = bridge(&mut responder, target_addr, 1);

    // The one slot: a raw stream, bridged and held.
    let mut first = tokio::time::timeout(WAIT, initiator.control.open_stream(responder.peer, PROTOCOL))
        .await
        .expect("open within WAIT")
        .expect("open the first stream");
    first.write_all(b"hello").await.unwrap();
    first.flush().await.unwrap();
    counts_become(&stats, BridgeCounts { accepted: 1, bridged: 1, active: 1, ..BridgeCounts::default() }).await;

    // A handshake now finds the bridge busy: a clear error, counted as refused.
    let started = Instant::now();
    let err =
        kaspa_stream::handshake(&mut initiator.control, responder.peer, devnet_version(Uuid::new_v4()), HANDSHAKE)
            .await
            .expect_err("the bridge is busy");
    eprintln!("busy: {err}");
    assert!(err.to_string().contains("opening the Kaspa stream"), "{err}");
    assert!(started.elapsed() < HANDSHAKE, "an error, not the timeout: {err}");
    counts_become(&stats, BridgeCounts { accepted: 2, bridged: 1, refused_busy: 1, active: 1, ..Default::default() })
        .await;

    // Closing the first stream frees the slot for the next one.
    first.close().await.unwrap();
    drop(first);
    counts_become(&stats, BridgeCounts { accepted: 2, bridged: 1, refused_busy: 1, ..Default::default() }).await;
    let mut second = initiator.control.open_stream(responder.peer, PROTOCOL).await.expect("open the second stream");
    second.write_all(b"hello").await.unwrap();
    second.flush().await.unwrap();
    counts_become(&stats, BridgeCounts { accepted: 3, bridged: 2, refused_busy: 1, active: 1, ..Default::default() })
        .await;
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_the_protocol_is_a_clear_error() {
    let (mut initiator, responder) = connected_pair().await;
    let started = Instant::now();
    let err =
        kaspa_stream::handshake(&mut initiator.control, responder.peer, devnet_version(Uuid::new_v4()), HANDSHAKE)
            .await
            .expect_err("the responder does not accept /p2psensor/kaspa/1");
    eprintln!("unsupported: {err}");
    assert_eq!(err.kind(), "p2p");
    assert!(err.to_string().contains("does not support"), "{err}");
    assert!(err.to_string().contains(&responder.peer.to_string()), "{err}");
    assert!(started.elapsed() < HANDSHAKE, "an error, not the timeout: {err}");
}
