//! The P2P listener's TCP side: we accept connections ourselves so that admission and the
//! handshake deadline cover the whole connection, not only the gRPC stream on it.
//!
//! Why: hyper/tonic has no read deadline before an HTTP/2 connection is established (its HTTP/1
//! header-read timeout does not apply to h2, and HTTP/2 keep-alive pings start only after the
//! preface), and a gRPC stream that ends leaves its HTTP/2 connection open. Without this layer a
//! peer could hold sockets forever by connecting and sending nothing, half a preface, or nothing
//! after its stream was refused — none of which reached the admission limits.
//!
//! Per accepted TCP connection, from `source`:
//! 1. [`Admission::try_admit`](super::admission::Admission::try_admit) at accept: a refused
//!    connection is recorded (a `rejected` event with its [`RejectReason`]) and closed at once,
//!    before any byte is read. An admitted one counts as a pending handshake from here.
//! 2. Until a `MessageStream` call opens on it, the connection has a deadline: accept time +
//!    `listen.handshake_timeout_ms`. When it passes, every read and write fails with
//!    `TimedOut`, hyper drops the connection, and it is recorded as `handshake_timeout`; a
//!    connection that closes earlier without opening a stream is recorded as `handshake_failed`
//!    (`shutting_down` during shutdown).
//! 3. The first `MessageStream` call takes the admission slot and the same deadline
//!    ([`Slot::open_stream`]); from then on the Kaspa handshake in [`super::connection`] owns the
//!    deadline, and an accepted peer keeps the connection as long as its stream lives (HTTP/2
//!    keep-alive bounds a vanished peer, see [`super::server`]).
//! 4. When that stream ends the connection gets [`CLOSE_GRACE`] to deliver the last frames
//!    (`Reject`, trailers), then it is cut the same way.
//!
//! So every TCP connection is accounted for exactly once (accepted, or rejected with a reason),
//! and a connection without a live Kaspa peer holds its socket at most `handshake_timeout`
//! (+ [`CLOSE_GRACE`] after a refused stream).

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, task::AtomicWaker};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

use super::{admission::AdmissionGuard, inbound::Inbound};
use sensor_core::connection::RejectReason;

/// Time a connection keeps after its Kaspa stream ended, to flush the last frames, before it is
/// closed.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Pause after an `accept` error (e.g. `EMFILE`) before accepting again, so a full descriptor
/// table does not spin the accept loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// State of one admitted TCP connection, shared by its IO ([`Guarded`]) and its gRPC requests
/// ([`PeerTransport`], a request extension).
pub struct Slot {
    inbound: Arc<Inbound>,
    source: SocketAddr,
    state: Mutex<SlotState>,
    /// The connection task, woken when the deadline moves earlier.
    waker: AtomicWaker,
}

struct SlotState {
    /// The admission slot until a stream takes it.
    guard: Option<AdmissionGuard>,
    /// When the connection is cut; `None` while a stream owns it.
    deadline: Option<Instant>,
    /// The deadline passed and the connection was cut.
    expired: bool,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the admission slot and the handshake deadline to the first `MessageStream` on this
    /// connection and lifts the connection deadline while the stream lives (see
    /// [`StreamLease`]). `None` for a second stream, or after the deadline passed.
    pub fn open_stream(self: &Arc<Self>) -> Option<(AdmissionGuard, Instant, StreamLease)> {
        let mut state = self.lock();
        if state.expired {
            return None;
        }
        let guard = state.guard.take()?;
        let deadline = state.deadline.take().unwrap_or_else(Instant::now);
        Some((guard, deadline, StreamLease(self.clone())))
    }

    fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }
}

impl Drop for Slot {
    /// The connection is gone. If no stream ever took the slot, this is where it is recorded.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(guard) = state.guard.take() {
            let reason = if state.expired {
                RejectReason::HandshakeTimeout
            } else if *self.inbound.shutdown.borrow() {
                RejectReason::ShuttingDown
            } else {
                RejectReason::HandshakeFailed
            };
            self.inbound.ctx.metrics.handshakes_pending.dec();
            self.inbound.reject_event(self.source, reason, None);
            drop(guard);
        }
    }
}

/// Held by the stream that took the slot; dropping it (the stream ended) gives the connection
/// [`CLOSE_GRACE`] before it is cut.
pub struct StreamLease(Arc<Slot>);

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.0.lock().deadline = Some(Instant::now() + CLOSE_GRACE);
        self.0.waker.wake();
    }
}

/// The request extension of every gRPC request on a connection: its source and its [`Slot`].
#[derive(Clone)]
pub struct PeerTransport {
    pub source: SocketAddr,
    pub slot: Arc<Slot>,
}

/// An admitted TCP connection whose reads and writes fail with `TimedOut` once its [`Slot`]'s
/// deadline has passed.
pub struct Guarded {
    io: TcpStream,
    slot: Arc<Slot>,
    sleep: Pin<Box<Sleep>>,
}

impl Guarded {
    /// `Err(TimedOut)` once the deadline has passed; registers the task for the deadline and for
    /// deadline changes.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.slot.waker.register(cx.waker());
        let Some(deadline) = self.slot.deadline() else {
            return Ok(());
        };
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        // Decided under the lock: a stream may have taken the connection (deadline `None`) or
        // ended (a later deadline) since the read above.
        let mut state = self.slot.lock();
        if state.deadline.is_none_or(|d| d > Instant::now()) {
            return Ok(());
        }
        state.expired = true;
        Err(io::Error::new(io::ErrorKind::TimedOut, "no Kaspa peer on the connection within the deadline"))
    }
}

impl Connected for Guarded {
    type ConnectInfo = PeerTransport;

    fn connect_info(&self) -> PeerTransport {
        PeerTransport { source: self.slot.source, slot: self.slot.clone() }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Admits `tcp` from `source` (step 1 of the module docs) or records and closes it.
fn admit(inbound: &Arc<Inbound>, tcp: TcpStream, source: SocketAddr) -> Option<Guarded> {
    if *inbound.shutdown.borrow() {
        inbound.reject_event(source, RejectReason::ShuttingDown, None);
        return None;
    }
    let guard = match inbound.admission.try_admit(source.ip()) {
        Ok(guard) => guard,
        Err(reason) => {
            inbound.reject_event(source, reason, None);
            return None;
        }
    };
    inbound.ctx.metrics.handshakes_pending.inc();
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + inbound.settings.handshake_timeout;
    let slot = Arc::new(Slot {
        inbound: inbound.clone(),
        source,
        state: Mutex::new(SlotState { guard: Some(guard), deadline: Some(deadline), expired: false }),
        waker: AtomicWaker::new(),
    });
    Some(Guarded { io: tcp, slot, sleep: Box::pin(tokio::time::sleep_until(deadline)) })
}

/// The admitted connections of `listener`, for tonic's `serve_with_incoming_shutdown`. Refused
/// connections are recorded and closed here and never reach tonic; `accept` errors are logged
/// and retried after [`ACCEPT_ERROR_PAUSE`]. The stream never ends by itself.
pub fn incoming(listener: TcpListener, inbound: Arc<Inbound>) -> impl Stream<Item = io::Result<Guarded>> + Send {
    futures::stream::unfold((listener, inbound), |(listener, inbound)| async move {
        loop {
            match listener.accept().await {
                Ok((tcp, source)) => {
                    if let Some(io) = admit(&inbound, tcp, source) {
                        return Some((Ok(io), (listener, inbound)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a P2P connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    })
}
