//! Steps 4 and 5 of a refresh, with the locks held: the grant at the provider, storing its
//! result over the record the refresh started from, and what a failure means for the session
//! (ended when the provider refuses, kept while the current access token lasts otherwise).
//!
//! It never takes or releases a lock (`mod.rs` does), and never overwrites or resurrects a
//! session another holder rewrote or a logout ended: tokens it cannot store are revoked.

use std::time::Duration;

use super::failures::failure_reason;
use super::{AccessError, Refresher, Stored, Want};
use crate::clock::unix_now;
use crate::metrics::metrics;
use crate::oidc::OidcError;
use crate::session::replacement::Replacement;
use crate::session::{
    ActiveSession, SessionCookie, SessionRecord, StoreError, StoredDpopKey, TokenSet,
};

/// Attempts to store refreshed tokens before giving up (the provider already rotated them).
const SAVE_ATTEMPTS: u32 = 3;

impl Refresher {
    /// Refreshes, stores the result, and decides what a failure means. `forced`: an upstream
    /// rejected the current token; the new one is marked so that it is never forced again.
    #[tracing::instrument(level = "debug", name = "refresh", skip_all)]
    pub(super) async fn refresh_and_store(
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
                | OidcError::RefreshedIdTokenInvalid(_)
                | OidcError::DpopUnsupported(_)),
            ) => self.end_refused(&current, &error).await,
            Err(error) if !current.record.tokens.is_expired(now) => {
                // Still valid for a little while: serve the request, retry the refresh next time.
                tracing::warn!(error = %error, "refresh failed; using the current access token");
                self.audit_failure(&current, failure_reason(&error), "session_kept");
                Ok(current.record.tokens.access_token.clone())
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
        // Its own provider: another one never sees this session's refresh token.
        let provider = self.provider_of(&current.record).map_err(|_| {
            OidcError::Rejected(
                "the session's provider is no longer configured, or no longer accepts its issuer"
                    .into(),
            )
        })?;
        // The session's key proves possession again: its new tokens stay bound to it.
        let dpop_key = tokens
            .dpop_key
            .as_ref()
            .map(StoredDpopKey::key)
            .transpose()
            .map_err(|error| OidcError::Unavailable(format!("the session's DPoP key: {error}")))?;
        let refreshed = provider
            .refresh(
                &refresh_token.text(),
                &current.record.sub,
                &tokens.id_token.text(),
                dpop_key.as_ref(),
            )
            .await?;
        let learnable = refreshed
            .id_token
            .as_deref()
            .and_then(|id_token| provider.learnable_alg(id_token));
        if let Some(alg) = learnable
            && let Err(error) = self.sessions.learn_id_token_alg(&alg).await
        {
            // The tokens are rotated already: keep them; the next login or refresh writes it.
            tracing::warn!(error = %error, "recording the refreshed ID token's algorithm failed");
        }
        Ok(tokens.refreshed(refreshed))
    }

    /// Revokes a refresh token that no session will ever use.
    async fn revoke_orphan(&self, record: &SessionRecord) {
        if let (Some(refresh_token), Ok(provider)) =
            (&record.tokens.refresh_token, self.provider_of(record))
        {
            provider.revoke_refresh_token(&refresh_token.text()).await;
        }
    }

    /// Step 5: stores `tokens` over the record the refresh started from.
    async fn store(
        &self,
        current: &ActiveSession,
        tokens: TokenSet,
    ) -> Result<String, AccessError> {
        let mut record = SessionRecord::clone(&current.record);
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
        self.revoke_orphan(&record).await;
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
    pub(super) async fn stored_by_another_holder(
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
