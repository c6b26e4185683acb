//! The property checks of fuzz target `addresses`, called by the libFuzzer target
//! (`fuzz/fuzz_targets/addresses.rs`) and by the corpus replay under `cargo test`
//! (`sensor/tests/fuzz_corpus.rs`).
//!
//! Input: a peer's `Addresses` message (protobuf bytes of kaspa-p2p-lib 2.1.0's
//! `protowire.AddressesMessage`) through [`filter::address_list`], the one conversion the
//! crawler's visit (`crawl/visit.rs`, `gossip`) and the listener (`listen/connection.rs`,
//! `on_addresses`) both call: a reply over [`MAX_ADDRESSES_PER_REPLY`] is refused whole; each
//! entry is converted by [`filter::socket_addr`], duplicates dropped. Then the crawler's dial
//! filter [`filter::check`] judges each address with and without lab mode, and our own
//! `Addresses` answer to a `RequestAddresses` ([`keep_alive_reply`]) carries the list.
//!
//! Properties: never panics; oversized exactly above the cap; an entry converts exactly when
//! its IP has 4 or 16 bytes and its port is at most 65535, to the same port and a canonical IP
//! (IPv4-mapped IPv6 made IPv4); the result is the distinct conversions in order, and
//! malformed + duplicates + kept = entries; lab mode only relaxes the filter (a refusal in lab
//! mode is the same refusal without it, and loopback/private refusals pass in lab mode); our
//! answer carries the list unchanged.

use std::{collections::HashSet, net::SocketAddr};

use kaspa_p2p_lib::pb::{self, RequestAddressesMessage, kaspad_message::Payload};
use sensor::kaspa::{addresses, flows::keep_alive_reply};
use sensor_core::crawl::{FilterReason, MAX_ADDRESSES_PER_REPLY, filter};
use tonic_prost::prost::Message;

/// Panics when `data` breaks a property.
pub fn check(data: &[u8]) {
    let Ok(msg) = pb::AddressesMessage::decode(data) else { return };
    let list = msg.address_list;
    let request =
        Payload::RequestAddresses(RequestAddressesMessage { include_all_subnetworks: false, subnetwork_id: None });
    match keep_alive_reply(request, &list) {
        Some(Payload::Addresses(reply)) => assert_eq!(reply.address_list, list),
        other => panic!("RequestAddresses answered with {other:?}"),
    }
    let converted = match addresses::address_list(&list) {
        Ok(converted) => converted,
        Err(len) => {
            assert!(list.len() > MAX_ADDRESSES_PER_REPLY && len == list.len());
            return;
        }
    };
    assert!(list.len() <= MAX_ADDRESSES_PER_REPLY);
    // The reference: entry by entry, as the visit and the listener did before sharing it.
    let mut seen: HashSet<SocketAddr> = HashSet::new();
    let mut expected = Vec::new();
    let mut malformed = 0;
    for entry in &list {
        let well_formed = matches!(entry.ip.len(), 4 | 16) && entry.port <= u32::from(u16::MAX);
        match addresses::socket_addr(entry) {
            Ok(addr) => {
                assert!(well_formed, "accepted a malformed entry {entry:?} as {addr}");
                assert_eq!(u32::from(addr.port()), entry.port);
                assert_eq!(addr.ip(), addr.ip().to_canonical(), "{addr} is not canonical");
                if seen.insert(addr) {
                    expected.push(addr);
                }
            }
            Err(reason) => {
                assert_eq!(reason, FilterReason::Malformed);
                assert!(!well_formed, "refused a well-formed entry {entry:?}");
                malformed += 1;
            }
        }
    }
    assert_eq!(converted.addresses, expected);
    assert_eq!(converted.malformed, malformed);
    assert_eq!(converted.malformed + converted.duplicates + converted.addresses.len(), list.len());
    for addr in converted.addresses {
        let public = filter::check(addr, false);
        let lab = filter::check(addr, true);
        match (public, lab) {
            (Ok(()), lab) => assert_eq!(lab, Ok(()), "{addr}: allowed without lab mode, refused with it"),
            (Err(FilterReason::Loopback | FilterReason::Private), lab) => assert_eq!(lab, Ok(()), "{addr}"),
            (Err(reason), lab) => assert_eq!(lab, Err(reason), "{addr}"),
        }
        if let Err(reason) = public {
            assert!(!matches!(reason, FilterReason::Malformed | FilterReason::PeerCap | FilterReason::MaxNodes));
        }
    }
}
