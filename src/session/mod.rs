//! Sessions and pending logins: sealed, stored with a TTL, found again through the cookie.
//!
//! This module owns the crown jewels. Records leave it only sealed (see [`crypto`]); the store
//! sees hashes of ids and ciphertext. It knows nothing of HTTP or of the provider.

pub mod cookie_value;
pub mod crypto;
pub mod login;
pub mod record;
pub mod store;

use std::time::Duration;

pub use cookie_value::SessionCookie;
pub use crypto::MasterKey;
pub use login::{BrowserBinding, LoginLookupError, PendingLogin};
pub use record::{SessionRecord, StoredToken, TokenSet};
pub use store::{Displaced, Freshness, PendingLimits, Store, StoreError};

use crate::clock::unix_now;

/// Reads a logout makes before it settles for whatever the session holds.
const END_ATTEMPTS: usize = 3;

/// A refreshed record sealed for one session, ready to be written (see
/// [`Sessions::replace`]).
pub struct Replacement {
    key: String,
    expected: Vec<u8>,
    sealed: Vec<u8>,
    ttl: Duration,
}

/// How long a started login may take before its `state` expires.
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(600);

/// A loaded session together with the session cookie that found it.
pub struct ActiveSession {
    /// The session cookie (needed to save or delete the session).
    pub cookie: SessionCookie,
    /// The decrypted record.
    pub record: SessionRecord,
    /// When the session ends if unused (unix seconds, capped by its absolute end), known when
    /// this read pushed the idle expiry back; a read that did not touch it does not know it.
    pub idle_expires_at: Option<u64>,
    /// The sealed record as read: a later write succeeds only if the store still holds it.
    sealed: Vec<u8>,
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

    /// The store the sessions live in; the refresh protocol keeps its cross-instance lock
    /// there too (see [`crate::refresh`]).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The absolute end (unix seconds) of a session created now.
    pub fn absolute_expiry_from_now(&self) -> u64 {
        unix_now() + self.absolute_timeout.as_secs()
    }

    /// Stores a new session under a fresh random cookie; never reuses anything the browser sent.
    pub async fn create(&self, record: &SessionRecord) -> Result<SessionCookie, StoreError> {
        let cookie = SessionCookie::generate();
        let (key, sealed, ttl) = self.seal_record(&cookie, record)?;
        self.store.put(&key, &sealed, ttl).await?;
        Ok(cookie)
    }

    /// Finds the session for `cookie`, recent enough to serve a request; the store slides its
    /// idle timeout in the same round trip whenever that is due.
    ///
    /// `Ok(None)` means "no valid session" (unknown, expired, or does not decrypt);
    /// an unreachable store is an error, so the caller answers 503 rather than logging out.
    pub async fn load(&self, cookie: &SessionCookie) -> Result<Option<ActiveSession>, StoreError> {
        self.load_with(cookie, Freshness::Recent).await
    }

    /// Like [`Sessions::load`], but exactly as the store holds it now: for decisions that must
    /// see what other instances wrote a moment ago (whether a refresh is still needed).
    pub async fn load_fresh(
        &self,
        cookie: &SessionCookie,
    ) -> Result<Option<ActiveSession>, StoreError> {
        self.load_with(cookie, Freshness::Current).await
    }

    /// Like [`Sessions::load_fresh`], and pushes the idle expiry back now, so
    /// [`ActiveSession::idle_expires_at`] is the deadline the store enforces.
    pub async fn load_touched(
        &self,
        cookie: &SessionCookie,
    ) -> Result<Option<ActiveSession>, StoreError> {
        self.load_with(cookie, Freshness::Touched).await
    }

