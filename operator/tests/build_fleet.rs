//! Pure SensorFleet builders and validation, from YAML fixtures: each `tests/fixtures/fleet/X.yaml`
//! builds into the children recorded in `X.expected.yaml` (regenerate with `UPDATE_FIXTURES=1`
//! after an intended change, and review the diff), plus focused assertions on what matters.

mod support;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;
use operator::fleet::build::{FleetChildren, Workload, build};
use operator::fleet::punch::{Punch, PunchRelay};
use operator::fleet::validate::validate;
use support::{fixture, fleet_from_yaml, settings};

const FIXTURES: [&str; 5] = [
    "statefulset-loadbalancer",
    "daemonset-hostnetwork",
    "statefulset-hostnetwork",
    "statefulset-punch",
    "daemonset-crawler",
];

/// PeerIds of test keys (Ed25519 public keys of 32 equal bytes).
pub const RELAY_ID: &str = "12D3KooWFMiQUpmYgMd4rK23Q6VgdaNPWMJ9FuNin41qA9q2AGAu";
pub const PEER_1: &str = "12D3KooW9tHTtS3inCZiYykw4u5G4frbjVFqhkmJX12gSNCVeH3e";
pub const PEER_2: &str = "12D3KooW9xCm2jWjNVrwh51SWCQBMYdMyeU3NpT85QhLVkF6PcNM";
pub const PEER_3: &str = "12D3KooWA284B2yjxoAAqAFwwVj6eRQ8DogF3t8wdpMzZ8Hh8wh4";

/// The resolved relay of the `*-punch` fixtures, with `targets`.
fn punch(targets: &[&str]) -> Punch {
    Punch {
        relay: PunchRelay { node: "edge".into(), multiaddr: format!("/ip4/203.0.113.7/tcp/4001/p2p/{RELAY_ID}") },
        targets: targets.iter().map(|t| t.to_string()).collect(),
    }
}

fn children(name: &str) -> FleetChildren {
    let fleet = fleet_from_yaml(&fixture(&format!("fleet/{name}.yaml")), 1);
    validate(&fleet, &settings().build.sensor_image).unwrap_or_else(|e| panic!("{name} is valid: {e}"));
    let punch = name.ends_with("-punch").then(|| punch(&[PEER_1, PEER_2]));
    build(&fleet, &settings().build, punch.as_ref()).unwrap()
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
    assert!(toml.lines().any(|l| l == "password_file = \"/etc/sensor/export/password\""), "{toml}");
    assert!(!toml.contains("sensor-db"), "the ConfigMap names files, never the Secrets:\n{toml}");
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
    let [b, s, r] = [&base, &scaled, &retuned].map(|f| build(f, &settings().build, None).unwrap());
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
    fleet.spec.export.as_mut().unwrap().endpoint = Some("postgres://sensor:hunter2@db/p2p".into());
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

fn workload_meta(children: &FleetChildren) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    match &children.workload {
        Workload::DaemonSet(ds) => &ds.metadata,
        Workload::StatefulSet(sts) => &sts.metadata,
    }
}

fn template_annotation(children: &FleetChildren, key: &str) -> String {
    let template = match &children.workload {
        Workload::DaemonSet(ds) => &ds.spec.as_ref().unwrap().template,
        Workload::StatefulSet(sts) => &sts.spec.as_ref().unwrap().template,
    };
    template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[key].clone()
}

fn spec_hash(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.annotations.as_ref().unwrap()["p2psensor.dev/spec-hash"].clone()
}

