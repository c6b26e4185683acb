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
    for (i, address) in spec.external_addresses.iter().enumerate() {
        if let Err(reason) = check_external_address(address) {
            violations.push(format!("spec.externalAddresses[{i}]: {address:?} {reason}"));
        }
    }
    into_result(violations)
}

/// An external address must be a multiaddr of a reachable transport the relay listens on:
/// `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>` or `…/udp/<port>/quic-v1`, without `/p2p/`.
fn check_external_address(address: &str) -> Result<(), &'static str> {
    use multiaddr::{Multiaddr, Protocol};
    let parsed: Multiaddr = address.parse().map_err(|_| "is not a multiaddr")?;
    let protocols: Vec<Protocol<'_>> = parsed.iter().collect();
    let host = matches!(
        protocols.first(),
        Some(Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_))
    );
    let transport = matches!(protocols.get(1..), Some([Protocol::Tcp(_)] | [Protocol::Udp(_), Protocol::QuicV1]));
    if host && transport {
        Ok(())
    } else {
        Err("must be /ip4|ip6|dns*/HOST/tcp/PORT or /ip4|ip6|dns*/HOST/udp/PORT/quic-v1")
    }
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
    fn external_addresses_must_be_dialable_multiaddrs() {
        for good in ["/ip4/203.0.113.7/tcp/4001", "/dns4/relay.example/udp/4001/quic-v1", "/ip6/2001:db8::1/tcp/1"] {
            assert_eq!(check_external_address(good), Ok(()), "{good}");
        }
        for bad in
            ["203.0.113.7:4001", "/ip4/203.0.113.7", "/ip4/1.2.3.4/udp/1", "/ip4/1.2.3.4/tcp/1/p2p-circuit", "/tcp/1"]
        {
            assert!(check_external_address(bad).is_err(), "{bad}");
        }
        let mut s = spec();
        s.external_addresses = vec!["nope".into()];
        let error = validate(&relay("edge", s), "img").unwrap_err();
        assert!(error.contains("spec.externalAddresses[0]"), "{error}");
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
