//! Which gossiped addresses the crawler may dial: a pure decision, so a peer cannot make the
//! crawler scan loopback, a LAN or a third party's reserved ranges.
//!
//! Always dropped: port 0, unspecified, multicast, broadcast, link-local (169.254/16, fe80::/10).
//! Dropped unless lab mode (`--allow-private-targets`) is on: loopback (127/8, ::1), RFC 1918
//! (10/8, 172.16/12, 192.168/16), CGNAT (100.64/10, RFC 6598), IPv6 ULA (fc00::/7) and the
//! documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32) — the network
//! namespace lab of design §5 lives in documentation ranges, so they count as private here.
//! IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kaspa_p2p_lib::pb;

/// Why an address was not dialled. Stored nowhere, counted in
/// `sensor_crawl_addresses_filtered_total{reason}` and the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterReason {
    /// Port 0.
    PortZero,
    /// 0.0.0.0 or ::.
    Unspecified,
    /// 127/8 or ::1 without lab mode.
    Loopback,
    /// 169.254/16 or fe80::/10.
    LinkLocal,
    /// 224/4 or ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// RFC 1918, CGNAT, ULA or documentation range without lab mode.
    Private,
    /// The gossip entry was malformed (IP not 4 or 16 bytes, port above 65535).
    Malformed,
    /// The gossiping peer already added its per-visit maximum of addresses.
    PeerCap,
    /// The crawl already knows `--max-nodes` addresses.
    MaxNodes,
}

impl FilterReason {
    pub const ALL: [FilterReason; 10] = [
        Self::PortZero,
        Self::Unspecified,
        Self::Loopback,
        Self::LinkLocal,
        Self::Multicast,
        Self::Broadcast,
        Self::Private,
        Self::Malformed,
        Self::PeerCap,
        Self::MaxNodes,
    ];

    /// The snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PortZero => "port_zero",
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Private => "private",
            Self::Malformed => "malformed",
            Self::PeerCap => "peer_cap",
            Self::MaxNodes => "max_nodes",
        }
    }
}

/// `Ok(())` when the crawler may dial `addr`; otherwise why not. `allow_private` is lab mode.
pub fn check(addr: SocketAddr, allow_private: bool) -> Result<(), FilterReason> {
    if addr.port() == 0 {
        return Err(FilterReason::PortZero);
    }
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => check_v4(ip, allow_private),
        IpAddr::V6(ip) => check_v6(ip, allow_private),
    }
}

fn check_v4(ip: Ipv4Addr, allow_private: bool) -> Result<(), FilterReason> {
    let o = ip.octets();
    if ip.is_unspecified() {
        Err(FilterReason::Unspecified)
    } else if ip.is_broadcast() {
        Err(FilterReason::Broadcast)
    } else if ip.is_multicast() {
        Err(FilterReason::Multicast)
    } else if ip.is_link_local() {
        Err(FilterReason::LinkLocal)
    } else if allow_private {
        Ok(())
    } else if ip.is_loopback() {
        Err(FilterReason::Loopback)
    } else if ip.is_private() || ip.is_documentation() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Err(FilterReason::Private)
    } else {
        Ok(())
    }
}

fn check_v6(ip: Ipv6Addr, allow_private: bool) -> Result<(), FilterReason> {
    let s = ip.segments();
    if ip.is_unspecified() {
        Err(FilterReason::Unspecified)
    } else if ip.is_multicast() {
        Err(FilterReason::Multicast)
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Err(FilterReason::LinkLocal)
    } else if allow_private {
        Ok(())
    } else if ip.is_loopback() {
        Err(FilterReason::Loopback)
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] == 0x2001 && s[1] == 0x0db8) {
        Err(FilterReason::Private)
    } else {
        Ok(())
    }
}

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
/// [`MAX_ADDRESSES_PER_REPLY`](super::visit::MAX_ADDRESSES_PER_REPLY) entries (kaspad's own
/// cap, `MAX_ADDRESSES_SEND`): the reply is refused whole, nothing of it is used.
pub fn address_list(list: &[pb::NetAddress]) -> Result<AddressList, usize> {
    if list.len() > super::visit::MAX_ADDRESSES_PER_REPLY {
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
        let cap = super::super::visit::MAX_ADDRESSES_PER_REPLY;
        assert_eq!(address_list(&vec![entry(&[1, 2, 3, 4], 1); cap]).map(|l| l.duplicates), Ok(cap - 1));
        assert_eq!(address_list(&vec![entry(&[1, 2, 3, 4], 1); cap + 1]), Err(cap + 1));
    }

    fn verdict(s: &str, lab: bool) -> Result<(), FilterReason> {
        check(s.parse().unwrap(), lab)
    }

    #[test]
    fn public_addresses_pass() {
        for a in ["8.8.8.8:16111", "[2a01:4f8::1]:16111", "[::ffff:1.2.3.4]:16111", "100.128.0.1:1"] {
            assert_eq!(verdict(a, false), Ok(()), "{a}");
            assert_eq!(verdict(a, true), Ok(()), "{a}");
        }
    }

    #[test]
    fn never_dialled_even_in_lab_mode() {
        for (a, r) in [
            ("8.8.8.8:0", FilterReason::PortZero),
            ("0.0.0.0:16111", FilterReason::Unspecified),
            ("[::]:16111", FilterReason::Unspecified),
            ("169.254.1.1:16111", FilterReason::LinkLocal),
            ("[fe80::1]:16111", FilterReason::LinkLocal),
            ("224.0.0.1:16111", FilterReason::Multicast),
            ("[ff02::1]:16111", FilterReason::Multicast),
            ("255.255.255.255:16111", FilterReason::Broadcast),
            ("[::ffff:169.254.0.1]:1", FilterReason::LinkLocal),
        ] {
            assert_eq!(verdict(a, false), Err(r), "{a}");
            assert_eq!(verdict(a, true), Err(r), "{a} in lab mode");
        }
    }

    #[test]
    fn private_ranges_need_lab_mode() {
        for (a, r) in [
            ("127.0.0.5:16611", FilterReason::Loopback),
            ("[::1]:16611", FilterReason::Loopback),
            ("10.1.2.3:16111", FilterReason::Private),
            ("172.16.0.1:16111", FilterReason::Private),
            ("172.31.255.1:16111", FilterReason::Private),
            ("192.168.1.1:16111", FilterReason::Private),
            ("100.64.0.1:16111", FilterReason::Private),
            ("100.127.255.254:16111", FilterReason::Private),
            ("198.51.100.41:16611", FilterReason::Private),
            ("203.0.113.7:16611", FilterReason::Private),
            ("192.0.2.1:16611", FilterReason::Private),
            ("[fc00::1]:16111", FilterReason::Private),
            ("[fdff::1]:16111", FilterReason::Private),
            ("[2001:db8::1]:16111", FilterReason::Private),
        ] {
            assert_eq!(verdict(a, false), Err(r), "{a}");
            assert_eq!(verdict(a, true), Ok(()), "{a} in lab mode");
        }
        assert_eq!(verdict("172.32.0.1:1", false), Ok(()));
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
