//! Pure validation of a RelayNode: CEL rules plus what CEL cannot check.

use crate::crd::RelayNode;
use crate::validation::{into_result, is_dns_label, name_fits, relay_cel};

/// Every reason `relay` cannot be realised, joined with `; ` (the `Stalled` message), or `Ok`.
/// `default_image` is the operator's `--sensor-image` (used when `spec.image` is absent).
pub fn validate(relay: &RelayNode, default_image: &str) -> Result<(), String> {
    let spec = &relay.spec;
    let mut violations = relay_cel(relay);
    if let Err(e) = name_fits(relay.metadata.name.as_deref().unwrap_or_default()) {
        violations.push(e);
    }
    if spec.image.as_deref().unwrap_or(default_image).trim().is_empty() {
        violations.push("spec.image: no image; set spec.image or start the operator with --sensor-image".into());
    }
    if let Some(secret) = &spec.identity.secret_ref
        && !is_dns_label(&secret.name)
    {
        violations.push(format!("spec.identity.secretRef.name: {:?} is not a valid Secret name", secret.name));
    }
    into_result(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RelayLimits, RelayNodeSpec, SecretRef};

    fn relay(name: &str, spec: RelayNodeSpec) -> RelayNode {
        let mut relay = RelayNode::new(name, spec);
        relay.metadata.namespace = Some("lab".into());
        relay
    }

    fn spec() -> RelayNodeSpec {
        serde_json::from_value(serde_json::json!({})).unwrap()
    }

    #[test]
    fn defaults_are_valid_with_an_operator_image() {
        assert_eq!(validate(&relay("r", spec()), "ghcr.io/x/sensor:1"), Ok(()));
    }

    #[test]
    fn no_image_anywhere_is_rejected() {
        let err = validate(&relay("r", spec()), " ").unwrap_err();
        assert!(err.contains("spec.image"), "{err}");
        let with_image = RelayNodeSpec { image: Some("img".into()), ..spec() };
        assert_eq!(validate(&relay("r", with_image), ""), Ok(()));
    }

    #[test]
    fn more_reservations_per_peer_than_in_total_is_rejected_by_cel() {
        let limits =
            RelayLimits { max_reservations: Some(4), max_reservations_per_peer: Some(8), ..RelayLimits::default() };
        let err = validate(&relay("r", RelayNodeSpec { limits, ..spec() }), "img").unwrap_err();
        assert!(err.contains("maxReservationsPerPeer must not exceed limits.maxReservations"), "{err}");
        let equal =
            RelayLimits { max_reservations: Some(4), max_reservations_per_peer: Some(4), ..RelayLimits::default() };
        assert_eq!(validate(&relay("r", RelayNodeSpec { limits: equal, ..spec() }), "img"), Ok(()));
    }

    #[test]
    fn more_circuits_per_peer_than_in_total_is_rejected_by_cel() {
        let limits = RelayLimits { max_circuits: Some(2), max_circuits_per_peer: Some(3), ..RelayLimits::default() };
        let err = validate(&relay("r", RelayNodeSpec { limits, ..spec() }), "img").unwrap_err();
        assert!(err.contains("maxCircuitsPerPeer must not exceed limits.maxCircuits"), "{err}");
    }

    #[test]
    fn bad_secret_names_are_rejected() {
        for bad in ["Relay_Key", "-key", "key-", "a.b"] {
            let mut s = spec();
            s.identity.secret_ref = Some(SecretRef { name: bad.into() });
            let err = validate(&relay("r", s), "img").unwrap_err();
            assert!(err.contains("spec.identity.secretRef.name"), "{bad}: {err}");
        }
        let mut s = spec();
        s.identity.secret_ref = Some(SecretRef { name: "relay-key".into() });
        assert_eq!(validate(&relay("r", s), "img"), Ok(()));
    }

    #[test]
    fn long_names_are_rejected_and_violations_are_joined() {
        let mut s = spec();
        s.identity.secret_ref = Some(SecretRef { name: "Bad".into() });
        let err = validate(&relay(&"r".repeat(41), s), "img").unwrap_err();
        assert!(err.contains("metadata.name is 41 characters"), "{err}");
        assert!(err.contains("; spec.identity.secretRef.name"), "{err}");
    }
}
