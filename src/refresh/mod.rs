//! Keeping a session's access token fresh: refresh before expiry, once per session at a time.
//!
//! This module owns the whole single-flight refresh protocol; the grant itself is in
//! [`crate::oidc`], storage in [`crate::session`]. It never imports axum. A request whose
//! access token is due goes through these steps, each a function below:
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
mod local_lock;

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::audit::context::carry;
use crate::audit::{AuditEvent, AuditTrail, Details, Repeats};
use crate::clock::unix_now;
use crate::metrics::metrics;
use crate::oidc::{OidcError, Provider};
use crate::session::{
    ActiveSession, Replacement, SessionCookie, SessionRecord, Sessions, StoreError, TokenSet,
};
use cluster_lock::ClusterLock;
use local_lock::LocalLocks;

pub use cluster_lock::{REFRESH_LOCK_LEASE, REFRESH_LOCK_RENEWAL};

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

/// Hands out valid access tokens, refreshing them when due, once per session at a time.
/// Cloning it shares its collaborators and its locks.
#[derive(Clone)]
pub struct Refresher {
    sessions: Arc<Sessions>,
    provider: Arc<Provider>,
    /// How long before expiry an access token is refreshed.
    skew_secs: u64,
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
    /// Refreshes the tokens of `sessions` at `provider`, `skew_secs` before they expire;
    /// failures are recorded in `audit`.
    pub fn new(
        sessions: Arc<Sessions>,
        provider: Arc<Provider>,
        skew_secs: u64,
        audit: AuditTrail,
    ) -> Self {
        Self {
            sessions,
            provider,
            skew_secs,
            local_locks: LocalLocks::default(),
            audit,
        }
    }

