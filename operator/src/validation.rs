//! The pure validate step shared by both controllers: the CRD's own CEL rules evaluated
//! client-side (kube's `cel` feature), plus checks CEL cannot express.

use std::sync::LazyLock;

use kube::CustomResourceExt;
use serde::Serialize;
use serde_json::Value;

use crate::crd::{RelayNode, SensorFleet};

/// Longest custom-resource name: children add suffixes such as `-sensor-config` and
/// StatefulSet pods add `-<ordinal>`, and Service names must stay within 63 characters.
pub const MAX_NAME_LEN: usize = 40;

fn openapi_schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

static FLEET_SCHEMA: LazyLock<Value> = LazyLock::new(openapi_schema::<SensorFleet>);
static RELAY_SCHEMA: LazyLock<Value> = LazyLock::new(openapi_schema::<RelayNode>);

/// Evaluates the CEL rules (`x-kubernetes-validations`) of `K`'s CRD on `object`, as the API
/// server would on create. Returns one message per violated rule (`<field path>: <message>`).
fn cel_violations(schema: &Value, object: &impl Serialize) -> Vec<String> {
    let Ok(value) = serde_json::to_value(object) else {
        return vec!["object does not serialise".into()];
    };
    match kube::core::cel::Validator::new().validate(schema, &value, None) {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path.trim_start_matches('.'), e.message))
            .collect(),
    }
}

/// CEL violations of a SensorFleet (shapes: `spec: replicas must be at least 1 in StatefulSet mode`).
pub fn fleet_cel(fleet: &SensorFleet) -> Vec<String> {
    cel_violations(&FLEET_SCHEMA, fleet)
}

/// CEL violations of a RelayNode.
pub fn relay_cel(relay: &RelayNode) -> Vec<String> {
    cel_violations(&RELAY_SCHEMA, relay)
}

/// `metadata.name` fits [`MAX_NAME_LEN`].
pub fn name_fits(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "metadata.name is {} characters; at most {MAX_NAME_LEN} so that child object names fit 63",
            name.len()
        ));
    }
    Ok(())
}

/// A Kubernetes quantity such as `10Gi`, `500M` or `1.5Gi` (the canonical suffixes only).
pub fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 14] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "m", ""];
    let Some(number) = SUFFIXES.iter().find_map(|suffix| s.strip_suffix(suffix).filter(|n| !n.is_empty())) else {
        return false;
    };
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// A DNS-1123 label (Secret and object names referenced from a spec).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (names of Secrets and ConfigMaps): at most 253 characters, dot-separated
/// labels of lowercase letters, digits and `-` that start and end alphanumeric (Kubernetes'
/// `validation.IsDNS1123Subdomain`, k8s.io/apimachinery/pkg/util/validation).
pub fn is_dns_subdomain(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

/// A key of a Secret or ConfigMap: at most 253 characters of letters, digits, `-`, `_`, `.`, not
/// `.` and not starting with `..` (Kubernetes' `validation.IsConfigMapKey`).
pub fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && !s.starts_with("..")
}

/// Joins violations into one `InvalidSpec` message (`; `-separated), or `Ok` when there are none.
pub fn into_result(violations: Vec<String>) -> Result<(), String> {
    if violations.is_empty() { Ok(()) } else { Err(violations.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["10Gi", "1", "500M", "1.5Gi", "128974848", "100m"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "10 Gi", "10GB", "-1Gi", "1.Gi", "ten"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn dns_subdomains_and_config_keys() {
        for ok in ["export-creds", "ca.example.com", "a", &"a".repeat(253)] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in ["", "Creds", "a..b", ".a", "a.", "-a.b", "a_b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        for ok in ["token", "ca.crt", "tls_ca-2.pem", ".hidden", "A"] {
            assert!(is_config_key(ok), "{ok}");
        }
        for bad in ["", ".", "..", "..x", "a/b", "a b", &"k".repeat(254)] {
            assert!(!is_config_key(bad), "{bad}");
        }
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("relay-identity"));
        for bad in ["", "Relay", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
