//! The TLS client configuration the HTTP and PostgreSQL sinks share: rustls with the ring
//! provider, the Mozilla web roots (webpki-roots) and, when `export.tls_ca_file` names one, the
//! CA certificates of a PEM file (a private CA, a cluster CA, a self-signed test server).
//!
//! Server certificates are always verified, chain and host name: rustls has no "encrypt but do
//! not verify" mode, so PostgreSQL's `sslmode=require` behaves like libpq's `verify-full` here.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Result, SensorError};

/// The client configuration: web roots plus every certificate of `ca_file` (PEM, one or more
/// `CERTIFICATE` blocks; other blocks are ignored).
///
/// Errors: [`SensorError::Config`] (`export.tls_ca_file`) when the file cannot be read, holds
/// no certificate, or holds one rustls cannot use as a trust anchor.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let bad = |reason: String| SensorError::Config { key: "export.tls_ca_file".into(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(format!("{} is not a PEM file: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("{} holds no CERTIFICATE block", path.display())));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(format!("{}: unusable CA certificate: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SensorError::io("building the export TLS configuration", std::io::Error::other(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// `true` when `err` or any error in its source chain is a rustls error, bare or wrapped in an
/// `io::Error` (tokio-rustls reports handshake and certificate failures as an `io::Error`, which
/// hyper-rustls wraps in another: `io::Error::source` skips its own payload, so payloads are
/// followed explicitly). At most 32 links are followed.
pub fn caused_by_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut todo: Vec<&(dyn std::error::Error + 'static)> = vec![err];
    let mut seen = 0;
    while let Some(e) = todo.pop() {
        seen += 1;
        if seen > 32 {
            break;
        }
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            todo.push(inner);
        }
        todo.extend(e.source());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_found_through_nested_io_errors() {
        let rustls_error = rustls::Error::General("bad certificate".into());
        let nested = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error));
        assert!(caused_by_tls(&nested));
        let plain = std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!caused_by_tls(&plain));
    }

    #[test]
    fn a_ca_file_adds_its_certificates_to_the_web_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        client_config(Some(&path)).unwrap();
        client_config(None).unwrap();
    }

    #[test]
    fn an_unusable_ca_file_is_a_config_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").unwrap();
        for path in [missing, empty, garbage] {
            match client_config(Some(&path)) {
                Err(SensorError::Config { key, reason }) => {
                    assert_eq!(key, "export.tls_ca_file");
                    assert!(reason.contains(&path.display().to_string()), "{reason}");
                }
                other => panic!("{}: expected a config error, got {other:?}", path.display()),
            }
        }
    }
}
