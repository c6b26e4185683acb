//! `sensor listen` against peers built from kaspa-p2p-lib itself (its `Adaptor` and
//! `KaspadHandshake`) on loopback. Complements the real-kaspad e2e (`e2e_kaspad.rs`).
//!
//! On loopback a connection leaves from 127.0.0.1 whatever the peer listens on, so each test
//! peer advertises the port it listens on in `Version.address`, and the sensor dials 127.0.0.1
//! at that port: a peer listening there is public, one that is not is private.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, Instant},
};

use kaspa_p2p_lib::{Adaptor, ConnectionInitializer, Hub, KaspadHandshake, Router, common::ProtocolError};
use sensor::{
    kaspa::{flows::PeerFlows, version::LocalVersion},
    listen::Sensor,
    store::query::Reader,
};
use sensor_core::{
    config::{CliOverrides, Config},
    network::Network,
};
use uuid::Uuid;

/// A free loopback TCP port (bound then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal Kaspa node: the library's handshake plus the sensor's keep-alive flows.
struct TestNode {
    version: LocalVersion,
}

#[tonic::async_trait]
impl ConnectionInitializer for TestNode {
    async fn initialize_connection(&self, router: Arc<Router>) -> Result<(), ProtocolError> {
        let mut handshake = KaspadHandshake::new(&router);
        router.start();
        let theirs = handshake.handshake(self.version.message()).await?;
        // Without an identity, two connections from one IP share the nil key and evict each other.
        router.set_identity(kaspa_utils::networking::PeerId::from_slice(&theirs.id)?);
        let flows = PeerFlows::subscribe_after_handshake(&router);
        handshake.exchange_ready_messages().await?;
        let (metrics, _) = sensor::metrics::Metrics::new();
        tokio::spawn(flows.run(router, vec![], None, metrics, std::future::pending()));
        Ok(())
    }
}

/// Starts a node on `network` that advertises `advertised` and, when `listen` is set, serves on it.
fn node(network: Network, advertised: SocketAddr, listen: bool) -> (Arc<Adaptor>, Uuid) {
    let id = Uuid::new_v4();
    let init = Arc::new(TestNode { version: LocalVersion { network, id, address: Some(advertised) } });
    let adaptor = if listen {
        Adaptor::bidirectional(advertised.into(), Hub::new(), init, Default::default()).unwrap()
    } else {
        Adaptor::client_only(Hub::new(), init, Default::default())
    };
    (adaptor, id)
}

fn test_config(dir: &std::path::Path, max_per_ip: usize) -> Config {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let overrides = CliOverrides {
        network: Some(Network::Devnet),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], free_port()))),
        data_dir: Some(dir.to_owned()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        allow_private_targets: Some(true),
        ..CliOverrides::default()
    };
    let env = vec![
        ("SENSOR_CLASSIFY_PROBE_TIMEOUT_MS".to_owned(), "1000".to_owned()),
        ("SENSOR_CLASSIFY_PROBE_RETRY_DELAY_MS".to_owned(), "100".to_owned()),
        ("SENSOR_LISTEN_MAX_PEERS_PER_IP".to_owned(), max_per_ip.to_string()),
        ("SENSOR_STORAGE_FLUSH_INTERVAL_MS".to_owned(), "10".to_owned()),
        ("SENSOR_LISTEN_HANDSHAKE_TIMEOUT_MS".to_owned(), "1000".to_owned()),
    ];
    Config::load(None, env, &overrides).unwrap().0
}

/// Polls `f` every 100 ms for at most `limit`.
async fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn verdict_of(reader: &Reader, peer_id: &Uuid) -> Option<(String, String)> {
    let peers = reader.peers(100).ok()?;
    let row = peers.into_iter().find(|p| p.peer_id == peer_id.simple().to_string())?;
    Some((row.classification?, row.reason?))
}

fn rejected(counts: &sensor::store::query::EventCounts, reason: &str) -> Option<u64> {
    counts.rejected_by_reason.iter().find(|(r, _)| r == reason).map(|(_, n)| *n)
}

