//! Tokens a session holds for one API beside the login's (a route's `exchange` or `refresh`
//! credential), and the client's own tokens (`client`), each under a key of its own.
//!
//! A session's API token is sealed like its record: with the browser's half of the key, so
//! neither a Redis dump nor the server keys alone open it (it is never escrowed). Its key lives
//! no longer than the token, and is deleted with the session (`drop_held_tokens`). The
//! client's tokens belong to no session: they are sealed under the server keys alone and shared
//! by every instance. Which token is due and who fetches it is [`crate::refresh`]'s business.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::Cached;
use super::{Freshness, SessionCookie, Sessions, StoreError, StoredToken};
use crate::clock::unix_now;

// A held token's key swaps its session's prefix for its own, then the credential; the
// client's own tokens have theirs. The store's cache tracks all three prefixes.
use super::store::redis::cache::{
    CLIENT_TOKEN_KEY_PREFIX as CLIENT_KEY_PREFIX, HELD_TOKEN_KEY_PREFIX as HELD_KEY_PREFIX,
    SESSION_KEY_PREFIX,
};

/// A token held for one API. Not `Debug`: it is a secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct HeldToken {
    /// The bearer token.
    #[serde(rename = "a")]
    pub access_token: StoredToken,
    /// When it expires (unix seconds).
    #[serde(rename = "e")]
    pub expires_at: u64,
    /// When it was obtained (unix seconds).
    #[serde(rename = "o")]
    pub obtained_at: u64,
    /// Whether it replaced a token an upstream rejected as invalid: such a token is never the
    /// reason for another forced replacement.
    #[serde(rename = "f", default)]
    pub forced: bool,
    /// Whether it is DPoP-bound (`token_type` `DPoP`): sent only with a proof of the session's
    /// key, never as `Bearer`.
    #[serde(rename = "d", default, skip_serializing_if = "std::ops::Not::not")]
    pub dpop_bound: bool,
}

/// A held token as opened: the token, and its text turned back from its stored form once
/// (kept beside the sealed bytes, it serves every call of its session as it is).
pub struct OpenedHeldToken {
    /// The token as stored.
    pub token: HeldToken,
    /// The access token's text, as an upstream receives it.
    pub text: String,
}

impl std::ops::Deref for OpenedHeldToken {
    type Target = HeldToken;

    fn deref(&self) -> &HeldToken {
        &self.token
    }
}

impl HeldToken {
    /// Whether it should be replaced at `now` given the refresh skew, capped (as for the
    /// login's token) at half its lifetime so short-lived tokens are not replaced on every call.
    pub fn needs_replacing(&self, now: u64, skew_secs: u64) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.obtained_at);
        now + skew_secs.min(lifetime / 2) >= self.expires_at
    }
}

/// The store key of the token `credential_id` held for the session whose key is
/// `session_key`.
pub fn held_token_key(session_key: &str, credential_id: &str) -> String {
    let hash = session_key
        .strip_prefix(SESSION_KEY_PREFIX)
        .unwrap_or(session_key);
    format!("{HELD_KEY_PREFIX}{hash}:{credential_id}")
}

/// The store key of the client's own token for `credential_id`.
pub fn client_token_key(credential_id: &str) -> String {
    format!("{CLIENT_KEY_PREFIX}{credential_id}")
}

impl Sessions {
    /// The token `credential_id` the session of `cookie` holds, if any still opens: `Recent`
    /// may come from the in-process cache; `Current` (or `Touched`) is what Redis holds now,
    /// for a decision to fetch one.
    pub async fn held_token(
        &self,
        cookie: &SessionCookie,
        credential_id: &str,
        freshness: Freshness,
    ) -> Result<Option<Arc<OpenedHeldToken>>, StoreError> {
        let key = held_token_key(&cookie.storage_key(), credential_id);
        let Some(read) = self.read_held(&key, freshness).await? else {
            return Ok(None);
        };
        Ok(self.opened_token(&key, &read, cookie.secret(), |sealed| {
            self.keys.open(cookie.secret(), key.as_bytes(), sealed).ok()
        }))
    }

    /// The token sealed in `read` of `key`: the one kept beside those bytes if `secret` opened
    /// it before, else what `open` opens (then kept there too, as session records are; see
    /// `opened.rs`). `None` if it does not open.
    fn opened_token(
        &self,
        key: &str,
        read: &Cached,
        secret: &[u8],
        open: impl FnOnce(&[u8]) -> Option<super::crypto::Opened>,
    ) -> Option<Arc<OpenedHeldToken>> {
        let kept = self.kept::<OpenedHeldToken>(read.opened.as_ref(), secret);
        if kept.is_some() {
            return kept;
        }
        let opened = open(&read.sealed)?;
        let token = rmp_serde::from_slice::<HeldToken>(&opened.plaintext).ok()?;
        let token = Arc::new(OpenedHeldToken {
            text: token.access_token.text(),
            token,
        });
        self.keep_opened(key, &read.sealed, secret, token.clone());
        Some(token)
    }

