//! The HTTP webhook sink: each batch is one `POST` of
//! `{"sensor_id": "…", "batch": [{…event…}, …]}` (`Content-Type: application/json`), gzipped
//! when `export.gzip` is on (`Content-Encoding: gzip`), with `Authorization: Bearer <token>` and
//! `X-Signature-256: sha256=<hex HMAC-SHA256 of the exact body bytes sent>` when configured.
//!
//! Any 2xx acknowledges the batch. Everything else is a failure the exporter retries with
//! backoff: 5xx, 408/429 and other 4xx (never dropped — a 4xx streak is logged loudly once),
//! timeouts (`export.timeout_ms` bounds connect + request + response), refused or reset
//! connections, TLS failures (`tls`: handshake, an unverifiable certificate).
//!
//! Client: hyper-util's pooled client over hyper-rustls with [`super::tls`]'s configuration
//! (ring, the web roots plus `export.tls_ca_file`), the same TLS stack the workspace already
//! builds for kube.

use std::io::Write;
use std::time::Duration;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

use super::{FailureKind, Sink, SinkError};
use crate::error::{Result, SensorError};
use crate::store::EventRow;
use sensor_core::config::{ExportCredentials, SINK_HTTP};

/// The signature header: `sha256=<lower-case hex>`.
pub const SIGNATURE_HEADER: &str = "x-signature-256";

/// Response bodies are read (to keep the connection reusable) up to this size.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What [`HttpSink::new`] needs.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `http://` or `https://` URL.
    pub endpoint: String,
    /// `sensor_id` of the body.
    pub sensor_id: String,
    pub timeout: Duration,
    pub gzip: bool,
    pub credentials: ExportCredentials,
    /// PEM CA certificates trusted besides the web roots (`export.tls_ca_file`).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// See the module docs.
pub struct HttpSink {
    settings: HttpSettings,
    uri: hyper::Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpSink {
    /// Errors: [`SensorError::Config`] (`export.endpoint`) when the URL does not parse,
    /// (`export.tls_ca_file`) when the CA file is unusable; [`SensorError::Io`] when the TLS
    /// configuration cannot be built.
    pub fn new(settings: HttpSettings) -> Result<HttpSink> {
        let uri: hyper::Uri = settings.endpoint.parse().map_err(|_| SensorError::Config {
            key: "export.endpoint".into(),
            reason: format!("invalid URL {:?}", settings.endpoint),
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.timeout));
        http.set_nodelay(true);
        let tls = super::tls::client_config(settings.tls_ca_file.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        Ok(HttpSink { settings, uri, client })
    }

    async fn post(&self, batch: &[EventRow]) -> std::result::Result<(), SinkError> {
        let (body, encoding) = encode_body(&self.settings.sensor_id, batch, self.settings.gzip)
            .map_err(|e| SinkError::new(FailureKind::Other, format!("encoding the batch: {e}")))?;
        let mut request =
            hyper::Request::post(self.uri.clone()).header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(encoding) = encoding {
            request = request.header(hyper::header::CONTENT_ENCODING, encoding);
        }
        if let Some(token) = &self.settings.credentials.bearer_token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        if let Some(secret) = &self.settings.credentials.hmac_secret {
            request = request.header(SIGNATURE_HEADER, signature(secret.expose().as_bytes(), &body));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SinkError::new(FailureKind::Other, format!("building the request: {e}")))?;
        let response = self.client.request(request).await.map_err(classify_client_error)?;
        let status = response.status();
        // Drain (bounded) so the pooled connection can be reused; the content is not needed.
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES).collect().await;
        if status.is_success() {
            return Ok(());
        }
        let kind = if status.is_server_error() {
            FailureKind::Status5xx
        } else if status.is_client_error() {
            FailureKind::Status4xx
        } else {
            FailureKind::Other
        };
        let mut error = SinkError::new(kind, format!("HTTP {status}"));
        error.refused = status.is_client_error() && !matches!(status.as_u16(), 408 | 429);
        Err(error)
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        SINK_HTTP
    }

    fn send<'a>(&'a mut self, batch: &'a [EventRow]) -> BoxFuture<'a, std::result::Result<(), SinkError>> {
        Box::pin(async move {
            let timeout = self.settings.timeout;
            match tokio::time::timeout(timeout, self.post(batch)).await {
                Ok(result) => result,
                Err(_) => Err(SinkError::new(FailureKind::Timeout, format!("no answer within {timeout:?}"))),
            }
        })
    }
}

/// The body as sent and its `Content-Encoding` (`Some("gzip")` when compressed).
pub fn encode_body(
    sensor_id: &str,
    batch: &[EventRow],
    gzip: bool,
) -> std::io::Result<(Vec<u8>, Option<&'static str>)> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        sensor_id: &'a str,
        batch: &'a [EventRow],
    }
    let json = serde_json::to_vec(&Body { sensor_id, batch })?;
    if !gzip {
        return Ok((json, None));
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::fast());
    encoder.write_all(&json)?;
    Ok((encoder.finish()?, Some("gzip")))
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`: the `X-Signature-256` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn classify_client_error(e: hyper_util::client::legacy::Error) -> SinkError {
    let kind = if super::tls::caused_by_tls(&e) {
        FailureKind::Tls
    } else if e.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Io
    };
    // The source chain says what happened (refused, reset, closed before the response).
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    SinkError::new(kind, message)
}