async fn metrics_text(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name_and_labels} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifies_public_private_different_node_and_rejects_wrong_network() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), 8);
    let sensor = Sensor::start(&config).await.unwrap();
    let target = sensor.p2p_address.to_string();
    let db = config.database_path();

    // Public: listens on the port it advertises, at 127.0.0.1 (its source IP).
    let public_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (public, public_id) = node(Network::Devnet, public_addr, true);
    public.connect_peer(target.clone()).await.expect("public node connects");

    // Private: advertises a port nobody listens on.
    let (private, private_id) = node(Network::Devnet, SocketAddr::from(([127, 0, 0, 1], free_port())), false);
    private.connect_peer(target.clone()).await.expect("private node connects");

    // Different node: advertises the public node's port, so the dial-back meets another id.
    let (imposter, imposter_id) = node(Network::Devnet, public_addr, false);
    imposter.connect_peer(target.clone()).await.expect("imposter connects");

    // Wrong network: the sensor refuses it after reading its Version.
    let (simnet, _) = node(Network::Simnet, SocketAddr::from(([127, 0, 0, 1], free_port())), false);
    assert!(simnet.connect_peer(target.clone()).await.is_err(), "a simnet node must be refused");

    let reader = eventually(Duration::from_secs(10), || Reader::open(&db).ok()).await;
    let public_verdict = eventually(Duration::from_secs(20), || verdict_of(&reader, &public_id)).await;
    assert_eq!(public_verdict, ("public".into(), "handshake_verified".into()));
    let private_verdict = eventually(Duration::from_secs(20), || verdict_of(&reader, &private_id)).await;
    assert_eq!(private_verdict, ("private".into(), "refused".into()));
    let imposter_verdict = eventually(Duration::from_secs(20), || verdict_of(&reader, &imposter_id)).await;
    assert_eq!(imposter_verdict, ("private".into(), "different_node".into()));

    // Every event is stored with its facts.
    let events = reader.events_for_peer(&public_id.simple().to_string()).unwrap();
    let accepted = events.iter().find(|e| e.kind == "connection").expect("accepted event");
    assert_eq!(accepted.result.as_deref(), Some("accepted"));
    assert_eq!(accepted.protocol_version, Some(11));
    assert_eq!(accepted.network.as_deref(), Some("kaspa-devnet"));
    assert!(accepted.user_agent.as_deref().unwrap().starts_with("/kaspa-sensor:"));
    assert_eq!(accepted.advertised_address.as_deref(), Some(public_addr.to_string().as_str()));
    let verdict = events.iter().find(|e| e.kind == "verdict").expect("verdict event");
    assert_eq!(verdict.probe_target.as_deref(), Some(public_addr.to_string().as_str()));
    assert!(verdict.probe_duration_ms.is_some());
    let counts = reader.event_counts().unwrap();
    assert_eq!(rejected(&counts, "wrong_network"), Some(1), "{counts:?}");

    let text = metrics_text(sensor.metrics_address).await;
    assert_eq!(metric(&text, "sensor_peers_classified_public_total "), 1.0);
    assert_eq!(metric(&text, "sensor_peers_classified_private_total "), 2.0);
    assert_eq!(metric(&text, "sensor_inbound_rejections_total{reason=\"wrong_network\"} "), 1.0);
    assert_eq!(metric(&text, "sensor_connections_active "), 3.0);

    // The connections stay up and the gauge goes down when peers leave.
    private.close().await;
    imposter.close().await;
    eventually(Duration::from_secs(10), || {
        let m = sensor.context().metrics.connections_active.get();
        (m == 1).then_some(())
    })
    .await;
    public.close().await;
    sensor.shutdown().await.unwrap();
    let stored = Reader::open(&db).unwrap().event_counts().unwrap();
    assert_eq!(stored.total, 4 + 3, "4 connection events + 3 verdicts: {stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_rejects_and_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), 1);
    let sensor = Sensor::start(&config).await.unwrap();
    let target = sensor.p2p_address.to_string();
    let (first, _) = node(Network::Devnet, SocketAddr::from(([127, 0, 0, 1], free_port())), false);
    first.connect_peer(target.clone()).await.expect("first peer admitted");
    let (second, _) = node(Network::Devnet, SocketAddr::from(([127, 0, 0, 1], free_port())), false);
    assert!(second.connect_peer(target).await.is_err(), "second peer from 127.0.0.1 exceeds max_peers_per_ip=1");
    sensor.shutdown().await.unwrap();
    let counts = Reader::open(&config.database_path()).unwrap().event_counts().unwrap();
    // The sensor refuses at TCP accept, one event per TCP connection; tonic's channel in the
    // library redials when the connection closes before its request went out (1 to 3 times
    // seen), so the count of refusals is the client's. Every one is `ip_limit`, and bounded.
    let refused = rejected(&counts, "ip_limit").unwrap_or(0);
    assert!((1..=8).contains(&refused), "{counts:?}");
    assert_eq!((counts.accepted, counts.rejected), (1, refused), "{counts:?}");
    first.close().await;
}

