//! The SensorFleet reconciler against a mocked API server (tower-test): every request it makes is
//! scripted, in order, and its bodies are checked.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::controller::Action;
use operator::crd::{RelayNode, RelayNodeStatus, RelayRef, SensorFleet, SensorFleetStatus};
use operator::error::{ObjectName, ValidateError};
use operator::fleet::build::{Workload, build};
use operator::fleet::punch::{Punch, PunchRelay};
use operator::fleet::reconcile::{error_policy, reconcile};
use sensor_report::v1::{CrawlSummary, HolePunchSummary, Owner, PeerSummary, Report, UserAgentCount};
use sensor_report::{OWNER_SENSOR_FLEET, PeerIdSketch};
use serde_json::Value;
use support::{Call, Harness, NOW_SECS, Reply, cache, fixture, fleet_from_yaml, metrics_text, run, settings, step};

const NS: &str = "/namespaces/sensors";

fn lab(generation: i64) -> SensorFleet {
    fleet_from_yaml(&fixture("fleet/statefulset-loadbalancer.yaml"), generation)
}

/// The reply to a status patch: the whole fleet with the patched status.
fn whole(fleet: &SensorFleet) -> Reply {
    Reply::Merge(serde_json::to_value(fleet).unwrap())
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap_or_else(|| panic!("no {type_}"))
}

fn status_of(call: &Call) -> SensorFleetStatus {
    serde_json::from_value(call.body["status"].clone()).unwrap()
}

/// Children of `fleet` as the caches would hold them after a successful apply.
fn cache_children(h: &mut Harness, fleet: &SensorFleet, ready: i32) {
    cache_children_with(h, fleet, ready, None);
}

/// [`cache_children`] of a fleet built with hole punching `punch`.
fn cache_children_with(h: &mut Harness, fleet: &SensorFleet, ready: i32, punch: Option<&Punch>) {
    let c = build(fleet, &settings().build, punch).unwrap();
    cache(&mut h.writers.service_accounts, c.service_account);
    cache(&mut h.writers.config_maps, c.config_map);
    cache(&mut h.writers.services, c.headless_service);
    if let Some(s) = c.exposure_service {
        cache(&mut h.writers.services, s);
    }
    let Workload::StatefulSet(mut sts) = c.workload else { panic!("fixture is a StatefulSet fleet") };
    sts.metadata.generation = Some(1);
    let replicas = sts.spec.as_ref().unwrap().replicas.unwrap();
    sts.status = Some(StatefulSetStatus {
        observed_generation: Some(1),
        replicas,
        ready_replicas: Some(ready),
        updated_replicas: Some(replicas),
        current_revision: Some("r1".into()),
        update_revision: Some("r1".into()),
        ..StatefulSetStatus::default()
    });
    cache(&mut h.writers.stateful_sets, sts);
}

