//! A login: its start (a pending login bound to the browser, the redirect to the provider)
//! and its callback (the provider's answer checked, the code exchanged, any session the
//! browser had ended, the new session created within the user's limit). The outcome is
//! counted and audited here, whichever way it goes. A silent check (`prompt=none`) that the
//! provider declines is an outcome of its own, not a failure page.

use std::sync::Arc;

use crate::audit::{AuditEvent, AuditTrail, Details, Repeats};
use crate::clock::unix_now;
use crate::error::{AppError, LoginFailure};
use crate::metrics::metrics;
use crate::oidc::{AuthenticationRequest, OidcError, Provider, Providers};
use crate::session::{
    BrowserBinding, Displaced, ENDED_WHILE_CREATED, PendingLimits, PendingLogin, SessionCookie,
    SessionOrigin, SessionRecord, Sessions, StoreError, StoredDpopKey, TokenSet, scoped_identifier,
};

use super::ending::SessionEnding;

/// Runs logins.
#[derive(Clone)]
pub struct Logins {
    sessions: Arc<Sessions>,
    providers: Arc<Providers>,
    ending: SessionEnding,
    audit: AuditTrail,
    pending_limits: PendingLimits,
}

/// What a login start asks for.
pub struct LoginStart<'a> {
    /// The provider the login goes to.
    pub provider: &'a Provider,
    /// The browser's binding (reused, so parallel logins in several tabs share one cookie).
    pub binding: &'a BrowserBinding,
    /// Where the browser goes afterwards (already validated).
    pub return_to: String,
    /// The provider's `login_hint`, passed on.
    pub login_hint: Option<&'a str>,
    /// The session cookie the browser brought to the start, to be ended at the callback.
    pub previous_session: Option<SessionCookie>,
    /// What the login asks of the authentication (already validated), checked at the callback.
    pub authentication: AuthenticationRequest,
}

/// Where a started login sends the browser.
pub struct LoginRedirect {
    /// The provider's authorization URL.
    pub url: url::Url,
    /// The logins in progress this one displaced.
    pub displaced: Displaced,
}

/// The provider's answer at the callback, as the query carried it.
#[derive(Default)]
pub struct Callback<'a> {
    /// `state`.
    pub state: Option<&'a str>,
    /// `code`.
    pub code: Option<&'a str>,
    /// `error`, when the provider refused.
    pub error: Option<&'a str>,
    /// `iss` (RFC 9207).
    pub iss: Option<&'a str>,
}

/// How a callback ended, when it did not fail.
pub enum Completion {
    /// A new session.
    LoggedIn(LoggedIn),
    /// A silent check (`prompt=none`) the provider could not answer without showing a page:
    /// no session was created or ended; the browser goes back to `return_to`, told `error`.
    SilentlyDeclined {
        /// Where the browser goes now.
        return_to: String,
        /// The provider's answer, one of [`SILENT_LOGIN_ERRORS`].
        error: &'static str,
    },
}

/// What the callback's work produced: a session, or a declined silent check.
enum Outcome {
    Created(LoggedIn, Box<SessionRecord>),
    Declined(Completion),
}

/// A completed login.
pub struct LoggedIn {
    /// The new session's cookie.
    pub cookie: SessionCookie,
    /// Where the browser goes now.
    pub return_to: String,
}

impl Logins {
    /// Logins creating sessions in `sessions` for users of `providers`.
    pub fn new(
        sessions: Arc<Sessions>,
        providers: Arc<Providers>,
        ending: SessionEnding,
        audit: AuditTrail,
        pending_limits: PendingLimits,
    ) -> Self {
        Self {
            sessions,
            providers,
            ending,
            audit,
            pending_limits,
        }
    }

    /// Starts a login: stores the pending login under the browser's binding and answers the
    /// provider's authorization URL.
    pub async fn begin(&self, start: LoginStart<'_>) -> Result<LoginRedirect, AppError> {
        let request = start
            .provider
            .authorization_request(start.login_hint, &start.authentication)
            .await
            .map_err(dpop_failure)?;
        let pending = PendingLogin {
            state: request.state,
            nonce: request.nonce,
            pkce_verifier: request.pkce_verifier,
            return_to: start.return_to,
            previous_session: start.previous_session.map(|cookie| cookie.encode()),
            authentication: start.authentication,
            provider: self.providers.key_of(start.provider),
            dpop_key: request.dpop_key.as_ref().map(StoredDpopKey::new),
        };
        let displaced = self
            .sessions
            .put_pending_login(start.binding, &pending, self.pending_limits)
            .await?;
        metrics().logins_started.inc();
        Ok(LoginRedirect {
            url: request.url,
            displaced,
        })
    }

    /// Completes a login from the provider's `callback` for the browser bound by `binding`
    /// (which sent `session`, if any): the outcome is counted and audited.
    pub async fn complete(
        &self,
        callback: Callback<'_>,
        binding: Option<&BrowserBinding>,
        session: Option<SessionCookie>,
        origin: SessionOrigin,
    ) -> Result<Completion, AppError> {
        match self
            .create_session(callback, binding, session, origin)
            .await
        {
            Ok(Outcome::Declined(declined)) => {
                // Counted, not audited: a SPA checks silently on every page load, and a user
                // not signed in at the provider is no security event.
                metrics().login_failed("silent_login_declined");
                Ok(declined)
            }
            Ok(Outcome::Created(logged_in, record)) => {
                metrics().logins_completed.inc();
                metrics().sessions_created.inc();
                self.audit.record(
                    AuditEvent::LoginSucceeded,
                    Details {
                        sub: Some(&record.sub),
                        session: Some(&record.handle),
                        ..Details::default()
                    },
                );
                Ok(Completion::LoggedIn(logged_in))
            }
            Err(error) => {
                let reason = error.login_failure_reason();
                metrics().login_failed(reason);
                // Anyone can send callbacks: a flood from one network is a line a second.
                self.audit.record_unless_repeated(
                    AuditEvent::LoginFailed,
                    Details {
                        reason: Some(reason),
                        ..Details::default()
                    },
                    Repeats::PerClientPerSecond,
                );
                Err(error)
            }
        }
    }

