//! Kaspa P2P on top of kaspa-p2p-lib: network parameters, our identity and `Version`, and the
//! post-handshake flows a well-behaved peer runs (Pong, Addresses, drain).

pub mod addresses;
pub mod flows;
pub mod handshake;
pub mod identity;
pub mod version;
pub mod wire;
