//! Request ids: every request gets one, returned to the browser (`X-Request-Id`), sent to the
//! upstream, and carried by every log line of the request (a field of its span).
//!
//! The id is Vestibule's own (128 bits that never repeat within a process and cannot be
//! predicted, see [`RequestId::generate`]), unless `server.trust_request_id` is on and the
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
    /// A new id (32 hexadecimal digits): a counter of this process under AES-128 with a key
    /// drawn at its start, so ids never repeat within a process, reveal no count, and cannot be
    /// predicted from earlier ones, without a system call per request (as 128 bits drawn
    /// from the operating system each time would cost).
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(32);
        for byte in next_id_block() {
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

/// The next id's 16 bytes: the block `process prefix ‖ counter` encrypted with this process's
/// key (a permutation, so distinct counters give distinct ids).
fn next_id_block() -> [u8; 16] {
    use aes_gcm::aes::Aes128;
    use aes_gcm::aes::cipher::{BlockCipherEncrypt, KeyInit};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static CIPHER: OnceLock<(Aes128, [u8; 8])> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (cipher, prefix) = CIPHER.get_or_init(|| {
        let key: [u8; 16] = crate::random::bytes();
        (Aes128::new(&key.into()), crate::random::bytes())
    });
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(prefix);
    block[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let mut block = block.into();
    cipher.encrypt_block(&mut block);
    block.into()
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

    #[test]
    fn generated_ids_never_repeat_and_show_no_count() {
        let ids: Vec<u128> = (0..10_000)
            .map(|_| u128::from_str_radix(RequestId::generate().as_str(), 16).unwrap())
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // A counter shown as it is would differ from the next id in a few low bits; an
        // encrypted one differs in about half of its 128 (below 24 is ~2^-40 likely).
        for pair in ids.windows(2) {
            let differing = (pair[0] ^ pair[1]).count_ones();
            assert!(
                differing >= 24,
                "consecutive ids differ in {differing} bits"
            );
        }
    }
}
