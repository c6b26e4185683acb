//! The metrics and health HTTP server (one port, `metrics.listen`).
//!
//! * `GET /metrics` — OpenMetrics text of the one registry ([`crate::metrics`]).
//! * `GET /healthz` — 200 while the process serves HTTP (liveness).
//! * `GET /readyz` — 200 once the P2P listener is bound, 503 before that and during shutdown.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

/// Binds the metrics/health port `address` (`metrics.listen`).
///
/// Errors: [`SensorError::Bind`] (`what` = "metrics/health listener") when the port is taken or
/// the address is not local.
pub async fn bind(address: std::net::SocketAddr) -> crate::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|source| crate::SensorError::Bind {
        what: "metrics/health listener",
        address,
        source,
    })
}

/// Waits up to 2 s for the server task of [`serve`] to finish after its shutdown signal, then
/// aborts it.
pub async fn stop(mut task: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(std::time::Duration::from_secs(2), &mut task).await.is_err() {
        task.abort();
    }
}

/// Serves until `shutdown` turns true. Errors of individual connections are axum's to log.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, ready });
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::encode(&s.registry),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