    /// The callback's work: the new session (or a declined silent check), or why the login
    /// failed.
    async fn create_session(
        &self,
        callback: Callback<'_>,
        binding: Option<&BrowserBinding>,
        session: Option<SessionCookie>,
        origin: SessionOrigin,
    ) -> Result<Outcome, AppError> {
        let Some(received_state) = callback.state.filter(|s| !s.is_empty() && s.len() <= 512)
        else {
            return Err(AppError::Login(LoginFailure::MissingParameters));
        };
        // Taking the pending login burns the state even on an error answer: it is single use.
        let pending = self
            .sessions
            .take_pending_login(binding, received_state)
            .await??;
        if let Some(error) = callback.error {
            if let Some(error) = pending.authentication.declined_silently(error) {
                return Ok(Outcome::Declined(Completion::SilentlyDeclined {
                    return_to: pending.return_to,
                    error,
                }));
            }
            return Err(AppError::Login(LoginFailure::ProviderError(error_code(
                error,
            ))));
        }
        let Some(code) = callback.code.filter(|c| !c.is_empty()) else {
            return Err(AppError::Login(LoginFailure::MissingParameters));
        };
        // The provider the login was started at (one since removed from the configuration
        // cannot finish it).
        let provider = self
            .providers
            .by_key(pending.provider.as_deref())
            .ok_or(AppError::Login(LoginFailure::UnknownState))?;
        provider
            .check_response_issuer(callback.iss)
            .await
            .map_err(|error| match error {
                OidcError::Invalid(_) => AppError::Login(LoginFailure::IssuerMismatch),
                other => other.into(),
            })?;
        // A key that does not open is a pending login from another build: it cannot finish.
        let dpop_key = pending
            .dpop_key
            .as_ref()
            .map(StoredDpopKey::key)
            .transpose()
            .map_err(|_| AppError::Login(LoginFailure::UnknownState))?;
        let login = provider
            .exchange_code(
                code,
                &pending.pkce_verifier,
                &pending.nonce,
                &pending.authentication,
                dpop_key,
            )
            .await
            .map_err(|error| match error {
                OidcError::Rejected(_) | OidcError::ReuseReported(_) => {
                    AppError::Login(LoginFailure::CodeRejected)
                }
                OidcError::NotAuthenticatedAsRequested(shortfall) => {
                    AppError::Login(LoginFailure::NotAuthenticatedAsRequested(shortfall))
                }
                other => dpop_failure(other),
            })?;
        // Before the session exists: a logout token for it, on any instance, then finds the
        // algorithm its ID token was signed with among the accepted ones.
        if let Some(alg) = provider.learnable_alg(&login.id_token) {
            self.sessions.learn_id_token_alg(&alg).await?;
        }
        // Filed within the provider, so another provider's logout cannot name it.
        let origin = SessionOrigin {
            provider_session: login
                .provider_session
                .as_deref()
                .map(|sid| scoped_identifier(pending.provider.as_deref(), sid).into_owned()),
            ..origin
        };
        let record = SessionRecord {
            sub: login.sub.clone(),
            tokens: TokenSet::from_login(login),
            created_at: unix_now(),
            expires_at: self.sessions.absolute_expiry_from_now(),
            logout_sid: crate::random::url_safe_secret(),
            handle: crate::random::url_safe_id(),
            origin_network: origin.network.clone(),
            origin_browser: origin.browser_family.clone(),
            provider: pending.provider.clone(),
        };
        // A session the browser had is ended, never upgraded (no session fixation): the one
        // it brought to the login start, and the one it sent here, if the browser sent one.
        let brought = pending
            .previous_session
            .as_deref()
            .and_then(SessionCookie::parse);
        for previous in [brought, session].into_iter().flatten() {
            self.ending
                .replace_for_login(&previous, &record.user_key())
                .await?;
        }
        let created = self.sessions.create_within_limit(&record, &origin).await?;
        let evicted = self
            .ending
            .revoke_ended(created.displaced, record.provider.as_deref());
        if evicted > 0 {
            metrics().sessions_ended("evicted_by_limit", evicted);
            self.audit.record(
                AuditEvent::SessionsEvicted,
                Details {
                    sub: Some(&record.sub),
                    reason: Some("max_per_user"),
                    sessions_ended: Some(evicted),
                    ..Details::default()
                },
            );
        }
        let Some(cookie) = created.cookie else {
            // Ended before it began: its own refresh token goes too.
            self.ending.revoke_refresh_token_of(&record);
            return Err(AppError::Store(StoreError::Conflict(ENDED_WHILE_CREATED)));
        };
        let logged_in = LoggedIn {
            cookie,
            return_to: pending.return_to,
        };
        Ok(Outcome::Created(logged_in, Box::new(record)))
    }
}

/// A provider that does not bind tokens under `oidc.dpop = "required"` fails the login with
/// its own page; any other provider error as before.
fn dpop_failure(error: OidcError) -> AppError {
    match error {
        OidcError::DpopUnsupported(_) => AppError::Login(LoginFailure::DpopUnsupported),
        other => other.into(),
    }
}

/// Provider error codes are a small ASCII vocabulary; anything else is not echoed.
fn error_code(raw: &str) -> String {
    if !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        raw.to_owned()
    } else {
        "unknown_error".to_owned()
    }
}