#[tokio::test]
async fn create_applies_every_child_then_writes_status() {
    let h = Harness::new();
    let fleet = Arc::new(lab(1));
    let steps = vec![
        step(Method::PATCH, &format!("/api/v1{NS}/serviceaccounts/lab-sensor"), Reply::Echo),
        step(Method::PATCH, &format!("/api/v1{NS}/configmaps/lab-sensor-config"), Reply::Echo),
        step(Method::PATCH, &format!("/api/v1{NS}/services/lab-sensors"), Reply::Echo),
        step(Method::PATCH, &format!("/api/v1{NS}/services/lab-p2p"), Reply::Echo),
        step(Method::PATCH, &format!("/apis/apps/v1{NS}/statefulsets/lab-sensor"), Reply::Echo),
        step(Method::PATCH, &format!("/apis/p2psensor.dev/v1alpha1{NS}/sensorfleets/lab/status"), whole(&lab(1))),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(fleet, h.ctx.clone())).await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)));
    for call in &calls[..5] {
        assert!(
            call.query.contains("fieldManager=p2p-sensor-operator") && call.query.contains("force=true"),
            "{call:?}"
        );
    }
    let sts = &calls[4].body;
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(sts["metadata"]["ownerReferences"][0]["controller"], true);
    // spec.export: [export] in the applied sensor.toml, the Secrets' keys mounted into the sensor.
    let toml = calls[1].body["data"]["sensor.toml"].as_str().unwrap();
    assert!(toml.contains("\n[export]\nsink = \"postgres\"\n"), "{toml}");
    assert!(toml.contains("\npassword_file = \"/etc/sensor/export/password\"\n"), "{toml}");
    let pod = &sts["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "export-secrets").unwrap();
    assert_eq!(volume["projected"]["defaultMode"], 0o440);
    assert_eq!(volume["projected"]["sources"][0]["secret"]["name"], "sensor-db");
    assert_eq!(volume["projected"]["sources"][0]["secret"]["items"][0]["path"], "password");
    let mount = serde_json::json!({"name": "export-secrets", "mountPath": "/etc/sensor/export", "readOnly": true});
    assert!(pod["containers"][0]["volumeMounts"].as_array().unwrap().contains(&mount), "{pod}");
    let status = &calls[5].body["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "Ready")["reason"], "WorkloadNotFound");
    assert_eq!(condition(status, "Reconciling")["status"], "True");
    assert_eq!(condition(status, "Stalled")["status"], "False");
    assert_eq!(condition(status, "Degraded")["status"], "False");
    let text = metrics_text(&h.registry);
    assert!(
        text.contains("controller_runtime_reconcile_total{controller=\"sensorfleet\",result=\"success\"} 1"),
        "{text}"
    );
    assert!(text.contains("p2psensor_operator_applies_total{kind=\"StatefulSet\"} 1"), "{text}");
}

#[tokio::test]
async fn unchanged_children_are_skipped_and_a_spec_change_bumps_observed_generation() {
    let mut h = Harness::new();
    let old = lab(1);
    cache_children(&mut h, &old, 0);
    h.ctx.resync.done("sensors/lab");
    // Generation 2 scales to 3: only the StatefulSet differs.
    let mut fleet = lab(2);
    fleet.spec.replicas = Some(3);
    let earlier = jiff::Timestamp::from_second(NOW_SECS - 3600).unwrap();
    fleet.status = Some(SensorFleetStatus {
        observed_generation: Some(1),
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Stalled".into(),
            status: "False".into(),
            reason: "SpecValid".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(earlier),
        }],
        ..SensorFleetStatus::default()
    });
    let steps = vec![
        step(Method::PATCH, &format!("/apis/apps/v1{NS}/statefulsets/lab-sensor"), Reply::Echo),
        step(Method::PATCH, &format!("/apis/p2psensor.dev/v1alpha1{NS}/sensorfleets/lab/status"), whole(&lab(1))),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(fleet), h.ctx.clone())).await;
    action.unwrap();
    assert_eq!(calls[0].body["spec"]["replicas"], 3);
    let status = status_of(&calls[1]);
    assert_eq!(status.observed_generation, Some(2));
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.observed_generation, Some(2));
    assert_eq!(stalled.last_transition_time.0, earlier, "an unchanged status keeps its transition time");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "SensorsNotReady"));
    assert_eq!(status.sensors.desired, 2, "the cache still shows the old StatefulSet until its watch event");
}