    /// Keeps `token` as the session's `credential_id` until it expires (never beyond the
    /// session's absolute end, `session_expires_at`).
    pub async fn keep_held_token(
        &self,
        cookie: &SessionCookie,
        credential_id: &str,
        token: &HeldToken,
        session_expires_at: u64,
    ) -> Result<(), StoreError> {
        let key = held_token_key(&cookie.storage_key(), credential_id);
        let sealed = self
            .keys
            .seal(cookie.secret(), key.as_bytes(), &encode(token)?);
        let ttl = lifetime(token.expires_at.min(session_expires_at));
        self.store.put(&key, &sealed, ttl).await
    }

    /// The client's own token for `credential_id`, if any still opens (`freshness` as for
    /// [`Sessions::held_token`]).
    pub async fn client_token(
        &self,
        credential_id: &str,
        freshness: Freshness,
    ) -> Result<Option<Arc<OpenedHeldToken>>, StoreError> {
        let key = client_token_key(credential_id);
        let Some(read) = self.read_held(&key, freshness).await? else {
            return Ok(None);
        };
        // Sealed under the server keys alone: no browser secret stands between a call and it.
        Ok(self.opened_token(&key, &read, &[], |sealed| {
            self.keys
                .open_for_server(
                    key.as_bytes(),
                    sealed,
                    super::crypto::ServerSealing::PerRecord,
                )
                .ok()
        }))
    }

    /// Keeps `token` as the client's own `credential_id`, shared by every instance, until it
    /// expires.
    pub async fn keep_client_token(
        &self,
        credential_id: &str,
        token: &HeldToken,
    ) -> Result<(), StoreError> {
        let key = client_token_key(credential_id);
        let sealed = self.keys.seal_for_server(key.as_bytes(), &encode(token)?);
        self.store
            .put(&key, &sealed, lifetime(token.expires_at))
            .await
    }

    /// The sealed token under `key`, as current as `freshness` asks.
    async fn read_held(
        &self,
        key: &str,
        freshness: Freshness,
    ) -> Result<Option<Cached>, StoreError> {
        Ok(match freshness {
            Freshness::Recent => self.store.read_untouched(key).await?,
            Freshness::Current | Freshness::Touched => {
                self.store.get(key).await?.map(Cached::sealed_only)
            }
        })
    }

    /// The tokens the session of `cookie` holds for the configured credentials, as text (to
    /// revoke them once it has ended). Best effort: one that cannot be read is left out.
    pub async fn held_tokens_of(&self, cookie: &SessionCookie) -> Vec<String> {
        let mut tokens = Vec::new();
        for credential_id in self.held_credentials.iter() {
            match self
                .held_token(cookie, credential_id, Freshness::Current)
                .await
            {
                Ok(Some(held)) => tokens.push(held.text.clone()),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "reading an ending session's API token failed; it is not revoked");
                }
            }
        }
        tokens
    }

    /// Deletes the tokens the session stored under `session_key` holds for the configured
    /// credentials. Best effort: a key left behind opens only with the session's cookie and
    /// expires with its token.
    pub(crate) async fn drop_held_tokens(&self, session_key: &str) {
        for credential_id in self.held_credentials.iter() {
            let key = held_token_key(session_key, credential_id);
            if let Err(error) = self.store.delete(&key).await {
                tracing::warn!(error = %error, "dropping an ended session's API token failed; it expires with the token");
            }
        }
    }
}

/// Seconds from now until `at`, at least one.
fn lifetime(at: u64) -> Duration {
    Duration::from_secs(at.saturating_sub(unix_now()).max(1))
}

/// A held token's stored form.
fn encode(token: &HeldToken) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(token)
        .map_err(|error| StoreError::Unavailable(format!("cannot encode a held token: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_tokens_key_names_its_session_by_the_same_hash_and_never_as_a_session() {
        let cookie = SessionCookie::generate();
        let session_key = cookie.storage_key();
        let key = held_token_key(&session_key, "0123456789abcdef");
        let hash = session_key.strip_prefix(SESSION_KEY_PREFIX).unwrap();
        assert_eq!(key, format!("vestibule:credential:{hash}:0123456789abcdef"));
        assert!(!key.starts_with(SESSION_KEY_PREFIX));
    }

    #[test]
    fn a_token_is_replaced_before_it_expires_but_not_on_every_call_when_short_lived() {
        let token = |obtained_at, expires_at| HeldToken {
            access_token: StoredToken::new("t"),
            expires_at,
            obtained_at,
            forced: false,
            dpop_bound: false,
        };
        assert!(!token(0, 300).needs_replacing(200, 60));
        assert!(token(0, 300).needs_replacing(240, 60));
        // Ten seconds long: the skew is capped at five.
        assert!(!token(0, 10).needs_replacing(4, 60));
        assert!(token(0, 10).needs_replacing(5, 60));
    }
}
