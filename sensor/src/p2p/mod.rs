//! The sensor's libp2p side (rust-libp2p 0.57): `sensor relay`, a circuit relay v2 server for the
//! fleet's hole punching, and `sensor punch`, the DCUtR hole-punch client (docs/architecture.md, docs/natlab.md).
//!
//! - [`identity`]: the persistent keypair file (the PeerId clients know).
//! - [`swarm`]: transports (TCP + Noise + Yamux, QUIC v1) and behaviours (relay, identify, ping,
//!   AutoNAT v1 server).
//! - [`stats`]: `sensor_relay_*` metrics and active reservation/circuit bookkeeping.
//! - [`relay`]: the `sensor relay` service: start-up, event loop, reports, shutdown.
//! - [`punch`]: the `sensor punch` service (its own swarm: relay client, DCUtR, identify, ping,
//!   AutoNAT v1 client) and, in [`punch::attempt`], the pure model of one attempt's outcome.
//!
//! libp2p-metrics (`libp2p_*`) registers into the same prometheus-client registry as the rest
//! of the sensor ([`crate::metrics`]), served on the same `/metrics`.

pub mod identity;
pub mod kaspa_stream;
pub mod punch;
pub mod reachability;
pub mod relay;
pub mod stats;
pub mod swarm;
