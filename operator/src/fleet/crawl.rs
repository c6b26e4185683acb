//! Continuous crawling in a fleet (issue 5): the `crawl` sidecar, its `[crawl]` section and the
//! checks of `spec.crawler` that CEL cannot express. Pure.
//!
//! A fleet with `spec.crawler` gets, in every sensor pod, a container [`CONTAINER`] running
//! `sensor crawl --config /etc/p2p-sensor/sensor.toml` (the sensor image) in continuous mode: a
//! crawl round every `crawler.intervalSecs`, each visiting the addresses learned since the last
//! round and the known nodes whose revisit is due (1.2 × observed uptime, clamped to
//! [`minRevisitSecs`, `maxRevisitSecs`]).
//!
//! **Seeds.** `[crawl].seed_from_store` is the listener's database on the shared data volume
//! (`/var/lib/p2p-sensor/sensor.sqlite`): the crawler starts from the peers the sensor saw, then `crawler.seeds` and
//! `crawler.seedDns`. It keeps its own database ([`DATABASE_FILE`]) on the same volume, so two
//! processes never write one SQLite file.
//!
//! **Reports.** The sidecar reports as sender `<pod>-crawl` with the fleet as owner, carrying only
//! a `CrawlSummary`; the collector keeps those reports out of the sensor counts and aggregates
//! them into `SensorFleet.status.crawl` ([`crate::collector::aggregate::crawl_stats`]).
//!
//! Unlike the punch sidecar, nothing here depends on other objects: the sidecar and `[crawl]`
//! follow from the spec alone, and changing `spec.crawler` rolls the pods (it is part of
//! `sensor.toml`, hence of the pod template's config hash).

use std::{net::SocketAddr, path::PathBuf};

use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sensor_core::config::CrawlConfig;

use super::layout::{CONFIG_DIR, CONFIG_FILE, DATA_DIR, LISTENER_DATABASE_FILE, sidecar_env};
use crate::crd::{Crawler, SensorFleet};
use crate::pod::{self, ContainerParams};
use crate::sensor_toml::unsigned;

/// Name of the sidecar container.
pub const CONTAINER: &str = "crawl";
/// Port of the sidecar's `/metrics`, `/healthz`, `/readyz` (the listener has 9102, punch 9103).
pub const METRICS_PORT: i32 = 9104;
/// Name of that container port (and of the headless Service's port).
pub const METRICS_PORT_NAME: &str = "crawl-metrics";
/// The sidecar's SQLite file on the data volume: its own, so that two processes never contend
/// for the listener's database.
pub const DATABASE_FILE: &str = "crawl.sqlite";

/// `[crawl]` for `crawler`: every tuning key the spec holds (the CRD defaults them, so the
/// sidecar never falls back to the one-shot `interval_secs = 0`), the seeds, and the listener's
/// database as `seed_from_store`. Seeds that are not `IP:PORT` are refused by the validate step
/// ([`violations`]) before anything is rendered.
pub fn apply(crawler: &Crawler, crawl: &mut CrawlConfig) {
    crawl.interval_secs = unsigned(Some(crawler.interval_secs), crawl.interval_secs);
    crawl.concurrency = unsigned(Some(crawler.concurrency), crawl.concurrency);
    crawl.timeout_ms = unsigned(Some(crawler.timeout_ms), crawl.timeout_ms);
    crawl.seeds = crawler.seeds.iter().filter_map(|s| s.trim().parse::<SocketAddr>().ok()).collect();
    crawl.seed_dns = crawler.seed_dns.iter().map(|s| s.trim().to_string()).collect();
    crawl.seed_from_store = Some(PathBuf::from(format!("{DATA_DIR}/{LISTENER_DATABASE_FILE}")));
    crawl.min_revisit_secs = unsigned(Some(crawler.min_revisit_secs), crawl.min_revisit_secs);
    crawl.max_revisit_secs = unsigned(Some(crawler.max_revisit_secs), crawl.max_revisit_secs);
    crawl.allow_private_targets = crawler.allow_private_targets;
}

/// Violations of `spec.crawler` beyond the schema and CEL: seeds that are not `IP:PORT` with a
/// port, seed names that are not `NAME` or `NAME:PORT` with a DNS name.
pub fn violations(crawler: &Crawler) -> Vec<String> {
    let mut out = Vec::new();
    for (i, seed) in crawler.seeds.iter().enumerate() {
        if !seed.trim().parse::<SocketAddr>().is_ok_and(|a| a.port() != 0) {
            out.push(format!("spec.crawler.seeds[{i}]: {seed:?} is not IP:PORT (IPv6 as [IP]:PORT)"));
        }
    }
    for (i, name) in crawler.seed_dns.iter().enumerate() {
        if !is_seed_name(name.trim()) {
            out.push(format!("spec.crawler.seedDns[{i}]: {name:?} is not a DNS name, optionally with :PORT"));
        }
    }
    out
}

