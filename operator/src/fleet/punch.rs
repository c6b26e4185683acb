//! Hole-punch measurements in a fleet (docs/architecture.md): the relay's dialable address, the `punch`
//! sidecar, its `[punch]` section and the targets file. Pure.
//!
//! A fleet whose `spec.relayRef` names a RelayNode of its namespace gets, in every sensor pod, a
//! second container [`CONTAINER`] running `sensor punch --config /etc/p2p-sensor/sensor.toml`
//! (the sensor image). It holds a reservation on the relay and, every `holePunch.intervalSecs`
//! (default 300), attempts DCUtR with every other member of the fleet; the attempts reach the
//! RelayNode's `.status.holePunch` through the collector.
//!
//! **Discovery.** The operator tells the members about each other:
//!
//! 1. each sidecar pushes a report as sender `<pod>-punch` with the fleet as owner, whose
//!    `hole_punch.peer_id` is its own PeerId;
//! 2. the collector's fleet aggregate lists the valid PeerIds of the punch senders that reported
//!    within the report timeout and hold a reservation, sorted and de-duplicated
//!    ([`crate::collector::aggregate::punch_targets`]); the reconciler reads it at the status
//!    interval, so the list follows new reports at a bounded rate;
//! 3. the builder writes the list into the fleet ConfigMap's key [`TARGETS_KEY`]. The ConfigMap is
//!    mounted as a directory (no `subPath`), so the kubelet refreshes the file in running pods,
//!    and the sidecar re-reads it before every round. The key is not part of the pod template's
//!    config hash (which covers `sensor.toml` only), so a new or departed member never restarts a
//!    pod; only the ConfigMap is re-applied.
//!
//! **Relay address** ([`resolve_relay`]): the PeerId is the RelayNode's `.status.peerId` (the
//! relay controller writes it from the identity Secret before the relay pod even runs). The
//! address candidates are `spec.externalAddresses` when one of them is usable, else
//! `.status.multiaddrs` (what the relay reported). Usable: `/ip4|ip6/IP/tcp/PORT` or
//! `/ip4|ip6/IP/udp/PORT/quic-v1`, optionally ending in `/p2p/<that PeerId>`; DNS names (the
//! sensor cannot resolve them), unspecified, loopback, link-local and multicast IPs, port 0 and
//! a foreign `/p2p/` are skipped. The chosen one is the first by (public IP before private — RFC
//! 1918, CGNAT 100.64/10, IPv6 ULA —, TCP before QUIC, position in the list). Set
//! `spec.externalAddresses` on the RelayNode to choose explicitly.
//!
//! **No flapping.** The workload carries the address its sidecars were built with
//! ([`RELAY_ANNOTATION`]). While the relay's PeerId is unchanged but no candidate is usable
//! (after an operator restart the relay's `.status.multiaddrs` is empty until it reports again),
//! that address is kept instead of removing the sidecar and restarting every pod twice. Likewise
//! the reconciler leaves the ConfigMap (and the pods' targets) as it is while no punch client has
//! reported since the operator started and `sensor.toml` is unchanged.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use multiaddr::{Multiaddr, Protocol};
use sensor_core::config::PunchConfig;

use super::layout::{CONFIG_DIR, CONFIG_FILE, DATA_DIR, sidecar_env};
use crate::crd::{HolePunch, RelayNode, SensorFleet};
use crate::pod::{self, ContainerParams};
use crate::sensor_toml::unsigned;

/// Name of the sidecar container.
pub const CONTAINER: &str = "punch";
/// ConfigMap key (and file name under the config directory) of the targets list.
pub const TARGETS_KEY: &str = "punch-targets";
/// Port of the sidecar's `/metrics`, `/healthz`, `/readyz` (the listener has 9102).
pub const METRICS_PORT: i32 = 9103;
/// Name of that container port (and of the headless Service's port).
pub const METRICS_PORT_NAME: &str = "punch-metrics";
/// The sidecar's SQLite file on the data volume: its own, so that two processes never contend
/// for the listener's database.
pub const DATABASE_FILE: &str = "punch.sqlite";
/// The sidecar's libp2p key on the data volume: its PeerId survives restarts when the storage
/// does (HostPath, PersistentVolumeClaim).
pub const IDENTITY_FILE: &str = "punch_identity.key";
/// Workload annotation: the relay multiaddr the sidecars were built with.
pub const RELAY_ANNOTATION: &str = "p2psensor.dev/punch-relay";

