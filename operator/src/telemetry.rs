//! Logging: tracing-subscriber with JSON lines (the default in clusters) or human-readable text.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive such as `info` or
/// `operator=debug,kube=info`; `RUST_LOG` overrides it when set. Errors: an invalid directive.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(filter),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
