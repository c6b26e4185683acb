//! The SensorFleet controller: validate (pure) → build desired children (pure) → server-side
//! apply → prune → status (pure aggregation, one patch).

pub mod build;
pub mod reconcile;
pub mod sensor_config;
pub mod status;
pub mod validate;
