//! The Kaspa handshake (Version → Verack, then Ready both ways) read from the connection's one
//! route ([`PeerFlows`]), in two steps so the caller can check the peer's `Version` — network,
//! identity — between them, and register nothing new before `Ready`.
//!
//! The same exchange as kaspa-p2p-lib's `KaspadHandshake` (`src/handshake.rs`): each side sends
//! `Version`, answers the other's `Version` with `Verack`, then both send `Ready`. We do not use
//! `KaspadHandshake` itself because it subscribes three extra routes per connection (see
//! [`PeerFlows`] for why that matters at thousands of peers). Reject messages never reach the
//! route: the router closes the connection on them, which surfaces here as `ConnectionClosed`.

use kaspa_p2p_lib::{
    KaspadMessagePayloadType as T, Router,
    common::ProtocolError,
    make_message,
    pb::{self, ReadyMessage, VerackMessage, kaspad_message::Payload},
};

use super::flows::PeerFlows;

/// Sends our `Version`, answers theirs with `Verack`, and waits for their `Verack`.
/// Returns the peer's `Version` as soon as both have arrived, in whatever order.
///
/// `on_version` is called the moment the peer's `Version` arrives, before the `Verack`
/// exchange completes (the dial-back uses it: a `Version` alone identifies the node).
///
/// Errors: `ConnectionClosed` when the peer goes away (or was rejected), `UnexpectedMessage`
/// for any other message type before the exchange completes, or a send error. No timeout here:
/// callers bound the whole handshake.
pub async fn exchange_versions(
    router: &Router,
    flows: &mut PeerFlows,
    ours: pb::VersionMessage,
    mut on_version: impl FnMut(&pb::VersionMessage),
) -> Result<pb::VersionMessage, ProtocolError> {
    router.enqueue(make_message!(Payload::Version, ours)).await?;
    let (mut theirs, mut verack) = (None, false);
    while theirs.is_none() || !verack {
        let msg = flows.route.recv().await.ok_or(ProtocolError::ConnectionClosed)?;
        match msg.payload {
            Some(Payload::Version(v)) if theirs.is_none() => {
                on_version(&v);
                router.enqueue(make_message!(Payload::Verack, VerackMessage {})).await?;
                theirs = Some(v);
            }
            Some(Payload::Verack(_)) if !verack => verack = true,
            other => {
                return Err(ProtocolError::UnexpectedMessage("Version or Verack", other.as_ref().map(T::from)));
            }
        }
    }
    theirs.ok_or(ProtocolError::ConnectionClosed)
}

/// Sends `Ready` and waits for the peer's. The final handshake step; call it only when the
/// connection is ready to be served, because a kaspad peer sends `RequestAddresses` right after.
///
/// Errors: as [`exchange_versions`].
pub async fn exchange_ready(router: &Router, flows: &mut PeerFlows) -> Result<(), ProtocolError> {
    router.enqueue(make_message!(Payload::Ready, ReadyMessage {})).await?;
    let msg = flows.route.recv().await.ok_or(ProtocolError::ConnectionClosed)?;
    match msg.payload {
        Some(Payload::Ready(_)) => Ok(()),
        other => Err(ProtocolError::UnexpectedMessage("Ready", other.as_ref().map(T::from))),
    }
}
