//! A network lab built from Linux network namespaces with `ip` and `nft` (docs/natlab.md).
//!
//! ```text
//!  root ns ── <id>r (198.51.100.1/24) ─┐
//!                                      │  "<id>-segment": bridge br0 (the public segment)
//!  host ns "<id>-NAME"   eth0 ─────────┼── pN
//!  router ns "<id>-NAME" wan ──────────┴── pN     (198.51.100.x, masquerade, drops new inbound)
//!                        lan 10.0.L.1/24 ── eth0 10.0.L.2/24 (private host "<id>-NAME-in")
//! ```
//!
//! Every namespace is named with the lab's unique id (`sl<pid>x<n>`), so labs of concurrent test
//! processes never collide, and leftovers of a killed run (its pid is gone) are removed by the
//! next `Lab::new`. Interfaces are created directly inside their namespaces (`ip link add … netns
//! …`), so only the root leg has a name in the root namespace (`sl<pid>r<n>`, ≤ 12 chars).
//! Everything — processes in the namespaces, the namespaces, the root leg — is removed on drop,
//! which also runs when the test panics.
//!
//! [`Lab::isolated`] builds the same segment without the root leg: nothing in the root namespace,
//! so no lock, and any number of isolated labs run side by side (sensor/tests/support/natlab.rs).
//! NAT routers load their nft rules from `scripts/natlab.sh rules TYPE` ([`nat_ruleset`]), the
//! one place the NAT types are written down.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The public segment (documentation range TEST-NET-2).
pub const PUBLIC_NET: [u8; 3] = [198, 51, 100];
/// The root namespace's address on the public segment.
pub const ROOT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
/// One lab at a time per process: every lab puts 198.51.100.1/24 on a root-namespace link.
static LAB_MUTEX: Mutex<()> = Mutex::new(());
/// One lab at a time per machine, for the same reason (flock; released when the fd closes).
const LAB_LOCK_FILE: &str = "/run/sensor-lab.lock";
const LAB_LOCK_WAIT: Duration = Duration::from_secs(600);

/// Runs a command, returning stdout, or an error with the command line and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_stdin(program, args, None)
}

pub fn run_with_stdin(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{line}`: cannot start: {e}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).map_err(|e| format!("`{line}`: write stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("`{line}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{line}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// A namespace of the lab with one address on its (only) uplink.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
}

impl Host {
    /// `ip netns exec NS program` as a [`Command`] to add arguments to.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// Runs `program args…` inside the namespace and returns its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.ns, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Whether a TCP connection from this namespace to `target` completes within `timeout_s`
    /// seconds (bash `/dev/tcp` under coreutils `timeout`; no netcat needed).
    pub fn tcp_connects(&self, target: SocketAddr, timeout_s: u32) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{}", target.ip(), target.port());
        let t = timeout_s.max(1).to_string();
        self.run("timeout", &[&t, "bash", "-c", &script]).is_ok()
    }
}

/// A private host behind a NAT router.
#[derive(Clone, Debug)]
pub struct NatSite {
    /// The router; `ip` is its WAN address on the public segment.
    pub router: Host,
    /// The host on the LAN (10.0.L.2), default route via the router (10.0.L.1).
    pub host: Host,
}

pub struct Lab {
    /// Held by labs with a root leg (one per process / machine); `None` for isolated labs.
    _guard: Option<MutexGuard<'static, ()>>,
    _lock: Option<File>,
    id: String,
    bridge_ns: String,
    /// The root namespace's leg (`sl<pid>r<n>`), `None` for isolated labs.
    root_link: Option<String>,
    /// Created namespaces, bridge first; removed in reverse order.
    namespaces: Vec<String>,
    next_port: u32,
}

impl Lab {
    /// Creates the public segment and connects the root namespace to it at 198.51.100.1/24.
    /// Waits (up to 10 min) while another lab with a root leg exists on this machine.
    pub fn new() -> Result<Self, String> {
        Self::build(true)
    }

    /// Creates the public segment 198.51.100.0/24 with no leg in the root namespace: reach its
    /// hosts from inside ([`in_ns`], [`Host::command`]). Needs no lock; runs beside other labs.
    pub fn isolated() -> Result<Self, String> {
        Self::build(false)
    }

