//! A host's own reachability verdict (AutoNAT v1 plus the address-mapping test of the sensor's
//! `p2p::reachability`), as reported and stored with every punch attempt.

/// The verdict, as exposed in `sensor_reachability{verdict}` and in reports: `public`,
/// `private-cone`, `private-symmetric`, `unknown`.
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
#[strum(serialize_all = "kebab-case")]
pub enum Reachability {
    /// Dialable from the Internet: AutoNAT confirmed it, or remote peers dialled in directly.
    Public,
    /// Behind a NAT or firewall with endpoint-independent mapping: hole punching can work.
    PrivateCone,
    /// Behind a NAT with endpoint-dependent mapping: hole punching fails unless the peer is public
    /// or behind a full cone.
    PrivateSymmetric,
    /// Not enough evidence yet.
    Unknown,
}
