//! What a well-behaved peer does after the handshake (docs/kaspa-protocol.md): answer `Ping` with `Pong`
//! (same nonce; kaspad pings every 120 s and drops a peer whose Pong is late), answer
//! `RequestAddresses` with our advertised address or nothing (kaspad asks once after Ready and
//! waits 120 s), and drain every other message type — kaspa-p2p-lib's router closes the
//! connection on any type nobody subscribed to, and on any subscribed type whose receiver was
//! dropped, so the receivers live in the task that owns the connection for its whole life.

use std::{future::Future, sync::Arc, time::Duration};

use kaspa_p2p_lib::{
    IncomingRoute, KaspadMessagePayloadType as T, Router,
    pb::{self, AddressesMessage, PongMessage, kaspad_message::Payload},
};

use crate::metrics::{MessageLabels, Metrics};

/// Every payload type kaspa-p2p-lib 2.1.0 knows, with its name (the metric label).
/// `payload_type.rs` declares them with implicit, contiguous discriminants; the test below
/// checks the table covers all of them.
pub const ALL_MESSAGE_TYPES: [(T, &str); 53] = [
    (T::Addresses, "Addresses"),
    (T::Block, "Block"),
    (T::Transaction, "Transaction"),
    (T::BlockLocator, "BlockLocator"),
    (T::RequestAddresses, "RequestAddresses"),
    (T::RequestRelayBlocks, "RequestRelayBlocks"),
    (T::RequestTransactions, "RequestTransactions"),
    (T::IbdBlock, "IbdBlock"),
    (T::InvRelayBlock, "InvRelayBlock"),
    (T::InvTransactions, "InvTransactions"),
    (T::Ping, "Ping"),
    (T::Pong, "Pong"),
    (T::Verack, "Verack"),
    (T::Version, "Version"),
    (T::TransactionNotFound, "TransactionNotFound"),
    (T::Reject, "Reject"),
    (T::PruningPointUtxoSetChunk, "PruningPointUtxoSetChunk"),
    (T::RequestIbdBlocks, "RequestIbdBlocks"),
    (T::UnexpectedPruningPoint, "UnexpectedPruningPoint"),
    (T::IbdBlockLocator, "IbdBlockLocator"),
    (T::IbdBlockLocatorHighestHash, "IbdBlockLocatorHighestHash"),
    (T::RequestNextPruningPointUtxoSetChunk, "RequestNextPruningPointUtxoSetChunk"),
    (T::DonePruningPointUtxoSetChunks, "DonePruningPointUtxoSetChunks"),
    (T::IbdBlockLocatorHighestHashNotFound, "IbdBlockLocatorHighestHashNotFound"),
    (T::BlockWithTrustedData, "BlockWithTrustedData"),
    (T::DoneBlocksWithTrustedData, "DoneBlocksWithTrustedData"),
    (T::RequestPruningPointAndItsAnticone, "RequestPruningPointAndItsAnticone"),
    (T::BlockHeaders, "BlockHeaders"),
    (T::RequestNextHeaders, "RequestNextHeaders"),
    (T::DoneHeaders, "DoneHeaders"),
    (T::RequestPruningPointUtxoSet, "RequestPruningPointUtxoSet"),
    (T::RequestHeaders, "RequestHeaders"),
    (T::RequestBlockLocator, "RequestBlockLocator"),
    (T::PruningPoints, "PruningPoints"),
    (T::RequestPruningPointProof, "RequestPruningPointProof"),
    (T::PruningPointProof, "PruningPointProof"),
    (T::Ready, "Ready"),
    (T::BlockWithTrustedDataV4, "BlockWithTrustedDataV4"),
    (T::TrustedData, "TrustedData"),
    (T::RequestIbdChainBlockLocator, "RequestIbdChainBlockLocator"),
    (T::IbdChainBlockLocator, "IbdChainBlockLocator"),
    (T::RequestAntipast, "RequestAntipast"),
    (T::RequestNextPruningPointAndItsAnticoneBlocks, "RequestNextPruningPointAndItsAnticoneBlocks"),
    (T::BlockBody, "BlockBody"),
    (T::RequestBlockBodies, "RequestBlockBodies"),
    (T::RequestPruningPointSmtState, "RequestPruningPointSmtState"),
    (T::SmtMetadata, "SmtMetadata"),
    (T::SmtLaneChunk, "SmtLaneChunk"),
    (T::RequestNextPruningPointSmtChunk, "RequestNextPruningPointSmtChunk"),
    (T::PruningPointProofChunk, "PruningPointProofChunk"),
    (T::PruningPointProofChunksEnd, "PruningPointProofChunksEnd"),
    (T::TrustedDataChunk, "TrustedDataChunk"),
    (T::TrustedDataChunksEnd, "TrustedDataChunksEnd"),
];

