//! Kaspa networks and their P2P parameters (docs/kaspa-protocol.md, from rusty-kaspa's
//! `consensus/core/src/config/params.rs` and `kaspad/src/args.rs`, verified against kaspad 2.1.0).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The Kaspa networks a sensor can join, and the `network` of a `SensorFleet` (the operator's
/// CRD embeds this type). The short name ([`Network::short_name`]: `mainnet`, `testnet-10`, …) is
/// the configuration and CRD value; the wire name (`Version.network`) is `kaspa-<short name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, strum::VariantArray)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Network {
    #[default]
    #[cfg_attr(feature = "schema", schemars(rename = "mainnet"))]
    Mainnet,
    #[cfg_attr(feature = "schema", schemars(rename = "testnet-10"))]
    Testnet10,
    #[cfg_attr(feature = "schema", schemars(rename = "testnet-12"))]
    Testnet12,
    #[cfg_attr(feature = "schema", schemars(rename = "devnet"))]
    Devnet,
    #[cfg_attr(feature = "schema", schemars(rename = "simnet"))]
    Simnet,
}

impl Network {
    /// Every network, in declaration order.
    pub const ALL: &'static [Network] = <Network as strum::VariantArray>::VARIANTS;

    /// The short name used in configuration and on the command line: `mainnet`, `testnet-10`, …
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Mainnet => "mainnet",
            Self::Testnet10 => "testnet-10",
            Self::Testnet12 => "testnet-12",
            Self::Devnet => "devnet",
            Self::Simnet => "simnet",
        }
    }

    /// The name carried in `Version.network`: `kaspa-mainnet`, `kaspa-testnet-10`, …
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Mainnet => "kaspa-mainnet",
            Self::Testnet10 => "kaspa-testnet-10",
            Self::Testnet12 => "kaspa-testnet-12",
            Self::Devnet => "kaspa-devnet",
            Self::Simnet => "kaspa-simnet",
        }
    }

    /// The network's default P2P port: mainnet 16111, testnet-10 16211, testnet-12 16311,
    /// simnet 16511, devnet 16611.
    pub fn default_p2p_port(self) -> u16 {
        match self {
            Self::Mainnet => 16111,
            Self::Testnet10 => 16211,
            Self::Testnet12 => 16311,
            Self::Simnet => 16511,
            Self::Devnet => 16611,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// Error for an unrecognised network name; the message lists the accepted names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown network {0:?}; expected one of mainnet, testnet-10, testnet-12, devnet, simnet (optionally prefixed kaspa-)"
)]
pub struct UnknownNetwork(pub String);

impl FromStr for Network {
    type Err = UnknownNetwork;

    /// Accepts the short name or the wire name, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let short = lower.strip_prefix("kaspa-").unwrap_or(&lower);
        Self::ALL.iter().copied().find(|n| n.short_name() == short).ok_or_else(|| UnknownNetwork(s.to_owned()))
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.short_name())
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports() {
        assert_eq!("devnet".parse::<Network>().unwrap(), Network::Devnet);
        assert_eq!("kaspa-testnet-10".parse::<Network>().unwrap(), Network::Testnet10);
        assert_eq!("MAINNET".parse::<Network>().unwrap(), Network::Mainnet);
        assert!("testnet".parse::<Network>().is_err());
        assert_eq!(Network::Mainnet.default_p2p_port(), 16111);
        assert_eq!(Network::Devnet.wire_name(), "kaspa-devnet");
        for &n in Network::ALL {
            assert_eq!(n.wire_name().parse::<Network>().unwrap(), n);
        }
    }
}
