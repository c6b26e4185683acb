//! `SensorFleet.spec.export`: where every sensor of a fleet exports its stored events (the
//! sensor's `[export]` section, issue 7). Credentials and the CA bundle are references to keys of
//! Secrets (the CA also of a ConfigMap) in the fleet's namespace: the kubelet mounts them into the
//! sensor container and `sensor.toml` names the files, so the operator never reads a Secret.
//!
//! Cross-field rules (CEL, enforced by the API server and again by the operator): `endpoint` is
//! required unless `sink` is `none` and has the sink's shape; each secret only with the sink that
//! uses it; the CA only with `postgres` or an `https://` endpoint; `gzip` only with `http`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ConfigMapKeyRef, SecretKeyRef};

/// Kind of export sink: the sensor's `export.sink` (sensor/src/config/export.rs).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportSink {
    /// The exporter does not run (same as no `spec.export`).
    None,
    /// One JSON object per event per line, to a file on the data volume or to stdout (`-`).
    Ndjson,
    /// JSON batches POSTed to a webhook (`endpoint` an `http://` or `https://` URL).
    Http,
    /// Rows INSERTed into PostgreSQL (`endpoint` a libpq connection URI without password).
    Postgres,
}

impl ExportSink {
    /// The value of the sensor's `export.sink` key.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportSink::None => "none",
            ExportSink::Ndjson => "ndjson",
            ExportSink::Http => "http",
            ExportSink::Postgres => "postgres",
        }
    }
}

/// Event export of every sensor of the fleet. Absent (or `sink: none`) = no export. Tuning
/// fields absent = the sensor's defaults (`batchSize` 500, `intervalMs` 1000, `timeoutMs` 10000,
/// `gzip` true). The sensor reads the mounted secrets at start-up: after rotating a Secret's
/// content, restart the pods (`kubectl rollout restart`); changing a reference rolls them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.sink == 'none' || (has(self.endpoint) && size(self.endpoint) > 0)").message("endpoint is required unless sink is none"))]
#[x_kube(validation = Rule::new("self.sink != 'ndjson' || !has(self.endpoint) || self.endpoint == '-' || self.endpoint.startsWith('/')").message("endpoint must be - (stdout) or an absolute file path when sink is ndjson"))]
#[x_kube(validation = Rule::new("self.sink != 'http' || !has(self.endpoint) || self.endpoint.startsWith('http://') || self.endpoint.startsWith('https://')").message("endpoint must be an http:// or https:// URL when sink is http"))]
#[x_kube(validation = Rule::new("self.sink != 'postgres' || !has(self.endpoint) || self.endpoint.startsWith('postgres://') || self.endpoint.startsWith('postgresql://')").message("endpoint must be a postgres:// or postgresql:// connection URI when sink is postgres"))]
#[x_kube(validation = Rule::new("self.sink == 'http' || !has(self.bearerTokenSecretRef)").message("bearerTokenSecretRef is only used by sink http"))]
#[x_kube(validation = Rule::new("self.sink == 'http' || !has(self.hmacSecretRef)").message("hmacSecretRef is only used by sink http"))]
#[x_kube(validation = Rule::new("self.sink == 'postgres' || !has(self.passwordSecretRef)").message("passwordSecretRef is only used by sink postgres"))]
#[x_kube(validation = Rule::new("self.sink == 'http' || !has(self.gzip)").message("gzip is only used by sink http"))]
#[x_kube(validation = Rule::new("!has(self.caSecretRef) || !has(self.caConfigMapRef)").message("set caSecretRef or caConfigMapRef, not both"))]
#[x_kube(validation = Rule::new("(!has(self.caSecretRef) && !has(self.caConfigMapRef)) || self.sink == 'postgres' || (self.sink == 'http' && has(self.endpoint) && self.endpoint.startsWith('https://'))").message("caSecretRef and caConfigMapRef are only used by sink postgres or an https:// endpoint"))]
pub struct Export {
    /// `none`, `ndjson`, `http` or `postgres`.
    pub sink: ExportSink,
    /// ndjson: `-` (stdout) or an absolute path under `/var/lib/p2p-sensor/` (the data volume;
    /// the root filesystem is read-only); http: an `http://` or `https://` URL; postgres: a
    /// libpq connection URI such as `postgres://sensor@pg.example:5432/kaspa?sslmode=require`
    /// (`sslmode` `disable`, `prefer` or `require`; `require` verifies the certificate and host
    /// name). Never a password: use `passwordSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// Events per batch at most, 1–10000 (sensor default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: Option<i32>,
    /// Pause between polls of the store once the backlog is empty, ms, 100–600000 (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 600000))]
    pub interval_ms: Option<i64>,
    /// Bound of one delivery, ms, 100–120000 (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 120000))]
    pub timeout_ms: Option<i64>,
    /// http: gzip request bodies (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<bool>,
    /// http: the bearer token (`Authorization: Bearer …`), mounted as
    /// `/etc/sensor/export/bearer-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// http: the HMAC-SHA256 secret signing each body (`X-Signature-256`), mounted as
    /// `/etc/sensor/export/hmac-secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeyRef>,
    /// postgres: the password of the endpoint's user, mounted as `/etc/sensor/export/password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// PEM CA bundle trusted besides the Mozilla roots built into the sensor (https endpoint or
    /// postgres TLS), from a Secret (e.g. cert-manager's `ca.crt`), mounted as
    /// `/etc/sensor/export/ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// The same CA bundle from a ConfigMap instead (e.g. trust-manager's); not with `caSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map_ref: Option<ConfigMapKeyRef>,
}
