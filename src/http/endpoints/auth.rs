//! `/api/auth/*`: login, callback, current user and logout. Handlers only translate HTTP into
//! calls on the workflows ([`crate::workflows`]: a login, ending a session) and the session
//! layer, and their results back into HTTP.

use axum::Extension;
use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::login_chooser::{Choice, asks_for_json, choose, chooser_page};
use super::logout::{ProviderLogout, provider_logout};
use super::no_store;
use crate::error::{AppError, PageError};
use crate::http::device::session_origin;
use crate::http::server::client_address::ClientAddress;
use crate::http::{AppState, QueryParams, csrf};
use crate::oidc::AuthenticationRequest;
use crate::return_to::{ReturnTo, with_query_marker};
use crate::session::BrowserBinding;
use crate::workflows::login::{Callback, Completion, LoginStart};

/// The query parameter that tells the SPA how a silent check (`prompt=none`) ended, on its
/// `returnTo`: `vestibule_login=login_required` (or the provider's other silent-check errors).
pub const SILENT_LOGIN_MARKER: &str = "vestibule_login";

/// `GET /api/auth/login`: stores a pending login bound to this browser and redirects to the
/// provider (`provider=ID` names one; with several and none named, the chooser page lists
/// them). Rate-limited per client address; the logins in progress are capped (the oldest
/// are displaced). Also the third-party-initiated login URI (OIDC Core §4): with `iss`, the
/// provider of that issuer, only one of ours; `login_hint` is passed on; `target_link_uri` is kept under `returnTo`'s
/// rules (ignored otherwise), and `returnTo` wins when both are given. `acr_values`, `max_age`
/// and `prompt` (OIDC Core §3.1.2.1) are validated (`400` page otherwise), sent to the provider
/// and checked at the callback.
#[tracing::instrument(level = "debug", name = "login", skip_all)]
pub async fn begin_login(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    state
        .login_limit
        .admit(client, &headers)
        .map_err(AppError::TooManyRequests)?;
    let query = QueryParams::parse(query.as_deref());
    let authentication = AuthenticationRequest::parse(
        query.get("acr_values"),
        query.get("max_age"),
        query.get("prompt"),
    )
    .map_err(|error| AppError::BadRequest(error.message()))?;
    let return_to = match (query.get("returnTo"), query.get("target_link_uri")) {
        (None, Some(target)) => {
            ReturnTo::from_target_link_uri(target, &state.public_url).unwrap_or_else(ReturnTo::root)
        }
        (return_to, _) => ReturnTo::parse_or_root(return_to, &state.public_url),
    };
    let provider = match choose(&state.providers, &query) {
        Ok(Choice::Provider(provider)) => provider,
        Ok(Choice::Chooser) => {
            return Ok(chooser_page(&state.providers, &query, return_to.as_str()));
        }
        Err(error) if asks_for_json(&headers) => return Ok(error.into_response()),
        Err(error) => return Err(error.into()),
    };
    let login_hint = query
        .get("login_hint")
        .filter(|hint| !hint.is_empty() && hint.len() <= MAX_LOGIN_HINT_LEN);
    let cookies = state.cookies.read(&headers);
    // Reuse this browser's binding so parallel logins in several tabs share one cookie.
    let binding = cookies.login.unwrap_or_else(BrowserBinding::generate);
    let started = state
        .logins
        .begin(LoginStart {
            provider: &provider,
            binding: &binding,
            return_to: return_to.as_str().to_owned(),
            login_hint,
            // This is a same-origin navigation, so the SameSite=Strict session cookie is
            // here; the callback (a cross-site redirect) will not have it.
            previous_session: cookies.session,
            authentication,
        })
        .await;
    let redirect = match started {
        Ok(redirect) => redirect,
        // A start asked for as an API call (a refused pushed authorization request, a provider
        // down) answers JSON, as the chooser's errors do; a navigation gets the page.
        Err(error) if asks_for_json(&headers) => return Ok(error.into_response()),
        Err(error) => return Err(error.into()),
    };
    if redirect.displaced.by_total > 0 {
        state
            .login_limit
            .report_displaced_logins(redirect.displaced.by_total);
    }
    let set_cookie = [(header::SET_COOKIE, state.cookies.login_cookie(&binding))];
    Ok(no_store(
        (set_cookie, Redirect::to(redirect.url.as_str())).into_response(),
    ))
}

/// Longest `login_hint` passed on (an e-mail address or a user name; longer ones are dropped).
const MAX_LOGIN_HINT_LEN: usize = 512;

