//! RP-initiated logout's way back (RP-Initiated Logout 1.0 §2–3): the `state` sent with every
//! end-session URL, the short-lived cookie that remembers it in this browser, and
//! `GET /api/auth/logout-callback`, where the provider sends the browser after its logout.
//!
//! The session has ended before the browser leaves for the provider: the callback only checks
//! that the answer belongs to the logout this browser started, and never ends or starts a
//! session. The expected `state` lives in the browser's cookie, not in Redis, so any instance
//! of a deployment can check it.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::no_store;
use crate::error::{AppError, PageError};
use crate::http::logout_state::{LOGOUT_CALLBACK_PATH, LogoutState};
use crate::http::{AppState, QueryParams};
use crate::oidc::EndSession;
use crate::session::SessionRecord;

/// Where to send the browser to end its provider session, with the `Set-Cookie` that
/// remembers the logout's `state` for the way back.
pub struct ProviderLogout {
    /// The provider's logout URL (for RP-initiated logout with `id_token_hint`,
    /// `post_logout_redirect_uri`, `client_id` and `state`).
    pub url: String,
    /// The logout cookie, to be set in the response that ends the session.
    pub set_cookie: header::HeaderValue,
}

/// Where `record`, a session that just ended, leaves for the provider's logout (by
/// `oidc.logout` of the provider the session logged in at), with a fresh `state`; `None` when
/// the session ends here only (or its provider is no longer configured).
pub(super) async fn provider_logout(
    state: &AppState,
    record: &SessionRecord,
) -> Option<ProviderLogout> {
    let logout_state = LogoutState::generate();
    let mut post_logout = state.public_url.clone();
    post_logout.set_path(LOGOUT_CALLBACK_PATH);
    post_logout.set_query(None);
    // The session's own provider ends its provider session.
    let id_token = record.tokens.id_token.text();
    let end_session = state
        .providers
        .of_session(record.provider.as_deref(), &id_token)?
        .end_session_url(&EndSession {
            id_token_hint: &id_token,
            post_logout_redirect_uri: &post_logout,
            state: logout_state.as_str(),
            claims: &record.claims(),
        })
        .await?;
    let logout_state = if end_session.sends_state {
        logout_state
    } else {
        logout_state.unsent()
    };
    Some(ProviderLogout {
        url: end_session.url.to_string(),
        set_cookie: state.cookies.logout_cookie(&logout_state),
    })
}

/// `GET /api/auth/logout-callback?state=…`: the provider's redirect after its logout. The
/// `state` this browser's logout cookie holds leads home; anything else (another state, a
/// state without the cookie, no state: the provider must return the one it was sent) is a
/// `400` page. After a logout whose provider was not sent the state (a template without
/// `{state}`: Cognito, Auth0's `/v2/logout`), the cookie alone leads home, and a state is
/// refused. The cookie is cleared either way.
pub async fn logout_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = QueryParams::parse(query.as_deref());
    let expected = state.cookies.read(&headers).logout;
    let confirmed = expected.is_some_and(|expected| expected.confirms(query.get("state")));
    let clear = [(header::SET_COOKIE, state.cookies.logout_removal())];
    if confirmed {
        return no_store((clear, Redirect::to("/")).into_response());
    }
    (clear, PageError(AppError::LogoutNotConfirmed)).into_response()
}
