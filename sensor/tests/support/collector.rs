//! An in-test report collector (the generated `Collector` service on loopback): keeps every
//! report that passes `sensor_report::validate`, refuses the rest with INVALID_ARGUMENT, and
//! answers with `next_report_after_ms`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sensor_report::v1::collector_server::{Collector, CollectorServer};
use sensor_report::v1::{PushAck, Report};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
pub struct TestCollector {
    /// Every stored report, in arrival order.
    pub reports: Arc<Mutex<Vec<Report>>>,
    /// What `PushAck.next_report_after_ms` says (0 = keep the sender's interval).
    pub next_report_after_ms: u64,
}

#[tonic::async_trait]
impl Collector for TestCollector {
    async fn push(&self, request: Request<Report>) -> Result<Response<PushAck>, Status> {
        let report = request.into_inner();
        sensor_report::validate(&report).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.reports.lock().unwrap().push(report);
        Ok(Response::new(PushAck { next_report_after_ms: self.next_report_after_ms }))
    }
}

impl TestCollector {
    /// The gRPC service over this collector's state.
    pub fn service(&self) -> CollectorServer<Self> {
        CollectorServer::new(self.clone())
    }

    /// Serves on 127.0.0.1 (ephemeral port) until the test's runtime ends; returns the address.
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder().add_service(self.service());
        tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
        addr
    }

    /// Waits up to `timeout` (polling every 100 ms) for a report matching `f`; panics naming
    /// `what` and showing the last report otherwise.
    pub async fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&Report) -> bool) -> Report {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(report) = self.reports.lock().unwrap().iter().find(|r| f(r)) {
                return report.clone();
            }
            assert!(Instant::now() < deadline, "no report {what}: {:#?}", self.reports.lock().unwrap().last());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
