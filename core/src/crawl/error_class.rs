//! Errors are data (issue 5, item 2): every failed visit gets a normalised [`ErrorClass`], in the
//! spirit of Nebula's error classes. [`classify`] is pure; the texts it reads are those of
//! the sensor's `kaspa::wire::WireConnection` (tonic/hyper/io error chains) and of
//! kaspad's `Reject` reasons (kaspa-p2p-lib `ProtocolError` texts, e.g. "Network mismatch - local:
//! kaspa-mainnet, remote: kaspa-devnet", "P2P protocol version mismatch - local: 11, remote: 7").

use std::fmt;

/// The normalised outcome class of a failed visit. The snake_case names ([`Label::as_str`](crate::Label::as_str))
/// are metric labels (`sensor_crawl_visits_total{result}`) and stored in
/// `crawl_visits.error_class`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorClass {
    /// TCP connection refused (RST / ECONNREFUSED): nothing listens there.
    Refused,
    /// Connecting (TCP, HTTP/2 or opening the MessageStream) exceeded the visit timeout.
    Timeout,
    /// Connected, but Version/Verack/Ready did not complete within the visit timeout.
    HandshakeTimeout,
    /// The peer is on another Kaspa network (its `Version.network`, or its Reject says so).
    WrongNetwork,
    /// The peer rejected our protocol version: a Reject naming the version, or (heuristic) it
    /// hung up right after our `Version` without sending its own.
    ProtocolVersionRejected,
    /// The connection was reset (ECONNRESET, broken pipe, HTTP/2 reset).
    Reset,
    /// The peer sent a `Reject` with another reason (kept in the visit's error text).
    Rejected,
    /// The peer closed the connection or stream before the handshake completed, without a Reject.
    Closed,
    /// No route to the host or network (EHOSTUNREACH, ENETUNREACH).
    Unreachable,
    /// The peer's `Version` failed kaspa-p2p-lib's validation (e.g. an id not 16 bytes).
    InvalidVersion,
    /// An `Addresses` reply held more than kaspad's 2500-entry limit; nothing of it was kept.
    OversizedAddresses,
    /// Anything else (the error text is kept).
    Other,
}

/// What went wrong in one visit, by stage. The texts are the underlying error chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisitError {
    /// Opening the stream failed: `WireConnection::connect`'s error text (it names the step,
    /// e.g. "connect: transport error: tcp connect error: Connection refused (os error 111)").
    Connect(String),
    /// Version/Verack/Ready failed: `WireConnection::handshake`'s error text (including
    /// "rejected: REASON" for a Reject).
    Handshake(String),
    /// The peer's `Version` failed `read_peer_version`.
    InvalidVersion(String),
    /// The peer's `Version.network` is not ours.
    WrongNetwork { ours: String, theirs: String },
    /// An `Addresses` reply with `count` entries, above the 2500 limit.
    OversizedAddresses { count: usize },
}

impl fmt::Display for VisitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(t) => f.write_str(t),
            Self::Handshake(t) => write!(f, "handshake: {t}"),
            Self::InvalidVersion(t) => write!(f, "invalid version: {t}"),
            Self::WrongNetwork { ours, theirs } => write!(f, "wrong network: peer is on {theirs:?}, we crawl {ours:?}"),
            Self::OversizedAddresses { count } => {
                write!(f, "addresses reply of {count} entries exceeds {}", super::MAX_ADDRESSES_PER_REPLY)
            }
        }
    }
}

/// The class of `error`. Transport texts are matched case-insensitively on the phrases the OS
/// (`strerror`), hyper/h2 and tonic use; a Reject's reason on kaspa-p2p-lib's `ProtocolError`
/// texts. Unknown texts are [`ErrorClass::Other`], never a panic.
pub fn classify(error: &VisitError) -> ErrorClass {
    match error {
        VisitError::Connect(text) => transport_class(text).unwrap_or(if is_timeout(text) {
            ErrorClass::Timeout
        } else if is_closed(text) {
            ErrorClass::Closed
        } else {
            ErrorClass::Other
        }),
        VisitError::Handshake(text) => {
            let lower = text.to_ascii_lowercase();
            if let Some(reason) = reject_reason(&lower) {
                reject_class(reason)
            } else if let Some(class) = transport_class(&lower) {
                class
            } else if is_timeout(&lower) {
                ErrorClass::HandshakeTimeout
            } else if lower.contains("before the peer's") {
                // Hung up right after our Version without sending its own: what a node does
                // that refuses our protocol version without a Reject (a heuristic).
                ErrorClass::ProtocolVersionRejected
            } else if is_closed(&lower) {
                ErrorClass::Closed
            } else {
                ErrorClass::Other
            }
        }
        VisitError::InvalidVersion(_) => ErrorClass::InvalidVersion,
        VisitError::WrongNetwork { .. } => ErrorClass::WrongNetwork,
        VisitError::OversizedAddresses { .. } => ErrorClass::OversizedAddresses,
    }
}