/// How the sensor handles a message type after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Owned by the handshake (`Version`, `Verack`, `Ready`) or by the router itself (`Reject`
    /// ends the connection before routing). A repeat after the handshake is counted and dropped.
    Handshake,
    /// Answered with `Pong`.
    Ping,
    /// Answered with `Addresses`.
    RequestAddresses,
    /// Received, counted and dropped.
    Drain,
}

/// The handling of each type. An exhaustive `match`: a new upstream type fails to compile
/// here instead of silently closing connections.
pub fn handling(t: T) -> Handling {
    match t {
        T::Addresses
        | T::Block
        | T::Transaction
        | T::BlockLocator
        | T::RequestRelayBlocks
        | T::RequestTransactions
        | T::IbdBlock
        | T::InvRelayBlock
        | T::InvTransactions
        | T::Pong
        | T::TransactionNotFound
        | T::PruningPointUtxoSetChunk
        | T::RequestIbdBlocks
        | T::UnexpectedPruningPoint
        | T::IbdBlockLocator
        | T::IbdBlockLocatorHighestHash
        | T::RequestNextPruningPointUtxoSetChunk
        | T::DonePruningPointUtxoSetChunks
        | T::IbdBlockLocatorHighestHashNotFound
        | T::BlockWithTrustedData
        | T::DoneBlocksWithTrustedData
        | T::RequestPruningPointAndItsAnticone
        | T::BlockHeaders
        | T::RequestNextHeaders
        | T::DoneHeaders
        | T::RequestPruningPointUtxoSet
        | T::RequestHeaders
        | T::RequestBlockLocator
        | T::PruningPoints
        | T::RequestPruningPointProof
        | T::PruningPointProof
        | T::BlockWithTrustedDataV4
        | T::TrustedData
        | T::RequestIbdChainBlockLocator
        | T::IbdChainBlockLocator
        | T::RequestAntipast
        | T::RequestNextPruningPointAndItsAnticoneBlocks
        | T::BlockBody
        | T::RequestBlockBodies
        | T::RequestPruningPointSmtState
        | T::SmtMetadata
        | T::SmtLaneChunk
        | T::RequestNextPruningPointSmtChunk
        | T::PruningPointProofChunk
        | T::PruningPointProofChunksEnd
        | T::TrustedDataChunk
        | T::TrustedDataChunksEnd => Handling::Drain,
        T::RequestAddresses => Handling::RequestAddresses,
        T::Ping => Handling::Ping,
        T::Verack | T::Version | T::Reject | T::Ready => Handling::Handshake,
    }
}

#[cfg(test)]
fn types_handled_as(h: Handling) -> Vec<T> {
    ALL_MESSAGE_TYPES.iter().map(|(t, _)| *t).filter(|t| handling(*t) == h).collect()
}

/// The type's name as in kaspa-p2p-lib (`Ping`, `RequestAddresses`, …): the metric label.
pub fn message_type_name(t: T) -> &'static str {
    ALL_MESSAGE_TYPES.iter().find(|(x, _)| *x == t).map(|(_, n)| *n).unwrap_or("Unknown")
}

/// The keep-alive answer to one post-handshake message, if it needs one: `Pong` with the same
/// nonce for `Ping`, `Addresses` with `addresses` for `RequestAddresses`, nothing otherwise.
/// The one rule every connection kind (our server, library routers, the raw wire client) uses.
pub fn keep_alive_reply(payload: Payload, addresses: &[pb::NetAddress]) -> Option<Payload> {
    match (handling(T::from(&payload)), payload) {
        (Handling::Ping, Payload::Ping(ping)) => Some(Payload::Pong(PongMessage { nonce: ping.nonce })),
        (Handling::RequestAddresses, _) => {
            Some(Payload::Addresses(AddressesMessage { address_list: addresses.to_vec() }))
        }
        _ => None,
    }
}

/// Why a peer's flows ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowEnd {
    /// The peer closed the connection (or the router closed it after a protocol error).
    PeerClosed,
    /// The configured hold time expired; we closed the connection.
    HoldTimeExpired,
    /// The sensor is shutting down; we closed the connection.
    Shutdown,
    /// Sending to the peer failed (its outgoing queue is full or closed).
    SendFailed(String),
}

