//! Who a request comes from, as far as limits are concerned.

use std::net::{IpAddr, Ipv6Addr};

/// The address a client is counted under by every per-client limit: an IPv4 address as it
/// is (an IPv4-mapped IPv6 address as its IPv4 address), an IPv6 address as its /64 network
/// (one subscriber usually holds the whole /64, so counting single IPv6 addresses would give
/// a client 2^64 fresh identities).
#[must_use]
pub fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::throttle_key;
    use std::net::IpAddr;

    fn key(ip: &str) -> String {
        throttle_key(ip.parse::<IpAddr>().unwrap()).to_string()
    }

    #[test]
    fn ipv4_counts_as_itself_and_ipv6_as_its_slash_64() {
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(
            key("2001:db8:1:2:bbbb:cccc:dddd:eeee"),
            key("2001:db8:1:2::9")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
