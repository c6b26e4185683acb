//! `SensorFleet.spec.export`: the CRD's rules (CEL, evaluated by the operator's validate step as
//! the API server would), the rendered `[export]` section, the projected secrets volume of the
//! `sensor` container, and which changes roll the pods.

mod support;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;
use operator::crd::SensorFleet;
use operator::fleet::build::{FleetChildren, Workload, build};
use operator::fleet::validate::validate;
use serde_json::{Value, json};
use support::{fixture, fleet_from_yaml, settings};

/// The `lab` fleet (StatefulSet, postgres export with password and CA) with `spec.export` = `export`.
fn lab_with(export: Value) -> SensorFleet {
    let mut fleet = fleet_from_yaml(&fixture("fleet/statefulset-loadbalancer.yaml"), 1);
    fleet.spec.export = serde_json::from_value(export).unwrap();
    fleet
}

fn children(fleet: &SensorFleet) -> FleetChildren {
    validate(fleet, "img").unwrap_or_else(|e| panic!("valid: {e}"));
    build(fleet, &settings().build, None).unwrap()
}

fn pod_spec(children: &FleetChildren) -> &PodSpec {
    match &children.workload {
        Workload::DaemonSet(DaemonSet { spec: Some(s), .. }) => s.template.spec.as_ref().unwrap(),
        Workload::StatefulSet(StatefulSet { spec: Some(s), .. }) => s.template.spec.as_ref().unwrap(),
        _ => panic!("workload without spec"),
    }
}

fn sensor_toml(children: &FleetChildren) -> &str {
    &children.config_map.data.as_ref().unwrap()["sensor.toml"]
}

fn template_annotation(children: &FleetChildren, key: &str) -> String {
    let Workload::StatefulSet(sts) = &children.workload else { panic!("StatefulSet fixture") };
    sts.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[key].clone()
}

fn spec_hash(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.annotations.as_ref().unwrap()["p2psensor.dev/spec-hash"].clone()
}

#[test]
fn postgres_export_renders_the_section_and_mounts_password_and_ca_into_the_sensor_only() {
    let mut fleet = fleet_from_yaml(&fixture("fleet/statefulset-loadbalancer.yaml"), 1);
    fleet.spec.crawler = Some(serde_json::from_value(json!({})).unwrap());
    let c = children(&fleet);
    let toml: toml::Table = sensor_toml(&c).parse().unwrap();
    let expected: toml::Table = toml::toml! {
        sink = "postgres"
        endpoint = "postgres://sensor@db.sensors.svc:5432/p2p?sslmode=require"
        batch_size = 1000
        password_file = "/etc/sensor/export/password"
        tls_ca_file = "/etc/sensor/export/ca.crt"
    };
    assert_eq!(toml["export"].as_table().unwrap(), &expected);

    let pod = pod_spec(&c);
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "export-secrets").expect("export volume");
    let projected = volume.projected.as_ref().unwrap();
    let sources: Vec<Value> =
        projected.sources.as_ref().unwrap().iter().map(|s| serde_json::to_value(s).unwrap()).collect();
    assert_eq!(
        sources,
        [
            json!({"secret": {"name": "sensor-db", "items": [{"key": "password", "path": "password"}], "optional": false}}),
            json!({"secret": {"name": "sensor-db-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}], "optional": false}}),
        ]
    );
    // 0440 and group = fsGroup = the sensor's own group: readable by the non-root sensor only.
    assert_eq!(projected.default_mode, Some(0o440));
    let fs_group = pod.security_context.as_ref().unwrap().fs_group;
    let [sensor, crawl] = &pod.containers[..] else { panic!("sensor and crawl: {:?}", pod.containers) };
    let sc = sensor.security_context.as_ref().unwrap();
    assert_eq!((fs_group, sc.run_as_group, sc.run_as_non_root), (Some(65532), Some(65532), Some(true)));

    let mount = sensor.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "export-secrets").unwrap();
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only, mount.sub_path.as_deref()),
        ("/etc/sensor/export", Some(true), None)
    );
    assert_eq!(crawl.name, "crawl");
    assert!(crawl.volume_mounts.as_ref().unwrap().iter().all(|m| m.name != "export-secrets"), "sidecars do not export");
    // Nothing of the export is in the environment (the sensor's SENSOR_EXPORT_* would override the file).
    for container in &pod.containers {
        assert!(container.env.as_ref().unwrap().iter().all(|e| !e.name.starts_with("SENSOR_EXPORT")), "{container:?}");
    }
    assert!(!sensor_toml(&c).contains("sensor-db"), "the ConfigMap names files, never Secrets");
}