/// The relay the sidecars use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchRelay {
    /// The RelayNode's name (`punch.relay_node`: reports attribute attempts to it).
    pub node: String,
    /// `/ip4|ip6/IP/tcp/PORT/p2p/ID` or `…/udp/PORT/quic-v1/p2p/ID`.
    pub multiaddr: String,
}

/// Everything the builders need to add hole punching to a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Punch {
    pub relay: PunchRelay,
    /// Base58 PeerIds of the fleet's punch clients, sorted and de-duplicated.
    pub targets: Vec<String>,
}

/// Why a fleet with `spec.relayRef` runs without the sidecar (a `Degraded` reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayProblem {
    /// No RelayNode of that name in the fleet's namespace.
    NotFound(String),
    /// The RelayNode has no valid `.status.peerId` yet.
    NotReady(String),
    /// The RelayNode has a PeerId but no usable ip4/ip6 address.
    AddressUnknown(String),
}

impl RelayProblem {
    /// The `Degraded` condition's reason (also the Event reason).
    pub fn reason(&self) -> &'static str {
        match self {
            RelayProblem::NotFound(_) => "RelayNotFound",
            RelayProblem::NotReady(_) => "RelayNotReady",
            RelayProblem::AddressUnknown(_) => "RelayAddressUnknown",
        }
    }

    /// The `Degraded` condition's message.
    pub fn message(&self) -> String {
        match self {
            RelayProblem::NotFound(relay) => {
                format!("spec.relayRef names RelayNode {relay:?}, which does not exist; no hole-punch measurements")
            }
            RelayProblem::NotReady(relay) => format!(
                "RelayNode {relay:?} has no PeerId in its status yet (identity not resolved); no hole-punch measurements"
            ),
            RelayProblem::AddressUnknown(relay) => format!(
                "RelayNode {relay:?} has no ip4/ip6 TCP or QUIC address in spec.externalAddresses or status.multiaddrs; \
                 no hole-punch measurements"
            ),
        }
    }
}

/// Resolves the relay named `name` (`relay` = the cached RelayNode, if any) into the address the
/// sidecars dial, by the rule in the module docs. `last_applied` is the workload's
/// [`RELAY_ANNOTATION`]: kept while the relay has the same PeerId but no usable address.
pub fn resolve_relay(
    name: &str,
    relay: Option<&RelayNode>,
    last_applied: Option<&str>,
) -> Result<PunchRelay, RelayProblem> {
    let relay = relay.ok_or_else(|| RelayProblem::NotFound(name.into()))?;
    let peer_id = relay
        .status
        .as_ref()
        .and_then(|s| s.peer_id.as_deref())
        .and_then(|id| libp2p_identity::PeerId::from_str(id).ok())
        .map(|id| id.to_string())
        .ok_or_else(|| RelayProblem::NotReady(name.into()))?;
    let spec_candidates = &relay.spec.external_addresses;
    let status_candidates = relay.status.as_ref().map(|s| s.multiaddrs.as_slice()).unwrap_or_default();
    let chosen = best_address(spec_candidates, &peer_id).or_else(|| best_address(status_candidates, &peer_id));
    let multiaddr = chosen
        .or_else(|| last_applied.and_then(|a| usable(a, &peer_id)).map(|(_, _, address)| address))
        .ok_or_else(|| RelayProblem::AddressUnknown(name.into()))?;
    Ok(PunchRelay { node: name.into(), multiaddr })
}

