//! `/api/auth/*`: login, callback, current user and logout. Handlers only translate HTTP to
//! calls on [`crate::oidc`] and [`crate::session`].

use std::net::IpAddr;

use axum::Extension;
use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::logout::{ProviderLogout, provider_logout};
use super::no_store;
use crate::audit::{AuditEvent, Details, Repeats};
use crate::clock::unix_now;
use crate::error::{AppError, LoginFailure, PageError};
use crate::http::device::session_origin;
use crate::http::proxy::headers::X_FORWARDED_FOR;
use crate::http::server::client_address::ClientAddress;
use crate::http::{AppState, Components, QueryParams, csrf};
use crate::metrics::metrics;
use crate::oidc::OidcError;
use crate::return_to::ReturnTo;
use crate::session::{
    BrowserBinding, ENDED_WHILE_CREATED, PendingLogin, SessionCookie, SessionOrigin, SessionRecord,
    StoreError, TokenSet,
};

/// `GET /api/auth/login`: stores a pending login bound to this browser and redirects to the
/// provider. Rate-limited per client address; the logins in progress are capped (the oldest
/// are displaced). Also the third-party-initiated login URI (OIDC Core §4): with `iss`, only
/// for our issuer; `login_hint` is passed on; `target_link_uri` is kept under `returnTo`'s
/// rules (ignored otherwise), and `returnTo` wins when both are given.
#[tracing::instrument(level = "debug", name = "login", skip_all)]
pub async fn begin_login(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    state.login_limit.check(client).map_err(|wait| {
        if state.trusted_proxies.is_empty() && headers.contains_key(X_FORWARDED_FOR) {
            state
                .login_limit
                .report_refused_behind_untrusted_proxy(client);
        }
        AppError::TooManyRequests(wait)
    })?;
    let query = QueryParams::parse(query.as_deref());
    if query
        .get("iss")
        .is_some_and(|iss| !state.provider.is_issuer(iss))
    {
        return Err(AppError::BadRequest("the login was initiated for another issuer").into());
    }
    let return_to = match (query.get("returnTo"), query.get("target_link_uri")) {
        (None, Some(target)) => {
            ReturnTo::from_target_link_uri(target, &state.public_url).unwrap_or_else(ReturnTo::root)
        }
        (return_to, _) => ReturnTo::parse_or_root(return_to, &state.public_url),
    };
    let login_hint = query
        .get("login_hint")
        .filter(|hint| !hint.is_empty() && hint.len() <= MAX_LOGIN_HINT_LEN);
    let cookies = state.cookies.read(&headers);
    // Reuse this browser's binding so parallel logins in several tabs share one cookie.
    let binding = cookies.login.unwrap_or_else(BrowserBinding::generate);
    let request = state.provider.authorization_request(login_hint).await?;
    let pending = PendingLogin {
        state: request.state,
        nonce: request.nonce,
        pkce_verifier: request.pkce_verifier,
        return_to: return_to.as_str().to_owned(),
        // This is a same-origin navigation, so the SameSite=Strict session cookie is here;
        // the callback (a cross-site redirect) will not have it.
        previous_session: cookies.session.map(|cookie| cookie.encode()),
    };
    let displaced = state
        .sessions
        .put_pending_login(&binding, &pending, state.pending_limits)
        .await?;
    if displaced.by_total > 0 {
        state
            .login_limit
            .report_displaced_logins(displaced.by_total);
    }
    metrics().logins_started.inc();
    let set_cookie = [(header::SET_COOKIE, state.cookies.login_cookie(&binding))];
    Ok(no_store(
        (set_cookie, Redirect::to(request.url.as_str())).into_response(),
    ))
}

/// Longest `login_hint` passed on (an e-mail address or a user name; longer ones are dropped).
const MAX_LOGIN_HINT_LEN: usize = 512;

/// `GET /api/auth/callback`: validates the provider's answer and creates a new session; the
/// outcome goes to the audit trail either way.
#[tracing::instrument(level = "debug", name = "callback", skip_all)]
pub async fn finish_login(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    match complete_login(&state, client, &headers, query.as_deref()).await {
        Ok((response, record)) => {
            metrics().logins_completed.inc();
            metrics().sessions_created.inc();
            state.audit.record(
                AuditEvent::LoginSucceeded,
                Details {
                    sub: Some(&record.sub),
                    session: Some(&record.handle),
                    ..Details::default()
                },
            );
            Ok(response)
        }
        Err(error) => {
            let reason = error.login_failure_reason();
            metrics().login_failed(reason);
            // Anyone can send callbacks: a flood from one network is a line a second.
            state.audit.record_unless_repeated(
                AuditEvent::LoginFailed,
                Details {
                    reason: Some(reason),
                    ..Details::default()
                },
                Repeats::PerClientPerSecond,
            );
            Err(error.into())
        }
    }
}

