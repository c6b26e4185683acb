//! The NAT lab of docs/natlab.md for tests: two private hosts, each behind its own NAT router of a
//! chosen type, and two public hosts, on an isolated public segment ([`Lab::isolated`]).
//!
//! ```text
//!  <id>-segment  bridge br0, public segment 198.51.100.0/24 (no root leg)
//!  <id>-relay    198.51.100.2   public (relay / echo server)
//!  <id>-probe    198.51.100.3   public (a second destination, a stranger)
//!  <id>-nat-a    router A: wan 198.51.100.11, lan 10.0.1.1/24 ── <id>-nat-a-in  host A 10.0.1.2
//!  <id>-nat-b    router B: wan 198.51.100.12, lan 10.0.2.1/24 ── <id>-nat-b-in  host B 10.0.2.2
//! ```
//!
//! The same topology and names (with `--prefix` for `<id>`) as `scripts/natlab.sh up`, whose
//! `rules TYPE` output is what the routers load ([`netns::nat_ruleset`]): one copy of the NAT
//! rules. `<id>` is unique per lab and process (`sl<pid>x<n>`), so tests in parallel processes do
//! not collide. Dropping the [`NatLab`] (also during a panic) kills the processes in its
//! namespaces and removes them; labs of a killed process are removed by the next lab.
//!
//! Also small UDP tools for plain-socket tests: [`udp_socket`] (a socket inside a host),
//! [`UdpEcho`] (replies with the source `ip:port` it saw, like a STUN binding) and
//! [`observed_addr`] (asks an echo server for one's mapped endpoint).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::{self, Host, Lab};

pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const PROBE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
pub const WAN_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
pub const WAN_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);

/// The NAT behaviour of a router (RFC 4787 terms: mapping / filtering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatType {
    /// Endpoint-independent mapping and filtering: once the host sent from a port, anyone may
    /// send to the mapped port (masquerade + a learned port→host DNAT map).
    FullCone,
    /// Port-restricted cone: endpoint-independent mapping, inbound only from an address:port the
    /// host has sent to (`masquerade`).
    Restricted,
    /// Endpoint-dependent mapping: a new random public port per destination
    /// (`masquerade fully-random`), filtering as restricted.
    Symmetric,
}

impl NatType {
    pub const ALL: [NatType; 3] = [NatType::FullCone, NatType::Restricted, NatType::Symmetric];

    /// The name `scripts/natlab.sh` uses (`full-cone`, `restricted`, `symmetric`).
    pub fn name(self) -> &'static str {
        match self {
            NatType::FullCone => "full-cone",
            NatType::Restricted => "restricted",
            NatType::Symmetric => "symmetric",
        }
    }

    /// Whether the public port stays the same whatever the destination.
    pub fn endpoint_independent_mapping(self) -> bool {
        self != NatType::Symmetric
    }

    /// Whether strangers may send to a mapped port.
    pub fn endpoint_independent_filtering(self) -> bool {
        self == NatType::FullCone
    }
}

/// A running NAT lab; see the module docs for the topology. Every host is a network namespace:
/// run programs with [`Host::command`] / [`Host::run`] or `process::NsProcess`, or open sockets
/// in it with [`netns::in_ns`] / [`udp_socket`].
pub struct NatLab {
    /// Public host 198.51.100.2.
    pub relay: Host,
    /// Second public host 198.51.100.3.
    pub probe: Host,
    /// Private host A (10.0.1.2) behind `router_a`.
    pub a: Host,
    /// Private host B (10.0.2.2) behind `router_b`.
    pub b: Host,
    /// Router A; `ip` is its WAN address (198.51.100.11), A's public address.
    pub router_a: Host,
    /// Router B; `ip` is its WAN address (198.51.100.12), B's public address.
    pub router_b: Host,
    pub nat_a: NatType,
    pub nat_b: NatType,
    /// Last: dropped after the hosts, removes every namespace.
    lab: Lab,
}

