//! The classification decision, as pure functions (docs/classification.md).
//!
//! * **Public**: a dial-back to the peer's *source IP* at its advertised port (the network's
//!   default port when none) received the peer's `Version` with the same 16-byte peer id as the
//!   inbound connection. A completed handshake is the usual proof; a matching `Version` alone also
//!   counts, because kaspad closes a second connection that reuses a peer id after
//!   Version/Verack — after it has already sent its own `Version` (verified against kaspad 2.1.0).
//! * **Private**: every one of at least `min_attempts` attempts was refused, timed out, failed
//!   before a `Version` arrived, or reached a *different* node.
//! * **Unknown**: no probe could decide, with a reason (queue full, private source, …).
//!
//! Nothing here does I/O; [`super::probe`] performs the attempts and feeds their
//! [`AttemptOutcome`]s to [`decide`].

use std::net::{IpAddr, SocketAddr};

use kaspa_utils::networking::IpAddress;

/// The three verdicts. Stored and exported as `public` / `private` / `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Classification {
    Public,
    Private,
    Unknown,
}

/// Why a verdict was reached: a closed set, stored as snake_case and used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum VerdictReason {
    /// Public: the dial-back completed Version/Verack/Ready and the peer id matched.
    HandshakeVerified,
    /// Public: the dial-back received a `Version` with the matching peer id, but the handshake
    /// did not complete (kaspad closes duplicate-id connections after Version/Verack).
    VersionVerified,
    /// Private: every attempt was refused (TCP RST / ECONNREFUSED).
    Refused,
    /// Private: the last attempt timed out (connect or Version).
    Timeout,
    /// Private: the dialled address answered with another node's peer id.
    DifferentNode,
    /// Private: something answered but no Kaspa `Version` arrived (reset, reject, garbage).
    HandshakeFailed,
    /// Unknown: the probe queue was full; the peer was not probed.
    QueueFull,
    /// Unknown: the source IP is not publicly routable and lab mode is off.
    PrivateSource,
    /// Unknown: no usable target (port 0, unspecified IP).
    InvalidAddress,
    /// Unknown: the sensor was shutting down before the probe finished.
    ShuttingDown,
}

impl VerdictReason {
    /// The classification this reason belongs to; every reason maps to exactly one.
    pub fn classification(self) -> Classification {
        match self {
            Self::HandshakeVerified | Self::VersionVerified => Classification::Public,
            Self::Refused | Self::Timeout | Self::DifferentNode | Self::HandshakeFailed => Classification::Private,
            Self::QueueFull | Self::PrivateSource | Self::InvalidAddress | Self::ShuttingDown => {
                Classification::Unknown
            }
        }
    }
}

/// What one dial-back attempt observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A `Version` arrived. `remote_id` is its peer id (hex); `completed` tells whether
    /// Verack and Ready followed.
    Version { remote_id: String, completed: bool },
    /// The TCP connection was refused.
    Refused,
    /// Connect or handshake exceeded the probe timeout.
    Timeout,
    /// The connection failed before a `Version` arrived; the text is the error.
    Failed(String),
}

/// The result of [`decide`]: a final verdict, or "make another attempt".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Final(VerdictReason),
    Retry,
}

/// Decides after each attempt. `attempts` are in order; `expected_id` is the inbound peer's id
/// (hex). A matching `Version` is public at once; otherwise the probe retries until
/// `min_attempts` (at least 2, docs/classification.md) have failed, and the last failure names the reason.
pub fn decide(expected_id: &str, attempts: &[AttemptOutcome], min_attempts: u32) -> Decision {
    if let Some(completed) = attempts.iter().find_map(|a| match a {
        AttemptOutcome::Version { remote_id, completed } if remote_id == expected_id => Some(*completed),
        _ => None,
    }) {
        return Decision::Final(if completed {
            VerdictReason::HandshakeVerified
        } else {
            VerdictReason::VersionVerified
        });
    }
    let needed = min_attempts.max(2) as usize;
    match attempts.last() {
        Some(last) if attempts.len() >= needed => Decision::Final(match last {
            AttemptOutcome::Version { .. } => VerdictReason::DifferentNode,
            AttemptOutcome::Refused => VerdictReason::Refused,
            AttemptOutcome::Timeout => VerdictReason::Timeout,
            AttemptOutcome::Failed(_) => VerdictReason::HandshakeFailed,
        }),
        _ => Decision::Retry,
    }
}

