//! The relay's libp2p identity: an Ed25519 keypair in a Secret, so the PeerId survives restarts,
//! rescheduling and spec changes.
//!
//! Without `spec.identity.secretRef` the operator owns Secret `<name>-identity` (labelled, with
//! a controller owner reference, key [`IDENTITY_KEY`] = the protobuf-encoded keypair). It is
//! created once and never overwritten. With a `secretRef` the operator only reads the user's
//! Secret. A missing Secret or an undecodable key is [`ResolveError::IdentitySecret`]: the relay
//! is `Stalled` (`InvalidIdentity`) until the user fixes it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use libp2p_identity::Keypair;

use super::COMPONENT;
use crate::apply::create_if_absent;
use crate::context::Context;
use crate::crd::RelayNode;
use crate::error::{IdentityProblem, ObjectName, ReconcileError, ResolveError};
use crate::labels::{self, RELAY_LABEL};

/// Key of the protobuf-encoded libp2p keypair inside the identity Secret.
pub const IDENTITY_KEY: &str = "identity.key";
/// Directory the identity Secret is mounted at in the relay pod.
pub const IDENTITY_DIR: &str = "/var/run/p2p-sensor/identity";

/// Name of the Secret the operator generates for relay `relay` (no `secretRef`).
pub fn owned_secret_name(relay: &str) -> String {
    format!("{relay}-identity")
}

/// Name of the Secret `relay` runs with: `spec.identity.secretRef.name` or the owned one.
/// Errors: [`ResolveError::MissingObjectKey`] when the relay has no name.
pub fn secret_name(relay: &RelayNode) -> Result<String, ResolveError> {
    match &relay.spec.identity.secret_ref {
        Some(secret) => Ok(secret.name.clone()),
        None => relay
            .metadata
            .name
            .as_deref()
            .map(owned_secret_name)
            .ok_or_else(|| ResolveError::MissingObjectKey { object: ObjectName::of(relay), key: "metadata.name" }),
    }
}

/// A resolved identity: which Secret the pod mounts and the PeerId it yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Secret mounted at [`IDENTITY_DIR`].
    pub secret_name: String,
    /// Base58 libp2p PeerId of the key.
    pub peer_id: String,
}

/// The owned identity Secret of `relay` holding a freshly generated Ed25519 key (the randomness
/// is the only impurity); `immutable`, so the PeerId cannot change by an edit. Errors:
/// [`crate::error::BuildError::MissingObjectKey`] when the relay has no name, namespace or uid;
/// [`ResolveError::IdentitySecret`] ([`IdentityProblem::Encode`]) if the key cannot be encoded
/// (not expected).
pub fn identity_secret(relay: &RelayNode) -> Result<Secret, ReconcileError> {
    let name = relay.metadata.name.as_deref().ok_or_else(|| labels::missing_key(relay, "metadata.name"))?;
    let namespace =
        relay.metadata.namespace.as_deref().ok_or_else(|| labels::missing_key(relay, "metadata.namespace"))?;
    let secret_name = owned_secret_name(name);
    let key = Keypair::generate_ed25519().to_protobuf_encoding().map_err(|source| ResolveError::IdentitySecret {
        object: ObjectName::of(relay),
        secret: secret_name.clone(),
        problem: IdentityProblem::Encode { source: Box::new(source) },
    })?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels::common_labels(RELAY_LABEL, name, COMPONENT)),
            owner_references: Some(vec![labels::controller_ref(relay)?]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        // The key never changes in place; to rotate it, delete the Secret (a new one is made).
        immutable: Some(true),
        data: Some(BTreeMap::from([(IDENTITY_KEY.to_string(), ByteString(key))])),
        ..Secret::default()
    })
}

/// The base58 PeerId of the keypair under [`IDENTITY_KEY`] in `secret.data`. Errors:
/// [`IdentityProblem::NoKey`] when the key is missing, [`IdentityProblem::NotAKeypair`] when it
/// is not a protobuf-encoded libp2p keypair (their messages go into the `Stalled` condition).
pub fn peer_id_from_secret(secret: &Secret) -> Result<String, IdentityProblem> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(IDENTITY_KEY))
        .map(|b| b.0.as_slice())
        .ok_or(IdentityProblem::NoKey { key: IDENTITY_KEY })?;
    let keypair = Keypair::from_protobuf_encoding(bytes)
        .map_err(|source| IdentityProblem::NotAKeypair { key: IDENTITY_KEY, source: Box::new(source) })?;
    Ok(keypair.public().to_peer_id().to_string())
}