#[tokio::test]
async fn a_mode_switch_prunes_the_old_workload_and_the_exposure_service() {
    let mut h = Harness::new();
    cache_children(&mut h, &lab(1), 2);
    // An unrelated Service of another owner in the same namespace must survive.
    let mut foreign: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "other", "namespace": "sensors",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "someone-else", "controller": true}]}
    }))
    .unwrap();
    foreign.metadata.labels = None;
    cache(&mut h.writers.services, foreign);
    h.ctx.resync.done("sensors/lab");
    let mut fleet = lab(2);
    fleet.spec.mode = operator::crd::WorkloadMode::DaemonSet;
    fleet.spec.replicas = None;
    fleet.spec.exposure = operator::crd::Exposure::default();
    fleet.spec.storage = operator::crd::Storage::default();
    let deleted =
        Reply::Json(serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200}));
    let steps = vec![
        step(Method::PATCH, &format!("/apis/apps/v1{NS}/daemonsets/lab-sensor"), Reply::Echo),
        step(Method::DELETE, &format!("/api/v1{NS}/services/lab-p2p"), deleted),
        step(Method::DELETE, &format!("/apis/apps/v1{NS}/statefulsets/lab-sensor"), Reply::Error(404)),
        step(Method::PATCH, &format!("/apis/p2psensor.dev/v1alpha1{NS}/sensorfleets/lab/status"), whole(&lab(1))),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(fleet), h.ctx.clone())).await;
    action.unwrap();
    assert_eq!(calls[0].body["kind"], "DaemonSet");
    assert_eq!(calls[0].body["spec"]["template"]["spec"]["hostNetwork"], true);
    assert!(metrics_text(&h.registry).contains("p2psensor_operator_deletes_total{kind=\"Service\"} 1"));
}

#[tokio::test]
async fn an_invalid_spec_is_stalled_without_children_and_waits_for_a_change() {
    let h = Harness::new();
    let fleet = fleet_from_yaml(&fixture("fleet/invalid-statefulset-without-replicas.yaml"), 1);
    let steps = vec![
        step(Method::PATCH, "/sensorfleets/broken/status", whole(&fleet)),
        step(Method::POST, "/apis/events.k8s.io/v1/namespaces/sensors/events", Reply::Echo),
    ];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(fleet), h.ctx.clone())).await;
    assert_eq!(action.unwrap(), Action::await_change(), "no hot retry loop");
    let status = &calls[0].body["status"];
    assert_eq!(condition(status, "Stalled")["status"], "True");
    assert_eq!(condition(status, "Stalled")["reason"], "InvalidSpec");
    assert!(condition(status, "Stalled")["message"].as_str().unwrap().contains("replicas must be at least 1"));
    assert_eq!(condition(status, "Ready")["status"], "False");
    let event = &calls[1].body;
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("InvalidSpec")));
    assert_eq!(event["regarding"]["name"], "broken");
}

#[tokio::test]
async fn api_errors_back_off_exponentially_per_object() {
    let h = Harness::new();
    let fleet = Arc::new(lab(1));
    let steps = vec![
        step(Method::PATCH, "/serviceaccounts/lab-sensor", Reply::Error(500)),
        step(Method::PATCH, "/serviceaccounts/lab-sensor", Reply::Error(503)),
    ];
    let ctx = h.ctx.clone();
    let f = fleet.clone();
    let attempts = async move {
        let mut delays = Vec::new();
        for _ in 0..2 {
            let error = reconcile(f.clone(), ctx.clone()).await.unwrap_err();
            assert_eq!(error.reason(), "KubeApi");
            delays.push(error_policy(f.clone(), &error, ctx.clone()));
        }
        delays
    };
    let (delays, _, _) = run(h.handle, steps, attempts).await;
    assert_eq!(delays, [Action::requeue(Duration::from_secs(5)), Action::requeue(Duration::from_secs(10))]);
    let mut other = lab(1);
    other.metadata.name = Some("other".into());
    let error = ValidateError::invalid_spec(ObjectName::of(&other), "x".into()).into();
    assert_eq!(
        error_policy(Arc::new(other), &error, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5)),
        "another object starts from the base delay"
    );
    let text = metrics_text(&h.registry);
    assert!(text.contains("controller_runtime_reconcile_errors_total{controller=\"sensorfleet\"} 2"), "{text}");
    assert!(text.contains("error=\"kube_api\"} 2"), "{text}");
}

