//! A call on an API route (`[[routes]]`): the route's steps in order — the anti-forgery
//! check, the session, the credential — then the forwarder. Bodies are streamed, never
//! buffered, and so never replayed: when an upstream rejects a token believed valid (`401`
//! with `error="invalid_token"`, [`bearer_challenge`]), the token is replaced once and only a
//! call without a body is sent again.

use std::net::IpAddr;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;

use crate::error::AppError;
use crate::http::proxy::bearer_challenge::says_invalid_token;
use crate::http::proxy::{ProxyError, into_browser_response, set_bearer};
use crate::http::{AppState, csrf};
use crate::metrics::metrics;
use crate::refresh::AccessError;
use crate::routes::RouteMatch;

/// Forwards an API call from `client` (as the dispatcher worked it out) on its route with
/// the session's access token.
pub async fn call_route(
    state: &AppState,
    client: IpAddr,
    request: Request,
    call: RouteMatch,
) -> Result<Response, AppError> {
    csrf::check(request.headers(), &state.origin)?;
    let RouteMatch { route, url } = call;
    let (mut parts, body) = request.into_parts();
    let session_token = state.cookies.strip(&mut parts.headers).session;
    let session = state
        .require_session(session_token, client, &parts.headers)
        .await?;
    let cookie = session.cookie.clone();
    let access_token = state.refresher.access_token(session).await?;
    state
        .forwarder
        .prepare(&mut parts, &url, client, Some(&access_token), false)?;
    // An idempotent call without a body can be sent again with another token (RFC 9110
    // §9.2.2); one with a body, or a POST or PATCH even without one, never is.
    let again = (body.is_end_stream() && parts.method.is_idempotent()).then(|| parts.clone());
    let send = |request: Request| async {
        state
            .forwarder
            .send(request, Some(route.timeout), route.metrics.label)
            .await
            .inspect_err(|error| {
                let kind = match error {
                    ProxyError::Timeout => "timeout",
                    _ => "connect",
                };
                metrics().upstream_error(route.metrics.label, kind);
            })
    };
    let mut response = send(Request::from_parts(parts, body)).await?;
    if response.status() == StatusCode::UNAUTHORIZED && says_invalid_token(response.headers()) {
        // Believed valid, rejected as invalid (revoked, or a lifetime the provider never
        // named): replace it, once per token, and send a bodiless call once more.
        match state
            .refresher
            .replace_rejected(&cookie, &access_token)
            .await
        {
            Ok(Some(replacement)) if replacement != access_token => {
                if let Some(mut parts) = again {
                    set_bearer(&mut parts.headers, &replacement)?;
                    response = send(Request::from_parts(parts, Body::empty())).await?;
                }
            }
            // Not replaced, or the provider is unavailable: the upstream's answer stands and
            // the session stays.
            Ok(_) | Err(AccessError::Provider(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(into_browser_response(response))
}