#[tokio::test]
async fn port_in_use_is_a_clear_bind_error() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(dir.path(), 4);
    config.listen.address = Some(busy.local_addr().unwrap());
    let err = Sensor::start(&config).await.err().expect("bind must fail");
    assert_eq!(err.kind(), "bind");
    assert!(err.to_string().contains(&busy.local_addr().unwrap().to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_wire_client_from_another_loopback_source_is_accepted_and_kept() {
    use sensor::kaspa::wire::WireConnection;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), 4);
    let sensor = Sensor::start(&config).await.unwrap();
    let src: std::net::IpAddr = "127.0.3.7".parse().unwrap();
    let version = LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address: None };
    let mut conn = WireConnection::connect(sensor.p2p_address, Some(src), Duration::from_secs(5)).await.unwrap();
    let theirs = conn.handshake(version.message(), Duration::from_secs(5)).await.expect("handshake");
    assert_eq!(theirs.id, hex::decode(&sensor.peer_id).unwrap());
    let keep = tokio::spawn(conn.serve());
    eventually(Duration::from_secs(5), || (sensor.context().metrics.connections_active.get() == 1).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sensor.context().metrics.connections_active.get(), 1, "the raw client stays connected");
    let reader = Reader::open(&config.database_path()).unwrap();
    let row = eventually(Duration::from_secs(5), || reader.peers(10).ok()?.into_iter().next()).await;
    assert_eq!(row.last_ip.as_deref(), Some("127.0.3.7"));
    keep.abort();
    sensor.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_peers_are_recorded_as_accepted() {
    use sensor::kaspa::wire::WireConnection;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), 64);
    let sensor = Sensor::start(&config).await.unwrap();
    for i in 0..20u8 {
        let src = std::net::IpAddr::from([127, 0, 4, i + 1]);
        let version = LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address: None };
        let mut conn = WireConnection::connect(sensor.p2p_address, Some(src), Duration::from_secs(5)).await.unwrap();
        conn.handshake(version.message(), Duration::from_secs(5)).await.expect("handshake");
        conn.close(Duration::from_secs(5)).await;
    }
    let metrics = sensor.context().metrics.clone();
    eventually(Duration::from_secs(10), || {
        (metrics
            .verdicts
            .get_or_create(&sensor::metrics::VerdictLabels { classification: "unknown", reason: "private_source" })
            .get()
            + metrics.peers_classified_private.get()
            >= 20)
            .then_some(())
    })
    .await;
    let accepted = metrics
        .connections
        .get_or_create(&sensor::metrics::ConnectionLabels { direction: "inbound", result: "accepted" })
        .get();
    assert_eq!(accepted, 20, "a peer that completed the handshake and left at once is still an accepted connection");
    sensor.shutdown().await.unwrap();
}

/// Waits until the store holds a rejected event with `reason`.
async fn wait_for_rejection(db: &std::path::Path, reason: &str) {
    eventually(Duration::from_secs(10), || {
        let counts = Reader::open(db).ok()?.event_counts().ok()?;
        (rejected(&counts, reason)? >= 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_are_refused_recorded_and_do_not_hurt_the_listener() {
    use kaspa_p2p_lib::pb::{AddressesMessage, NetAddress, PingMessage, kaspad_message::Payload};
    use sensor::kaspa::wire::WireConnection;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), 16);
    let db = config.database_path();
    let sensor = Sensor::start(&config).await.unwrap();
    let at = |last: u8| Some(std::net::IpAddr::from([127, 0, 5, last]));
    let connect = |src| WireConnection::connect(sensor.p2p_address, src, Duration::from_secs(5));

    // Silent after opening the stream: the 1 s handshake timeout ends it.
    let silent = connect(at(1)).await.unwrap();
    wait_for_rejection(&db, "handshake_timeout").await;
    drop(silent);

    // A Ping before any Version is a protocol violation.
    let rude = connect(at(2)).await.unwrap();
    rude.send(Payload::Ping(PingMessage { nonce: 7 })).await.unwrap();
    wait_for_rejection(&db, "handshake_failed").await;
    drop(rude);

    // A 5 MiB message is refused by the transport limit (4 MiB); the peer is dropped.
    let huge = connect(at(3)).await.unwrap();
    let address_list = vec![NetAddress { timestamp: 0, ip: vec![1; 16], port: 1 }; 5 * 1024 * 1024 / 20];
    let _ = huge.send(Payload::Addresses(AddressesMessage { address_list })).await;
    eventually(Duration::from_secs(10), || {
        let counts = Reader::open(&db).ok()?.event_counts().ok()?;
        (rejected(&counts, "handshake_failed")? >= 2).then_some(())
    })
    .await;
    drop(huge);

    // Vanishing right after sending Version is recorded too (the stream is dropped mid-handshake).
    let gone = connect(at(4)).await.unwrap();
    let version = LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address: None };
    gone.send(Payload::Version(version.message())).await.unwrap();
    gone.close(Duration::from_secs(2)).await;
    eventually(Duration::from_secs(10), || {
        let counts = Reader::open(&db).ok()?.event_counts().ok()?;
        (rejected(&counts, "handshake_failed")? >= 3).then_some(())
    })
    .await;

    // None of it holds a slot or breaks the listener: a well-behaved peer still gets in.
    assert_eq!(sensor.context().metrics.handshakes_pending.get(), 0);
    let mut good = connect(at(5)).await.unwrap();
    let version = LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address: None };
    good.handshake(version.message(), Duration::from_secs(5)).await.expect("a normal peer is still accepted");
    // The sensor counts the peer once it has read our Ready, a moment after we read its Ready.
    eventually(Duration::from_secs(5), || (sensor.context().metrics.connections_active.get() == 1).then_some(())).await;
    good.close(Duration::from_secs(2)).await;
    sensor.shutdown().await.unwrap();
}

