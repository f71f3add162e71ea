//! Sessions and pending logins: sealed, stored with a TTL, found again through the cookie.
//!
//! This module owns the crown jewels. Records leave it only sealed (see [`crypto`]); the store
//! sees hashes of ids and ciphertext. It knows nothing of HTTP or of the provider.

pub mod cache;
pub mod crypto;
pub mod login;
pub mod record;
pub mod refresh_lock;
pub mod store;
pub mod token;

use std::time::Duration;

pub use crypto::MasterKey;
pub use login::{BrowserBinding, LoginLookupError, PendingLogin};
pub use record::{SessionRecord, StoredToken, TokenSet};
pub use store::{Freshness, Store, StoreError};
pub use token::SessionToken;

use crate::clock::unix_now;

/// Longest a refresh may hold its cross-instance lock (longer than the provider timeout).
pub const REFRESH_LOCK_TTL: Duration = Duration::from_secs(20);

/// How long a started login may take before its `state` expires.
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(600);

/// A loaded session together with the cookie token that found it.
pub struct ActiveSession {
    /// The cookie token (needed to save or delete the session).
    pub token: SessionToken,
    /// The decrypted record.
    pub record: SessionRecord,
    /// When the session ends if unused (unix seconds), capped by its absolute end.
    pub idle_expires_at: u64,
}

/// Creates, finds, updates and ends sessions; stores and takes pending logins.
pub struct Sessions {
    store: Store,
    key: MasterKey,
    idle_timeout: Duration,
    absolute_timeout: Duration,
}

impl Sessions {
    /// Sessions in `store`, sealed under `key`, with the configured timeouts.
    pub fn new(
        store: Store,
        key: MasterKey,
        idle_timeout: Duration,
        absolute_timeout: Duration,
    ) -> Self {
        Self {
            store,
            key,
            idle_timeout,
            absolute_timeout,
        }
    }

    /// The absolute end (unix seconds) of a session created now.
    pub fn absolute_expiry_from_now(&self) -> u64 {
        unix_now() + self.absolute_timeout.as_secs()
    }

    /// Stores a new session under a fresh random token; never reuses anything the browser sent.
    pub async fn create(&self, record: &SessionRecord) -> Result<SessionToken, StoreError> {
        let token = SessionToken::generate();
        let (key, sealed, ttl) = self.seal_record(&token, record)?;
        self.store.put(&key, &sealed, ttl).await?;
        Ok(token)
    }

    /// Finds the session for `token`, sliding its idle timeout in the same round trip (with
    /// the record cache on, from memory, sliding at most once per touch interval).
    ///
    /// `Ok(None)` means "no valid session" (unknown, expired, or does not decrypt);
    /// an unreachable store is an error, so the caller answers 503 rather than logging out.
    pub async fn load(&self, token: &SessionToken) -> Result<Option<ActiveSession>, StoreError> {
        self.load_with(token, Freshness::Cached).await
    }

    /// Like [`Sessions::load`], but always from Redis: for decisions that must see what other
    /// instances wrote a moment ago (whether a refresh is still needed).
    pub async fn load_fresh(
        &self,
        token: &SessionToken,
    ) -> Result<Option<ActiveSession>, StoreError> {
        self.load_with(token, Freshness::FromRedis).await
    }

