//! Exact `[export]` text per sink, the projected volume, and the checks beyond CEL.

use serde_json::json;

use super::*;

fn export(spec: serde_json::Value) -> Export {
    serde_json::from_value(spec).unwrap()
}

/// `[export]` as it appears in `sensor.toml` (`None` for no section).
fn text(export: &Export) -> Option<String> {
    let mut config = sensor_core::config::Config::default();
    apply(export, &mut config.export);
    let section = crate::sensor_toml::rendered_section(&config, &crate::fleet::sensor_config::PLAN, "export")?;
    let mut file = toml::Table::new();
    file.insert("export".into(), toml::Value::Table(section));
    Some(toml::to_string(&file).unwrap())
}

#[test]
fn sink_none_renders_no_section_and_mounts_nothing() {
    let none = export(json!({"sink": "none", "endpoint": "-", "batchSize": 7}));
    assert_eq!(text(&none), None);
    assert_eq!(volume(&none), None);
}

#[test]
fn ndjson_renders_the_path_and_only_the_keys_set() {
    let ndjson = export(json!({"sink": "ndjson", "endpoint": "-", "batchSize": 100, "timeoutMs": 2000}));
    assert_eq!(
        text(&ndjson).unwrap(),
        "[export]\nsink = \"ndjson\"\nendpoint = \"-\"\nbatch_size = 100\ntimeout_ms = 2000\n"
    );
    assert_eq!(volume(&ndjson), None, "no secrets, no volume");
}

#[test]
fn http_renders_every_key_and_the_secret_files() {
    let http = export(json!({
        "sink": "http", "endpoint": "https://collector.example/events",
        "batchSize": 250, "intervalMs": 2000, "timeoutMs": 5000, "gzip": false,
        "bearerTokenSecretRef": {"name": "export-creds", "key": "token"},
        "hmacSecretRef": {"name": "export-creds", "key": "hmac"},
        "caSecretRef": {"name": "export-ca", "key": "ca.crt"},
    }));
    assert_eq!(
        text(&http).unwrap(),
        "[export]
sink = \"http\"
endpoint = \"https://collector.example/events\"
batch_size = 250
interval_ms = 2000
timeout_ms = 5000
bearer_token_file = \"/etc/sensor/export/bearer-token\"
hmac_secret_file = \"/etc/sensor/export/hmac-secret\"
gzip = false
tls_ca_file = \"/etc/sensor/export/ca.crt\"
"
    );
}

#[test]
fn postgres_renders_the_password_and_ca_files() {
    let postgres = export(json!({
        "sink": "postgres", "endpoint": "postgres://sensor@pg.example:5432/kaspa?sslmode=require",
        "passwordSecretRef": {"name": "pg-creds", "key": "password"},
        "caConfigMapRef": {"name": "pg-ca", "key": "root.pem"},
    }));
    assert_eq!(
        text(&postgres).unwrap(),
        "[export]
sink = \"postgres\"
endpoint = \"postgres://sensor@pg.example:5432/kaspa?sslmode=require\"
password_file = \"/etc/sensor/export/password\"
tls_ca_file = \"/etc/sensor/export/ca.crt\"
"
    );
}