    /// An access token for `session` that is not about to expire.
    pub async fn access_token(&self, session: ActiveSession) -> Result<String, AccessError> {
        if self.fresh_enough(&session.record.tokens) {
            return Ok(session.record.tokens.access_token);
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
        let task = tokio::spawn(carry(
            async move {
                let want = replacing.as_deref().map_or(Want::Fresh, Want::Replacing);
                let outcome = tokio::select! {
                    biased;
                    outcome = this.refresh_holding_locks(&current.cookie, want) => outcome,
                    never = lock.keep() => match never {},
                };
                lock.release().await;
                drop(local);
                outcome
            }
            .in_current_span(),
        ));
        task.await.unwrap_or_else(|_| {
            Err(AccessError::Provider(OidcError::Unavailable(
                "the refresh task failed".into(),
            )))
        })
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

    /// Step 1: whether `tokens`' access token is not yet due for refresh.
    fn fresh_enough(&self, tokens: &TokenSet) -> bool {
        !tokens.needs_refresh(unix_now(), self.skew_secs)
    }

    /// Whether `tokens`' access token will do for a request that wants one.
    fn will_do(&self, tokens: &TokenSet, want: Want<'_>) -> bool {
        self.fresh_enough(tokens)
            && match want {
                Want::Fresh => true,
                Want::Replacing(rejected) => tokens.access_token != rejected,
            }
    }

    /// Reads the session as the store holds it now (never a copy that may lag behind
    /// another instance's refresh).
    async fn reread(&self, cookie: &SessionCookie, want: Want<'_>) -> Result<Stored, AccessError> {
        let Some(current) = self.sessions.load_fresh(cookie).await? else {
            return Err(AccessError::SessionEnded);
        };
        if self.will_do(&current.record.tokens, want) {
            return Ok(Stored::Usable(current.record.tokens.access_token));
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

    /// Refreshes, stores the result, and decides what a failure means. `forced`: an upstream
    /// rejected the current token; the new one is marked so that it is never forced again.
    #[tracing::instrument(level = "debug", name = "refresh", skip_all)]
    async fn refresh_and_store(
        &self,
        current: ActiveSession,
        forced: bool,
    ) -> Result<String, AccessError> {
        let now = unix_now();
        let metrics = metrics();
        metrics.refresh_attempts.inc();
        let started = std::time::Instant::now();
        let granted = self.grant(&current).await;
        metrics
            .refresh_duration
            .observe(started.elapsed().as_secs_f64());
        match &granted {
            Ok(_) => {
                metrics.refresh_successes.inc();
            }
            Err(error) => {
                metrics.refresh_failed(failure_reason(error));
            }
        }
        match granted {
            Ok(mut tokens) => {
                if forced {
                    metrics.refresh_replaced("refreshed");
                }
                tokens.from_forced_refresh = forced;
                self.store(&current, tokens).await
            }
            Err(
                error @ (OidcError::Rejected(_)
                | OidcError::ReuseReported(_)
                | OidcError::SubjectChanged
                | OidcError::RefreshedIdTokenInvalid(_)),
            ) => self.end_refused(&current, &error).await,
            Err(error) if !current.record.tokens.is_expired(now) => {
                // Still valid for a little while: serve the request, retry the refresh next time.
                tracing::warn!(error = %error, "refresh failed; using the current access token");
                self.audit_failure(&current, failure_reason(&error), "session_kept");
                Ok(current.record.tokens.access_token)
            }
            Err(error) => {
                self.audit_failure(&current, failure_reason(&error), "request_failed");
                Err(AccessError::Provider(error))
            }
        }
    }

    /// Step 4: the refresh grant at the provider.
    /// The new set keeps the old refresh token when the provider returned none, and the old
    /// ID token when the answer has none (one that fails its checks fails the refresh).
    async fn grant(&self, current: &ActiveSession) -> Result<TokenSet, OidcError> {
        let tokens = &current.record.tokens;
        let Some(refresh_token) = &tokens.refresh_token else {
            return Err(OidcError::Rejected(
                "the session has no refresh token".into(),
            ));
        };
        let refreshed = self
            .provider
            .refresh(&refresh_token.text(), &current.record.sub)
            .await?;
        let learnable = refreshed
            .id_token
            .as_deref()
            .and_then(|id_token| self.provider.learnable_alg(id_token));
        if let Some(alg) = learnable
            && let Err(error) = self.sessions.learn_id_token_alg(&alg).await
        {
            // The tokens are rotated already: keep them; the next login or refresh writes it.
            tracing::warn!(error = %error, "recording the refreshed ID token's algorithm failed");
        }
        Ok(tokens.refreshed(refreshed))
    }

    /// Revokes a refresh token that no session will ever use.
    async fn revoke_orphan(&self, tokens: &TokenSet) {
        if let Some(refresh_token) = &tokens.refresh_token {
            self.provider
                .revoke_refresh_token(&refresh_token.text())
                .await;
        }
    }

    /// Step 5: stores `tokens` over the record the refresh started from.
    async fn store(
        &self,
        current: &ActiveSession,
        tokens: TokenSet,
    ) -> Result<String, AccessError> {
        let mut record = current.record.clone();
        record.tokens = tokens;
        let replacement = self.sessions.prepare_replacement(current, &record)?;
        let replaced = self.replace_with_retries(&replacement).await;
        if replaced.is_err() {
            self.audit_failure(current, "store_unavailable", "request_failed");
        }
        if replaced? {
            tracing::debug!("access token refreshed");
            return Ok(record.tokens.access_token);
        }
        // Ended (a logout) or rewritten by another holder while the refresh ran: never
        // overwrite or resurrect; the tokens just obtained are orphans, so revoke them.
        self.revoke_orphan(&record.tokens).await;
        self.stored_by_another_holder(&current.cookie).await
    }

    /// The provider refused the refresh: the session ends, unless another instance renewed
    /// it meanwhile (this holder's lock lapsed), in which case its tokens stand and this
    /// refusal concerned the older ones.
    async fn end_refused(
        &self,
        current: &ActiveSession,
        error: &OidcError,
    ) -> Result<String, AccessError> {
        if self.sessions.delete_if_unchanged(current).await? {
            tracing::info!(reason = %error, "refresh refused; ending the session");
            metrics().sessions_ended(failure_reason(error), 1);
            self.audit_failure(current, failure_reason(error), "session_ended");
            if matches!(error, OidcError::ReuseReported(_)) {
                self.report_refresh_token_reuse(&current.record);
            }
            return Err(AccessError::SessionEnded);
        }
        self.stored_by_another_holder(&current.cookie).await
    }

    /// The access token another holder stored, if the session still has a usable one.
    async fn stored_by_another_holder(
        &self,
        cookie: &SessionCookie,
    ) -> Result<String, AccessError> {
        match self.reread(cookie, Want::Fresh).await? {
            Stored::Usable(access_token) => Ok(access_token),
            Stored::Due(_) => Err(AccessError::SessionEnded),
        }
    }

    /// Stores refreshed tokens, retrying briefly: losing a rotated refresh token ends the
    /// session. A retry of a write whose reply was lost finds it done.
    async fn replace_with_retries(&self, replacement: &Replacement) -> Result<bool, StoreError> {
        let mut attempt = 1;
        loop {
            match self.sessions.replace(replacement).await {
                Err(error) if attempt < SAVE_ATTEMPTS => {
                    tracing::warn!(error = %error, attempt, "storing refreshed tokens failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

impl Refresher {
    /// Records a failed refresh of `current`'s tokens.
    /// A failure that ends the session is always recorded; one that keeps it (the provider is
    /// down and every request retries) once a minute per session.
    fn audit_failure(&self, current: &ActiveSession, reason: &str, outcome: &str) {
        let details = Details {
            sub: Some(&current.record.sub),
            session: Some(&current.record.handle),
            reason: Some(reason),
            outcome: Some(outcome),
            ..Details::default()
        };
        if outcome == "session_ended" {
            self.audit.record(AuditEvent::RefreshFailed, details);
        } else {
            self.audit.record_unless_repeated(
                AuditEvent::RefreshFailed,
                details,
                Repeats::PerSessionPerMinute,
            );
        }
    }

    /// The suspicious-use event for a refresh token the provider reports reused (a copy of it
    /// is in someone else's hands): the session has just ended, as on any refused refresh.
    fn report_refresh_token_reuse(&self, record: &SessionRecord) {
        self.audit.record(
            AuditEvent::SuspiciousUse,
            Details {
                sub: Some(&record.sub),
                session: Some(&record.handle),
                reason: Some("refresh_token_reused"),
                outcome: Some("session_ended"),
                ..Details::default()
            },
        );
    }
}

/// Why a refresh failed, as a word of a small vocabulary (audit reasons and metric labels).
pub fn failure_reason(error: &OidcError) -> &'static str {
    match error {
        OidcError::Rejected(_) => "refresh_rejected",
        OidcError::ReuseReported(_) => "refresh_token_reused",
        OidcError::SubjectChanged => "subject_changed",
        OidcError::RefreshedIdTokenInvalid(_) => "id_token_invalid",
        OidcError::Refused(_) => "provider_refused",
        OidcError::Unavailable(_) | OidcError::Deferred(_) => "provider_unavailable",
        OidcError::Invalid(_) => "invalid_response",
        // Not at a refresh (another subject there is `SubjectChanged`); named all the same.
        OidcError::UserInfo(error) => error.reason(),
        // Only a login is checked against what it asked for; named all the same.
        OidcError::NotAuthenticatedAsRequested(_) => "step_up_not_satisfied",
    }
}
