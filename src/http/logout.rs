//! RP-initiated logout's way back (RP-Initiated Logout 1.0 §2–3): the `state` sent with every
//! end-session URL, the short-lived cookie that remembers it in this browser, and
//! `GET /api/auth/logout-callback`, where the provider sends the browser after its logout.
//!
//! The session has ended before the browser leaves for the provider: the callback only checks
//! that the answer belongs to the logout this browser started, and never ends or starts a
//! session. The expected `state` lives in the browser's cookie, not in Redis, so any instance
//! of a deployment can check it.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::auth::no_store;
use super::{AppState, QueryParams};
use crate::error::{AppError, PageError};
use crate::session::SessionRecord;

/// The `post_logout_redirect_uri` Vestibule sends (on `public_url`); it must be registered.
pub const LOGOUT_CALLBACK_PATH: &str = "/api/auth/logout-callback";

/// How long the browser keeps the expected `state`: time enough to confirm the logout on the
/// provider's page, short enough that a forgotten one does not linger.
pub const LOGOUT_STATE_TTL: Duration = Duration::from_secs(600);

/// The `state` of one RP-initiated logout: 256 random bits, base64url.
pub struct LogoutState(String);

impl LogoutState {
    /// A fresh random state.
    pub fn generate() -> Self {
        Self(crate::random::url_safe_secret())
    }

    /// Parses a logout cookie's value; anything but 32 bytes in base64url is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != 43 || URL_SAFE_NO_PAD.decode(value).ok()?.len() != 32 {
            return None;
        }
        Some(Self(value.to_owned()))
    }

    /// The value sent to the provider and kept in the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the provider sent back exactly this state (compared in constant time).
    pub fn matches(&self, received: &str) -> bool {
        self.0.as_bytes().ct_eq(received.as_bytes()).into()
    }
}

/// Where to send the browser to end its provider session, with the `Set-Cookie` that
/// remembers the logout's `state` for the way back.
pub struct ProviderLogout {
    /// The provider's end-session URL (with `id_token_hint`, `post_logout_redirect_uri`,
    /// `client_id` and `state`).
    pub url: String,
    /// The logout cookie, to be set in the response that ends the session.
    pub set_cookie: header::HeaderValue,
}

/// The provider's end-session URL for `record`, a session that just ended, with a fresh
/// `state`; `None` when the provider has no end-session endpoint.
pub(super) async fn provider_logout(
    state: &AppState,
    record: &SessionRecord,
) -> Option<ProviderLogout> {
    let logout_state = LogoutState::generate();
    let mut post_logout = state.public_url.clone();
    post_logout.set_path(LOGOUT_CALLBACK_PATH);
    post_logout.set_query(None);
    let url = state
        .provider
        .end_session_url(
            &record.tokens.id_token.text(),
            &post_logout,
            logout_state.as_str(),
        )
        .await?;
    Some(ProviderLogout {
        url: url.to_string(),
        set_cookie: state.cookies.logout_cookie(&logout_state),
    })
}

/// `GET /api/auth/logout-callback?state=…`: the provider's redirect after RP-initiated
/// logout. The `state` this browser's logout cookie holds leads home; anything else (another
/// state, a state without the cookie, no state: the provider must return the one it was sent)
/// is a `400` page. The cookie is cleared either way.
pub async fn logout_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = QueryParams::parse(query.as_deref());
    let expected = state.cookies.read(&headers).logout;
    let confirmed = match (expected, query.get("state")) {
        (Some(expected), Some(received)) => expected.matches(received),
        _ => false,
    };
    let clear = [(header::SET_COOKIE, state.cookies.logout_removal())];
    if confirmed {
        return no_store((clear, Redirect::to("/")).into_response());
    }
    (clear, PageError(AppError::LogoutNotConfirmed)).into_response()
}

#[cfg(test)]
mod tests {
    use super::LogoutState;

    #[test]
    fn a_logout_state_is_256_random_bits_and_matches_only_itself() {
        let state = LogoutState::generate();
        assert_eq!(state.as_str().len(), 43);
        assert!(state.matches(state.as_str()));
        assert!(!state.matches(&format!("{}_INVALID", state.as_str())));
        assert!(!state.matches(""));
        assert_ne!(LogoutState::generate().as_str(), state.as_str());
        let parsed = LogoutState::parse(state.as_str()).expect("its own value parses");
        assert!(parsed.matches(state.as_str()));
        assert!(LogoutState::parse("short").is_none());
        assert!(LogoutState::parse(&"*".repeat(43)).is_none());
    }
}
