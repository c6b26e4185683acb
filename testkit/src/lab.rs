//! A synthetic Kaspa network for the crawler's tests and benchmark (issue 5, "Prove it"): nodes
//! built from kaspa-p2p-lib itself (`Adaptor::bidirectional`, the library's `KaspadHandshake`)
//! on many loopback addresses (127.`block`.x.y, one IP per node), each answering `RequestAddresses`
//! with its neighbours in a generated graph.
//!
//! The graph is deterministic for a seed (splitmix64): node `i` gossips `degree` distinct random
//! other nodes, in pages of `page` addresses (successive requests on one connection get
//! successive pages, cycling), so a crawler must repeat `RequestAddresses` to learn them all.
//! Some nodes are listed but not listening (a connect is refused) and some run on another
//! network. [`Lab::expected`] says what a correct crawl from one seed must find.
//!
//! Library traps handled (docs/kaspa-protocol.md): a drain for every unhandled type
//! ([`PeerFlows::subscribe_after_handshake`]), `set_identity` after the handshake, the bind
//! checked before `Adaptor::bidirectional` (which returns Ok even when it cannot bind).

use std::{
    collections::{BTreeSet, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    sync::Arc,
    time::Duration,
};

use kaspa_p2p_lib::{
    Adaptor, ConnectionInitializer, Hub, KaspadHandshake, Router,
    common::ProtocolError,
    pb::{self, AddressesMessage, kaspad_message::Payload},
};
use kaspa_utils::networking::PeerId;
use uuid::Uuid;

use sensor::kaspa::{
    flows::{PeerFlows, keep_alive_reply},
    version::LocalVersion,
};
use sensor_core::crawl::MAX_ADDRESSES_PER_REPLY;
use sensor_core::network::Network;

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub nodes: usize,
    /// Nodes live on 127.`block`.x.y ([`node_ip`]). Labs that run at the same time need
    /// different blocks: a not-listening node's released port could otherwise be taken by a
    /// node of the other lab on the same IP.
    pub block: u8,
    /// Out-degree: neighbours each node gossips.
    pub degree: usize,
    /// Addresses per `Addresses` reply.
    pub page: usize,
    /// Every `dead_every`-th node (not the seed, node 0) is listed but not listening; 0 = none.
    pub dead_every: usize,
    /// Node indices that run on `wrong_network` instead of `network`.
    pub wrong_network_nodes: Vec<usize>,
    /// Node indices that answer `RequestAddresses` with [`OVERSIZED_REPLY`] entries instead of
    /// their neighbours (an abusive peer: a crawler must keep nothing of it).
    pub oversized_nodes: Vec<usize>,
    /// Node indices whose initializer fails after the Version exchange with kaspa-p2p-lib's
    /// `VersionMismatch` error: the library then sends a `Reject` and closes, as kaspad does
    /// for a protocol version it refuses.
    pub rejecting_nodes: Vec<usize>,
    pub network: Network,
    pub wrong_network: Network,
    /// Graph seed.
    pub seed: u64,
    /// Extra entries node 0 gossips that no crawler may dial (e.g. 0.0.0.0:16611).
    pub junk: Vec<SocketAddr>,
    /// Emulated latency: every node waits this long before each `Addresses` reply (loopback
    /// has none, and this kernel has no netem, docs/natlab.md).
    pub reply_delay: Duration,
}

/// Entries in an oversized node's reply: one more than kaspad accepts
/// ([`MAX_ADDRESSES_PER_REPLY`]).
pub const OVERSIZED_REPLY: usize = MAX_ADDRESSES_PER_REPLY + 1;

/// What a crawl from node 0 must find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Every address the crawl visits.
    pub visited: BTreeSet<SocketAddr>,
    /// Visited nodes that complete the handshake on the right network.
    pub reachable: BTreeSet<SocketAddr>,
    /// Visited nodes that are not listening.
    pub refused: BTreeSet<SocketAddr>,
    /// Visited nodes on the wrong network.
    pub wrong_network: BTreeSet<SocketAddr>,
    /// Visited nodes that reject the crawler's protocol version.
    pub rejecting: BTreeSet<SocketAddr>,
    /// Visited (reachable) nodes whose reply is oversized: no edges from them.
    pub oversized: BTreeSet<SocketAddr>,
    /// `(gossiper, gossiped)` of every reachable visited node, junk excluded.
    pub edges: BTreeSet<(SocketAddr, SocketAddr)>,
}

/// A running synthetic network; dropping it stops every node.
pub struct Lab {
    pub spec: LabSpec,
    /// Node `i`'s address.
    pub addresses: Vec<SocketAddr>,
    /// Node `i`'s neighbours (indices).
    pub graph: Vec<Vec<usize>>,
    pub live: Vec<bool>,
    adaptors: Vec<Arc<Adaptor>>,
}

