//! `[export]`: the export pipeline (issue 7) that ships stored events to a sink — an NDJSON
//! file/stdout, an HTTP webhook or a PostgreSQL table. Split from `config.rs`; the
//! loading rules live there. Secrets are named here (a file or an environment variable) and read
//! once at start-up by [`ExportConfig::credentials`]; they never enter [`Config`]'s `Debug`.

use super::*;

/// `sink = "none"`: the exporter does not run.
pub const SINK_NONE: &str = "none";
/// `sink = "ndjson"`: one JSON object per event per line, to a file or stdout.
pub const SINK_NDJSON: &str = "ndjson";
/// `sink = "http"`: JSON batches POSTed to a webhook.
pub const SINK_HTTP: &str = "http";
/// `sink = "postgres"`: rows of a PostgreSQL table whose schema the sensor migrates.
pub const SINK_POSTGRES: &str = "postgres";

/// `[export]`: which sink receives the stored events, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `none` (default) | `ndjson` | `http` | `postgres` (`SENSOR_EXPORT_SINK`).
    pub sink: String,
    /// ndjson: a file path, or `-` for stdout; http: an `http://` or `https://` URL; postgres: a
    /// libpq connection string (`postgres://user@host:5432/db?sslmode=require` or
    /// `host=… user=… dbname=…`) without a password. Required when `sink` is not `none`.
    pub endpoint: String,
    /// Events per batch at most, 1..=10000. Default 500.
    pub batch_size: usize,
    /// Pause between polls of the store once the backlog is empty, ms, 100..=600000.
    /// Default 1000.
    pub interval_ms: u64,
    /// Bound of one delivery (http: connect + request + response), ms, 100..=120000.
    /// Default 10000.
    pub timeout_ms: u64,
    /// http: file holding the bearer token (`Authorization: Bearer …`); `None`/`""` = none.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub bearer_token_file: Option<PathBuf>,
    /// http: name of an environment variable holding the bearer token; `""` = none.
    pub bearer_token_env: String,
    /// http: file holding the HMAC-SHA256 secret (`X-Signature-256`); `None`/`""` = none.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub hmac_secret_file: Option<PathBuf>,
    /// http: name of an environment variable holding the HMAC secret; `""` = none.
    pub hmac_secret_env: String,
    /// http: gzip the request body (`Content-Encoding: gzip`). Default true.
    pub gzip: bool,
    /// postgres: file holding the database password; `None`/`""` = none.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub password_file: Option<PathBuf>,
    /// postgres: name of an environment variable holding the database password; `""` = none.
    pub password_env: String,
    /// https and postgres TLS: a PEM file of CA certificates trusted in addition to the
    /// built-in web roots (webpki-roots); `None`/`""` = the web roots only.
    #[serde(serialize_with = "ser_opt_path", deserialize_with = "de_opt_path")]
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            sink: SINK_NONE.to_owned(),
            endpoint: String::new(),
            batch_size: 500,
            interval_ms: 1000,
            timeout_ms: 10_000,
            bearer_token_file: None,
            bearer_token_env: String::new(),
            hmac_secret_file: None,
            hmac_secret_env: String::new(),
            gzip: true,
            password_file: None,
            password_env: String::new(),
            tls_ca_file: None,
        }
    }
}

/// A secret read at start-up. `Debug` prints `<redacted>`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: use it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The export credentials, resolved from `[export]`'s files and environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportCredentials {
    pub bearer_token: Option<Secret>,
    pub hmac_secret: Option<Secret>,
    /// postgres: the database password.
    pub password: Option<Secret>,
}

impl ExportConfig {
    /// `true` when a sink is configured (`sink` is not `none`).
    pub fn enabled(&self) -> bool {
        self.sink.trim() != SINK_NONE
    }

