//! Keeping a session's access token fresh: refresh before expiry, once per session at a time.
//!
//! Policy lives here (when to refresh, what a rejected or failed refresh means for the session);
//! the grant itself is in [`crate::oidc`], storage in [`crate::session`].

use crate::clock::unix_now;
use crate::oidc::{OidcError, Provider};
use crate::session::refresh_lock::RefreshLocks;
use crate::session::{ActiveSession, Sessions, StoreError};

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
        sessions: &Sessions,
        provider: &Provider,
        session: ActiveSession,
    ) -> Result<String, AccessError> {
        if !session
            .record
            .tokens
            .needs_refresh(unix_now(), self.refresh_skew_secs)
        {
            return Ok(session.record.tokens.access_token);
        }
        let _guard = self.locks.acquire(&session.token.storage_key()).await;
        // Another request may have refreshed while we waited: read the current record.
        let Some(current) = sessions.load(&session.token).await? else {
            return Err(AccessError::SessionEnded);
        };
        let now = unix_now();
        if !current
            .record
            .tokens
            .needs_refresh(now, self.refresh_skew_secs)
        {
            return Ok(current.record.tokens.access_token);
        }
        match provider
            .refresh(&current.record.tokens, &current.record.sub)
            .await
        {
            Ok(refreshed) => {
                let mut record = current.record;
                record.tokens = refreshed.tokens;
                if let Some(claims) = refreshed.claims {
                    record.claims = claims;
                }
                sessions.save(&current.token, &record).await?;
                tracing::debug!("access token refreshed");
                Ok(record.tokens.access_token)
            }
            Err(OidcError::Rejected(reason)) => {
                tracing::info!(reason = %reason, "provider rejected the refresh; ending the session");
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
}
