//! Test harness: a reconcile [`Context`] whose client talks to a scripted, mocked API server
//! (tower-test, as kube-rs' controller-rs does) and whose caches the test fills by hand.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use operator::backoff::Backoff;
use operator::collector::store::{ReportStore, StoreLimits};
use operator::context::{Caches, Context, Resync, Settings};
use operator::crd::{RelayNode, SensorFleet};
use operator::fleet::build::BuildSettings;
use operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

pub type ApiHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Fixed "now" of every harness context: 2026-11-21T00:00:00Z.
pub const NOW_SECS: i64 = 1_795_219_200;

/// Writers of the context's caches.
pub struct Writers {
    pub fleets: Writer<SensorFleet>,
    pub relays: Writer<RelayNode>,
    pub stateful_sets: Writer<StatefulSet>,
    pub daemon_sets: Writer<DaemonSet>,
    pub deployments: Writer<Deployment>,
    pub services: Writer<Service>,
    pub config_maps: Writer<ConfigMap>,
    pub service_accounts: Writer<ServiceAccount>,
    pub secrets: Writer<Secret>,
}

/// Puts `object` into a cache as a watch event would.
pub fn cache<K>(writer: &mut Writer<K>, object: K)
where
    K: kube::Resource + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer.apply_watcher_event(&watcher::Event::Apply(object));
}

pub struct Harness {
    pub ctx: Arc<Context>,
    pub handle: ApiHandle,
    pub writers: Writers,
    pub registry: Registry,
}

pub fn settings() -> Settings {
    Settings {
        build: BuildSettings {
            sensor_image: "ghcr.io/p2p-sensor/sensor:0.1.0".into(),
            collector_endpoint: "http://p2p-sensor-operator.p2p-system.svc:50051".into(),
            report_interval_ms: 10_000,
        },
        status_interval: Duration::from_secs(10),
        report_timeout: Duration::from_secs(60),
        resync_interval: Duration::from_secs(600),
        report_warm_up: Duration::ZERO,
        status_heartbeat: Duration::ZERO,
    }
}

impl Harness {
    pub fn new() -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        // Every cache has had its first (empty) list, as after start-up; tests then add objects.
        macro_rules! store {
            () => {{
                let (reader, mut writer) = kube::runtime::reflector::store();
                writer.apply_watcher_event(&watcher::Event::InitDone);
                (reader, writer)
            }};
        }
        let (fleets, fleets_w) = store!();
        let (relays, relays_w) = store!();
        let (stateful_sets, sts_w) = store!();
        let (daemon_sets, ds_w) = store!();
        let (deployments, dep_w) = store!();
        let (services, svc_w) = store!();
        let (config_maps, cm_w) = store!();
        let (service_accounts, sa_w) = store!();
        let (secrets, sec_w) = store!();
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: "p2p-sensor-operator".into(), instance: None });
        let ctx = Context {
            client,
            settings: settings(),
            caches: Caches {
                fleets,
                relays,
                stateful_sets,
                daemon_sets,
                deployments,
                services,
                config_maps,
                service_accounts,
                secrets,
            },
            reports: Arc::new(ReportStore::new(StoreLimits::default())),
            metrics,
            recorder,
            backoff: Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
            resync: Resync::default(),
            clock: Arc::new(|| jiff::Timestamp::from_second(NOW_SECS).unwrap()),
        };
        Harness {
            ctx: Arc::new(ctx),
            handle,
            writers: Writers {
                fleets: fleets_w,
                relays: relays_w,
                stateful_sets: sts_w,
                daemon_sets: ds_w,
                deployments: dep_w,
                services: svc_w,
                config_maps: cm_w,
                service_accounts: sa_w,
                secrets: sec_w,
            },
            registry,
        }
    }
}

/// A metrics registry as Prometheus text.
pub fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

/// How the mocked API server answers one request.
pub enum Reply {
    /// 200 with the request body (SSA patch / create / status patch echo), plus a resourceVersion.
    Echo,
    /// 200 with this JSON.
    Json(Value),
    /// An API error `Status` with this HTTP code.
    Error(u16),
    /// 200 with this object, its top-level fields overwritten by the request's (a status patch
    /// answered with the whole object, as the API server does).
    Merge(Value),
}

/// One expected request: method and a path suffix, e.g. `/statefulsets/f-sensor`.
pub struct Step {
    pub method: Method,
    pub path_suffix: String,
    pub reply: Reply,
}

pub fn step(method: Method, path_suffix: &str, reply: Reply) -> Step {
    Step { method, path_suffix: path_suffix.into(), reply }
}

/// A request the mocked API server received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

/// Serves `steps` in order and returns what was received. Panics (failing the test) on a request
/// that does not match the next step, and when a step is not requested within 5 s.
pub async fn serve(mut handle: ApiHandle, steps: Vec<Step>) -> (ApiHandle, Vec<Call>) {
    let mut calls = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
        let (request, send) = next
            .unwrap_or_else(|_| panic!("step {i}: {} …{} was never requested", step.method, step.path_suffix))
            .expect("mock service dropped");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        assert_eq!(
            (&method, path.ends_with(&step.path_suffix)),
            (&step.method, true),
            "step {i}: expected {} …{}, got {method} {path}",
            step.method,
            step.path_suffix
        );
        let (code, reply) = match step.reply {
            Reply::Echo => {
                let mut echoed = body.clone();
                if let Some(meta) = echoed.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), json!("1"));
                } else if echoed.is_object() {
                    echoed["metadata"] = json!({"resourceVersion": "1"});
                }
                (200, echoed)
            }
            Reply::Json(value) => (200, value),
            Reply::Merge(mut base) => {
                if let (Some(base), Some(fields)) = (base.as_object_mut(), body.as_object()) {
                    for (k, v) in fields {
                        base.insert(k.clone(), v.clone());
                    }
                }
                (200, base)
            }
            Reply::Error(code) => (
                code,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
                       "reason": "InternalError", "message": format!("mocked error {code}")}),
            ),
        };
        let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap();
        send.send_response(response);
        calls.push(Call { method, path, query, body });
    }
    (handle, calls)
}

/// Runs `reconcile` against `steps`; returns its result and the calls. Fails the test when the
/// reconciler makes a request beyond the script (it would hang: bounded by 10 s).
pub async fn run<F, T>(handle: ApiHandle, steps: Vec<Step>, reconcile: F) -> (T, ApiHandle, Vec<Call>)
where
    F: std::future::Future<Output = T>,
{
    let server = tokio::spawn(serve(handle, steps));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile)
        .await
        .expect("reconcile did not finish: it made a request the script did not expect");
    let (handle, calls) = server.await.expect("mock API server panicked");
    (result, handle, calls)
}

/// A SensorFleet as the API server would return it: fixture YAML plus uid, generation and
/// namespace.
pub fn fleet_from_yaml(yaml: &str, generation: i64) -> SensorFleet {
    let mut fleet: SensorFleet = serde_norway::from_str(yaml).expect("fixture parses");
    fleet.metadata.namespace.get_or_insert_with(|| "default".into());
    fleet.metadata.uid = Some("0b6f1d1e-5b8a-4a8e-9d53-6a3cbb0f0001".into());
    fleet.metadata.generation = Some(generation);
    fleet
}

pub fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}