fn report(sender: &str, ids: &[u8], public: u64, private: u64, ua: &str) -> Report {
    let mut sketch = PeerIdSketch::new();
    ids.iter().for_each(|b| sketch.insert(&[*b; 16]));
    Report {
        owner: Some(Owner { namespace: "sensors".into(), kind: OWNER_SENSOR_FLEET.into(), name: "lab".into() }),
        sender: sender.into(),
        sensor_id: sender.into(),
        network: "testnet-10".into(),
        started_at_unix_ms: 1,
        sequence: 1,
        peers: Some(PeerSummary {
            public,
            private,
            top_user_agents: vec![UserAgentCount { user_agent: ua.into(), peers: public + private }],
            peer_ids: ids.iter().map(|b| vec![*b; 16]).collect(),
            peer_ids_complete: true,
            peer_id_sketch: sketch.to_bytes(),
            distinct_peers: ids.len() as u64,
            ..PeerSummary::default()
        }),
        ..Report::default()
    }
}

#[tokio::test]
async fn reports_become_status_once_and_an_unchanged_status_is_not_rewritten() {
    let mut h = Harness::new();
    let fleet = lab(1);
    cache_children(&mut h, &fleet, 2);
    h.ctx.resync.done("sensors/lab");
    let now = jiff::Timestamp::from_second(NOW_SECS).unwrap();
    let store = &h.ctx.reports;
    store.ingest(report("lab-sensor-0", &[1, 2, 3], 2, 1, "/kaspad:2.1.0/"), now).unwrap();
    store.ingest(report("lab-sensor-1", &[3, 4], 1, 1, "/kaspad:2.1.0/"), now).unwrap();
    // A crawl sidecar's report: crawl figures only, not a third sensor.
    let mut crawl = report("lab-sensor-0-crawl", &[], 0, 0, "");
    crawl.peers = None;
    crawl.crawl = Some(CrawlSummary {
        known_nodes: 800,
        reachable_nodes: 420,
        last_duration_ms: 61_500,
        last_finished_unix_ms: (NOW_SECS - 10) * 1000,
        ..CrawlSummary::default()
    });
    store.ingest(crawl, now).unwrap();
    store.publish(now, Duration::from_secs(60), Duration::from_secs(3600));
    let steps = vec![step(Method::PATCH, "/sensorfleets/lab/status", whole(&fleet))];
    let (action, handle, calls) = run(h.handle, steps, reconcile(Arc::new(fleet.clone()), h.ctx.clone())).await;
    action.unwrap();
    let status = status_of(&calls[0]);
    assert_eq!((status.sensors.desired, status.sensors.ready, status.sensors.reporting), (2, 2, 2));
    assert_eq!((status.peers.public, status.peers.private, status.peers.unique_across_fleet), (3, 2, 4));
    assert!(!status.peers.unique_is_estimate);
    assert_eq!(status.top_user_agents[0].peers, 5);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AllSensorsReporting"));
    assert!(metrics_text(&h.registry).contains("p2psensor_fleet_peers{class=\"unique\"} 4"));
    let crawl = status.crawl.as_ref().unwrap();
    assert_eq!((crawl.crawlers, crawl.known_nodes, crawl.reachable_nodes), (1, 800, 420));
    assert_eq!(crawl.last_crawl_duration_ms, Some(61_500));
    let text = metrics_text(&h.registry);
    assert!(text.contains("p2psensor_fleet_crawl_nodes{network=\"testnet-10\",state=\"reachable\"} 420"), "{text}");
    assert!(text.contains("p2psensor_fleet_crawl_last_duration_seconds{network=\"testnet-10\"} 61.5"), "{text}");

    // The watch brings the fleet back with that status: nothing changed, so no request at all.
    let mut seen = fleet;
    seen.status = Some(status);
    let (action, _, calls) = run(handle, vec![], reconcile(Arc::new(seen), h.ctx.clone())).await;
    action.unwrap();
    assert!(calls.is_empty());
    let _ = StatefulSet::default();
}

// --- Hole punching through the fleet's RelayNode ---------------------------------------------

