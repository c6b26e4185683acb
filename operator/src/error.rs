//! The operator's errors, in two families that never meet.
//!
//! [`StartupError`]: `operator run` could not start, or stopped leading (configuration, a
//! listener, leader election, the collector server). `main` logs it and exits non-zero.
//!
//! [`ReconcileError`]: one reconciliation failed in one of its steps, each with its own type:
//! [`ResolveError`] (the object's keys and the objects it references), [`ValidateError`] (the
//! spec), [`BuildError`] (rendering the children), [`ApplyError`] (server-side apply or delete of
//! a child), [`StatusError`] (the status patch). Each names the object ([`ObjectName`]) and,
//! where one is involved, the child or field, and keeps its typed source (`kube::Error`,
//! `serde_json::Error`, ...).
//!
//! The failed step's variant name is the Kubernetes Event reason and the log field `reason`
//! (PascalCase, [`ReconcileError::reason`], e.g. `KubeApi`); the same name in snake_case is the
//! `error` label of `p2psensor_operator_reconcile_errors_by_kind_total`
//! ([`ReconcileError::metric_label`], e.g. `kube_api`). Both are derived from the variant names.
//!
//! Retry policy: an invalid spec or an unusable identity Secret is not returned as an error: the
//! reconcilers write `Stalled` and wait for a change. Every error they return (API failures
//! above all) is retried with per-object exponential backoff.

use std::fmt;

use kube::Resource;
use strum::IntoDiscriminant;

/// An object in an error's context: `Kind namespace/name` when displayed. Fields the object
/// lacks (it was not read from the API server) are empty. (Boxed strings keep the errors that
/// carry two of them small.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    pub kind: Box<str>,
    pub namespace: Box<str>,
    pub name: Box<str>,
}

impl ObjectName {
    /// The kind, namespace and name of `object`.
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        let meta = object.meta();
        Self::new::<K>(meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
    }