    async fn load_with(
        &self,
        cookie: &SessionCookie,
        freshness: Freshness,
    ) -> Result<Option<ActiveSession>, StoreError> {
        let key = cookie.storage_key();
        let Some(read) = self
            .store
            .read_session(&key, self.idle_timeout, freshness)
            .await?
        else {
            return Ok(None);
        };
        let Some(record) = self.open_record(cookie, &key, &read.sealed) else {
            return Ok(None);
        };
        let now = unix_now();
        if now >= record.expires_at {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        if read.touched_at.is_some() && now + self.idle_timeout.as_secs() > record.expires_at {
            // The touch above may have stretched the key past the absolute end: pull it back.
            self.store
                .expire(&key, Duration::from_secs(record.expires_at - now))
                .await?;
        }
        // The touch time is taken before the command was sent, so this deadline is never later
        // than the one the store enforces.
        let idle_expires_at = read
            .touched_at
            .map(|at| (at + self.idle_timeout.as_secs()).min(record.expires_at));
        Ok(Some(ActiveSession {
            cookie: cookie.clone(),
            idle_expires_at,
            record,
            sealed: read.sealed,
        }))
    }

    /// Seals `record` to replace what `current` read. Sealed once, so a retried write of the
    /// same replacement is recognised if an earlier attempt's reply was lost.
    pub fn prepare_replacement(
        &self,
        current: &ActiveSession,
        record: &SessionRecord,
    ) -> Result<Replacement, StoreError> {
        let (key, sealed, ttl) = self.seal_record(&current.cookie, record)?;
        Ok(Replacement {
            key,
            expected: current.sealed.clone(),
            sealed,
            ttl,
        })
    }

    /// Writes `replacement` only if the store still holds exactly what its session read:
    /// `Ok(false)` if the session was ended or rewritten meanwhile (a logout wins over a
    /// refresh that finishes after it, and a refresh whose lock lapsed cannot overwrite the
    /// next holder's tokens). `Ok(true)` also when an earlier attempt of this replacement
    /// already wrote it. The TTL is the idle timeout, capped by the absolute end.
    pub async fn replace(&self, replacement: &Replacement) -> Result<bool, StoreError> {
        let Replacement {
            key,
            expected,
            sealed,
            ttl,
        } = replacement;
        if self
            .store
            .replace_if_unchanged(key, expected, sealed, *ttl)
            .await?
        {
            return Ok(true);
        }
        // The sealed bytes carry a fresh random nonce: finding them means we wrote them.
        Ok(self.store.get(key).await?.as_deref() == Some(sealed.as_slice()))
    }

    /// Deletes the session only if the store still holds exactly what `current` read: a
    /// refresh whose lock lapsed must not end a session another instance just renewed.
    pub async fn delete_if_unchanged(&self, current: &ActiveSession) -> Result<bool, StoreError> {
        self.store
            .delete_if_unchanged(&current.cookie.storage_key(), &current.sealed)
            .await
    }

    /// Ends the session for `cookie` and returns its record as the store held it at that moment
    /// (never a copy that may lag: a logout must revoke the refresh token that is current, even if
    /// another instance rotated it a moment ago). `None` if there was no valid session; a
    /// cookie whose secret does not open the record deletes nothing.
    pub async fn end(&self, cookie: &SessionCookie) -> Result<Option<SessionRecord>, StoreError> {
        let key = cookie.storage_key();
        for _ in 0..END_ATTEMPTS {
            let Some(sealed) = self.store.get(&key).await? else {
                return Ok(None);
            };
            let Some(record) = self.open_record(cookie, &key, &sealed) else {
                return Ok(None);
            };
            if self.store.delete_if_unchanged(&key, &sealed).await? {
                return Ok(Some(record));
            }
            // Rewritten between the read and the delete (a refresh elsewhere): read again.
        }
        // Rewritten on every attempt: take whatever is there now.
        let Some(sealed) = self.store.take(&key).await? else {
            return Ok(None);
        };
        Ok(self.open_record(cookie, &key, &sealed))
    }

    fn open_record(
        &self,
        cookie: &SessionCookie,
        key: &str,
        sealed: &[u8],
    ) -> Option<SessionRecord> {
        let plaintext = self
            .key
            .open(cookie.secret(), key.as_bytes(), sealed)
            .ok()?;
        SessionRecord::decode(&plaintext)
    }

    fn seal_record(
        &self,
        cookie: &SessionCookie,
        record: &SessionRecord,
    ) -> Result<(String, Vec<u8>, Duration), StoreError> {
        let key = cookie.storage_key();
        let remaining = record.expires_at.saturating_sub(unix_now());
        let ttl = self.idle_timeout.min(Duration::from_secs(remaining.max(1)));
        let plaintext = record
            .encode()
            .map_err(|error| StoreError::Unavailable(format!("cannot encode session: {error}")))?;
        let sealed = self.key.seal(cookie.secret(), key.as_bytes(), &plaintext);
        Ok((key, sealed, ttl))
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
        let cookie = sessions.create(&record(unix_now() + 600)).await.unwrap();
        let loaded = sessions.load(&cookie).await.unwrap().unwrap();
        assert_eq!(loaded.record.sub, "alice");
        assert!(loaded.idle_expires_at.unwrap() <= unix_now() + 60);
        assert!(
            sessions
                .load(&SessionCookie::generate())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn session_past_absolute_expiry_is_gone() {
        let sessions = sessions(60, 600);
        let cookie = sessions.create(&record(unix_now() + 600)).await.unwrap();
        let mut expired = record(unix_now().saturating_sub(1));
        expired.sub = "bob".into();
        // Write directly with a long TTL to prove the absolute check does not rely on the TTL.
        let key = cookie.storage_key();
        let sealed = sessions
            .key
            .seal(cookie.secret(), key.as_bytes(), &expired.encode().unwrap());
        sessions
            .store
            .put(&key, &sealed, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(sessions.load(&cookie).await.unwrap().is_none());
        assert!(
            sessions.store.take(&key).await.unwrap().is_none(),
            "deleted"
        );
    }

    #[tokio::test]
    async fn idle_expiry_is_capped_by_the_absolute_end() {
        let sessions = sessions(600, 600);
        let end = unix_now() + 10;
        let cookie = sessions.create(&record(end)).await.unwrap();
        assert_eq!(
            sessions
                .load(&cookie)
                .await
                .unwrap()
                .unwrap()
                .idle_expires_at,
            Some(end)
        );
    }

    #[tokio::test]
    async fn replace_writes_only_over_the_record_it_read() {
        let sessions = sessions(60, 600);
        let cookie = sessions.create(&record(unix_now() + 600)).await.unwrap();
        let first = sessions.load_fresh(&cookie).await.unwrap().unwrap();
        let second = sessions.load_fresh(&cookie).await.unwrap().unwrap();
        let mut refreshed = record(unix_now() + 600);
        refreshed.sub = "alice-2".into();
        let replacement = sessions.prepare_replacement(&first, &refreshed).unwrap();
        assert!(sessions.replace(&replacement).await.unwrap());
        assert!(
            sessions.replace(&replacement).await.unwrap(),
            "a retry of a write that landed counts as done"
        );
        let stale = sessions
            .prepare_replacement(&second, &record(unix_now() + 600))
            .unwrap();
        assert!(
            !sessions.replace(&stale).await.unwrap(),
            "a writer holding an older read cannot overwrite the newer record"
        );
        assert!(
            !sessions.delete_if_unchanged(&second).await.unwrap(),
            "nor delete it"
        );
        let current = sessions.load(&cookie).await.unwrap().unwrap();
        assert_eq!(current.record.sub, "alice-2");
        let ended = sessions.end(&cookie).await.unwrap().unwrap();
        assert_eq!(ended.sub, "alice-2", "ending returns the record it ended");
        let late = sessions
            .prepare_replacement(&current, &record(unix_now() + 600))
            .unwrap();
        assert!(
            !sessions.replace(&late).await.unwrap(),
            "an ended session is not resurrected"
        );
        assert!(sessions.load(&cookie).await.unwrap().is_none());
        assert!(sessions.end(&cookie).await.unwrap().is_none());
    }
}
