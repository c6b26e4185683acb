//! One dial-back attempt: connect to `target` with kaspa-p2p-lib's client, run the Kaspa
//! handshake with a fresh probe peer id, and report what was observed as an [`AttemptOutcome`].
//!
//! Why a fresh id per probe: kaspad keys connections by (peer id, IP) and closes a second
//! connection that reuses an id it already holds (docs/classification.md). A `Version` that arrives is
//! recorded at once, even when Verack/Ready never follow — that `Version` alone proves who
//! listens at the address.
//!
//! The probe closes the connection itself after Ready (no Reject is sent), so a probed node
//! logs an ordinary disconnect.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use kaspa_p2p_lib::{Adaptor, ConnectionError, ConnectionInitializer, Hub, Router, common::ProtocolError};
use uuid::Uuid;

use crate::kaspa::{
    flows::PeerFlows,
    handshake,
    version::{LocalVersion, read_peer_version},
};
use sensor_core::network::Network;
use sensor_core::verdict::AttemptOutcome;

/// Makes one attempt against `target` (IP:PORT) on `network`, bounded by `timeout` for the
/// whole connect + handshake. Never panics on what the peer sends.
///
/// A plain TCP connect comes first, bounded by `timeout` itself: kaspa-p2p-lib's client has a
/// fixed 1 s connect timeout (`connection_handler.rs`), which would call a slow but reachable
/// peer private, and building the library's client for a closed port is wasted work. Only an
/// open port gets the Kaspa handshake (a second connection, within what is left of `timeout`).
pub async fn attempt(target: SocketAddr, network: Network, timeout: Duration) -> AttemptOutcome {
    let started = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Err(_elapsed) => return AttemptOutcome::Timeout,
        Ok(Err(e)) => {
            return match e.kind() {
                std::io::ErrorKind::ConnectionRefused => AttemptOutcome::Refused,
                std::io::ErrorKind::TimedOut => AttemptOutcome::Timeout,
                _ => AttemptOutcome::Failed(format!("tcp connect: {e}")),
            };
        }
        Ok(Ok(stream)) => drop(stream),
    }
    let timeout = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
    let local = LocalVersion { network, id: Uuid::new_v4(), address: None };
    let initializer = Arc::new(ProbeInitializer { local, step_timeout: timeout, observed: Mutex::default() });
    let adaptor = Adaptor::client_only(Hub::new(), initializer.clone(), Default::default());
    let result = tokio::time::timeout(timeout, adaptor.connect_peer(target.to_string())).await;
    adaptor.close().await;
    let observed = initializer.observed.lock().map(|o| o.clone()).unwrap_or_default();
    match (observed, result) {
        // A Version arrived: that decides, whatever happened after it.
        (Some(version), _) => version,
        (None, Err(_elapsed)) => AttemptOutcome::Timeout,
        (None, Ok(Ok(_))) => AttemptOutcome::Failed("handshake ended without a Version".into()),
        (None, Ok(Err(e))) => classify_connection_error(&e),
    }
}

/// Maps a kaspa-p2p-lib connection error to an outcome by walking its source chain: an
/// `io::ErrorKind::ConnectionRefused` is `Refused`; timeouts (`TimedOut`, tonic's connect
/// timeout, a handshake step timeout) are `Timeout`; anything else is `Failed(text)`.
pub fn classify_connection_error(error: &ConnectionError) -> AttemptOutcome {
    if let ConnectionError::ProtocolError(ProtocolError::Timeout(_)) = error {
        return AttemptOutcome::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut text = String::new();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return AttemptOutcome::Refused,
                std::io::ErrorKind::TimedOut => return AttemptOutcome::Timeout,
                _ => {}
            }
        }
        let s = e.to_string();
        if s.contains("timed out") || s.contains("deadline has elapsed") {
            return AttemptOutcome::Timeout;
        }
        if s.contains("Connection refused") {
            return AttemptOutcome::Refused;
        }
        if text.is_empty() {
            text = s;
        } else if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        source = e.source();
    }
    AttemptOutcome::Failed(text)
}

struct ProbeInitializer {
    local: LocalVersion,
    step_timeout: Duration,
    observed: Mutex<Option<AttemptOutcome>>,
}

impl ProbeInitializer {
    fn observe(&self, outcome: AttemptOutcome) {
        if let Ok(mut slot) = self.observed.lock() {
            *slot = Some(outcome);
        }
    }
}

#[tonic::async_trait]
impl ConnectionInitializer for ProbeInitializer {
    async fn initialize_connection(&self, router: Arc<Router>) -> Result<(), ProtocolError> {
        // One route for everything, so a node's post-Ready RequestAddresses does not close the
        // connection before we do.
        let mut flows = PeerFlows::subscribe(&router);
        router.start();
        let t = self.step_timeout;
        let mut remote_id = None;
        let exchange = handshake::exchange_versions(&router, &mut flows, self.local.message(), |version| {
            if let Ok(peer) = read_peer_version(version.clone()) {
                let id = peer.id.simple().to_string();
                self.observe(AttemptOutcome::Version { remote_id: id.clone(), completed: false });
                remote_id = Some(id);
            }
        });
        tokio::time::timeout(t, exchange).await.map_err(|_| ProtocolError::Timeout(t))??;
        let Some(remote_id) = remote_id else {
            return Err(ProtocolError::Other("invalid Version"));
        };
        tokio::time::timeout(t, handshake::exchange_ready(&router, &mut flows))
            .await
            .map_err(|_| ProtocolError::Timeout(t))??;
        self.observe(AttemptOutcome::Version { remote_id, completed: true });

        // Done: close without a Reject. The hub skips routers that are already closed.
        router.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const T: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn closed_port_is_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(attempt(target, Network::Devnet, T).await, AttemptOutcome::Refused);
    }

    #[tokio::test]
    async fn silent_listener_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        // Accepts and holds connections without ever speaking (a half-open or stalled peer).
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..4 {
                match listener.accept().await {
                    Ok((s, _)) => held.push(s),
                    Err(_) => break,
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        assert_eq!(attempt(target, Network::Devnet, T).await, AttemptOutcome::Timeout);
        hold.abort();
    }

    #[tokio::test]
    async fn garbage_answer_is_a_failure_not_a_panic() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut s, _)) = listener.accept().await else { break };
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nnot a kaspa node").await;
            }
        });
        let outcome = attempt(target, Network::Devnet, T).await;
        assert!(matches!(outcome, AttemptOutcome::Failed(_)), "{outcome:?}");
        serve.abort();
    }
}
