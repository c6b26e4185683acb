//! The NAT lab (docs/natlab.md, sensor/tests/support/natlab.rs, scripts/natlab.sh) behaves as NAT
//! theory says, shown with plain UDP sockets: endpoint mapping per NAT type, inbound filtering
//! per NAT type, and a simultaneous-open UDP hole punch for every pair of types. Needs root,
//! `ip` and `nft`; `scripts/test.sh` runs these `#[ignore]`d tests as root.

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::natlab::{self, NatLab, NatType, UdpEcho};
use support::netns::{self, Host};

const ECHO_PORT: u16 = 3478;
const ECHO_PORT_2: u16 = 3479;
/// Local UDP port of the private hosts.
const LOCAL_PORT: u16 = 40000;
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an unsolicited datagram may take before it counts as dropped.
const DROP_WAIT: Duration = Duration::from_millis(800);
/// How long the two peers keep punching before the attempt counts as failed.
const PUNCH_WINDOW: Duration = Duration::from_millis(2500);

/// Drops the lab and asserts it left no namespace behind.
fn finish(lab: NatLab) {
    let id = lab.id().to_string();
    drop(lab);
    let left = natlab::namespaces_with_prefix(&id);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// (a) Mapping: from one local port to three destinations (two public hosts, and a second port
/// of the first). Cone NATs map all three to one public port, the local port itself (masquerade
/// keeps it when free); symmetric NAT picks a new random port per destination.
#[test]
#[ignore = "needs root and network namespaces; run by scripts/test.sh"]
fn endpoint_mapping_per_nat_type() {
    let started = Instant::now();
    for nat in NatType::ALL {
        let lab = NatLab::new(nat, nat).expect("nat lab");
        let _e1 = UdpEcho::start(&lab.relay, ECHO_PORT).expect("echo on relay");
        let _e2 = UdpEcho::start(&lab.relay, ECHO_PORT_2).expect("second echo on relay");
        let _e3 = UdpEcho::start(&lab.probe, ECHO_PORT).expect("echo on probe");
        let dests = [
            SocketAddrV4::new(lab.relay.ip, ECHO_PORT),
            SocketAddrV4::new(lab.probe.ip, ECHO_PORT),
            SocketAddrV4::new(lab.relay.ip, ECHO_PORT_2),
        ];
        for (host, wan) in [(&lab.a, lab.router_a.ip), (&lab.b, lab.router_b.ip)] {
            let sock = natlab::udp_socket(host, LOCAL_PORT).expect("socket");
            let seen: Vec<SocketAddrV4> = dests
                .iter()
                .map(|d| {
                    natlab::observed_addr(&sock, *d, ASK_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", lab.describe()))
                })
                .collect();
            let ports: Vec<u16> = seen.iter().map(|s| s.port()).collect();
            eprintln!("[natlab] mapping {:<10} {}:{LOCAL_PORT} -> {ports:?} (to {dests:?})", nat.name(), host.ip);
            assert!(
                seen.iter().all(|s| *s.ip() == wan),
                "{nat:?}: every mapping is on the WAN address {wan}: {seen:?}"
            );
            if nat.endpoint_independent_mapping() {
                assert!(ports.iter().all(|p| *p == LOCAL_PORT), "{nat:?}: one port for all, the local one: {ports:?}");
            } else {
                let mut distinct = ports.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert!(distinct.len() >= 2, "{nat:?}: a new port per destination: {ports:?}");
            }
        }
        finish(lab);
    }
    eprintln!("[natlab] endpoint_mapping_per_nat_type took {:?}", started.elapsed());
}

/// (b) Filtering: after A asked the relay's echo server (port 3478) for its mapped endpoint,
/// datagrams to that endpoint from the relay's other port and from the probe host arrive only
/// through a full-cone NAT; restricted (port-restricted) and symmetric NATs drop them silently.
#[test]
#[ignore = "needs root and network namespaces; run by scripts/test.sh"]
fn inbound_filtering_per_nat_type() {
    let started = Instant::now();
    for nat in NatType::ALL {
        let lab = NatLab::new(nat, NatType::Restricted).expect("nat lab");
        let _echo = UdpEcho::start(&lab.relay, ECHO_PORT).expect("echo on relay");
        let sock = natlab::udp_socket(&lab.a, LOCAL_PORT).expect("socket");
        let mapped = natlab::observed_addr(&sock, SocketAddrV4::new(lab.relay.ip, ECHO_PORT), ASK_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.describe()));
        let strangers = [(&lab.relay, ECHO_PORT_2, "relay, other port"), (&lab.probe, 5555, "probe host")];
        for (from, port, what) in strangers {
            let stranger = natlab::udp_socket(from, port).expect("stranger socket");
            let payload = format!("unsolicited from {what}");
            stranger.send_to(payload.as_bytes(), mapped).expect("send");
            let got = natlab::recv_within(&sock, DROP_WAIT);
            eprintln!(
                "[natlab] filtering {:<10} {what} {}:{port} -> {mapped}: {}",
                nat.name(),
                from.ip,
                match &got {
                    Some((_, src)) => format!("received from {src}"),
                    None => "dropped".into(),
                }
            );
            let expected = nat.endpoint_independent_filtering();
            assert_eq!(got.is_some(), expected, "{nat:?}: unsolicited datagram from {what} arrives = {expected}");
            if let Some((data, src)) = got {
                assert_eq!(data, payload.as_bytes());
                assert_eq!(src, SocketAddr::from((from.ip, port)), "arrives with the stranger's true source");
            }
        }
        finish(lab);
    }
    eprintln!("[natlab] inbound_filtering_per_nat_type took {:?}", started.elapsed());
}

/// What one side of a hole punch saw: when (since the start) and from where the first datagram
/// from the peer arrived.
type Heard = Option<(Duration, SocketAddr)>;

/// One side of a simultaneous open: every 100 ms sends `punch` to the peer's mapped endpoint;
/// answers every datagram from the peer's IP with `ack` to its source; stops when both sides
/// heard the other (`done` reaches 2) or `PUNCH_WINDOW` passes.
fn punch_side(sock: &UdpSocket, peer: SocketAddrV4, start: Instant, done: &AtomicUsize) -> Heard {
    let mut heard: Heard = None;
    let mut next_send = start;
    let mut buf = [0u8; 64];
    while start.elapsed() < PUNCH_WINDOW && done.load(Ordering::SeqCst) < 2 {
        if Instant::now() >= next_send {
            let _ = sock.send_to(b"punch", peer);
            next_send += Duration::from_millis(100);
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from.ip() == *peer.ip()
        {
            if &buf[..n] == b"punch" {
                let _ = sock.send_to(b"ack", from);
            }
            if heard.is_none() {
                heard = Some((start.elapsed(), from));
                done.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    heard
}

/// Both hosts learn their mapped endpoint from the relay's echo server, then punch towards each
/// other at the same time. Returns what A heard and what B heard.
fn hole_punch(lab: &NatLab) -> (Heard, Heard, SocketAddrV4, SocketAddrV4) {
    let echo_addr = SocketAddrV4::new(lab.relay.ip, ECHO_PORT);
    let open = |host: &Host| {
        let sock = natlab::udp_socket(host, LOCAL_PORT).expect("socket");
        sock.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mapped = natlab::observed_addr(&sock, echo_addr, ASK_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        (sock, mapped)
    };
    let (sock_a, mapped_a) = open(&lab.a);
    let (sock_b, mapped_b) = open(&lab.b);
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let (heard_a, heard_b) = std::thread::scope(|s| {
        let a = s.spawn(|| punch_side(&sock_a, mapped_b, start, &done));
        let b = s.spawn(|| punch_side(&sock_b, mapped_a, start, &done));
        (a.join().expect("side A"), b.join().expect("side B"))
    });
    (heard_a, heard_b, mapped_a, mapped_b)
}

/// Whether theory says a UDP hole punch between these NAT types succeeds: both sides keep one
/// port for every destination, or one side is full cone (accepts the other's packets from any
/// port, and its answers go back to the port they came from).
fn punch_expected(a: NatType, b: NatType) -> bool {
    (a.endpoint_independent_mapping() && b.endpoint_independent_mapping())
        || a == NatType::FullCone
        || b == NatType::FullCone
}

/// (c) A simultaneous-open UDP hole punch for all nine ordered pairs of NAT types:
/// restricted↔restricted and full-cone↔anything punch through, symmetric↔restricted and
/// symmetric↔symmetric do not (each attempt bounded by `PUNCH_WINDOW`).
#[test]
#[ignore = "needs root and network namespaces; run by scripts/test.sh"]
fn hole_punch_matrix() {
    let started = Instant::now();
    let mut table = Vec::new();
    for a in NatType::ALL {
        for b in NatType::ALL {
            let t0 = Instant::now();
            let lab = NatLab::new(a, b).expect("nat lab");
            let _echo = UdpEcho::start(&lab.relay, ECHO_PORT).expect("echo on relay");
            let (heard_a, heard_b, mapped_a, mapped_b) = hole_punch(&lab);
            let punched = heard_a.is_some() && heard_b.is_some();
            let when = heard_a.zip(heard_b).map(|((ta, _), (tb, _))| ta.max(tb));
            let line = format!(
                "{:<10} x {:<10} {} (A {mapped_a} heard B at {:?}, B {mapped_b} heard A at {:?}; {:?} in all)",
                a.name(),
                b.name(),
                if punched { format!("PUNCHED in {:?}", when.unwrap()) } else { "failed".into() },
                heard_a,
                heard_b,
                t0.elapsed(),
            );
            eprintln!("[natlab] hole punch {line}");
            let expected = punch_expected(a, b);
            if punched != expected {
                panic!("{line}: expected punched = {expected}\n{}\n{}", lab.conntrack(), lab.describe());
            }
            table.push(line);
            finish(lab);
        }
    }
    eprintln!("[natlab] hole punch matrix ({:?}):\n  {}", started.elapsed(), table.join("\n  "));
}

/// Runs `scripts/natlab.sh ARGS…` and returns stdout; panics with stderr on failure.
fn script(args: &[&str]) -> String {
    netns::run("bash", &[&[netns::NATLAB_SCRIPT][..], args].concat()).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `natlab.sh down` for its prefix on drop, so a failing test leaves nothing behind.
struct ScriptLab(String);

impl Drop for ScriptLab {
    fn drop(&mut self) {
        let _ = netns::run("bash", &[netns::NATLAB_SCRIPT, "down", "--prefix", &self.0]);
    }
}

fn root_links() -> Vec<String> {
    let out = netns::run("ip", &["-o", "link", "show"]).expect("ip link");
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// `scripts/natlab.sh up` builds a working lab (A full cone, B symmetric; a private host reaches
/// the relay from its router's WAN address), `status` shows it, `down` removes every namespace
/// and kills the processes inside, a second `down` is a no-op, and the root namespace's links
/// are untouched.
#[test]
#[ignore = "needs root and network namespaces; run by scripts/test.sh"]
fn script_up_then_down_leaves_nothing() {
    let started = Instant::now();
    let prefix = format!("nl{}", std::process::id());
    let links_before = root_links();
    let guard = ScriptLab(prefix.clone());
    let out = script(&["up", "--a", "full-cone", "--b", "symmetric", "--prefix", &prefix]);
    eprintln!("{out}");
    let names = natlab::namespaces_with_prefix(&prefix);
    assert_eq!(names.len(), 7, "segment, relay, probe, 2 routers, 2 hosts: {names:?}");
    let status = script(&["status", "--prefix", &prefix]);
    assert!(status.contains("router (full-cone)") && status.contains("router (symmetric)"), "{status}");

    let relay = Host { ns: format!("{prefix}-relay"), ip: natlab::RELAY_IP };
    let host_a = Host { ns: format!("{prefix}-nat-a-in"), ip: Ipv4Addr::new(10, 0, 1, 2) };
    let echo = UdpEcho::start(&relay, ECHO_PORT).expect("echo in the script's relay");
    let sock = natlab::udp_socket(&host_a, LOCAL_PORT).expect("socket in the script's host A");
    let seen = natlab::observed_addr(&sock, echo.addr, ASK_TIMEOUT).expect("A reaches the relay");
    assert_eq!(seen, SocketAddrV4::new(natlab::WAN_A, LOCAL_PORT), "masqueraded, port kept");
    drop((sock, echo));
    let mut sleeper = relay.command("sleep").arg("60").spawn().expect("sleep in the relay");

    let out = script(&["down", "--prefix", &prefix]);
    assert!(out.contains("removed 7 namespaces"), "{out}");
    let left = natlab::namespaces_with_prefix(&prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        match sleeper.try_wait().expect("wait") {
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => break other,
        }
    };
    assert!(status.is_some_and(|s| !s.success()), "down killed the process in the relay: {status:?}");
    assert!(script(&["down", "--prefix", &prefix]).contains("removed 0 namespaces"), "idempotent");
    assert_eq!(root_links(), links_before, "nothing created in the root namespace");
    let not_up = Command::new("bash").args([netns::NATLAB_SCRIPT, "status", "--prefix", &prefix]).output().unwrap();
    assert!(!not_up.status.success(), "status of a lab that is down exits non-zero");
    drop(guard);
    eprintln!("[natlab] script_up_then_down_leaves_nothing took {:?}", started.elapsed());
}

/// A test that panics with a lab alive still removes the lab's namespaces and kills the
/// processes inside them (drop during unwind).
#[test]
#[ignore = "needs root and network namespaces; run by scripts/test.sh"]
fn lab_removed_on_panic() {
    eprintln!("[natlab] lab_removed_on_panic: the panic below is intended");
    let mut child = None;
    let id = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = NatLab::new(NatType::FullCone, NatType::Symmetric).expect("nat lab");
        child = Some(lab.a.command("sleep").arg("60").spawn().expect("sleep in host A"));
        assert_eq!(natlab::namespaces_with_prefix(lab.id()).len(), 7);
        std::panic::panic_any(lab.id().to_string());
    }))
    .expect_err("the closure panics")
    .downcast::<String>()
    .expect("the lab id");
    let left = natlab::namespaces_with_prefix(&id);
    assert!(left.is_empty(), "namespaces left behind after a panic: {left:?}");
    let status = child.expect("spawned").wait().expect("wait");
    assert!(!status.success(), "the process in host A was killed: {status:?}");
}
