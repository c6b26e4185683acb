//! The real `sensor relay` binary on loopback, with TCP and QUIC listeners, driven by rust-libp2p
//! clients in the test: a reservation is accepted, a second client reaches the first through the
//! circuit (over QUIC to the relay) and pings it, `/metrics` and the pushed `RelaySummary` show
//! the reservation and the circuit, SIGTERM exits 0 after a final report, and a restart with the
//! same identity file keeps the PeerId. A relay without an external address refuses
//! reservations; bad identity files, bad multiaddrs and ports in use exit non-zero with a clear
//! message. Every wait is bounded; everything stays on 127.0.0.1.

mod support;

use std::{path::Path, time::Duration};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, identify, noise, ping, relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use support::{
    collector::TestCollector,
    sensor_process::{SensorProcess, Spawn, free_port, metric, peer_id_of},
};
use tokio::sync::mpsc;

/// Bound of every single wait in this file.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The relay process

/// `sensor relay ARGS` in `dir` (see [`SensorProcess`]).
fn spawn_relay(dir: &Path, name: &str, args: &[String], env: &[(&str, String)], metrics: bool) -> SensorProcess {
    let args: Vec<String> = std::iter::once("relay".to_owned()).chain(args.iter().cloned()).collect();
    SensorProcess::spawn(Spawn { dir, name, args: &args, env, metrics, rust_log: "info", wait: WAIT })
}

/// [`spawn_relay`] with metrics, then waits for `/readyz`.
async fn start_relay(dir: &Path, name: &str, args: &[String], env: &[(&str, String)]) -> SensorProcess {
    let mut relay = spawn_relay(dir, name, args, env, true);
    relay.wait_ready().await;
    relay
}

// ---------------------------------------------------------------------------------------------
// libp2p clients

#[derive(NetworkBehaviour)]
struct ClientBehaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

type ClientSwarmEvent = SwarmEvent<<ClientBehaviour as NetworkBehaviour>::ToSwarm>;

fn client() -> Swarm<ClientBehaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, relay| ClientBehaviour {
            relay,
            identify: identify::Behaviour::new(identify::Config::new("/relay-loopback/1".into(), key.public())),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(300))),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Runs `swarm` in a task that forwards every event; the task ends when the receiver is dropped.
fn drive(mut swarm: Swarm<ClientBehaviour>) -> mpsc::UnboundedReceiver<ClientSwarmEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = swarm.select_next_some().await;
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads events until `f` returns `Some` (bounded by [`WAIT`]); `f` may panic on a wrong event.
async fn until<T>(
    events: &mut mpsc::UnboundedReceiver<ClientSwarmEvent>,
    what: &str,
    mut f: impl FnMut(ClientSwarmEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = f(event) {
                    return found;
                }
            }
            Ok(None) => panic!("{what}: the client swarm stopped"),
            Err(_) => panic!("{what}: not seen within {WAIT:?}"),
        }
    }
}

