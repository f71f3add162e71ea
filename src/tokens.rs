//! Keeping a session's access token fresh: refresh before expiry, once per session at a time.
//!
//! Policy lives here (when to refresh, what a rejected or failed refresh means for the session);
//! the grant itself is in [`crate::oidc`], storage in [`crate::session`]. A refresh runs in its
//! own task: once the provider has rotated the refresh token, the new one is stored even if
//! the request that triggered the refresh is cancelled.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_now;
use crate::oidc::{OidcError, Provider};
use crate::session::refresh_lock::{RefreshGuard, RefreshLocks};
use crate::session::{ActiveSession, SessionRecord, Sessions, StoreError};

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
        let guard = self.locks.acquire(&session.token.storage_key()).await;
        // Another request may have refreshed while we waited: read the current record.
        let Some(current) = sessions.load(&session.token).await? else {
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
        let task = tokio::spawn(refresh_and_store(
            sessions.clone(),
            provider.clone(),
            current,
            guard,
        ));
        task.await.unwrap_or_else(|_| {
            Err(AccessError::Provider(OidcError::Unavailable(
                "the refresh task failed".into(),
            )))
        })
    }
}

/// Refreshes, stores the result, and decides what a failure means. Holds the session's
/// refresh lock until the outcome is stored.
async fn refresh_and_store(
    sessions: Arc<Sessions>,
    provider: Arc<Provider>,
    current: ActiveSession,
    _guard: RefreshGuard,
) -> Result<String, AccessError> {
    let now = unix_now();
    match provider
        .refresh(&current.record.tokens, &current.record.sub)
        .await
    {
        Ok(refreshed) => {
            let mut record = current.record;
            record.tokens = refreshed.tokens;
            if let Some(claims) = refreshed.claims {
                // Newer values win; claims the refreshed token omits are kept.
                record.claims.extend(claims);
            }
            if store_refreshed(&sessions, &current.token, &record).await? {
                tracing::debug!("access token refreshed");
                Ok(record.tokens.access_token)
            } else {
                // Logged out while the refresh ran: do not resurrect; revoke what we just got.
                if let Some(refresh_token) = &record.tokens.refresh_token {
                    provider.revoke_refresh_token(refresh_token).await;
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
