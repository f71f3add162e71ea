//! Sessions and pending logins: sealed, stored with a TTL, found again through the cookie.
//!
//! This module owns the crown jewels. Records leave it only sealed (see [`crypto`]); the store
//! sees hashes of ids and ciphertext. It knows nothing of HTTP or of the provider.

mod byte_string;
pub mod cookie_value;
pub mod crypto;
pub mod dpop_key;
pub mod escrow;
pub mod held_tokens;
pub mod index;
mod index_names;
pub mod login;
mod logout_tokens;
mod opened;
pub mod record;
pub mod replacement;
mod signing_algs;
pub mod store;
pub mod watch;

use std::time::Duration;
use tracing::Instrument;

pub use cookie_value::SessionCookie;
pub use crypto::{KeyId, KeyRing, MasterKey};
pub use dpop_key::StoredDpopKey;
pub use escrow::{Ended, EndedRefreshToken};
pub use held_tokens::HeldToken;
pub use index::{DEFAULT_MAX_PER_USER, SessionList, SessionOrigin, SessionSummary};
pub use login::{BrowserBinding, LoginLookupError, PendingLogin};
pub use record::{SessionRecord, StoredToken, TokenSet, scoped_identifier};
pub use store::{Displaced, Freshness, PendingLimits, Store, StoreError};
pub use watch::{SessionEnd, SessionWatch, Timeout};

use crate::clock::unix_now;

/// Reads a logout makes before it settles for whatever the session holds.
const END_ATTEMPTS: usize = 3;

/// What happens when a session is used suspiciously (`session.suspicious_use`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspiciousUseAction {
    /// Report the security event only.
    #[default]
    Log,
    /// Report it and end the session.
    End,
}

/// What [`Sessions::create_within_limit`] did.
pub struct Created {
    /// The new session's cookie; `None` if the session was ended while it was being created
    /// (a back-channel logout, "end all others", or a concurrent login beyond the limit).
    pub cookie: Option<SessionCookie>,
    /// The sessions it displaced beyond `session.max_per_user`, already ended.
    pub displaced: Ended,
}

/// Why a session that was ended while being created has no cookie.
pub const ENDED_WHILE_CREATED: &str = "the session was ended while it was being created";

/// How long a started login may take before its `state` expires.
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(600);

/// A loaded session together with the session cookie that found it.
pub struct ActiveSession {
    /// The session cookie (needed to save or delete the session).
    pub cookie: SessionCookie,
    /// The decrypted record (shared with the tracked cache when it keeps opened records).
    pub record: std::sync::Arc<SessionRecord>,
    /// When the session ends if unused (unix seconds, capped by its absolute end), known when
    /// this read pushed the idle expiry back; a read that did not touch it does not know it.
    pub idle_expires_at: Option<u64>,
    /// The sealed record as read: a later write succeeds only if the store still holds it.
    sealed: std::sync::Arc<[u8]>,
}

/// Creates, finds, updates and ends sessions; stores and takes pending logins.
pub struct Sessions {
    store: Store,
    keys: KeyRing,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    recent_uses: crate::clock::OncePerInterval,
    refresh_token_escrow: bool,
    max_per_user: usize,
    index_names: index_names::IndexNames,
    refiled: crate::clock::OncePerInterval,
    /// The ID-token signing algorithms this instance wrote to the shared set lately.
    algs_written: crate::clock::OncePerInterval,
    /// The credentials of the routes whose tokens sessions hold (dropped with each session).
    held_credentials: std::sync::Arc<[String]>,
    /// Keeps opened records beside their sealed bytes in the tracked cache
    /// (`session.local_cache_opened`); `None`: every call opens its record.
    opened_records: Option<opened::OpenedRecords>,
}

