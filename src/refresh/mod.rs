//! Keeping a session's access token fresh: refresh before expiry, once per session at a time.
//!
//! This module owns the whole single-flight refresh protocol; the grant itself is in
//! [`crate::oidc`], storage in [`crate::session`]. It never imports axum. A request whose
//! access token is due goes through these steps, steps 1 to 3 in this file and 4 and 5 in
//! `grant.rs` (how a failure is recorded is `failures.rs`):
//! 1. **Fresh enough?** (`fresh_enough`) — if so, use it; nothing else happens.
//! 2. **Queue locally** (`local_lock.rs`) — one request per session on this instance goes on;
//!    the others wait, then re-read the session and usually find it refreshed.
//! 3. **Take the cluster lock or join the winner** (`cluster_lock.rs`) — a lock in the shared
//!    store (`SET NX` with a short lease, renewed while the refresh runs, however slow the
//!    provider) covers other instances; a request that cannot take it waits for the holder to
//!    store fresh tokens.
//! 4. **Refresh** at the provider, in a task of its own: once the provider has rotated the
//!    refresh token, the new one is stored even if the request that triggered it is cancelled.
//! 5. **Store** the result only over the record the refresh started from (compare-and-set),
//!    so even a holder that lost its lock can never overwrite the next holder's tokens.
//!
//! A refresh the provider rejects ends the session (unless another instance renewed it
//! meanwhile); one that fails otherwise keeps the session and uses the current access token
//! while it lasts.
//!
//! An upstream may also reject a token that is not yet due (revoked, or a lifetime the provider
//! never named): [`Refresher::replace_rejected`] takes the same steps for it, at most once per
//! access token; the token it obtains is marked in the record and never replaced that way
//! again, so an upstream that rejects every token cannot turn every call into a grant.

mod cluster_lock;
mod failures;
mod grant;
mod held;
mod local_lock;
mod upstream_token;

use std::sync::Arc;

use crate::audit::AuditTrail;
use crate::clock::unix_now;
use crate::metrics::metrics;
use crate::oidc::{OidcError, Provider, Providers};
use crate::session::{ActiveSession, SessionCookie, SessionRecord, Sessions, StoreError};
use cluster_lock::ClusterLock;
use local_lock::LocalLocks;

pub use cluster_lock::{REFRESH_LOCK_LEASE, REFRESH_LOCK_RENEWAL};
pub use upstream_token::UpstreamToken;

/// Why no access token can be had for a session.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The session is gone, or the provider ended the grant (the session was deleted).
    #[error("the session has ended")]
    SessionEnded,
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider could not refresh an already expired token; the session is kept.
    #[error(transparent)]
    Provider(#[from] OidcError),
    /// The provider would not (or could not) issue the token a route's credential needs: that
    /// route fails, the session and its other routes go on.
    #[error("the token for this route could not be obtained: {0}")]
    Credential(OidcError),
}

/// Attempts to store refreshed tokens before giving up (the provider already rotated them).
/// Hands out valid access tokens, refreshing them when due, once per session at a time.
/// Cloning it shares its collaborators and its locks.
#[derive(Clone)]
pub struct Refresher {
    sessions: Arc<Sessions>,
    /// Each session refreshes at its own provider, with that provider's skew.
    providers: Arc<Providers>,
    local_locks: LocalLocks,
    audit: AuditTrail,
}

/// Why a request wants a new access token.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// The stored one is due (or past) its expiry.
    Fresh,
    /// An upstream rejected this one (`error="invalid_token"`); any other will do.
    Replacing(&'a str),
}

/// What a fresh read of the stored session says.
enum Stored {
    /// Its access token will do (another request refreshed it meanwhile).
    Usable(String),
    /// It is due for refresh (boxed: a record is large, and this is the rare case).
    Due(Box<ActiveSession>),
}

/// Who refreshes: this request, or another instance whose result it joins.
enum Turn {
    /// This request holds the cluster lock and refreshes.
    Ours(ClusterLock),
    /// Another instance refreshed meanwhile: its access token.
    Joined(String),
}

impl Refresher {
    /// Refreshes the tokens of `sessions`, each at its provider among `providers` and that
    /// provider's `refresh_skew` before they expire; failures are recorded in `audit`.
    pub fn new(sessions: Arc<Sessions>, providers: Arc<Providers>, audit: AuditTrail) -> Self {
        Self {
            sessions,
            providers,
            local_locks: LocalLocks::default(),
            audit,
        }
    }

    /// An access token for `session` that is not about to expire.
    pub async fn access_token(&self, session: ActiveSession) -> Result<String, AccessError> {
        if self.fresh_enough(&session.record) {
            return Ok(session.record.tokens.access_token.clone());
        }
        // Step 2: queue behind this instance's other requests for the session; the one before
        // may have refreshed while we waited.
        let local = self
            .local_locks
            .acquire(&session.cookie.storage_key())
            .await;
        let current = match self.reread(&session.cookie, Want::Fresh).await? {
            Stored::Usable(access_token) => {
                // Another request on this instance refreshed while this one queued.
                metrics().refresh_waited("local");
                return Ok(access_token);
            }
            Stored::Due(current) => current,
        };
        if current.record.tokens.refresh_token.is_none() {
            return self.use_until_expiry(&current).await;
        }
        self.refresh_in_turn(*current, local, Want::Fresh).await
    }

