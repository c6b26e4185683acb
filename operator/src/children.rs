//! What both controllers do with the desired children of their object, whatever its kind: stamp
//! every child with its spec hash (build step), apply the children whose hash changed and prune
//! the ones the spec no longer wants (apply step). The builders' `FleetChildren` and
//! `RelayChildren` list their children through [`Children`].

use std::fmt::Debug;

use futures::future::BoxFuture;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply;
use crate::context::{Caches, Context};
use crate::error::{ApplyError, BuildError, ObjectName};
use crate::labels;

/// A kind of child the operator creates: namespaced, watched through a shared cache.
pub trait ChildKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + k8s_openapi::Resource
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The shared cache of this kind in `caches`.
    fn cache(caches: &Caches) -> &Store<Self>;
}

macro_rules! child_kind {
    ($($kind:ty => $field:ident),* $(,)?) => {$(
        impl ChildKind for $kind {
            fn cache(caches: &Caches) -> &Store<Self> {
                &caches.$field
            }
        }
    )*};
}

child_kind!(
    ServiceAccount => service_accounts,
    ConfigMap => config_maps,
    Service => services,
    DaemonSet => daemon_sets,
    StatefulSet => stateful_sets,
    Deployment => deployments,
);

/// One desired child, of any [`ChildKind`].
pub trait Child: Send + Sync {
    /// Its Kubernetes kind, e.g. `StatefulSet`.
    fn kind(&self) -> &'static str;
    /// Its name.
    fn name(&self) -> String;
    /// Sets its spec-hash annotation ([`labels::stamp_spec_hash`]). Errors:
    /// [`BuildError::Serialization`].
    fn stamp_spec_hash(&mut self) -> Result<(), BuildError>;
    /// Server-side applies it unless the cached one has the same spec hash and `force` is false
    /// ([`apply::apply_if_changed`]); `owner` names the object it belongs to in errors. Returns
    /// whether it applied. Errors: [`ApplyError::KubeApi`].
    fn apply<'a>(
        &'a self,
        ctx: &'a Context,
        owner: &'a ObjectName,
        force: bool,
    ) -> BoxFuture<'a, Result<bool, ApplyError>>;
}

impl<K: ChildKind> Child for K {
    fn kind(&self) -> &'static str {
        <K as k8s_openapi::Resource>::KIND
    }

    fn name(&self) -> String {
        self.name_any()
    }

    fn stamp_spec_hash(&mut self) -> Result<(), BuildError> {
        labels::stamp_spec_hash(self)
    }

    fn apply<'a>(
        &'a self,
        ctx: &'a Context,
        owner: &'a ObjectName,
        force: bool,
    ) -> BoxFuture<'a, Result<bool, ApplyError>> {
        Box::pin(apply::apply_if_changed(&ctx.client, K::cache(&ctx.caches), self, force, &ctx.metrics, owner))
    }
}

/// Everything one object wants to exist, as its pure builder returns it.
pub trait Children {
    /// Every child, in apply order.
    fn each(&self) -> Vec<&dyn Child>;
    /// Every child, mutably (same order).
    fn each_mut(&mut self) -> Vec<&mut dyn Child>;
}

/// Annotates every child with the hash of its own serialised form (the last build step).
/// Errors: [`BuildError::Serialization`].
pub fn stamp_hashes(children: &mut impl Children) -> Result<(), BuildError> {
    children.each_mut().into_iter().try_for_each(|child| child.stamp_spec_hash())
}

/// Applies `children` of `owner` in order, each only when it changed (all with `force`).
/// Errors: [`ApplyError::KubeApi`] for the first child that fails (the rest wait for the retry).
pub async fn apply_all(
    ctx: &Context,
    owner: &ObjectName,
    children: Vec<&dyn Child>,
    force: bool,
) -> Result<(), ApplyError> {
    for child in children {
        child.apply(ctx, owner, force).await?;
    }
    Ok(())
}

/// Deletes every cached `K` of `owner`'s namespace controlled by `owner_uid` that is not among
/// `children` (a child already gone counts as deleted). Returns the deleted names. Errors:
/// [`ApplyError::KubeApi`].
pub async fn prune<K: ChildKind>(
    ctx: &Context,
    owner: &ObjectName,
    owner_uid: &str,
    children: &impl Children,
) -> Result<Vec<String>, ApplyError> {
    let keep: Vec<String> = children
        .each()
        .into_iter()
        .filter(|child| child.kind() == <K as k8s_openapi::Resource>::KIND)
        .map(|c| c.name())
        .collect();
    apply::prune(&ctx.client, K::cache(&ctx.caches), owner, owner_uid, &keep, &ctx.metrics).await
}