/// The best usable address of `candidates` for a relay with `peer_id`, with `/p2p/<peer_id>`.
fn best_address(candidates: &[String], peer_id: &str) -> Option<String> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, a)| usable(a, peer_id).map(|(scope, transport, address)| ((scope, transport, i), address)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, address)| address)
}

/// `(scope, transport, address with /p2p/<peer_id>)` of a usable candidate: scope 0 public, 1
/// private; transport 0 TCP, 1 QUIC. `None` when the sensor cannot or should not dial it.
fn usable(address: &str, peer_id: &str) -> Option<(u8, u8, String)> {
    let parsed = Multiaddr::from_str(address).ok()?;
    let mut protocols: Vec<Protocol<'_>> = parsed.iter().collect();
    if let Some(Protocol::P2p(id)) = protocols.last() {
        if id.to_string() != peer_id {
            return None;
        }
        protocols.pop();
    }
    let scope = match protocols.first()? {
        Protocol::Ip4(ip) => ipv4_scope(*ip)?,
        Protocol::Ip6(ip) => ipv6_scope(*ip)?,
        _ => return None,
    };
    let transport = match protocols.get(1..)? {
        [Protocol::Tcp(port)] if *port != 0 => 0,
        [Protocol::Udp(port), Protocol::QuicV1] if *port != 0 => 1,
        _ => return None,
    };
    let base: Multiaddr = protocols.into_iter().collect();
    Some((scope, transport, format!("{base}/p2p/{peer_id}")))
}

fn ipv4_scope(ip: Ipv4Addr) -> Option<u8> {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_link_local() || ip.is_multicast() || ip.is_broadcast() {
        return None;
    }
    let [a, b, ..] = ip.octets();
    let cgnat = a == 100 && (b & 0xc0) == 64;
    Some(u8::from(ip.is_private() || cgnat))
}

fn ipv6_scope(ip: Ipv6Addr) -> Option<u8> {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_unicast_link_local() {
        return None;
    }
    Some(u8::from(ip.is_unique_local()))
}

/// `[punch]` for `fleet` punching through `relay`. `listen` is left to the sensor's default
/// (TCP and QUIC on port 0 of every interface), which suits pods and host networking alike. The
/// relay's multiaddr was checked when it was resolved ([`resolve_relay`]).
pub fn apply(fleet: &SensorFleet, relay: &PunchRelay, punch: &mut PunchConfig) {
    let tuning = fleet.spec.hole_punch.clone().unwrap_or_default();
    punch.relay = relay.multiaddr.parse().ok();
    punch.relay_node = relay.node.clone();
    punch.targets_file = Some(PathBuf::from(format!("{CONFIG_DIR}/{TARGETS_KEY}")));
    punch.interval_secs = unsigned(Some(tuning.interval_secs), punch.interval_secs);
    punch.attempts = unsigned(tuning.attempts, punch.attempts);
    punch.timeout_secs = unsigned(tuning.timeout_secs, punch.timeout_secs);
    punch.identity_file = Some(PathBuf::from(format!("{DATA_DIR}/{IDENTITY_FILE}")));
}

/// The targets file: a comment naming the fleet, then one PeerId per line.
pub fn render_targets(namespace: &str, name: &str, targets: &[String]) -> String {
    let mut out = format!(
        "# Hole-punch targets of SensorFleet {namespace}/{name}: the PeerIds of its punch clients, one per line.\n\
         # Maintained by p2p-sensor-operator from the collector's reports; edits are overwritten.\n"
    );
    for target in targets {
        out.push_str(target);
        out.push('\n');
    }
    out
}

/// The sidecar's resources when `holePunch.resources` is absent: requests 10m CPU and 32Mi
/// memory, limit 128Mi memory.
pub fn default_resources() -> ResourceRequirements {
    let quantity = |q: &str| Quantity(q.into());
    ResourceRequirements {
        requests: Some([("cpu".to_string(), quantity("10m")), ("memory".to_string(), quantity("32Mi"))].into()),
        limits: Some([("memory".to_string(), quantity("128Mi"))].into()),
        ..ResourceRequirements::default()
    }
}

