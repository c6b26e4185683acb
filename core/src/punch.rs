//! A hole-punch attempt as `sensor punch` stores it (table `punch_attempts`), prints it
//! (`--json`) and reports it: the verdict, the measured times and the optional Kaspa handshake
//! over the punched connection. The sensor's `p2p::punch::attempt` tracker produces
//! [`Finished`] from what the swarm reports; this module only holds and renders records.

use std::time::Duration;

use multiaddr::{Multiaddr, Protocol};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Label, reachability::Reachability, timestamp::format_timestamp};

/// How an attempt ended. The [`Label`](crate::Label) forms are the stored values and metric labels.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed,
    NoRelayConnection,
    Cancelled,
    Timeout,
}

/// The transport of the direct connection, or of the relay address when there is none.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    /// `quic` for an address with `/quic-v1` (or `/quic`), `tcp` for one with `/tcp/`, else
    /// `None`. A circuit address (`…/p2p-circuit/…`) is judged by its relay part.
    pub fn of(addr: &Multiaddr) -> Option<Transport> {
        let mut found = None;
        for p in addr.iter() {
            match p {
                Protocol::P2pCircuit => break,
                Protocol::QuicV1 | Protocol::Quic => found = Some(Transport::Quic),
                Protocol::Tcp(_) if found.is_none() => found = Some(Transport::Tcp),
                _ => {}
            }
        }
        found
    }
}

/// What one attempt measured, when it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub outcome: Outcome,
    pub transport: Transport,
    /// Direct dials we made after the relayed connection came up (one per DCUtR round we took
    /// part in); `None` when there was no relayed connection.
    pub dcutr_rounds: Option<u32>,
    /// First ping over the relayed connection.
    pub relayed_rtt: Option<Duration>,
    /// The ping that confirmed the direct connection.
    pub direct_rtt: Option<Duration>,
    /// From the relayed connection established to the (confirmed) direct connection established.
    pub time_to_direct: Option<Duration>,
    /// Remote address of the confirmed direct connection.
    pub direct_address: Option<Multiaddr>,
    /// From the start of the attempt to its verdict.
    pub duration: Duration,
    /// Why it did not succeed (the last error seen), or `None`.
    pub error: Option<String>,
}

/// One attempt as stored (table `punch_attempts`) and printed (`--json`).
#[derive(Debug, Clone, PartialEq)]
pub struct PunchAttempt {
    /// UUID v7 (time-ordered).
    pub attempt_id: Uuid,
    pub started_at: OffsetDateTime,
    pub sensor_id: String,
    /// The relay multiaddr used, with `/p2p/<relay id>`.
    pub relay: String,
    /// `punch.relay_node` (`""` when not set).
    pub relay_node: String,
    /// The target's PeerId (base58).
    pub target: String,
    /// 1-based number of this attempt for this target in this run.
    pub attempt: u32,
    /// The host's self-reachability (AutoNAT v1 and the address-mapping test) when the attempt
    /// ended.
    pub nat_verdict: Reachability,
    pub result: Finished,
    /// Kaspa over the direct connection (`punch.kaspa_handshake`, successes only).
    pub kaspa: Option<KaspaCheck>,
}

/// A Kaspa handshake (Version/Verack/Ready) over a `/p2psensor/kaspa/1` stream on the
/// hole-punched connection, bridged by the target to its Kaspa node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KaspaCheck {
    /// The node's user agent and network, and the time from the stream request to the node's
    /// Ready, ms.
    Done { user_agent: String, network: String, elapsed_ms: u64 },
    /// Why it failed (the target serves no bridge, the node is unreachable, a timeout, …).
    Failed(String),
}

/// Milliseconds with microsecond precision.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Whole milliseconds (saturating).
pub fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl PunchAttempt {
    /// The `--json` line: one object, keys as documented in `docs/punch-relay.md` ("sensor punch").
    pub fn to_json(&self) -> Value {
        let r = &self.result;
        json!({
            "event": "attempt",
            "attempt_id": self.attempt_id.to_string(),
            "started_at": format_timestamp(self.started_at),
            "sensor_id": self.sensor_id,
            "relay": self.relay,
            "relay_node": self.relay_node,
            "target": self.target,
            "attempt": self.attempt,
            "transport": r.transport.as_str(),
            "outcome": r.outcome.as_str(),
            "dcutr_rounds": r.dcutr_rounds,
            "relayed_rtt_ms": r.relayed_rtt.map(millis),
            "direct_rtt_ms": r.direct_rtt.map(millis),
            "time_to_direct_ms": r.time_to_direct.map(whole_millis),
            "direct_address": r.direct_address.as_ref().map(ToString::to_string),
            "duration_ms": whole_millis(r.duration),
            "nat_verdict": self.nat_verdict.as_str(),
            "error": r.error,
            "kaspa_handshake_ms": match &self.kaspa { Some(KaspaCheck::Done { elapsed_ms, .. }) => Some(*elapsed_ms), _ => None },
            "kaspa_user_agent": match &self.kaspa { Some(KaspaCheck::Done { user_agent, .. }) => Some(user_agent.as_str()), _ => None },
            "kaspa_network": match &self.kaspa { Some(KaspaCheck::Done { network, .. }) => Some(network.as_str()), _ => None },
            "kaspa_error": match &self.kaspa { Some(KaspaCheck::Failed(e)) => Some(e.as_str()), _ => None },
        })
    }

    /// A one-line human summary (stdout without `--json`).
    pub fn summary_line(&self) -> String {
        let r = &self.result;
        let mut line = format!(
            "target={} attempt={} transport={} outcome={}",
            self.target,
            self.attempt,
            r.transport.as_str(),
            r.outcome.as_str()
        );
        if let Some(t) = r.time_to_direct {
            line.push_str(&format!(" time_to_direct_ms={}", whole_millis(t)));
        }
        if let Some(rtt) = r.direct_rtt {
            line.push_str(&format!(" direct_rtt_ms={:.3}", millis(rtt)));
        }
        if let Some(rtt) = r.relayed_rtt {
            line.push_str(&format!(" relayed_rtt_ms={:.3}", millis(rtt)));
        }
        line.push_str(&format!(" nat={}", self.nat_verdict.as_str()));
        match &self.kaspa {
            Some(KaspaCheck::Done { user_agent, elapsed_ms, .. }) => {
                line.push_str(&format!(" kaspa_handshake_ms={elapsed_ms} kaspa_user_agent={user_agent:?}"))
            }
            Some(KaspaCheck::Failed(e)) => line.push_str(&format!(" kaspa_error={e:?}")),
            None => {}
        }
        if let Some(e) = &r.error {
            line.push_str(&format!(" error={e:?}"));
        }
        line
    }
}
