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

use crate::error::{Result, SensorError};

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

fn p2p_err(what: &str, e: impl std::fmt::Display) -> SensorError {
    SensorError::P2p(format!("{what}: {e}"))
}

impl WireConnection {
    /// Opens `/protowire.P2P/MessageStream` to `target`, from `local_ip` when given.
    ///
    /// Errors: [`SensorError::P2p`] on connect failure or when the stream cannot be opened
    /// within `timeout`.
    pub async fn connect(target: SocketAddr, local_ip: Option<IpAddr>, timeout: Duration) -> Result<Self> {
        let endpoint = endpoint(format!("http://{target}"), timeout)?.local_address(local_ip);
        Self::open(endpoint.connect(), timeout).await
    }

    /// Opens `/protowire.P2P/MessageStream` over `io`, a byte stream that is already connected
    /// to a Kaspa node's P2P port (directly or through a bridge that pipes bytes to one). The
    /// HTTP/2 connection lives on `io` only: when it fails it is not re-dialled.
    ///
    /// Errors: [`SensorError::P2p`] when the HTTP/2 connection or the stream cannot be opened on
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
            let channel = channel.await.map_err(|e| p2p_err("connect", error_chain(&e)))?;
            let mut client = P2pClient::new(channel).max_decoding_message_size(1 << 20);
            let (outgoing, rx) = mpsc::channel(64);
            let incoming = client
                .message_stream(ReceiverStream(rx))
                .await
                .map_err(|e| p2p_err("message stream", status_text(&e)))?
                .into_inner();
            Ok(Self { outgoing, incoming })
        };
        tokio::time::timeout(timeout, open).await.map_err(|_| p2p_err("connect", "timed out"))?
    }

    /// Sends one message. Errors when the stream is closed.
    pub async fn send(&self, payload: Payload) -> Result<()> {
        let msg = KaspadMessage { payload: Some(payload), request_id: 0, response_id: 0 };
        self.outgoing.send(msg).await.map_err(|_| p2p_err("send", "stream closed"))
    }

    /// The next message's payload; `None` when the peer closed the stream.
    pub async fn recv(&mut self) -> Result<Option<Payload>> {
        match self.incoming.message().await {
            Ok(Some(m)) => Ok(m.payload),
            Ok(None) => Ok(None),
            Err(status) => Err(p2p_err("receive", status_text(&status))),
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
                    Some(Payload::Reject(r)) => return Err(p2p_err("rejected", r.reason)),
                    Some(other) => return Err(p2p_err("handshake", format!("unexpected {:?}", message_name(&other)))),
                    None => return Err(p2p_err("handshake", "stream closed")),
                }
            }
            self.send(Payload::Ready(ReadyMessage {})).await?;
            match self.recv().await? {
                Some(Payload::Ready(_)) => {}
                Some(Payload::Reject(r)) => return Err(p2p_err("rejected", r.reason)),
                Some(other) => return Err(p2p_err("handshake", format!("unexpected {:?}", message_name(&other)))),
                None => return Err(p2p_err("handshake", "stream closed")),
            }
            Ok(theirs.expect("loop exits only with a Version"))
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| p2p_err("handshake", "timed out"))?
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
    Ok(Endpoint::from_shared(uri).map_err(|e| p2p_err("endpoint", e))?.connect_timeout(timeout))
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