/// The Reject reason in a `WireConnection` handshake error ("… rejected: REASON").
fn reject_reason(lower: &str) -> Option<&str> {
    lower.find("rejected: ").map(|i| &lower[i + "rejected: ".len()..])
}

fn reject_class(reason: &str) -> ErrorClass {
    if reason.contains("network mismatch") {
        ErrorClass::WrongNetwork
    } else if reason.contains("version") {
        ErrorClass::ProtocolVersionRejected
    } else {
        ErrorClass::Rejected
    }
}

fn is_closed(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("stream closed") || lower.contains("connection closed")
}

fn is_timeout(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("timed out") || lower.contains("deadline has elapsed") || lower.contains("timeout")
}

/// Socket-level failures, whatever the stage.
fn transport_class(text: &str) -> Option<ErrorClass> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("connection refused") || lower.contains("os error 111") {
        Some(ErrorClass::Refused)
    } else if lower.contains("no route to host")
        || lower.contains("unreachable")
        || lower.contains("os error 113")
        || lower.contains("os error 101")
    {
        Some(ErrorClass::Unreachable)
    } else if lower.contains("connection reset")
        || lower.contains("os error 104")
        || lower.contains("broken pipe")
        || lower.contains("stream error received")
        || lower.contains("connection aborted")
    {
        Some(ErrorClass::Reset)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Label;

    fn connect(t: &str) -> ErrorClass {
        classify(&VisitError::Connect(t.to_owned()))
    }

    fn handshake(t: &str) -> ErrorClass {
        classify(&VisitError::Handshake(t.to_owned()))
    }

    /// Texts observed from `WireConnection` against closed ports, silent listeners and
    /// kaspa-p2p-lib peers on loopback (see the crawl_synthetic test), and kaspad's Reject texts.
    #[test]
    fn observed_texts() {
        assert_eq!(
            connect("kaspa p2p: connect: transport error: tcp connect error: Connection refused (os error 111)"),
            ErrorClass::Refused
        );
        assert_eq!(connect("connect: timed out"), ErrorClass::Timeout);
        assert_eq!(
            connect("connect: transport error: tcp connect error: Connection refused (os error 111)"),
            ErrorClass::Refused
        );
        assert_eq!(
            connect("kaspa p2p: connect: transport error: tcp connect error: No route to host (os error 113)"),
            ErrorClass::Unreachable
        );
        assert_eq!(
            connect("kaspa p2p: connect: transport error: Network is unreachable (os error 101)"),
            ErrorClass::Unreachable
        );
        assert_eq!(
            connect(
                "kaspa p2p: message stream: h2 protocol error: connection reset: Connection reset by peer (os error 104)"
            ),
            ErrorClass::Reset
        );
        // A listener that accepts and resets, accepts and closes, or speaks HTTP/1.1.
        assert_eq!(
            connect("connect: transport error: tcp connect error: Connection reset by peer (os error 104)"),
            ErrorClass::Reset
        );
        assert_eq!(
            connect("message stream: operation was canceled: transport error: connection closed"),
            ErrorClass::Closed
        );
        assert_eq!(
            connect(
                "message stream: h2 protocol error: http2 error: transport error: connection error detected: \
                 frame with invalid size"
            ),
            ErrorClass::Other
        );
        assert_eq!(handshake("kaspa p2p: handshake: timed out"), ErrorClass::HandshakeTimeout);
        assert_eq!(handshake("kaspa p2p: handshake: stream closed"), ErrorClass::Closed);
        assert_eq!(
            handshake("stream closed after our Version, before the peer's"),
            ErrorClass::ProtocolVersionRejected
        );
        assert_eq!(
            handshake("kaspa p2p: rejected: Network mismatch - local: kaspa-mainnet, remote: kaspa-devnet"),
            ErrorClass::WrongNetwork
        );
        assert_eq!(
            handshake("kaspa p2p: rejected: P2P protocol version mismatch - local: 11, remote: 7"),
            ErrorClass::ProtocolVersionRejected
        );
        assert_eq!(handshake("kaspa p2p: rejected: peer user agent rejected: /x/"), ErrorClass::Rejected);
        assert_eq!(
            handshake(
                "kaspa p2p: receive: error reading a body from connection: Connection reset by peer (os error 104)"
            ),
            ErrorClass::Reset
        );
        assert_eq!(handshake("kaspa p2p: handshake: unexpected Ping"), ErrorClass::Other);
        assert_eq!(connect(""), ErrorClass::Other);
    }

    #[test]
    fn structured_errors_and_labels() {
        assert_eq!(classify(&VisitError::InvalidVersion("bad id".into())), ErrorClass::InvalidVersion);
        let wrong = VisitError::WrongNetwork { ours: "kaspa-devnet".into(), theirs: "kaspa-mainnet".into() };
        assert_eq!(classify(&wrong), ErrorClass::WrongNetwork);
        assert_eq!(classify(&VisitError::OversizedAddresses { count: 2501 }), ErrorClass::OversizedAddresses);
        for &c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
            assert!(c.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert!(wrong.to_string().contains("kaspa-mainnet"));
    }
}