#[test]
fn the_volume_projects_exactly_the_referenced_keys_read_only_for_the_sensor_group() {
    let http = export(json!({
        "sink": "http", "endpoint": "https://c.example/",
        "bearerTokenSecretRef": {"name": "export-creds", "key": "token"},
        "hmacSecretRef": {"name": "export-creds", "key": "hmac"},
        "caConfigMapRef": {"name": "export-ca", "key": "bundle.pem"},
    }));
    let volume = volume(&http).unwrap();
    assert_eq!(volume.name, "export-secrets");
    let projected = volume.projected.unwrap();
    assert_eq!(projected.default_mode, Some(0o440));
    let sources: Vec<(String, String, String, Option<bool>)> = projected
        .sources
        .unwrap()
        .into_iter()
        .map(|s| match (s.secret, s.config_map) {
            (Some(p), None) => {
                let [item] = &p.items.unwrap()[..] else { panic!("one item") };
                (format!("secret/{}", p.name), item.key.clone(), item.path.clone(), p.optional)
            }
            (None, Some(p)) => {
                let [item] = &p.items.unwrap()[..] else { panic!("one item") };
                (format!("configmap/{}", p.name), item.key.clone(), item.path.clone(), p.optional)
            }
            other => panic!("one source per projection: {other:?}"),
        })
        .collect();
    let row =
        |source: &str, key: &str, path: &str| (source.to_string(), key.to_string(), path.to_string(), Some(false));
    assert_eq!(
        sources,
        [
            row("secret/export-creds", "token", "bearer-token"),
            row("secret/export-creds", "hmac", "hmac-secret"),
            row("configmap/export-ca", "bundle.pem", "ca.crt"),
        ]
    );
}

#[test]
fn checks_beyond_cel() {
    let problems = |spec: serde_json::Value| violations(&export(spec)).join("; ");
    assert_eq!(problems(json!({"sink": "ndjson", "endpoint": "/var/lib/p2p-sensor/events.ndjson"})), "");
    assert_eq!(problems(json!({"sink": "ndjson", "endpoint": "-"})), "");
    for path in ["/tmp/events.ndjson", "/var/lib/p2p-sensor/../etc/x", "/var/lib/p2p-sensor/", "/var/lib/p2p-sensorX/e"]
    {
        let p = problems(json!({"sink": "ndjson", "endpoint": path}));
        assert!(p.contains("must be - or a file under /var/lib/p2p-sensor/"), "{path}: {p}");
    }
    let p = problems(json!({"sink": "http", "endpoint": "https://:443/x"}));
    assert!(p.contains("has no host"), "{p}");
    let p = problems(json!({"sink": "http", "endpoint": "https://c.example/a b"}));
    assert!(p.contains("contains whitespace"), "{p}");
    assert!(problems(json!({"sink": "http", "endpoint": "https://u:p@c.example/"})).contains("contains a password"));
    assert_eq!(problems(json!({"sink": "http", "endpoint": "https://[2001:db8::1]:8443/e?a=b:c@d"})), "");
    for uri in ["postgres://sensor:hunter2@pg/kaspa", "postgresql://sensor@pg/kaspa?sslmode=require&Password=x"] {
        assert!(problems(json!({"sink": "postgres", "endpoint": uri})).contains("contains a password"), "{uri}");
    }
    assert_eq!(problems(json!({"sink": "postgres", "endpoint": "postgres://sensor@pg:5432/kaspa?passfile=x"})), "");
    for mode in ["disable", "prefer", "require"] {
        assert_eq!(problems(json!({"sink": "postgres", "endpoint": format!("postgres://s@pg/k?sslmode={mode}")})), "");
    }
    let p =
        problems(json!({"sink": "postgres", "endpoint": "postgres://s@pg/k?connect_timeout=5&sslmode=verify-full"}));
    assert!(p.contains("sslmode=verify-full is not disable, prefer or require"), "{p}");
    assert!(problems(json!({"sink": "postgres", "endpoint": "postgres:///kaspa"})).contains("has no host"));
    assert_eq!(problems(json!({"sink": "postgres", "endpoint": "postgresql:///kaspa?host=pg.example"})), "");
    let p = problems(json!({"sink": "postgres", "endpoint": "postgres://sensor@pg/kaspa",
        "passwordSecretRef": {"name": "PG_Creds", "key": "pass/word"}}));
    assert!(p.contains("spec.export.passwordSecretRef.name: \"PG_Creds\" is not a valid object name"), "{p}");
    assert!(p.contains("spec.export.passwordSecretRef.key: \"pass/word\" is not a valid key"), "{p}");
}
