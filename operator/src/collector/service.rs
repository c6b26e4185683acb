//! The gRPC side of the collector: `p2psensor.report.v1.Collector/Push` over a [`ReportStore`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use prost::Message;
use sensor_report::v1::collector_server::{Collector, CollectorServer};
use sensor_report::v1::{PushAck, Report};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::metrics::CollectorMetrics;
use super::store::{IngestError, ReportStore};

/// Largest accepted request, bytes (a report is at most ~150 KiB: 4096 ids plus a sketch).
pub const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;
/// Deadline of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent requests (HTTP/2 streams) per connection.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: u32 = 32;

/// The `Collector` service: stores pushed reports and counts them by result.
#[derive(Clone)]
pub struct CollectorService {
    store: Arc<ReportStore>,
    metrics: Arc<CollectorMetrics>,
}

impl CollectorService {
    pub fn new(store: Arc<ReportStore>, metrics: Arc<CollectorMetrics>) -> Self {
        Self { store, metrics }
    }

    /// The tonic server of this service, accepting requests up to [`MAX_REPORT_BYTES`].
    pub fn into_server(self) -> CollectorServer<Self> {
        CollectorServer::new(self).max_decoding_message_size(MAX_REPORT_BYTES)
    }
}

/// The gRPC status of a refused report: INVALID_ARGUMENT with the validation message, or
/// RESOURCE_EXHAUSTED when a store bound is reached.
pub fn status_of(error: &IngestError) -> Status {
    match error {
        IngestError::Invalid(e) => Status::invalid_argument(e.to_string()),
        IngestError::TooManyOwners { .. } | IngestError::TooManySenders { .. } => {
            Status::resource_exhausted(error.to_string())
        }
    }
}

#[tonic::async_trait]
impl Collector for CollectorService {
    /// Stores the report as its sender's latest (a stale one is acknowledged and dropped).
    /// Errors: INVALID_ARGUMENT (validation), RESOURCE_EXHAUSTED (too many owners or senders).
    async fn push(&self, request: Request<Report>) -> Result<Response<PushAck>, Status> {
        let report = request.into_inner();
        self.metrics.observe_report_bytes(report.encoded_len());
        let outcome = self.store.ingest(report, Timestamp::now());
        self.metrics.record_ingest(&outcome);
        match outcome {
            Ok(_) => Ok(Response::new(PushAck { next_report_after_ms: 0 })),
            Err(e) => {
                tracing::debug!(error = %e, result = e.kind(), "report refused");
                Err(status_of(&e))
            }
        }
    }
}

/// Serves the collector on `listener` (plaintext HTTP/2) until `shutdown` completes, then stops
/// accepting and finishes in-flight requests. Each request has [`REQUEST_TIMEOUT`]; each connection
/// at most [`MAX_CONCURRENT_REQUESTS_PER_CONNECTION`] concurrent requests.
/// Errors: the transport's, e.g. when accepting fails fatally.
pub async fn serve(
    listener: TcpListener,
    store: Arc<ReportStore>,
    metrics: Arc<CollectorMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(MAX_CONCURRENT_REQUESTS_PER_CONNECTION as usize)
        .max_concurrent_streams(MAX_CONCURRENT_REQUESTS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(CollectorService::new(store, metrics).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