const RELAY_ID: &str = "12D3KooWFMiQUpmYgMd4rK23Q6VgdaNPWMJ9FuNin41qA9q2AGAu";
const PEERS: [&str; 3] = [
    "12D3KooW9tHTtS3inCZiYykw4u5G4frbjVFqhkmJX12gSNCVeH3e",
    "12D3KooW9xCm2jWjNVrwh51SWCQBMYdMyeU3NpT85QhLVkF6PcNM",
    "12D3KooWA284B2yjxoAAqAFwwVj6eRQ8DogF3t8wdpMzZ8Hh8wh4",
];

/// The `lab` fleet measuring hole punching through RelayNode `edge`.
fn punching_lab(generation: i64) -> SensorFleet {
    let mut fleet = lab(generation);
    fleet.spec.relay_ref = Some(RelayRef { name: "edge".into() });
    fleet
}

/// RelayNode `edge` as the relay controller's cache holds it.
fn edge(external: &[&str], peer_id: Option<&str>) -> RelayNode {
    let mut relay: RelayNode = serde_json::from_value(serde_json::json!({
        "apiVersion": "p2psensor.dev/v1alpha1", "kind": "RelayNode",
        "metadata": {"name": "edge", "namespace": "sensors", "uid": "relay-uid"},
        "spec": {"externalAddresses": external},
    }))
    .unwrap();
    relay.status = Some(RelayNodeStatus { peer_id: peer_id.map(str::to_string), ..RelayNodeStatus::default() });
    relay
}

/// The report of pod `pod`'s punch sidecar, whose PeerId is `peer_id`.
fn punch_report(pod: &str, peer_id: &str) -> Report {
    Report {
        owner: Some(Owner { namespace: "sensors".into(), kind: OWNER_SENSOR_FLEET.into(), name: "lab".into() }),
        sender: format!("{pod}-punch"),
        sensor_id: pod.into(),
        started_at_unix_ms: 1,
        sequence: 1,
        hole_punch: Some(HolePunchSummary {
            relay: "edge".into(),
            peer_id: peer_id.into(),
            reservation_held: true,
            reachability: "private-cone".into(),
            ..HolePunchSummary::default()
        }),
        ..Report::default()
    }
}

fn targets_in(config_map: &Value) -> Vec<String> {
    let text = config_map["data"]["punch-targets"].as_str().expect("a punch-targets key");
    text.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
}

