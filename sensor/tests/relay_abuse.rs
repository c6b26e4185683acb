//! The real `sensor relay` process on loopback under abuse, driven by rust-libp2p clients:
//! a reservation flood from one peer (several connections with one key) and from many peers is
//! capped at `relay.max_reservations_per_peer` and `relay.max_reservations` and the refusals
//! show in `sensor_relay_reservations_total{result="denied"}`; a reservation flood from one IP
//! is capped by `relay.reservation_rate_per_ip`; a circuit is cut at
//! `relay.max_circuit_duration_secs` and at `relay.max_circuit_bytes`. Every wait is bounded;
//! everything stays on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, identify,
    identity::Keypair,
    noise, ping, relay,
    swarm::{ConnectionId, NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use support::sensor_process::{SensorProcess, Spawn, free_port, metric, peer_id_of};
use tokio::sync::mpsc;

/// Bound of every single wait in this file.
const WAIT: Duration = Duration::from_secs(20);
/// Scheduling slack on top of a bound (2 shared cores).
const SLACK: Duration = Duration::from_millis(2500);

struct Relay {
    process: SensorProcess,
    tcp: Multiaddr,
    id: PeerId,
    _dir: tempfile::TempDir,
}

/// `sensor relay` on a free TCP port of 127.0.0.1 (its external address), with `env` on top.
async fn start(name: &str, env: &[(&str, &str)]) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let tcp: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", free_port()).parse().unwrap();
    let identity = dir.path().join("relay.key");
    let args: Vec<String> =
        vec!["relay".into(), "--identity".into(), identity.display().to_string(), "--listen".into(), tcp.to_string()];
    let mut vars = vec![("SENSOR_RELAY_EXTERNAL_ADDRESSES", tcp.to_string())];
    vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut process = SensorProcess::spawn(Spawn {
        dir: dir.path(),
        name,
        args: &args,
        env: &vars,
        metrics: true,
        rust_log: "info,sensor=debug",
        wait: WAIT,
    });
    process.wait_ready().await;
    let id = peer_id_of(&identity);
    Relay { process, tcp, id, _dir: dir }
}

impl Relay {
    fn circuit(&self) -> Multiaddr {
        self.tcp.clone().with_p2p(self.id).unwrap().with(libp2p::multiaddr::Protocol::P2pCircuit)
    }
}

#[derive(NetworkBehaviour)]
struct ClientBehaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

type Event = SwarmEvent<<ClientBehaviour as NetworkBehaviour>::ToSwarm>;

/// A client swarm with `key`, pinging every `ping` on each connection.
fn client(key: Keypair, ping_every: Duration) -> Swarm<ClientBehaviour> {
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, relay| ClientBehaviour {
            relay,
            identify: identify::Behaviour::new(identify::Config::new("/relay-abuse/1".into(), key.public())),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(ping_every)),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Runs `swarm` in a task forwarding every event; the task ends, dropping the swarm and closing
/// its connections, as soon as the receiver is dropped.
fn drive(mut swarm: Swarm<ClientBehaviour>) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// Reads events until `f` returns `Some` (bounded by [`WAIT`]).
async fn until<T>(events: &mut mpsc::UnboundedReceiver<Event>, what: &str, mut f: impl FnMut(Event) -> Option<T>) -> T {
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

/// A client with `key` asks `relay` for a reservation on its own connection; returns whether it
/// was accepted, and the running client (a reservation lives as long as its connection).
async fn reserve(relay: &Relay, key: Keypair) -> (bool, mpsc::UnboundedReceiver<Event>) {
    let mut swarm = client(key, Duration::from_secs(10));
    swarm.listen_on(relay.circuit()).unwrap();
    let mut events = drive(swarm);
    let accepted = until(&mut events, "the reservation outcome", |event| match event {
        SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted { .. })) => {
            Some(true)
        }
        SwarmEvent::ListenerClosed { .. } => Some(false),
        _ => None,
    })
    .await;
    (accepted, events)
}

