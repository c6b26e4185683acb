//! Kaspa P2P over a libp2p stream: one side of a (hole-punched) libp2p connection completes a
//! real Kaspa handshake with a Kaspa node that only the other side can reach, no patched kaspad.
//!
//! Shape: a stream of protocol [`PROTOCOL`] (`/p2psensor/kaspa/1`, opened with
//! `libp2p-stream`) carries kaspad's own wire protocol unchanged — gRPC over h2c, method
//! `/protowire.P2P/MessageStream`, a bidirectional stream of `KaspadMessage`, handshake
//! Version/Verack/Ready (docs/kaspa-protocol.md). So:
//!
//! - the responder is a byte pipe, [`run_bridge`]: every incoming stream is copied
//!   byte-for-byte to a new TCP connection to one configured Kaspa P2P address ([`BridgeConfig`]);
//!   it never parses what it carries. Bounded: at most `max_streams` bridged at once (more are
//!   closed at once), a connect timeout, an idle bound and a total bound per stream. Outcomes are
//!   counted in [`BridgeStats`]; nothing from the network can make it panic.
//! - the initiator, [`handshake`], opens the stream and speaks gRPC on it with
//!   [`WireConnection::connect_over`], then Version/Verack/Ready, then closes politely.
//!
//! Units: durations are [`Duration`]s; [`KaspaOverLibp2p::elapsed_ms`] is milliseconds.
//! Errors: [`SensorError::KaspaStream`] for everything (open, connect, handshake, timeouts), its text
//! naming the libp2p peer and the step that failed. A bridge that cannot reach its Kaspa node
//! closes the stream: the initiator sees the stream closed before the Kaspa handshake.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::StreamExt;
use kaspa_p2p_lib::pb;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams, OpenStreamError};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    task::JoinSet,
    time::Instant,
};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use uuid::Uuid;

use crate::{
    error::{Result, SensorError},
    kaspa::{
        version::read_peer_version,
        wire::{WireConnection, WireError},
    },
};

/// The libp2p protocol of a stream that carries Kaspa P2P (gRPC over h2c) unchanged.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);
/// [`PROTOCOL`]'s name, for error messages.
const PROTOCOL_NAME: &str = "/p2psensor/kaspa/1";

/// How long [`handshake`] waits, after the handshake, for the peer to end its side.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how much the bridge pipes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The Kaspa P2P address (`IP:PORT`) every stream is piped to.
    pub target: SocketAddr,
    /// Streams bridged at once (connecting included); more are closed at once.
    pub max_streams: usize,
    /// Bound of the TCP connect to `target`.
    pub connect_timeout: Duration,
    /// A bridged stream with no byte in either direction for this long is closed. kaspad pings
    /// every 120 s, so a held Kaspa connection needs more than that.
    pub idle_timeout: Duration,
    /// A bridged stream is closed after this long whatever it carries.
    pub max_duration: Duration,
}

impl BridgeConfig {
    /// Defaults: 16 streams, 5 s connect, 300 s idle, 1 h in total.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            max_streams: 16,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_duration: Duration::from_secs(3600),
        }
    }
}

/// The bridge's counters, shared with whoever exports them. Every incoming stream is counted in
/// `accepted` and then in exactly one of `refused_busy`, `connect_failed`, `bridged`.
#[derive(Debug, Default)]
pub struct BridgeStats {
    accepted: AtomicU64,
    bridged: AtomicU64,
    refused_busy: AtomicU64,
    connect_failed: AtomicU64,
    timed_out: AtomicU64,
    active: AtomicU64,
}

/// A copy of [`BridgeStats`] at one moment. All counts are cumulative except `active`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeCounts {
    /// Incoming streams received.
    pub accepted: u64,
    /// Streams piped to the Kaspa node (its TCP connect succeeded).
    pub bridged: u64,
    /// Streams closed at once because `max_streams` were in use.
    pub refused_busy: u64,
    /// Streams closed because the Kaspa node refused or did not answer the connect in time.
    pub connect_failed: u64,
    /// Bridged streams ended by the idle or the total bound (also counted in `bridged`).
    pub timed_out: u64,
    /// Streams connecting or bridged now (a gauge).
    pub active: u64,
}

impl BridgeStats {
    /// The counters now (each read on its own; they may be a few events apart).
    pub fn snapshot(&self) -> BridgeCounts {
        BridgeCounts {
            accepted: self.accepted.load(Relaxed),
            bridged: self.bridged.load(Relaxed),
            refused_busy: self.refused_busy.load(Relaxed),
            connect_failed: self.connect_failed.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            active: self.active.load(Relaxed),
        }
    }
}

