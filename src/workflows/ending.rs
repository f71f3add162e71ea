//! Ending sessions, whoever asks (a logout, the user's "end this session", a login that
//! replaces a session, suspicious use, the provider's logout channels): the record goes,
//! the refresh token is revoked at the provider in the background, and the end is counted.
//! Ended with its cookie (a logout), a session's tokens held for APIs are revoked too; ended
//! from elsewhere they are only deleted, as nothing without the cookie can open them.

use std::sync::Arc;

use crate::audit::{AuditEvent, AuditTrail, Details};
use crate::metrics::metrics;
use crate::oidc::{Provider, Providers};
use crate::session::{Ended, SessionCookie, SessionRecord, Sessions, StoreError};

/// Ends sessions and revokes their refresh tokens.
#[derive(Clone)]
pub struct SessionEnding {
    sessions: Arc<Sessions>,
    providers: Arc<Providers>,
    audit: AuditTrail,
}

impl SessionEnding {
    /// Ends sessions in `sessions`, revoking at each session's provider among `providers`,
    /// recording in `audit`.
    pub fn new(sessions: Arc<Sessions>, providers: Arc<Providers>, audit: AuditTrail) -> Self {
        Self {
            sessions,
            providers,
            audit,
        }
    }

    /// Ends the session for `cookie` as Redis holds it and revokes its refresh token (taken
    /// from the record itself, so escrow or not) in the background: how a session whose
    /// cookie is at hand ends. `None` when there was no session.
    pub async fn end_by_cookie(
        &self,
        cookie: &SessionCookie,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // Read before the end deletes them: the tokens held for APIs are revoked with it.
        let held = self.sessions.held_tokens_of(cookie).await;
        let Some(record) = self.sessions.end(cookie).await? else {
            return Ok(None);
        };
        self.revoke_refresh_token_of(&record);
        self.revoke_access_tokens(held, record.provider.as_deref());
        Ok(Some(record))
    }

    /// Ends the session for `cookie` (see [`Self::end_by_cookie`]) as a logout for `reason`
    /// (`logout`, `replaced_by_login`): counted and audited. `None` when there was none.
    pub async fn log_out(
        &self,
        cookie: &SessionCookie,
        reason: &'static str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(record) = self.end_by_cookie(cookie).await? else {
            return Ok(None);
        };
        self.count_logout(&record, reason);
        Ok(Some(record))
    }

    /// Ends the session for `cookie`, replaced by a login of `new_user` (a
    /// [`SessionRecord::user_key`]: the user within their provider) in the same browser
    /// (`replaced_by_login`): counted and audited like a logout. Its refresh token is revoked
    /// only when the session was another user's: the same user's new login shares the
    /// provider's grant with it (oidc-provider revokes a refresh token with every token of its
    /// grant, Keycloak with every token of its client session), so revoking it would revoke
    /// the tokens just issued (a step-up would end in `invalid_token`). The old refresh token
    /// is dropped with the record; nobody else ever held it.
    pub async fn replace_for_login(
        &self,
        cookie: &SessionCookie,
        new_user: &str,
    ) -> Result<(), StoreError> {
        let held = self.sessions.held_tokens_of(cookie).await;
        let Some(record) = self.sessions.end(cookie).await? else {
            return Ok(());
        };
        if *record.user_key() != *new_user {
            self.revoke_refresh_token_of(&record);
            self.revoke_access_tokens(held, record.provider.as_deref());
        }
        self.count_logout(&record, "replaced_by_login");
        Ok(())
    }

    fn count_logout(&self, record: &SessionRecord, reason: &'static str) {
        metrics().sessions_ended(reason, 1);
        self.audit.record(
            AuditEvent::Logout,
            Details {
                sub: Some(&record.sub),
                session: Some(&record.handle),
                reason: Some(reason),
                ..Details::default()
            },
        );
    }

    /// Revokes the refresh token of `record`, a session that just ended (if it had one).
    pub fn revoke_refresh_token_of(&self, record: &SessionRecord) {
        self.revoke_in_background(
            record
                .tokens
                .refresh_token
                .as_ref()
                .map(|token| token.text()),
            record.provider.as_deref(),
        );
    }

    /// Finishes sessions ended without their cookies' help (`ended`, sessions of the provider
    /// stored as `provider`: the indexes file each provider's apart): revokes their refresh
    /// tokens there; answers how many ended.
    pub fn revoke_ended(&self, ended: Ended, provider: Option<&str>) -> usize {
        let count = ended.count;
        self.revoke_in_background(
            ended
                .refresh_tokens
                .iter()
                .map(|token| token.text().to_owned()),
            provider,
        );
        count
    }

    /// The provider stored as `key`, if it is still configured (never another one: a token
    /// is only ever sent to its issuer).
    fn provider(&self, key: Option<&str>) -> Option<Arc<Provider>> {
        let provider = self.providers.by_key(key).cloned();
        if provider.is_none() {
            tracing::warn!(
                provider = key.unwrap_or_default(),
                "a session's provider is no longer configured; its tokens are not revoked"
            );
        }
        provider
    }

    /// Revokes refresh tokens of sessions that just ended, in a task of its own: the session
    /// is already gone, so no answer waits for the provider.
    /// Revokes, in the background, access tokens an ended session held for its APIs.
    fn revoke_access_tokens(&self, access_tokens: Vec<String>, provider: Option<&str>) {
        if access_tokens.is_empty() {
            return;
        }
        let Some(provider) = self.provider(provider) else {
            return;
        };
        tokio::spawn(async move {
            for access_token in access_tokens {
                provider.revoke_access_token(&access_token).await;
            }
        });
    }

    fn revoke_in_background(
        &self,
        refresh_tokens: impl IntoIterator<Item = String>,
        provider: Option<&str>,
    ) {
        let refresh_tokens: Vec<String> = refresh_tokens.into_iter().collect();
        if refresh_tokens.is_empty() {
            return;
        }
        let Some(provider) = self.provider(provider) else {
            return;
        };
        tokio::spawn(async move {
            for refresh_token in refresh_tokens {
                provider.revoke_refresh_token(&refresh_token).await;
            }
        });
    }
}
