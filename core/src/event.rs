//! The sensor's unit of record: one [`Event`] per inbound connection attempt and one per verdict.
//!
//! Events are what the store persists, what exporters ship and what reports summarise. Every
//! enum here has a stable snake_case string form ([`Label::as_str`]) that is the stored value and
//! the metric label; these strings are part of the data format.

use std::net::IpAddr;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Label,
    connection::RejectReason,
    verdict::{Classification, VerdictReason},
};

/// Which side opened the connection the event is about: `inbound` / `outbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Direction {
    /// The peer connected to the sensor.
    Inbound,
    /// The sensor dialled the peer (dial-back probe).
    Outbound,
}

/// What the event records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// An inbound connection completed the Kaspa handshake and was kept.
    Accepted,
    /// An inbound connection was refused or failed before it was kept.
    Rejected(RejectReason),
    /// A classification verdict for a peer (after a dial-back probe, or from the verdict cache).
    Verdict { classification: Classification, reason: VerdictReason },
}

impl EventKind {
    /// `connection` for accepted/rejected connections, `verdict` for classifications.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Accepted | Self::Rejected(_) => "connection",
            Self::Verdict { .. } => "verdict",
        }
    }

    /// `accepted` / `rejected` for connection events, `None` for verdicts.
    pub fn result(&self) -> Option<&'static str> {
        match self {
            Self::Accepted => Some("accepted"),
            Self::Rejected(_) => Some("rejected"),
            Self::Verdict { .. } => None,
        }
    }

    /// The closed-enum reason: the rejection reason, the verdict reason, or `handshake_completed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Accepted => "handshake_completed",
            Self::Rejected(reason) => reason.as_str(),
            Self::Verdict { reason, .. } => reason.as_str(),
        }
    }

    /// The classification for verdict events.
    pub fn classification(&self) -> Option<Classification> {
        match self {
            Self::Verdict { classification, .. } => Some(*classification),
            _ => None,
        }
    }
}

/// What the peer told us about itself in its `Version` message (kaspa-p2p-lib `VersionMessage`),
/// after validation: `peer_id` is exactly 16 bytes, the user agent is at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerInfo {
    /// The peer's 16-byte Kaspa peer id, lower-case hex (32 chars).
    pub peer_id: Option<String>,
    pub protocol_version: Option<u32>,
    pub user_agent: Option<String>,
    /// Network name as sent by the peer (e.g. `kaspa-mainnet`).
    pub network: Option<String>,
    /// `Version.address` as `IP:PORT`, when the peer advertised one.
    pub advertised_address: Option<String>,
}

/// Facts about a dial-back probe carried by verdict events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeInfo {
    /// The `IP:PORT` that was dialled (always the peer's source IP).
    pub target: Option<String>,
    /// Wall time of all attempts together, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Number of dial attempts made; 0 when the verdict came from the cache or no probe ran.
    pub attempts: u32,
    /// The last attempt's error text, when it failed.
    pub error: Option<String>,
}

/// One stored record. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// UUID v7: time-ordered, so sorting by id sorts by creation time.
    pub event_id: Uuid,
    /// When the event happened, UTC (stored as RFC 3339).
    pub timestamp: OffsetDateTime,
    pub sensor_id: String,
    pub kind: EventKind,
    pub direction: Direction,
    /// The connection's source IP (inbound) or the dialled IP (outbound).
    pub peer_ip: IpAddr,
    pub peer_port: u16,
    pub peer: PeerInfo,
    pub probe: ProbeInfo,
}

impl Event {
    /// A new event stamped now with a fresh UUID v7.
    pub fn now(sensor_id: &str, kind: EventKind, direction: Direction, peer_ip: IpAddr, peer_port: u16) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            timestamp: OffsetDateTime::now_utc(),
            sensor_id: sensor_id.to_owned(),
            kind,
            direction,
            peer_ip,
            peer_port,
            peer: PeerInfo::default(),
            probe: ProbeInfo::default(),
        }
    }
}
