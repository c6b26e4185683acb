//! Unit tests of [`super`]: layering, errors, `default_toml` and validation.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn load(file: Option<&str>, vars: &[(&str, &str)], cli: &CliOverrides) -> Result<(Config, Vec<String>)> {
    let file = file.map(write);
    Config::load(file.as_ref().map(|f| f.path()), env(vars), cli)
}

fn err_key(result: Result<(Config, Vec<String>)>) -> (String, String) {
    match result {
        Err(ConfigError::Key { key, reason }) => (key, reason),
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[test]
fn defaults_when_nothing_given() {
    let (config, warnings) = load(None, &[("PATH", "/bin")], &CliOverrides::default()).unwrap();
    assert_eq!(config, Config::default());
    assert!(warnings.is_empty());
    assert_eq!(config.listen_address(), "0.0.0.0:16111".parse().unwrap());
    assert_eq!(config.database_path(), PathBuf::from("./data/sensor.sqlite"));
    assert_eq!(config.metrics.listen, "0.0.0.0:9102".parse().unwrap());
    assert!(!config.sensor_id().is_empty());
}

#[test]
fn layers_file_env_cli() {
    let file = "network = \"devnet\"\nsensor_id = \"s1\"\n[listen]\nmax_peers_per_ip = 7\n\
                max_inbound_peers = 9\n[storage]\npath = \"/x/db.sqlite\"\n";
    let (config, _) = load(Some(file), &[], &CliOverrides::default()).unwrap();
    assert_eq!(config.network, Network::Devnet);
    assert_eq!(config.sensor_id(), "s1");
    assert_eq!((config.listen.max_peers_per_ip, config.listen.max_inbound_peers), (7, 9));
    assert_eq!(config.listen_address(), "0.0.0.0:16611".parse().unwrap());
    assert_eq!(config.database_path(), PathBuf::from("/x/db.sqlite"));
    assert_eq!(config.classify, ClassifyConfig::default());

    let vars = [
        ("SENSOR_NETWORK", "kaspa-testnet-10"),
        ("SENSOR_LISTEN_MAX_PEERS_PER_IP", "3"),
        ("SENSOR_CLASSIFY_ALLOW_PRIVATE_TARGETS", "1"),
        ("SENSOR_METRICS_LISTEN", "127.0.0.1:9000"),
        ("SENSOR_LISTEN_ADDRESS", "127.0.0.1:1234"),
    ];
    let (config, warnings) = load(Some(file), &vars, &CliOverrides::default()).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(config.network, Network::Testnet10);
    assert_eq!((config.listen.max_peers_per_ip, config.listen.max_inbound_peers), (3, 9));
    assert!(config.classify.allow_private_targets);
    assert_eq!(config.metrics.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(config.listen_address(), "127.0.0.1:1234".parse().unwrap());

    let cli = CliOverrides {
        network: Some(Network::Simnet),
        listen: Some("127.0.0.2:1".parse().unwrap()),
        external_address: Some("1.2.3.4:16111".parse().unwrap()),
        data_dir: Some("/d".into()),
        metrics_listen: Some("127.0.0.1:1".parse().unwrap()),
        allow_private_targets: Some(false),
        ..CliOverrides::default()
    };
    let (config, _) = load(Some(file), &vars, &cli).unwrap();
    assert_eq!(config.network, Network::Simnet);
    assert_eq!(config.listen_address(), "127.0.0.2:1".parse().unwrap());
    assert_eq!(config.listen.external_address, Some("1.2.3.4:16111".parse().unwrap()));
    assert_eq!(config.data_dir, PathBuf::from("/d"));
    assert_eq!(config.metrics.listen, "127.0.0.1:1".parse().unwrap());
    assert!(!config.classify.allow_private_targets);
    assert_eq!(config.database_path(), PathBuf::from("/x/db.sqlite"));
}

#[test]
fn file_errors() {
    let cli = CliOverrides::default();
    let (key, reason) = err_key(load(Some("[listen]\nmax_peer = 3\n"), &[], &cli));
    assert_eq!(key, "listen.max_peer");
    assert!(reason.starts_with("unknown key"), "{reason}");
    assert_eq!(err_key(load(Some("colour = 1\n"), &[], &cli)).0, "colour");
    let (key, reason) = err_key(load(Some("[listen]\naddress = \"x\"\n"), &[], &cli));
    assert_eq!((key.as_str(), reason.as_str()), ("listen.address", "invalid socket address \"x\""));
    let (key, reason) = err_key(load(Some("[classify]\nconcurrency = \"many\"\n"), &[], &cli));
    assert_eq!(key, "classify.concurrency");
    assert!(reason.contains("invalid type"), "{reason}");
    assert_eq!(err_key(load(Some("network = \"moon\"\n"), &[], &cli)).0, "network");
    assert_eq!(err_key(load(Some("[listen]\nhold_time_secs = -1\n"), &[], &cli)).0, "listen.hold_time_secs");
    assert!(matches!(load(Some("[listen\n"), &[], &cli), Err(ConfigError::File { .. })));
    let missing = Config::load(Some(Path::new("/nonexistent/sensor.toml")), env(&[]), &cli);
    assert!(matches!(missing, Err(ConfigError::File { .. })));
}

#[test]
fn env_warnings_and_errors() {
    let cli = CliOverrides::default();
    let vars = [("SENSOR_SERVICE_HOST", "10.0.0.1"), ("SENSOR_PORT", "tcp://10.0.0.1:80"), ("OTHER", "x")];
    let (config, warnings) = load(None, &vars, &cli).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].contains("SENSOR_SERVICE_HOST"));

    let (key, reason) = err_key(load(None, &[("SENSOR_LISTEN_MAX_PEERS_PER_IP", "many")], &cli));
    assert_eq!(key, "SENSOR_LISTEN_MAX_PEERS_PER_IP");
    assert!(reason.contains("\"many\""), "{reason}");
    assert_eq!(
        err_key(load(None, &[("SENSOR_CLASSIFY_ALLOW_PRIVATE_TARGETS", "yes")], &cli)).0,
        "SENSOR_CLASSIFY_ALLOW_PRIVATE_TARGETS"
    );
    let (key, reason) = err_key(load(None, &[("SENSOR_METRICS_LISTEN", "x")], &cli));
    assert_eq!((key.as_str(), reason.as_str()), ("SENSOR_METRICS_LISTEN", "invalid socket address \"x\""));
    assert_eq!(err_key(load(None, &[("SENSOR_STORAGE_BATCH_SIZE", "-5")], &cli)).0, "SENSOR_STORAGE_BATCH_SIZE");
    assert_eq!(err_key(load(None, &[("SENSOR_NETWORK", "moon")], &cli)).0, "SENSOR_NETWORK");
    let (config, _) = load(None, &[("SENSOR_SENSOR_ID", "abc"), ("SENSOR_DATA_DIR", "/v")], &cli).unwrap();
    assert_eq!((config.sensor_id(), config.database_path()), ("abc".into(), PathBuf::from("/v/sensor.sqlite")));
}

#[test]
fn empty_strings_mean_unset() {
    let file = "[listen]\naddress = \"\"\nexternal_address = \"\"\n[storage]\npath = \"\"\n";
    let (config, _) = load(Some(file), &[], &CliOverrides::default()).unwrap();
    assert_eq!(config, Config::default());
    let vars = [("SENSOR_LISTEN_ADDRESS", "")];
    let (config, _) = load(Some("[listen]\naddress = \"1.2.3.4:5\"\n"), &vars, &CliOverrides::default()).unwrap();
    assert_eq!(config.listen.address, None);
}

#[test]
fn default_toml_round_trips_and_mentions_every_key() {
    let text = Config::default_toml();
    let (config, warnings) = load(Some(&text), &[], &CliOverrides::default()).unwrap();
    assert_eq!(config, Config::default());
    assert!(warnings.is_empty());
    for &(key, _, _) in KEYS {
        let name = key.rsplit('.').next().unwrap();
        assert!(text.contains(&format!("\n{name} = ")), "{key} missing");
        assert!(text.contains(&env_var_name(key)), "{key} env missing");
    }
    // KEYS matches the structs exactly: every serialized leaf is listed and vice versa.
    let value = toml::Table::try_from(Config::default()).unwrap();
    let mut leaves = Vec::new();
    for (k, v) in &value {
        match v.as_table() {
            Some(t) => leaves.extend(t.keys().map(|n| format!("{k}.{n}"))),
            None => leaves.push(k.clone()),
        }
    }
    let mut known: Vec<String> = KEYS.iter().map(|(k, _, _)| k.to_string()).collect();
    leaves.sort();
    known.sort();
    assert_eq!(leaves, known);
}

#[test]
fn validation_ranges() {
    let check = |f: fn(&mut Config), key: &str, reason: &str| {
        let mut config = Config::default();
        f(&mut config);
        match config.validate() {
            Err(ConfigError::Key { key: k, reason: r }) => {
                assert_eq!((k.as_str(), r.as_str()), (key, reason))
            }
            other => panic!("expected an error for {key}, got {other:?}"),
        }
    };
    check(|c| c.classify.probe_attempts = 1, "classify.probe_attempts", "must be between 2 and 10, got 1");
    check(|c| c.classify.probe_attempts = 11, "classify.probe_attempts", "must be between 2 and 10, got 11");
    check(
        |c| c.listen.max_pending_handshakes = 33,
        "listen.max_pending_handshakes",
        "must be between 1 and 32, got 33",
    );
    check(|c| c.listen.max_peers_per_ip = 0, "listen.max_peers_per_ip", "must be at least 1, got 0");
    check(
        |c| c.listen.handshake_timeout_ms = 999,
        "listen.handshake_timeout_ms",
        "must be between 1000 and 120000, got 999",
    );
    check(|c| c.classify.probe_timeout_ms = 99, "classify.probe_timeout_ms", "must be between 100 and 60000, got 99");
    check(|c| c.classify.concurrency = 4097, "classify.concurrency", "must be between 1 and 4096, got 4097");
    check(|c| c.classify.cache_capacity = 0, "classify.cache_capacity", "must be at least 1, got 0");
    check(|c| c.storage.flush_interval_ms = 0, "storage.flush_interval_ms", "must be between 1 and 60000, got 0");
    check(
        |c| c.storage.queue_capacity = 100,
        "storage.queue_capacity",
        "must be at least storage.batch_size (512), got 100",
    );
    assert!(Config::default().validate().is_ok());
    let (key, _) = err_key(load(None, &[("SENSOR_CLASSIFY_PROBE_ATTEMPTS", "1")], &CliOverrides::default()));
    assert_eq!(key, "classify.probe_attempts");
}

fn reporting(c: &mut Config) {
    c.report.endpoint = "http://collector.lab.svc:50051".into();
    c.report.owner_namespace = "lab".into();
    c.report.owner_name = "fleet".into();
}

#[test]
fn report_defaults_are_off() {
    let (config, _) = load(None, &[], &CliOverrides::default()).unwrap();
    let r = &config.report;
    assert_eq!(r, &ReportConfig::default());
    assert!(!r.enabled());
    assert_eq!((r.endpoint.as_str(), r.interval_ms, r.timeout_ms), ("", 10_000, 5000));
    assert_eq!((r.owner_namespace.as_str(), r.owner_kind.as_str(), r.owner_name.as_str()), ("", "SensorFleet", ""));
    assert_eq!(config.report_sender(), config.sensor_id(), "the sender defaults to the sensor id");
    let text = Config::default_toml();
    assert!(text.contains("\n[report]\n"), "{text}");
    assert!(text.contains("SENSOR_REPORT_ENDPOINT") && text.contains("\nowner_kind = \"SensorFleet\"\n"));
}

#[test]
fn report_from_file_and_env() {
    let file = "sensor_id = \"s1\"\n[report]\nendpoint = \"http://10.0.0.9:50051\"\nowner_namespace = \"lab\"\n\
                owner_name = \"from-file\"\ninterval_ms = 2000\n";
    let (config, _) = load(Some(file), &[], &CliOverrides::default()).unwrap();
    assert!(config.report.enabled());
    assert_eq!((config.report.owner_name.as_str(), config.report.interval_ms), ("from-file", 2000));
    assert_eq!(config.report_sender(), "s1");

    let vars = [
        ("SENSOR_REPORT_ENDPOINT", "http://collector.ops.svc:50051"),
        ("SENSOR_REPORT_INTERVAL_MS", "1500"),
        ("SENSOR_REPORT_TIMEOUT_MS", "700"),
        ("SENSOR_REPORT_OWNER_NAMESPACE", "ops"),
        ("SENSOR_REPORT_OWNER_KIND", "RelayNode"),
        ("SENSOR_REPORT_OWNER_NAME", "relay-1"),
        ("SENSOR_REPORT_SENDER", "relay-1-pod-xyz"),
    ];
    let (config, warnings) = load(Some(file), &vars, &CliOverrides::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let r = &config.report;
    assert_eq!(r.endpoint, "http://collector.ops.svc:50051");
    assert_eq!((r.interval_ms, r.timeout_ms), (1500, 700));
    assert_eq!(
        (r.owner_namespace.as_str(), r.owner_kind.as_str(), r.owner_name.as_str()),
        ("ops", "RelayNode", "relay-1")
    );
    assert_eq!(config.report_sender(), "relay-1-pod-xyz");

    // The environment can also switch reporting off again.
    let (config, _) = load(Some(file), &[("SENSOR_REPORT_ENDPOINT", "")], &CliOverrides::default()).unwrap();
    assert!(!config.report.enabled());
}

#[test]
fn report_errors_name_their_key() {
    let cli = CliOverrides::default();
    // The endpoint alone is not enough: the reports need an owner.
    let (key, reason) = err_key(load(None, &[("SENSOR_REPORT_ENDPOINT", "http://c:50051")], &cli));
    assert_eq!((key.as_str(), reason.as_str()), ("report.owner_namespace", "must be set when report.endpoint is set"));
    let vars = [("SENSOR_REPORT_ENDPOINT", "http://c:50051"), ("SENSOR_REPORT_OWNER_NAMESPACE", "lab")];
    let (key, reason) = err_key(load(None, &vars, &cli));
    assert_eq!((key.as_str(), reason.as_str()), ("report.owner_name", "must be set when report.endpoint is set"));
    assert_eq!(err_key(load(None, &[("SENSOR_REPORT_INTERVAL_MS", "soon")], &cli)).0, "SENSOR_REPORT_INTERVAL_MS");
    assert_eq!(err_key(load(Some("[report]\nendpoint = 5\n"), &[], &cli)).0, "report.endpoint");
    let (key, reason) = err_key(load(Some("[report]\ninterval = 5\n"), &[], &cli));
    assert_eq!(key, "report.interval");
    assert!(reason.starts_with("unknown key"), "{reason}");

    let check = |f: fn(&mut Config), key: &str, reason: &str| {
        let mut config = Config::default();
        f(&mut config);
        match config.validate() {
            Err(ConfigError::Key { key: k, reason: r }) => assert_eq!((k.as_str(), r.as_str()), (key, reason)),
            other => panic!("expected an error for {key}, got {other:?}"),
        }
    };
    check(|c| c.report.interval_ms = 999, "report.interval_ms", "must be at least 1000, got 999");
    check(|c| c.report.timeout_ms = 99, "report.timeout_ms", "must be between 100 and 60000, got 99");
    check(|c| c.report.owner_kind = "Pod".into(), "report.owner_kind", "must be SensorFleet or RelayNode, got \"Pod\"");
    check(
        |c| {
            reporting(c);
            c.report.owner_name = "  ".into();
        },
        "report.owner_name",
        "must be set when report.endpoint is set",
    );
    check(
        |c| {
            reporting(c);
            c.report.endpoint = "https://collector:50051".into();
        },
        "report.endpoint",
        "must be http://HOST:PORT (gRPC over h2c), got \"https://collector:50051\"",
    );
    check(
        |c| {
            reporting(c);
            c.report.endpoint = "collector:50051".into();
        },
        "report.endpoint",
        "must be http://HOST:PORT (gRPC over h2c), got \"collector:50051\"",
    );
    check(
        |c| {
            reporting(c);
            c.report.endpoint = "http://bad host/".into();
        },
        "report.endpoint",
        "invalid URL \"http://bad host/\"",
    );
    check(|c| c.report.sender = "x".repeat(513), "report.sender", "must be at most 512 bytes, got 513");
    // Owner fields are only required once reporting is on; the defaults validate.
    let mut config = Config::default();
    config.report.interval_ms = 1000;
    assert!(config.validate().is_ok());
    reporting(&mut config);
    config.report.owner_kind = "RelayNode".into();
    assert!(config.validate().is_ok());
}

/// The `[relay]` file the operator renders (operator/src/relay/relay_config.rs), with every limit.
const RENDERED_RELAY_TOML: &str = "# Rendered by p2p-sensor-operator from RelayNode lab/edge; edits are overwritten.
[relay]
listen_tcp = \"0.0.0.0:4101\"
listen_quic = \"0.0.0.0:4102\"
identity_file = \"/var/run/p2p-sensor/identity/identity.key\"
max_reservations = 256
max_reservations_per_peer = 2
max_circuits = 32
max_circuits_per_peer = 8
max_circuit_duration_secs = 600
max_circuit_bytes = 1048576

[metrics]
listen = \"0.0.0.0:9102\"

[report]
endpoint = \"http://collector:9000\"
interval_ms = 5000
owner_namespace = \"lab\"
owner_kind = \"RelayNode\"
owner_name = \"edge\"
";

fn multiaddrs(list: &[&str]) -> Vec<Multiaddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn relay_reads_the_operator_rendered_file() {
    let vars = [
        ("SENSOR_SENSOR_ID", "edge-relay-abc"),
        ("SENSOR_REPORT_SENDER", "edge-relay-abc"),
        ("SENSOR_RELAY_EXTERNAL_ADDRESSES", "/ip4/198.51.100.7/tcp/4101, /ip4/198.51.100.7/udp/4102/quic-v1,"),
    ];
    let (config, warnings) = load(Some(RENDERED_RELAY_TOML), &vars, &CliOverrides::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let r = &config.relay;
    assert_eq!(
        (r.listen_tcp, r.listen_quic),
        (Some("0.0.0.0:4101".parse().unwrap()), Some("0.0.0.0:4102".parse().unwrap()))
    );
    assert_eq!(config.relay_identity_file(), PathBuf::from("/var/run/p2p-sensor/identity/identity.key"));
    assert_eq!(
        (r.max_reservations, r.max_reservations_per_peer, r.max_circuits, r.max_circuits_per_peer),
        (256, 2, 32, 8)
    );
    assert_eq!((r.max_circuit_duration_secs, r.max_circuit_bytes), (600, 1 << 20));
    assert_eq!(r.external_addresses, multiaddrs(&["/ip4/198.51.100.7/tcp/4101", "/ip4/198.51.100.7/udp/4102/quic-v1"]));
    assert_eq!(config.report.owner_kind, "RelayNode");
    assert_eq!(config.report_sender(), "edge-relay-abc");
    // An empty variable clears the list; the file form is a TOML array.
    let (config, _) =
        load(Some(RENDERED_RELAY_TOML), &[("SENSOR_RELAY_EXTERNAL_ADDRESSES", " ")], &CliOverrides::default()).unwrap();
    assert!(config.relay.external_addresses.is_empty());
    let file = "[relay]\nexternal_addresses = [\"/dns4/relay.example/tcp/4001\"]\nlisten_quic = \"127.0.0.1:4001\"\n";
    let (config, _) = load(Some(file), &[], &CliOverrides::default()).unwrap();
    assert_eq!(config.relay.external_addresses, multiaddrs(&["/dns4/relay.example/tcp/4001"]));
}

#[test]
fn relay_rate_limits_come_from_the_file_and_env_and_zero_turns_them_off() {
    let file = "[relay]\nreservation_rate_per_peer = 5\ncircuit_rate_per_peer = 7\n";
    let vars = [("SENSOR_RELAY_CIRCUIT_RATE_PER_IP", "0"), ("SENSOR_RELAY_CIRCUIT_RATE_PER_PEER", "9")];
    let (config, _) = load(Some(file), &vars, &CliOverrides::default()).unwrap();
    let r = &config.relay;
    assert_eq!(
        (r.reservation_rate_per_peer, r.reservation_rate_per_ip, r.circuit_rate_per_peer, r.circuit_rate_per_ip),
        (5, 60, 9, 0)
    );
    assert!(Config::default_toml().contains("SENSOR_RELAY_CIRCUIT_RATE_PER_IP"));
}

#[test]
fn relay_flags_override_env_and_file() {
    let cli = CliOverrides {
        relay_listen: Some(RelayListen::from_multiaddrs(&multiaddrs(&["/ip4/127.0.0.1/tcp/5001"])).unwrap()),
        relay_external_addresses: Some(multiaddrs(&["/ip4/127.0.0.1/tcp/5001"])),
        relay_identity_file: Some("/tmp/k".into()),
        relay_allow_private_targets: Some(true),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..CliOverrides::default()
    };
    let vars = [("SENSOR_RELAY_EXTERNAL_ADDRESSES", "/ip4/1.2.3.4/tcp/1"), ("SENSOR_RELAY_LISTEN_QUIC", "0.0.0.0:1")];
    let (config, _) = load(Some(RENDERED_RELAY_TOML), &vars, &cli).unwrap();
    let r = &config.relay;
    assert_eq!(
        (r.listen_tcp, r.listen_quic),
        (Some("127.0.0.1:5001".parse().unwrap()), None),
        "--listen replaces both"
    );
    assert_eq!(r.external_addresses, multiaddrs(&["/ip4/127.0.0.1/tcp/5001"]));
    assert_eq!(config.relay_identity_file(), PathBuf::from("/tmp/k"));
    assert!(r.allow_private_targets);
    assert_eq!(config.metrics.listen, "127.0.0.1:0".parse().unwrap());
}

#[test]
fn relay_listen_flags_are_tcp_and_quic_multiaddrs_with_alternates() {
    let both = RelayListen::from_multiaddrs(&multiaddrs(&["/ip4/127.0.0.1/udp/7/quic-v1", "/ip6/::1/tcp/8"])).unwrap();
    let expected = RelayListen {
        tcp: Some("[::1]:8".parse().unwrap()),
        quic: Some("127.0.0.1:7".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(both, expected);
    let alt = RelayListen::from_multiaddrs(&multiaddrs(&["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"])).unwrap();
    assert_eq!(
        (alt.tcp, alt.tcp_alternate),
        (Some("127.0.0.1:1".parse().unwrap()), Some("127.0.0.1:2".parse().unwrap()))
    );
    for bad in [
        &["/ip4/127.0.0.1/udp/7"][..],
        &["/dns4/x/tcp/1"],
        &["/ip4/127.0.0.1/tcp/1/p2p-circuit"],
        &["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2", "/ip4/127.0.0.1/tcp/3"],
    ] {
        match RelayListen::from_multiaddrs(&multiaddrs(bad)) {
            Err(ConfigError::Key { key, reason }) => {
                assert_eq!(key, "--listen");
                assert!(reason.contains(bad[bad.len() - 1]), "{reason}");
            }
            other => panic!("{bad:?}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn relay_errors_name_their_key() {
    let cli = CliOverrides::default();
    let (key, reason) =
        err_key(load(None, &[("SENSOR_RELAY_EXTERNAL_ADDRESSES", "/ip4/1.2.3.4/tcp/1,nonsense")], &cli));
    assert_eq!(key, "SENSOR_RELAY_EXTERNAL_ADDRESSES");
    assert!(reason.contains("invalid multiaddr \"nonsense\""), "{reason}");
    let (key, _) = err_key(load(Some("[relay]\nexternal_addresses = [\"x\"]\n"), &[], &cli));
    assert_eq!(key, "relay.external_addresses");
    let (key, reason) = err_key(load(Some("[relay]\nexternal_addresses = [\"/ip4/1.2.3.4/udp/1\"]\n"), &[], &cli));
    assert_eq!(key, "relay.external_addresses");
    assert!(reason.starts_with("\"/ip4/1.2.3.4/udp/1\" must be"), "{reason}");
    let (key, reason) = err_key(load(Some("[relay]\nmax_circuit = 3\n"), &[], &cli));
    assert_eq!(key, "relay.max_circuit");
    assert!(reason.starts_with("unknown key"), "{reason}");
    assert_eq!(err_key(load(Some("[relay]\nlisten_tcp = \"x\"\n"), &[], &cli)).0, "relay.listen_tcp");
    assert_eq!(err_key(load(None, &[("SENSOR_RELAY_MAX_CIRCUITS", "lots")], &cli)).0, "SENSOR_RELAY_MAX_CIRCUITS");
    let (key, reason) = err_key(load(Some("[relay]\nlisten_tcp = \"\"\n"), &[], &cli));
    assert_eq!(key, "relay.listen_tcp");
    assert!(reason.contains("both empty"), "{reason}");
    // A QUIC-only relay is fine.
    assert!(load(Some("[relay]\nlisten_tcp = \"\"\nlisten_quic = \"0.0.0.0:4001\"\n"), &[], &cli).is_ok());
    let (key, reason) = err_key(load(Some("[relay]\nlisten_quic_alternate = \"0.0.0.0:4002\"\n"), &[], &cli));
    assert_eq!(key, "relay.listen_quic_alternate");
    assert!(reason.contains("needs the primary"), "{reason}");
    let alternate = |a: &str| load(Some(&format!("[relay]\nlisten_tcp_alternate = \"{a}\"\n")), &[], &cli);
    let (key, reason) = err_key(alternate("10.0.0.1:4002"));
    assert_eq!(key, "relay.listen_tcp_alternate");
    assert!(reason.contains("must have 0.0.0.0:4001's IP and another port"), "{reason}");
    assert!(err_key(alternate("0.0.0.0:4001")).1.contains("another port"));
    let (config, _) = alternate("0.0.0.0:4002").expect("same IP, another port");
    assert_eq!(config.relay.listen_tcp_alternate, Some("0.0.0.0:4002".parse().unwrap()));
    let (config, _) =
        load(None, &[("SENSOR_PUNCH_INTERVAL_SECS", "300"), ("SENSOR_PUNCH_TARGETS_FILE", "/etc/t")], &cli)
            .expect("punch keys from the environment");
    assert_eq!((config.punch.interval_secs, config.punch.targets_file), (300, Some("/etc/t".into())));
    assert_eq!(err_key(load(Some("[punch]\ninterval_secs = 86401\n"), &[], &cli)).0, "punch.interval_secs");

    let check = |f: fn(&mut Config), key: &str, reason: &str| {
        let mut config = Config::default();
        f(&mut config);
        match config.validate() {
            Err(ConfigError::Key { key: k, reason: r }) => assert_eq!((k.as_str(), r.as_str()), (key, reason)),
            other => panic!("expected an error for {key}, got {other:?}"),
        }
    };
    check(|c| c.relay.max_reservations = 0, "relay.max_reservations", "must be between 1 and 100000, got 0");
    check(
        |c| c.relay.max_circuits_per_peer = 100_001,
        "relay.max_circuits_per_peer",
        "must be between 1 and 100000, got 100001",
    );
    check(
        |c| c.relay.max_circuit_duration_secs = 0,
        "relay.max_circuit_duration_secs",
        "must be between 1 and 86400, got 0",
    );
    check(
        |c| c.relay.max_circuit_bytes = 1023,
        "relay.max_circuit_bytes",
        "must be between 1024 and 1073741824, got 1023",
    );
    check(
        |c| c.relay.circuit_rate_per_ip = 100_001,
        "relay.circuit_rate_per_ip",
        "must be between 0 and 100000, got 100001",
    );
    // Per-peer limits above the totals are allowed (the totals still cap), as the CRD allows.
    let mut config = Config::default();
    config.relay.max_reservations = 2;
    config.relay.external_addresses = multiaddrs(&["/ip6/2001:db8::1/udp/4001/quic-v1", "/dns/relay.example/tcp/1"]);
    assert!(config.validate().is_ok());
}

#[test]
fn punch_defaults_and_default_toml() {
    let (config, _) = load(None, &[], &CliOverrides::default()).unwrap();
    let p = &config.punch;
    assert_eq!(p, &PunchConfig::default());
    assert_eq!((p.relay.as_ref(), p.targets.len(), p.attempts, p.timeout_secs), (None, 0, 1, 0));
    assert_eq!(p.listen, multiaddrs(&["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]));
    assert_eq!(config.punch_identity_file(), PathBuf::from("./data/punch_identity.key"));
    let text = Config::default_toml();
    assert!(text.contains("\n[punch]\n"), "{text}");
    assert!(text.contains("\nrelay = \"\"\n") && text.contains("\ntargets = []\n"), "{text}");
    assert!(text.contains("\nlisten = [\"/ip4/0.0.0.0/tcp/0\", \"/ip4/0.0.0.0/udp/0/quic-v1\"]\n"), "{text}");
    for var in ["SENSOR_PUNCH_RELAY", "SENSOR_PUNCH_TARGETS", "SENSOR_PUNCH_RELAY_NODE", "SENSOR_PUNCH_TIMEOUT_SECS"] {
        assert!(text.contains(var), "{var} missing");
    }
}

#[test]
fn punch_reads_file_env_and_flags() {
    let relay = "/ip4/198.51.100.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let a = "12D3KooWGzBvSDHfU6K2Hxe5G2dCNwPwFCkRvHGX3dBXcgV6pxtL";
    let b = "12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X";
    let file = format!(
        "[punch]\nrelay = \"{relay}\"\ntargets = [\"{a}\"]\nattempts = 5\ntimeout_secs = 20\n\
         relay_node = \"edge\"\nidentity_file = \"/keys/punch.key\"\nlisten = [\"/ip4/10.0.0.2/tcp/4002\"]\n"
    );
    let (config, warnings) = load(Some(&file), &[], &CliOverrides::default()).unwrap();
    assert!(warnings.is_empty());
    let p = &config.punch;
    assert_eq!(p.relay, Some(relay.parse().unwrap()));
    assert_eq!(p.relay_peer_id().unwrap().to_base58(), "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN");
    assert_eq!(p.targets, vec![a.parse::<PeerId>().unwrap()]);
    assert_eq!((p.attempts, p.timeout_secs, p.relay_node.as_str()), (5, 20, "edge"));
    assert_eq!(config.punch_identity_file(), PathBuf::from("/keys/punch.key"));
    assert_eq!(p.listen, multiaddrs(&["/ip4/10.0.0.2/tcp/4002"]));

    let vars = [
        ("SENSOR_PUNCH_TARGETS", format!("{a}, {b}")),
        ("SENSOR_PUNCH_ATTEMPTS", "2".into()),
        ("SENSOR_PUNCH_RELAY_NODE", "other".into()),
        ("SENSOR_PUNCH_LISTEN", "/ip4/0.0.0.0/udp/0/quic-v1".into()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (config, _) = load(Some(&file), &vars, &CliOverrides::default()).unwrap();
    let p = &config.punch;
    assert_eq!(p.targets.len(), 2);
    assert_eq!((p.attempts, p.relay_node.as_str()), (2, "other"));
    assert_eq!(p.listen, multiaddrs(&["/ip4/0.0.0.0/udp/0/quic-v1"]));

    let quic_relay: Multiaddr =
        "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".parse().unwrap();
    let cli = CliOverrides {
        punch_relay: Some(quic_relay.clone()),
        punch_targets: Some(vec![b.parse().unwrap()]),
        punch_attempts: Some(9),
        punch_timeout_secs: Some(3),
        punch_identity_file: Some("/tmp/p.key".into()),
        punch_listen: Some(multiaddrs(&["/ip4/127.0.0.1/tcp/0"])),
        ..CliOverrides::default()
    };
    let (config, _) = load(Some(&file), &vars, &cli).unwrap();
    let p = &config.punch;
    assert_eq!(p.relay, Some(quic_relay));
    assert_eq!(p.targets, vec![b.parse::<PeerId>().unwrap()]);
    assert_eq!((p.attempts, p.timeout_secs), (9, 3));
    assert_eq!(config.punch_identity_file(), PathBuf::from("/tmp/p.key"));
    assert_eq!(p.listen, multiaddrs(&["/ip4/127.0.0.1/tcp/0"]));
}

#[test]
fn punch_errors_name_their_key() {
    let cli = CliOverrides::default();
    let (key, reason) = err_key(load(None, &[("SENSOR_PUNCH_TARGETS", "not-a-peer-id")], &cli));
    assert_eq!(key, "SENSOR_PUNCH_TARGETS");
    assert!(reason.contains("invalid PeerId \"not-a-peer-id\""), "{reason}");
    let (key, reason) = err_key(load(Some("[punch]\nrelay = \"nonsense\"\n"), &[], &cli));
    assert_eq!(key, "punch.relay");
    assert!(reason.contains("invalid multiaddr"), "{reason}");
    let (key, reason) = err_key(load(Some("[punch]\nrelay = \"/ip4/127.0.0.1/tcp/4001\"\n"), &[], &cli));
    assert_eq!(key, "punch.relay");
    assert!(reason.contains("must end in /p2p/"), "{reason}");
    let id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    for bad in [format!("/dns4/relay.example/p2p/{id}"), format!("/ip4/1.2.3.4/tcp/1/p2p/{id}/p2p-circuit/p2p/{id}")] {
        let (key, reason) = err_key(load(Some(&format!("[punch]\nrelay = \"{bad}\"\n")), &[], &cli));
        assert_eq!(key, "punch.relay", "{bad}");
        assert!(reason.contains(&bad), "{reason}");
    }
    // A relay known by name is dialled through libp2p-dns.
    for good in
        [format!("/dns4/relay.example/tcp/4001/p2p/{id}"), format!("/dns/relay.example/udp/4001/quic-v1/p2p/{id}")]
    {
        let (config, _) = load(Some(&format!("[punch]\nrelay = \"{good}\"\n")), &[], &cli).unwrap();
        assert_eq!(config.punch.relay.unwrap().to_string(), good);
    }
    let (key, reason) = err_key(load(Some("[punch]\nlisten = []\n"), &[], &cli));
    assert_eq!(key, "punch.listen");
    assert!(reason.contains("at least one"), "{reason}");
    let (key, _) = err_key(load(Some("[punch]\nlisten = [\"/ip4/127.0.0.1/udp/1\"]\n"), &[], &cli));
    assert_eq!(key, "punch.listen");
    let (key, reason) = err_key(load(Some("[punch]\nattempt = 3\n"), &[], &cli));
    assert_eq!(key, "punch.attempt");
    assert!(reason.starts_with("unknown key"), "{reason}");

    let check = |f: fn(&mut Config), key: &str, reason: &str| {
        let mut config = Config::default();
        f(&mut config);
        match config.validate() {
            Err(ConfigError::Key { key: k, reason: r }) => assert_eq!((k.as_str(), r.as_str()), (key, reason)),
            other => panic!("expected an error for {key}, got {other:?}"),
        }
    };
    check(|c| c.punch.attempts = 0, "punch.attempts", "must be between 1 and 1000, got 0");
    check(|c| c.punch.timeout_secs = 86_401, "punch.timeout_secs", "must be between 0 and 86400, got 86401");
    check(|c| c.punch.relay_node = "x".repeat(513), "punch.relay_node", "must be at most 512 bytes, got 513");
    let mut config = Config::default();
    config.punch.relay = Some(format!("/ip6/::1/udp/4001/quic-v1/p2p/{id}").parse().unwrap());
    assert!(config.validate().is_ok());
}

#[test]
fn crawl_defaults_env_lists_and_ranges() {
    let (config, _) = load(None, &[], &CliOverrides::default()).unwrap();
    assert_eq!(config.crawl, CrawlConfig::default());
    assert_eq!((config.crawl.interval_secs, config.crawl.concurrency, config.crawl.timeout_ms), (0, 256, 5000));
    assert!(Config::default_toml().contains("\n[crawl]\n"));
    assert!(Config::default_toml().contains("SENSOR_CRAWL_SEED_FROM_STORE"));

    let file =
        "[crawl]\nseeds = [\"198.51.100.41:16611\"]\ninterval_secs = 600\nseed_from_store = \"/data/sensor.sqlite\"\n";
    let vars =
        [("SENSOR_CRAWL_SEED_DNS", "seeder1.kaspad.net, seeder2.kaspad.net:16111"), ("SENSOR_CRAWL_CONCURRENCY", "64")];
    let (config, _) = load(Some(file), &vars, &CliOverrides::default()).unwrap();
    let c = &config.crawl;
    assert_eq!(c.seeds, ["198.51.100.41:16611".parse::<SocketAddr>().unwrap()]);
    assert_eq!(c.seed_dns, ["seeder1.kaspad.net", "seeder2.kaspad.net:16111"]);
    assert_eq!((c.interval_secs, c.concurrency), (600, 64));
    assert_eq!(c.seed_from_store.as_deref(), Some(Path::new("/data/sensor.sqlite")));

    let (key, reason) = err_key(load(Some("[crawl]\nseeds = [\"not-an-address\"]\n"), &[], &CliOverrides::default()));
    assert_eq!(key, "crawl.seeds[0]");
    assert!(reason.contains("invalid socket address"), "{reason}");
    let (key, reason) = err_key(load(None, &[("SENSOR_CRAWL_CONCURRENCY", "0")], &CliOverrides::default()));
    assert_eq!(key, "crawl.concurrency");
    assert!(reason.contains("between 1 and 10000"), "{reason}");
    let (key, reason) =
        err_key(load(Some("[crawl]\nmin_revisit_secs = 600\nmax_revisit_secs = 60\n"), &[], &CliOverrides::default()));
    assert_eq!(key, "crawl.max_revisit_secs");
    assert!(reason.contains("at least crawl.min_revisit_secs (600)"), "{reason}");
}

/// The configuration reference (README.md and docs/*.md) names every key (as `section.key` or, in
/// a section's own table, `key`), so a new setting cannot ship undocumented.
#[test]
fn the_readme_documents_every_key() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut docs = vec![std::fs::read_to_string(format!("{root}/README.md")).expect("README.md")];
    for entry in std::fs::read_dir(format!("{root}/docs")).expect("docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            docs.push(std::fs::read_to_string(&path).expect("docs/*.md"));
        }
    }
    let quoted: std::collections::HashSet<&str> = docs
        .iter()
        .flat_map(|doc| doc.split('`').skip(1).step_by(2))
        .flat_map(|code| code.split([' ', ',', '=', '|', '/']))
        .collect();
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|(key, _, _)| *key)
        .filter(|key| !quoted.contains(key) && !quoted.contains(key.rsplit('.').next().unwrap_or(key)))
        .collect();
    assert!(missing.is_empty(), "keys missing from README.md and docs/: {missing:?}");
}

#[test]
fn export_defaults_and_layering() {
    let (config, _) = load(None, &[], &CliOverrides::default()).unwrap();
    assert!(!config.export.enabled());
    assert_eq!(config.export.batch_size, 500);
    assert_eq!(config.export.interval_ms, 1000);
    assert_eq!(config.export.timeout_ms, 10_000);
    assert!(config.export.gzip);
    let file = "[export]\nsink = \"http\"\nendpoint = \"https://example.invalid/hook\"\nbatch_size = 100\n";
    let vars = [("SENSOR_EXPORT_BATCH_SIZE", "200"), ("SENSOR_EXPORT_GZIP", "false")];
    let (config, _) = load(Some(file), &vars, &CliOverrides::default()).unwrap();
    assert!(config.export.enabled());
    assert_eq!(config.export.sink, "http");
    assert_eq!(config.export.batch_size, 200);
    assert!(!config.export.gzip);
}

#[test]
fn export_validation_errors_name_the_key() {
    let cli = CliOverrides::default();
    let cases: &[(&str, &str, &str)] = &[
        ("sink = \"postgres\"", "export.endpoint", "PostgreSQL connection string"),
        ("password_file = \"/p\"\npassword_env = \"PW\"", "export.password_env", "not both"),
        ("sink = \"kafka\"", "export.sink", "must be none, ndjson, http or postgres"),
        ("sink = \"ndjson\"", "export.endpoint", "file path or -"),
        ("sink = \"http\"\nendpoint = \"ftp://host/x\"", "export.endpoint", "http:// or https://"),
        ("sink = \"http\"", "export.endpoint", "http:// or https://"),
        ("batch_size = 0", "export.batch_size", "between 1 and 10000"),
        ("batch_size = 10001", "export.batch_size", "between 1 and 10000"),
        ("interval_ms = 99", "export.interval_ms", "between 100 and 600000"),
        ("interval_ms = 600001", "export.interval_ms", "between 100 and 600000"),
        ("timeout_ms = 99", "export.timeout_ms", "between 100 and 120000"),
        ("timeout_ms = 120001", "export.timeout_ms", "between 100 and 120000"),
        ("bearer_token_file = \"/t\"\nbearer_token_env = \"TOK\"", "export.bearer_token_env", "not both"),
        ("hmac_secret_file = \"/t\"\nhmac_secret_env = \"SEC\"", "export.hmac_secret_env", "not both"),
        ("hmac_secret_env = \"NOT A NAME\"", "export.hmac_secret_env", "not an environment variable name"),
    ];
    for (body, key, reason_part) in cases {
        let (k, reason) = err_key(load(Some(&format!("[export]\n{body}\n")), &[], &cli));
        assert_eq!(k, *key, "{body}: {reason}");
        assert!(reason.contains(reason_part), "{body}: {reason}");
        assert!(!reason.contains("hunter2"), "a password is never echoed: {reason}");
    }
    let file = "[export]\nsink = \"postgres\"\nendpoint = \"postgres://sensor@db:5432/kaspa?sslmode=require\"\n\
        password_env = \"PGPASSWORD\"\ntls_ca_file = \"/etc/sensor/export/ca.crt\"\n";
    let (config, _) = load(Some(file), &[], &cli).unwrap();
    assert_eq!(config.export.sink, "postgres");
    assert_eq!(config.export.tls_ca_file.as_deref(), Some(std::path::Path::new("/etc/sensor/export/ca.crt")));
    let over_db = "data_dir = \"/var/lib/p2p-sensor\"\n[export]\nsink = \"ndjson\"\n\
        endpoint = \"/var/lib/p2p-sensor/sensor.sqlite\"\n";
    let (k, reason) = err_key(load(Some(over_db), &[], &cli));
    assert_eq!((k.as_str(), reason.contains("event database")), ("export.endpoint", true), "{reason}");
    let (k, _) = err_key(load(None, &[("SENSOR_EXPORT_GZIP", "maybe")], &cli));
    assert_eq!(k, "SENSOR_EXPORT_GZIP");
}

#[test]
fn export_credentials_are_read_from_files_and_env_and_errors_name_the_key() {
    let token = write("tok-secret\n");
    let mut export = ExportConfig {
        bearer_token_file: Some(token.path().to_owned()),
        hmac_secret_env: "EXPORT_TEST_HMAC".into(),
        ..ExportConfig::default()
    };
    let env_with = |name: &str| (name == "EXPORT_TEST_HMAC").then(|| "hmac-secret".to_owned());
    let creds = export.credentials(env_with).unwrap();
    assert_eq!(creds.password, None);
    assert_eq!(creds.bearer_token.as_ref().map(Secret::expose), Some("tok-secret"));
    assert_eq!(creds.hmac_secret.as_ref().map(Secret::expose), Some("hmac-secret"));
    let debug = format!("{creds:?}");
    assert!(!debug.contains("tok-secret") && !debug.contains("hmac-secret"), "{debug}");

    let no_env = |_: &str| None;
    match export.credentials(no_env) {
        Err(ConfigError::Key { key, reason }) => {
            assert_eq!(key, "export.hmac_secret_env");
            assert!(reason.contains("EXPORT_TEST_HMAC is not set"), "{reason}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    export.bearer_token_file = Some(PathBuf::from("/nonexistent/export-token"));
    match export.credentials(env_with) {
        Err(ConfigError::Key { key, reason }) => {
            assert_eq!(key, "export.bearer_token_file");
            assert!(reason.contains("/nonexistent/export-token"), "{reason}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let empty = write("\n");
    export.bearer_token_file = Some(empty.path().to_owned());
    match export.credentials(env_with) {
        Err(ConfigError::Key { key, reason }) => {
            assert_eq!(key, "export.bearer_token_file");
            assert!(reason.contains("empty"), "{reason}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert_eq!(ExportConfig::default().credentials(no_env).unwrap(), ExportCredentials::default());
}

#[test]
fn from_toml_str_is_load_of_a_file_with_that_text() {
    let text = "network = \"devnet\"\n[listen]\nmax_peers_per_ip = 7\n";
    let (from_file, _) = load(Some(text), &[], &CliOverrides::default()).unwrap();
    let from_str = Config::from_toml_str(text).unwrap();
    assert_eq!(from_str, from_file);
    assert_eq!(from_str.listen.max_peers_per_ip, 7);
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    match Config::from_toml_str("listen = [") {
        Err(ConfigError::File { path, .. }) => assert_eq!(path, PathBuf::from("<string>")),
        other => panic!("expected a ConfigFile error, got {other:?}"),
    }
    for (text, want) in [
        ("[listen]\nmax_peer = 3\n", "listen.max_peer"),
        ("[classify]\nprobe_attempts = 1\n", "classify.probe_attempts"),
    ] {
        let (key, _) = err_key(Config::from_toml_str(text).map(|c| (c, Vec::new())));
        assert_eq!(key, want);
    }
}

#[test]
fn relay_defaults() {
    let (config, _) = load(None, &[], &CliOverrides::default()).unwrap();
    let r = &config.relay;
    assert_eq!(r, &RelayConfig::default());
    assert_eq!((r.listen_tcp, r.listen_quic), (Some("0.0.0.0:4001".parse().unwrap()), None));
    assert!(r.external_addresses.is_empty());
    assert_eq!(
        (r.reservation_rate_per_peer, r.reservation_rate_per_ip, r.circuit_rate_per_peer, r.circuit_rate_per_ip),
        (30, 60, 30, 60)
    );
    assert!(!r.allow_private_targets);
    assert_eq!(config.relay_identity_file(), PathBuf::from("./data/relay_identity.key"));
    let text = Config::default_toml();
    assert!(text.contains("\n[relay]\n"), "{text}");
    assert!(text.contains("\nexternal_addresses = []\n") && text.contains("SENSOR_RELAY_EXTERNAL_ADDRESSES"));
    assert!(text.contains("\nlisten_tcp = \"0.0.0.0:4001\"\n") && text.contains("\nlisten_quic = \"\"\n"));
}
