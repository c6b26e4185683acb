//! The real `sensor crawl` binary against real kaspad 2.1.0 devnet nodes in a network-namespace
//! lab (issue 5, "Prove it"; docs/natlab.md). Needs root, `ip`/`nft` and kaspad 2.1.0;
//! `scripts/test.sh` runs this `#[ignore]`d test.
//!
//! The network: five public nodes on 198.51.100.41–45, started one after another, each
//! `--addpeer`-ing the one before (a chain: k5 → k4 → … → k1), so only gossip tells the seed's
//! neighbours about the rest; a kaspad behind a NAT router (WAN 198.51.100.21, it dials k5 but
//! cannot be dialled); an address with nothing listening (198.51.100.46); and a simnet node
//! (198.51.100.47, the wrong network). The crawler, on 198.51.100.9, is seeded with k5 and the
//! three unreachable addresses. It must find k1–k4 through gossip, handshake with all five,
//! classify the others (`timeout`, `refused`, `wrong_network`), record who gossiped whom, and
//! agree with its SQLite store.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::ensure;
use support::kaspad::{self, Kaspad, KaspadSpec, Net};
use support::netns::{Host, Lab};
use support::process::NsProcess;

const CRAWLER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const CHAIN: [Ipv4Addr; 5] = [
    Ipv4Addr::new(198, 51, 100, 41),
    Ipv4Addr::new(198, 51, 100, 42),
    Ipv4Addr::new(198, 51, 100, 43),
    Ipv4Addr::new(198, 51, 100, 44),
    Ipv4Addr::new(198, 51, 100, 45),
];
const NAT_WAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);
const DOWN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 46);
const SIMNET_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 47);
/// Bound of the crawl process (its own `--max-duration-secs` is lower).
const CRAWL_BOUND: Duration = Duration::from_secs(90);

/// Field order is drop order: processes, then the lab (which removes its namespaces), then the
/// temp dir.
struct Ctx {
    crawler: Option<NsProcess>,
    kaspads: Vec<Kaspad>,
    lab: Option<Lab>,
    dir: tempfile::TempDir,
}

impl Ctx {
    fn report(&mut self) {
        eprintln!("\n========== crawl lab failure report (temp dir {}) ==========", self.dir.path().display());
        if let Some(c) = self.crawler.as_mut() {
            eprintln!("{}", c.report(80));
        }
        for k in &mut self.kaspads {
            eprintln!("{}", k.process.report(20));
        }
        if let Some(lab) = &self.lab {
            eprintln!("----- lab -----\n{}", lab.describe());
        }
        eprintln!("========== end of crawl lab failure report ==========\n");
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
        }
    }
}

fn devnet(ip: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(ip, Net::Devnet.p2p_port())
}