/// splitmix64: a tiny deterministic generator (no dependency, same graph everywhere).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Node `i`'s IP: 127.`block`.x.y, never .0 or .255 in the last octet (up to 62,500 nodes).
pub fn node_ip(block: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, block, (i / 250) as u8, (i % 250) as u8 + 1))
}

/// The `k`-th address of an oversized reply: 127.255.x.y (never dialled: the reply is dropped).
fn junk_ip(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 255, (k / 250) as u8, (k % 250) as u8 + 1))
}

/// The graph for `spec`: `degree` distinct random neighbours per node, never itself.
pub fn graph(spec: &LabSpec) -> Vec<Vec<usize>> {
    let mut rng = Rng(spec.seed);
    let degree = spec.degree.min(spec.nodes.saturating_sub(1));
    (0..spec.nodes)
        .map(|i| {
            let mut out: Vec<usize> = Vec::with_capacity(degree);
            while out.len() < degree {
                let j = rng.below(spec.nodes);
                if j != i && !out.contains(&j) {
                    out.push(j);
                }
            }
            out
        })
        .collect()
}

/// A connection initializer: the library's handshake, then pages of neighbours.
struct LabNode {
    version: LocalVersion,
    reject: bool,
    pages: Arc<Vec<Vec<pb::NetAddress>>>,
    reply_delay: Duration,
}

#[tonic::async_trait]
impl ConnectionInitializer for LabNode {
    async fn initialize_connection(&self, router: Arc<Router>) -> Result<(), ProtocolError> {
        let mut handshake = KaspadHandshake::new(&router);
        router.start();
        let theirs = handshake.handshake(self.version.message()).await?;
        if self.reject {
            return Err(ProtocolError::VersionMismatch(
                self.version.message().protocol_version,
                theirs.protocol_version,
            ));
        }
        router.set_identity(PeerId::from_slice(&theirs.id)?);
        let flows = PeerFlows::subscribe_after_handshake(&router);
        handshake.exchange_ready_messages().await?;
        tokio::spawn(serve(router, flows, self.pages.clone(), self.reply_delay));
        Ok(())
    }
}

/// Nonce of the lab's one `Ping`.
const PING_NONCE: u64 = 0x6c61_6221;

/// Answers `RequestAddresses` with successive pages, `Ping` with `Pong`; ends with the
/// connection. Like kaspad's keep-alive, it pings once: the first `RequestAddresses` is answered
/// only after the matching `Pong`, so a crawler that does not answer pings learns nothing.
async fn serve(router: Arc<Router>, mut flows: PeerFlows, pages: Arc<Vec<Vec<pb::NetAddress>>>, delay: Duration) {
    let mut n = 0usize;
    let (mut pinged, mut waiting) = (false, false);
    let page = |n: usize| {
        let list = pages.get(n % pages.len().max(1)).cloned().unwrap_or_default();
        Payload::Addresses(AddressesMessage { address_list: list })
    };
    while let Some(msg) = flows.recv().await {
        let reply = match msg.payload {
            Some(Payload::RequestAddresses(_)) if !pinged => {
                (pinged, waiting) = (true, true);
                Payload::Ping(pb::PingMessage { nonce: PING_NONCE })
            }
            Some(Payload::Pong(p)) if waiting && p.nonce == PING_NONCE => {
                waiting = false;
                n += 1;
                page(n - 1)
            }
            Some(Payload::RequestAddresses(_)) => {
                n += 1;
                page(n - 1)
            }
            Some(other) => match keep_alive_reply(other, &[]) {
                Some(r) => r,
                None => continue,
            },
            None => continue,
        };
        if matches!(reply, Payload::Addresses(_)) && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if router.enqueue(pb::KaspadMessage { payload: Some(reply), request_id: 0, response_id: 0 }).await.is_err() {
            break;
        }
    }
}

fn net_address(a: SocketAddr) -> pb::NetAddress {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    pb::NetAddress { timestamp: 0, ip, port: u32::from(a.port()) }
}

/// A free port on `ip` (bound, then released: nothing listens there afterwards).
fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