/// The sensor asks each accepted peer once for addresses and records the reply as gossip from
/// that peer (its IP with its advertised port): well-formed entries once each; an unsolicited
/// `Addresses` message is counted and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_peers_gossip_is_recorded_once_per_request() {
    use kaspa_p2p_lib::pb::{AddressesMessage, NetAddress, kaspad_message::Payload};
    use sensor::kaspa::wire::WireConnection;

    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), 4);
    let sensor = Sensor::start(&config).await.unwrap();
    let src: std::net::IpAddr = "127.0.3.9".parse().unwrap();
    let advertised: SocketAddr = "127.0.3.9:16611".parse().unwrap();
    let version = LocalVersion { network: Network::Devnet, id: Uuid::new_v4(), address: Some(advertised) };
    let mut conn = WireConnection::connect(sensor.p2p_address, Some(src), Duration::from_secs(5)).await.unwrap();
    conn.handshake(version.message(), Duration::from_secs(5)).await.expect("handshake");
    let entry = |ip: [u8; 4], port: u32| NetAddress { timestamp: 0, ip: ip.to_vec(), port };
    let wait_request = async {
        loop {
            match conn.recv().await.unwrap() {
                Some(Payload::RequestAddresses(_)) => return,
                Some(_) => continue,
                None => panic!("the sensor closed the stream"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait_request).await.expect("the sensor asks for addresses");
    let reply = vec![
        entry([203, 0, 113, 5], 16111),
        entry([203, 0, 113, 6], 16111),
        entry([203, 0, 113, 5], 16111),
        NetAddress { timestamp: 0, ip: vec![1, 2, 3], port: 1 },
    ];
    conn.send(Payload::Addresses(AddressesMessage { address_list: reply })).await.unwrap();
    let unsolicited = vec![entry([203, 0, 113, 7], 16111)];
    conn.send(Payload::Addresses(AddressesMessage { address_list: unsolicited })).await.unwrap();

    let metrics = sensor.context().metrics.clone();
    let unsolicited_seen = || {
        let n = metrics.gossip_messages.get_or_create(&sensor::metrics::ResultLabels { result: "unsolicited" }).get();
        (n == 1).then_some(())
    };
    eventually(Duration::from_secs(5), unsolicited_seen).await;
    let recorded = metrics.gossip_messages.get_or_create(&sensor::metrics::ResultLabels { result: "recorded" }).get();
    assert_eq!((recorded, metrics.gossip_addresses.get()), (1, 2));
    let reader = Reader::open(&config.database_path()).unwrap();
    let sightings = eventually(Duration::from_secs(5), || {
        reader.address_sightings("203.0.113.6:16111").ok().filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(sightings.len(), 1);
    assert_eq!(sightings[0].0, advertised.to_string(), "the gossiper is the peer's IP with its advertised port");
    assert_eq!(reader.address_sightings("203.0.113.5:16111").unwrap().len(), 1, "a duplicate entry counts once");
    assert!(reader.address_sightings("203.0.113.7:16111").unwrap().is_empty(), "unsolicited gossip is dropped");
    sensor.shutdown().await.unwrap();
}
