//! One visit of one address: connect, Kaspa handshake, ask for addresses, close politely.
//!
//! The exchange is kaspa-p2p-lib's `KaspadHandshake` (Version → Verack, Ready both ways,
//! docs/kaspa-protocol.md) run on a raw [`WireConnection`] with its `send`/`recv`, rather than
//! `WireConnection::handshake`, so that the visit sees *when* the peer's `Version` arrives (the
//! RTT), can stop before `Verack` when the peer is on another network, and can tell a peer that
//! hung up before sending its `Version` from one that hung up later. We advertise no address
//! and use the crawl's fresh random peer id.
//!
//! After `Ready` the visit sends `RequestAddresses` (include_all_subnetworks = false, no
//! subnetwork) up to `max_requests` times, stopping after the first reply that adds no address
//! this peer had not already given (kaspad answers each request with up to 1000 random entries
//! of its book). Meanwhile `Ping` gets a `Pong` and a `RequestAddresses` from the peer an empty
//! `Addresses` ([`keep_alive_reply`]); other messages are ignored. Everything is bounded by the
//! visit timeout; nothing the peer sends can panic the visit.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use kaspa_p2p_lib::pb::{self, RequestAddressesMessage, VerackMessage, kaspad_message::Payload};
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use crate::kaspa::{
    flows::keep_alive_reply,
    version::{LocalVersion, read_peer_version},
    wire::{WireConnection, WireError},
};
use sensor_core::crawl::{PeerFacts, VisitError, VisitResult, classify};
use sensor_core::network::Network;

/// Longest wait for the peer to end its side after we ended ours (a polite close).
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// How to visit: the same for every visit of one crawl.
#[derive(Debug, Clone)]
pub struct VisitOptions {
    pub network: Network,
    /// The crawl's random peer id, sent in our `Version`.
    pub peer_id: Uuid,
    /// Bound of the whole visit, connect to close.
    pub timeout: Duration,
    /// `RequestAddresses` sent per visit at most (at least 1).
    pub max_requests: u32,
    /// Distinct addresses one peer may contribute per visit; the rest are counted in
    /// [`VisitResult::capped`] (anti-abuse, like kaspad's per-message limit).
    pub max_addresses: usize,
}

/// Visits `target` (see the module docs). Never fails: failures are in the result.
pub async fn visit(target: SocketAddr, options: &VisitOptions) -> VisitResult {
    let started_at = OffsetDateTime::now_utc();
    let start = Instant::now();
    let deadline = start + options.timeout;
    let mut result = VisitResult {
        address: target,
        started_at,
        duration_ms: 0,
        rtt_ms: None,
        reachable: false,
        peer: None,
        error: None,
        error_class: None,
        addresses: Vec::new(),
        malformed: 0,
        capped: 0,
        requests: 0,
    };
    let outcome = run(target, options, start, deadline, &mut result).await;
    if let Err(e) = outcome {
        result.error_class = Some(classify(&e));
        result.error = Some(e);
    }
    result.duration_ms = millis(start.elapsed());
    result
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A wire error's text: what [`classify`] reads and the visit stores.
fn text(e: WireError) -> String {
    e.to_string()
}

async fn run(
    target: SocketAddr,
    options: &VisitOptions,
    start: Instant,
    deadline: Instant,
    result: &mut VisitResult,
) -> Result<(), VisitError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut conn = WireConnection::connect(target, None, left).await.map_err(|e| VisitError::Connect(text(e)))?;
    let ours = LocalVersion { network: options.network, id: options.peer_id, address: None };
    let handshake = handshake(&mut conn, ours.message(), options.network, start, result);
    match timeout_at(deadline, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            conn.close(CLOSE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()))).await;
            return Err(e);
        }
        Err(_) => return Err(VisitError::Handshake("timed out".into())),
    }
    result.reachable = true;
    let gossip = gossip(&mut conn, options, deadline, result).await;
    conn.close(CLOSE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()))).await;
    gossip
}

