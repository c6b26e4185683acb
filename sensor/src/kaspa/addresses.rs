//! Gossiped addresses as socket addresses: one conversion of a Kaspa `Addresses` reply for the
//! crawler's visits and the listener's gossip handling (the fuzz target `address_list` drives it
//! with arbitrary bytes). Which of them may be dialled is [`sensor_core::crawl::filter`]'s call.

use std::net::{IpAddr, SocketAddr};

use kaspa_p2p_lib::pb;
use sensor_core::crawl::{FilterReason, MAX_ADDRESSES_PER_REPLY};

/// A gossiped `NetAddress` as a socket address (IPv4-mapped IPv6 made IPv4), following
/// kaspa-p2p-lib's own conversion (`convert/net_address.rs`: IP of 4 or 16 bytes, port ≤ 65535).
///
/// Errors: [`FilterReason::Malformed`] for any other shape; never panics.
pub fn socket_addr(a: &pb::NetAddress) -> Result<SocketAddr, FilterReason> {
    let port = u16::try_from(a.port).map_err(|_| FilterReason::Malformed)?;
    let ip = match a.ip.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(a.ip.as_slice()).map_err(|_| FilterReason::Malformed)?),
        16 => IpAddr::from(<[u8; 16]>::try_from(a.ip.as_slice()).map_err(|_| FilterReason::Malformed)?),
        _ => return Err(FilterReason::Malformed),
    };
    Ok(SocketAddr::new(ip.to_canonical(), port))
}

/// A gossiped `Addresses` list after [`address_list`]: the distinct well-formed entries as
/// socket addresses, in the order received, and how many entries were dropped and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressList {
    pub addresses: Vec<SocketAddr>,
    /// Entries [`socket_addr`] refused (IP not 4 or 16 bytes, port over 65535).
    pub malformed: usize,
    /// Well-formed entries equal to an earlier one of the same list.
    pub duplicates: usize,
}

/// Converts one `Addresses` reply, as both the crawler's visit and the listener's gossip
/// handling do: each entry by [`socket_addr`], duplicates dropped, order kept.
///
/// Errors: `Err(len)` when the list has more than
/// [`MAX_ADDRESSES_PER_REPLY`] entries (kaspad's own
/// cap, `MAX_ADDRESSES_SEND`): the reply is refused whole, nothing of it is used.
pub fn address_list(list: &[pb::NetAddress]) -> Result<AddressList, usize> {
    if list.len() > MAX_ADDRESSES_PER_REPLY {
        return Err(list.len());
    }
    let mut out = AddressList { addresses: Vec::with_capacity(list.len()), ..AddressList::default() };
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    for entry in list {
        match socket_addr(entry) {
            Ok(addr) if seen.insert(addr) => out.addresses.push(addr),
            Ok(_) => out.duplicates += 1,
            Err(_) => out.malformed += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn an_address_list_keeps_distinct_well_formed_entries_in_order() {
        let entry = |ip: &[u8], port: u32| pb::NetAddress { timestamp: 0, ip: ip.to_vec(), port };
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4];
        let list = [
            entry(&[1, 2, 3, 4], 16111),
            entry(&[9; 3], 1),            // malformed IP
            entry(&[5, 6, 7, 8], 70_000), // malformed port
            entry(&mapped, 16111),        // = the first, IPv4-mapped
            entry(&[5, 6, 7, 8], 16111),
        ];
        let got = address_list(&list).unwrap();
        let want: Vec<SocketAddr> = vec!["1.2.3.4:16111".parse().unwrap(), "5.6.7.8:16111".parse().unwrap()];
        assert_eq!(got, AddressList { addresses: want, malformed: 2, duplicates: 1 });
        let cap = MAX_ADDRESSES_PER_REPLY;
        assert_eq!(address_list(&vec![entry(&[1, 2, 3, 4], 1); cap]).map(|l| l.duplicates), Ok(cap - 1));
        assert_eq!(address_list(&vec![entry(&[1, 2, 3, 4], 1); cap + 1]), Err(cap + 1));
    }

    #[test]
    fn gossip_entries_convert_without_panics() {
        let ok = pb::NetAddress { timestamp: 0, ip: vec![127, 0, 0, 9], port: 16611 };
        assert_eq!(socket_addr(&ok), Ok("127.0.0.9:16611".parse().unwrap()));
        let mapped =
            pb::NetAddress { timestamp: 0, ip: Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped().octets().to_vec(), port: 1 };
        assert_eq!(socket_addr(&mapped), Ok("1.2.3.4:1".parse().unwrap()));
        for (ip, port) in [(vec![1, 2, 3], 1), (vec![], 1), (vec![0; 17], 1), (vec![1, 2, 3, 4], 70_000)] {
            assert_eq!(socket_addr(&pb::NetAddress { timestamp: 0, ip, port }), Err(FilterReason::Malformed));
        }
    }
}
