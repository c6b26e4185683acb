//! The collector over real gRPC on loopback: push with the generated tonic client, publish, read
//! the aggregate, check the metrics, and shut the server down. Every wait is bounded.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use operator::collector::{CollectorMetrics, ReportStore, StoreLimits, serve};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use sensor_report::v1::collector_client::CollectorClient;
use sensor_report::v1::{Owner, PeerSummary, Report};
use sensor_report::{OWNER_SENSOR_FLEET, PeerIdSketch};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("{what} took longer than {WAIT:?}"))
}

fn report(sender: &str, sequence: u64, public: u64, ids: &[u8]) -> Report {
    let mut sketch = PeerIdSketch::new();
    ids.iter().for_each(|n| sketch.insert(&[*n; 16]));
    Report {
        owner: Some(Owner { namespace: "lab".into(), kind: OWNER_SENSOR_FLEET.into(), name: "alpha".into() }),
        sender: sender.into(),
        sensor_id: format!("{sender}-id"),
        network: "testnet-10".into(),
        started_at_unix_ms: 1_748_779_200_000,
        sequence,
        generated_at_unix_ms: 1_748_779_260_000,
        peers: Some(PeerSummary {
            public,
            peer_ids: ids.iter().map(|n| vec![*n; 16]).collect(),
            peer_ids_complete: true,
            peer_id_sketch: sketch.to_bytes(),
            distinct_peers: ids.len() as u64,
            ..Default::default()
        }),
        agent: "sensor/0.1.0".into(),
        ..Default::default()
    }
}

fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn collector_stores_aggregates_and_counts_reports_pushed_over_grpc() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(ReportStore::new(StoreLimits::default()));
    let mut registry = Registry::default();
    let metrics = CollectorMetrics::register(&mut registry);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, store.clone(), metrics.clone(), async {
        let _ = stopped.await;
    }));

    let channel = bounded("connect", Channel::from_shared(format!("http://{addr}")).unwrap().connect()).await.unwrap();
    let mut client = CollectorClient::new(channel);

    // A valid report is acknowledged and visible after the next publish.
    let ack = bounded("push", client.push(report("alpha-0", 2, 3, &[1, 2, 3]))).await.unwrap().into_inner();
    assert_eq!(ack.next_report_after_ms, 0);
    bounded("push", client.push(report("alpha-1", 1, 2, &[3, 4]))).await.unwrap();
    assert!(store.fleet("lab", "alpha").is_none(), "not published yet");
    let stats = store.publish(Timestamp::now(), Duration::from_secs(60), Duration::from_secs(600));
    metrics.record_publish(&stats);
    let fleet = store.fleet("lab", "alpha").expect("published fleet");
    assert_eq!((fleet.senders, fleet.reporting, fleet.peers.public), (2, 2, 5));
    assert_eq!((fleet.peers.unique_across_fleet, fleet.peers.unique_is_estimate), (4, false));

    // A stale sequence is acknowledged and dropped.
    bounded("push", client.push(report("alpha-0", 1, 1000, &[9]))).await.unwrap();
    store.publish(Timestamp::now(), Duration::from_secs(60), Duration::from_secs(600));
    assert_eq!(store.fleet("lab", "alpha").unwrap().peers.public, 5);

    // A 15-byte peer id is INVALID_ARGUMENT with the validation message, and counted.
    let mut bad = report("alpha-0", 3, 3, &[1]);
    bad.peers.as_mut().unwrap().peer_ids.push(vec![7; 15]);
    let status = bounded("push", client.push(bad)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("15 bytes"), "{}", status.message());
    // A report without owner too.
    let mut ownerless = report("alpha-0", 4, 3, &[1]);
    ownerless.owner = None;
    assert_eq!(bounded("push", client.push(ownerless)).await.unwrap_err().code(), Code::InvalidArgument);

    let text = metrics_text(&registry);
    for line in [
        r#"operator_collector_reports_total{result="stored"} 2"#,
        r#"operator_collector_reports_total{result="stale"} 1"#,
        r#"operator_collector_reports_total{result="invalid_peer_id"} 1"#,
        r#"operator_collector_reports_total{result="invalid_owner"} 1"#,
        r#"operator_collector_reports_total{result="too_many_owners"} 0"#,
        "operator_collector_owners 1",
        "operator_collector_senders 2",
        "operator_collector_report_bytes_count 5",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    // The shutdown future stops the server, which then refuses connections.
    drop(client);
    stop.send(()).unwrap();
    bounded("server shutdown", server).await.unwrap().unwrap();
    let refused = bounded("reconnect", Channel::from_shared(format!("http://{addr}")).unwrap().connect()).await;
    assert!(refused.is_err(), "the server still accepts connections after shutdown");
}

#[tokio::test]
async fn collector_answers_resource_exhausted_when_full() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(ReportStore::new(StoreLimits { max_senders_per_owner: 1, ..StoreLimits::default() }));
    let mut registry = Registry::default();
    let metrics = CollectorMetrics::register(&mut registry);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, store, metrics, async {
        let _ = stopped.await;
    }));
    let channel = bounded("connect", Channel::from_shared(format!("http://{addr}")).unwrap().connect()).await.unwrap();
    let mut client = CollectorClient::new(channel);

    bounded("push", client.push(report("alpha-0", 1, 1, &[1]))).await.unwrap();
    let status = bounded("push", client.push(report("alpha-1", 1, 1, &[2]))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let text = metrics_text(&registry);
    assert!(text.contains(r#"operator_collector_reports_total{result="too_many_senders"} 1"#), "{text}");

    drop(client);
    stop.send(()).unwrap();
    bounded("server shutdown", server).await.unwrap().unwrap();
}
