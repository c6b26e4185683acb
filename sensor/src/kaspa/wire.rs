//! Kaspa P2P on a raw `KaspadMessage` stream, over kaspa-p2p-lib's generated tonic client
//! (`pb::p2p_client::P2pClient`), for what the library's `Router` cannot do: choosing the
//! source address of a connection (load from many 127.x.y.z addresses), and — later — carrying
//! Kaspa over other transports (docs/kaspa-protocol.md). The handshake is the same Version/Verack/Ready
//! exchange as kaspa-p2p-lib's `KaspadHandshake`.
//!
//! [`WireConnection::connect`] opens the stream over TCP; [`WireConnection::connect_over`] over
//! any byte stream that is already open (e.g. a libp2p stream, [`crate::p2p::kaspa_stream`]):
//! the same gRPC over h2c, the connection never re-dialled.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    task::{Context, Poll},
    time::Duration,
};

use kaspa_p2p_lib::pb::{
    self, KaspadMessage, ReadyMessage, VerackMessage, kaspad_message::Payload, p2p_client::P2pClient,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tokio_stream_shim::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// What failed on a [`WireConnection`], by step. The texts (`connect: …`, `rejected: REASON`,
/// `handshake: timed out`, …) are what the crawler classifies (`sensor_core::crawl::classify`)
/// and stores as a visit's error; a caller that needs to act matches the variant instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The endpoint URI is unusable.
    #[error("endpoint: {0}")]
    Endpoint(String),
    /// The TCP or HTTP/2 connection failed: the error and its sources.
    #[error("connect: {0}")]
    Connect(String),
    /// Connecting and opening the stream did not finish within the timeout.
    #[error("connect: timed out")]
    ConnectTimeout,
    /// The `MessageStream` call failed (a gRPC status).
    #[error("message stream: {0}")]
    MessageStream(String),
    /// A message was sent after the stream had closed.
    #[error("send: stream closed")]
    SendClosed,
    /// Receiving failed (a gRPC status: reset, undecodable or oversized message).
    #[error("receive: {0}")]
    Receive(String),
    /// The peer sent `Reject` with this reason (kaspa-p2p-lib's `ProtocolError` text).
    #[error("rejected: {0}")]
    Rejected(String),
    /// Version/Verack/Ready went wrong otherwise: an unexpected message, the stream closed.
    #[error("handshake: {0}")]
    Handshake(String),
    /// Version/Verack/Ready did not finish within the timeout.
    #[error("handshake: timed out")]
    HandshakeTimeout,
}

type Result<T, E = WireError> = std::result::Result<T, E>;

/// Small local adapter so we do not need tokio-stream: an mpsc receiver as a `Stream`.
mod tokio_stream_shim {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

    impl<T> futures::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

/// An open bidirectional `MessageStream` to a Kaspa node.
pub struct WireConnection {
    outgoing: mpsc::Sender<KaspadMessage>,
    incoming: tonic::Streaming<KaspadMessage>,
}

impl WireConnection {
    /// Opens `/protowire.P2P/MessageStream` to `target`, from `local_ip` when given.
    ///
    /// Errors: [`WireError`] on connect failure or when the stream cannot be opened
    /// within `timeout`.
    pub async fn connect(target: SocketAddr, local_ip: Option<IpAddr>, timeout: Duration) -> Result<Self> {
        let endpoint = endpoint(format!("http://{target}"), timeout)?.local_address(local_ip);
        Self::open(endpoint.connect(), timeout).await
    }

    /// Opens `/protowire.P2P/MessageStream` over `io`, a byte stream that is already connected
    /// to a Kaspa node's P2P port (directly or through a bridge that pipes bytes to one). The
    /// HTTP/2 connection lives on `io` only: when it fails it is not re-dialled.
    ///
    /// Errors: [`WireError`] when the HTTP/2 connection or the stream cannot be opened on
    /// `io` within `timeout` (e.g. the other end closed `io`).
    pub async fn connect_over<IO>(io: IO, timeout: Duration) -> Result<Self>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // The authority is only the HTTP/2 `:authority` header; kaspad does not read it.
        let endpoint = endpoint("http://kaspa-over-stream.invalid".to_owned(), timeout)?;
        Self::open(endpoint.connect_with_connector(OneShot(Some(io))), timeout).await
    }

    /// The part of both constructors after the transport: `channel` (an HTTP/2 connection being
    /// made), then the `MessageStream` call, all within `timeout`.
    async fn open(
        channel: impl Future<Output = std::result::Result<Channel, tonic::transport::Error>>,
        timeout: Duration,
    ) -> Result<Self> {
        let open = async {
            let channel = channel.await.map_err(|e| WireError::Connect(error_chain(&e)))?;
            let mut client = P2pClient::new(channel).max_decoding_message_size(1 << 20);
            let (outgoing, rx) = mpsc::channel(64);
            let incoming = client
                .message_stream(ReceiverStream(rx))
                .await
                .map_err(|e| WireError::MessageStream(status_text(&e)))?
                .into_inner();
            Ok(Self { outgoing, incoming })
        };
        tokio::time::timeout(timeout, open).await.map_err(|_| WireError::ConnectTimeout)?
    }

