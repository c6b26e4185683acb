//! The operator's one error type. Variant names double as Kubernetes Event reasons
//! ([`Error::reason`]) and as `result`/`error` metric labels ([`Error::metric_label`]).

/// Everything that can fail in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be realised until a user changes it (status `Stalled`; not retried).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A Kubernetes API request failed (retried with per-object exponential backoff).
    #[error("Kubernetes API request failed: {0}")]
    KubeApi(#[source] kube::Error),
    /// An object could not be (de)serialised.
    #[error("serialisation failed: {0}")]
    Serialization(#[source] serde_json::Error),
    /// The object lacks a field every stored object has (name, namespace, uid).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    /// The relay identity Secret exists but holds no usable libp2p key.
    #[error("identity secret {secret}: {reason}")]
    IdentitySecret { secret: String, reason: String },
    /// The operator's own command line or environment is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    /// Leader election failed.
    #[error("leader election: {0}")]
    LeaderElection(String),
    /// The collector's gRPC server failed.
    #[error("collector server: {0}")]
    Collector(String),
}

impl Error {
    /// The variant name, used as the Kubernetes Event `reason` (PascalCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::KubeApi(_) => "KubeApi",
            Error::Serialization(_) => "Serialization",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::IdentitySecret { .. } => "IdentitySecret",
            Error::Config(_) => "Config",
            Error::Bind { .. } => "Bind",
            Error::LeaderElection(_) => "LeaderElection",
            Error::Collector(_) => "Collector",
        }
    }

    /// The variant name in snake_case, used as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::KubeApi(_) => "kube_api",
            Error::Serialization(_) => "serialization",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::IdentitySecret { .. } => "identity_secret",
            Error::Config(_) => "config",
            Error::Bind { .. } => "bind",
            Error::LeaderElection(_) => "leader_election",
            Error::Collector(_) => "collector",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::KubeApi(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serialization(e)
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
