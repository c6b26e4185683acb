//! The RelayNode reconciler against a mocked API server (tower-test): every request it makes is
//! scripted, in order, and its bodies are checked.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use operator::crd::{Exposure, ExposureKind, RelayNode, RelayNodeStatus, SecretRef};
use operator::relay::build::build;
use operator::relay::identity::{IDENTITY_KEY, identity_secret, peer_id_from_secret};
use operator::relay::reconcile::{error_policy, reconcile};
use sensor_report::OWNER_RELAY_NODE;
use sensor_report::v1::{Owner, RelaySummary, Report};
use serde_json::{Value, json};
use support::{Call, Harness, NOW_SECS, Reply, cache, fixture, metrics_text, run, settings, step};

const NS: &str = "/namespaces/lab";
const STATUS: &str = "/apis/p2psensor.dev/v1alpha1/namespaces/lab/relaynodes/edge/status";

/// The `edge` relay of the builder fixtures (namespace `lab`, uid set) at `generation`.
fn edge(generation: i64) -> RelayNode {
    let mut relay: RelayNode = serde_norway::from_str(&fixture("relay/build-hostnetwork-defaults.input.yaml")).unwrap();
    relay.metadata.generation = Some(generation);
    relay
}

fn whole(relay: &RelayNode) -> Reply {
    Reply::Merge(serde_json::to_value(relay).unwrap())
}

fn status_of(call: &Call) -> RelayNodeStatus {
    serde_json::from_value(call.body["status"].clone()).unwrap()
}

fn condition<'a>(status: &'a RelayNodeStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_}"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn secret_with_key(name: &str, key: Vec<u8>) -> Value {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("lab".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(IDENTITY_KEY.to_string(), ByteString(key))])),
        ..Secret::default()
    };
    serde_json::to_value(secret).unwrap()
}

#[tokio::test]
async fn relay_create_generates_the_identity_applies_children_and_reports_the_peer_id() {
    let h = Harness::new();
    let steps = vec![
        step(Method::POST, &format!("/api/v1{NS}/secrets"), Reply::Echo),
        step(Method::PATCH, &format!("/api/v1{NS}/serviceaccounts/edge-relay"), Reply::Echo),
        step(Method::PATCH, &format!("/api/v1{NS}/configmaps/edge-relay-config"), Reply::Echo),
        step(Method::PATCH, &format!("/apis/apps/v1{NS}/deployments/edge-relay"), Reply::Echo),
        step(Method::PATCH, STATUS, whole(&edge(1))),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(edge(1)), h.ctx.clone())).await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)));

    let secret: Secret = serde_json::from_value(calls[0].body.clone()).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("edge-identity"));
    assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
    assert!(calls[0].query.contains("fieldManager=p2p-sensor-operator"), "{:?}", calls[0]);
    let peer_id = peer_id_from_secret(&secret).unwrap();

    for call in &calls[1..4] {
        assert!(
            call.query.contains("fieldManager=p2p-sensor-operator") && call.query.contains("force=true"),
            "{call:?}"
        );
    }
    let deployment = &calls[3].body;
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let identity = volumes.iter().find(|v| v["name"] == "identity").unwrap();
    assert_eq!(identity["secret"]["secretName"], "edge-identity");

    let status = status_of(&calls[4]);
    assert_eq!(status.peer_id.as_deref(), Some(peer_id.as_str()), "peerId is known before the pod reports");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&status, "Ready").1, "WorkloadNotFound");
    assert_eq!(condition(&status, "Reconciling").0, "True");
    assert_eq!(condition(&status, "Stalled").0, "False");
    let text = metrics_text(&h.registry);
    assert!(
        text.contains("controller_runtime_reconcile_total{controller=\"relaynode\",result=\"success\"} 1"),
        "{text}"
    );
    assert!(text.contains("p2psensor_operator_applies_total{kind=\"Deployment\"} 1"), "{text}");
}

