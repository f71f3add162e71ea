//! Keeping a session's access token fresh: refresh before expiry, once per session at a time.
//!
//! Policy lives here (when to refresh, what a rejected or failed refresh means for the session);
//! the grant itself is in [`crate::oidc`], storage in [`crate::session`]. One refresh per
//! session at a time: a lock per instance queues local requests, a lock in the shared store
//! (`SET NX` with a short lease, renewed while the refresh runs, however slow the provider)
//! covers other instances. The result is written only over the record the refresh started
//! from (compare-and-set), so even a holder that lost its lock can never overwrite the next
//! holder's tokens. A refresh runs in its own task: once the provider has rotated the refresh
//! token, the new one is stored even if the request that triggered the refresh is cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::oidc::{OidcError, Provider};
use crate::session::refresh_lock::RefreshLocks;
use crate::session::{
    ActiveSession, REFRESH_LOCK_RENEWAL, Replacement, SessionToken, Sessions, StoreError,
};

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

/// How long a request waits for another instance's refresh before answering 503 (the
/// session is kept). A holder that died releases the lock within one lease, well inside it.
const LOCK_WAIT_LIMIT: Duration = Duration::from_secs(30);

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
            sessions.delete_if_unchanged(&current).await?;
            return Err(AccessError::SessionEnded);
        }
        // Other instances share the store: take the session's lock there too, or wait for
        // whoever holds it to store fresh tokens.
        let owner = crate::random::token();
        let deadline = Instant::now() + LOCK_WAIT_LIMIT;
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
            let refresh = async {
                // Someone may have finished just before we took the lock: read once more.
                match sessions.load_fresh(&current.token).await {
                    Ok(None) => Err(AccessError::SessionEnded),
                    Ok(Some(fresh)) if !fresh.record.tokens.needs_refresh(unix_now(), skew) => {
                        Ok(fresh.record.tokens.access_token)
                    }
                    Ok(Some(fresh)) => refresh_and_store(&sessions, &provider, fresh, skew).await,
                    Err(error) => Err(error.into()),
                }
            };
            let outcome = tokio::select! {
                biased;
                outcome = refresh => outcome,
                never = keep_lock(&sessions, &current.token, &owner) => match never {},
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

/// Renews the session's refresh lock every [`REFRESH_LOCK_RENEWAL`] for as long as it is
/// polled (the refresh it guards is running). Never completes: if the lock is lost, the
/// refresh goes on and its fenced write decides.
async fn keep_lock(
    sessions: &Sessions,
    token: &SessionToken,
    owner: &str,
) -> std::convert::Infallible {
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + REFRESH_LOCK_RENEWAL,
        REFRESH_LOCK_RENEWAL,
    );
    loop {
        ticks.tick().await;
        match sessions.renew_refresh_lock(token, owner).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the refresh lock lapsed while the provider answered; the refreshed tokens are stored only if no one else refreshed meanwhile"
                );
                return std::future::pending().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "renewing the refresh lock failed; retrying");
            }
        }
    }
}

/// Refreshes, stores the result, and decides what a failure means. The caller holds the
/// session's refresh locks (this instance's and the store's) until the outcome is stored.
async fn refresh_and_store(
    sessions: &Sessions,
    provider: &Provider,
    current: ActiveSession,
    skew: u64,
) -> Result<String, AccessError> {
    let now = unix_now();
    let refreshed = match &current.record.tokens.refresh_token {
        Some(token) => provider.refresh(&token.text(), &current.record.sub).await,
        None => Err(OidcError::Rejected(
            "the session has no refresh token".into(),
        )),
    };
    match refreshed {
        Ok(refreshed) => {
            let mut record = current.record.clone();
            record.tokens = current.record.tokens.refreshed(refreshed);
            let replacement = sessions.prepare_replacement(&current, &record)?;
            if store_refreshed(sessions, &replacement).await? {
                tracing::debug!("access token refreshed");
                return Ok(record.tokens.access_token);
            }
            // Ended (a logout) or rewritten by another holder while the refresh ran: never
            // overwrite or resurrect; the tokens just obtained are orphans, so revoke them.
            if let Some(refresh_token) = &record.tokens.refresh_token {
                provider.revoke_refresh_token(&refresh_token.text()).await;
            }
            match sessions.load_fresh(&current.token).await? {
                Some(stored) if !stored.record.tokens.needs_refresh(unix_now(), skew) => {
                    Ok(stored.record.tokens.access_token)
                }
                _ => Err(AccessError::SessionEnded),
            }
        }
        Err(error @ (OidcError::Rejected(_) | OidcError::SubjectChanged)) => {
            if sessions.delete_if_unchanged(&current).await? {
                tracing::info!(reason = %error, "refresh refused; ending the session");
                return Err(AccessError::SessionEnded);
            }
            // Renewed by another instance meanwhile (this holder's lock lapsed): its tokens
            // stand, and this refusal concerned the older ones.
            match sessions.load_fresh(&current.token).await? {
                Some(stored) if !stored.record.tokens.needs_refresh(unix_now(), skew) => {
                    Ok(stored.record.tokens.access_token)
                }
                _ => Err(AccessError::SessionEnded),
            }
        }
        Err(error) if !current.record.tokens.is_expired(now) => {
            // Still valid for a little while: serve the request, retry the refresh next time.
            tracing::warn!(error = %error, "refresh failed; using the current access token");
            Ok(current.record.tokens.access_token)
        }
        Err(error) => Err(AccessError::Provider(error)),
    }
}

/// Stores refreshed tokens, retrying briefly: losing a rotated refresh token ends the
/// session. A retry of a write whose reply was lost finds it done.
async fn store_refreshed(
    sessions: &Sessions,
    replacement: &Replacement,
) -> Result<bool, StoreError> {
    let mut attempt = 1;
    loop {
        match sessions.replace(replacement).await {
            Err(error) if attempt < SAVE_ATTEMPTS => {
                tracing::warn!(error = %error, attempt, "storing refreshed tokens failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}