fn container_names(statefulset: &Value) -> Vec<&str> {
    let containers = statefulset["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    containers.iter().map(|c| c["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_resolved_relay_adds_the_sidecar_and_new_members_only_rewrite_the_targets() {
    let mut h = Harness::new();
    cache_children(&mut h, &lab(1), 2);
    h.ctx.resync.done("sensors/lab");
    cache(&mut h.writers.relays, edge(&["/dns4/relay.example/tcp/4001", "/ip4/203.0.113.7/tcp/4001"], Some(RELAY_ID)));
    let now = jiff::Timestamp::from_second(NOW_SECS).unwrap();
    let store = h.ctx.reports.clone();
    store.ingest(punch_report("lab-sensor-1", PEERS[1]), now).unwrap();
    store.ingest(punch_report("lab-sensor-0", PEERS[0]), now).unwrap();
    store.publish(now, Duration::from_secs(60), Duration::from_secs(3600));

    // relayRef set on a running fleet: the config gets [punch] and the targets, the headless
    // Service the sidecar's metrics port, the pods the sidecar (one restart).
    let fleet = punching_lab(2);
    let steps = vec![
        step(Method::PATCH, &format!("/api/v1{NS}/configmaps/lab-sensor-config"), Reply::Echo),
        step(Method::PATCH, &format!("/api/v1{NS}/services/lab-sensors"), Reply::Echo),
        step(Method::PATCH, &format!("/apis/apps/v1{NS}/statefulsets/lab-sensor"), Reply::Echo),
        step(Method::PATCH, "/sensorfleets/lab/status", whole(&fleet)),
    ];
    let (action, handle, calls) = run(h.handle, steps, reconcile(Arc::new(fleet.clone()), h.ctx.clone())).await;
    action.unwrap();
    let relay = format!("/ip4/203.0.113.7/tcp/4001/p2p/{RELAY_ID}");
    let config_map = &calls[0].body;
    assert_eq!(targets_in(config_map), [PEERS[0], PEERS[1]], "sorted PeerIds of the punch reports");
    let toml = config_map["data"]["sensor.toml"].as_str().unwrap();
    assert!(toml.contains(&format!("relay = \"{relay}\"")) && toml.contains("relay_node = \"edge\""), "{toml}");
    let ports = calls[1].body["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.last().unwrap()["name"], "punch-metrics");
    let sts = &calls[2].body;
    assert_eq!(container_names(sts), ["sensor", "punch"]);
    assert_eq!(sts["metadata"]["annotations"]["p2psensor.dev/punch-relay"], relay.as_str());
    let status = status_of(&calls[3]);
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("False", "AsExpected"));
    assert_eq!(status.sensors.reporting, 0, "punch clients are not sensors");

    // The watches bring back what was applied; a third member reports. Only the ConfigMap is
    // re-applied: the StatefulSet (pod template) stays as it is, so no pod restarts.
    let mut config_map: ConfigMap = serde_json::from_value(calls[0].body.clone()).unwrap();
    config_map.metadata.resource_version = None;
    cache(&mut h.writers.config_maps, config_map);
    cache(&mut h.writers.services, serde_json::from_value::<Service>(calls[1].body.clone()).unwrap());
    let mut sts: StatefulSet = serde_json::from_value(calls[2].body.clone()).unwrap();
    sts.metadata.generation = Some(1);
    sts.status = h.ctx.caches.stateful_sets.state()[0].status.clone();
    cache(&mut h.writers.stateful_sets, sts);
    store.ingest(punch_report("lab-sensor-2", PEERS[2]), now).unwrap();
    store.publish(now, Duration::from_secs(60), Duration::from_secs(3600));
    let mut seen = fleet;
    seen.status = Some(status);
    let steps = vec![step(Method::PATCH, &format!("/api/v1{NS}/configmaps/lab-sensor-config"), Reply::Echo)];
    let (action, _, calls) = run(handle, steps, reconcile(Arc::new(seen), h.ctx.clone())).await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)));
    assert_eq!(calls.len(), 1);
    assert_eq!(targets_in(&calls[0].body), PEERS);
}

#[tokio::test]
async fn an_unresolvable_relay_degrades_the_fleet_and_builds_no_sidecar() {
    for (relay, reason) in [
        (None, "RelayNotFound"),
        (Some(edge(&["/ip4/203.0.113.7/tcp/4001"], None)), "RelayNotReady"),
        (Some(edge(&["/dns4/relay.example/tcp/4001"], Some(RELAY_ID))), "RelayAddressUnknown"),
    ] {
        let mut h = Harness::new();
        if let Some(relay) = relay {
            cache(&mut h.writers.relays, relay);
        }
        let fleet = punching_lab(1);
        let steps = vec![
            step(Method::PATCH, "/serviceaccounts/lab-sensor", Reply::Echo),
            step(Method::PATCH, "/configmaps/lab-sensor-config", Reply::Echo),
            step(Method::PATCH, "/services/lab-sensors", Reply::Echo),
            step(Method::PATCH, "/services/lab-p2p", Reply::Echo),
            step(Method::PATCH, "/statefulsets/lab-sensor", Reply::Echo),
            step(Method::PATCH, "/sensorfleets/lab/status", whole(&fleet)),
            step(Method::POST, "/apis/events.k8s.io/v1/namespaces/sensors/events", Reply::Echo),
        ];
        let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(fleet), h.ctx.clone())).await;
        action.unwrap();
        assert!(calls[1].body["data"].get("punch-targets").is_none(), "{reason}");
        assert!(!calls[1].body["data"]["sensor.toml"].as_str().unwrap().contains("[punch]"), "{reason}");
        assert_eq!(container_names(&calls[4].body), ["sensor"], "{reason}");
        let degraded = condition(&calls[5].body["status"], "Degraded");
        assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some(reason)));
        assert!(degraded["message"].as_str().unwrap().contains("\"edge\""), "{degraded}");
        let event = &calls[6].body;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some(reason)));
    }
}

