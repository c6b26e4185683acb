//! Pure validation of a SensorFleet: CEL rules plus what CEL cannot check.

use std::net::SocketAddr;

use super::crawl;
use super::export;
use crate::crd::{ExternalAddressSource, SensorFleet, StorageKind};
use crate::validation::{fleet_cel, into_result, is_quantity, name_fits};

/// Every reason `fleet` cannot be realised, joined with `; ` (the `Stalled` message), or `Ok`.
/// `default_image` is the operator's `--sensor-image` (used when `spec.image` is absent).
pub fn validate(fleet: &SensorFleet, default_image: &str) -> Result<(), String> {
    let spec = &fleet.spec;
    let mut violations = fleet_cel(fleet);
    if let Err(e) = name_fits(fleet.metadata.name.as_deref().unwrap_or_default()) {
        violations.push(e);
    }
    if spec.image.as_deref().unwrap_or(default_image).trim().is_empty() {
        violations.push("spec.image: no image; set spec.image or start the operator with --sensor-image".into());
    }
    if let Some(size) = &spec.storage.size
        && !is_quantity(size)
    {
        violations.push(format!("spec.storage.size: {size:?} is not a quantity such as 10Gi"));
    }
    if spec.storage.kind == StorageKind::HostPath
        && let Some(path) = &spec.storage.host_path
        && (!path.starts_with('/') || path.split('/').any(|c| c == ".."))
    {
        violations.push(format!("spec.storage.hostPath: {path:?} must be an absolute path without '..'"));
    }
    if spec.external_address.source == ExternalAddressSource::Static
        && let Some(address) = &spec.external_address.address
        && address.parse::<SocketAddr>().is_err()
    {
        violations.push(format!("spec.externalAddress.address: {address:?} is not IP:PORT"));
    }
    if let Some(e) = &spec.export {
        violations.extend(export::violations(e));
    }
    if let Some(crawler) = &spec.crawler {
        violations.extend(crawl::violations(crawler));
    }
    into_result(violations)
}
