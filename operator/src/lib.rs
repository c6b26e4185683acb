//! The p2p-sensor operator: reconciles `SensorFleet` and `RelayNode` custom resources into sensor
//! and relay pods and writes what those pods report back into `.status` and Prometheus.
//!
//! One peer's journey ends here: sensor → report → [`collector`] → [`fleet::status`] → `.status`.

pub mod allocator;
pub mod apply;
pub mod backoff;
pub mod children;
pub mod collector;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod error;
pub mod fleet;
pub mod freshness;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod pod;
pub mod relay;
pub mod run;
pub mod sensor_toml;
pub mod telemetry;
pub mod trim;
pub mod validation;