#[test]
fn http_export_mounts_token_hmac_and_a_config_map_ca() {
    let c = children(&lab_with(json!({
        "sink": "http", "endpoint": "https://collector.example/events",
        "batchSize": 200, "intervalMs": 3000, "timeoutMs": 15000, "gzip": false,
        "bearerTokenSecretRef": {"name": "export-creds", "key": "token"},
        "hmacSecretRef": {"name": "export-creds", "key": "hmac"},
        "caConfigMapRef": {"name": "export-ca", "key": "ca.crt"},
    })));
    let toml: toml::Table = sensor_toml(&c).parse().unwrap();
    let expected: toml::Table = toml::toml! {
        sink = "http"
        endpoint = "https://collector.example/events"
        batch_size = 200
        interval_ms = 3000
        timeout_ms = 15000
        gzip = false
        bearer_token_file = "/etc/sensor/export/bearer-token"
        hmac_secret_file = "/etc/sensor/export/hmac-secret"
        tls_ca_file = "/etc/sensor/export/ca.crt"
    };
    assert_eq!(toml["export"].as_table().unwrap(), &expected);
    let pod = pod_spec(&c);
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "export-secrets").unwrap();
    let paths: Vec<(String, String)> = volume
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| match (&s.secret, &s.config_map) {
            (Some(p), None) => (format!("Secret {}", p.name), p.items.as_ref().unwrap()[0].path.clone()),
            (None, Some(p)) => (format!("ConfigMap {}", p.name), p.items.as_ref().unwrap()[0].path.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let row = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        paths,
        [
            row("Secret export-creds", "bearer-token"),
            row("Secret export-creds", "hmac-secret"),
            row("ConfigMap export-ca", "ca.crt")
        ]
    );
}

#[test]
fn no_secrets_no_volume_and_sink_none_equals_no_export() {
    let ndjson = children(&lab_with(json!({"sink": "ndjson", "endpoint": "/var/lib/p2p-sensor/events.ndjson"})));
    let toml: toml::Table = sensor_toml(&ndjson).parse().unwrap();
    assert_eq!(toml["export"]["endpoint"].as_str(), Some("/var/lib/p2p-sensor/events.ndjson"));
    assert_eq!(toml["export"].as_table().unwrap().len(), 2, "sink and endpoint only: {toml:?}");
    let pod = pod_spec(&ndjson);
    assert!(pod.volumes.as_ref().unwrap().iter().all(|v| v.name != "export-secrets"));
    assert!(pod.containers[0].volume_mounts.as_ref().unwrap().iter().all(|m| m.name != "export-secrets"));

    let absent = children(&lab_with(Value::Null));
    let none = children(&lab_with(json!({"sink": "none"})));
    assert!(!sensor_toml(&absent).contains("[export]"), "{}", sensor_toml(&absent));
    assert_eq!(absent, none, "sink none builds exactly what no spec.export builds: switching restarts nothing");
}

#[test]
fn a_new_secret_reference_rolls_the_pods_without_touching_the_config() {
    let base = children(&lab_with(json!({"sink": "postgres", "endpoint": "postgres://sensor@pg/kaspa",
        "passwordSecretRef": {"name": "pg-creds", "key": "password"}})));
    for changed in [json!({"name": "pg-creds-v2", "key": "password"}), json!({"name": "pg-creds", "key": "password-2"})]
    {
        let other = children(&lab_with(json!({"sink": "postgres", "endpoint": "postgres://sensor@pg/kaspa",
            "passwordSecretRef": changed})));
        assert_eq!(sensor_toml(&base), sensor_toml(&other), "the file paths stay the same");
        assert_eq!(spec_hash(&base.config_map.metadata), spec_hash(&other.config_map.metadata));
        let (Workload::StatefulSet(a), Workload::StatefulSet(b)) = (&base.workload, &other.workload) else {
            unreachable!()
        };
        // A changed pod template is what makes the StatefulSet controller replace the pods.
        assert_ne!(a.spec.as_ref().unwrap().template, b.spec.as_ref().unwrap().template, "{changed}");
        assert_ne!(spec_hash(&a.metadata), spec_hash(&b.metadata), "the workload is re-applied");
    }
    let retuned = children(&lab_with(json!({"sink": "postgres", "endpoint": "postgres://sensor@pg/kaspa",
        "batchSize": 50, "passwordSecretRef": {"name": "pg-creds", "key": "password"}})));
    assert_ne!(
        template_annotation(&base, "p2psensor.dev/config-hash"),
        template_annotation(&retuned, "p2psensor.dev/config-hash"),
        "a tuning change rolls the pods through the config hash"
    );
}