fn circuit(relay: &Multiaddr, relay_id: PeerId) -> Multiaddr {
    relay.clone().with_p2p(relay_id).unwrap().with(libp2p::multiaddr::Protocol::P2pCircuit)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_circuit_ping_metrics_report_shutdown_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tcp: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let quic: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().unwrap();
    let identity = dir.path().join("keys/relay.key");
    let collector = TestCollector::default();
    let collector_addr = collector.serve().await;
    let env = [
        ("SENSOR_REPORT_ENDPOINT", format!("http://{collector_addr}")),
        ("SENSOR_REPORT_INTERVAL_MS", "1000".to_owned()),
        ("SENSOR_REPORT_OWNER_NAMESPACE", "lab".to_owned()),
        ("SENSOR_REPORT_OWNER_KIND", "RelayNode".to_owned()),
        ("SENSOR_REPORT_OWNER_NAME", "edge".to_owned()),
        ("SENSOR_SENSOR_ID", "edge-relay-0".to_owned()),
        // The external addresses come from the environment, as the operator sets them.
        ("SENSOR_RELAY_EXTERNAL_ADDRESSES", format!("{tcp},{quic}")),
    ];
    let args: Vec<String> = vec![
        "--identity".into(),
        identity.display().to_string(),
        "--listen".into(),
        tcp.to_string(),
        "--listen".into(),
        quic.to_string(),
    ];
    let mut relay = start_relay(dir.path(), "relay", &args, &env).await;
    let relay_id = peer_id_of(&identity);
    assert!(relay.log_text().contains(&relay_id.to_string()), "the PeerId is logged:\n{}", relay.log_text());

    // Client 1 reserves a slot over TCP.
    let mut c1 = client();
    let c1_id = *c1.local_peer_id();
    c1.listen_on(circuit(&tcp, relay_id)).unwrap();
    let mut c1_events = drive(c1);
    until(&mut c1_events, "reservation accepted", |event| match event {
        SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            ..
        })) => {
            assert_eq!(relay_peer_id, relay_id);
            Some(())
        }
        SwarmEvent::ListenerClosed { reason, .. } => panic!("reservation failed: {reason:?}"),
        _ => None,
    })
    .await;

    // Client 2 reaches client 1 through the relay (QUIC to the relay) and pings it.
    let mut c2 = client();
    c2.dial(circuit(&quic, relay_id).with_p2p(c1_id).unwrap()).unwrap();
    let mut c2_events = drive(c2);
    let relayed = until(&mut c2_events, "relayed connection to client 1", |event| match event {
        SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. }
            if peer_id == c1_id && endpoint.is_relayed() =>
        {
            Some(connection_id)
        }
        SwarmEvent::OutgoingConnectionError { peer_id: Some(p), error, .. } if p == c1_id => {
            panic!("dial through the circuit failed: {error}")
        }
        _ => None,
    })
    .await;
    let rtt = until(&mut c2_events, "ping over the circuit", |event| match event {
        SwarmEvent::Behaviour(ClientBehaviourEvent::Ping(ping::Event { peer, connection, result }))
            if peer == c1_id && connection == relayed =>
        {
            Some(result.expect("ping over the relayed connection"))
        }
        _ => None,
    })
    .await;
    assert!(rtt < WAIT);

    // The relay counts the reservation and the circuit.
    let text = relay
        .wait_metrics(&[
            "sensor_relay_reservations_active 1",
            "sensor_relay_circuits_active 1",
            "sensor_relay_circuits_total{result=\"accepted\"} 1",
            "sensor_relay_circuits_total{result=\"denied\"} 0",
        ])
        .await;
    assert!(metric(&text, "sensor_relay_reservations_total{result=\"accepted\"}").unwrap() >= 1.0);
    assert_eq!(metric(&text, "sensor_relay_reservations_total{result=\"denied\"}"), Some(0.0));
    assert!(
        metric(&text, "libp2p_relay_events_total{event=\"ReservationReqAccepted\"}").unwrap() >= 1.0,
        "libp2p-metrics share the registry:\n{text}"
    );
    assert!(text.contains("libp2p_swarm_connections_incoming_total"), "{text}");

    // The collector receives the relay's state.
    let report = collector
        .wait_for("with the reservation and the circuit", WAIT, |r| {
            r.relay.as_ref().is_some_and(|s| s.reservations_active == 1 && s.circuits_total >= 1)
        })
        .await;
    let owner = report.owner.clone().unwrap();
    assert_eq!((owner.kind.as_str(), owner.namespace.as_str(), owner.name.as_str()), ("RelayNode", "lab", "edge"));
    assert_eq!((report.sensor_id.as_str(), report.network.as_str()), ("edge-relay-0", ""));
    assert!(report.peers.is_none(), "a relay sends no peer summary");
    let summary = report.relay.unwrap();
    assert_eq!(summary.peer_id, relay_id.to_base58());
    assert_eq!(summary.circuits_active, 1);
    assert!(summary.reservations_accepted_total >= 1);
    for addr in [&tcp, &quic] {
        assert!(summary.listen_addrs.contains(&addr.to_string()), "{addr} missing from {:?}", summary.listen_addrs);
    }

    // SIGTERM: exit 0 after a final report.
    let before = collector.reports.lock().unwrap().iter().map(|r| r.sequence).max().unwrap_or(0);
    let status = relay.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", relay.log_text());
    let last = collector.wait_for("after SIGTERM", WAIT, |r| r.sequence > before).await;
    let last = last.relay.unwrap();
    assert_eq!((last.reservations_active, last.circuits_active), (0, 0), "the relay is gone");
    assert!(last.circuits_total >= 1, "totals survive in the final report");
    drop((c1_events, c2_events));

    // A restart with the same identity file keeps the PeerId: a dial that names it succeeds
    // (Noise checks the key).
    let key_before = std::fs::read(&identity).unwrap();
    let relay = start_relay(dir.path(), "relay-restarted", &args, &env).await;
    assert_eq!(std::fs::read(&identity).unwrap(), key_before, "the key file is left alone");
    assert_eq!(peer_id_of(&identity), relay_id);
    let mut c3 = client();
    c3.dial(tcp.clone().with_p2p(relay_id).unwrap()).unwrap();
    let mut c3_events = drive(c3);
    until(&mut c3_events, "connection to the restarted relay", |event| match event {
        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
            assert_eq!(peer_id, relay_id);
            Some(())
        }
        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial to the restarted relay: {error}"),
        _ => None,
    })
    .await;
    assert!(relay.log_text().contains("relay identity loaded"), "{}", relay.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_external_address_reservations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tcp: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let identity = dir.path().join("relay.key");
    let args: Vec<String> =
        vec!["--identity".into(), identity.display().to_string(), "--listen".into(), tcp.to_string()];
    let relay = start_relay(dir.path(), "relay-no-external", &args, &[]).await;
    assert!(
        relay.log_text().contains("refuses every reservation"),
        "a warning explains the refusal:\n{}",
        relay.log_text()
    );
    let relay_id = peer_id_of(&identity);

    let mut c1 = client();
    c1.listen_on(circuit(&tcp, relay_id)).unwrap();
    let mut events = drive(c1);
    let failure = until(&mut events, "the reservation to fail", |event| match event {
        SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted { .. })) => {
            panic!("a relay without an external address accepted a reservation")
        }
        SwarmEvent::ListenerClosed { reason: Err(e), .. } => Some(e.to_string()),
        SwarmEvent::ListenerClosed { reason: Ok(()), .. } => Some("closed".to_owned()),
        _ => None,
    })
    .await;
    assert!(!failure.is_empty());
    let text = relay.metrics_text().await;
    assert_eq!(metric(&text, "sensor_relay_reservations_active"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "sensor_relay_reservations_total{result=\"accepted\"}"), Some(0.0));
}

