//! The session cookie's value: an opaque session id plus a per-session secret.
//!
//! Both halves are 256 random bits from the OS. The id locates the record (through a hash, so a
//! store dump cannot be turned back into a cookie); the secret is half of the record's key and
//! is never stored server-side.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::store::storage_key;

const HALF_LEN: usize = 32;
/// Length of the encoded cookie value: base64url (no padding) of 64 bytes.
const ENCODED_LEN: usize = 86;

/// What the browser holds for one session. Deliberately not `Debug`: it is a credential.
#[derive(Clone)]
pub struct SessionCookie {
    id: [u8; HALF_LEN],
    secret: [u8; HALF_LEN],
}

impl SessionCookie {
    /// A fresh cookie value with a new random id and secret.
    pub fn generate() -> Self {
        Self {
            id: crate::random::bytes(),
            secret: crate::random::bytes(),
        }
    }

    /// Parses a cookie value; anything but exactly one well-formed value is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != ENCODED_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let (id, secret) = bytes.split_at_checked(HALF_LEN)?;
        Some(Self {
            id: id.try_into().ok()?,
            secret: secret.try_into().ok()?,
        })
    }

    /// The cookie value.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; HALF_LEN * 2];
        bytes[..HALF_LEN].copy_from_slice(&self.id);
        bytes[HALF_LEN..].copy_from_slice(&self.secret);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The store key: a hash of the id, so the store never holds a usable cookie.
    pub fn storage_key(&self) -> String {
        storage_key("session", &self.id)
    }

    /// The store key of this session's cross-instance refresh lock.
    pub fn refresh_lock_key(&self) -> String {
        storage_key("refresh-lock", &self.id)
    }

    /// The browser-held half of the record key.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_round_trips_through_its_encoding() {
        let cookie = SessionCookie::generate();
        let parsed = SessionCookie::parse(&cookie.encode()).unwrap();
        assert_eq!(parsed.storage_key(), cookie.storage_key());
        assert_eq!(parsed.secret(), cookie.secret());
    }

    #[test]
    fn generated_cookies_are_distinct_and_long() {
        let a = SessionCookie::generate().encode();
        let b = SessionCookie::generate().encode();
        assert_ne!(a, b);
        assert_eq!(a.len(), 86, "512 bits of randomness, base64url");
    }

    #[test]
    fn malformed_values_are_rejected() {
        let good = SessionCookie::generate().encode();
        assert!(SessionCookie::parse("").is_none());
        assert!(SessionCookie::parse(&good[..85]).is_none(), "truncated");
        assert!(
            SessionCookie::parse(&format!("{good}A")).is_none(),
            "extended"
        );
        let mut bad = good.clone();
        bad.replace_range(0..1, "*");
        assert!(SessionCookie::parse(&bad).is_none(), "not base64url");
        assert!(SessionCookie::parse(&good.replace(|_| true, "=")).is_none());
    }

    #[test]
    fn storage_key_does_not_reveal_the_id() {
        let cookie = SessionCookie::generate();
        let key = cookie.storage_key();
        assert!(key.starts_with("vestibule:session:"));
        assert!(!key.contains(&cookie.encode()[..20]));
        assert_eq!(key.len(), "vestibule:session:".len() + 64);
    }
}
