//! The real `sensor relay` and `sensor punch` binaries on 127.0.0.1: a punch listener holds a
//! reservation, a punch dialer hole-punches to it through the relay (DCUtR; on loopback the
//! direct dial trivially works, so this tests the mechanics and the recording, not NATs) and to
//! a libp2p peer without DCUtR (the attempts time out). Every attempt is one JSON line, one
//! SQLite row, one `sensor_punch_attempts_total` count and part of the pushed `HolePunchSummary`.
//! A target that does not exist and an unreachable relay give recorded failures, not hangs;
//! SIGTERM cancels an attempt in flight (recorded, exit 0); bad relay multiaddrs exit non-zero
//! with a clear message. Every wait is bounded.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, identify,
    identity::Keypair,
    multiaddr::Protocol,
    noise, ping, relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use sensor::store::Reader;
use serde_json::Value;
use support::{
    collector::TestCollector,
    sensor_process::{SensorProcess, Spawn, free_port, get, metric, write_key},
};

/// Bound of every single wait in this file.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Processes

/// `sensor ARGS` in `dir` (see [`SensorProcess`]), with DCUtR's debug log.
fn spawn(dir: &Path, name: &str, args: &[String], env: &[(&str, String)], metrics: bool) -> SensorProcess {
    SensorProcess::spawn(Spawn { dir, name, args, env, metrics, rust_log: "info,libp2p_dcutr=debug", wait: WAIT })
}

/// Starts `sensor relay` on TCP and QUIC (same port) with both as external addresses; returns
/// the process, its PeerId and the two addresses.
async fn start_relay(dir: &Path) -> (SensorProcess, PeerId, Multiaddr, Multiaddr) {
    let port = free_port();
    let relay_id = write_key(&dir.join("relay.key"));
    start_relay_at(dir, port, relay_id).await
}

/// Starts `sensor relay` on `port` with the key `dir/relay.key` (of `relay_id`).
async fn start_relay_at(dir: &Path, port: u16, relay_id: PeerId) -> (SensorProcess, PeerId, Multiaddr, Multiaddr) {
    let tcp: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let quic: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().unwrap();
    let key = dir.join("relay.key");
    let args: Vec<String> = vec![
        "relay".into(),
        "--identity".into(),
        key.display().to_string(),
        "--listen".into(),
        tcp.to_string(),
        quic.to_string(),
        "--external-address".into(),
        tcp.to_string(),
        quic.to_string(),
        "--allow-private-targets".into(),
    ];
    let mut relay = spawn(dir, "relay", &args, &[], true);
    relay.wait_ready().await;
    (relay, relay_id, tcp.with(Protocol::P2p(relay_id)), quic.with(Protocol::P2p(relay_id)))
}

/// A punch client's arguments. It listens on a port from [`free_port`], below the ephemeral
/// range: its dials reuse that port, and a kernel-chosen one could also be some other socket's
/// ephemeral source port (`EADDRINUSE` on every dial).
fn punch_args(relay: &Multiaddr, data_dir: &Path, extra: &[String]) -> Vec<String> {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "punch".into(),
        "--relay".into(),
        relay.to_string(),
        "--listen".into(),
        format!("/ip4/127.0.0.1/tcp/{port}"),
        format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    args.extend_from_slice(extra);
    args
}

// ---------------------------------------------------------------------------------------------
// A libp2p peer with a reservation but without DCUtR: punches to it never upgrade

#[derive(NetworkBehaviour)]
struct SilentBehaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Reserves on `relay` and keeps running in a task; returns its PeerId once the reservation is
/// accepted.
async fn silent_peer(relay: &Multiaddr) -> PeerId {
    let mut swarm: Swarm<SilentBehaviour> = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, relay| SilentBehaviour {
            relay,
            identify: identify::Behaviour::new(identify::Config::new("/silent/1".into(), key.public())),
            ping: ping::Behaviour::default(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let id = *swarm.local_peer_id();
    swarm.listen_on(relay.clone().with(Protocol::P2pCircuit)).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(SilentBehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted {
                    ..
                })) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                SwarmEvent::ListenerClosed { reason, .. } => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Err(format!("{reason:?}")));
                    }
                }
                _ => {}
            }
        }
    });
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(Ok(()))) => id,
        other => panic!("the silent peer got no reservation: {other:?}"),
    }
}

