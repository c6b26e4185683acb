//! `operator run` as a process against a fake Kubernetes API server on loopback (plain HTTP,
//! kubeconfig with a token): it takes the Lease, lists and watches only what it manages, turns
//! Ready once its caches are synced, serves metrics and the collector, and on SIGTERM releases the
//! Lease and exits 0. The fake server answers lists with no items, holds watches open, and keeps
//! the one Lease in memory (merge-patch semantics, enough for kube-lease-manager).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

#[derive(Default)]
struct Fake {
    lease: Option<Value>,
    requests: Vec<(Method, String)>,
}

type Shared = Arc<Mutex<Fake>>;

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn json_response(code: StatusCode, value: Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

async fn api(State(fake): State<Shared>, request: Request) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    fake.lock().unwrap().requests.push((method.clone(), format!("{path}?{query}")));
    if path.contains("/leases") {
        let mut f = fake.lock().unwrap();
        return match (method, f.lease.as_mut()) {
            (Method::GET, Some(lease)) => json_response(StatusCode::OK, lease.clone()),
            (Method::GET, None) | (Method::PATCH, None) => json_response(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
            (Method::POST, _) => {
                let mut lease = body;
                lease["metadata"]["resourceVersion"] = json!("1");
                f.lease = Some(lease.clone());
                json_response(StatusCode::CREATED, lease)
            }
            (Method::PATCH | Method::PUT, Some(lease)) => {
                merge(lease, &body);
                json_response(StatusCode::OK, lease.clone())
            }
            _ => json_response(StatusCode::METHOD_NOT_ALLOWED, json!({})),
        };
    }
    if query.contains("watch=true") || query.contains("watch=1") {
        // An open watch with no events; the operator's shutdown drops it.
        let stream = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    if method == Method::GET {
        return json_response(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        );
    }
    json_response(StatusCode::OK, body)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_leads_syncs_serves_and_shuts_down_cleanly() {
    let fake: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(api).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: 'http://{api_addr}'}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: u, namespace: default}}}}]\n"
        ),
    )
    .unwrap();
    let (http, collector) = (free_addr(), free_addr());
    let log = dir.path().join("operator.log");
    let mut operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_operator"))
            .arg("run")
            .arg(format!("--http-listen={http}"))
            .arg(format!("--collector-listen={collector}"))
            .args(["--collector-endpoint=http://collector:50051", "--sensor-image=sensor:test", "--log-format=json"])
            .args(["--lease-name=p2p-sensor-operator", "--log-filter=info"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RUST_LOG")
            .env("POD_NAMESPACE", "p2p-system")
            .env("POD_NAME", "operator-0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let start = Instant::now();
    loop {
        if http_get(http, "/readyz").is_some_and(|(code, _)| code == 200) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never ready\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(http, "/healthz").unwrap().0, 200);
    let (_, metrics) = http_get(http, "/metrics").unwrap();
    assert!(metrics.contains("operator_collector_reports_total"), "{metrics}");
    assert!(metrics.contains("controller_runtime_reconcile"), "{metrics}");

    // The collector answers gRPC: an invalid report is refused, not crashed on.
    let mut client =
        sensor_report::v1::collector_client::CollectorClient::connect(format!("http://{collector}")).await.unwrap();
    let refused = client.push(sensor_report::v1::Report::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    {
        let f = fake.lock().unwrap();
        let lease = f.lease.as_ref().expect("the Lease was created");
        assert_eq!(lease["spec"]["holderIdentity"], "operator-0", "{lease}");
        let lists: Vec<&String> =
            f.requests.iter().filter(|(m, p)| m == Method::GET && !p.contains("leases")).map(|r| &r.1).collect();
        for kind in
            ["statefulsets", "daemonsets", "deployments", "services", "configmaps", "serviceaccounts", "secrets"]
        {
            let request = lists
                .iter()
                .find(|p| p.contains(&format!("/{kind}?")))
                .unwrap_or_else(|| panic!("no list of {kind}: {lists:?}"));
            assert!(
                request.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dp2p-sensor-operator"),
                "{kind} is watched by label only: {request}"
            );
        }
        assert!(lists.iter().any(|p| p.contains("/apis/p2psensor.dev/v1alpha1/sensorfleets?")), "{lists:?}");
        assert!(lists.iter().any(|p| p.contains("/apis/p2psensor.dev/v1alpha1/relaynodes?")), "{lists:?}");
    }

    // SIGTERM: graceful shutdown, Lease released, exit 0.
    assert!(Command::new("kill").args(["-TERM", &operator.0.id().to_string()]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = operator.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no exit after SIGTERM\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit {status}\n{}", logs());
    let lease = fake.lock().unwrap().lease.clone().unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "the Lease is released on shutdown: {lease}\n{}", logs());
    let text = logs();
    assert!(
        text.lines().all(|l| l.trim().is_empty() || serde_json::from_str::<Value>(l).is_ok()),
        "JSON logs:\n{text}"
    );
}
