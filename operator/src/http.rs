//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (this replica leads and its caches are synced; standby replicas answer 503 so the
//! collector Service routes reports only to the leader).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::error::StartupError;

/// Shared by the handlers.
#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    /// Set once this replica leads and its caches are synced.
    pub ready: Arc<AtomicBool>,
}

/// The router of the HTTP endpoints.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        ),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e.to_string()),
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not leading or caches not synced\n")
    }
}

/// Binds `addr`. Errors: [`StartupError::Bind`] (e.g. the port is in use).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// Marks readiness.
pub fn set_ready(ready: &AtomicBool, value: bool) {
    ready.store(value, Ordering::Release);
}