#[tokio::test]
async fn relay_an_existing_identity_secret_is_read_back_never_overwritten() {
    let h = Harness::new();
    let existing = identity_secret(&edge(1)).unwrap();
    let peer_id = peer_id_from_secret(&existing).unwrap();
    let steps = vec![
        step(Method::POST, &format!("/api/v1{NS}/secrets"), Reply::Error(409)),
        step(
            Method::GET,
            &format!("/api/v1{NS}/secrets/edge-identity"),
            Reply::Json(serde_json::to_value(&existing).unwrap()),
        ),
        step(Method::PATCH, "/serviceaccounts/edge-relay", Reply::Echo),
        step(Method::PATCH, "/configmaps/edge-relay-config", Reply::Echo),
        step(Method::PATCH, "/deployments/edge-relay", Reply::Echo),
        step(Method::PATCH, STATUS, whole(&edge(1))),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(edge(1)), h.ctx.clone())).await;
    action.unwrap();
    assert_eq!(status_of(&calls[5]).peer_id.as_deref(), Some(peer_id.as_str()));
}

/// Children and identity in the caches, the Deployment rolled out, a fresh relay report: one
/// status patch (Ready True), then nothing at all for the same state.
#[tokio::test]
async fn relay_cached_identity_and_children_need_no_request_but_the_status() {
    let mut h = Harness::new();
    let relay = edge(1);
    let secret = identity_secret(&relay).unwrap();
    let peer_id = peer_id_from_secret(&secret).unwrap();
    cache(&mut h.writers.secrets, secret);
    let children = build(&relay, &settings().build, "edge-identity").unwrap();
    cache(&mut h.writers.service_accounts, children.service_account);
    cache(&mut h.writers.config_maps, children.config_map);
    let mut deployment = children.deployment;
    deployment.metadata.generation = Some(1);
    deployment.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(1),
        updated_replicas: Some(1),
        ready_replicas: Some(1),
        available_replicas: Some(1),
        ..DeploymentStatus::default()
    });
    cache(&mut h.writers.deployments, deployment);
    h.ctx.resync.done("lab/edge");
    let now = jiff::Timestamp::from_second(NOW_SECS).unwrap();
    let report = Report {
        owner: Some(Owner { namespace: "lab".into(), kind: OWNER_RELAY_NODE.into(), name: "edge".into() }),
        sender: "edge-relay-5d9c7-x2x4q".into(),
        sensor_id: "edge-relay-5d9c7-x2x4q".into(),
        started_at_unix_ms: 1,
        sequence: 1,
        relay: Some(RelaySummary {
            peer_id: peer_id.clone(),
            listen_addrs: vec!["/ip4/198.51.100.10/tcp/4001".into()],
            reservations_active: 2,
            circuits_active: 1,
            ..RelaySummary::default()
        }),
        ..Report::default()
    };
    h.ctx.reports.ingest(report, now).unwrap();
    h.ctx.reports.publish(now, Duration::from_secs(60), Duration::from_secs(3600));

    let steps = vec![step(Method::PATCH, STATUS, whole(&relay))];
    let (action, handle, calls) = run(h.handle, steps, reconcile(Arc::new(relay.clone()), h.ctx.clone())).await;
    action.unwrap();
    let status = status_of(&calls[0]);
    assert_eq!(condition(&status, "Ready"), ("True", "RelayReporting", "the relay is ready and reporting"));
    assert_eq!(status.multiaddrs, [format!("/ip4/198.51.100.10/tcp/4001/p2p/{peer_id}")]);
    assert_eq!((status.reservations_active, status.circuits_active), (2, 1));
    assert_eq!(status.peer_id, Some(peer_id));

    let mut seen = relay;
    seen.status = Some(status);
    let (action, _, calls) = run(handle, vec![], reconcile(Arc::new(seen), h.ctx.clone())).await;
    action.unwrap();
    assert!(calls.is_empty(), "an unchanged status is not rewritten: {calls:?}");
}

