//! `spec.export` → the sensor's `[export]` section and the volume holding its secrets.
//!
//! The operator never reads the referenced Secrets (nor the CA's ConfigMap): every referenced key
//! is projected by the kubelet into one read-only volume at [`EXPORT_DIR`] of the `sensor`
//! container, and `sensor.toml` names the files (`bearer_token_file`, `hmac_secret_file`,
//! `password_file`, `tls_ca_file`; keys of sensor/src/config/export.rs). Only the listener exports,
//! so the `punch` and `crawl` sidecars do not mount them. A missing Secret or key keeps the pod in
//! `ContainerCreating` (kubelet event `FailedMount`). The sensor reads the files once at start-up:
//! a new Secret *content* takes effect when the pods restart, while a changed reference (name or
//! key) changes the pod template and rolls them.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, KeyToPath, ProjectedVolumeSource, SecretProjection, Volume, VolumeProjection,
};
use std::path::PathBuf;

use sensor_core::config::ExportConfig;

use super::layout::DATA_DIR;
use crate::crd::{ConfigMapKeyRef, Export, ExportSink, SecretKeyRef};
use crate::sensor_toml::unsigned;
use crate::validation::{is_config_key, is_dns_subdomain};

/// Directory the export secrets are mounted at in the `sensor` container.
pub const EXPORT_DIR: &str = "/etc/sensor/export";
/// Name of the projected volume holding them.
pub const VOLUME: &str = "export-secrets";
/// File mode of the projected files: 0440 (owner root, group the pod's `fsGroup` 65532, which is
/// the sensor's own group, so the non-root sensor reads them and nobody else does). 0400 would
/// mean root only; with an `fsGroup` the kubelet's ownership change adds group read to it anyway.
pub const FILE_MODE: i32 = 0o440;
/// File names under [`EXPORT_DIR`].
pub const BEARER_TOKEN_FILE: &str = "bearer-token";
pub const HMAC_SECRET_FILE: &str = "hmac-secret";
pub const PASSWORD_FILE: &str = "password";
pub const CA_FILE: &str = "ca.crt";

/// Where a mounted file comes from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Secret(&'a SecretKeyRef),
    ConfigMap(&'a ConfigMapKeyRef),
}

/// The files the sensor container gets, in a fixed order: `(file name, source)`. Empty for sink
/// `none`. The one list behind both the volume and the `*_file` keys, so they always agree.
fn mounted(export: &Export) -> Vec<(&'static str, Source<'_>)> {
    if export.sink == ExportSink::None {
        return Vec::new();
    }
    let mut files = Vec::new();
    if let Some(r) = &export.bearer_token_secret_ref {
        files.push((BEARER_TOKEN_FILE, Source::Secret(r)));
    }
    if let Some(r) = &export.hmac_secret_ref {
        files.push((HMAC_SECRET_FILE, Source::Secret(r)));
    }
    if let Some(r) = &export.password_secret_ref {
        files.push((PASSWORD_FILE, Source::Secret(r)));
    }
    if let Some(r) = &export.ca_secret_ref {
        files.push((CA_FILE, Source::Secret(r)));
    } else if let Some(r) = &export.ca_config_map_ref {
        files.push((CA_FILE, Source::ConfigMap(r)));
    }
    files
}

/// `[export]` for `export`: the sink, its endpoint, the tuning keys the spec sets and the mounted
/// secret files. Sink `none` changes nothing, so it renders exactly like an absent `spec.export`
/// (the sensor's default) and switching between the two restarts nothing.
pub fn apply(export: &Export, config: &mut ExportConfig) {
    if export.sink == ExportSink::None {
        return;
    }
    let files = mounted(export);
    let file =
        |name: &str| files.iter().any(|(f, _)| *f == name).then(|| PathBuf::from(format!("{EXPORT_DIR}/{name}")));
    config.sink = export.sink.as_str().to_owned();
    config.endpoint = export.endpoint.clone().unwrap_or_default();
    config.batch_size = unsigned(export.batch_size, config.batch_size);
    config.interval_ms = unsigned(export.interval_ms, config.interval_ms);
    config.timeout_ms = unsigned(export.timeout_ms, config.timeout_ms);
    config.gzip = export.gzip.unwrap_or(config.gzip);
    config.bearer_token_file = file(BEARER_TOKEN_FILE);
    config.hmac_secret_file = file(HMAC_SECRET_FILE);
    config.password_file = file(PASSWORD_FILE);
    config.tls_ca_file = file(CA_FILE);
}

/// The projected volume [`VOLUME`] with exactly the referenced keys (each under its file name,
/// mode [`FILE_MODE`], the Secret or ConfigMap required), or `None` when nothing is referenced.
pub fn volume(export: &Export) -> Option<Volume> {
    let files = mounted(export);
    if files.is_empty() {
        return None;
    }
    let item = |key: &str, path: &str| Some(vec![KeyToPath { key: key.into(), path: path.into(), mode: None }]);
    let sources = files
        .into_iter()
        .map(|(path, source)| match source {
            Source::Secret(r) => VolumeProjection {
                secret: Some(SecretProjection {
                    name: r.name.clone(),
                    items: item(&r.key, path),
                    optional: Some(false),
                }),
                ..VolumeProjection::default()
            },
            Source::ConfigMap(r) => VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: r.name.clone(),
                    items: item(&r.key, path),
                    optional: Some(false),
                }),
                ..VolumeProjection::default()
            },
        })
        .collect();
    Some(crate::pod::volume(VOLUME, |v| {
        v.projected = Some(ProjectedVolumeSource { default_mode: Some(FILE_MODE), sources: Some(sources) })
    }))
}