#[test]
fn the_punch_sidecar_exists_only_with_a_resolved_relay() {
    let fleet = fleet_from_yaml(&fixture("fleet/statefulset-punch.yaml"), 1);
    let without = build(&fleet, &settings().build, None).unwrap();
    let pod = pod_spec(&without);
    assert_eq!(pod.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["sensor"]);
    let data = without.config_map.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["sensor.toml"]);
    assert!(!data["sensor.toml"].contains("[punch]"), "{}", data["sensor.toml"]);
    assert!(!workload_meta(&without).annotations.as_ref().unwrap().contains_key("p2psensor.dev/punch-relay"));
    let ports = |c: &FleetChildren| -> Vec<String> {
        c.headless_service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.name.clone().unwrap())
            .collect()
    };
    assert_eq!(ports(&without), ["p2p", "metrics"]);

    let with = build(&fleet, &settings().build, Some(&punch(&[PEER_1, PEER_2]))).unwrap();
    assert_eq!(ports(&with), ["p2p", "metrics", "punch-metrics"]);
    let pod = pod_spec(&with);
    let [sensor, sidecar] = &pod.containers[..] else { panic!("two containers: {:?}", pod.containers) };
    assert_eq!(sidecar.name, "punch");
    assert_eq!(sidecar.image, sensor.image, "the same sensor image");
    assert_eq!(sidecar.args.as_deref().unwrap(), ["punch", "--config", "/etc/p2p-sensor/sensor.toml"]);
    assert_eq!(sensor.args.as_deref().unwrap(), ["listen", "--config", "/etc/p2p-sensor/sensor.toml"]);
    assert_eq!(sidecar.security_context, sensor.security_context, "restricted like the listener");
    let port = &sidecar.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port, port.host_port), (Some("punch-metrics"), 9103, None));
    let env = |name: &str| sidecar.env.as_ref().unwrap().iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env("SENSOR_METRICS_LISTEN").as_deref(), Some("0.0.0.0:9103"));
    assert_eq!(env("SENSOR_STORAGE_PATH").as_deref(), Some("/var/lib/p2p-sensor/punch.sqlite"));
    assert_eq!(env("SENSOR_REPORT_SENDER").as_deref(), Some("$(POD_NAME)"), "the client reports as <pod>-punch");
    let liveness = sidecar.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(
        liveness.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("punch-metrics".into())
    );
    assert!(sidecar.readiness_probe.is_none(), "a lost reservation must not make the sensor pod unready");
    let resources = sidecar.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "10m");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "128Mi");
    // The config volume is a directory mount without subPath: the kubelet refreshes its files.
    for container in [sensor, sidecar] {
        let mounts = container.volume_mounts.as_ref().unwrap();
        let config = mounts.iter().find(|m| m.name == "config").unwrap();
        assert_eq!((config.mount_path.as_str(), config.sub_path.as_deref()), ("/etc/p2p-sensor", None));
        assert!(mounts.iter().any(|m| m.name == "data" && m.mount_path == "/var/lib/p2p-sensor"));
    }
    assert_eq!(
        workload_meta(&with).annotations.as_ref().unwrap()["p2psensor.dev/punch-relay"],
        format!("/ip4/203.0.113.7/tcp/4001/p2p/{RELAY_ID}")
    );

    let data = with.config_map.data.as_ref().unwrap();
    let toml: toml::Table = data["sensor.toml"].parse().unwrap();
    let section = toml["punch"].as_table().unwrap();
    let expected: toml::Table = toml::toml! {
        relay = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWFMiQUpmYgMd4rK23Q6VgdaNPWMJ9FuNin41qA9q2AGAu"
        relay_node = "edge"
        targets_file = "/etc/p2p-sensor/punch-targets"
        interval_secs = 120
        attempts = 2
        identity_file = "/var/lib/p2p-sensor/punch_identity.key"
    };
    assert_eq!(section, &expected);
    let targets: Vec<&str> = data["punch-targets"].lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(targets, [PEER_1, PEER_2]);
}

#[test]
fn new_targets_refresh_the_config_map_but_never_restart_pods() {
    let fleet = fleet_from_yaml(&fixture("fleet/statefulset-punch.yaml"), 1);
    let build_with = |p: &Punch| build(&fleet, &settings().build, Some(p)).unwrap();
    let two = build_with(&punch(&[PEER_1, PEER_2]));
    let three = build_with(&punch(&[PEER_1, PEER_2, PEER_3]));
    let none = build_with(&punch(&[]));
    for other in [&three, &none] {
        assert_ne!(spec_hash(&two.config_map.metadata), spec_hash(&other.config_map.metadata), "ConfigMap re-applied");
        assert_eq!(two.workload, other.workload, "the workload, pod template included, is untouched");
        assert_eq!(two.headless_service, other.headless_service);
        assert_eq!(
            two.config_map.data.as_ref().unwrap()["sensor.toml"],
            other.config_map.data.as_ref().unwrap()["sensor.toml"]
        );
    }
    assert!(none.config_map.data.as_ref().unwrap()["punch-targets"].lines().all(|l| l.starts_with('#')));

    // The relay moving is a configuration change: the pods restart with the new address.
    let mut moved = punch(&[PEER_1, PEER_2]);
    moved.relay.multiaddr = format!("/ip4/203.0.113.8/udp/4001/quic-v1/p2p/{RELAY_ID}");
    let moved = build_with(&moved);
    assert_ne!(
        template_annotation(&two, "p2psensor.dev/config-hash"),
        template_annotation(&moved, "p2psensor.dev/config-hash")
    );
    assert_ne!(spec_hash(workload_meta(&two)), spec_hash(workload_meta(&moved)));
    // Adding the sidecar restarts the pods once.
    let without = build(&fleet, &settings().build, None).unwrap();
    assert_ne!(
        template_annotation(&two, "p2psensor.dev/config-hash"),
        template_annotation(&without, "p2psensor.dev/config-hash")
    );
}

