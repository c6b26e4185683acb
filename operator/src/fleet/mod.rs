//! The SensorFleet controller: validate (pure) → build desired children (pure) → server-side
//! apply → prune → status (pure aggregation, one patch). With `spec.relayRef` the pods also
//! measure hole punching through that RelayNode ([`punch`]); with `spec.crawler` they also crawl
//! the network continuously ([`crawl`]); with `spec.export` they export their events ([`export`]).

pub mod build;
pub mod crawl;
pub mod export;
pub mod layout;
pub mod punch;
pub mod reconcile;
pub mod sensor_config;
pub mod status;
pub mod validate;
