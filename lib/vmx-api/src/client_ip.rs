//! Which address a request comes from, for `source-ip` capacity windows.
//!
//! The adapter that received the request decides, never a client-supplied header on its own:
//! in Lambda, API Gateway's `sourceIp` (the function adapter sets [`ClientAddr`]); locally,
//! the TCP peer, or, only when the peer is a configured trusted proxy, the right-most
//! `X-Forwarded-For` address that is not itself a trusted proxy. (Taking the first
//! `X-Forwarded-For` value, as some gateways do, lets any client pick its own IP.)

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
    // is the client. Every header line counts, in order.
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.contains(*ip))
        .unwrap_or(peer)
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
