//! Which address a request comes from, for `source-ip` capacity windows.
//!
//! The adapter that received the request decides, never a client-supplied header on its own:
//! the peer (locally the TCP peer; in Lambda, the `sourceIp` API Gateway or the function URL
//! saw, which the function adapter sets as the peer) or, only when the peer is a configured
//! trusted proxy, the right-most `X-Forwarded-For` address that is not itself a trusted
//! proxy. (Taking the first `X-Forwarded-For` value, as some gateways do, lets any client pick
//! its own IP.) A hop that is not an address ends the walk: the request counts under the
//! trusted proxy that wrote it, never under an address further left, which the client chose.
//! An adapter may instead set [`ClientAddr`], which wins over both.
//!
//! [`window_ip`] is what a `source-ip` capacity window is keyed by: IPv6 per network prefix
//! (a /64 by default), since one subscriber usually holds a whole /64.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

/// The caller's address, set by the runtime adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Proxies whose `X-Forwarded-For` is believed (`VMX_TRUSTED_PROXIES`: IPs or CIDRs).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, ::1`; `None` names the entry that is not an address.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| item.to_owned())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| item.to_owned())?,
            };
            out.push((ip, bits));
        }
        Ok(Self(out))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|(net, bits)| match (canonical(*net), ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(&n.octets(), &i.octets(), *bits),
                (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(&n.octets(), &i.octets(), *bits),
                _ => false,
            })
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (full, rest) = (bits / 8, bits % 8);
    if a.get(..full) != b.get(..full) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

/// The address a `source-ip` window counts `ip` under: IPv4 (and IPv4-mapped IPv6) per
/// address, other IPv6 per network of `ipv6_prefix` bits (`VMX_IPV6_PREFIX_LEN`).
pub fn window_ip(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry as an address: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`; `None` for anything else (`unknown`, `_hidden`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The client address of a request: the adapter's [`ClientAddr`] if set, else the TCP peer
/// with trusted-proxy `X-Forwarded-For` handling, else the unspecified address.
pub fn client_ip(extensions: &Extensions, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if let Some(ClientAddr(ip)) = extensions.get::<ClientAddr>() {
        return *ip;
    }
    let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() else {
        return IpAddr::from([0, 0, 0, 0]);
    };
    let peer = peer.ip();
    if !trusted.contains(peer) {
        return peer;
    }
    // Walk X-Forwarded-For from the right: the first address that is not a trusted proxy
    // is the client. Every header line counts, in order; a line that is not text is one
    // unreadable hop.
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .collect();
    // The trusted proxy that wrote the hop being read: the peer, then each trusted hop.
    let mut reporter = peer;
    for hop in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        match parse_hop(hop) {
            // Everything to the left of a hop that is not an address was written by the
            // client, whom the proxy could not name: count the request under that proxy.
            None => return reporter,
            Some(ip) if trusted.contains(ip) => reporter = ip,
            Some(ip) => return ip,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;

    fn ip(r: &Request, t: &TrustedProxies) -> IpAddr {
        client_ip(r.extensions(), r.headers(), t)
    }

    fn req(peer: &str, xff: &[&str]) -> Request {
        let mut r = Request::builder().uri("/");
        for v in xff {
            r = r.header("x-forwarded-for", *v);
        }
        let mut r = r.body(Body::empty()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        r
    }

    #[test]
    fn forged_forwarded_for_is_ignored_without_trusted_proxies() {
        let none = TrustedProxies::default();
        let ip = ip(&req("198.51.100.7:5000", &["1.2.3.4"]), &none);
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn right_most_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        // The client forged "1.2.3.4"; the proxy appended the real client 203.0.113.9.
        let r = req("10.1.2.3:443", &["1.2.3.4, 203.0.113.9", "10.9.9.9"]);
        assert_eq!(ip(&r, &t), "203.0.113.9".parse::<IpAddr>().unwrap());
        // All hops trusted: the peer itself.
        let r = req("127.0.0.1:443", &["10.0.0.1"]);
        assert_eq!(ip(&r, &t), "127.0.0.1".parse::<IpAddr>().unwrap());
        // An adapter-set address wins over everything.
        let mut r = req("10.1.2.3:443", &["5.6.7.8"]);
        r.extensions_mut()
            .insert(ClientAddr("192.0.2.1".parse().unwrap()));
        assert_eq!(ip(&r, &t), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_unparsable_hop_ends_the_walk_at_the_proxy_that_reported_it() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client cannot move the walk past an entry the proxy could not name: the
        // caller-supplied 1.2.3.4 to its left is never reached.
        for garbage in ["unknown", "_hidden", "not an ip", "1.2.3.4.5"] {
            let r = req("10.1.2.3:443", &[&format!("1.2.3.4, {garbage}")]);
            assert_eq!(
                ip(&r, &t),
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "{garbage}"
            );
            // Behind two trusted proxies: the one that appended the entry.
            let r = req("10.1.2.3:443", &[&format!("1.2.3.4, {garbage}, 10.7.7.7")]);
            assert_eq!(
                ip(&r, &t),
                "10.7.7.7".parse::<IpAddr>().unwrap(),
                "{garbage}"
            );
        }
    }

    #[test]
    fn hops_with_ports_and_brackets_parse() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        for (hop, want) in [
            ("203.0.113.9:8080", "203.0.113.9"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
            (" 203.0.113.9 ", "203.0.113.9"),
        ] {
            let r = req("10.1.2.3:443", &[&format!("1.2.3.4, {hop}")]);
            assert_eq!(ip(&r, &t), want.parse::<IpAddr>().unwrap(), "{hop}");
        }
        // A trusted proxy written with a port is still a trusted proxy.
        let r = req("10.1.2.3:443", &["198.51.100.1, 10.9.9.9:3128"]);
        assert_eq!(ip(&r, &t), "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv6_windows_are_keyed_per_prefix_and_ipv4_per_address() {
        let key = |s: &str, bits| window_ip(s.parse().unwrap(), bits);
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), v6("2001:db8:1:2::"));
        assert_eq!(key("2001:db8:1:2:ffff::9", 64), v6("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:3::1", 64), key("2001:db8:1:2::1", 64));
        assert_eq!(key("2001:db8:1:2:aaaa::1", 48), v6("2001:db8:1::"));
        assert_eq!(key("2001:db8:1:2:aaaa::1", 56), v6("2001:db8:1::"));
        assert_eq!(key("2001:db8:1:2ff:aaaa::1", 60), v6("2001:db8:1:2f0::"));
        assert_eq!(key("2001:db8::1", 128), v6("2001:db8::1"));
        // IPv4, and IPv4 mapped into IPv6, stay one address each.
        assert_eq!(key("203.0.113.7", 64), v6("203.0.113.7"));
        assert_eq!(key("::ffff:203.0.113.7", 64), v6("203.0.113.7"));
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let t = TrustedProxies::parse("192.168.0.0/16,::1,2001:db8::/32").unwrap();
        assert!(t.contains("192.168.44.1".parse().unwrap()));
        assert!(!t.contains("192.169.0.1".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(t.contains("2001:db8:1::5".parse().unwrap()));
        assert!(t.contains("::ffff:192.168.1.1".parse().unwrap()));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("nope").is_err());
    }
}
