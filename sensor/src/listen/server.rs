//! The sensor's own gRPC server for `/protowire.P2P/MessageStream` (kaspa-p2p-lib's generated
//! `KaspadMessage` types, tonic's server), instead of kaspa-p2p-lib's `Adaptor::bidirectional`.
//!
//! Why our own (docs/kaspa-protocol.md allows it for other transports; measured for this one):
//! * **Memory per held peer.** The library server gives every connection a `Router` with an
//!   outgoing mpsc channel plus one channel per subscription (each allocates 32 × 272 bytes up
//!   front), and tonic's default 8 KiB codec buffers. Here a connection is one state machine
//!   ([`super::connection`]) with no channels, and the codec buffers start at 1 KiB and grow
//!   only for large messages. (massif figures in the README.)
//! * **Binding.** We bind the listener ourselves: a bind failure is an error returned at
//!   start-up, not a panic in a spawned task, and readiness means the port is held.
//! * **Limits we own.** Every connection reaches our admission limits and is recorded; the
//!   library refused connections over its fixed pending-handshake caps before they reached us.
//!   Messages over [`MAX_MESSAGE_BYTES`] are refused by the transport (the library allows 256 MB).
//! * **Edges we own.** TCP connections are accepted by [`super::transport`]: admission at accept,
//!   and a deadline on every connection without a live Kaspa peer (hyper has none before the
//!   HTTP/2 preface). HTTP/2 keep-alive (`listen.keepalive_interval_ms`,
//!   `listen.keepalive_timeout_ms`) drops a peer that vanished without a FIN within interval +
//!   timeout of its last frame; without it such a peer would be held until `hold_time_secs`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use futures::future::BoxFuture;
use kaspa_p2p_lib::pb::KaspadMessage;
use tonic::{
    codec::{BufferSettings, Codec, CompressionEncoding},
    server::{NamedService, StreamingService},
};
use tonic_prost::ProstCodec;

use super::{
    connection::Connection,
    inbound::Inbound,
    transport::{self, PeerTransport},
};
use crate::error::{Result, SensorError};

/// Largest message accepted or sent, in bytes. A Kaspa `Addresses` reply is at most ~50 KB
/// (1000 entries); the sensor requests nothing larger, so 4 MiB leaves room for unsolicited
/// block announcements without letting a peer make us buffer hundreds of megabytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Initial size of tonic's per-stream encode and decode buffers, in bytes (tonic's default is
/// 8 KiB each); they grow on demand for larger messages.
const CODEC_BUFFER_BYTES: usize = 1024;

/// HTTP/2 streams one TCP connection may open at once (kaspad opens one).
const MAX_STREAMS_PER_CONNECTION: u32 = 2;

/// Binds the P2P listener.
///
/// Errors: [`SensorError::Bind`] (port in use, no permission, address not on this host).
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|source| SensorError::Bind {
        what: "Kaspa P2P listener",
        address,
        source,
    })
}

/// Serves `MessageStream` on `listener` until `shutdown` completes, then waits for open
/// connections to finish (they end themselves on shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    inbound: Arc<Inbound>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let settings = &inbound.settings;
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout));
    let incoming = transport::incoming(listener, inbound.clone());
    let result = builder.add_service(P2pService { inbound }).serve_with_incoming_shutdown(incoming, shutdown).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "Kaspa P2P server stopped");
    }
}

/// kaspa-p2p-lib's prost codec for `KaspadMessage`, with small initial buffers.
#[derive(Debug, Clone, Copy, Default)]
struct KaspaCodec;

impl Codec for KaspaCodec {
    type Encode = KaspadMessage;
    type Decode = KaspadMessage;
    type Encoder = <ProstCodec<KaspadMessage, KaspadMessage> as Codec>::Encoder;
    type Decoder = <ProstCodec<KaspadMessage, KaspadMessage> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<KaspadMessage, KaspadMessage>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<KaspadMessage, KaspadMessage>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(CODEC_BUFFER_BYTES, 32 * 1024)
}

/// The `protowire.P2P` service with its one method.
#[derive(Clone)]
struct P2pService {
    inbound: Arc<Inbound>,
}

impl NamedService for P2pService {
    const NAME: &'static str = "protowire.P2P";
}

impl<B> tower_service::Service<http::Request<B>> for P2pService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/protowire.P2P/MessageStream" {
            return Box::pin(async { Ok(tonic::Status::unimplemented("unknown method").into_http()) });
        }
        let method = MessageStream(self.inbound.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(KaspaCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct MessageStream(Arc<Inbound>);

impl StreamingService<KaspadMessage> for MessageStream {
    type Response = KaspadMessage;
    type ResponseStream = futures::stream::BoxStream<'static, Result<KaspadMessage, tonic::Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<KaspadMessage>>) -> Self::Future {
        let inbound = self.0.clone();
        Box::pin(async move {
            let Some(transport) = request.extensions().get::<PeerTransport>().cloned() else {
                return Err(tonic::Status::internal("connection without transport state"));
            };
            let connection = Connection::admit(inbound, &transport, request.into_inner())?;
            Ok(tonic::Response::new(connection.into_stream()))
        })
    }
}