    /// The ranges documented on each field, the sink name and its endpoint, and at most one
    /// source per secret.
    pub(super) fn validate(&self, range: RangeCheck) -> Result<()> {
        range("export.batch_size", self.batch_size as u64, 1, Some(10_000))?;
        range("export.interval_ms", self.interval_ms, 100, Some(600_000))?;
        range("export.timeout_ms", self.timeout_ms, 100, Some(120_000))?;
        for (file_key, file, env_key, env) in [
            ("export.bearer_token_file", &self.bearer_token_file, "export.bearer_token_env", &self.bearer_token_env),
            ("export.hmac_secret_file", &self.hmac_secret_file, "export.hmac_secret_env", &self.hmac_secret_env),
            ("export.password_file", &self.password_file, "export.password_env", &self.password_env),
        ] {
            if file.is_some() && !env.trim().is_empty() {
                return Err(config_err(env_key, format!("set either {file_key} or {env_key}, not both")));
            }
            let valid_name = env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(config_err(env_key, format!("{env:?} is not an environment variable name")));
            }
        }
        let endpoint = self.endpoint.trim();
        match self.sink.trim() {
            SINK_NONE => Ok(()),
            SINK_NDJSON if endpoint.is_empty() => {
                Err(config_err("export.endpoint", "must be a file path or - (stdout) when export.sink is ndjson"))
            }
            SINK_NDJSON => Ok(()),
            SINK_HTTP => {
                let uri: Option<http::Uri> = endpoint.parse().ok();
                let ok = uri.as_ref().is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
                });
                if ok {
                    Ok(())
                } else {
                    let reason =
                        format!("must be an http:// or https:// URL when export.sink is http, got {endpoint:?}");
                    Err(config_err("export.endpoint", reason))
                }
            }
            SINK_POSTGRES => validate_postgres_endpoint(endpoint),
            other => Err(config_err("export.sink", format!("must be none, ndjson, http or postgres, got {other:?}"))),
        }
    }

    /// Reads the bearer token and the HMAC secret from their files or environment variables
    /// (`env` looks a variable up: `|n| std::env::var(n).ok()` in production). Trailing line
    /// breaks of a file are dropped. Call once at start-up.
    ///
    /// Errors: [`ConfigError::Key`] naming the key whose file cannot be read, whose variable
    /// is not set, or whose secret is empty. The secret never appears in the message.
    pub fn credentials(&self, env: impl Fn(&str) -> Option<String>) -> Result<ExportCredentials> {
        let read = |file_key: &str, file: &Option<PathBuf>, env_key: &str, name: &str| -> Result<Option<Secret>> {
            let (key, value) = if let Some(path) = file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| config_err(file_key, format!("cannot read {}: {e}", path.display())))?;
                (file_key, text.trim_end_matches(['\r', '\n']).to_owned())
            } else if !name.trim().is_empty() {
                let name = name.trim();
                let value =
                    env(name).ok_or_else(|| config_err(env_key, format!("environment variable {name} is not set")))?;
                (env_key, value)
            } else {
                return Ok(None);
            };
            if value.is_empty() {
                return Err(config_err(key, "the secret is empty"));
            }
            Ok(Some(Secret(value)))
        };
        Ok(ExportCredentials {
            bearer_token: read(
                "export.bearer_token_file",
                &self.bearer_token_file,
                "export.bearer_token_env",
                &self.bearer_token_env,
            )?,
            hmac_secret: read(
                "export.hmac_secret_file",
                &self.hmac_secret_file,
                "export.hmac_secret_env",
                &self.hmac_secret_env,
            )?,
            password: read("export.password_file", &self.password_file, "export.password_env", &self.password_env)?,
        })
    }
}

/// A PostgreSQL endpoint must be set when `export.sink` is `postgres`. Its syntax (a libpq
/// connection string naming a host and no password) is checked by the sensor at start-up with
/// tokio-postgres's own parser (`sensor::export::postgres::validate_endpoint`), which this crate
/// does not link.
fn validate_postgres_endpoint(endpoint: &str) -> Result<()> {
    if endpoint.is_empty() {
        return Err(config_err(
            "export.endpoint",
            "must be a PostgreSQL connection string (postgres://user@host:5432/db) when export.sink is postgres",
        ));
    }
    Ok(())
}