    fn build(root_leg: bool) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the lab needs root (ip netns, nft)".into());
        }
        let (guard, lock) = if root_leg {
            let guard = LAB_MUTEX.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (Some(guard), Some(machine_lock()?))
        } else {
            (None, None)
        };
        cleanup_stale_labs();
        let pid = std::process::id();
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("sl{pid}x{n}");
        let mut lab = Self {
            _guard: guard,
            _lock: lock,
            bridge_ns: format!("{id}-segment"),
            root_link: None,
            id,
            namespaces: Vec::new(),
            next_port: 0,
        };
        lab.add_ns(&lab.bridge_ns.clone())?;
        let br = lab.bridge_ns.clone();
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        if !root_leg {
            eprintln!("[lab] {}: public segment 198.51.100.0/24 in {br} (isolated, no root leg)", lab.id);
            return Ok(lab);
        }
        // Root leg: the root end keeps a unique name, the bridge end is a bridge port.
        let root_link = format!("sl{pid}r{n}");
        debug_assert!(root_link.len() <= 15);
        let port = lab.next_port_name();
        ip(&["link", "add", &root_link, "type", "veth", "peer", "name", &port, "netns", &br])?;
        lab.root_link = Some(root_link.clone());
        ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{ROOT_IP}/24"), "dev", &root_link])?;
        ip(&["link", "set", &root_link, "up"])?;
        eprintln!("[lab] {}: public segment 198.51.100.0/24 in {br}, root at {ROOT_IP} via {root_link}", lab.id);
        Ok(lab)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A host namespace `<id>-NAME` on the public segment at `ip`/24.
    pub fn add_host(&mut self, name: &str, ip_addr: Ipv4Addr) -> Result<Host, String> {
        check_public(ip_addr)?;
        let ns = format!("{}-{name}", self.id);
        self.add_ns(&ns)?;
        self.attach_to_bridge(&ns, "eth0")?;
        ip(&["-n", &ns, "addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        eprintln!("[lab] host {ns}: {ip_addr}");
        Ok(Host { ns, ip: ip_addr })
    }

    /// A NAT router `<id>-NAME` (WAN `wan_ip` on the public segment, LAN 10.0.`lan`.1/24) and a
    /// private host `<id>-NAME-in` at 10.0.`lan`.2 behind it. The router masquerades the LAN
    /// (port-restricted cone) and silently drops every new inbound connection on its WAN leg,
    /// both to itself and forwarded, as home routers do.
    pub fn add_nat_site(&mut self, name: &str, wan_ip: Ipv4Addr, lan: u8) -> Result<NatSite, String> {
        self.add_nat_site_with(name, wan_ip, lan, &nat_ruleset("restricted")?)
    }

    /// [`Lab::add_nat_site`] with the router's nft `ruleset` (its legs are `wan` and `lan`),
    /// e.g. [`nat_ruleset`] of another NAT type.
    pub fn add_nat_site_with(
        &mut self,
        name: &str,
        wan_ip: Ipv4Addr,
        lan: u8,
        ruleset: &str,
    ) -> Result<NatSite, String> {
        check_public(wan_ip)?;
        let rns = format!("{}-{name}", self.id);
        let hns = format!("{}-{name}-in", self.id);
        self.add_ns(&rns)?;
        self.add_ns(&hns)?;
        self.attach_to_bridge(&rns, "wan")?;
        ip(&["-n", &rns, "addr", "add", &format!("{wan_ip}/24"), "dev", "wan"])?;
        ip(&["-n", &rns, "link", "set", "wan", "up"])?;

        let router_lan = Ipv4Addr::new(10, 0, lan, 1);
        let host_ip = Ipv4Addr::new(10, 0, lan, 2);
        ip(&["link", "add", "lan", "netns", &rns, "type", "veth", "peer", "name", "eth0", "netns", &hns])?;
        ip(&["-n", &rns, "addr", "add", &format!("{router_lan}/24"), "dev", "lan"])?;
        ip(&["-n", &rns, "link", "set", "lan", "up"])?;
        ip(&["-n", &hns, "addr", "add", &format!("{host_ip}/24"), "dev", "eth0"])?;
        ip(&["-n", &hns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &hns, "route", "add", "default", "via", &router_lan.to_string()])?;

        // Forwarding is per namespace; /proc/sys/net inside `ip netns exec` is the router's.
        run("ip", &["netns", "exec", &rns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        run_with_stdin("ip", &["netns", "exec", &rns, "nft", "-f", "-"], Some(ruleset))?;
        eprintln!("[lab] NAT router {rns}: wan {wan_ip}, lan {router_lan}/24; private host {hns}: {host_ip}");
        Ok(NatSite { router: Host { ns: rns, ip: wan_ip }, host: Host { ns: hns, ip: host_ip } })
    }

    /// Addresses, routes and nft rules of every namespace, for failure reports.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for ns in &self.namespaces {
            out.push_str(&format!("== {ns}\n"));
            if let Ok(s) = ip(&["-n", ns, "-br", "addr"]) {
                out.push_str(&s);
            }
            if let Ok(s) = ip(&["-n", ns, "route"]) {
                out.push_str(&s);
            }
            if let Ok(s) = run("ip", &["netns", "exec", ns, "nft", "list", "ruleset"])
                && !s.trim().is_empty()
            {
                out.push_str(&s);
            }
        }
        out
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), String> {
        if self.namespaces.iter().any(|n| n == ns) {
            return Err(format!("namespace {ns} already exists in this lab (names must be unique)"));
        }
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn next_port_name(&mut self) -> String {
        let p = format!("p{}", self.next_port);
        self.next_port += 1;
        p
    }

    /// A veth from `ns` (named `ifname`) to a new port of the bridge.
    fn attach_to_bridge(&mut self, ns: &str, ifname: &str) -> Result<(), String> {
        let port = self.next_port_name();
        let br = self.bridge_ns.clone();
        ip(&["link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", &port, "netns", &br])?;
        ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_ns_processes(ns);
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("[lab] cleanup: {e}");
            }
        }
        // Deleting the bridge namespace destroyed the root leg's peer, and with it the leg;
        // delete it explicitly in case it survived.
        if let Some(link) = &self.root_link {
            let _ = ip(&["link", "del", link]);
        }
        let left: Vec<String> = list_netns().into_iter().filter(|n| n.starts_with(&format!("{}-", self.id))).collect();
        if left.is_empty() {
            eprintln!("[lab] {}: removed {} namespaces", self.id, self.namespaces.len());
        } else {
            eprintln!("[lab] {}: WARNING namespaces left behind: {left:?}", self.id);
        }
    }
}