/// Registers [`PROTOCOL`] for incoming streams on `control` (the swarm then offers it to peers).
///
/// Errors: [`SensorError::KaspaStream`] when it is already registered on this behaviour.
pub fn accept(control: &mut Control) -> Result<IncomingStreams> {
    control.accept(PROTOCOL).map_err(|e| SensorError::KaspaStream {
        protocol: PROTOCOL_NAME,
        peer: "any peer".into(),
        step: "accepting inbound streams".into(),
        detail: e.to_string(),
    })
}

/// Pipes every stream of `incoming` to `config.target` until `incoming` ends (its behaviour is
/// dropped). Dropping this future closes every bridged stream with it.
pub async fn run_bridge(mut incoming: IncomingStreams, config: BridgeConfig, stats: Arc<BridgeStats>) {
    let mut bridges = JoinSet::new();
    loop {
        tokio::select! {
            next = incoming.next() => {
                let Some((peer, stream)) = next else { break };
                stats.accepted.fetch_add(1, Relaxed);
                if bridges.len() >= config.max_streams {
                    stats.refused_busy.fetch_add(1, Relaxed);
                    tracing::debug!(%peer, limit = config.max_streams, "kaspa stream refused: bridge busy");
                    drop(stream);
                    continue;
                }
                stats.active.fetch_add(1, Relaxed);
                bridges.spawn(bridge_one(peer, stream, config.clone(), stats.clone()));
            }
            Some(_) = bridges.join_next(), if !bridges.is_empty() => {}
        }
    }
    bridges.shutdown().await;
}

