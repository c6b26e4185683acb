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
    // Not a CEL rule: CEL sees the schema default of `quic` (4001) whenever it is absent, and an
    // explicit `quic: null` (QUIC off) only reaches us as `None`.
    if spec.ports.quic_alternate.is_some() && spec.ports.quic.is_none() {
        violations.push(
            "spec.ports.quicAlternate: needs spec.ports.quic (QUIC is off, so there is no primary QUIC port)".into(),
        );
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
    if sensor_core::config::is_direct_transport(&protocols) {
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

    fn spec_from(value: serde_json::Value) -> RelayNodeSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn alternate_ports_must_differ_from_their_primaries() {
        let same_tcp = spec_from(serde_json::json!({"ports": {"tcp": 4001, "tcpAlternate": 4001}}));
        let err = validate(&relay("r", same_tcp), "img").unwrap_err();
        assert_eq!(err, "spec.ports: tcpAlternate must differ from tcp");
        let same_quic = spec_from(serde_json::json!({"ports": {"tcp": 4001, "quic": 4005, "quicAlternate": 4005}}));
        let err = validate(&relay("r", same_quic), "img").unwrap_err();
        assert_eq!(err, "spec.ports: quicAlternate must differ from quic");
        // TCP and UDP are different ports: a QUIC alternate may equal the TCP port and vice versa.
        let crossed = spec_from(
            serde_json::json!({"ports": {"tcp": 4001, "quic": 4002, "tcpAlternate": 4002, "quicAlternate": 4001}}),
        );
        assert_eq!(validate(&relay("r", crossed), "img"), Ok(()));
    }

    #[test]
    fn a_quic_alternate_needs_quic() {
        let no_quic = spec_from(serde_json::json!({"ports": {"tcp": 4001, "quic": null, "quicAlternate": 4002}}));
        let err = validate(&relay("r", no_quic), "img").unwrap_err();
        assert_eq!(
            err,
            "spec.ports.quicAlternate: needs spec.ports.quic (QUIC is off, so there is no primary QUIC port)"
        );
        // The default QUIC port counts: only an explicit null turns QUIC off.
        let default_quic = spec_from(serde_json::json!({"ports": {"quicAlternate": 4002}}));
        assert_eq!(validate(&relay("r", default_quic), "img"), Ok(()));
    }

    #[test]
    fn alternates_need_host_network_or_a_load_balancer() {
        let ports = serde_json::json!({"tcp": 4001, "quic": 4001, "tcpAlternate": 4002});
        for kind in ["HostNetwork", "LoadBalancer"] {
            let ok = spec_from(serde_json::json!({"ports": ports, "exposure": {"kind": kind}}));
            assert_eq!(validate(&relay("r", ok), "img"), Ok(()), "{kind}");
        }
        let expected = "spec: ports.tcpAlternate and ports.quicAlternate need exposure kind HostNetwork or \
                        LoadBalancer: a NodePort Service has the one exposure.nodePort, none for an alternate";
        for ports in [ports, serde_json::json!({"quicAlternate": 4002})] {
            let node_port =
                spec_from(serde_json::json!({"ports": ports, "exposure": {"kind": "NodePort", "nodePort": 31001}}));
            assert_eq!(validate(&relay("r", node_port), "img").unwrap_err(), expected, "{ports}");
        }
        let plain_node_port = spec_from(serde_json::json!({"exposure": {"kind": "NodePort"}}));
        assert_eq!(validate(&relay("r", plain_node_port), "img"), Ok(()));
    }

    #[test]
    fn rate_limits_accept_zero() {
        let limits = serde_json::json!({
            "reservationRatePerPeer": 0, "reservationRatePerIp": 0, "circuitRatePerPeer": 0, "circuitRatePerIp": 100000,
        });
        assert_eq!(validate(&relay("r", spec_from(serde_json::json!({"limits": limits}))), "img"), Ok(()));
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
