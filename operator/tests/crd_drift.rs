//! The committed CRDs (`crds/` and the chart's `crds/`) must equal what `operator crd` prints, and
//! the printed CRDs must carry the promised shape: group, version, status subresource, short
//! names, printer columns and CEL rules.

use std::process::Command;

fn repo(path: &str) -> String {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn committed_crds_equal_the_generated_ones() {
    for (file, crd) in operator::crd::all() {
        let generated = operator::crd::to_yaml(&crd).unwrap();
        for dir in ["crds", "charts/p2p-sensor-operator/crds"] {
            assert!(
                repo(&format!("{dir}/{file}")) == generated,
                "{dir}/{file} drifted from the Rust types: run `cargo run -p operator -- crd --dir {dir}`"
            );
        }
    }
}

#[test]
fn operator_crd_prints_both_documents() {
    let out = Command::new(env!("CARGO_BIN_EXE_operator")).arg("crd").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected: String =
        operator::crd::all().iter().map(|(_, crd)| format!("---\n{}", operator::crd::to_yaml(crd).unwrap())).collect();
    assert_eq!(text, expected);
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_operator")).args(["crd", "--dir"]).arg(dir.path()).status().unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn crds_have_the_promised_shape() {
    for (_, crd) in operator::crd::all() {
        let v = serde_json::to_value(&crd).unwrap();
        let spec = &v["spec"];
        assert_eq!(spec["group"], "p2psensor.dev");
        assert_eq!(spec["scope"], "Namespaced");
        let version = &spec["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object(), "status subresource");
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let rules = serde_json::to_string(&version["schema"]).unwrap();
        match spec["names"]["kind"].as_str().unwrap() {
            "SensorFleet" => {
                assert_eq!(spec["names"]["shortNames"][0], "sf");
                assert_eq!(columns, ["Ready", "Sensors", "Public", "Private", "Reachable", "Network", "Age"]);
                assert!(rules.contains("self == oldSelf"), "network is immutable");
                assert!(rules.contains("replicas must be at least 1"));
                assert!(rules.contains("minRevisitSecs must not exceed maxRevisitSecs"), "crawler revisit bounds");
            }
            "RelayNode" => {
                assert_eq!(spec["names"]["shortNames"][0], "rn");
                assert_eq!(columns, ["Ready", "PeerID", "Success%", "Age"]);
                assert!(rules.contains("\"maximum\":65535"), "ports are bounded");
                assert!(rules.contains("tcpAlternate must differ from tcp"), "alternate ports are checked");
                assert!(
                    rules.contains("need exposure kind HostNetwork or LoadBalancer"),
                    "no alternates with NodePort"
                );
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

#[test]
fn run_without_a_cluster_fails_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args([
            "run",
            "--collector-endpoint=http://c:50051",
            "--collector-listen=127.0.0.1:0",
            "--http-listen=127.0.0.1:0",
        ])
        .args(["--log-format=text"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no Kubernetes client configuration"), "{stderr}");
}

#[test]
fn invalid_flags_are_refused_before_anything_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(["run", "--collector-endpoint=x", "--status-interval-secs=0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("status-interval-secs"));
}