/// The `punch` container of `fleet`'s pods: same image, configuration and data volume as the
/// listener, PodSecurity "restricted" like it, metrics on [`METRICS_PORT`]
/// (`SENSOR_METRICS_LISTEN`), its own database (`SENSOR_STORAGE_PATH`). Liveness probes
/// `/healthz`; there is no readiness probe, because `sensor punch` is ready only while it holds a
/// reservation, and a relay outage must not take the sensor out of its Services.
pub fn sidecar(fleet: &SensorFleet, image: String) -> Container {
    let HolePunch { resources, .. } = fleet.spec.hole_punch.clone().unwrap_or_default();
    let mut container = pod::container(ContainerParams {
        name: CONTAINER,
        image,
        pull_policy: fleet.spec.image_pull_policy,
        args: vec!["punch".into(), "--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")],
        ports: vec![(METRICS_PORT_NAME, METRICS_PORT, "TCP", false)],
        env: sidecar_env(METRICS_PORT, DATABASE_FILE),
        mounts: vec![("config", CONFIG_DIR, true), ("data", DATA_DIR, false)],
        resources: Some(resources.unwrap_or_else(default_resources)),
        health_port: Some(METRICS_PORT_NAME),
    });
    container.readiness_probe = None;
    container
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RelayNodeStatus;

    const RELAY: &str = "12D3KooWFMiQUpmYgMd4rK23Q6VgdaNPWMJ9FuNin41qA9q2AGAu";
    const OTHER: &str = "12D3KooW9tHTtS3inCZiYykw4u5G4frbjVFqhkmJX12gSNCVeH3e";

    fn relay(external: &[&str], peer_id: Option<&str>, multiaddrs: &[&str]) -> RelayNode {
        let mut relay: RelayNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "p2psensor.dev/v1alpha1", "kind": "RelayNode",
            "metadata": {"name": "edge", "namespace": "lab"},
            "spec": {"externalAddresses": external},
        }))
        .unwrap();
        relay.status = Some(RelayNodeStatus {
            peer_id: peer_id.map(str::to_string),
            multiaddrs: multiaddrs.iter().map(|a| a.to_string()).collect(),
            ..RelayNodeStatus::default()
        });
        relay
    }

    fn resolve(relay: &RelayNode) -> Result<String, &'static str> {
        resolve_relay("edge", Some(relay), None).map(|r| r.multiaddr).map_err(|p| p.reason())
    }

    #[test]
    fn a_missing_relay_or_peer_id_is_a_problem() {
        assert_eq!(resolve_relay("edge", None, None), Err(RelayProblem::NotFound("edge".into())));
        let addresses = ["/ip4/203.0.113.7/tcp/4001"];
        assert_eq!(resolve(&relay(&addresses, None, &[])), Err("RelayNotReady"));
        assert_eq!(resolve(&relay(&addresses, Some("not-a-peer-id"), &[])), Err("RelayNotReady"));
        assert_eq!(resolve(&relay(&[], Some(RELAY), &[])), Err("RelayAddressUnknown"));
        let mut no_status = relay(&addresses, None, &[]);
        no_status.status = None;
        assert_eq!(resolve(&no_status), Err("RelayNotReady"));
    }

    #[test]
    fn external_addresses_win_and_tcp_is_preferred() {
        let r = relay(
            &["/dns4/relay.example/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1", "/ip4/203.0.113.7/tcp/4001"],
            Some(RELAY),
            &["/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWFMiQUpmYgMd4rK23Q6VgdaNPWMJ9FuNin41qA9q2AGAu"],
        );
        assert_eq!(resolve(&r), Ok(format!("/ip4/203.0.113.7/tcp/4001/p2p/{RELAY}")));
        // QUIC only: QUIC.
        let quic = relay(&["/ip6/2001:db8::7/udp/4001/quic-v1"], Some(RELAY), &[]);
        assert_eq!(resolve(&quic), Ok(format!("/ip6/2001:db8::7/udp/4001/quic-v1/p2p/{RELAY}")));
        // Only DNS in the spec: the status is used instead.
        let dns = relay(&["/dns4/relay.example/tcp/4001"], Some(RELAY), &["/ip4/198.51.100.1/tcp/4001"]);
        assert_eq!(resolve(&dns), Ok(format!("/ip4/198.51.100.1/tcp/4001/p2p/{RELAY}")));
    }

    #[test]
    fn status_addresses_prefer_public_then_tcp_and_skip_the_unusable() {
        let r = relay(
            &[],
            Some(RELAY),
            &[
                "/ip4/10.0.0.5/tcp/4001",
                "/ip4/127.0.0.1/tcp/4001",
                "/ip4/0.0.0.0/tcp/4001",
                "/ip4/169.254.1.1/tcp/4001",
                &format!("/ip4/192.0.2.1/tcp/4001/p2p/{OTHER}"),
                "/ip4/198.51.100.1/udp/4001/quic-v1",
                "/ip4/198.51.100.2/tcp/4001/p2p-circuit",
                "/ip4/198.51.100.3/tcp/0",
            ],
        );
        assert_eq!(resolve(&r), Ok(format!("/ip4/198.51.100.1/udp/4001/quic-v1/p2p/{RELAY}")), "public QUIC");
        let private = relay(&[], Some(RELAY), &["/ip4/100.64.0.1/udp/4001/quic-v1", "/ip4/172.16.0.9/tcp/4001"]);
        assert_eq!(resolve(&private), Ok(format!("/ip4/172.16.0.9/tcp/4001/p2p/{RELAY}")), "private: TCP first");
        let ula = relay(&[], Some(RELAY), &["/ip6/fd00::1/tcp/4001", "/ip6/fe80::1/tcp/4001", "/ip6/::1/tcp/1"]);
        assert_eq!(resolve(&ula), Ok(format!("/ip6/fd00::1/tcp/4001/p2p/{RELAY}")));
    }

    #[test]
    fn the_last_applied_address_is_kept_while_the_peer_id_is_the_same() {
        let r = relay(&[], Some(RELAY), &[]);
        let applied = format!("/ip4/198.51.100.1/tcp/4001/p2p/{RELAY}");
        let kept = resolve_relay("edge", Some(&r), Some(&applied)).unwrap();
        assert_eq!(kept, PunchRelay { node: "edge".into(), multiaddr: applied });
        let foreign = format!("/ip4/198.51.100.1/tcp/4001/p2p/{OTHER}");
        assert_eq!(
            resolve_relay("edge", Some(&r), Some(&foreign)),
            Err(RelayProblem::AddressUnknown("edge".into())),
            "another identity: its address is not this relay's"
        );
        // A current address replaces the applied one.
        let moved = relay(&["/ip4/203.0.113.9/tcp/4001"], Some(RELAY), &[]);
        let applied = format!("/ip4/198.51.100.1/tcp/4001/p2p/{RELAY}");
        assert_eq!(
            resolve_relay("edge", Some(&moved), Some(&applied)).unwrap().multiaddr,
            format!("/ip4/203.0.113.9/tcp/4001/p2p/{RELAY}")
        );
    }

    #[test]
    fn problems_have_distinct_reasons_and_name_the_relay() {
        for problem in [
            RelayProblem::NotFound("edge".into()),
            RelayProblem::NotReady("edge".into()),
            RelayProblem::AddressUnknown("edge".into()),
        ] {
            assert!(problem.message().contains("\"edge\""), "{problem:?}");
            assert!(problem.reason().starts_with("Relay"), "{problem:?}");
        }
    }

    #[test]
    fn the_targets_file_lists_one_peer_id_per_line_after_comments() {
        let text = render_targets("lab", "f", &[OTHER.into(), RELAY.into()]);
        let ids: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        assert_eq!(ids, [OTHER, RELAY]);
        assert!(text.starts_with("# Hole-punch targets of SensorFleet lab/f"));
        assert!(render_targets("lab", "f", &[]).lines().all(|l| l.starts_with('#')));
    }
}