/// Version/Verack/Ready; records the peer's facts and the RTT as soon as its `Version` arrives.
async fn handshake(
    conn: &mut WireConnection,
    ours: pb::VersionMessage,
    network: Network,
    start: Instant,
    result: &mut VisitResult,
) -> Result<(), VisitError> {
    let recv_err = |e| VisitError::Handshake(text(e));
    send(conn, Payload::Version(ours)).await?;
    let (mut version, mut verack) = (false, false);
    while !version || !verack {
        match conn.recv().await.map_err(recv_err)? {
            Some(Payload::Version(v)) if !version => {
                result.rtt_ms = Some(millis(start.elapsed()));
                let services = v.services;
                let peer = read_peer_version(v).map_err(VisitError::InvalidVersion)?;
                let info = peer.info;
                let facts = PeerFacts {
                    protocol_version: info.protocol_version.unwrap_or_default(),
                    user_agent: info.user_agent.unwrap_or_default(),
                    network: info.network.unwrap_or_default(),
                    peer_id: peer.id.simple().to_string(),
                    advertised_address: info.advertised_address,
                    services,
                };
                let theirs = facts.network.clone();
                result.peer = Some(facts);
                if theirs != network.wire_name() {
                    return Err(VisitError::WrongNetwork { ours: network.wire_name().to_owned(), theirs });
                }
                send(conn, Payload::Verack(VerackMessage {})).await?;
                version = true;
            }
            Some(Payload::Verack(_)) if !verack => verack = true,
            Some(Payload::Reject(r)) => return Err(VisitError::Handshake(format!("rejected: {}", r.reason))),
            Some(other) => return Err(VisitError::Handshake(format!("unexpected {:?}", payload_name(&other)))),
            None if !version => {
                return Err(VisitError::Handshake("stream closed after our Version, before the peer's".into()));
            }
            None => return Err(VisitError::Handshake("stream closed".into())),
        }
    }
    send(conn, Payload::Ready(pb::ReadyMessage {})).await?;
    match conn.recv().await.map_err(recv_err)? {
        Some(Payload::Ready(_)) => Ok(()),
        Some(Payload::Reject(r)) => Err(VisitError::Handshake(format!("rejected: {}", r.reason))),
        Some(other) => Err(VisitError::Handshake(format!("unexpected {:?}", payload_name(&other)))),
        None => Err(VisitError::Handshake("stream closed".into())),
    }
}

/// Longest look for a `Reject` after a send failed during the handshake.
const REJECT_GRACE: Duration = Duration::from_millis(250);

/// Sends a handshake message. When the send fails because the peer already ended the stream,
/// its last words may still be queued: a `Reject` there (kaspa-p2p-lib sends one, then closes,
/// when a node refuses us) becomes "rejected: REASON" instead of a bare "stream closed".
async fn send(conn: &mut WireConnection, payload: Payload) -> Result<(), VisitError> {
    let Err(e) = conn.send(payload).await else { return Ok(()) };
    let reject = async {
        loop {
            match conn.recv().await {
                Ok(Some(Payload::Reject(r))) => return Some(r.reason),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    };
    match tokio::time::timeout(REJECT_GRACE, reject).await {
        Ok(Some(reason)) => Err(VisitError::Handshake(format!("rejected: {reason}"))),
        _ => Err(VisitError::Handshake(text(e))),
    }
}

fn payload_name(p: &Payload) -> kaspa_p2p_lib::KaspadMessagePayloadType {
    p.into()
}

/// The `RequestAddresses` rounds. A timeout or a closed stream ends gossip without an error
/// (the peer was reachable); an oversized reply is an error.
async fn gossip(
    conn: &mut WireConnection,
    options: &VisitOptions,
    deadline: Instant,
    result: &mut VisitResult,
) -> Result<(), VisitError> {
    let mut seen: HashSet<SocketAddr> = HashSet::new();
    let request =
        || Payload::RequestAddresses(RequestAddressesMessage { include_all_subnetworks: false, subnetwork_id: None });
    while result.requests < options.max_requests.max(1) {
        if conn.send(request()).await.is_err() {
            return Ok(());
        }
        result.requests += 1;
        let list = match timeout_at(deadline, next_addresses(conn)).await {
            Ok(Some(list)) => list,
            Ok(None) | Err(_) => return Ok(()),
        };
        let reply =
            crate::kaspa::addresses::address_list(&list).map_err(|count| VisitError::OversizedAddresses { count })?;
        result.malformed += reply.malformed as u64;
        let mut new = 0;
        for addr in reply.addresses {
            // Distinct within the reply; across this visit's replies too.
            if !seen.insert(addr) {
                continue;
            }
            new += 1;
            if result.addresses.len() >= options.max_addresses {
                result.capped += 1;
                continue;
            }
            result.addresses.push(addr);
        }
        if new == 0 {
            break;
        }
    }
    Ok(())
}

/// Reads until an `Addresses` reply, answering keep-alive messages. `None`: the stream ended.
async fn next_addresses(conn: &mut WireConnection) -> Option<Vec<pb::NetAddress>> {
    loop {
        match conn.recv().await.ok()?? {
            Payload::Addresses(a) => return Some(a.address_list),
            other => {
                if let Some(reply) = keep_alive_reply(other, &[]) {
                    conn.send(reply).await.ok()?;
                }
            }
        }
    }
}