fn outcomes(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| (l["target"].as_str().unwrap().to_owned(), l["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punches_through_the_relay_are_printed_stored_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, _relay_id, relay_tcp, relay_quic) = start_relay(dir.path()).await;

    // The listener holds a reservation; its key is made here so the test knows its PeerId.
    let listener_key = dir.path().join("listener.key");
    let listener_id = write_key(&listener_key);
    let extra = vec!["--json".into(), "--identity".into(), listener_key.display().to_string()];
    // The listener knows the relay by name (libp2p-dns, /etc/hosts), the dialers by address.
    let relay_by_name: Multiaddr =
        relay_tcp.to_string().replace("/ip4/127.0.0.1/", "/dns4/localhost/").parse().unwrap();
    let args = punch_args(&relay_by_name, &dir.path().join("listener"), &extra);
    let mut listener = spawn(dir.path(), "listener", &args, &[], true);
    listener.wait_ready().await;
    let reservation = listener.wait_lines(1).await;
    assert_eq!(reservation[0]["event"], "reservation", "{reservation:?}");
    assert_eq!(reservation[0]["peer_id"], listener_id.to_base58());
    assert!(reservation[0]["address"].as_str().unwrap().contains("/p2p-circuit/p2p/"), "{reservation:?}");

    let silent_id = silent_peer(&relay_tcp).await;
    let collector = TestCollector::default();
    let collector_addr = collector.serve().await;
    let env = [
        ("SENSOR_REPORT_ENDPOINT", format!("http://{collector_addr}")),
        ("SENSOR_REPORT_INTERVAL_MS", "1000".to_owned()),
        ("SENSOR_REPORT_OWNER_NAMESPACE", "lab".to_owned()),
        ("SENSOR_REPORT_OWNER_NAME", "fleet".to_owned()),
        ("SENSOR_SENSOR_ID", "dialer-0".to_owned()),
        ("SENSOR_PUNCH_RELAY_NODE", "edge".to_owned()),
    ];
    let dialer_dir = dir.path().join("dialer");
    let extra: Vec<String> = vec![
        "--json".into(),
        "--target".into(),
        listener_id.to_string(),
        silent_id.to_string(),
        "--attempts".into(),
        "2".into(),
        "--timeout-secs".into(),
        "5".into(),
    ];
    let started = Instant::now();
    let mut dialer = spawn(dir.path(), "dialer", &punch_args(&relay_tcp, &dialer_dir, &extra), &env, true);

    // The two attempts on the listener succeed; /metrics counts them while the attempts on the
    // peer without DCUtR are still running (each takes the whole 5 s).
    let first = dialer.wait_lines(2).await;
    assert_eq!(outcomes(&first), vec![(listener_id.to_string(), "success".to_owned()); 2], "{first:?}");
    let text = dialer.metrics_text().await;
    let successes: f64 = ["tcp", "quic"]
        .iter()
        .filter_map(|t| metric(&text, &format!("sensor_punch_attempts_total{{transport=\"{t}\",outcome=\"success\"}}")))
        .sum();
    assert_eq!(successes, 2.0, "{text}");
    assert_eq!(metric(&text, "sensor_punch_time_to_direct_seconds_count"), Some(2.0), "{text}");
    assert_eq!(
        metric(&text, "sensor_punch_attempts_total{transport=\"tcp\",outcome=\"no_relay_connection\"}"),
        Some(0.0),
        "every label pair exists from the start"
    );
    assert!(text.contains("libp2p_swarm_connections_established_total"), "libp2p-metrics share the registry");

    let status = dialer.wait_exit().await;
    assert!(status.success(), "the dialer exits 0 after its attempts: {status}\n{}", dialer.log_text());
    assert!(started.elapsed() < Duration::from_secs(45), "took {:?}", started.elapsed());
    let lines = dialer.lines();
    assert_eq!(lines.len(), 4, "one line per attempt (2 targets x 2 attempts):\n{}", dialer.stdout_text());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["event"], "attempt");
        assert_eq!(line["attempt"], (i % 2 + 1) as u64, "{line}");
        assert_eq!(line["relay"], relay_tcp.to_string());
        assert_eq!((line["sensor_id"].as_str(), line["relay_node"].as_str()), (Some("dialer-0"), Some("edge")));
        assert!(
            ["public", "private-cone", "private-symmetric", "unknown"].contains(&line["nat_verdict"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["started_at"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(line["relayed_rtt_ms"].as_f64().is_some(), "a ping answered over the circuit: {line}");
    }
    for line in &lines[..2] {
        assert_eq!((line["outcome"].as_str(), line["transport"].as_str()), (Some("success"), Some("tcp")), "{line}");
        assert!(line["time_to_direct_ms"].as_u64().is_some(), "{line}");
        assert!(line["direct_rtt_ms"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(line["direct_address"].as_str().unwrap().starts_with("/ip4/127.0.0.1/"), "{line}");
        assert!(line["dcutr_rounds"].as_u64().is_some() && line["error"].is_null(), "{line}");
    }
    for line in &lines[2..] {
        assert_eq!(line["target"], silent_id.to_string());
        assert_eq!(line["outcome"], "timeout", "no DCUtR on the other side: {line}");
        assert!(line["time_to_direct_ms"].is_null() && line["direct_rtt_ms"].is_null(), "{line}");
        assert!(line["error"].as_str().unwrap().contains("no confirmed direct connection within 5s"), "{line}");
        let ms = line["duration_ms"].as_u64().unwrap();
        assert!((5000..8000).contains(&ms), "bounded by --timeout-secs: {line}");
    }

    // The same attempts are in SQLite.
    let rows = Reader::open(&dialer_dir.join("sensor.sqlite")).unwrap().punch_attempts().unwrap();
    assert_eq!(rows.len(), 4);
    for line in &lines {
        let row = rows.iter().find(|r| line["attempt_id"] == r.attempt_id.as_str()).expect("stored");
        assert_eq!(
            (row.outcome.as_str(), row.transport.as_str()),
            (line["outcome"].as_str().unwrap(), line["transport"].as_str().unwrap())
        );
        assert_eq!(row.target, line["target"].as_str().unwrap());
        assert_eq!(row.time_to_direct_ms, line["time_to_direct_ms"].as_u64());
        assert_eq!(row.started_at, line["started_at"].as_str().unwrap());
        assert_eq!(row.relay_node, "edge");
    }

    // The final report carries the hole-punch summary, attributed to the RelayNode.
    let report = collector
        .reports
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.hole_punch.as_ref().is_some_and(|p| p.attempts == 4))
        .max_by_key(|r| r.sequence)
        .cloned()
        .unwrap_or_else(|| panic!("no report with 4 attempts:\n{}", dialer.log_text()));
    assert_eq!(report.sender, "dialer-0-punch");
    assert!(report.peers.is_none() && report.relay.is_none());
    let p = report.hole_punch.unwrap();
    assert_eq!((p.attempts, p.successes, p.failures, p.relay.as_str()), (4, 2, 2, "edge"));
    assert_eq!(p.time_to_direct_ms_buckets.iter().sum::<u64>(), 2);
    assert_eq!(p.by_transport.iter().map(|t| t.attempts).sum::<u64>(), 4);

    // Through the relay's QUIC address: the direct connection is TCP or QUIC, whichever is
    // confirmed first (QUIC may open two; one attempt is one line).
    let quic_dir = dir.path().join("dialer-quic");
    let extra: Vec<String> = vec!["--json".into(), "--target".into(), listener_id.to_string()];
    let mut quic = spawn(dir.path(), "dialer-quic", &punch_args(&relay_quic, &quic_dir, &extra), &[], true);
    let status = quic.wait_exit().await;
    assert!(status.success(), "{status}\n{}", quic.log_text());
    let lines = quic.lines();
    assert_eq!(lines.len(), 1, "{}", quic.stdout_text());
    assert_eq!(lines[0]["outcome"], "success", "{}\n{}", lines[0], quic.log_text());
    assert!(["tcp", "quic"].contains(&lines[0]["transport"].as_str().unwrap()));

    // The listener holds its reservation until SIGTERM, then exits 0.
    let status = listener.terminate().await;
    assert!(status.success(), "{status}\n{}", listener.log_text());
    let log = listener.log_text();
    assert!(log.contains("hole-punch as listener"), "the listener side ran DCUtR:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_not_hangs_and_bad_relays_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();

    // A listener started before its relay keeps asking for the reservation (with backoff) and
    // gets it once the relay is up; it holds it for --timeout-secs, then exits 0 by itself.
    let port = free_port();
    let relay_id = write_key(&dir.path().join("relay.key"));
    let early_relay: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{relay_id}").parse().unwrap();
    let extra: Vec<String> = vec!["--json".into(), "--timeout-secs".into(), "20".into()];
    let early_started = Instant::now();
    let mut early =
        spawn(dir.path(), "early-listener", &punch_args(&early_relay, &dir.path().join("early"), &extra), &[], true);
    let deadline = Instant::now() + WAIT;
    while !early.log_text().contains("reservation failed or lost") {
        assert!(early.try_exit().is_none(), "exited early:\n{}", early.log_text());
        assert!(Instant::now() < deadline, "no failed reservation logged:\n{}", early.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(early.metrics, "/readyz").await.unwrap().0, 503, "not ready without a reservation");
    let (_relay, _, relay_tcp, _) = start_relay_at(dir.path(), port, relay_id).await;
    early.wait_ready().await;
    let lines = early.wait_lines(1).await;
    assert_eq!(lines[0]["event"], "reservation", "{lines:?}");

    // A target without a reservation: the relay refuses the circuit.
    let nobody = Keypair::generate_ed25519().public().to_peer_id();
    let extra: Vec<String> =
        vec!["--json".into(), "--target".into(), nobody.to_string(), "--timeout-secs".into(), "5".into()];
    let started = Instant::now();
    let mut dialer = spawn(dir.path(), "nobody", &punch_args(&relay_tcp, &dir.path().join("d1"), &extra), &[], true);
    let status = dialer.wait_exit().await;
    assert!(status.success(), "exit 0 whatever the outcome: {status}\n{}", dialer.log_text());
    assert!(started.elapsed() < Duration::from_secs(25), "bounded: {:?}", started.elapsed());
    let lines = dialer.lines();
    assert_eq!(lines.len(), 1, "{}", dialer.stdout_text());
    let outcome = lines[0]["outcome"].as_str().unwrap();
    assert!(["no_relay_connection", "failed"].contains(&outcome), "{}", lines[0]);
    assert!(lines[0]["duration_ms"].as_u64().unwrap() <= 5500, "{}", lines[0]);
    assert!(!lines[0]["error"].as_str().unwrap().is_empty(), "{}", lines[0]);
    let rows = Reader::open(&dir.path().join("d1/sensor.sqlite")).unwrap().punch_attempts().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, outcome);

    // A relay nobody listens on: every attempt is recorded as no_relay_connection, exit 0.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{relay_id}").parse().unwrap();
    let extra: Vec<String> = vec![
        "--json".into(),
        "--target".into(),
        nobody.to_string(),
        "--attempts".into(),
        "2".into(),
        "--timeout-secs".into(),
        "3".into(),
    ];
    let mut dialer =
        spawn(dir.path(), "unreachable", &punch_args(&unreachable, &dir.path().join("d2"), &extra), &[], true);
    let status = dialer.wait_exit().await;
    assert!(status.success(), "{status}\n{}", dialer.log_text());
    let lines = dialer.lines();
    assert_eq!(outcomes(&lines), vec![(nobody.to_string(), "no_relay_connection".to_owned()); 2], "{lines:?}");

    // An attempt on a peer without DCUtR waits for its deadline; SIGTERM cancels it (recorded as
    // `cancelled`, the remaining attempts are skipped) and the process exits 0.
    let silent_id = silent_peer(&relay_tcp).await;
    let extra: Vec<String> = vec![
        "--json".into(),
        "--target".into(),
        silent_id.to_string(),
        "--attempts".into(),
        "3".into(),
        "--timeout-secs".into(),
        "30".into(),
    ];
    let mut dialer = spawn(dir.path(), "cancelled", &punch_args(&relay_tcp, &dir.path().join("d4"), &extra), &[], true);
    let deadline = Instant::now() + WAIT;
    while !dialer.log_text().contains("punch attempt started") {
        assert!(dialer.try_exit().is_none(), "exited early:\n{}", dialer.log_text());
        assert!(Instant::now() < deadline, "no attempt started:\n{}", dialer.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    let status = dialer.terminate().await;
    assert!(status.success(), "{status}\n{}", dialer.log_text());
    assert!(signalled.elapsed() < Duration::from_secs(10), "stops promptly: {:?}", signalled.elapsed());
    let lines = dialer.lines();
    assert_eq!(outcomes(&lines), vec![(silent_id.to_string(), "cancelled".to_owned())], "{lines:?}");
    assert!(lines[0]["duration_ms"].as_u64().unwrap() < 30_000, "{}", lines[0]);
    let rows = Reader::open(&dir.path().join("d4/sensor.sqlite")).unwrap().punch_attempts().unwrap();
    assert_eq!(rows.len(), 1, "the cancelled attempt is stored too");

    // Usage and set-up errors exit non-zero with a clear message.
    let d3 = dir.path().join("d3");
    let cases: Vec<(&str, Vec<String>, i32, Vec<&str>)> = vec![
        (
            "garbage-relay",
            vec![
                "punch".into(),
                "--relay".into(),
                "/ip4/127.0.0.1/tcp/x".into(),
                "--target".into(),
                nobody.to_string(),
            ],
            2,
            vec!["--relay"],
        ),
        (
            "relay-without-peer-id",
            vec![
                "punch".into(),
                "--relay".into(),
                "/ip4/127.0.0.1/tcp/4001".into(),
                "--target".into(),
                nobody.to_string(),
            ],
            1,
            vec!["punch.relay", "must end in /p2p/"],
        ),
        ("no-relay", vec!["punch".into(), "--target".into(), nobody.to_string()], 1, vec!["punch.relay", "--relay"]),
        (
            "bad-target",
            vec!["punch".into(), "--relay".into(), relay_tcp.to_string(), "--target".into(), "not-a-peer".into()],
            2,
            vec!["--target"],
        ),
    ];
    for (name, mut args, code, needles) in cases {
        args.extend(["--data-dir".into(), d3.display().to_string()]);
        let mut p = spawn(dir.path(), name, &args, &[], false);
        let status = p.wait_exit().await;
        let out = p.log_text();
        assert_eq!(status.code(), Some(code), "{name}: {out}");
        for needle in needles {
            assert!(out.contains(needle), "{name}: {needle:?} missing from:\n{out}");
        }
        assert!(p.stdout_text().is_empty(), "{name}: nothing on stdout");
    }

    let status = early.wait_exit().await;
    assert!(status.success(), "{status}\n{}", early.log_text());
    let held = early_started.elapsed();
    assert!(held >= Duration::from_secs(20) && held < Duration::from_secs(40), "held for {held:?}");
    assert!(early.log_text().contains("reservation held for punch.timeout_secs"), "{}", early.log_text());
}