/// Resolves `relay`'s identity (I/O). Owned: the cached Secret when the cache has it, otherwise
/// [`create_if_absent`] with a new key (an existing Secret is never overwritten). `secretRef`:
/// the cached Secret or an API get. Errors: [`ResolveError::IdentitySecret`] for a missing
/// Secret or an unusable key (`Stalled`); [`ResolveError::KubeApi`] for other API failures
/// (backoff); [`ResolveError::MissingObjectKey`] / [`crate::error::BuildError::MissingObjectKey`]
/// for a relay never stored.
pub async fn ensure(ctx: &Context, relay: &RelayNode) -> Result<Identity, ReconcileError> {
    let (_, namespace) = crate::controller::name_and_namespace(relay)?;
    let secret_name = secret_name(relay)?;
    let object = || ObjectName::of(relay);
    let api_error = |source| ResolveError::KubeApi {
        object: object(),
        referenced: ObjectName::new::<Secret>(namespace, &secret_name),
        source: Box::new(source),
    };
    let cached = ctx.caches.secrets.get(&ObjectRef::<Secret>::new(&secret_name).within(namespace));
    let secret = match (cached, &relay.spec.identity.secret_ref) {
        (Some(cached), _) => (*cached).clone(),
        (None, None) => create_if_absent(&ctx.client, &identity_secret(relay)?).await.map_err(api_error)?,
        (None, Some(_)) => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            match api.get(&secret_name).await {
                Ok(secret) => secret,
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    return Err(ResolveError::IdentitySecret {
                        object: object(),
                        secret: secret_name,
                        problem: IdentityProblem::NotFound,
                    }
                    .into());
                }
                Err(e) => return Err(api_error(e).into()),
            }
        }
    };
    let peer_id = peer_id_from_secret(&secret).map_err(|problem| ResolveError::IdentitySecret {
        object: object(),
        secret: secret_name.clone(),
        problem,
    })?;
    Ok(Identity { secret_name, peer_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RelayNodeSpec, SecretRef};

    fn relay() -> RelayNode {
        let mut relay = RelayNode::new("edge", serde_json::from_value::<RelayNodeSpec>(serde_json::json!({})).unwrap());
        relay.metadata.namespace = Some("lab".into());
        relay.metadata.uid = Some("uid-1".into());
        relay
    }

    #[test]
    fn generated_secret_round_trips_to_a_stable_peer_id() {
        let relay = relay();
        let secret = identity_secret(&relay).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("edge-identity"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("lab"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("RelayNode", "uid-1", Some(true)));
        assert_eq!(secret.metadata.labels.as_ref().unwrap()["p2psensor.dev/relay"], "edge");
        assert_eq!(secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], "p2p-sensor-operator");
        assert_eq!(secret.immutable, Some(true));
        let peer_id = peer_id_from_secret(&secret).unwrap();
        assert!(peer_id.starts_with("12D3KooW"), "Ed25519 PeerIds are 12D3KooW…: {peer_id}");
        // Decoding again (the next reconcile, another operator replica) gives the same PeerId.
        let stored: Secret = serde_json::from_value(serde_json::to_value(&secret).unwrap()).unwrap();
        assert_eq!(peer_id_from_secret(&stored).unwrap(), peer_id);
        // Each generation is a new key.
        assert_ne!(peer_id_from_secret(&identity_secret(&relay).unwrap()).unwrap(), peer_id);
    }

    #[test]
    fn garbage_or_missing_keys_are_errors() {
        let mut secret = identity_secret(&relay()).unwrap();
        secret.data = Some(BTreeMap::from([(IDENTITY_KEY.to_string(), ByteString(b"not a key".to_vec()))]));
        let err = peer_id_from_secret(&secret).unwrap_err().to_string();
        assert!(err.contains("not a protobuf-encoded libp2p keypair"), "{err}");
        secret.data = Some(BTreeMap::from([("other".to_string(), ByteString(vec![1, 2, 3]))]));
        assert_eq!(peer_id_from_secret(&secret).unwrap_err().to_string(), "no key \"identity.key\"");
        secret.data = None;
        assert!(peer_id_from_secret(&secret).is_err());
    }

    #[test]
    fn secret_name_follows_the_secret_ref() {
        let mut relay = relay();
        assert_eq!(secret_name(&relay).unwrap(), "edge-identity");
        relay.spec.identity.secret_ref = Some(SecretRef { name: "my-key".into() });
        assert_eq!(secret_name(&relay).unwrap(), "my-key");
    }

    #[test]
    fn a_relay_never_stored_has_no_secret() {
        let mut relay = relay();
        relay.metadata.uid = None;
        assert!(matches!(
            identity_secret(&relay),
            Err(ReconcileError::Build(crate::error::BuildError::MissingObjectKey { .. }))
        ));
    }
}