/// What `spec.export` breaks beyond its CEL rules, as `spec.export.<field>: <reason>` messages:
/// an ndjson path outside the data volume (the root filesystem is read-only) or with `..`; a URL
/// with whitespace, without a host, or with a password (in the userinfo, or libpq's `password=`
/// parameter: the endpoint lands in a ConfigMap); a postgres `sslmode` other than `disable`,
/// `prefer`, `require` (all the sensor's client, tokio-postgres, parses; its `require` verifies
/// chain and host name like libpq's `verify-full`); a reference whose name is not a DNS-1123
/// subdomain or whose key is not a valid Secret/ConfigMap key. These mirror the sensor's own
/// checks (sensor/src/config/export.rs), so a fleet the operator accepts does not crash-loop.
pub fn violations(export: &Export) -> Vec<String> {
    let mut out = Vec::new();
    let endpoint = export.endpoint.as_deref().unwrap_or_default();
    if endpoint.chars().any(char::is_control) {
        out.push("spec.export.endpoint: contains control characters".to_string());
    }
    match export.sink {
        ExportSink::None => {}
        ExportSink::Ndjson => {
            if endpoint != "-" && endpoint.starts_with('/') && !is_data_path(endpoint) {
                out.push(format!(
                    "spec.export.endpoint: {endpoint:?} must be - or a file under {DATA_DIR}/ (the data volume; \
                     the root filesystem is read-only) without '..'"
                ));
            }
        }
        ExportSink::Http | ExportSink::Postgres => {
            if endpoint.chars().any(char::is_whitespace) {
                out.push("spec.export.endpoint: contains whitespace, which a URL cannot".to_string());
            }
            let host_param = export.sink == ExportSink::Postgres && query_param(endpoint, "host").is_some();
            if endpoint.contains("://") && url_host(endpoint).is_empty() && !host_param {
                out.push(format!("spec.export.endpoint: {endpoint:?} has no host"));
            }
            if export.sink == ExportSink::Postgres
                && let Some(mode) = query_param(endpoint, "sslmode")
                && !matches!(mode, "disable" | "prefer" | "require")
            {
                out.push(format!(
                    "spec.export.endpoint: sslmode={mode} is not disable, prefer or require (the sensor's \
                     PostgreSQL client; its require verifies the certificate and host name like libpq's verify-full)"
                ));
            }
            if has_password(endpoint) {
                out.push(
                    "spec.export.endpoint: contains a password; put it in a Secret and reference it \
                     (passwordSecretRef)"
                        .to_string(),
                );
            }
        }
    }
    let refs: [(&str, Option<(&str, &str)>); 5] = [
        ("bearerTokenSecretRef", export.bearer_token_secret_ref.as_ref().map(|r| (r.name.as_str(), r.key.as_str()))),
        ("hmacSecretRef", export.hmac_secret_ref.as_ref().map(|r| (r.name.as_str(), r.key.as_str()))),
        ("passwordSecretRef", export.password_secret_ref.as_ref().map(|r| (r.name.as_str(), r.key.as_str()))),
        ("caSecretRef", export.ca_secret_ref.as_ref().map(|r| (r.name.as_str(), r.key.as_str()))),
        ("caConfigMapRef", export.ca_config_map_ref.as_ref().map(|r| (r.name.as_str(), r.key.as_str()))),
    ];
    for (field, r) in refs {
        let Some((name, key)) = r else { continue };
        if !is_dns_subdomain(name) {
            out.push(format!("spec.export.{field}.name: {name:?} is not a valid object name (DNS-1123 subdomain)"));
        }
        if !is_config_key(key) {
            out.push(format!("spec.export.{field}.key: {key:?} is not a valid key (letters, digits, '-', '_', '.')"));
        }
    }
    out
}

/// An absolute path of a file under [`DATA_DIR`] with no empty, `.` or `..` component.
fn is_data_path(path: &str) -> bool {
    path.strip_prefix(DATA_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| rest.split('/').all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// The authority of `scheme://authority/...` (up to the first `/`, `?` or `#`).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// The host of a URL: the authority without userinfo and port.
fn url_host(url: &str) -> &str {
    let host_port = authority(url).rsplit_once('@').map_or(authority(url), |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port.split_once(']').map_or("", |(h, _)| h.trim_start_matches('['));
    }
    host_port.split(':').next().unwrap_or("")
}

/// The value of parameter `name` (ASCII case-insensitive) in the URL's query, if present.
fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?').map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
    query.split('&').find_map(|p| {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        key.eq_ignore_ascii_case(name).then_some(value)
    })
}

/// `scheme://user:password@host` (a password in the userinfo), or a `password=` parameter of
/// the query (libpq accepts both, PostgreSQL docs §32.1.1.2 "Connection URIs").
fn has_password(url: &str) -> bool {
    let in_userinfo = authority(url).rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'));
    in_userinfo || query_param(url, "password").is_some()
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
