//! Every manifest under `examples/` is what the operator itself accepts: it deserialises into the
//! Rust types, passes the operator's validate step (CEL rules and the checks beyond them) and
//! builds into children. (scripts/validate-chart.py checks the same files against the CRD YAML.)

use operator::crd::{RelayNode, SensorFleet};

fn examples() -> Vec<(String, serde_json::Value)> {
    let dir = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: serde_json::Value = serde_norway::from_str(&text).unwrap();
            out.push((path.display().to_string(), value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn examples_are_valid_and_build() {
    let settings = operator::context::Settings::default().build;
    let settings = operator::fleet::build::BuildSettings { sensor_image: "sensor:test".into(), ..settings };
    let mut kinds = Vec::new();
    for (path, mut value) in examples() {
        value["metadata"]["namespace"] = "examples".into();
        value["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001".into();
        let kind = value["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "SensorFleet" => {
                let fleet: SensorFleet = serde_json::from_value(value).unwrap_or_else(|e| panic!("{path}: {e}"));
                operator::fleet::validate::validate(&fleet, &settings.sensor_image)
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                operator::fleet::build::build(&fleet, &settings, None).unwrap();
            }
            "RelayNode" => {
                let relay: RelayNode = serde_json::from_value(value).unwrap_or_else(|e| panic!("{path}: {e}"));
                operator::relay::validate::validate(&relay, &settings.sensor_image)
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                operator::relay::build::build(&relay, &settings, "relay-identity").unwrap();
            }
            other => panic!("{path}: unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["RelayNode", "SensorFleet", "SensorFleet", "SensorFleet"],
        "a devnet fleet, a mainnet fleet, a fleet exporting to PostgreSQL, a relay"
    );
}
