//! Request ids: every request gets one, returned to the browser (`X-Request-Id`), sent to the
//! upstream, and carried by every log line of the request (a field of its span).
//!
//! The id is Vestibule's own (128 random bits), unless `server.trust_request_id` is on and the
//! request came through one of `server.trusted_proxies`: then the front proxy's `X-Request-Id`
//! is kept, so one id follows a request from the edge to the upstream. A browser can never
//! choose the id the logs and the upstream see, and a value that is not a plain token (empty,
//! longer than 128 bytes, spaces, quotes, control characters) is replaced.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::client_address::TrustedProxies;

/// The request id header, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id accepted from a front proxy.
const MAX_LEN: usize = 128;

/// One request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A new random id (32 hexadecimal digits).
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(32);
        for byte in crate::random::bytes::<16>() {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self(HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("unknown")))
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text (always ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }
}

/// Where request ids come from (`server.trust_request_id`, `server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct RequestIds {
    /// The proxies whose ids are kept; none: every id is Vestibule's own.
    senders: TrustedProxies,
}

impl RequestIds {
    /// Keeps the ids `proxies` send when `trust` is on; otherwise always generates.
    pub fn new(trust: bool, proxies: TrustedProxies) -> Self {
        Self {
            senders: proxies.if_believed(trust),
        }
    }

    /// The id of a request that arrived from `peer` with `headers`.
    pub fn assign(&self, peer: IpAddr, headers: &HeaderMap) -> RequestId {
        let forwarded = self
            .senders
            .trusts_peer(peer)
            .then(|| headers.get(&X_REQUEST_ID))
            .flatten()
            .filter(|value| acceptable(value.as_bytes()));
        match forwarded {
            Some(value) => RequestId(value.clone()),
            None => RequestId::generate(),
        }
    }
}

/// A plain token: 1 to 128 bytes of letters, digits and `-._:/+=@`.
fn acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._:/+=@".contains(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static(id));
        headers
    }

    #[test]
    fn ids_are_kept_only_from_trusted_proxies_that_are_trusted_for_them() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let browser: IpAddr = "203.0.113.9".parse().unwrap();
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let trusting = RequestIds::new(true, proxies.clone());
        assert_eq!(
            trusting.assign(proxy, &headers("edge-42")).as_str(),
            "edge-42"
        );
        assert_ne!(
            trusting.assign(browser, &headers("edge-42")).as_str(),
            "edge-42"
        );
        let not_trusting = RequestIds::new(false, proxies);
        assert_ne!(
            not_trusting.assign(proxy, &headers("edge-42")).as_str(),
            "edge-42"
        );
        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            let mut map = HeaderMap::new();
            map.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_ne!(
                trusting.assign(proxy, &map).as_str(),
                bad,
                "{bad:?} is replaced"
            );
        }
    }

    #[test]
    fn generated_ids_are_random_hex() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|byte| byte.is_ascii_hexdigit()));
    }
}
