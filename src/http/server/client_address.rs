//! Who is calling: the TCP peer, or, behind load balancers listed in
//! `server.trusted_proxies`, the address they report in `X-Forwarded-For`.
//!
//! Only the entries that trusted proxies appended are believed: the list is read from the
//! right, skipping trusted hops, and the first address that is not a trusted proxy is the
//! client. Anything a client wrote further left is ignored, so no one can pick the address a
//! rate limit counts against (or that the upstream is told) by sending the header.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::http::proxy::headers::X_FORWARDED_FOR;

/// The client's address for the request, worked out once by the dispatcher from the peer and
/// the trusted proxies' `X-Forwarded-For`: an extension of every request the router handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The proxies whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts the given ranges (none: every peer is a client).
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self(ranges)
    }

    /// These proxies if `believed` (a setting that believes what they send is on), otherwise
    /// none: for what only a trusted proxy may send (a request id, a trace context).
    pub fn if_believed(self, believed: bool) -> Self {
        if believed { self } else { Self::default() }
    }

    /// Whether no proxy is trusted (every peer is taken for the client).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the TCP peer `address` is one of the trusted proxies.
    pub fn trusts_peer(&self, address: IpAddr) -> bool {
        self.trusts(canonical(address))
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(&address))
    }

    /// The client's address for a request that arrived from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let entries: Vec<&[u8]> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .collect();
        for entry in entries.into_iter().rev() {
            let Some(address) = std::str::from_utf8(entry.trim_ascii())
                .ok()
                .and_then(parse_entry)
            else {
                // Not an address: what lies further left cannot be trusted either.
                return client;
            };
            client = canonical(address);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, with a port as some balancers add it (Azure
/// Application Gateway: `203.0.113.9:51234`), or an IPv6 address in brackets.
fn parse_entry(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse().ok())
        })
}

/// The network a client belongs to: IPv4 /24, IPv6 /48 (what one site or customer usually
/// holds). Rate limits share a budget per network; session lists show it instead of the address.
pub fn client_network(client: IpAddr) -> IpNet {
    truncated(client, 24, 48)
}

/// `address` with all but its first `v4_bits` / `v6_bits` bits cleared, as a network.
pub fn truncated(address: IpAddr, v4_bits: u8, v6_bits: u8) -> IpNet {
    let bits = if address.is_ipv4() { v4_bits } else { v6_bits };
    IpNet::new(address, bits).map_or_else(|_| IpNet::from(address), |net| net.trunc())
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as the IPv4 address they are.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_xff(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_static(value));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let proxies = TrustedProxies::default();
        let headers = with_xff(&["6.6.6.6"]);
        assert_eq!(
            proxies.client(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let proxies = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ]);
        // A client forged the leftmost entry; the balancers appended the rest.
        let headers = with_xff(&["6.6.6.6, 198.51.100.4", "192.0.2.7"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &headers), ip("198.51.100.4"));
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.client(ip("198.51.100.9"), &headers),
            ip("198.51.100.9")
        );
        // Garbage stops the walk at the last trusted hop.
        let garbage = with_xff(&["6.6.6.6, not-an-address"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &garbage), ip("10.1.2.3"));
        // No header: the proxy itself.
        assert_eq!(
            proxies.client(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        // Entries with a port, or in brackets, as some balancers write them.
        let with_ports = with_xff(&["198.51.100.4:51234, [2001:db8::7]:443"]);
        assert_eq!(
            proxies.client(ip("10.1.2.3"), &with_ports),
            ip("2001:db8::7")
        );
        let bracketed = with_xff(&["[2001:db8::8]"]);
        assert_eq!(
            proxies.client(ip("10.1.2.3"), &bracketed),
            ip("2001:db8::8")
        );
        let port = with_xff(&["198.51.100.4:51234"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &port), ip("198.51.100.4"));
        // IPv4-mapped peers are matched as IPv4.
        assert_eq!(
            proxies.client(ip("::ffff:10.1.2.3"), &with_xff(&["198.51.100.4"])),
            ip("198.51.100.4")
        );
    }
}
