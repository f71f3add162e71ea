//! What one session remembers: the user's tokens, ID-token claims and lifetimes.
//!
//! Records exist in plaintext only in memory; [`super::Sessions`] seals them before storing.
//! Nothing here is `Debug`, so a token cannot reach a log line by accident.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The provider's tokens for one session.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenSet {
    /// The bearer token forwarded to upstream APIs.
    pub access_token: String,
    /// When the access token expires (unix seconds), if the provider said so.
    pub access_expires_at: Option<u64>,
    /// When the access token was obtained (unix seconds).
    pub obtained_at: u64,
    /// The refresh token, if the provider issued one.
    pub refresh_token: Option<String>,
    /// The most recent ID token (for `id_token_hint` at logout).
    pub id_token: String,
}

impl TokenSet {
    /// Whether the access token should be refreshed at `now` given the configured skew.
    ///
    /// The skew is capped at half the token's lifetime, so a provider issuing tokens shorter
    /// than the skew does not cause a refresh on every request.
    pub fn needs_refresh(&self, now: u64, skew_secs: u64) -> bool {
        match self.access_expires_at {
            Some(expires_at) => {
                let lifetime = expires_at.saturating_sub(self.obtained_at);
                let skew = skew_secs.min(lifetime / 2);
                now + skew >= expires_at
            }
            None => false,
        }
    }

    /// Whether the access token is already past its expiry at `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.access_expires_at.is_some_and(|at| now >= at)
    }
}

/// One logged-in session.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The user's subject identifier at the provider.
    pub sub: String,
    /// The claims of the verified ID token.
    pub claims: Map<String, Value>,
    /// The provider's tokens.
    pub tokens: TokenSet,
    /// When the session was created (unix seconds).
    pub created_at: u64,
    /// Absolute end of the session (unix seconds), however active it is.
    pub expires_at: u64,
    /// Random value that authorises `GET /api/auth/logout?sid=…` for this session only.
    pub logout_sid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(obtained_at: u64, expires_at: Option<u64>) -> TokenSet {
        TokenSet {
            access_token: "at".into(),
            access_expires_at: expires_at,
            obtained_at,
            refresh_token: None,
            id_token: "id".into(),
        }
    }

    #[test]
    fn refresh_is_due_within_the_skew() {
        let t = tokens(1000, Some(1300));
        assert!(!t.needs_refresh(1200, 30));
        assert!(t.needs_refresh(1270, 30));
        assert!(t.needs_refresh(1400, 30));
    }

    #[test]
    fn skew_is_capped_at_half_the_lifetime() {
        // A 10 s token with a 30 s skew: refresh after 5 s, not on every request.
        let t = tokens(1000, Some(1010));
        assert!(!t.needs_refresh(1001, 30));
        assert!(t.needs_refresh(1005, 30));
    }

    #[test]
    fn tokens_without_expiry_are_never_refreshed_proactively() {
        assert!(!tokens(1000, None).needs_refresh(u64::MAX / 2, 30));
        assert!(!tokens(1000, None).is_expired(u64::MAX / 2));
    }
}