    /// Sends one message. Errors when the stream is closed.
    pub async fn send(&self, payload: Payload) -> Result<()> {
        let msg = KaspadMessage { payload: Some(payload), request_id: 0, response_id: 0 };
        self.outgoing.send(msg).await.map_err(|_| WireError::SendClosed)
    }

    /// The next message's payload; `None` when the peer closed the stream.
    pub async fn recv(&mut self) -> Result<Option<Payload>> {
        match self.incoming.message().await {
            Ok(Some(m)) => Ok(m.payload),
            Ok(None) => Ok(None),
            Err(status) => Err(WireError::Receive(status_text(&status))),
        }
    }

    /// Version/Verack/Ready with `ours`, all within `timeout`. Returns the peer's Version.
    /// Messages other than these three before Ready are an error (kaspad sends none).
    pub async fn handshake(&mut self, ours: pb::VersionMessage, timeout: Duration) -> Result<pb::VersionMessage> {
        let run = async {
            self.send(Payload::Version(ours)).await?;
            let (mut theirs, mut verack) = (None, false);
            while theirs.is_none() || !verack {
                match self.recv().await? {
                    Some(Payload::Version(v)) if theirs.is_none() => {
                        theirs = Some(v);
                        self.send(Payload::Verack(VerackMessage {})).await?;
                    }
                    Some(Payload::Verack(_)) => verack = true,
                    Some(Payload::Reject(r)) => return Err(WireError::Rejected(r.reason)),
                    Some(other) => return Err(WireError::Handshake(format!("unexpected {:?}", message_name(&other)))),
                    None => return Err(WireError::Handshake("stream closed".into())),
                }
            }
            self.send(Payload::Ready(ReadyMessage {})).await?;
            match self.recv().await? {
                Some(Payload::Ready(_)) => {}
                Some(Payload::Reject(r)) => return Err(WireError::Rejected(r.reason)),
                Some(other) => return Err(WireError::Handshake(format!("unexpected {:?}", message_name(&other)))),
                None => return Err(WireError::Handshake("stream closed".into())),
            }
            Ok(theirs.expect("loop exits only with a Version"))
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| WireError::HandshakeTimeout)?
    }

    /// Closes politely: ends our request stream — tonic first sends everything still queued,
    /// such as a just-sent `Ready` — then waits (≤ `timeout`) for the peer to end its side.
    /// Dropping a connection instead can lose queued messages.
    pub async fn close(self, timeout: Duration) {
        let Self { outgoing, mut incoming } = self;
        drop(outgoing);
        let drained = async { while let Ok(Some(_)) = incoming.message().await {} };
        let _ = tokio::time::timeout(timeout, drained).await;
    }

    /// Keeps the connection alive like a node: Pong for Ping, empty Addresses for
    /// RequestAddresses, everything else ignored. Returns when the peer closes the stream.
    pub async fn serve(mut self) -> Result<()> {
        while let Some(payload) = self.recv().await? {
            if let Some(reply) = crate::kaspa::flows::keep_alive_reply(payload, &[]) {
                self.send(reply).await?;
            }
        }
        Ok(())
    }
}

fn message_name(p: &Payload) -> kaspa_p2p_lib::KaspadMessagePayloadType {
    p.into()
}

/// A tonic endpoint for `uri` with our connect timeout.
fn endpoint(uri: String, timeout: Duration) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(uri).map_err(|e| WireError::Endpoint(e.to_string()))?.connect_timeout(timeout))
}

/// `e` and its sources, `: `-separated (tonic's own texts, e.g. "transport error", say little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    with_sources(e.to_string(), e.source())
}

/// A gRPC status as its message and the sources of its error.
fn status_text(status: &tonic::Status) -> String {
    with_sources(status.message().to_owned(), std::error::Error::source(status))
}

fn with_sources(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

/// A tonic connector that hands out one already-open byte stream, once; a second connection
/// attempt (tonic reconnecting after the stream failed) is an error.
struct OneShot<IO>(Option<IO>);

impl<IO> tower_service::Service<Uri> for OneShot<IO>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Response = hyper_util::rt::TokioIo<IO>;
    type Error = std::io::Error;
    type Future = std::future::Ready<std::io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(self.0.take().map(hyper_util::rt::TokioIo::new).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "the byte stream was already used and is gone")
        }))
    }
}
