//! The relay's pure builders and status tested from YAML fixtures in
//! `operator/tests/fixtures/relay/`.
//!
//! `build-<case>.input.yaml` is a RelayNode; `build-<case>.expected.yaml` holds its children as
//! built (keys `serviceAccount`, `configMap`, `deployment`, `exposureService`) with the version
//! label and the spec-hash annotations replaced by `<version>` / `<hash>` (checked separately),
//! so a release does not rewrite every fixture. `status-<case>.yaml` gives a relay (with its old
//! status), what was observed and the expected status. `UPDATE_FIXTURES=1` rewrites the
//! `*.expected.yaml` files from the builder's output (review the diff!).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use serde_json::Value;

use super::build::{RelayChildren, build};
use super::identity;
use super::status::{Observed, deployment_state, status};
use crate::collector::aggregate::RelayAggregate;
use crate::crd::{HolePunchStats, RelayNode, RelayNodeStatus};
use crate::fleet::build::BuildSettings;
use crate::labels::SPEC_HASH_ANNOTATION;

const VERSION_LABEL: &str = "app.kubernetes.io/version";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/relay")
}

fn fixtures(prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    paths.sort();
    paths
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn settings() -> BuildSettings {
    BuildSettings {
        sensor_image: "ghcr.io/p2p-sensor/sensor:test".into(),
        collector_endpoint: "http://p2p-sensor-operator.p2p-sensor-system.svc:9000".into(),
        report_interval_ms: 10_000,
    }
}

/// Replaces the version label and spec hashes with placeholders; panics on a malformed hash.
fn normalise(value: &mut Value, at: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == VERSION_LABEL {
                    assert_eq!(v.as_str(), Some(env!("CARGO_PKG_VERSION")), "{at}");
                    *v = Value::String("<version>".into());
                } else if key == SPEC_HASH_ANNOTATION {
                    let hash = v.as_str().unwrap_or_default();
                    assert!(hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{at}: hash {hash:?}");
                    *v = Value::String("<hash>".into());
                } else {
                    normalise(v, at);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalise(v, at)),
        _ => {}
    }
}

fn children_value(children: &RelayChildren, at: &str) -> Value {
    let mut value = serde_json::json!({
        "serviceAccount": children.service_account,
        "configMap": children.config_map,
        "deployment": children.deployment,
        "exposureService": children.exposure_service,
    });
    normalise(&mut value, at);
    value
}

#[test]
fn builders_match_fixtures() {
    let inputs = fixtures("build-", ".input.yaml");
    assert!(inputs.len() >= 3, "build fixtures missing: {inputs:?}");
    for input in inputs {
        let at = input.display().to_string();
        let relay: RelayNode = read_yaml(&input);
        super::validate::validate(&relay, &settings().sensor_image).unwrap_or_else(|e| panic!("{at}: invalid: {e}"));
        let secret = identity::secret_name(&relay).unwrap();
        let actual = children_value(&build(&relay, &settings(), &secret).unwrap(), &at);
        let expected_path = PathBuf::from(at.replace(".input.yaml", ".expected.yaml"));
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&expected_path, serde_norway::to_string(&actual).unwrap()).unwrap();
            continue;
        }
        let expected: Value = read_yaml(&expected_path);
        assert!(
            actual == expected,
            "{at}: built children differ from {}\n--- built ---\n{}",
            expected_path.display(),
            serde_norway::to_string(&actual).unwrap()
        );
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusFixture {
    #[allow(dead_code)]
    description: String,
    now: Time,
    relay: RelayNode,
    #[serde(default)]
    observed: ObservedFixture,
    expect: RelayNodeStatus,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ObservedFixture {
    invalid: Option<String>,
    invalid_identity: Option<String>,
    peer_id: Option<String>,
    deployment: Option<Deployment>,
    reports: Option<ReportsFixture>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReportsFixture {
    reporting: bool,
    peer_id: Option<String>,
    #[serde(default)]
    multiaddrs: Vec<String>,
    #[serde(default)]
    reservations_active: i64,
    #[serde(default)]
    circuits_active: i64,
    #[serde(default)]
    hole_punch: HolePunchStats,
    last_report_time: Option<Timestamp>,
}

#[test]
fn status_matches_fixtures() {
    let paths = fixtures("status-", ".yaml");
    assert!(paths.len() >= 5, "status fixtures missing: {paths:?}");
    for path in paths {
        let at = path.display().to_string();
        let f: StatusFixture = read_yaml(&path);
        let reports = f.observed.reports.map(|r| RelayAggregate {
            reporting: r.reporting,
            peer_id: r.peer_id,
            multiaddrs: r.multiaddrs,
            reservations_active: r.reservations_active,
            circuits_active: r.circuits_active,
            hole_punch: r.hole_punch,
            last_report_time: r.last_report_time,
        });
        let observed = Observed {
            invalid: f.observed.invalid.as_deref(),
            invalid_identity: f.observed.invalid_identity.as_deref(),
            peer_id: f.observed.peer_id.as_deref(),
            workload: f.observed.deployment.as_ref().map(deployment_state),
            reports: reports.as_ref(),
            reports_pending: false,
        };
        let actual = status(&f.relay, &observed, &f.now);
        assert!(
            actual == f.expect,
            "{at}: status differs\n--- computed ---\n{}",
            serde_norway::to_string(&actual).unwrap()
        );
        // Computing again on top of the new status changes nothing (no watch churn).
        let mut again = f.relay.clone();
        again.status = Some(actual.clone());
        let later = Time(f.now.0 + jiff::SignedDuration::from_secs(30));
        assert_eq!(status(&again, &observed, &later), actual, "{at}: not idempotent");
    }
}