/// `GET /api/auth/callback`: hands the provider's answer to the login workflow; a new
/// session's cookie and a redirect back, or an error page. A silent check the provider
/// declined goes back to `returnTo` with [`SILENT_LOGIN_MARKER`], never to an error page.
#[tracing::instrument(level = "debug", name = "callback", skip_all)]
pub async fn finish_login(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query = QueryParams::parse(query.as_deref());
    let cookies = state.cookies.read(&headers);
    let callback = Callback {
        state: query.get("state"),
        code: query.get("code"),
        error: query.get("error"),
        iss: query.get("iss"),
    };
    let completion = state
        .logins
        .complete(
            callback,
            cookies.login.as_ref(),
            cookies.session,
            session_origin(client, &headers),
        )
        .await?;
    let logged_in = match completion {
        Completion::LoggedIn(logged_in) => logged_in,
        Completion::SilentlyDeclined { return_to, error } => {
            let location = with_query_marker(&return_to, SILENT_LOGIN_MARKER, error);
            return Ok(no_store(Redirect::to(&location).into_response()));
        }
    };
    let set_cookie = [(
        header::SET_COOKIE,
        state.cookies.session_cookie(&logged_in.cookie),
    )];
    Ok(no_store(
        (set_cookie, Redirect::to(&logged_in.return_to)).into_response(),
    ))
}

/// `GET /api/auth/user`: who is logged in, never a token. The call counts as use of the
/// session, so the idle deadline it reports is the one Redis enforces from now on.
pub async fn current_user(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    csrf::check(&headers, &state.origin)?;
    let cookie = state
        .cookies
        .read(&headers)
        .session
        .ok_or(AppError::Unauthenticated)?;
    let session = state
        .sessions
        .load_touched(&cookie)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let session = state.check_use(session, client, &headers).await?;
    let record = &session.record;
    let body = json!({
        "sub": record.sub,
        "claims": record.claims(),
        "session": {
            "expires_at": record.expires_at,
            "idle_expires_at": session.idle_expires_at,
            "access_token_expires_at": record.tokens.access_expires_at,
        },
        "logout_url": format!("/api/auth/logout?sid={}", record.logout_sid),
    });
    Ok(no_store(Json(body).into_response()))
}

/// `POST /api/auth/logout`: ends the session; answers the provider's end-session URL (with
/// the logout cookie that remembers its `state`).
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    csrf::check(&headers, &state.origin)?;
    let ended = match state.cookies.read(&headers).session {
        Some(cookie) => state.ending.log_out(&cookie, "logout").await?,
        None => None,
    };
    let provider_logout = match &ended {
        Some(record) => provider_logout(&state, record).await,
        None => None,
    };
    let body =
        Json(json!({ "end_session_url": provider_logout.as_ref().map(|logout| &logout.url) }));
    Ok(logout_answer(&state, provider_logout, body))
}

/// `GET /api/auth/logout?sid=…`: logout by plain link; the `sid` proves the link came from us.
pub async fn logout_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query = QueryParams::parse(query.as_deref());
    let Some(sid) = query.get("sid").filter(|sid| !sid.is_empty()) else {
        return Err(AppError::BadRequest("the logout link has no sid").into());
    };
    let cookie = state.cookies.read(&headers).session;
    let session = match &cookie {
        Some(cookie) => state.sessions.load_fresh(cookie).await?,
        None => None,
    };
    let Some(session) = session else {
        // Nothing to end: already logged out.
        return Ok(no_store(Redirect::to("/").into_response()));
    };
    if !bool::from(session.record.logout_sid.as_bytes().ct_eq(sid.as_bytes())) {
        return Err(AppError::Forbidden("the logout link does not belong to this session").into());
    }
    let ended = state.ending.log_out(&session.cookie, "logout").await?;
    let provider_logout = match &ended {
        Some(record) => provider_logout(&state, record).await,
        None => None,
    };
    let location = Redirect::to(
        provider_logout
            .as_ref()
            .map_or("/", |logout| logout.url.as_str()),
    );
    Ok(logout_answer(&state, provider_logout, location))
}

/// The answer to a logout: `body` with the session cookie removed and, when the browser goes
/// on to the provider, the cookie that remembers the logout's `state`; never stored.
fn logout_answer(
    state: &AppState,
    provider_logout: Option<ProviderLogout>,
    body: impl IntoResponse,
) -> Response {
    let mut response = (
        [(header::SET_COOKIE, state.cookies.session_removal())],
        body,
    )
        .into_response();
    if let Some(logout) = provider_logout {
        response
            .headers_mut()
            .append(header::SET_COOKIE, logout.set_cookie);
    }
    no_store(response)
}

/// Refuses a request to `/api/auth/*` whose declared body is larger than
/// `server.max_body_bytes` before any handler runs (bodies read later are bounded by the
/// router's body limit).
pub async fn refuse_large_bodies(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > state.max_body_bytes as u64) {
        return AppError::PayloadTooLarge.into_response();
    }
    next.run(request).await
}

/// Fallback for unknown `/api/auth/*` paths.
pub async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, AppError::NotFound)
}