/// How often one instance files a session's last use in the index: a tenth of the idle
/// timeout, between 1 and 60 seconds (as the cache pushes the idle expiry back).
fn use_filing_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl Sessions {
    /// Sessions in `store`, sealed under `keys` (a [`KeyRing`] or a single [`MasterKey`]),
    /// with the configured timeouts.
    pub fn new(
        store: Store,
        keys: impl Into<KeyRing>,
        idle_timeout: Duration,
        absolute_timeout: Duration,
    ) -> Self {
        let keys = keys.into();
        Self {
            index_names: index_names::IndexNames::from_ring(&keys),
            store,
            keys,
            idle_timeout,
            absolute_timeout,
            recent_uses: crate::clock::OncePerInterval::new(
                use_filing_interval(idle_timeout),
                index::RECENT_USES,
            ),
            refiled: crate::clock::OncePerInterval::new(
                use_filing_interval(idle_timeout),
                index::RECENT_USES,
            ),
            refresh_token_escrow: true,
            max_per_user: DEFAULT_MAX_PER_USER,
            algs_written: signing_algs::memo(),
            held_credentials: std::sync::Arc::from(Vec::new()),
            opened_records: Some(opened::OpenedRecords::new()),
        }
    }

    /// Whether the tracked cache keeps each record it holds opened too
    /// (`session.local_cache_opened`, on by default), so a call on a cached session opens
    /// nothing; off, every call derives its record's key and decrypts it.
    pub fn with_opened_records_kept(mut self, keep: bool) -> Self {
        self.opened_records = keep.then(opened::OpenedRecords::new);
        self
    }

    /// The credentials whose tokens sessions hold (each route's `exchange` or `refresh`
    /// credential id), so an ending session drops them with it.
    pub fn with_held_credentials(mut self, credential_ids: Vec<String>) -> Self {
        self.held_credentials = credential_ids.into();
        self
    }

    /// Caps the sessions one user may have (`session.max_per_user`, at least 1; see
    /// [`Sessions::create_within_limit`]).
    pub fn with_max_per_user(mut self, max_per_user: usize) -> Self {
        self.max_per_user = max_per_user;
        self
    }

    /// Whether refresh tokens are kept in escrow for sessions ended without their cookie
    /// (`session.refresh_token_escrow`; see [`escrow`]).
    pub fn with_refresh_token_escrow(mut self, escrow: bool) -> Self {
        self.refresh_token_escrow = escrow;
        self
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
    /// It is filed in its user's index first, so every session can be found and ended. Sessions
    /// it displaces beyond `session.max_per_user` end without their refresh tokens being handed
    /// back: callers that can revoke use [`Sessions::create_within_limit`].
    pub async fn create(
        &self,
        record: &SessionRecord,
        origin: &SessionOrigin,
    ) -> Result<SessionCookie, StoreError> {
        self.create_within_limit(record, origin)
            .await?
            .cookie
            .ok_or(StoreError::Conflict(ENDED_WHILE_CREATED))
    }

    /// [`Sessions::create`], also ending the user's least recently used sessions beyond
    /// `session.max_per_user` (returned, with their refresh tokens to revoke).
    #[tracing::instrument(level = "debug", name = "session_store", skip_all)]
    pub async fn create_within_limit(
        &self,
        record: &SessionRecord,
        origin: &SessionOrigin,
    ) -> Result<Created, StoreError> {
        let cookie = SessionCookie::generate();
        let (key, sealed, ttl) = self.seal_record(&cookie, record)?;
        // Indexed first: a record never exists that cannot be found.
        let displaced = self.index_new(record, &key, origin).await?;
        // Displaced sessions end first, whatever happens to this one.
        let ended = self.end_displaced(&record.user_key(), displaced).await?;
        self.store.put(&key, &sealed, ttl).await?;
        if !self.still_indexed(record, origin).await? {
            // Ended while being created (its entry was taken by a back-channel logout or
            // the user's "end all others"): it must not outlive that.
            self.store.delete(&key).await?;
            self.unindex(record).await;
            return Ok(Created {
                cookie: None,
                displaced: ended,
            });
        }
        Ok(Created {
            cookie: Some(cookie),
            displaced: ended,
        })
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

    /// [`Sessions::load_record`] in a `session_load` span when spans are exported.
    async fn load_with(
        &self,
        cookie: &SessionCookie,
        freshness: Freshness,
    ) -> Result<Option<ActiveSession>, StoreError> {
        match crate::traces::span(|| tracing::debug_span!("session_load")) {
            Some(span) => self.load_record(cookie, freshness).instrument(span).await,
            None => self.load_record(cookie, freshness).await,
        }
    }

    async fn load_record(
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
        let kept = self.kept::<SessionRecord>(read.opened.as_ref(), cookie.secret());
        let opened_now = kept.is_none();
        let (record, current) = match kept {
            Some(record) => (record, true),
            None => {
                let Some((record, current)) = self.open_record(cookie, &key, &read.sealed) else {
                    return Ok(None);
                };
                (std::sync::Arc::new(record), current)
            }
        };
        let now = unix_now();
        if now >= record.expires_at {
            self.store.delete(&key).await?;
            self.drop_held_tokens(&key).await;
            // Taken out of the live set here, so the pruner will not count it.
            crate::metrics::metrics().sessions_ended("absolute_timeout", 1);
            self.unindex(&record).await;
            return Ok(None);
        }
        if opened_now && current {
            self.keep_opened(&key, &read.sealed, cookie.secret(), record.clone());
        }
        if !current {
            // Before anything seals it under the current key: filed under the current key's
            // names too, so it is still found once the older key is removed. A failure fails
            // this read (no re-seal below) and is tried again at the next.
            self.refile(&record).await?;
        }
        if let Some(at) = read.touched_at {
            self.note_use(&record, at);
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
        let sealed = if current {
            read.sealed
        } else {
            self.reseal(cookie, &record, read.sealed).await
        };
        Ok(Some(ActiveSession {
            cookie: cookie.clone(),
            idle_expires_at,
            record,
            sealed,
        }))
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
            let Some((record, _)) = self.open_record(cookie, &key, &sealed) else {
                return Ok(None);
            };
            if self.store.delete_if_unchanged(&key, &sealed).await? {
                self.unindex(&record).await;
                self.drop_held_tokens(&key).await;
                return Ok(Some(record));
            }
            // Rewritten between the read and the delete (a refresh elsewhere): read again.
        }
        // Rewritten on every attempt: take whatever is there now.
        let Some(sealed) = self.store.take(&key).await? else {
            return Ok(None);
        };
        self.drop_held_tokens(&key).await;
        let record = self
            .open_record(cookie, &key, &sealed)
            .map(|(record, _)| record);
        if let Some(record) = &record {
            self.unindex(record).await;
        }
        Ok(record)
    }

    /// The record sealed in `sealed`, and whether it is sealed under the current key; `None`
    /// (no session) when no configured key opens it.
    fn open_record(
        &self,
        cookie: &SessionCookie,
        key: &str,
        sealed: &[u8],
    ) -> Option<(SessionRecord, bool)> {
        crate::metrics::metrics().records_opened.inc();
        self.open_value(cookie.secret(), key, sealed)
    }

    fn seal_record(
        &self,
        cookie: &SessionCookie,
        record: &SessionRecord,
    ) -> Result<(String, Vec<u8>, Duration), StoreError> {
        let key = cookie.storage_key();
        let remaining = record.expires_at.saturating_sub(unix_now());
        let ttl = self.idle_timeout.min(Duration::from_secs(remaining.max(1)));
        let sealed = self.seal_value(cookie.secret(), &key, record)?;
        Ok((key, sealed, ttl))
    }
}

#[cfg(test)]
mod tests;
