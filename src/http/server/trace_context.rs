//! The W3C trace context a request brings (`traceparent`, `tracestate`, `baggage`): believed
//! only with `traces.trust_traceparent` on and from a peer in `server.trusted_proxies`; from
//! anyone else it is removed as the request arrives, before anything reads or forwards it.
//!
//! A believed `traceparent` becomes the parent of the request's spans and its sampling
//! decision is followed, so a sender who could choose it could have every request of theirs
//! exported and join spans to traces that are not theirs; a believed `baggage` reaches every
//! upstream as if the edge had vouched for it. A browser's request is found in the logs and
//! traces by the `X-Request-Id` of its response instead.

use std::net::IpAddr;

use axum::http::HeaderMap;

use super::client_address::TrustedProxies;
use crate::traces::{BAGGAGE, TRACE_HEADERS};

/// Every header of the W3C trace context.
const CONTEXT_HEADERS: [&str; 3] = [TRACE_HEADERS[0], TRACE_HEADERS[1], BAGGAGE];

/// Whose trace context is believed (`traces.trust_traceparent`, `server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TraceContextTrust {
    /// The senders believed; empty: nobody.
    senders: TrustedProxies,
}

impl TraceContextTrust {
    /// Believes the context `proxies` send when `trust` is on; otherwise nobody's.
    pub fn new(trust: bool, proxies: TrustedProxies) -> Self {
        Self {
            senders: proxies.if_believed(trust),
        }
    }

    /// Whether the trace context in `headers`, from the TCP peer `peer`, is believed; when it
    /// is not, it is removed from `headers`.
    pub fn admit(&self, peer: IpAddr, headers: &mut HeaderMap) -> bool {
        if self.senders.trusts_peer(peer) {
            return true;
        }
        for name in CONTEXT_HEADERS {
            headers.remove(name);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn context() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=1"),
            ("baggage", "user.tier=gold"),
            ("x-app", "kept"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_context_is_kept_only_from_trusted_proxies_when_trusted_at_all() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let browser: IpAddr = "203.0.113.9".parse().unwrap();
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let trusting = TraceContextTrust::new(true, proxies.clone());
        let mut from_proxy = context();
        assert!(trusting.admit(proxy, &mut from_proxy));
        assert_eq!(from_proxy, context(), "kept as it came");
        for (policy, peer) in [
            (&trusting, browser),
            (&TraceContextTrust::new(false, proxies), proxy),
        ] {
            let mut headers = context();
            assert!(!policy.admit(peer, &mut headers));
            for name in ["traceparent", "tracestate", "baggage"] {
                assert!(headers.get(name).is_none(), "{name} from {peer}");
            }
            assert_eq!(headers["x-app"], "kept");
        }
    }
}
