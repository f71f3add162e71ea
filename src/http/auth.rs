//! `/api/auth/*`: login, callback, current user and logout. Handlers only translate HTTP to
//! calls on [`crate::oidc`] and [`crate::session`].

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{AppState, QueryParams, csrf};
use crate::clock::unix_now;
use crate::error::{AppError, LoginFailure, PageError};
use crate::oidc::OidcError;
use crate::return_to::ReturnTo;
use crate::session::{ActiveSession, BrowserBinding, PendingLogin, SessionRecord};

/// `GET /api/auth/login`: stores a pending login bound to this browser and redirects to the
/// provider.
pub async fn begin_login(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query = QueryParams::parse(query.as_deref());
    let return_to = ReturnTo::parse_or_root(query.get("returnTo"), &state.public_url);
    // Reuse this browser's binding so parallel logins in several tabs share one cookie.
    let binding = state
        .cookies
        .browser_binding(&jar)
        .unwrap_or_else(BrowserBinding::generate);
    let request = state.provider.authorization_request().await?;
    let pending = PendingLogin {
        state: request.state,
        nonce: request.nonce,
        pkce_verifier: request.pkce_verifier,
        return_to: return_to.as_str().to_owned(),
    };
    state.sessions.put_pending_login(&binding, &pending).await?;
    let jar = jar.add(state.cookies.login_cookie(&binding));
    Ok(no_store(
        (jar, Redirect::to(request.url.as_str())).into_response(),
    ))
}

/// `GET /api/auth/callback`: validates the provider's answer and creates a new session.
pub async fn finish_login(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query = QueryParams::parse(query.as_deref());
    let binding = state.cookies.browser_binding(&jar);
    let Some(received_state) = query
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return Err(AppError::Login(LoginFailure::MissingParameters).into());
    };
    // Taking the pending login burns the state even on an error answer: it is single use.
    let pending = state
        .sessions
        .take_pending_login(binding.as_ref(), received_state)
        .await??;
    if let Some(error) = query.get("error") {
        return Err(AppError::Login(LoginFailure::ProviderError(error_code(error))).into());
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
        return Err(AppError::Login(LoginFailure::MissingParameters).into());
    };
    state
        .provider
        .check_response_issuer(query.get("iss"))
        .await
        .map_err(|error| match error {
            OidcError::Invalid(_) => AppError::Login(LoginFailure::IssuerMismatch),
            other => other.into(),
        })?;
    let login = state
        .provider
        .exchange_code(code, &pending.pkce_verifier, &pending.nonce)
        .await
        .map_err(|error| match error {
            OidcError::Rejected(_) => AppError::Login(LoginFailure::CodeRejected),
            other => other.into(),
        })?;
    let record = SessionRecord {
        sub: login.sub,
        tokens: login.tokens,
        created_at: unix_now(),
        expires_at: state.sessions.absolute_expiry_from_now(),
        logout_sid: crate::random::token(),
    };
    // A session the browser may already have is ended, never upgraded (no session fixation).
    if let Some(previous) = state.cookies.session_token(&jar)
        && let Some(session) = state.sessions.load(&previous).await?
    {
        end_session(&state, session).await?;
    }
    let token = state.sessions.create(&record).await?;
    tracing::info!("login completed");
    let jar = jar.add(state.cookies.session_cookie(&token));
    Ok(no_store(
        (jar, Redirect::to(&pending.return_to)).into_response(),
    ))
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

/// `GET /api/auth/user`: who is logged in, never a token.
pub async fn current_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<Response, AppError> {
    csrf::check(&headers, &state.origin)?;
    let session = state
        .require_session(state.cookies.session_token(&jar))
        .await?;
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

/// `POST /api/auth/logout`: ends the session; answers the provider's end-session URL.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<Response, AppError> {
    csrf::check(&headers, &state.origin)?;
    let end_session_url = match state.cookies.session_token(&jar) {
        Some(token) => match state.sessions.load(&token).await? {
            Some(session) => end_session(&state, session).await?,
            None => None,
        },
        None => None,
    };
    let jar = jar.add(state.cookies.session_removal());
    Ok(no_store(
        (jar, Json(json!({ "end_session_url": end_session_url }))).into_response(),
    ))
}

/// `GET /api/auth/logout?sid=…`: logout by plain link; the `sid` proves the link came from us.
pub async fn logout_link(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query = QueryParams::parse(query.as_deref());
    let Some(sid) = query.get("sid").filter(|sid| !sid.is_empty()) else {
        return Err(AppError::BadRequest("the logout link has no sid").into());
    };
    let session = match state.cookies.session_token(&jar) {
        Some(token) => state.sessions.load(&token).await?,
        None => None,
    };
    let Some(session) = session else {
        // Nothing to end: already logged out.
        return Ok(no_store(Redirect::to("/").into_response()));
    };
    if !bool::from(session.record.logout_sid.as_bytes().ct_eq(sid.as_bytes())) {
        return Err(AppError::Forbidden("the logout link does not belong to this session").into());
    }
    let target = end_session(&state, session).await?;
    let jar = jar.add(state.cookies.session_removal());
    let location = target.unwrap_or_else(|| "/".to_owned());
    Ok(no_store((jar, Redirect::to(&location)).into_response()))
}

/// Deletes the session, revokes its refresh token in the background, and builds the
/// provider's end-session URL.
async fn end_session(state: &AppState, session: ActiveSession) -> Result<Option<String>, AppError> {
    state.sessions.delete(&session.token).await?;
    tracing::info!("logout");
    if let Some(refresh_token) = session
        .record
        .tokens
        .refresh_token
        .as_ref()
        .map(|token| token.text())
    {
        let provider = state.provider.clone();
        tokio::spawn(async move { provider.revoke_refresh_token(&refresh_token).await });
    }
    let post_logout = state
        .public_url
        .join("/")
        .unwrap_or_else(|_| state.public_url.clone());
    Ok(state
        .provider
        .end_session_url(&session.record.tokens.id_token.text(), &post_logout)
        .await
        .map(|url| url.to_string()))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Fallback for unknown `/api/auth/*` paths.
pub async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, AppError::NotFound)
}