    async fn load_with(
        &self,
        token: &SessionToken,
        freshness: Freshness,
    ) -> Result<Option<ActiveSession>, StoreError> {
        let key = token.storage_key();
        let Some(read) = self
            .store
            .read_session(&key, self.idle_timeout, freshness)
            .await?
        else {
            return Ok(None);
        };
        let Ok(plaintext) = self.key.open(token.secret(), key.as_bytes(), &read.sealed) else {
            return Ok(None);
        };
        let Some(record) = SessionRecord::decode(&plaintext) else {
            return Ok(None);
        };
        let now = unix_now();
        if now >= record.expires_at {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        let idle_expires_at = now + self.idle_timeout.as_secs();
        if read.touched && idle_expires_at > record.expires_at {
            // The touch above may have stretched the key past the absolute end: pull it back.
            self.store
                .expire(&key, Duration::from_secs(record.expires_at - now))
                .await?;
        }
        // Untouched (a cached read), the key was last touched at most one interval ago.
        let idle_expires_at = match self.store.cache() {
            Some(cache) if !read.touched => {
                idle_expires_at.saturating_sub(cache.touch_interval().as_secs_f64().ceil() as u64)
            }
            _ => idle_expires_at,
        };
        Ok(Some(ActiveSession {
            token: token.clone(),
            idle_expires_at: idle_expires_at.min(record.expires_at),
            record,
        }))
    }

    /// Updates an existing session; `Ok(false)` if it was ended meanwhile (a logout wins over
    /// a refresh that finishes after it). The TTL is the idle timeout, capped by the absolute end.
    pub async fn update(
        &self,
        token: &SessionToken,
        record: &SessionRecord,
    ) -> Result<bool, StoreError> {
        let (key, sealed, ttl) = self.seal_record(token, record)?;
        self.store.replace(&key, &sealed, ttl).await
    }

    fn seal_record(
        &self,
        token: &SessionToken,
        record: &SessionRecord,
    ) -> Result<(String, Vec<u8>, Duration), StoreError> {
        let key = token.storage_key();
        let remaining = record.expires_at.saturating_sub(unix_now());
        let ttl = self.idle_timeout.min(Duration::from_secs(remaining.max(1)));
        let plaintext = record
            .encode()
            .map_err(|error| StoreError::Unavailable(format!("cannot encode session: {error}")))?;
        let sealed = self.key.seal(token.secret(), key.as_bytes(), &plaintext);
        Ok((key, sealed, ttl))
    }

    /// Takes the session's refresh lock across all instances sharing the store.
    pub async fn try_lock_refresh(
        &self,
        token: &SessionToken,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.store
            .try_lock(&token.refresh_lock_key(), owner, REFRESH_LOCK_TTL)
            .await
    }

    /// Releases the session's refresh lock if `owner` holds it.
    pub async fn unlock_refresh(
        &self,
        token: &SessionToken,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.store.unlock(&token.refresh_lock_key(), owner).await
    }

    /// Ends the session for `token`.
    pub async fn delete(&self, token: &SessionToken) -> Result<(), StoreError> {
        self.store.delete(&token.storage_key()).await
    }

    /// Stores a pending login for `binding`'s browser under its `state`.
    pub async fn put_pending_login(
        &self,
        binding: &BrowserBinding,
        pending: &PendingLogin,
    ) -> Result<(), StoreError> {
        let key = token::storage_key("login", pending.state.as_bytes());
        let plaintext = serde_json::to_vec(pending)
            .map_err(|error| StoreError::Unavailable(format!("cannot encode login: {error}")))?;
        let sealed = self.key.seal(binding.secret(), key.as_bytes(), &plaintext);
        self.store.put(&key, &sealed, PENDING_LOGIN_TTL).await
    }

    /// Takes (at most once) the pending login for `state`, if this browser started it.
    ///
    /// The binding is checked before the record is consumed, so a stranger who learns a
    /// `state` cannot cancel someone else's login; the consuming `GETDEL` keeps it single use.
    pub async fn take_pending_login(
        &self,
        binding: Option<&BrowserBinding>,
        state: &str,
    ) -> Result<Result<PendingLogin, LoginLookupError>, StoreError> {
        let key = token::storage_key("login", state.as_bytes());
        let Some(sealed) = self.store.get(&key).await? else {
            return Ok(Err(LoginLookupError::UnknownState));
        };
        let opened = binding.and_then(|binding| {
            let plaintext = self
                .key
                .open(binding.secret(), key.as_bytes(), &sealed)
                .ok()?;
            serde_json::from_slice::<PendingLogin>(&plaintext).ok()
        });
        let Some(pending) = opened.filter(|pending| pending.state_matches(state)) else {
            return Ok(Err(LoginLookupError::OtherBrowser));
        };
        match self.store.take(&key).await? {
            Some(taken) if taken == sealed => Ok(Ok(pending)),
            _ => Ok(Err(LoginLookupError::UnknownState)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(idle: u64, absolute: u64) -> Sessions {
        Sessions::new(
            Store::memory(),
            MasterKey::new([7; 32]),
            Duration::from_secs(idle),
            Duration::from_secs(absolute),
        )
    }

    fn record(expires_at: u64) -> SessionRecord {
        SessionRecord {
            sub: "alice".into(),
            tokens: TokenSet {
                access_token: "at".into(),
                access_expires_at: None,
                obtained_at: 0,
                refresh_token: None,
                id_token: "id".into(),
            },
            created_at: unix_now(),
            expires_at,
            logout_sid: "sid".into(),
        }
    }

    #[tokio::test]
    async fn created_session_loads_with_its_token_only() {
        let sessions = sessions(60, 600);
        let token = sessions.create(&record(unix_now() + 600)).await.unwrap();
        let loaded = sessions.load(&token).await.unwrap().unwrap();
        assert_eq!(loaded.record.sub, "alice");
        assert!(loaded.idle_expires_at <= unix_now() + 60);
        assert!(
            sessions
                .load(&SessionToken::generate())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn session_past_absolute_expiry_is_gone() {
        let sessions = sessions(60, 600);
        let token = sessions.create(&record(unix_now() + 600)).await.unwrap();
        let mut expired = record(unix_now().saturating_sub(1));
        expired.sub = "bob".into();
        // Write directly with a long TTL to prove the absolute check does not rely on the TTL.
        let key = token.storage_key();
        let sealed = sessions
            .key
            .seal(token.secret(), key.as_bytes(), &expired.encode().unwrap());
        sessions
            .store
            .put(&key, &sealed, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(sessions.load(&token).await.unwrap().is_none());
        assert!(
            sessions.store.take(&key).await.unwrap().is_none(),
            "deleted"
        );
    }

    #[tokio::test]
    async fn idle_expiry_is_capped_by_the_absolute_end() {
        let sessions = sessions(600, 600);
        let end = unix_now() + 10;
        let token = sessions.create(&record(end)).await.unwrap();
        assert_eq!(
            sessions
                .load(&token)
                .await
                .unwrap()
                .unwrap()
                .idle_expires_at,
            end
        );
    }

    #[tokio::test]
    async fn update_does_not_resurrect_an_ended_session() {
        let sessions = sessions(60, 600);
        let token = sessions.create(&record(unix_now() + 600)).await.unwrap();
        assert!(
            sessions
                .update(&token, &record(unix_now() + 600))
                .await
                .unwrap()
        );
        sessions.delete(&token).await.unwrap();
        assert!(
            !sessions
                .update(&token, &record(unix_now() + 600))
                .await
                .unwrap()
        );
        assert!(sessions.load(&token).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn pending_login_is_single_use_and_bound_to_its_browser() {
        let sessions = sessions(60, 600);
        let mine = BrowserBinding::generate();
        let pending = |state: &str| PendingLogin {
            state: state.into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/x".into(),
        };
        sessions
            .put_pending_login(&mine, &pending("s1"))
            .await
            .unwrap();
        let taken = sessions
            .take_pending_login(Some(&mine), "s1")
            .await
            .unwrap();
        assert_eq!(taken.unwrap().return_to, "/x");
        let replay = sessions
            .take_pending_login(Some(&mine), "s1")
            .await
            .unwrap();
        assert_eq!(replay.err(), Some(LoginLookupError::UnknownState));

        sessions
            .put_pending_login(&mine, &pending("s2"))
            .await
            .unwrap();
        let other = BrowserBinding::generate();
        let stolen = sessions
            .take_pending_login(Some(&other), "s2")
            .await
            .unwrap();
        assert_eq!(stolen.err(), Some(LoginLookupError::OtherBrowser));

        sessions
            .put_pending_login(&mine, &pending("s3"))
            .await
            .unwrap();
        let no_cookie = sessions.take_pending_login(None, "s3").await.unwrap();
        assert_eq!(no_cookie.err(), Some(LoginLookupError::OtherBrowser));
    }
}