impl Lab {
    /// Starts the network and waits (≤ 10 s) until every live node accepts TCP connections.
    /// Needs a tokio runtime.
    ///
    /// Errors: a text naming the node that could not bind or start.
    pub async fn start(spec: LabSpec) -> Result<Lab, String> {
        let graph = graph(&spec);
        let mut addresses = Vec::with_capacity(spec.nodes);
        for i in 0..spec.nodes {
            let ip = node_ip(spec.block, i);
            let port = free_port(ip).map_err(|e| format!("node {i}: no free port on {ip}: {e}"))?;
            addresses.push(SocketAddr::new(ip, port));
        }
        let live: Vec<bool> =
            (0..spec.nodes).map(|i| i == 0 || spec.dead_every == 0 || i % spec.dead_every != 0).collect();
        let mut adaptors = Vec::new();
        for i in 0..spec.nodes {
            if !live[i] {
                continue;
            }
            let mut gossip: Vec<pb::NetAddress> = graph[i].iter().map(|&j| net_address(addresses[j])).collect();
            let mut page = spec.page.max(1);
            if spec.oversized_nodes.contains(&i) {
                gossip = (0..OVERSIZED_REPLY).map(|k| net_address(SocketAddr::new(junk_ip(k), 16611))).collect();
                page = OVERSIZED_REPLY;
            }
            if i == 0 {
                gossip.extend(spec.junk.iter().map(|&a| net_address(a)));
            }
            let pages: Vec<Vec<pb::NetAddress>> = gossip.chunks(page).map(<[_]>::to_vec).collect();
            let network = if spec.wrong_network_nodes.contains(&i) { spec.wrong_network } else { spec.network };
            let version = LocalVersion { network, id: Uuid::new_v4(), address: Some(addresses[i]) };
            let reject = spec.rejecting_nodes.contains(&i);
            let init = Arc::new(LabNode { version, reject, pages: Arc::new(pages), reply_delay: spec.reply_delay });
            // Bind-check: the adaptor reports no bind failure itself.
            drop(TcpListener::bind(addresses[i]).map_err(|e| format!("node {i}: cannot bind {}: {e}", addresses[i]))?);
            let adaptor = Adaptor::bidirectional(addresses[i].into(), Hub::new(), init, Default::default())
                .map_err(|e| format!("node {i}: {e}"))?;
            adaptors.push(adaptor);
        }
        let lab = Lab { spec, addresses, graph, live, adaptors };
        lab.wait_listening(Duration::from_secs(10)).await?;
        Ok(lab)
    }

    async fn wait_listening(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        for (i, a) in self.addresses.iter().enumerate().filter(|(i, _)| self.live[*i]) {
            loop {
                if tokio::net::TcpStream::connect(a).await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("node {i} at {a} never listened"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Node 0's address: the seed.
    pub fn seed(&self) -> SocketAddr {
        self.addresses[0]
    }

    /// What a crawl seeded with node 0 must find: a breadth-first walk that learns the
    /// neighbours of live right-network nodes only.
    pub fn expected(&self) -> Expected {
        let wrong = |i: usize| self.spec.wrong_network_nodes.contains(&i);
        let mut seen = vec![false; self.addresses.len()];
        let mut queue = VecDeque::from([0usize]);
        seen[0] = true;
        let mut e = Expected {
            visited: BTreeSet::new(),
            reachable: BTreeSet::new(),
            refused: BTreeSet::new(),
            wrong_network: BTreeSet::new(),
            rejecting: BTreeSet::new(),
            oversized: BTreeSet::new(),
            edges: BTreeSet::new(),
        };
        while let Some(i) = queue.pop_front() {
            let a = self.addresses[i];
            e.visited.insert(a);
            if !self.live[i] {
                e.refused.insert(a);
                continue;
            }
            if wrong(i) {
                e.wrong_network.insert(a);
                continue;
            }
            if self.spec.rejecting_nodes.contains(&i) {
                e.rejecting.insert(a);
                continue;
            }
            e.reachable.insert(a);
            if self.spec.oversized_nodes.contains(&i) {
                e.oversized.insert(a);
                continue;
            }
            for &j in &self.graph[i] {
                e.edges.insert((a, self.addresses[j]));
                if !seen[j] {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        e
    }

    /// Stops every node.
    pub async fn stop(self) {
        for a in &self.adaptors {
            a.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_is_deterministic_without_self_loops() {
        let spec = LabSpec {
            nodes: 50,
            block: 77,
            degree: 4,
            page: 2,
            dead_every: 0,
            wrong_network_nodes: vec![],
            oversized_nodes: vec![],
            rejecting_nodes: vec![],
            network: Network::Devnet,
            wrong_network: Network::Mainnet,
            seed: 7,
            junk: vec![],
            reply_delay: Duration::ZERO,
        };
        let g = graph(&spec);
        assert_eq!(g, graph(&spec));
        for (i, n) in g.iter().enumerate() {
            assert_eq!(n.len(), 4);
            assert!(!n.contains(&i));
            assert_eq!(n.iter().collect::<BTreeSet<_>>().len(), 4);
        }
        assert_ne!(g, graph(&LabSpec { seed: 8, ..spec }));
        assert_eq!(node_ip(77, 0), IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1)));
        assert_eq!(node_ip(77, 999), IpAddr::V4(Ipv4Addr::new(127, 77, 3, 250)));
    }
}
