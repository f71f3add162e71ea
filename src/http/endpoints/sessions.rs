//! `/api/auth/sessions`: the signed-in user's own sessions ("my sessions"): list them, end
//! one, end all but this one. The user is always the one of the caller's session, so nobody
//! can see or end another user's sessions; the usual anti-forgery rules apply.

use std::net::IpAddr;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::no_store;
use crate::audit::{AuditEvent, Details, Repeats};
use crate::error::AppError;
use crate::http::server::client_address::ClientAddress;
use crate::http::{AppState, csrf};
use crate::session::ActiveSession;

/// The caller's own session, after the anti-forgery check (every endpoint here acts on the
/// user of this session, and on no one else).
async fn caller_session(
    state: &AppState,
    client: IpAddr,
    headers: &HeaderMap,
) -> Result<ActiveSession, AppError> {
    csrf::check(headers, &state.origin)?;
    state
        .require_session(state.cookies.read(headers).session, client, headers)
        .await
}

/// `GET /api/auth/sessions`: the caller's sessions, oldest first, the current one marked: at
/// most [`LIST_LIMIT`](crate::session::index::LIST_LIMIT) (the current one and the most
/// recently used others), with `truncated` saying whether there may be more.
pub async fn list_sessions(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let current = caller_session(&state, client, &headers).await?;
    let list = state.sessions.list_for(&current).await?;
    Ok(no_store(Json(list).into_response()))
}

/// `DELETE /api/auth/sessions/{id}`: ends one of the caller's sessions; the current one as
/// a logout ends it, and it loses its cookie.
pub async fn end_session(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let current = caller_session(&state, client, &headers).await?;
    if id == current.record.handle {
        // The caller's own session: its cookie is here, so it ends as a logout ends it (its
        // refresh token revoked from the record, whether or not it is kept in escrow).
        if state.ending.end_by_cookie(&current.cookie).await?.is_none() {
            return Err(AppError::NoSuchSession);
        }
        audit_ended_by_user(&state, &current, "this_session", 1);
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, state.cookies.session_removal());
        return Ok(no_store(response));
    }
    let ended = state
        .sessions
        .end_by_handle(&current.record.user_key(), &id)
        .await?;
    if state
        .ending
        .revoke_ended(ended, current.record.provider.as_deref())
        == 0
    {
        return Err(AppError::NoSuchSession);
    }
    audit_ended_by_user(&state, &current, "one_session", 1);
    Ok(no_store(StatusCode::NO_CONTENT.into_response()))
}

/// `DELETE /api/auth/sessions`: ends every session of the caller's but the current one.
pub async fn end_other_sessions(
    State(state): State<AppState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let current = caller_session(&state, client, &headers).await?;
    let ended = state.ending.revoke_ended(
        state.sessions.end_others(&current).await?,
        current.record.provider.as_deref(),
    );
    audit_ended_by_user(&state, &current, "other_sessions", ended);
    Ok(no_store(Json(json!({ "ended": ended })).into_response()))
}

/// Records that the user of `current` ended `ended` sessions. Asking to end sessions when
/// there are none is recorded too (the user may suspect someone else has one), but at most
/// once a minute per session: a signed-in user repeating it cannot flood the audit trail.
fn audit_ended_by_user(state: &AppState, current: &ActiveSession, reason: &str, ended: usize) {
    crate::metrics::metrics().sessions_ended("ended_by_user", ended);
    let details = Details {
        sub: Some(&current.record.sub),
        session: Some(&current.record.handle),
        reason: Some(reason),
        sessions_ended: Some(ended),
        ..Details::default()
    };
    if ended == 0 {
        state.audit.record_unless_repeated(
            AuditEvent::SessionsEndedByUser,
            details,
            Repeats::PerSessionPerMinute,
        );
    } else {
        state.audit.record(AuditEvent::SessionsEndedByUser, details);
    }
}

/// Any other method on the sessions endpoints.
pub async fn sessions_method_not_allowed() -> AppError {
    AppError::MethodNotAllowed("GET, DELETE".into())
}

/// Any other method on a single session.
pub async fn session_method_not_allowed() -> AppError {
    AppError::MethodNotAllowed("DELETE".into())
}