#[test]
fn every_cel_rule_rejects_what_it_names() {
    let rejected = |export: Value, message: &str| {
        let error = validate(&lab_with(export.clone()), "img").expect_err(message);
        assert!(error.contains(message), "{export}: expected {message:?} in {error}");
    };
    let secret = json!({"name": "s", "key": "k"});
    rejected(json!({"sink": "http"}), "endpoint is required unless sink is none");
    rejected(
        json!({"sink": "ndjson", "endpoint": "events.ndjson"}),
        "endpoint must be - (stdout) or an absolute file path",
    );
    rejected(json!({"sink": "http", "endpoint": "ftp://c.example/"}), "endpoint must be an http:// or https:// URL");
    rejected(json!({"sink": "postgres", "endpoint": "https://pg/"}), "endpoint must be a postgres:// or postgresql://");
    let pg = "postgres://sensor@pg/kaspa";
    rejected(
        json!({"sink": "postgres", "endpoint": pg, "bearerTokenSecretRef": secret}),
        "bearerTokenSecretRef is only used by sink http",
    );
    rejected(
        json!({"sink": "ndjson", "endpoint": "-", "hmacSecretRef": secret}),
        "hmacSecretRef is only used by sink http",
    );
    rejected(
        json!({"sink": "http", "endpoint": "https://c/", "passwordSecretRef": secret}),
        "passwordSecretRef is only used by sink postgres",
    );
    rejected(json!({"sink": "none", "passwordSecretRef": secret}), "passwordSecretRef is only used by sink postgres");
    rejected(json!({"sink": "postgres", "endpoint": pg, "gzip": false}), "gzip is only used by sink http");
    rejected(
        json!({"sink": "http", "endpoint": "http://c/", "caSecretRef": secret}),
        "only used by sink postgres or an https:// endpoint",
    );
    rejected(
        json!({"sink": "ndjson", "endpoint": "-", "caConfigMapRef": secret}),
        "only used by sink postgres or an https:// endpoint",
    );
    rejected(
        json!({"sink": "postgres", "endpoint": pg, "caSecretRef": secret, "caConfigMapRef": secret}),
        "set caSecretRef or caConfigMapRef, not both",
    );
    // Beyond CEL, in the same InvalidSpec message.
    rejected(
        json!({"sink": "ndjson", "endpoint": "/tmp/events.ndjson"}),
        "must be - or a file under /var/lib/p2p-sensor/",
    );
    rejected(json!({"sink": "postgres", "endpoint": "postgres://sensor:pw@pg/kaspa"}), "contains a password");
    rejected(
        json!({"sink": "http", "endpoint": "https://c/", "hmacSecretRef": {"name": "S", "key": "k"}}),
        "spec.export.hmacSecretRef.name",
    );
    // What the rules allow.
    for ok in [
        json!({"sink": "none"}),
        json!({"sink": "none", "endpoint": "https://kept.example/"}),
        json!({"sink": "ndjson", "endpoint": "-", "timeoutMs": 100}),
        json!({"sink": "http", "endpoint": "https://c/", "caSecretRef": secret, "bearerTokenSecretRef": secret}),
        json!({"sink": "postgres", "endpoint": "postgresql://sensor@pg/kaspa", "caConfigMapRef": secret}),
    ] {
        validate(&lab_with(ok.clone()), "img").unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert!(serde_json::from_value::<operator::crd::Export>(json!({"sink": "kafka", "endpoint": "x"})).is_err());
}

#[test]
fn the_schema_bounds_the_tuning_and_lists_the_sinks() {
    let crd = serde_json::to_value(<SensorFleet as kube::CustomResourceExt>::crd()).unwrap();
    let export = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["export"];
    let field = |name: &str| &export["properties"][name];
    let range = |name: &str| (field(name)["minimum"].as_f64(), field(name)["maximum"].as_f64());
    assert_eq!(range("batchSize"), (Some(1.0), Some(10000.0)));
    assert_eq!(range("intervalMs"), (Some(100.0), Some(600000.0)));
    assert_eq!(range("timeoutMs"), (Some(100.0), Some(120000.0)));
    assert_eq!(field("endpoint")["maxLength"], 2048);
    assert_eq!(field("sink")["enum"], json!(["none", "ndjson", "http", "postgres"]));
    assert_eq!(export["required"], json!(["sink"]));
    assert_eq!(field("passwordSecretRef")["properties"]["name"]["maxLength"], 253);
    assert_eq!(export["x-kubernetes-validations"].as_array().unwrap().len(), 10);
}
