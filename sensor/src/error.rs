//! The sensor crate's one error enum.
//!
//! Variant names double as metric labels and log reasons: [`SensorError::kind`] returns the
//! snake_case label used in `sensor_errors_total{kind}` and in stored events.

use std::{net::SocketAddr, path::PathBuf};

/// Every error the sensor surfaces to an operator or a caller.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// A configuration key has an invalid value or is unknown. `key` is the dotted TOML path
    /// (e.g. `classify.probe_timeout_ms`), `source` says where the value came from.
    #[error("invalid configuration: {key}: {reason}")]
    Config { key: String, reason: String },

    /// A configuration file could not be read or parsed.
    #[error("cannot read configuration file {path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },

    /// A listener (P2P or metrics) could not bind its address: port in use, no permission,
    /// address not assigned to this host.
    #[error("cannot bind {what} on {address}: {source}")]
    Bind { what: &'static str, address: SocketAddr, source: std::io::Error },

    /// The persistent peer identity in the data directory is unreadable or malformed.
    #[error("peer identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },

    /// SQLite failed (open, migrate, write, query). Full disks and locked databases land here.
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),

    /// The storage writer queue is full or the writer thread has stopped; the event was not queued.
    #[error("storage writer unavailable: {0}")]
    StorageUnavailable(&'static str),

    /// A filesystem operation outside SQLite failed (creating the data dir, …).
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },

    /// A raw Kaspa P2P connection failed (connect, stream, handshake, Reject), by step.
    #[error("kaspa p2p: {0}")]
    Wire(#[from] crate::kaspa::wire::WireError),

    /// Kaspa over a libp2p stream (`/p2psensor/kaspa/1`) failed at `step`: the peer does not
    /// serve the protocol, its bridge is busy, the node rejected us, a timeout.
    #[error("kaspa p2p: {protocol} with {peer}: {step}: {detail}")]
    KaspaStream { protocol: &'static str, peer: String, step: String, detail: String },
}

impl SensorError {
    /// The snake_case label of this error, used as a metric label and a log field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::ConfigFile { .. } => "config_file",
            Self::Bind { .. } => "bind",
            Self::Identity { .. } => "identity",
            Self::Storage(_) => "storage",
            Self::StorageUnavailable(_) => "storage_unavailable",
            Self::Io { .. } => "io",
            Self::Wire(_) | Self::KaspaStream { .. } => "p2p",
        }
    }

    /// Wraps an I/O error with a human context (what was being done, on which path).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

impl From<sensor_core::config::ConfigError> for SensorError {
    fn from(e: sensor_core::config::ConfigError) -> Self {
        match e {
            sensor_core::config::ConfigError::Key { key, reason } => Self::Config { key, reason },
            sensor_core::config::ConfigError::File { path, reason } => Self::ConfigFile { path, reason },
        }
    }
}

/// Result alias for the sensor crate.
pub type Result<T, E = SensorError> = std::result::Result<T, E>;