/// Chooses the one address a dial-back may target: the connection's **source IP** (never the
/// advertised IP, so a peer cannot make the sensor scan a third party) at the advertised port,
/// or `default_port` when the peer advertised none (or port 0).
///
/// Errors: [`VerdictReason::PrivateSource`] when the source is not publicly routable (kaspad's
/// own `IpAddress::is_publicly_routable` rule) and `allow_private_targets` is off;
/// [`VerdictReason::InvalidAddress`] for an unspecified/multicast source or a zero default port.
pub fn probe_target(
    source_ip: IpAddr,
    advertised_port: Option<u16>,
    default_port: u16,
    allow_private_targets: bool,
) -> Result<SocketAddr, VerdictReason> {
    let ip = source_ip.to_canonical();
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(VerdictReason::InvalidAddress);
    }
    if !allow_private_targets && !IpAddress::new(ip).is_publicly_routable() {
        return Err(VerdictReason::PrivateSource);
    }
    let port = advertised_port.filter(|p| *p != 0).unwrap_or(default_port);
    if port == 0 {
        return Err(VerdictReason::InvalidAddress);
    }
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Label;

    const ID: &str = "00112233445566778899aabbccddeeff";
    fn version(id: &str, completed: bool) -> AttemptOutcome {
        AttemptOutcome::Version { remote_id: id.into(), completed }
    }

    #[test]
    fn matching_version_is_public_on_first_attempt() {
        assert_eq!(decide(ID, &[version(ID, true)], 2), Decision::Final(VerdictReason::HandshakeVerified));
        assert_eq!(decide(ID, &[version(ID, false)], 2), Decision::Final(VerdictReason::VersionVerified));
        assert_eq!(
            decide(ID, &[AttemptOutcome::Timeout, version(ID, true)], 2),
            Decision::Final(VerdictReason::HandshakeVerified)
        );
    }

    #[test]
    fn failures_need_at_least_two_attempts_even_if_configured_lower() {
        assert_eq!(decide(ID, &[AttemptOutcome::Refused], 1), Decision::Retry);
        assert_eq!(decide(ID, &[AttemptOutcome::Refused], 3), Decision::Retry);
        assert_eq!(
            decide(ID, &[AttemptOutcome::Refused, AttemptOutcome::Refused], 2),
            Decision::Final(VerdictReason::Refused)
        );
        assert_eq!(decide(ID, &[AttemptOutcome::Refused, AttemptOutcome::Refused], 3), Decision::Retry);
    }

    #[test]
    fn last_failure_names_the_private_reason() {
        let other = "ffeeddccbbaa99887766554433221100";
        let cases = [
            (AttemptOutcome::Timeout, VerdictReason::Timeout),
            (version(other, true), VerdictReason::DifferentNode),
            (AttemptOutcome::Failed("reset".into()), VerdictReason::HandshakeFailed),
        ];
        for (last, reason) in cases {
            let d = decide(ID, &[AttemptOutcome::Refused, last], 2);
            assert_eq!(d, Decision::Final(reason));
            assert_eq!(reason.classification(), Classification::Private);
        }
    }

    #[test]
    fn no_attempts_means_retry() {
        assert_eq!(decide(ID, &[], 2), Decision::Retry);
    }

    #[test]
    fn target_is_always_the_source_ip() {
        let src: IpAddr = "8.8.4.4".parse().unwrap();
        assert_eq!(probe_target(src, Some(16112), 16111, false), Ok("8.8.4.4:16112".parse().unwrap()));
        assert_eq!(probe_target(src, None, 16111, false), Ok("8.8.4.4:16111".parse().unwrap()));
        assert_eq!(probe_target(src, Some(0), 16111, false), Ok("8.8.4.4:16111".parse().unwrap()));
        let mapped: IpAddr = "::ffff:8.8.4.4".parse().unwrap();
        assert_eq!(probe_target(mapped, None, 16111, false), Ok("8.8.4.4:16111".parse().unwrap()));
    }

    #[test]
    fn private_sources_need_lab_mode() {
        for ip in ["10.1.2.3", "192.168.1.1", "127.0.0.5", "198.51.100.41", "100.64.0.1", "fc00::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(probe_target(ip, None, 16111, false), Err(VerdictReason::PrivateSource), "{ip}");
            assert_eq!(probe_target(ip, None, 16111, true), Ok(SocketAddr::new(ip, 16111)));
        }
    }

    #[test]
    fn unusable_targets_are_invalid() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(probe_target(any, None, 16111, true), Err(VerdictReason::InvalidAddress));
        let mcast: IpAddr = "224.0.0.1".parse().unwrap();
        assert_eq!(probe_target(mcast, None, 16111, true), Err(VerdictReason::InvalidAddress));
        let ok: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(probe_target(ok, None, 0, false), Err(VerdictReason::InvalidAddress));
    }

    #[test]
    fn every_reason_round_trips_and_has_one_classification() {
        for &r in VerdictReason::ALL {
            assert_eq!(VerdictReason::parse(r.as_str()), Some(r));
        }
        let publics = VerdictReason::ALL.iter().filter(|r| r.classification() == Classification::Public).count();
        assert_eq!(publics, 2);
    }
}