#[test]
fn hole_punch_tuning_reaches_the_sidecar_and_needs_a_relay() {
    let mut fleet = fleet_from_yaml(&fixture("fleet/statefulset-punch.yaml"), 1);
    let tuning = serde_json::json!({"intervalSecs": 60, "timeoutSecs": 20,
        "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "64Mi"}}});
    fleet.spec.hole_punch = Some(serde_json::from_value(tuning).unwrap());
    let c = build(&fleet, &settings().build, Some(&punch(&[]))).unwrap();
    let toml: toml::Table = c.config_map.data.as_ref().unwrap()["sensor.toml"].parse().unwrap();
    let section = toml["punch"].as_table().unwrap();
    assert_eq!(section["interval_secs"].as_integer(), Some(60));
    assert_eq!(section["timeout_secs"].as_integer(), Some(20));
    assert!(!section.contains_key("attempts"), "the sensor's default");
    let sidecar = &pod_spec(&c).containers[1];
    assert_eq!(sidecar.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "50m");
    assert_eq!(pod_spec(&c).containers[0].resources, fleet.spec.resources, "the listener keeps spec.resources");
    // holePunch alone: intervalSecs defaults to 300.
    fleet.spec.hole_punch = Some(serde_json::from_value(serde_json::json!({})).unwrap());
    assert_eq!(fleet.spec.hole_punch.as_ref().unwrap().interval_secs, 300);

    fleet.spec.relay_ref = None;
    let error = validate(&fleet, "img").unwrap_err();
    assert!(error.contains("holePunch needs relayRef"), "{error}");
    // Ranges are the API server's (the CRD schema), like every other bounded field.
    let crd = serde_json::to_value(<operator::crd::SensorFleet as kube::CustomResourceExt>::crd()).unwrap();
    let interval = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["holePunch"]
        ["properties"]["intervalSecs"];
    assert_eq!((interval["minimum"].as_f64(), interval["maximum"].as_f64()), (Some(10.0), Some(86400.0)));
    assert_eq!(interval["default"], 300);
}

fn service_ports(c: &FleetChildren) -> Vec<String> {
    let spec = c.headless_service.spec.as_ref().unwrap();
    spec.ports.as_ref().unwrap().iter().map(|p| p.name.clone().unwrap()).collect()
}

#[test]
fn the_crawl_sidecar_follows_spec_crawler() {
    let c = children("daemonset-crawler");
    assert_eq!(service_ports(&c), ["p2p", "metrics", "crawl-metrics"]);
    let pod = pod_spec(&c);
    let [sensor, sidecar] = &pod.containers[..] else { panic!("two containers: {:?}", pod.containers) };
    assert_eq!(sidecar.name, "crawl");
    assert_eq!(sidecar.image, sensor.image, "the same sensor image");
    assert_eq!(sidecar.args.as_deref().unwrap(), ["crawl", "--config", "/etc/p2p-sensor/sensor.toml"]);
    assert_eq!(sidecar.security_context, sensor.security_context, "restricted like the listener");
    let port = &sidecar.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port, port.host_port), (Some("crawl-metrics"), 9104, None));
    let env = |name: &str| sidecar.env.as_ref().unwrap().iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env("SENSOR_METRICS_LISTEN").as_deref(), Some("0.0.0.0:9104"));
    assert_eq!(env("SENSOR_STORAGE_PATH").as_deref(), Some("/var/lib/p2p-sensor/crawl.sqlite"));
    assert_eq!(env("SENSOR_REPORT_SENDER").as_deref(), Some("$(POD_NAME)"), "the crawler reports as <pod>-crawl");
    assert!(sidecar.liveness_probe.is_some());
    assert!(sidecar.readiness_probe.is_none(), "a crawler must not make the sensor pod unready");
    let resources = sidecar.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "50m");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "512Mi");
    // Both containers share the data volume: the crawler seeds from the listener's database.
    for container in [sensor, sidecar] {
        let mounts = container.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.name == "data" && m.mount_path == "/var/lib/p2p-sensor"), "{mounts:?}");
        assert!(mounts.iter().any(|m| m.name == "config" && m.read_only == Some(true)));
    }

    let toml: toml::Table = c.config_map.data.as_ref().unwrap()["sensor.toml"].parse().unwrap();
    // timeout_ms 5000 and min_revisit_secs 300 are the sensor's defaults: left to it.
    let expected: toml::Table = toml::toml! {
        interval_secs = 900
        concurrency = 128
        seeds = ["203.0.113.10:16111", "[2001:db8::10]:16111"]
        seed_dns = ["seeder1.kaspad.net", "seeder2.kaspad.net:16111"]
        seed_from_store = "/var/lib/p2p-sensor/sensor.sqlite"
        max_revisit_secs = 43200
    };
    assert_eq!(toml["crawl"].as_table().unwrap(), &expected);
    assert!(!toml.contains_key("punch"));

    // Without spec.crawler: no sidecar, no [crawl], no port; toggling it rolls the pods.
    let mut fleet = fleet_from_yaml(&fixture("fleet/daemonset-crawler.yaml"), 1);
    fleet.spec.crawler = None;
    let plain = build(&fleet, &settings().build, None).unwrap();
    assert_eq!(pod_spec(&plain).containers.len(), 1);
    assert_eq!(service_ports(&plain), ["p2p", "metrics"]);
    assert!(!plain.config_map.data.as_ref().unwrap()["sensor.toml"].contains("[crawl]"));
    assert_ne!(
        template_annotation(&c, "p2psensor.dev/config-hash"),
        template_annotation(&plain, "p2psensor.dev/config-hash")
    );
}

