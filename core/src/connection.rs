//! Why an inbound connection was rejected before it was kept, and why a held one ended.

/// Why an inbound connection was refused or failed before it was kept. Stored in
/// `events.reason` and used as the `reason` label of `sensor_inbound_rejections_total`.
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
pub enum RejectReason {
    /// The peer's `Version.network` differs from ours.
    WrongNetwork,
    /// `listen.max_inbound_peers` reached.
    InboundLimit,
    /// `listen.max_peers_per_ip` reached for the source IP.
    IpLimit,
    /// `listen.max_peers_per_subnet` reached for the source /24 (IPv4) or /48 (IPv6).
    SubnetLimit,
    /// `listen.max_pending_handshakes` reached.
    PendingHandshakeLimit,
    /// The peer did not complete Version/Verack/Ready within the handshake timeout.
    HandshakeTimeout,
    /// The handshake failed otherwise (closed, reset, unexpected message).
    HandshakeFailed,
    /// The peer's `Version` could not be parsed (e.g. peer id not 16 bytes, bad address length).
    InvalidVersion,
    /// The peer presented our own peer id (we connected to ourselves).
    SelfConnection,
    /// The sensor is shutting down.
    ShuttingDown,
}

/// Why a held (handshaken) inbound peer's connection ended: the log field, and the `reason`
/// label of `sensor_peer_disconnects_total`.
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
pub enum DisconnectReason {
    /// The peer closed its stream.
    PeerClosed,
    /// The peer's stream failed (reset, undecodable message).
    StreamError,
    /// The peer sent a message over the listener's message size limit (tonic's `OutOfRange`).
    MessageTooLarge,
    /// `listen.hold_time_secs` passed.
    HoldTimeExpired,
    /// The sensor is shutting down.
    Shutdown,
}
