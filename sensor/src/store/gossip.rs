//! Addresses peers gossip to `sensor listen`: the sensor sends each accepted peer one
//! `RequestAddresses` (as kaspad does with every new peer, docs/kaspa-protocol.md) and records the
//! `Addresses` reply here, in the crawler's tables (migration 3): each `(address, gossiper)` in
//! `address_sightings` with its first time, and each address in `crawl_nodes` as learned. So
//! `sensor crawl --propagation` shows the sensor's sightings next to the crawler's, and a crawl
//! seeded from this database (a fleet's crawl sidecar) visits what the sensor heard.

use rusqlite::{Transaction, params};

use sensor_core::{gossip::Gossip, timestamp::format_timestamp};

use super::crawl::{UPSERT_LEARNED, UPSERT_SIGHTING};

/// Writes one message inside the writer's transaction.
pub(super) fn insert(tx: &Transaction<'_>, g: &Gossip) -> rusqlite::Result<()> {
    let (at, gossiper) = (format_timestamp(g.at), g.gossiper.to_string());
    let mut learned = tx.prepare_cached(UPSERT_LEARNED)?;
    let mut sighting = tx.prepare_cached(UPSERT_SIGHTING)?;
    for a in &g.addresses {
        let a = a.to_string();
        learned.execute(params![a, at])?;
        sighting.execute(params![a, gossiper, at])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use time::OffsetDateTime;

    use super::*;
    use crate::{
        metrics::Metrics,
        store::{Store, StoreOptions, query::Reader},
    };

    #[test]
    fn gossip_is_stored_as_first_sightings_and_learned_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.sqlite");
        let options = StoreOptions { flush_interval: Duration::from_millis(5), ..StoreOptions::default() };
        let store = Store::open(&path, options, Metrics::new().0).unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let a: SocketAddr = "203.0.113.5:16111".parse().unwrap();
        let b: SocketAddr = "203.0.113.6:16111".parse().unwrap();
        let peer: SocketAddr = "198.51.100.7:16111".parse().unwrap();
        store.record_gossip(Gossip { gossiper: peer, at: t0 + Duration::from_secs(5), addresses: vec![a, b] }).unwrap();
        store.record_gossip(Gossip { gossiper: peer, at: t0, addresses: vec![a] }).unwrap();
        store.flush().unwrap();
        let reader = Reader::open(&path).unwrap();
        assert_eq!(reader.address_sightings(&a.to_string()).unwrap(), [(peer.to_string(), format_timestamp(t0))]);
        assert_eq!(reader.address_sightings(&b.to_string()).unwrap().len(), 1);
        let node = reader.crawl_node(&b.to_string()).unwrap().expect("learned");
        assert_eq!((node.visits, node.last_visit), (0, None));
        let seeds = reader.crawl_seed_addresses(10).unwrap();
        assert!(seeds.contains(&a.to_string()) && seeds.contains(&b.to_string()), "{seeds:?}");
        drop(reader);
        store.close().unwrap();
    }
}