    /// Object `namespace/name` of kind `K`.
    pub fn new<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Self {
        Self { kind: K::kind(&()).into(), namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The Kubernetes Event reason and the metric label of an error, both derived from the name of
/// its variant.
pub trait ErrorKind {
    /// The variant name (PascalCase), e.g. `KubeApi`: the Event `reason` and log field `reason`.
    fn reason(&self) -> &'static str;
    /// The variant name in snake_case, e.g. `kube_api`: the `error` metric label.
    fn metric_label(&self) -> &'static str;
}

/// Implements [`ErrorKind`] for step errors deriving `strum::IntoStaticStr` (the variant name)
/// and `strum::EnumDiscriminants` with a snake_case `IntoStaticStr` on the discriminants.
macro_rules! error_kind {
    ($($error:ty),* $(,)?) => {$(
        impl ErrorKind for $error {
            fn reason(&self) -> &'static str {
                self.into()
            }
            fn metric_label(&self) -> &'static str {
                self.discriminant().into()
            }
        }
    )*};
}

error_kind!(ResolveError, ValidateError, BuildError, ApplyError, StatusError);

/// Why a relay's identity Secret yields no PeerId. The relay is `Stalled` (`InvalidIdentity`)
/// with this message until the user fixes the Secret; it is not retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum IdentityProblem {
    /// The Secret named by `spec.identity.secretRef` does not exist.
    #[error("not found (spec.identity.secretRef)")]
    NotFound,
    /// The Secret has no entry `key`.
    #[error("no key {key:?}")]
    NoKey { key: &'static str },
    /// Entry `key` is not a protobuf-encoded libp2p keypair.
    #[error("key {key:?} is not a protobuf-encoded libp2p keypair: {source}")]
    NotAKeypair { key: &'static str, source: Box<libp2p_identity::DecodingError> },
    /// A generated key could not be encoded (not expected).
    #[error("cannot encode key: {source}")]
    Encode { source: Box<libp2p_identity::DecodingError> },
}

/// The resolve step failed: the object's own keys, or an object it references.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr, strum::EnumDiscriminants)]
#[strum_discriminants(name(ResolveErrorKind), derive(strum::IntoStaticStr), strum(serialize_all = "snake_case"))]
pub enum ResolveError {
    /// `object` lacks `key` (`metadata.name`, `.namespace` or `.uid`), which every stored
    /// object has: it was not read from the API server.
    #[error("{object} has no {key}")]
    MissingObjectKey { object: ObjectName, key: &'static str },
    /// Reading (or creating) the referenced object failed; retried with backoff.
    #[error("{object}: reading {referenced} failed: {source}")]
    KubeApi { object: ObjectName, referenced: ObjectName, source: Box<kube::Error> },
    /// The relay's identity Secret `secret` is missing or holds no usable key (`Stalled`).
    /// Displayed as `identity secret <secret>: <problem>`, the `Stalled` message.
    #[error("identity secret {secret}: {problem}")]
    IdentitySecret { object: ObjectName, secret: String, problem: IdentityProblem },
}

/// The validate step failed: the spec cannot be realised until a user changes it. The
/// reconcilers write `Stalled` (`InvalidSpec`) and wait for a change; they never retry it.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr, strum::EnumDiscriminants)]
#[strum_discriminants(name(ValidateErrorKind), derive(strum::IntoStaticStr), strum(serialize_all = "snake_case"))]
pub enum ValidateError {
    /// `field` is the path the first violation names (e.g. `spec.image`); `message` holds every
    /// violation, `; `-joined (the `Stalled` message).
    #[error("{object}: invalid spec: {message}")]
    InvalidSpec { object: ObjectName, field: String, message: String },
}

impl ValidateError {
    /// [`ValidateError::InvalidSpec`] of `object` from the validate step's message (violations
    /// shaped `<field>: <problem>` or `<field> <problem>`, `; `-joined).
    pub fn invalid_spec(object: ObjectName, message: String) -> Self {
        let first = message.split("; ").next().unwrap_or_default();
        let field = first.split([':', ' ']).next().unwrap_or_default().to_string();
        ValidateError::InvalidSpec { object, field, message }
    }

    /// Every violation, `; `-joined: the `Stalled` message.
    pub fn message(&self) -> &str {
        match self {
            ValidateError::InvalidSpec { message, .. } => message,
        }
    }
}

/// The build step failed: the desired children could not be rendered.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr, strum::EnumDiscriminants)]
#[strum_discriminants(name(BuildErrorKind), derive(strum::IntoStaticStr), strum(serialize_all = "snake_case"))]
pub enum BuildError {
    /// The owner lacks `key` (`metadata.name`, `.namespace` or `.uid`): it was not read from the
    /// API server, so its children cannot be named or owned.
    #[error("{object} has no {key}")]
    MissingObjectKey { object: ObjectName, key: &'static str },
    /// Child `child` could not be serialised (for its spec hash).
    #[error("serialising {child} failed: {source}")]
    Serialization { child: ObjectName, source: serde_json::Error },
}

/// What was being done to a child when the API request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum ChildAction {
    /// Server-side apply.
    Apply,
    /// Delete (pruning a child the spec no longer wants).
    Delete,
}

/// The apply step failed: a child could not be applied or deleted.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr, strum::EnumDiscriminants)]
#[strum_discriminants(name(ApplyErrorKind), derive(strum::IntoStaticStr), strum(serialize_all = "snake_case"))]
pub enum ApplyError {
    /// The API request `action` on `child` of `object` failed; retried with backoff.
    #[error("{object}: {action} {child} failed: {source}")]
    KubeApi { object: ObjectName, child: ObjectName, action: ChildAction, source: Box<kube::Error> },
}

/// The status step failed: the status patch was refused.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr, strum::EnumDiscriminants)]
#[strum_discriminants(name(StatusErrorKind), derive(strum::IntoStaticStr), strum(serialize_all = "snake_case"))]
pub enum StatusError {
    /// Patching `object`'s status subresource failed; retried with backoff.
    #[error("{object}: status patch failed: {source}")]
    KubeApi { object: ObjectName, source: Box<kube::Error> },
}

/// One failed reconciliation: the step that failed and its error. [`reason`](Self::reason) and
/// [`metric_label`](Self::metric_label) are the step error's; [`step`](Self::step) names the step.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ReconcileError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Status(#[from] StatusError),
}

impl ReconcileError {
    /// The step that failed: `resolve`, `validate`, `build`, `apply` or `status`.
    pub fn step(&self) -> &'static str {
        self.into()
    }

    /// The step error's variant name (PascalCase), e.g. `KubeApi`: the Event `reason`.
    pub fn reason(&self) -> &'static str {
        self.kind().reason()
    }

    /// The step error's variant name in snake_case, e.g. `kube_api`: the `error` label of
    /// `p2psensor_operator_reconcile_errors_by_kind_total`.
    pub fn metric_label(&self) -> &'static str {
        self.kind().metric_label()
    }

    fn kind(&self) -> &dyn ErrorKind {
        match self {
            ReconcileError::Resolve(e) => e,
            ReconcileError::Validate(e) => e,
            ReconcileError::Build(e) => e,
            ReconcileError::Apply(e) => e,
            ReconcileError::Status(e) => e,
        }
    }
}