/// Keeps `active` right however a bridge task ends (finished or aborted).
struct ActiveGuard(Arc<BridgeStats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

async fn bridge_one(peer: PeerId, stream: Stream, config: BridgeConfig, stats: Arc<BridgeStats>) {
    let _active = ActiveGuard(stats.clone());
    let connect = tokio::time::timeout(config.connect_timeout, TcpStream::connect(config.target)).await;
    let tcp = match connect.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
        Ok(tcp) => tcp,
        Err(e) => {
            stats.connect_failed.fetch_add(1, Relaxed);
            tracing::debug!(%peer, target = %config.target, error = %e, "kaspa stream: cannot connect to the node");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    stats.bridged.fetch_add(1, Relaxed);
    let target = config.target;
    match pipe(stream.compat(), tcp, config.idle_timeout, config.max_duration).await {
        PipeEnd::Closed(to_node, from_node) => {
            tracing::debug!(%peer, %target, to_node, from_node, "kaspa stream bridge closed (bytes each way)");
        }
        PipeEnd::Failed(e) => tracing::debug!(%peer, %target, error = %e, "kaspa stream bridge failed"),
        end @ (PipeEnd::Idle | PipeEnd::MaxDuration) => {
            stats.timed_out.fetch_add(1, Relaxed);
            tracing::debug!(%peer, %target, ?end, "kaspa stream bridge timed out");
        }
    }
}

/// Why [`pipe`] returned.
#[derive(Debug)]
enum PipeEnd {
    /// Both sides ended (bytes each way).
    Closed(u64, u64),
    Failed(std::io::Error),
    Idle,
    MaxDuration,
}

/// Copies `a` ⇄ `b` until both end, an error, `idle` without a byte, or `total`.
async fn pipe<A, B>(a: A, b: B, idle: Duration, total: Duration) -> PipeEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Activity { io: a, start, last: last.clone() };
    let mut b = Activity { io: b, start, last: last.clone() };
    let idle_watch = async {
        loop {
            let deadline = start + Duration::from_millis(last.load(Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut a, &mut b) => match copied {
            Ok((ab, ba)) => PipeEnd::Closed(ab, ba),
            Err(e) => PipeEnd::Failed(e),
        },
        () = idle_watch => PipeEnd::Idle,
        () = tokio::time::sleep(total) => PipeEnd::MaxDuration,
    }
}

/// An I/O object that records, in `last` (ms since `start`), when a byte last went through.
struct Activity<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Activity<T> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What a Kaspa handshake over a libp2p stream learned about the Kaspa node behind the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KaspaOverLibp2p {
    /// The libp2p peer whose bridge carried the stream.
    pub libp2p_peer: PeerId,
    /// The Kaspa node's `Version.id` (16 bytes).
    pub kaspa_id: Uuid,
    /// The node's `Version.userAgent` (at most 256 bytes).
    pub user_agent: String,
    /// The node's `Version.protocolVersion` (kaspad 2.1.0: 11).
    pub protocol_version: u32,
    /// The node's `Version.network`, e.g. `kaspa-devnet`.
    pub network: String,
    /// Milliseconds from the stream request to the node's `Ready` (polite close not included).
    pub elapsed_ms: u64,
}

/// Opens a [`PROTOCOL`] stream to `peer` (over an existing connection when there is one, else
/// libp2p dials it), completes Version/Verack/Ready with `ours` with the Kaspa node behind it,
/// closes politely and returns what was learned.
///
/// `timeout` bounds everything up to the node's `Ready`; the polite close adds at most
/// [`CLOSE_TIMEOUT`].
///
/// Errors: [`SensorError::KaspaStream`]: the peer does not support [`PROTOCOL`] or cannot be reached;
/// the stream closed before or during the handshake (e.g. its bridge is busy or cannot reach
/// its Kaspa node); the node rejected us or sent a malformed `Version`; `timeout` elapsed.
pub async fn handshake(
    control: &mut Control,
    peer: PeerId,
    ours: pb::VersionMessage,
    timeout: Duration,
) -> Result<KaspaOverLibp2p> {
    let start = Instant::now();
    let fail = |step: &str, e: &dyn std::fmt::Display| SensorError::KaspaStream {
        protocol: PROTOCOL_NAME,
        peer: peer.to_string(),
        step: step.to_owned(),
        detail: e.to_string(),
    };
    let stream = match tokio::time::timeout(timeout, control.open_stream(peer, PROTOCOL)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => {
            return Err(fail("open stream", &"the peer does not support this protocol"));
        }
        Ok(Err(e)) => return Err(fail("open stream", &e)),
        Err(_) => return Err(fail("open stream", &"timed out")),
    };
    let remaining = |step: &str| {
        timeout.checked_sub(start.elapsed()).filter(|d| !d.is_zero()).ok_or_else(|| fail(step, &"timed out"))
    };
    let mut conn = WireConnection::connect_over(stream.compat(), remaining("connect")?).await.map_err(|e| {
        fail("opening the Kaspa stream (the bridge may be busy or unable to reach its Kaspa node)", &inner(e))
    })?;
    let theirs = conn.handshake(ours, remaining("handshake")?).await.map_err(|e| fail("kaspa handshake", &inner(e)))?;
    let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    conn.close(CLOSE_TIMEOUT).await;
    let version = read_peer_version(theirs).map_err(|e| fail("the node's Version", &e))?;
    Ok(KaspaOverLibp2p {
        libp2p_peer: peer,
        kaspa_id: version.id,
        user_agent: version.info.user_agent.unwrap_or_default(),
        protocol_version: version.info.protocol_version.unwrap_or_default(),
        network: version.info.network.unwrap_or_default(),
        elapsed_ms,
    })
}

/// A wire error's text, without the `kaspa p2p: ` prefix of [`SensorError::Wire`] (the stream
/// error gets its own).
fn inner(e: WireError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn pipe_copies_both_ways_until_both_sides_end() {
        let (mut left, a) = duplex(64);
        let (b, mut right) = duplex(64);
        let run = tokio::spawn(pipe(a, b, Duration::from_secs(5), Duration::from_secs(10)));
        left.write_all(b"version").await.unwrap();
        let mut buf = [0u8; 7];
        right.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"version");
        right.write_all(b"verack!").await.unwrap();
        left.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"verack!");
        drop((left, right));
        let end = tokio::time::timeout(Duration::from_secs(5), run).await.unwrap().unwrap();
        assert!(matches!(end, PipeEnd::Closed(7, 7)), "{end:?}");
    }

    #[tokio::test]
    async fn pipe_ends_when_idle_and_after_the_total_bound() {
        let (_left, a) = duplex(64);
        let (b, _right) = duplex(64);
        let started = Instant::now();
        let end = pipe(a, b, Duration::from_millis(200), Duration::from_secs(10)).await;
        assert!(matches!(end, PipeEnd::Idle), "{end:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        // Traffic every 50 ms keeps an idle bound of 300 ms away; the total bound of 600 ms ends it.
        let (mut left, a) = duplex(64);
        let (b, mut right) = duplex(64);
        let talk = tokio::spawn(async move {
            for _ in 0..200 {
                if left.write_all(b"ping").await.is_err() {
                    break;
                }
                let mut buf = [0u8; 4];
                let _ = right.read_exact(&mut buf).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let end = pipe(a, b, Duration::from_millis(300), Duration::from_millis(600)).await;
        assert!(matches!(end, PipeEnd::MaxDuration), "{end:?}");
        assert!(started.elapsed() >= Duration::from_millis(600) && started.elapsed() < Duration::from_secs(5));
        talk.abort();
    }

    #[test]
    fn counts_start_at_zero_and_config_defaults_are_bounded() {
        assert_eq!(BridgeStats::default().snapshot(), BridgeCounts::default());
        let c = BridgeConfig::new("127.0.0.1:16611".parse().unwrap());
        assert!(c.max_streams > 0 && c.idle_timeout > Duration::from_secs(120) && c.max_duration >= c.idle_timeout);
        assert_eq!(PROTOCOL.as_ref(), "/p2psensor/kaspa/1");
    }
}