    /// Steps 3 to 5 for `current`, with this instance's lock for it (`local`) held.
    async fn refresh_in_turn(
        &self,
        current: ActiveSession,
        local: local_lock::LocalGuard,
        want: Want<'_>,
    ) -> Result<String, AccessError> {
        let lock = match self
            .take_cluster_lock_or_join(&current.cookie, want)
            .await?
        {
            Turn::Ours(lock) => lock,
            Turn::Joined(winners_access_token) => return Ok(winners_access_token),
        };
        let this = self.clone();
        let replacing = match want {
            Want::Fresh => None,
            Want::Replacing(rejected) => Some(rejected.to_owned()),
        };
        lock.hold_while(
            local,
            async move {
                let want = replacing.as_deref().map_or(Want::Fresh, Want::Replacing);
                this.refresh_holding_locks(&current.cookie, want).await
            },
            || AccessError::Provider(OidcError::Unavailable("the refresh task failed".into())),
        )
        .await
    }

    /// A new access token for the session of `cookie`, whose access token `rejected` an
    /// upstream refused as invalid (`WWW-Authenticate: Bearer error="invalid_token"`) while it
    /// was believed valid. Single-flight like [`Refresher::access_token`]: concurrent callers
    /// that saw the same rejection share one grant, across instances. `None` when no refresh is
    /// made: the rejected token came from such a refresh already, or there is nothing to
    /// refresh with. A provider outage answers the rejected token itself (the session stays);
    /// a refused grant ends the session as always.
    pub async fn replace_rejected(
        &self,
        cookie: &SessionCookie,
        rejected: &str,
    ) -> Result<Option<String>, AccessError> {
        let want = Want::Replacing(rejected);
        let local = self.local_locks.acquire(&cookie.storage_key()).await;
        let current = match self.reread(cookie, want).await? {
            Stored::Usable(access_token) => {
                metrics().refresh_replaced("joined");
                return Ok(Some(access_token));
            }
            Stored::Due(current) => current,
        };
        let tokens = &current.record.tokens;
        if tokens.refresh_token.is_none()
            || (tokens.access_token == rejected && tokens.from_forced_refresh)
        {
            metrics().refresh_replaced("declined");
            return Ok(None);
        }
        let replaced = self.refresh_in_turn(*current, local, want).await?;
        Ok(Some(replaced))
    }

    /// The provider `record` logged in at; a session whose provider is no longer configured,
    /// or no longer accepts its ID token's issuer, has ended (its tokens are never sent to
    /// another provider).
    fn provider_of(&self, record: &SessionRecord) -> Result<&Arc<Provider>, AccessError> {
        self.providers
            .of_session(record.provider.as_deref(), &record.tokens.id_token.text())
            .ok_or(AccessError::SessionEnded)
    }

    /// How long before expiry the tokens of `record`'s provider are refreshed.
    fn skew_secs(&self, record: &SessionRecord) -> u64 {
        self.providers
            .by_key(record.provider.as_deref())
            .unwrap_or(self.providers.first())
            .refresh_skew()
            .as_secs()
    }

    /// Step 1: whether `record`'s access token is not yet due for refresh.
    fn fresh_enough(&self, record: &SessionRecord) -> bool {
        !record
            .tokens
            .needs_refresh(unix_now(), self.skew_secs(record))
    }

    /// Whether `record`'s access token will do for a request that wants one.
    fn will_do(&self, record: &SessionRecord, want: Want<'_>) -> bool {
        self.fresh_enough(record)
            && match want {
                Want::Fresh => true,
                Want::Replacing(rejected) => record.tokens.access_token != rejected,
            }
    }

    /// Reads the session as the store holds it now (never a copy that may lag behind
    /// another instance's refresh).
    async fn reread(&self, cookie: &SessionCookie, want: Want<'_>) -> Result<Stored, AccessError> {
        let Some(current) = self.sessions.load_fresh(cookie).await? else {
            return Err(AccessError::SessionEnded);
        };
        if self.will_do(&current.record, want) {
            return Ok(Stored::Usable(current.record.tokens.access_token.clone()));
        }
        Ok(Stored::Due(Box::new(current)))
    }

    /// Nothing to refresh with: use the access token while it lasts, then the session is over.
    async fn use_until_expiry(&self, current: &ActiveSession) -> Result<String, AccessError> {
        if !current.record.tokens.is_expired(unix_now()) {
            return Ok(current.record.tokens.access_token.clone());
        }
        if self.sessions.delete_if_unchanged(current).await? {
            metrics().sessions_ended("access_token_expired", 1);
        }
        Err(AccessError::SessionEnded)
    }

    /// Step 3: takes the session's lock in the shared store, or waits for whoever holds it to
    /// store fresh tokens and uses them.
    async fn take_cluster_lock_or_join(
        &self,
        cookie: &SessionCookie,
        want: Want<'_>,
    ) -> Result<Turn, AccessError> {
        let lock = ClusterLock::new(self.sessions.store(), cookie);
        let wait = cluster_lock::Wait::start();
        let mut waited = false;
        while !lock.try_take().await? {
            if !waited {
                waited = true;
                metrics().refresh_waited("cluster");
            }
            wait.next_poll().await?;
            if let Stored::Usable(access_token) = self.reread(cookie, want).await? {
                return Ok(Turn::Joined(access_token));
            }
        }
        Ok(Turn::Ours(lock))
    }

    /// Steps 4 and 5, while this instance's and the store's locks are held.
    async fn refresh_holding_locks(
        &self,
        cookie: &SessionCookie,
        want: Want<'_>,
    ) -> Result<String, AccessError> {
        // Someone may have finished just before we took the lock: read once more.
        match self.reread(cookie, want).await? {
            Stored::Usable(access_token) => Ok(access_token),
            Stored::Due(current) => {
                self.refresh_and_store(*current, matches!(want, Want::Replacing(_)))
                    .await
            }
        }
    }
}