impl NatLab {
    /// Builds the lab with router A of type `a` and router B of type `b` (about 0.2 s).
    /// Errors: not root, `ip`/`nft`/`bash` missing or failing (the failing command and its stderr);
    /// whatever was built is removed again.
    pub fn new(a: NatType, b: NatType) -> Result<NatLab, String> {
        let mut lab = Lab::isolated()?;
        let relay = lab.add_host("relay", RELAY_IP)?;
        let probe = lab.add_host("probe", PROBE_IP)?;
        let site_a = lab.add_nat_site_with("nat-a", WAN_A, 1, &netns::nat_ruleset(a.name())?)?;
        let site_b = lab.add_nat_site_with("nat-b", WAN_B, 2, &netns::nat_ruleset(b.name())?)?;
        eprintln!("[natlab] {}: A {} behind {WAN_A}, B {} behind {WAN_B}", lab.id(), a.name(), b.name());
        Ok(NatLab {
            relay,
            probe,
            a: site_a.host,
            b: site_b.host,
            router_a: site_a.router,
            router_b: site_b.router,
            nat_a: a,
            nat_b: b,
            lab,
        })
    }

    /// The unique prefix of every namespace of this lab (`sl<pid>x<n>`).
    pub fn id(&self) -> &str {
        self.lab.id()
    }

    /// Addresses, routes, nft rules (with the full-cone map's learned entries) of every namespace.
    pub fn describe(&self) -> String {
        self.lab.describe()
    }

    /// Conntrack entries of both routers (`conntrack -L`), for failure reports.
    pub fn conntrack(&self) -> String {
        [&self.router_a, &self.router_b]
            .iter()
            .map(|r| format!("== {}\n{}", r.ns, r.run("conntrack", &["-L"]).unwrap_or_else(|e| e)))
            .collect()
    }
}

/// Namespaces whose name starts with `prefix` followed by `-` (what a lab with that id left).
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    netns::list_netns().into_iter().filter(|n| n.starts_with(&format!("{prefix}-"))).collect()
}

/// A UDP socket bound inside `host`'s namespace to `0.0.0.0:port` (0: any free port), with a
/// 100 ms read timeout. The socket stays in that namespace whichever thread uses it.
pub fn udp_socket(host: &Host, port: u16) -> Result<UdpSocket, String> {
    let sock = netns::in_ns(&host.ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))?
        .map_err(|e| format!("bind udp :{port} in {}: {e}", host.ns))?;
    sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    Ok(sock)
}

/// A UDP echo server in a host: answers every datagram with the text `ip:port` of the source it
/// saw (the sender's mapped endpoint). Stopped and joined on drop.
pub struct UdpEcho {
    pub addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Serves on `host.ip:port`. Errors: the port is taken, the namespace is gone.
    pub fn start(host: &Host, port: u16) -> Result<UdpEcho, String> {
        let sock = udp_socket(host, port)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(from.to_string().as_bytes(), from);
                }
            }
        });
        Ok(UdpEcho { addr: SocketAddrV4::new(host.ip, port), stop, thread: Some(thread) })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The source endpoint `echo` saw for datagrams from `sock`: sends a request every 200 ms until
/// an answer from `echo` arrives or `timeout` passes. Errors: no answer in time, or a reply that
/// is not `ip:port`.
pub fn observed_addr(sock: &UdpSocket, echo: SocketAddrV4, timeout: Duration) -> Result<SocketAddrV4, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(b"whoami", echo).map_err(|e| format!("send to {echo}: {e}"))?;
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            if let Ok((n, from)) = sock.recv_from(&mut buf)
                && from == SocketAddr::V4(echo)
            {
                let text = String::from_utf8_lossy(&buf[..n]);
                return text.parse().map_err(|e| format!("echo reply {text:?}: {e}"));
            }
        }
    }
    Err(format!("no answer from the echo server {echo} within {timeout:?}"))
}

/// Waits up to `timeout` for a datagram on `sock`; returns its payload and source, or `None`.
pub fn recv_within(sock: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}