/// Takes the machine-wide lab lock, waiting (bounded) while another process holds it.
fn machine_lock() -> Result<File, String> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(LAB_LOCK_FILE)
        .map_err(|e| format!("open {LAB_LOCK_FILE}: {e}"))?;
    let deadline = Instant::now() + LAB_LOCK_WAIT;
    let mut said = false;
    loop {
        // SAFETY: flock(2) on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if Instant::now() >= deadline {
            return Err(format!("another lab held {LAB_LOCK_FILE} for {LAB_LOCK_WAIT:?}"));
        }
        if !said {
            eprintln!("[lab] waiting for {LAB_LOCK_FILE} (another lab is running)");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `f` on a thread that has entered namespace `ns` (setns affects only that thread), e.g.
/// to bind a listener or connect a socket inside a lab host: sockets stay in the namespace
/// they were created in.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = format!("/run/netns/{ns}");
    let fd = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns(2) with an fd of a network namespace, on this thread only.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| format!("thread in {ns} panicked"))?
    })
}

/// The nft ruleset of a NAT router of type `nat_type` (`full-cone`, `restricted`, `symmetric`):
/// the output of `scripts/natlab.sh rules TYPE`, so tests and the hand-run lab share one copy.
/// Errors: bash missing, or an unknown type (the script's message).
pub fn nat_ruleset(nat_type: &str) -> Result<String, String> {
    run("bash", &[NATLAB_SCRIPT, "rules", nat_type])
}

/// `scripts/natlab.sh` of this checkout.
pub const NATLAB_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/natlab.sh");

fn check_public(addr: Ipv4Addr) -> Result<(), String> {
    let o = addr.octets();
    if o[..3] != PUBLIC_NET || o[3] <= 1 || o[3] == 255 {
        return Err(format!("{addr}: lab hosts live in 198.51.100.2-254 (198.51.100.1 is the root namespace)"));
    }
    Ok(())
}

/// Kills every process inside `ns`: SIGTERM, then SIGKILL for survivors after up to 3 s.
fn kill_ns_processes(ns: &str) {
    let pids = |ns: &str| -> Vec<i32> {
        ip(&["netns", "pids", ns])
            .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    };
    let first = pids(ns);
    if first.is_empty() {
        return;
    }
    for &pid in &first {
        // SAFETY: kill(2) on pids that `ip netns pids` reported inside our own namespace.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !pids(ns).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in pids(ns) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !pids(ns).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Names in `ip netns list` (its lines read `NAME` or `NAME (id: N)`).
pub fn list_netns() -> Vec<String> {
    ip(&["netns", "list"])
        .map(|s| s.lines().filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The pid in a lab name `sl<pid>x<n>-…` or root link `sl<pid>r<n>`.
fn lab_owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("sl")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    let is_ns = after.starts_with('x') && after.contains('-');
    let is_link = after.starts_with('r') && after[1..].chars().all(|c| c.is_ascii_digit()) && after.len() > 1;
    if digits.is_empty() || !(is_ns || is_link) {
        return None;
    }
    digits.parse().ok()
}

/// Removes namespaces and root links left by lab runs whose process no longer exists (a test
/// killed by SIGKILL cannot run its destructors).
fn cleanup_stale_labs() {
    // A zombie (state Z, not reaped yet) is gone too.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    for ns in list_netns() {
        if let Some(pid) = lab_owner_pid(&ns)
            && !alive(pid)
        {
            eprintln!("[lab] removing stale namespace {ns} (pid {pid} is gone)");
            kill_ns_processes(&ns);
            let _ = ip(&["netns", "del", &ns]);
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for line in links.lines() {
            // `N: NAME@PEER: <…>` or `N: NAME: <…>`
            let Some(name) = line.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            else {
                continue;
            };
            if let Some(pid) = lab_owner_pid(&name)
                && !alive(pid)
            {
                eprintln!("[lab] removing stale link {name} (pid {pid} is gone)");
                let _ = ip(&["link", "del", &name]);
            }
        }
    }
}

/// Polls a TCP connect from the root namespace to `addr` until it succeeds or `timeout` passes.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{addr} not reachable within {timeout:?}: {last}"))
}