/// `NAME` or `NAME:PORT`: NAME a DNS name (labels of letters, digits and `-`, not starting or
/// ending with `-`, 1..=63 bytes each, 253 bytes at most, one trailing dot allowed), PORT 1..=65535.
fn is_seed_name(s: &str) -> bool {
    let (name, port) = match s.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (s, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The sidecar's resources when `crawler.resources` is absent: requests 50m CPU and 64Mi memory,
/// limit 512Mi memory.
pub fn default_resources() -> ResourceRequirements {
    let quantity = |q: &str| Quantity(q.into());
    ResourceRequirements {
        requests: Some([("cpu".to_string(), quantity("50m")), ("memory".to_string(), quantity("64Mi"))].into()),
        limits: Some([("memory".to_string(), quantity("512Mi"))].into()),
        ..ResourceRequirements::default()
    }
}

/// The `crawl` container of `fleet`'s pods (`None` without `spec.crawler`): same image,
/// configuration and data volume as the listener, PodSecurity "restricted" like it, metrics on
/// [`METRICS_PORT`] (`SENSOR_METRICS_LISTEN`), its own database (`SENSOR_STORAGE_PATH`). Liveness
/// probes `/healthz`; no readiness probe, like the punch sidecar: a crawler between rounds or
/// facing an unreachable network must not take the sensor out of its Services.
pub fn sidecar(fleet: &SensorFleet, image: String) -> Option<Container> {
    let crawler = fleet.spec.crawler.as_ref()?;
    let mut container = pod::container(ContainerParams {
        name: CONTAINER,
        image,
        pull_policy: fleet.spec.image_pull_policy,
        args: vec!["crawl".into(), "--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")],
        ports: vec![(METRICS_PORT_NAME, METRICS_PORT, "TCP", false)],
        env: sidecar_env(METRICS_PORT, DATABASE_FILE),
        mounts: vec![("config", CONFIG_DIR, true), ("data", DATA_DIR, false)],
        resources: Some(crawler.resources.clone().unwrap_or_else(default_resources)),
        health_port: Some(METRICS_PORT_NAME),
    });
    container.readiness_probe = None;
    Some(container)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor_toml::rendered_section;

    fn crawler(json: serde_json::Value) -> Crawler {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn an_empty_crawler_gets_the_defaults() {
        let c = crawler(serde_json::json!({}));
        assert_eq!(c, Crawler::default());
        assert_eq!(
            (c.interval_secs, c.concurrency, c.timeout_ms, c.min_revisit_secs, c.max_revisit_secs),
            (600, 64, 5000, 300, 86400)
        );
        assert!(!c.allow_private_targets);
    }

    #[test]
    fn seeds_must_be_socket_addresses_and_names_dns_names() {
        let c = crawler(serde_json::json!({
            "seeds": ["198.51.100.1:16111", " [2001:db8::1]:16111 ", "198.51.100.1", "198.51.100.1:0", "host:16111"],
            "seedDns": ["seeder1.kaspad.net", "seeder2.kaspad.net:16111", "Seed.Example.", "-bad.example",
                "a..b", "x:0", "x:port", "", "under_score.example"],
        }));
        let v = violations(&c);
        let fields: Vec<&str> = v.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "spec.crawler.seeds[2]",
                "spec.crawler.seeds[3]",
                "spec.crawler.seeds[4]",
                "spec.crawler.seedDns[3]",
                "spec.crawler.seedDns[4]",
                "spec.crawler.seedDns[5]",
                "spec.crawler.seedDns[6]",
                "spec.crawler.seedDns[7]",
                "spec.crawler.seedDns[8]",
            ],
            "{v:?}"
        );
        assert!(!is_seed_name(&format!("{}.example", "a".repeat(64))));
        assert!(!is_seed_name(&vec!["a".repeat(63); 5].join(".")), "over 253 bytes");
        assert!(violations(&Crawler::default()).is_empty());
    }

    #[test]
    fn the_section_holds_the_tuning_canonical_seeds_and_the_listener_store() {
        let c = crawler(serde_json::json!({"intervalSecs": 900, "seeds": [" [2001:db8:0::1]:16111"],
            "seedDns": ["seeder1.kaspad.net"], "allowPrivateTargets": true}));
        let section = |c: &Crawler| {
            let mut config = sensor_core::config::Config::default();
            apply(c, &mut config.crawl);
            rendered_section(&config, &crate::fleet::sensor_config::PLAN, "crawl").unwrap()
        };
        // The CRD's defaults (concurrency 64, timeout 5000 ms, revisits 300 s and 1 day) are
        // written where they differ from the sensor's (concurrency 256).
        let expected: toml::Table = toml::toml! {
            interval_secs = 900
            concurrency = 64
            seeds = ["[2001:db8::1]:16111"]
            seed_dns = ["seeder1.kaspad.net"]
            seed_from_store = "/var/lib/p2p-sensor/sensor.sqlite"
            allow_private_targets = true
        };
        assert_eq!(section(&c), expected);
        let plain = section(&Crawler::default());
        for absent in ["seeds", "seed_dns", "allow_private_targets"] {
            assert!(!plain.contains_key(absent), "{absent} is left to the sensor: {plain}");
        }
        assert!(plain["interval_secs"].as_integer() > Some(0), "never the one-shot interval 0: {plain}");
    }
}