#[test]
#[ignore = "needs root, network namespaces and kaspad 2.1.0; run by scripts/test.sh"]
fn crawler_maps_a_real_kaspad_lab_network_from_one_seed() {
    let kaspad_bin = kaspad::find_kaspad().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::Builder::new().prefix("sensor-crawl-lab-").tempdir().expect("temp dir");
    let mut ctx = Ctx { crawler: None, kaspads: Vec::new(), lab: None, dir };
    if let Err(e) = scenario(&mut ctx, &kaspad_bin) {
        panic!("crawl lab failed: {e}");
    }
    let id = ctx.lab.as_ref().map(|l| l.id().to_owned()).unwrap_or_default();
    drop(ctx);
    let left: Vec<String> = support::netns::list_netns().into_iter().filter(|n| n.starts_with(&id)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

fn scenario(ctx: &mut Ctx, kaspad_bin: &Path) -> Result<(), String> {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[crawl-lab +{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let dir = ctx.dir.path().to_path_buf();

    let mut lab = Lab::isolated()?;
    let crawler_host = lab.add_host("crawler", CRAWLER_IP)?;
    let chain_hosts: Vec<Host> =
        CHAIN.iter().enumerate().map(|(i, ip)| lab.add_host(&format!("k{}", i + 1), *ip)).collect::<Result<_, _>>()?;
    let nat = lab.add_nat_site("knat", NAT_WAN_IP, 1)?;
    lab.add_host("down", DOWN_IP)?;
    let simnet_host = lab.add_host("ksim", SIMNET_IP)?;
    ctx.lab = Some(lab);
    step("lab built");

    // The chain, one node at a time: each dials the previous one and asks it for addresses when
    // the connection is up, so the last node's book holds every earlier node.
    for (i, host) in chain_hosts.iter().enumerate() {
        let add_peers = if i == 0 { Vec::new() } else { vec![SocketAddr::V4(devnet(CHAIN[i - 1]))] };
        let spec = KaspadSpec { net: Net::Devnet, listen: devnet(CHAIN[i]), add_peers, log_level: None };
        let mut node = Kaspad::spawn(kaspad_bin, &format!("k{}", i + 1), host, &dir, &spec)?;
        node.wait_listening(host, Duration::from_secs(60))?;
        if i > 0 {
            node.wait_log(
                &format!("P2P Connected to outgoing peer {}", devnet(CHAIN[i - 1])),
                Duration::from_secs(60),
            )?;
        }
        ctx.kaspads.push(node);
    }
    step("chain k1 ← k2 ← k3 ← k4 ← k5 connected");
    let nat_spec = KaspadSpec {
        net: Net::Devnet,
        listen: devnet(nat.host.ip),
        add_peers: vec![SocketAddr::V4(devnet(CHAIN[4]))],
        log_level: None,
    };
    let mut nat_node = Kaspad::spawn(kaspad_bin, "knat", &nat.host, &dir, &nat_spec)?;
    nat_node.wait_log(&format!("P2P Connected to outgoing peer {}", devnet(CHAIN[4])), Duration::from_secs(60))?;
    ctx.kaspads.push(nat_node);
    let simnet_spec = KaspadSpec {
        net: Net::Simnet,
        listen: SocketAddrV4::new(SIMNET_IP, Net::Devnet.p2p_port()),
        add_peers: Vec::new(),
        log_level: None,
    };
    let mut simnet = Kaspad::spawn(kaspad_bin, "ksim", &simnet_host, &dir, &simnet_spec)?;
    simnet.wait_listening(&simnet_host, Duration::from_secs(60))?;
    ctx.kaspads.push(simnet);
    step("NAT'd node connected to k5, simnet node listening");

    // The crawl, seeded with k5 and the three addresses that cannot be crawled.
    let data_dir = dir.join("crawler");
    let output = dir.join("crawl.json");
    let seeds = [devnet(CHAIN[4]), devnet(NAT_WAN_IP), devnet(DOWN_IP), devnet(SIMNET_IP)];
    let mut args: Vec<String> = vec!["crawl".into(), "--network".into(), "devnet".into()];
    for seed in seeds {
        args.extend(["--seed".into(), seed.to_string()]);
    }
    args.extend(
        [
            "--allow-private-targets",
            "--timeout-ms",
            "3000",
            "--max-duration-secs",
            "60",
            "--output",
            &output.display().to_string(),
            "--data-dir",
            &data_dir.display().to_string(),
        ]
        .map(String::from),
    );
    let sensor_bin = PathBuf::from(env!("CARGO_BIN_EXE_sensor"));
    let env = [("RUST_LOG", "info"), ("NO_COLOR", "1")];
    let crawler = ctx.crawler.insert(NsProcess::spawn(
        "crawler",
        &crawler_host.ns,
        &sensor_bin,
        &args,
        &env,
        &dir.join("crawler.log"),
    )?);
    let status =
        crawler.wait_timeout(CRAWL_BOUND).ok_or_else(|| format!("the crawl did not end within {CRAWL_BOUND:?}"))?;
    ensure(status.success(), || format!("sensor crawl exited with {status}"))?;
    step("crawl finished");

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&output).map_err(|e| format!("{output:?}: {e}"))?)
        .map_err(|e| format!("{output:?} is not JSON: {e}"))?;
    let nodes: BTreeMap<String, &Value> = doc["nodes"]
        .as_array()
        .ok_or("no nodes array")?
        .iter()
        .map(|n| (n["address"].as_str().unwrap_or_default().to_owned(), n))
        .collect();

    // Every chain node: found (k1–k4 only through gossip) and reachable, with kaspad's Version.
    for ip in CHAIN {
        let address = devnet(ip).to_string();
        let node = nodes.get(&address).ok_or_else(|| format!("{address} not found; nodes: {:?}", nodes.keys()))?;
        ensure(node["reachable"] == true, || format!("{address} should be reachable: {node}"))?;
        ensure(node["protocol_version"] == 11, || format!("{address}: protocol 11: {node}"))?;
        ensure(node["user_agent"].as_str().is_some_and(|ua| ua.contains("kaspad:2.1.0")), || {
            format!("{address}: kaspad's user agent: {node}")
        })?;
        ensure(node["peer_id"].as_str().is_some_and(|id| id.len() == 32), || format!("{address}: peer id: {node}"))?;
    }
    // The three that cannot be crawled, each with its error class.
    for (ip, class) in [(NAT_WAN_IP, "timeout"), (DOWN_IP, "refused"), (SIMNET_IP, "wrong_network")] {
        let address = devnet(ip).to_string();
        let node = nodes.get(&address).ok_or_else(|| format!("{address} not in the output"))?;
        ensure(node["reachable"] == false, || format!("{address} must be unreachable: {node}"))?;
        ensure(node["error_class"] == class, || format!("{address}: error class {class}: {node}"))?;
    }
    // Nothing outside the lab was visited.
    for address in nodes.keys() {
        let ip: SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
        let in_lab = match ip.ip() {
            std::net::IpAddr::V4(v4) => v4.octets()[..3] == [198, 51, 100] || v4.octets()[0] == 10,
            std::net::IpAddr::V6(_) => false,
        };
        ensure(in_lab, || format!("{address} is not a lab address"))?;
    }

    // Edges: who gossiped whom. Every chain node but the seed was learned from a visited,
    // reachable node, and only reachable nodes gossip.
    let edges: BTreeSet<(String, String)> = doc["edges"]
        .as_array()
        .ok_or("no edges array")?
        .iter()
        .map(|e| (e["from"].as_str().unwrap_or_default().to_owned(), e["to"].as_str().unwrap_or_default().to_owned()))
        .collect();
    for ip in &CHAIN[..4] {
        let to = devnet(*ip).to_string();
        ensure(edges.iter().any(|(_, t)| *t == to), || format!("no edge leads to {to}: {edges:?}"))?;
    }
    for (from, to) in &edges {
        ensure(nodes.get(from).is_some_and(|n| n["reachable"] == true), || {
            format!("edge from {from} (not reachable)")
        })?;
        ensure(nodes.contains_key(to), || format!("edge to {to}, which is not a node"))?;
    }
    let seed = devnet(CHAIN[4]).to_string();
    ensure(edges.contains(&(seed.clone(), devnet(CHAIN[3]).to_string())), || {
        format!("k5 dialled k4, so it gossips k4: {edges:?}")
    })?;

    // The store agrees with the output.
    let db = rusqlite::Connection::open(data_dir.join("sensor.sqlite")).map_err(|e| e.to_string())?;
    let q = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(|e| format!("{sql}: {e}"));
    ensure(q("SELECT count(*) FROM crawls WHERE finished_at IS NOT NULL")? == 1, || "one finished crawl".into())?;
    ensure(q("SELECT count(*) FROM crawl_visits")? == nodes.len() as i64, || "a visit row per node".into())?;
    ensure(q("SELECT count(*) FROM crawl_visits WHERE reachable = 1")? >= CHAIN.len() as i64, || {
        "every chain node reachable in SQLite".into()
    })?;
    ensure(q("SELECT count(*) FROM crawl_edges")? == edges.len() as i64, || "an edge row per edge".into())?;
    let reachable_in_json = nodes.values().filter(|n| n["reachable"] == true).count() as i64;
    ensure(q("SELECT reachable FROM crawls")? == reachable_in_json, || "crawls.reachable = reachable nodes".into())?;
    step(&format!(
        "{} nodes, {} edges, {reachable_in_json} reachable; output and store agree",
        nodes.len(),
        edges.len()
    ));
    Ok(())
}