#[tokio::test]
async fn an_operator_restart_keeps_the_sidecar_and_its_targets_until_the_relay_reports() {
    // Before the restart: the sidecar dials the relay at its reported address, with two targets.
    let mut h = Harness::new();
    let relay = format!("/ip4/198.51.100.1/tcp/4001/p2p/{RELAY_ID}");
    let before = Punch {
        relay: PunchRelay { node: "edge".into(), multiaddr: relay.clone() },
        targets: PEERS[..2].iter().map(|p| p.to_string()).collect(),
    };
    let fleet = punching_lab(1);
    cache_children_with(&mut h, &fleet, 2, Some(&before));
    // After it: the relay's status has its PeerId but no addresses yet, the collector nothing.
    cache(&mut h.writers.relays, edge(&[], Some(RELAY_ID)));
    // A restarted operator trusts the spec hashes it finds: nothing is re-applied (the pods keep
    // the last relay address, the ConfigMap its targets); only the status is written.
    let steps = vec![step(Method::PATCH, "/sensorfleets/lab/status", whole(&fleet))];
    let (action, _, calls) = run(h.handle, steps, reconcile(Arc::new(fleet.clone()), h.ctx.clone())).await;
    action.unwrap();
    assert_eq!(calls.len(), 1, "no child written: {:?}", calls.iter().map(|c| &c.path).collect::<Vec<_>>());
    let degraded = condition(&calls[0].body["status"], "Degraded");
    assert_eq!(degraded["status"], "False");
}

#[tokio::test]
async fn a_fleet_with_a_relay_waits_for_the_caches_first_list() {
    let h = Harness::new();
    let (relays, _writer) = kube::runtime::reflector::store::<RelayNode>();
    let mut caches = h.ctx.caches.clone();
    caches.relays = relays;
    let ctx = Arc::new(operator::context::Context {
        client: h.ctx.client.clone(),
        settings: h.ctx.settings.clone(),
        caches,
        reports: h.ctx.reports.clone(),
        metrics: h.ctx.metrics.clone(),
        recorder: h.ctx.recorder.clone(),
        backoff: operator::backoff::Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
        resync: Default::default(),
        clock: h.ctx.clock.clone(),
    });
    let (action, _, calls) = run(h.handle, vec![], reconcile(Arc::new(punching_lab(1)), ctx)).await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(1)), "no request before the relays are listed");
    assert!(calls.is_empty());
}

/// A deleted fleet leaves the operator's fleet totals at the next reconcile of any fleet: the
/// controller never reconciles a deleted object, and the operator uses no finalizer.
#[tokio::test]
async fn a_deleted_fleets_numbers_leave_the_metrics_at_the_next_reconcile() {
    let mut h = Harness::new();
    let fleet = lab(1);
    cache_children(&mut h, &fleet, 2);
    h.ctx.resync.done("sensors/lab");
    cache(&mut h.writers.fleets, fleet.clone());
    let gone = SensorFleetStatus {
        peers: operator::crd::FleetPeerCounts { public: 7, ..Default::default() },
        ..Default::default()
    };
    h.ctx.metrics.set_fleet("sensors/deleted", Some((fleet.spec.network, &gone)));
    assert!(metrics_text(&h.registry).contains("p2psensor_fleets 1"));
    let steps = vec![step(Method::PATCH, "/sensorfleets/lab/status", whole(&fleet))];
    let (action, _, _) = run(h.handle, steps, reconcile(Arc::new(fleet.clone()), h.ctx.clone())).await;
    action.unwrap();
    assert_eq!(h.ctx.metrics.fleet_keys(), ["sensors/lab"], "the fleet no longer in the cache is dropped");
    let text = metrics_text(&h.registry);
    assert!(text.contains("p2psensor_fleets 1"), "{text}");
    assert!(text.contains("p2psensor_fleet_peers{class=\"public\"} 0"), "the deleted fleet's 7 are gone:\n{text}");
}