/// Runs `sensor relay ARGS` that must fail at start-up; returns (exit code, output).
async fn failing_start(dir: &Path, name: &str, args: &[String]) -> (i32, String) {
    let args: Vec<String> =
        args.iter().cloned().chain(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]).collect();
    let mut relay = spawn_relay(dir, name, &args, &[], false);
    let status = relay.wait_exit().await;
    (status.code().unwrap_or(-1), relay.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_exit_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");

    // An identity file that is not a key is an error and is left as it is.
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, b"not a key").unwrap();
    let args = vec!["--identity".into(), garbage.display().to_string(), "--listen".into(), listen.clone()];
    let (code, out) = failing_start(dir.path(), "garbage-identity", &args).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("peer identity file") && out.contains("not a protobuf-encoded libp2p keypair"), "{out}");
    assert_eq!(std::fs::read(&garbage).unwrap(), b"not a key");

    // A multiaddr that does not parse is a usage error (clap's exit code 2).
    let identity = dir.path().join("relay.key").display().to_string();
    let args = vec!["--identity".into(), identity.clone(), "--external-address".into(), "/ip4/1.2.3.4/tcp/x".into()];
    let (code, out) = failing_start(dir.path(), "bad-multiaddr", &args).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--external-address"), "{out}");
    // One that parses but is not a relay address names its key.
    let args = vec!["--identity".into(), identity.clone(), "--listen".into(), "/ip4/127.0.0.1/udp/1".into()];
    let (code, out) = failing_start(dir.path(), "bad-listen", &args).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--listen") && out.contains("/ip4/127.0.0.1/udp/1"), "{out}");

    // A port in use.
    let taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let args = vec!["--identity".into(), identity, "--listen".into(), listen];
    let (code, out) = failing_start(dir.path(), "port-in-use", &args).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("cannot bind relay TCP listener on 127.0.0.1:{port}")), "{out}");
    drop(taken);
}
