//! Pure SensorFleet builders and validation, from YAML fixtures: each `tests/fixtures/fleet/X.yaml`
//! builds into the children recorded in `X.expected.yaml` (regenerate with `UPDATE_FIXTURES=1`
//! after an intended change, and review the diff), plus focused assertions on what matters.

mod support;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;
use operator::fleet::build::{FleetChildren, Workload, build};
use operator::fleet::validate::validate;
use support::{fixture, fleet_from_yaml, settings};

const FIXTURES: [&str; 3] = ["statefulset-loadbalancer", "daemonset-hostnetwork", "statefulset-hostnetwork"];

fn children(name: &str) -> FleetChildren {
    let fleet = fleet_from_yaml(&fixture(&format!("fleet/{name}.yaml")), 1);
    validate(&fleet, &settings().build.sensor_image).unwrap_or_else(|e| panic!("{name} is valid: {e}"));
    build(&fleet, &settings().build).unwrap()
}

fn to_yaml(children: &FleetChildren) -> String {
    let mut docs = vec![
        serde_norway::to_string(&children.service_account).unwrap(),
        serde_norway::to_string(&children.config_map).unwrap(),
        serde_norway::to_string(&children.headless_service).unwrap(),
    ];
    if let Some(service) = &children.exposure_service {
        docs.push(serde_norway::to_string(service).unwrap());
    }
    docs.push(match &children.workload {
        Workload::DaemonSet(ds) => serde_norway::to_string(ds).unwrap(),
        Workload::StatefulSet(sts) => serde_norway::to_string(sts).unwrap(),
    });
    docs.iter().map(|d| format!("---\n{d}")).collect()
}

#[test]
fn fixtures_build_into_their_expected_objects() {
    for name in FIXTURES {
        let actual = to_yaml(&children(name));
        let path = format!("{}/tests/fixtures/fleet/{name}.expected.yaml", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (UPDATE_FIXTURES=1)"));
        assert!(
            actual == expected,
            "{name}: built objects differ from {path}; rerun with UPDATE_FIXTURES=1 and review"
        );
    }
}

fn pod_spec(children: &FleetChildren) -> &PodSpec {
    match &children.workload {
        Workload::DaemonSet(DaemonSet { spec: Some(s), .. }) => s.template.spec.as_ref().unwrap(),
        Workload::StatefulSet(StatefulSet { spec: Some(s), .. }) => s.template.spec.as_ref().unwrap(),
        _ => panic!("workload without spec"),
    }
}

fn env<'a>(pod: &'a PodSpec, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    pod.containers[0].env.as_ref().unwrap().iter().find(|e| e.name == name)
}

#[test]
fn load_balancer_fleet_keeps_source_ips_and_uses_claims_and_secrets() {
    let c = children("statefulset-loadbalancer");
    let lb = c.exposure_service.as_ref().expect("exposure service");
    let spec = lb.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(lb.metadata.annotations.as_ref().unwrap()["service.beta.kubernetes.io/aws-load-balancer-type"], "nlb");
    let Workload::StatefulSet(sts) = &c.workload else { panic!("StatefulSet expected") };
    let sts_spec = sts.spec.as_ref().unwrap();
    assert_eq!(sts_spec.replicas, Some(2));
    assert_eq!(sts_spec.service_name.as_deref(), Some("lab-sensors"));
    let claim = &sts_spec.volume_claim_templates.as_ref().unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(claim_spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "5Gi");
    let pod = pod_spec(&c);
    assert_eq!(pod.host_network, None);
    let credentials = env(pod, "SENSOR_EXPORT_CREDENTIALS").unwrap().value_from.as_ref().unwrap();
    let secret = credentials.secret_key_ref.as_ref().unwrap();
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("sensor-db", "password"));
    assert!(env(pod, "SENSOR_LISTEN_EXTERNAL_ADDRESS").is_none(), "a Static address lives in the file");
    let toml = &c.config_map.data.as_ref().unwrap()["sensor.toml"];
    for line in [
        "network = \"testnet-10\"",
        "address = \"0.0.0.0:16211\"",
        "external_address = \"203.0.113.7:16211\"",
        "max_peers_per_ip = 2",
        "probe_timeout_ms = 3000",
        "probe_attempts = 3",
        "owner_kind = \"SensorFleet\"",
        "owner_name = \"lab\"",
        "owner_namespace = \"sensors\"",
    ] {
        assert!(toml.lines().any(|l| l == line), "sensor.toml lacks `{line}`:\n{toml}");
    }
    assert!(!toml.contains("password"), "no credentials in the ConfigMap");
}