fn reservations(text: &str, result: &str) -> f64 {
    metric(text, &format!("sensor_relay_reservations_total{{result=\"{result}\"}}")).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_flood_is_capped_per_peer_and_in_total_and_counted() {
    let relay = start(
        "reservation-flood",
        &[
            ("SENSOR_RELAY_MAX_RESERVATIONS", "4"),
            ("SENSOR_RELAY_MAX_RESERVATIONS_PER_PEER", "2"),
            ("SENSOR_RELAY_RESERVATION_RATE_PER_PEER", "0"),
            ("SENSOR_RELAY_RESERVATION_RATE_PER_IP", "0"),
        ],
    )
    .await;
    // One peer, five connections (five swarms with one key), each asking for a reservation.
    let key = Keypair::generate_ed25519();
    let mut held = Vec::new();
    let mut one_peer = Vec::new();
    for _ in 0..5 {
        let (accepted, events) = reserve(&relay, key.clone()).await;
        one_peer.push(accepted);
        held.push(events);
    }
    assert_eq!(one_peer, [true, true, false, false, false], "max_reservations_per_peer = 2");
    // Many peers: the relay holds 4 reservations in all.
    let mut many = Vec::new();
    for _ in 0..6 {
        let (accepted, events) = reserve(&relay, Keypair::generate_ed25519()).await;
        many.push(accepted);
        held.push(events);
    }
    assert_eq!(many, [true, true, false, false, false, false], "max_reservations = 4");

    let text = relay.process.wait_metrics(&["sensor_relay_reservations_active 4"]).await;
    assert_eq!(reservations(&text, "accepted"), 4.0, "{text}");
    assert_eq!(reservations(&text, "denied"), 7.0, "{text}");
    // A reservation that ends frees its place: a new peer gets one. (The first of the "many"
    // peers: it has one connection. For a peer with several, `sensor_relay_reservations_active`
    // may stay one too high until its other connections close, see `p2p::stats`.)
    drop(held.remove(5));
    relay.process.wait_metrics(&["sensor_relay_reservations_active 3"]).await;
    let (accepted, _late) = reserve(&relay, Keypair::generate_ed25519()).await;
    assert!(accepted, "a freed reservation slot is usable");
    relay.process.wait_metrics(&["sensor_relay_reservations_active 4"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_flood_from_one_ip_is_rate_limited() {
    let relay = start(
        "reservation-rate",
        &[
            ("SENSOR_RELAY_MAX_RESERVATIONS", "100"),
            ("SENSOR_RELAY_RESERVATION_RATE_PER_PEER", "0"),
            ("SENSOR_RELAY_RESERVATION_RATE_PER_IP", "3"),
        ],
    )
    .await;
    // Ten peers from 127.0.0.1: the bucket of 3 (refilled one a minute) admits three.
    let mut outcomes = Vec::new();
    let mut held = Vec::new();
    for _ in 0..10 {
        let (accepted, events) = reserve(&relay, Keypair::generate_ed25519()).await;
        outcomes.push(accepted);
        held.push(events);
    }
    assert_eq!(outcomes.iter().filter(|a| **a).count(), 3, "{outcomes:?}");
    assert_eq!(&outcomes[..3], [true, true, true], "{outcomes:?}");
    let text = relay.process.wait_metrics(&["sensor_relay_reservations_active 3"]).await;
    assert_eq!((reservations(&text, "accepted"), reservations(&text, "denied")), (3.0, 7.0), "{text}");
}

/// Client 1 reserves, client 2 connects to it through the relay. Returns client 2's events and
/// the relayed connection's id, with both clients running (client 1's events second).
async fn relayed_pair(
    relay: &Relay,
    ping_every: Duration,
) -> (mpsc::UnboundedReceiver<Event>, ConnectionId, mpsc::UnboundedReceiver<Event>) {
    let key = Keypair::generate_ed25519();
    let target = key.public().to_peer_id();
    let mut c1 = client(key, ping_every);
    c1.listen_on(relay.circuit()).unwrap();
    let mut c1_events = drive(c1);
    until(&mut c1_events, "reservation accepted", |event| match event {
        SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted { .. })) => {
            Some(())
        }
        SwarmEvent::ListenerClosed { reason, .. } => panic!("reservation failed: {reason:?}"),
        _ => None,
    })
    .await;
    let mut c2 = client(Keypair::generate_ed25519(), ping_every);
    c2.dial(relay.circuit().with_p2p(target).unwrap()).unwrap();
    let mut c2_events = drive(c2);
    let relayed = until(&mut c2_events, "relayed connection", |event| match event {
        SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. }
            if peer_id == target && endpoint.is_relayed() =>
        {
            Some(connection_id)
        }
        SwarmEvent::OutgoingConnectionError { peer_id: Some(p), error, .. } if p == target => {
            panic!("dial through the circuit failed: {error}")
        }
        _ => None,
    })
    .await;
    (c2_events, relayed, c1_events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_of_one_peer_are_capped_at_max_circuits_per_peer() {
    let relay = start(
        "circuits-per-peer",
        &[
            ("SENSOR_RELAY_MAX_CIRCUITS_PER_PEER", "2"),
            ("SENSOR_RELAY_CIRCUIT_RATE_PER_PEER", "0"),
            ("SENSOR_RELAY_CIRCUIT_RATE_PER_IP", "0"),
        ],
    )
    .await;
    let target_key = Keypair::generate_ed25519();
    let target = target_key.public().to_peer_id();
    let (reserved, _target_events) = reserve(&relay, target_key).await;
    assert!(reserved, "the target's reservation");
    // One source peer (one key, three swarms) opens circuits to the same target.
    let key = Keypair::generate_ed25519();
    let mut outcomes = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut swarm = client(key.clone(), Duration::from_secs(10));
        swarm.dial(relay.circuit().with_p2p(target).unwrap()).unwrap();
        let mut events = drive(swarm);
        let connected = until(&mut events, "the circuit outcome", |event| match event {
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. }
                if peer_id == target && endpoint.is_relayed() =>
            {
                Some(true)
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(p), .. } if p == target => Some(false),
            _ => None,
        })
        .await;
        outcomes.push(connected);
        held.push(events);
    }
    assert_eq!(outcomes, [true, true, false], "max_circuits_per_peer = 2");
    let text = relay.process.wait_metrics(&["sensor_relay_circuits_active 2"]).await;
    assert_eq!((circuits(&text, "accepted"), circuits(&text, "denied")), (2.0, 1.0), "{text}");
}

/// Waits (bounded) for the relayed connection `id` to close; returns the pings that succeeded
/// on it before.
async fn until_closed(events: &mut mpsc::UnboundedReceiver<Event>, id: ConnectionId) -> u32 {
    let mut pings = 0;
    until(events, "the relayed connection to close", |event| match event {
        SwarmEvent::Behaviour(ClientBehaviourEvent::Ping(ping::Event { connection, result: Ok(_), .. }))
            if connection == id =>
        {
            pings += 1;
            None
        }
        SwarmEvent::ConnectionClosed { connection_id, .. } if connection_id == id => Some(()),
        _ => None,
    })
    .await;
    pings
}

fn circuits(text: &str, result: &str) -> f64 {
    metric(text, &format!("sensor_relay_circuits_total{{result=\"{result}\"}}")).unwrap_or(-1.0)
}

/// The relay's `circuit closed` log lines (debug), which carry the relay's reason.
fn circuit_closed_lines(relay: &Relay) -> Vec<String> {
    relay.process.log_text().lines().filter(|l| l.contains("circuit closed")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_circuit_is_cut_at_max_circuit_duration() {
    const DURATION: Duration = Duration::from_secs(2);
    let relay = start(
        "circuit-duration",
        &[("SENSOR_RELAY_MAX_CIRCUIT_DURATION_SECS", "2"), ("SENSOR_RELAY_MAX_CIRCUIT_BYTES", "1073741824")],
    )
    .await;
    let (mut events, relayed, _c1) = relayed_pair(&relay, Duration::from_millis(250)).await;
    let opened = Instant::now();
    let pings = until_closed(&mut events, relayed).await;
    let lived = opened.elapsed();
    eprintln!("circuit lived {lived:?} with {pings} pings (max_circuit_duration {DURATION:?})");
    assert!(pings >= 2, "the circuit carried traffic before the cut ({pings} pings)");
    // `opened` is when client 2 finished Noise + Yamux over the circuit, a moment after the relay
    // started the circuit's clock.
    assert!(lived + Duration::from_secs(1) >= DURATION, "cut early: {lived:?}");
    assert!(lived <= DURATION + SLACK, "cut late: {lived:?}");
    let text = relay.process.wait_metrics(&["sensor_relay_circuits_active 0"]).await;
    assert_eq!((circuits(&text, "accepted"), circuits(&text, "closed")), (1.0, 1.0), "{text}");
    let lines = circuit_closed_lines(&relay);
    assert!(lines.iter().any(|l| l.contains("timed out")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_is_cut_at_max_circuit_bytes() {
    const BYTES: u64 = 8192;
    let relay = start(
        "circuit-bytes",
        &[("SENSOR_RELAY_MAX_CIRCUIT_DURATION_SECS", "600"), ("SENSOR_RELAY_MAX_CIRCUIT_BYTES", "8192")],
    )
    .await;
    // A ping (32 bytes each way, plus Noise and Yamux framing) every 20 ms crosses 8 KiB in a
    // few seconds; the duration limit is far away.
    let (mut events, relayed, _c1) = relayed_pair(&relay, Duration::from_millis(20)).await;
    let opened = Instant::now();
    let pings = until_closed(&mut events, relayed).await;
    let lived = opened.elapsed();
    eprintln!("circuit carried {pings} pings in {lived:?} before the {BYTES}-byte cut");
    // Each ping moves 64 payload bytes through the circuit: the cut came after about BYTES.
    assert!(pings >= 10, "the circuit carried traffic ({pings} pings)");
    assert!(u64::from(pings) * 64 <= BYTES, "{pings} pings moved more than {BYTES} bytes");
    assert!(lived < Duration::from_secs(60), "cut by bytes, not by the 600 s duration: {lived:?}");
    let text = relay.process.wait_metrics(&["sensor_relay_circuits_active 0"]).await;
    assert_eq!((circuits(&text, "accepted"), circuits(&text, "closed")), (1.0, 1.0), "{text}");
    let lines = circuit_closed_lines(&relay);
    assert!(lines.iter().any(|l| l.contains("Max circuit bytes reached")), "{lines:?}");
}
