//! Pending logins: what the callback needs to finish a login started by this browser.
//!
//! A pending login is stored under a hash of its `state`, sealed with the secret of the
//! browser's login cookie, and taken with an atomic get-and-delete: it works once, only in the
//! browser that started it, and only until its TTL runs out.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The login cookie's value: a random secret binding pending logins to one browser.
///
/// One value per browser is reused across parallel logins, so tabs do not pile up cookies.
#[derive(Clone)]
pub struct BrowserBinding([u8; 32]);

impl BrowserBinding {
    /// A new random binding.
    pub fn generate() -> Self {
        Self(crate::random::bytes())
    }

    /// Parses a login cookie value; malformed values are `None`.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The cookie value.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }

    /// The store key of this browser's index of pending logins (a hash: the store never
    /// holds the cookie).
    pub(crate) fn index_key(&self) -> String {
        super::token::storage_key("login-browser", &self.0)
    }
}

/// Everything the callback needs from the request that started the login.
#[derive(Serialize, Deserialize)]
pub struct PendingLogin {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub pkce_verifier: String,
    /// Where to send the browser afterwards (already validated).
    pub return_to: String,
    /// The session cookie this browser sent when it started the login (encoded), so the
    /// callback can end that session: the `SameSite=Strict` cookie itself does not come back
    /// on the provider's cross-site redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session: Option<String>,
}

impl PendingLogin {
    /// Constant-time comparison of the stored `state` with the one the callback received.
    pub fn state_matches(&self, received: &str) -> bool {
        self.state.as_bytes().ct_eq(received.as_bytes()).into()
    }
}

/// Why a callback's `state` does not lead to a pending login.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginLookupError {
    /// Unknown, already used or expired `state`.
    #[error("the login request is unknown, expired or was already used")]
    UnknownState,
    /// The pending login exists but this browser did not start it.
    #[error("the login was started in another browser")]
    OtherBrowser,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_round_trips_and_rejects_garbage() {
        let b = BrowserBinding::generate();
        assert_eq!(BrowserBinding::parse(&b.encode()).unwrap().0, b.0);
        assert!(BrowserBinding::parse("short").is_none());
        assert!(BrowserBinding::parse(&"*".repeat(43)).is_none());
    }

    #[test]
    fn state_comparison_is_exact() {
        let p = PendingLogin {
            state: "abc".into(),
            nonce: String::new(),
            pkce_verifier: String::new(),
            return_to: "/".into(),
            previous_session: None,
        };
        assert!(p.state_matches("abc"));
        assert!(!p.state_matches("abd"));
        assert!(!p.state_matches("ab"));
        assert!(!p.state_matches(""));
    }
}