/// The one subscription of a connection: every routable type (all but `Reject`, which the
/// router handles itself) in a single route, held for the connection's whole life.
///
/// One route instead of one per flow is a memory decision: a tokio mpsc channel allocates its
/// first block of 32 slots up front, and a `KaspadMessage` is 272 bytes, so each channel costs
/// ~8.7 KiB per connection whether used or not — and kaspa-p2p-lib keeps a subscription's sender
/// in its routing map until the connection closes. The handshake ([`super::handshake`]) and the
/// keep-alive loop ([`PeerFlows::run`]) read the same route, in that order.
pub struct PeerFlows {
    pub(crate) route: IncomingRoute,
}

impl PeerFlows {
    /// Subscribes every routable type. Call before `router.start()`, once per router:
    /// kaspa-p2p-lib panics on a second subscription of a type.
    pub fn subscribe(router: &Router) -> Self {
        let types = ALL_MESSAGE_TYPES.iter().map(|(t, _)| *t).filter(|t| *t != T::Reject).collect();
        Self { route: router.subscribe(types) }
    }

    /// For nodes whose handshake already subscribed `Version`, `Verack` and `Ready` (such as
    /// kaspa-p2p-lib's `KaspadHandshake`): subscribes every other routable type. Call before
    /// exchanging `Ready`.
    pub fn subscribe_after_handshake(router: &Router) -> Self {
        let types = ALL_MESSAGE_TYPES
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| !matches!(t, T::Reject | T::Version | T::Verack | T::Ready))
            .collect();
        Self { route: router.subscribe(types) }
    }

    /// The next message on the route; `None` once the connection closed. For callers that serve
    /// a connection themselves instead of [`PeerFlows::run`] (the test lab's nodes).
    pub async fn recv(&mut self) -> Option<pb::KaspadMessage> {
        self.route.recv().await
    }

    /// Serves the peer after the handshake: Pong for Ping, `addresses` for RequestAddresses,
    /// everything else (including repeated handshake messages) counted and dropped. Runs until
    /// it disconnects, `hold_time` passes (`None` = no limit), or
    /// `shutdown` completes; in the last two cases the connection is closed without a Reject,
    /// as kaspad closes idle peers. `addresses` is the reply to every `RequestAddresses`.
    pub async fn run(
        mut self,
        router: Arc<Router>,
        addresses: Vec<pb::NetAddress>,
        hold_time: Option<Duration>,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()>,
    ) -> FlowEnd {
        let hold = async {
            match hold_time {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(hold, shutdown);
        let count =
            |t: T| metrics.messages_received.get_or_create(&MessageLabels { message_type: message_type_name(t) }).inc();
        let end = loop {
            let msg = tokio::select! {
                _ = &mut shutdown => break FlowEnd::Shutdown,
                _ = &mut hold => break FlowEnd::HoldTimeExpired,
                msg = self.route.recv() => match msg {
                    Some(m) => m,
                    None => break FlowEnd::PeerClosed,
                },
            };
            let Some(payload) = msg.payload else { continue };
            let t = T::from(&payload);
            count(t);
            let Some(reply) = keep_alive_reply(payload, &addresses) else { continue };
            let reply = pb::KaspadMessage { payload: Some(reply), request_id: 0, response_id: 0 };
            if let Err(e) = router.enqueue(reply).await {
                break FlowEnd::SendFailed(e.to_string());
            }
        };
        if end != FlowEnd::PeerClosed {
            router.close().await;
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_covers_every_type_exactly_once() {
        let set: HashSet<u8> = ALL_MESSAGE_TYPES.iter().map(|(t, _)| *t as u8).collect();
        assert_eq!(set.len(), ALL_MESSAGE_TYPES.len());
        assert_eq!(ALL_MESSAGE_TYPES.len(), T::TrustedDataChunksEnd as usize + 1);
        for (t, name) in ALL_MESSAGE_TYPES {
            assert_eq!(format!("{t:?}"), name);
        }
    }

    #[test]
    fn only_ping_and_request_addresses_are_answered() {
        assert_eq!(types_handled_as(Handling::Ping), vec![T::Ping]);
        assert_eq!(types_handled_as(Handling::RequestAddresses), vec![T::RequestAddresses]);
        assert_eq!(handling(T::Version), Handling::Handshake);
        assert_eq!(handling(T::Pong), Handling::Drain);
        assert_eq!(handling(T::Addresses), Handling::Drain);
        assert_eq!(types_handled_as(Handling::Drain).len(), ALL_MESSAGE_TYPES.len() - 6);
        assert!(types_handled_as(Handling::Handshake).contains(&T::Reject));
    }
}
