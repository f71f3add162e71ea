//! The reverse proxy for `[[routes]]`: streams a dispatched API call to its upstream with the
//! session's access token, and keeps Vestibule's own cookies and headers away from it (the
//! rules themselves are in [`super::headers`]). Bodies are streamed, never buffered, and so
//! never replayed: when an upstream rejects a token believed valid (`401` with
//! `error="invalid_token"`, [`super::bearer_challenge`]), the token is replaced once and only
//! a call without a body is sent again.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::bearer_challenge::says_invalid_token;
use super::headers::{VIA, clean_upstream_response, remove_hop_by_hop};
use super::request_id::{RequestId, X_REQUEST_ID};
use super::upstream::describe;
use super::{AppState, csrf};
use crate::error::AppError;
use crate::metrics::{RouteMetrics, metrics};
use crate::refresh::AccessError;
use crate::traces;

/// Where a proxied call goes.
#[derive(Debug)]
pub struct UpstreamCall {
    /// The full upstream URL.
    pub url: String,
    /// How long to wait for the upstream's response headers.
    pub timeout: Duration,
    /// The route's metric handles.
    pub route: &'static RouteMetrics,
}

/// Forwards an API call from `client` (as the dispatcher worked it out) with the session's
/// access token.
pub async fn forward(
    state: &AppState,
    client: IpAddr,
    request: Request,
    call: UpstreamCall,
) -> Result<Response, AppError> {
    csrf::check(request.headers(), &state.origin)?;
    let UpstreamCall {
        url,
        timeout,
        route,
    } = call;
    let upstream_uri: Uri = url
        .parse()
        .map_err(|_| AppError::BadRequest("path cannot be forwarded"))?;
    let (mut parts, body) = request.into_parts();
    let session_token = state.cookies.strip(&mut parts.headers).session;
    let session = state
        .require_session(session_token, client, &parts.headers)
        .await?;
    let cookie = session.cookie.clone();
    let access_token = state.refresher.access_token(session).await?;

    parts.uri = upstream_uri;
    parts.version = axum::http::Version::HTTP_11;
    prepare_request_headers(&mut parts.headers, &access_token)?;
    state.forwarded.apply(&mut parts.headers, client);
    // The upstream sees the request's own id, never one the browser chose.
    match parts.extensions.get::<RequestId>() {
        Some(id) => {
            parts
                .headers
                .insert(X_REQUEST_ID, id.header_value().clone());
        }
        None => {
            parts.headers.remove(X_REQUEST_ID);
        }
    }
    // An idempotent call without a body can be sent again with another token (RFC 9110
    // §9.2.2); one with a body, or a POST or PATCH even without one, never is.
    let again = (body.is_end_stream() && parts.method.is_idempotent()).then(|| parts.clone());
    let mut response = send(state, Request::from_parts(parts, body), timeout, route).await?;
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
                    prepare_request_headers(&mut parts.headers, &replacement)?;
                    let retry = Request::from_parts(parts, Body::empty());
                    response = send(state, retry, timeout, route).await?;
                }
            }
            // Not replaced, or the provider is unavailable: the upstream's answer stands and
            // the session stays.
            Ok(_) | Err(AccessError::Provider(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let (mut parts, body) = response.into_parts();
    clean_upstream_response(&mut parts.headers);
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static(VIA));
    Ok(Response::from_parts(parts, Body::new(body)).into_response())
}

/// Sends `request` to the upstream within `timeout`, in a span of its own when spans are
/// exported.
async fn send(
    state: &AppState,
    mut request: Request,
    timeout: Duration,
    route: &'static RouteMetrics,
) -> Result<axum::http::Response<hyper::body::Incoming>, AppError> {
    // Any trace context still on the request is trusted (the dispatcher removed any other,
    // see `trace_context`). When spans are exported the upstream continues the trace from its
    // own span; otherwise the trusted context passes on as it came. Baggage passes on either way.
    let upstream_span = traces::span(|| tracing::debug_span!("upstream", route = route.label));
    if let Some(span) = &upstream_span {
        for name in traces::TRACE_HEADERS {
            request.headers_mut().remove(name);
        }
        span.in_scope(|| traces::inject(request.headers_mut()));
    }
    let upstream_call = traces::within(upstream_span, state.upstream.request(request));
    match tokio::time::timeout(timeout, upstream_call).await {
        Err(_) => {
            metrics().upstream_error(route.label, "timeout");
            Err(AppError::UpstreamTimeout)
        }
        Ok(Err(error)) => {
            metrics().upstream_error(route.label, "connect");
            Err(AppError::UpstreamUnavailable(describe(&error)))
        }
        Ok(Ok(response)) => Ok(response),
    }
}

/// Rewrites the browser's headers for the upstream (our cookies are already gone):
/// hop-by-hop fields, the anti-forgery header and any client `Authorization` go; the bearer
/// token comes in.
fn prepare_request_headers(headers: &mut HeaderMap, access_token: &str) -> Result<(), AppError> {
    remove_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(csrf::CSRF_HEADER);
    headers.remove(header::PROXY_AUTHORIZATION);
    let mut bearer = HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
        AppError::UpstreamUnavailable("access token is not a valid header value".into())
    })?;
    bearer.set_sensitive(true);
    headers.insert(header::AUTHORIZATION, bearer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::cookies::CookiePolicy;

    #[test]
    fn request_headers_lose_our_cookies_csrf_and_hop_by_hop_fields() {
        let policy = CookiePolicy::new(false);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; vestibule=secret; b=2"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("vestibule-login=x"),
        );
        headers.insert("x-csrf", HeaderValue::from_static("1"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("hop"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic forged"),
        );
        headers.insert("x-app", HeaderValue::from_static("kept"));
        assert!(policy.strip(&mut headers).session.is_none());
        prepare_request_headers(&mut headers, "tok").unwrap();
        assert_eq!(headers.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers.get(header::AUTHORIZATION).unwrap(), "Bearer tok");
        assert_eq!(headers.get("x-app").unwrap(), "kept");
        for gone in ["x-csrf", "connection", "x-private", "te"] {
            assert!(headers.get(gone).is_none(), "{gone} must not be forwarded");
        }
    }
}
