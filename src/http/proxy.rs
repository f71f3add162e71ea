//! The reverse proxy for `[[routes]]`: streams requests and responses, attaches the bearer
//! token, and keeps Vestibule's own cookies and headers away from upstreams.
//!
//! Header rules follow RFC 9110 §7.6.1: hop-by-hop fields (and any named in `Connection`)
//! are not forwarded in either direction. Bodies are streamed, never buffered.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::headers::{VIA, remove_hop_by_hop, remove_own_set_cookies};
use super::{AppState, csrf};
use crate::error::AppError;
use crate::routes::RouteError;

/// The HTTP client used for upstream APIs (HTTP/1.1, keep-alive pool, http and https).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Builds the pooled upstream client with bounded connect and idle times.
pub fn upstream_client() -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(https)
}

/// Fallback handler: a path under a route prefix is proxied to its API; any other path under
/// `/api/` is unknown (JSON 404); everything else belongs to the single-page app.
pub async fn dispatch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, AppError> {
    let path = request.uri().path();
    match upstream_for(&state, request.uri()) {
        Some(upstream) => {
            let (url, timeout) = upstream?;
            forward(&state, peer, request, url, timeout).await
        }
        None if path == "/api" || path.starts_with("/api/") => Err(AppError::NotFound),
        None => super::frontend::serve(&state, request).await,
    }
}

/// The upstream URL and timeout for a request under a route prefix (an error if the path
/// tries to leave its route); `None` if no route covers it. Vestibule's own `/api/auth` is
/// never proxied, even under a route like `/api`.
pub fn upstream_for(state: &AppState, uri: &Uri) -> Option<Result<(String, Duration), AppError>> {
    let path = uri.path();
    if path == "/api/auth" || path.starts_with("/api/auth/") {
        return None;
    }
    match state.routes.resolve(path, uri.query()) {
        Ok(target) => Some(Ok((target.url, target.route.timeout))),
        Err(RouteError::Traversal) => Some(Err(AppError::BadRequest("path leaves its route"))),
        Err(RouteError::NoRoute) => None,
    }
}

/// Forwards an API call with the session's access token.
pub async fn forward(
    state: &AppState,
    peer: SocketAddr,
    request: Request,
    url: String,
    timeout: Duration,
) -> Result<Response, AppError> {
    csrf::check(request.headers(), &state.origin)?;
    let upstream_uri: Uri = url
        .parse()
        .map_err(|_| AppError::BadRequest("path cannot be forwarded"))?;
    let (mut parts, body) = request.into_parts();
    let client = state.trusted_proxies.client(peer.ip(), &parts.headers);
    let session_token = state.cookies.strip(&mut parts.headers).session;
    let session = state.require_session(session_token).await?;
    let access_token = state.refresher.access_token(session).await?;

    parts.uri = upstream_uri;
    parts.version = axum::http::Version::HTTP_11;
    prepare_request_headers(&mut parts.headers, &access_token)?;
    state.forwarded.apply(&mut parts.headers, client);
    let upstream_request = Request::from_parts(parts, body);

    let response =
        match tokio::time::timeout(timeout, state.upstream.request(upstream_request)).await {
            Err(_) => return Err(AppError::UpstreamTimeout),
            Ok(Err(error)) => return Err(AppError::UpstreamUnavailable(describe(&error))),
            Ok(Ok(response)) => response,
        };
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    remove_own_set_cookies(&mut parts.headers);
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static(VIA));
    Ok(Response::from_parts(parts, Body::new(body)).into_response())
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

/// The error chain of a client failure, without the URL's query (it is the user's data).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