#[test]
fn the_crawl_and_punch_sidecars_coexist() {
    let mut fleet = fleet_from_yaml(&fixture("fleet/statefulset-punch.yaml"), 1);
    fleet.spec.crawler = Some(serde_json::from_value(serde_json::json!({})).unwrap());
    let c = build(&fleet, &settings().build, Some(&punch(&[PEER_1]))).unwrap();
    let names: Vec<&str> = pod_spec(&c).containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["sensor", "punch", "crawl"]);
    assert_eq!(service_ports(&c), ["p2p", "metrics", "punch-metrics", "crawl-metrics"]);
    let toml: toml::Table = c.config_map.data.as_ref().unwrap()["sensor.toml"].parse().unwrap();
    assert!(toml.contains_key("punch") && toml.contains_key("crawl"));
    assert_eq!(toml["crawl"]["interval_secs"].as_integer(), Some(600), "the spec's default, never the one-shot 0");
}

#[test]
fn crawler_bounds_and_seeds_are_validated() {
    let mut fleet = fleet_from_yaml(&fixture("fleet/daemonset-crawler.yaml"), 1);
    let crawler = fleet.spec.crawler.as_mut().unwrap();
    crawler.min_revisit_secs = 50_000;
    crawler.seeds.push("seed.example:16111".into());
    crawler.seed_dns.push("not a name".into());
    let error = validate(&fleet, "img").unwrap_err();
    for part in ["minRevisitSecs must not exceed maxRevisitSecs", "spec.crawler.seeds[2]", "spec.crawler.seedDns[2]"] {
        assert!(error.contains(part), "missing {part:?} in {error}");
    }
    let crd = serde_json::to_value(<operator::crd::SensorFleet as kube::CustomResourceExt>::crd()).unwrap();
    let crawler = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["crawler"]
        ["properties"];
    let range = |field: &str| (crawler[field]["minimum"].as_f64(), crawler[field]["maximum"].as_f64());
    assert_eq!(range("intervalSecs"), (Some(1.0), Some(86400.0)));
    assert_eq!(range("concurrency"), (Some(1.0), Some(10000.0)));
    assert_eq!(range("timeoutMs"), (Some(100.0), Some(600000.0)));
    assert_eq!(range("minRevisitSecs"), (Some(1.0), Some(604800.0)));
    assert_eq!(crawler["seeds"]["maxItems"], 64);
    assert_eq!(crawler["seedDns"]["maxItems"], 16);
    assert_eq!(crawler["intervalSecs"]["default"], 600);
}
