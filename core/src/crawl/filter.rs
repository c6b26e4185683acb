//! Which gossiped addresses the crawler may dial: a pure decision, so a peer cannot make the
//! crawler scan loopback, a LAN or a third party's reserved ranges.
//!
//! Always dropped: port 0, unspecified, multicast, broadcast, link-local (169.254/16, fe80::/10).
//! Dropped unless lab mode (`--allow-private-targets`) is on: loopback (127/8, ::1), RFC 1918
//! (10/8, 172.16/12, 192.168/16), CGNAT (100.64/10, RFC 6598), IPv6 ULA (fc00::/7) and the
//! documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32) — the network
//! namespace lab (docs/natlab.md) lives in documentation ranges, so they count as private here.
//! IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address was not dialled. Stored nowhere, counted in
/// `sensor_crawl_addresses_filtered_total{reason}` and the summary.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