/// The callback's work: the response and the new session's record, or why the login failed.
async fn complete_login(
    state: &AppState,
    client: IpAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Response, SessionRecord), AppError> {
    let query = QueryParams::parse(query);
    let cookies = state.cookies.read(headers);
    let Some(received_state) = query
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return Err(AppError::Login(LoginFailure::MissingParameters));
    };
    // Taking the pending login burns the state even on an error answer: it is single use.
    let pending = state
        .sessions
        .take_pending_login(cookies.login.as_ref(), received_state)
        .await??;
    if let Some(error) = query.get("error") {
        return Err(AppError::Login(LoginFailure::ProviderError(error_code(
            error,
        ))));
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
        return Err(AppError::Login(LoginFailure::MissingParameters));
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
            OidcError::Rejected(_) | OidcError::ReuseReported(_) => {
                AppError::Login(LoginFailure::CodeRejected)
            }
            other => other.into(),
        })?;
    // Before the session exists: a logout token for it, on any instance, then finds the
    // algorithm its ID token was signed with among the accepted ones.
    if let Some(alg) = state.provider.learnable_alg(&login.id_token) {
        state.sessions.learn_id_token_alg(&alg).await?;
    }
    let origin = SessionOrigin {
        provider_session: login.provider_session.clone(),
        ..session_origin(client, headers)
    };
    let record = SessionRecord {
        sub: login.sub.clone(),
        tokens: TokenSet::from_login(login),
        created_at: unix_now(),
        expires_at: state.sessions.absolute_expiry_from_now(),
        logout_sid: crate::random::url_safe_secret(),
        handle: crate::random::url_safe_id(),
        origin_network: origin.network.clone(),
        origin_browser: origin.browser_family.clone(),
    };
    // A session the browser had is ended, never upgraded (no session fixation): the one it
    // brought to the login start, and the one it sent here, if the browser sent one.
    let brought = pending
        .previous_session
        .as_deref()
        .and_then(SessionCookie::parse);
    for previous in [brought, cookies.session].into_iter().flatten() {
        end_session(state, &previous, "replaced_by_login").await?;
    }
    let created = state.sessions.create_within_limit(&record, &origin).await?;
    let evicted = revoke_ended(state, created.displaced);
    if evicted > 0 {
        metrics().sessions_ended("evicted_by_limit", evicted);
        state.audit.record(
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
        revoke_refresh_token_of(state, &record);
        return Err(AppError::Store(StoreError::Conflict(ENDED_WHILE_CREATED)));
    };
    let set_cookie = [(header::SET_COOKIE, state.cookies.session_cookie(&cookie))];
    let response = no_store((set_cookie, Redirect::to(&pending.return_to)).into_response());
    Ok((response, record))
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
        Some(cookie) => end_session(&state, &cookie, "logout").await?,
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
    let ended = end_session(&state, &session.cookie, "logout").await?;
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

/// Ends the session for `cookie` as Redis holds it and revokes its refresh token (taken from
/// the record itself, so escrow or not) in the background: how a session whose cookie is at
/// hand ends, whoever asks (a logout, the user's own "end this session"). `None` when there
/// was no session.
pub(crate) async fn end_by_cookie(
    state: &AppState,
    cookie: &SessionCookie,
) -> Result<Option<SessionRecord>, AppError> {
    let Some(record) = state.sessions.end(cookie).await? else {
        return Ok(None);
    };
    revoke_refresh_token_of(state, &record);
    Ok(Some(record))
}

/// Ends the session for `cookie` (see [`end_by_cookie`]) for `reason` (`logout`, or
/// `replaced_by_login`): the ended session's record, `None` when there was no session.
async fn end_session(
    state: &AppState,
    cookie: &SessionCookie,
    reason: &'static str,
) -> Result<Option<SessionRecord>, AppError> {
    let Some(record) = end_by_cookie(state, cookie).await? else {
        return Ok(None);
    };
    metrics().sessions_ended(reason, 1);
    state.audit.record(
        AuditEvent::Logout,
        Details {
            sub: Some(&record.sub),
            session: Some(&record.handle),
            reason: Some(reason),
            ..Details::default()
        },
    );
    Ok(Some(record))
}

/// Revokes the refresh tokens of sessions that just ended, in a task of its own: the
/// session is already gone, so the answer never waits for the provider.
fn revoke_in_background(state: &Components, refresh_tokens: impl IntoIterator<Item = String>) {
    let refresh_tokens: Vec<String> = refresh_tokens.into_iter().collect();
    if refresh_tokens.is_empty() {
        return;
    }
    let provider = state.provider.clone();
    tokio::spawn(async move {
        for refresh_token in refresh_tokens {
            provider.revoke_refresh_token(&refresh_token).await;
        }
    });
}

/// Revokes the refresh token of `record`, a session that just ended (if it had one).
pub(crate) fn revoke_refresh_token_of(state: &Components, record: &SessionRecord) {
    revoke_in_background(
        state,
        record
            .tokens
            .refresh_token
            .as_ref()
            .map(|token| token.text()),
    );
}

/// Ends sessions found without their cookies' help (`ended`): revokes their refresh tokens.
pub(crate) fn revoke_ended(state: &Components, ended: crate::session::Ended) -> usize {
    let count = ended.count;
    revoke_in_background(
        state,
        ended
            .refresh_tokens
            .iter()
            .map(|token| token.text().to_owned()),
    );
    count
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