/// `operator run` could not start, or stopped leading. Not retried: the process exits.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum StartupError {
    /// Neither a kubeconfig nor an in-cluster configuration was found.
    #[error("configuration: no Kubernetes client configuration: {source}")]
    KubeConfig { source: kube::config::InferConfigError },
    /// The Kubernetes client configuration was found but is unusable.
    #[error("configuration: unusable Kubernetes client configuration: {source}")]
    KubeClient { source: kube::Error },
    /// A listener could not be bound (e.g. the port is in use).
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    /// The Lease manager could not be set up.
    #[error("leader election: {source}")]
    LeaderElection { source: kube_lease_manager::LeaseManagerError },
    /// The Lease manager's task ended before this replica led.
    #[error("leader election: lease task ended")]
    LeaseTaskEnded,
    /// This replica lost the Lease; it stops so that another replica can lead.
    #[error("leader election: lost the lease")]
    LeaseLost,
    /// The collector's gRPC server failed.
    #[error("collector server: {source}")]
    Collector { source: tonic::transport::Error },
}

impl StartupError {
    /// The variant name (PascalCase), e.g. `Bind`: the log field `reason`.
    pub fn reason(&self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SensorFleet;

    fn fleet() -> ObjectName {
        ObjectName::new::<SensorFleet>("lab", "alpha")
    }

    #[test]
    fn reasons_and_labels_are_the_step_errors_variant_names() {
        let status = |code| {
            Box::new(kube::Error::Api(kube::core::Status::failure("mocked", "InternalError").with_code(code).boxed()))
        };
        let errors: [(ReconcileError, &str, &str, &str); 5] = [
            (
                ResolveError::MissingObjectKey { object: fleet(), key: "metadata.uid" }.into(),
                "resolve",
                "MissingObjectKey",
                "missing_object_key",
            ),
            (
                ValidateError::invalid_spec(fleet(), "spec.image: no image; spec: x".into()).into(),
                "validate",
                "InvalidSpec",
                "invalid_spec",
            ),
            (
                BuildError::Serialization { child: fleet(), source: serde_json::from_str::<u8>("x").unwrap_err() }
                    .into(),
                "build",
                "Serialization",
                "serialization",
            ),
            (
                ApplyError::KubeApi {
                    object: fleet(),
                    child: ObjectName::new::<k8s_openapi::api::core::v1::Service>("lab", "alpha-p2p"),
                    action: ChildAction::Delete,
                    source: status(500),
                }
                .into(),
                "apply",
                "KubeApi",
                "kube_api",
            ),
            (StatusError::KubeApi { object: fleet(), source: status(409) }.into(), "status", "KubeApi", "kube_api"),
        ];
        for (error, step, reason, label) in errors {
            assert_eq!((error.step(), error.reason(), error.metric_label()), (step, reason, label), "{error}");
        }
    }

    #[test]
    fn messages_name_the_object_and_the_child_or_field() {
        let invalid = ValidateError::invalid_spec(fleet(), "spec.image: no image; spec: x".into());
        assert!(matches!(&invalid, ValidateError::InvalidSpec { field, .. } if field == "spec.image"));
        assert_eq!(invalid.message(), "spec.image: no image; spec: x");
        let long = ValidateError::invalid_spec(fleet(), "metadata.name is 41 characters".into());
        assert!(matches!(&long, ValidateError::InvalidSpec { field, .. } if field == "metadata.name"));
        let apply = ApplyError::KubeApi {
            object: fleet(),
            child: ObjectName::new::<k8s_openapi::api::core::v1::ServiceAccount>("lab", "alpha-sensor"),
            action: ChildAction::Apply,
            source: Box::new(kube::Error::Api(
                kube::core::Status::failure("mocked", "InternalError").with_code(500).boxed(),
            )),
        };
        let text = apply.to_string();
        assert!(text.starts_with("SensorFleet lab/alpha: apply ServiceAccount lab/alpha-sensor failed: "), "{text}");
        let identity = ResolveError::IdentitySecret {
            object: fleet(),
            secret: "edge-key".into(),
            problem: IdentityProblem::NoKey { key: "identity.key" },
        };
        assert_eq!(identity.to_string(), "identity secret edge-key: no key \"identity.key\"");
        assert_eq!(StartupError::LeaseLost.reason(), "LeaseLost");
    }
}
