//! Keeping a session's access token fresh: refresh before expiry, once per session at a time.
//!
//! Policy lives here (when to refresh, what a rejected or failed refresh means for the session);
//! the grant itself is in [`crate::oidc`], storage in [`crate::session`]. One refresh per
//! session at a time: a lock per instance queues local requests, a lock in the shared store
//! (`SET NX` with a TTL) covers other instances. A refresh runs in its own task: once the
//! provider has rotated the refresh token, the new one is stored even if the request that
//! triggered the refresh is cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::oidc::{OidcError, Provider};
use crate::session::refresh_lock::RefreshLocks;
use crate::session::{ActiveSession, REFRESH_LOCK_TTL, SessionRecord, Sessions, StoreError};

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
}

/// How often a request waiting for another instance's refresh looks for the new tokens.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Attempts to store refreshed tokens before giving up (the provider already rotated them).
const SAVE_ATTEMPTS: u32 = 3;

/// Hands out valid access tokens, refreshing them when due.
pub struct TokenKeeper {
    refresh_skew_secs: u64,
    locks: RefreshLocks,
}

impl TokenKeeper {
    /// A keeper that refreshes `refresh_skew_secs` before expiry.
    pub fn new(refresh_skew_secs: u64) -> Self {
        Self {
            refresh_skew_secs,
            locks: RefreshLocks::default(),
        }
    }

    /// An access token for `session` that is not about to expire.
    pub async fn access_token(
        &self,
        sessions: &Arc<Sessions>,
        provider: &Arc<Provider>,
        session: ActiveSession,
    ) -> Result<String, AccessError> {
        if !session
            .record
            .tokens
            .needs_refresh(unix_now(), self.refresh_skew_secs)
        {
            return Ok(session.record.tokens.access_token);
        }
        let skew = self.refresh_skew_secs;
        let (sessions, provider) = (sessions.clone(), provider.clone());
        let guard = self.locks.acquire(&session.token.storage_key()).await;
        // Another request may have refreshed while we waited: read the current record.
        let Some(current) = sessions.load_fresh(&session.token).await? else {
            return Err(AccessError::SessionEnded);
        };
        let now = unix_now();
        let tokens = &current.record.tokens;
        if !tokens.needs_refresh(now, self.refresh_skew_secs) {
            return Ok(current.record.tokens.access_token);
        }
        if tokens.refresh_token.is_none() {
            // Nothing to refresh with: use the token while it lasts, then the session is over.
            if !tokens.is_expired(now) {
                return Ok(current.record.tokens.access_token);
            }
            sessions.delete(&current.token).await?;
            return Err(AccessError::SessionEnded);
        }
        // Other instances share the store: take the session's lock there too, or wait for
        // whoever holds it to store fresh tokens.
        let owner = crate::random::token();
        let deadline = Instant::now() + REFRESH_LOCK_TTL + Duration::from_secs(2);
        while !sessions.try_lock_refresh(&current.token, &owner).await? {
            if Instant::now() > deadline {
                return Err(AccessError::Provider(OidcError::Unavailable(
                    "another instance is still refreshing this session".into(),
                )));
            }
            tokio::time::sleep(LOCK_POLL_INTERVAL).await;
            match sessions.load_fresh(&current.token).await? {
                None => return Err(AccessError::SessionEnded),
                Some(fresh) if !fresh.record.tokens.needs_refresh(unix_now(), skew) => {
                    return Ok(fresh.record.tokens.access_token);
                }
                Some(_) => {}
            }
        }
        let task = tokio::spawn(async move {
            // Someone may have finished just before we took the lock: read once more.
            let outcome = match sessions.load_fresh(&current.token).await {
                Ok(None) => Err(AccessError::SessionEnded),
                Ok(Some(fresh)) if !fresh.record.tokens.needs_refresh(unix_now(), skew) => {
                    Ok(fresh.record.tokens.access_token)
                }
                Ok(Some(fresh)) => refresh_and_store(&sessions, &provider, fresh).await,
                Err(error) => Err(error.into()),
            };
            if let Err(error) = sessions.unlock_refresh(&current.token, &owner).await {
                tracing::warn!(error = %error, "releasing the refresh lock failed; it expires by itself");
            }
            drop(guard);
            outcome
        });
        task.await.unwrap_or_else(|_| {
            Err(AccessError::Provider(OidcError::Unavailable(
                "the refresh task failed".into(),
            )))
        })
    }
}

/// Refreshes, stores the result, and decides what a failure means. The caller holds the
/// session's refresh locks (this instance's and the store's) until the outcome is stored.
async fn refresh_and_store(
    sessions: &Sessions,
    provider: &Provider,
    current: ActiveSession,
) -> Result<String, AccessError> {
    let now = unix_now();
    match provider
        .refresh(&current.record.tokens, &current.record.sub)
        .await
    {
        Ok(refreshed) => {
            let mut record = current.record;
            record.tokens = refreshed.tokens;
            if store_refreshed(sessions, &current.token, &record).await? {
                tracing::debug!("access token refreshed");
                Ok(record.tokens.access_token)
            } else {
                // Logged out while the refresh ran: do not resurrect; revoke what we just got.
                if let Some(refresh_token) = &record.tokens.refresh_token {
                    provider.revoke_refresh_token(&refresh_token.text()).await;
                }
                Err(AccessError::SessionEnded)
            }
        }
        Err(error @ (OidcError::Rejected(_) | OidcError::SubjectChanged)) => {
            tracing::info!(reason = %error, "refresh refused; ending the session");
            sessions.delete(&current.token).await?;
            Err(AccessError::SessionEnded)
        }
        Err(error) if !current.record.tokens.is_expired(now) => {
            // Still valid for a little while: serve the request, retry the refresh next time.
            tracing::warn!(error = %error, "refresh failed; using the current access token");
            Ok(current.record.tokens.access_token)
        }
        Err(error) => Err(AccessError::Provider(error)),
    }
}

/// Stores refreshed tokens, retrying briefly: losing a rotated refresh token ends the session.
async fn store_refreshed(
    sessions: &Sessions,
    token: &crate::session::SessionToken,
    record: &SessionRecord,
) -> Result<bool, StoreError> {
    let mut attempt = 1;
    loop {
        match sessions.update(token, record).await {
            Err(error) if attempt < SAVE_ATTEMPTS => {
                tracing::warn!(error = %error, attempt, "storing refreshed tokens failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}
