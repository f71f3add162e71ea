//! `POST /api/auth/backchannel-logout`: the provider tells us a session ended (OpenID Connect
//! Back-Channel Logout 1.0). Server to server: no cookie, no anti-forgery header; the logout
//! token's signature is the authentication.
//!
//! `200` once the sessions it names are gone from every instance; `400` with a JSON error for
//! a token that fails validation or was already used; `503` when Redis cannot be reached, or
//! the provider's keys cannot be fetched now (the provider may retry, and the retry is not
//! taken for a replay).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::no_store;
use crate::audit::{AuditEvent, Details};
use crate::error::AppError;
use crate::http::AppState;
use crate::oidc::{LogoutTokenError, unverified_issuer};
use crate::session::scoped_identifier;

/// The form field carrying the token (§2.5).
const LOGOUT_TOKEN_FIELD: &str = "logout_token";

/// `POST /api/auth/backchannel-logout` with `logout_token` in a form body.
pub async fn backchannel_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(AppError::BadRequest(
            "the logout token must be posted as application/x-www-form-urlencoded",
        ));
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == LOGOUT_TOKEN_FIELD)
        .map(|(_, value)| value.into_owned())
        .filter(|token| !token.is_empty())
        .ok_or(AppError::BadRequest("the logout_token field is missing"))?;
    // The algorithms every instance learnt from verified ID tokens (this one may have seen none).
    let learnt = state.sessions.learnt_id_token_algs().await?;
    // The token's own `iss` chooses the provider; that provider alone then verifies it (its
    // keys, its issuer, its client id), so no provider's token ends another's sessions.
    let provider = state
        .providers
        .by_issuer(&unverified_issuer(&token).map_err(AppError::LogoutTokenRejected)?)
        .ok_or(AppError::LogoutTokenRejected(LogoutTokenError::Issuer))?;
    let key = state.providers.key_of(provider);
    let request = provider.check_logout_token(&token, &learnt).await?;
    // Each provider's sessions, users and token ids are filed apart: these names are its own.
    let scoped = |identifier: &str| scoped_identifier(key.as_deref(), identifier).into_owned();
    let jti = scoped(&request.jti);
    if !state
        .sessions
        .accept_logout_token(&jti, request.acceptable_until)
        .await?
    {
        return Err(AppError::LogoutTokenRejected(LogoutTokenError::Replayed));
    }
    let ended = match (&request.sid, &request.sub) {
        (Some(sid), sub) => {
            state
                .sessions
                .end_provider_session(&scoped(sid), sub.as_deref().map(scoped).as_deref())
                .await
        }
        (None, Some(sub)) => state.sessions.end_all_of(&scoped(sub)).await,
        (None, None) => Ok(Default::default()),
    };
    // The provider ended its session; the refresh tokens of ours are revoked all the same
    // (tokens issued with offline_access outlive a provider session).
    let ended = match ended {
        Ok(ended) => state.ending.revoke_ended(ended, key.as_deref()),
        Err(error) => {
            // Let the provider's retry through: this token did not take effect.
            state.sessions.forget_logout_token(&jti).await;
            return Err(error.into());
        }
    };
    crate::metrics::metrics().sessions_ended("backchannel", ended);
    state.audit.record(
        AuditEvent::BackchannelLogout,
        Details {
            sub: request.sub.as_deref(),
            reason: Some(if request.sid.is_some() {
                "provider_session_ended"
            } else {
                "provider_user_logged_out"
            }),
            sessions_ended: Some(ended),
            ..Details::default()
        },
    );
    Ok(no_store(StatusCode::OK.into_response()))
}

/// Any other method.
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed("POST".into())
}