#[tokio::test]
async fn relay_a_missing_secret_ref_is_stalled_without_children() {
    let h = Harness::new();
    let mut relay = edge(2);
    relay.spec.identity.secret_ref = Some(SecretRef { name: "edge-key".into() });
    let steps = vec![
        step(Method::GET, &format!("/api/v1{NS}/secrets/edge-key"), Reply::Error(404)),
        step(Method::PATCH, STATUS, whole(&relay)),
        step(Method::POST, "/apis/events.k8s.io/v1/namespaces/lab/events", Reply::Echo),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(relay), h.ctx.clone())).await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)), "a success, re-read at the status interval");
    let status = status_of(&calls[1]);
    let (stalled, reason, message) = condition(&status, "Stalled");
    assert_eq!((stalled, reason), ("True", "InvalidIdentity"));
    assert!(message.contains("edge-key") && message.contains("not found"), "{message}");
    assert_eq!(condition(&status, "Ready").1, "InvalidIdentity");
    assert_eq!(condition(&status, "Reconciling").0, "False");
    assert_eq!(status.peer_id, None);
    let event = &calls[2].body;
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("InvalidIdentity")));
    let text = metrics_text(&h.registry);
    assert!(
        text.contains("controller_runtime_reconcile_total{controller=\"relaynode\",result=\"success\"} 1"),
        "{text}"
    );
    assert!(text.contains("controller_runtime_reconcile_errors_total{controller=\"relaynode\"} 0"), "{text}");
}

#[tokio::test]
async fn relay_an_undecodable_secret_ref_is_stalled_too() {
    let h = Harness::new();
    let mut relay = edge(1);
    relay.spec.identity.secret_ref = Some(SecretRef { name: "edge-key".into() });
    let steps = vec![
        step(Method::GET, "/secrets/edge-key", Reply::Json(secret_with_key("edge-key", b"garbage".to_vec()))),
        step(Method::PATCH, STATUS, whole(&relay)),
        step(Method::POST, "/events", Reply::Echo),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(relay), h.ctx.clone())).await;
    action.unwrap();
    let status = status_of(&calls[1]);
    let (stalled, reason, message) = condition(&status, "Stalled");
    assert_eq!((stalled, reason), ("True", "InvalidIdentity"));
    assert!(message.contains("not a protobuf-encoded libp2p keypair"), "{message}");
}

#[tokio::test]
async fn relay_switching_to_host_network_prunes_the_exposure_service() {
    let mut h = Harness::new();
    let mut old = edge(1);
    old.spec.exposure = Exposure { kind: ExposureKind::LoadBalancer, ..Exposure::default() };
    let secret = identity_secret(&old).unwrap();
    cache(&mut h.writers.secrets, secret);
    let children = build(&old, &settings().build, "edge-identity").unwrap();
    cache(&mut h.writers.service_accounts, children.service_account);
    cache(&mut h.writers.config_maps, children.config_map);
    cache(&mut h.writers.services, children.exposure_service.unwrap());
    cache(&mut h.writers.deployments, children.deployment);
    h.ctx.resync.done("lab/edge");
    let relay = edge(2);
    let deleted = Reply::Json(json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200}));
    let steps = vec![
        step(Method::PATCH, &format!("/apis/apps/v1{NS}/deployments/edge-relay"), Reply::Echo),
        step(Method::DELETE, &format!("/api/v1{NS}/services/edge-relay"), deleted),
        step(Method::PATCH, STATUS, whole(&relay)),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(relay), h.ctx.clone())).await;
    action.unwrap();
    assert_eq!(calls[0].body["spec"]["template"]["spec"]["hostNetwork"], true);
    assert!(metrics_text(&h.registry).contains("p2psensor_operator_deletes_total{kind=\"Service\"} 1"));
}

#[tokio::test]
async fn relay_api_errors_back_off_exponentially() {
    let h = Harness::new();
    let relay = Arc::new(edge(1));
    let steps = vec![
        step(Method::POST, &format!("/api/v1{NS}/secrets"), Reply::Error(500)),
        step(Method::POST, &format!("/api/v1{NS}/secrets"), Reply::Error(503)),
    ];
    let ctx = h.ctx.clone();
    let r = relay.clone();
    let attempts = async move {
        let mut delays = Vec::new();
        for _ in 0..2 {
            let error = reconcile(r.clone(), ctx.clone()).await.unwrap_err();
            assert_eq!(error.reason(), "KubeApi", "an API failure is retried, not Stalled");
            delays.push(error_policy(r.clone(), &error, ctx.clone()));
        }
        delays
    };
    let (delays, _, _) = run(h.handle, steps, attempts).await;
    assert_eq!(delays, [Action::requeue(Duration::from_secs(5)), Action::requeue(Duration::from_secs(10))]);
    let text = metrics_text(&h.registry);
    assert!(text.contains("controller_runtime_reconcile_errors_total{controller=\"relaynode\"} 2"), "{text}");
}