#[test]
fn host_network_daemon_set_advertises_the_node_ip() {
    let c = children("daemonset-hostnetwork");
    assert!(c.exposure_service.is_none());
    assert!(matches!(c.workload, Workload::DaemonSet(_)));
    let pod = pod_spec(&c);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.node_selector.as_ref().unwrap()["p2psensor.dev/vantage-point"], "true");
    let p2p = pod.containers[0].ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("p2p")).unwrap();
    assert_eq!((p2p.container_port, p2p.host_port), (16111, Some(16111)));
    assert_eq!(env(pod, "SENSOR_LISTEN_EXTERNAL_ADDRESS").unwrap().value.as_deref(), Some("$(HOST_IP):16111"));
    assert_eq!(env(pod, "SENSOR_REPORT_SENDER").unwrap().value.as_deref(), Some("$(POD_NAME)"));
    let data = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "data").unwrap();
    assert_eq!(data.host_path.as_ref().unwrap().path, "/var/lib/p2p-sensor/sensors/mainnet");
}

#[test]
fn host_network_stateful_set_runs_one_sensor_per_node() {
    let c = children("statefulset-hostnetwork");
    let pod = pod_spec(&c);
    let terms = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
    let term = &terms.required_during_scheduling_ignored_during_execution.as_ref().unwrap()[0];
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert_eq!(term.label_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["p2psensor.dev/fleet"], "pinned");
    let toml = &c.config_map.data.as_ref().unwrap()["sensor.toml"];
    assert!(toml.contains("address = \"0.0.0.0:17000\"") && toml.contains("allow_private_targets = true"), "{toml}");
}

#[test]
fn every_child_is_owned_labelled_and_restricted() {
    for name in FIXTURES {
        let c = children(name);
        let metas = [
            &c.service_account.metadata,
            &c.config_map.metadata,
            &c.headless_service.metadata,
            match &c.workload {
                Workload::DaemonSet(ds) => &ds.metadata,
                Workload::StatefulSet(sts) => &sts.metadata,
            },
        ];
        for meta in metas {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.controller), ("SensorFleet", Some(true)), "{name}");
            assert_eq!(owner.uid, "0b6f1d1e-5b8a-4a8e-9d53-6a3cbb0f0001");
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/managed-by"], "p2p-sensor-operator");
            assert!(meta.annotations.as_ref().unwrap().contains_key("p2psensor.dev/spec-hash"));
        }
        let pod = pod_spec(&c);
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
    }
}

#[test]
fn config_changes_roll_pods_and_scaling_does_not_touch_the_config() {
    let yaml = fixture("fleet/statefulset-loadbalancer.yaml");
    let base = fleet_from_yaml(&yaml, 1);
    let mut scaled = base.clone();
    scaled.spec.replicas = Some(5);
    let mut retuned = base.clone();
    retuned.spec.probing.attempts = Some(4);
    let [b, s, r] = [&base, &scaled, &retuned].map(|f| build(f, &settings().build).unwrap());
    let hash =
        |c: &FleetChildren| c.config_map.metadata.annotations.as_ref().unwrap()["p2psensor.dev/spec-hash"].clone();
    let template_hash = |c: &FleetChildren| {
        let Workload::StatefulSet(sts) = &c.workload else { unreachable!() };
        sts.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
            ["p2psensor.dev/config-hash"]
            .clone()
    };
    assert_eq!(hash(&b), hash(&s), "scaling leaves the ConfigMap alone");
    assert_eq!(template_hash(&b), template_hash(&s));
    assert_ne!(hash(&b), hash(&r));
    assert_ne!(template_hash(&b), template_hash(&r), "a config change rolls the pods");
}

#[test]
fn invalid_fixture_names_every_violated_rule() {
    let fleet = fleet_from_yaml(&fixture("fleet/invalid-statefulset-without-replicas.yaml"), 1);
    let error = validate(&fleet, "img").unwrap_err();
    assert!(error.contains("replicas must be at least 1 in StatefulSet mode"), "{error}");
    assert!(error.contains("storageClassName is only allowed with kind PersistentVolumeClaim"), "{error}");
}

#[test]
fn checks_beyond_cel_are_reported() {
    let mut fleet = fleet_from_yaml(&fixture("fleet/statefulset-loadbalancer.yaml"), 1);
    fleet.metadata.name = Some("x".repeat(41));
    fleet.spec.storage.size = Some("5 GB".into());
    fleet.spec.external_address.address = Some("not-an-address".into());
    fleet.spec.export.as_mut().unwrap().endpoint = "postgres://sensor:hunter2@db/p2p".into();
    let error = validate(&fleet, "img").unwrap_err();
    for part in
        ["metadata.name is 41 characters", "spec.storage.size", "spec.externalAddress.address", "contains a password"]
    {
        assert!(error.contains(part), "missing {part:?} in {error}");
    }
    let mut no_image = fleet_from_yaml(&fixture("fleet/daemonset-hostnetwork.yaml"), 1);
    no_image.spec.image = None;
    assert!(validate(&no_image, "").unwrap_err().contains("no image"));
}
