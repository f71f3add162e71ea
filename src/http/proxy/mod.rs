//! The one forwarder: how any request leaves Vestibule for a server behind it (an API route's
//! upstream, the frontend's development server) and how its answer comes back. It owns the
//! header rules of both directions ([`headers`]), the pooled client ([`client`]), protocol
//! upgrades ([`upgrade`]), the time limit, and how a credential rides on the request
//! ([`authorization`]: `Bearer`, or `DPoP` with a fresh proof and the upstream's nonces, learnt
//! from its answers); it never decides *whether* a request may go, nor
//! which credential it carries: callers (the API route, the frontend relay) decide that and
//! hand over a request with Vestibule's cookies already removed. Upgrades are relayed byte for
//! byte ([`upgrade`], the frontend's development server) or, on API routes, frame by frame
//! ([`websocket`]), so a relay can be closed with a reason when its session ends.
//!
//! Bodies are streamed both ways and never buffered.

pub mod authorization;
pub mod bearer_challenge;
pub mod client;
pub mod headers;
pub mod upgrade;
pub mod websocket;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Response, Uri, header};
use hyper::body::Incoming;

use super::csrf;
use super::server::request_id::{RequestId, X_REQUEST_ID};
use crate::error::AppError;
use crate::oidc::dpop::{DpopError, DpopNonces, NONCE_HEADER, origin_of};
use crate::traces;
use authorization::Authorization;
use client::{UpstreamClient, describe};
use headers::{ForwardingHeaders, VIA, clean_upstream_response, remove_hop_by_hop};

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The path and query do not make a URI the upstream can be sent.
    #[error("path cannot be forwarded")]
    Unforwardable,
    /// The credential cannot be sent as a header value.
    #[error("credential is not a valid header value")]
    InvalidCredential,
    /// No DPoP proof could be signed for a bound token (a key that does not read, a failed
    /// random source): the token is not sent at all, never as `Bearer`.
    #[error("no DPoP proof: {0}")]
    Proof(DpopError),
    /// The upstream could not be reached (the error chain, without the URL's query).
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The upstream's response headers did not arrive in time.
    #[error("upstream timed out")]
    Timeout,
}

/// How a forwarding failure is answered: the one mapping lives in [`crate::error`]; this
/// only names which of its errors each failure is.
impl From<ProxyError> for AppError {
    fn from(error: ProxyError) -> Self {
        match error {
            ProxyError::Unforwardable => AppError::BadRequest("path cannot be forwarded"),
            ProxyError::InvalidCredential => {
                AppError::UpstreamUnavailable("access token is not a valid header value".into())
            }
            ProxyError::Proof(error) => {
                AppError::UpstreamUnavailable(format!("no DPoP proof could be made: {error}"))
            }
            ProxyError::Unavailable(cause) => AppError::UpstreamUnavailable(cause),
            ProxyError::Timeout => AppError::UpstreamTimeout,
        }
    }
}

/// Where a forwarded request goes, which decides what only one kind of destination gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// An API route (`[[routes]]`, its metric label): the anti-forgery header and any
    /// `Proxy-Authorization` go, the request's own id is sent, the call has a span of its own
    /// when spans are exported, and the answer names this proxy in `Via`.
    ApiRoute(&'static str),
    /// The frontend's development or SSR server: only the rules every destination gets (the
    /// frontend relay has always forwarded the rest as the browser sent it).
    Frontend,
}

/// Sends requests to the servers behind Vestibule, built once at start-up.
#[derive(Clone)]
pub struct Forwarder {
    client: UpstreamClient,
    forwarded: ForwardingHeaders,
    /// The DPoP nonces upstreams handed out, per origin (this instance's; see
    /// [`DpopNonces`]).
    nonces: Arc<DpopNonces>,
}

impl Forwarder {
    /// A forwarder over `client` that tells upstreams about the public origin `forwarded`.
    pub fn new(client: UpstreamClient, forwarded: ForwardingHeaders) -> Self {
        Self {
            client,
            forwarded,
            nonces: Arc::new(DpopNonces::default()),
        }
    }

    /// Turns the browser's request `parts` into the upstream's, sent to `url` on behalf of
    /// `client`: hop-by-hop fields go (an upgrade's own `Connection`/`Upgrade` stay when
    /// `keep_upgrade`), so do `Host`, any `Authorization` the browser sent and every routing
    /// header it could forge; the forwarding headers are set from what Vestibule knows. For an
    /// API route also the anti-forgery header, `Proxy-Authorization` and any `DPoP` proof go,
    /// `credential`, when given, becomes `Authorization` ([`Forwarder::authorize`]), and the
    /// request's own id is sent.
    pub fn prepare(
        &self,
        parts: &mut Parts,
        url: &str,
        client: IpAddr,
        destination: Destination,
        credential: Option<&Authorization>,
        keep_upgrade: bool,
    ) -> Result<(), ProxyError> {
        parts.uri = url.parse::<Uri>().map_err(|_| ProxyError::Unforwardable)?;
        parts.version = axum::http::Version::HTTP_11;
        if !keep_upgrade {
            remove_hop_by_hop(&mut parts.headers);
        }
        parts.headers.remove(header::HOST);
        parts.headers.remove(header::AUTHORIZATION);
        self.forwarded.apply(&mut parts.headers, client);
        if destination == Destination::Frontend {
            return Ok(());
        }
        parts.headers.remove(csrf::CSRF_HEADER);
        parts.headers.remove(header::PROXY_AUTHORIZATION);
        // Only Vestibule signs proofs: none a browser sent goes on.
        parts.headers.remove(crate::oidc::dpop::PROOF_HEADER);
        if let Some(credential) = credential {
            self.authorize(parts, credential)?;
        }
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
        Ok(())
    }

    /// Puts `credential` on the prepared request `parts` (again, for a retry: a new proof, with
    /// the nonce the upstream's origin handed out meanwhile).
    pub fn authorize(
        &self,
        parts: &mut Parts,
        credential: &Authorization,
    ) -> Result<(), ProxyError> {
        credential.apply(
            &mut parts.headers,
            &parts.method,
            &parts.uri,
            &self.nonces,
            crate::clock::unix_now(),
        )
    }

    /// Sends a prepared `request` to `destination`, waiting at most `timeout` (when given) for
    /// the response headers; a call on an API route has a span of its own when spans are
    /// exported, and a `DPoP-Nonce` in its answer is kept for its origin's next proofs.
    pub async fn send(
        &self,
        mut request: Request,
        timeout: Option<Duration>,
        destination: Destination,
    ) -> Result<Response<Incoming>, ProxyError> {
        // Any trace context still on the request is trusted (the dispatcher removed any
        // other, see `trace_context`). When spans are exported an API route's upstream
        // continues the trace from its own span; otherwise the trusted context passes on as
        // it came. Baggage passes on either way.
        let upstream_span = match destination {
            Destination::ApiRoute(label) => {
                traces::span(|| tracing::debug_span!("upstream", route = label))
            }
            Destination::Frontend => None,
        };
        if let Some(span) = &upstream_span {
            for name in traces::TRACE_HEADERS {
                request.headers_mut().remove(name);
            }
            span.in_scope(|| traces::inject(request.headers_mut()));
        }
        // A cheap clone (shared bytes), kept only to name the origin of a nonce.
        let target = matches!(destination, Destination::ApiRoute(_)).then(|| request.uri().clone());
        let call = traces::within(upstream_span, self.client.request(request));
        let answered = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| ProxyError::Timeout)?,
            None => call.await,
        };
        let response = answered.map_err(|error| ProxyError::Unavailable(describe(&error)))?;
        if let (Some(target), Some(nonce)) = (target, response.headers().get(NONCE_HEADER))
            && let Ok(nonce) = nonce.to_str()
        {
            self.nonces.remember(origin_of(&target.to_string()), nonce);
        }
        Ok(response)
    }
}

/// The answer of `destination` as the browser gets it: hop-by-hop fields and any
/// `Set-Cookie` that could pass for Vestibule's go, and an API route's answer names this
/// proxy in `Via`; the body streams on.
pub fn into_browser_response(
    response: Response<Incoming>,
    destination: Destination,
) -> axum::response::Response {
    let (mut parts, body) = response.into_parts();
    clean_upstream_response(&mut parts.headers);
    if let Destination::ApiRoute(_) = destination {
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static(VIA));
    }
    axum::response::Response::from_parts(parts, Body::new(body))
}

/// [`into_browser_response`] of an API route, whose body ends when `until` resolves (a stream
/// of events whose session ended), whatever the upstream still sends.
pub fn into_browser_response_until(
    response: Response<Incoming>,
    route: Destination,
    until: impl std::future::Future<Output = ()> + Send + 'static,
) -> axum::response::Response {
    use futures_util::StreamExt;
    let (parts, body) = into_browser_response(response, route).into_parts();
    let body = Body::from_stream(body.into_data_stream().take_until(until));
    axum::response::Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::cookies::CookiePolicy;

    fn forwarder() -> Forwarder {
        Forwarder::new(
            client::upstream_client(&[]),
            ForwardingHeaders::new(&"https://app.example".parse().unwrap()),
        )
    }

    #[tokio::test]
    async fn request_headers_lose_our_cookies_csrf_and_hop_by_hop_fields() {
        let policy = CookiePolicy::new(false);
        let mut request = Request::new(Body::empty());
        let headers = request.headers_mut();
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
        headers.insert("x-request-id", HeaderValue::from_static("chosen"));
        headers.insert("dpop", HeaderValue::from_static("forged.proof.x"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        let (mut parts, _) = request.into_parts();
        assert!(policy.strip(&mut parts.headers).session.is_none());
        let client = "10.0.0.7".parse().unwrap();
        forwarder()
            .prepare(
                &mut parts,
                "http://up/x",
                client,
                Destination::ApiRoute("/api"),
                Some(&Authorization::Bearer("tok".into())),
                false,
            )
            .unwrap();
        let headers = &parts.headers;
        assert_eq!(parts.uri, "http://up/x");
        assert_eq!(headers.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers.get(header::AUTHORIZATION).unwrap(), "Bearer tok");
        assert_eq!(headers.get("x-app").unwrap(), "kept");
        assert_eq!(headers.get("x-forwarded-for").unwrap(), "10.0.0.7");
        for gone in [
            "x-csrf",
            "connection",
            "x-private",
            "te",
            "x-request-id",
            "dpop",
        ] {
            assert!(headers.get(gone).is_none(), "{gone} must not be forwarded");
        }
    }

    #[tokio::test]
    async fn without_a_credential_no_authorization_reaches_the_upstream() {
        for destination in [Destination::ApiRoute("/api"), Destination::Frontend] {
            let mut request = Request::new(Body::empty());
            request.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::from_static("Bearer forged"),
            );
            let (mut parts, _) = request.into_parts();
            let client = "127.0.0.1".parse().unwrap();
            forwarder()
                .prepare(&mut parts, "http://up/", client, destination, None, false)
                .unwrap();
            assert!(parts.headers.get(header::AUTHORIZATION).is_none());
        }
    }

    #[tokio::test]
    async fn the_frontend_gets_only_the_rules_every_destination_gets() {
        let mut request = Request::new(Body::empty());
        let headers = request.headers_mut();
        headers.insert("x-csrf", HeaderValue::from_static("1"));
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic proxy"),
        );
        headers.insert("x-request-id", HeaderValue::from_static("chosen"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        let (mut parts, _) = request.into_parts();
        let client = "10.0.0.7".parse().unwrap();
        forwarder()
            .prepare(
                &mut parts,
                "http://dev/",
                client,
                Destination::Frontend,
                None,
                false,
            )
            .unwrap();
        let headers = &parts.headers;
        // As the frontend relay has always forwarded them.
        assert_eq!(headers.get("x-csrf").unwrap(), "1");
        assert_eq!(
            headers.get(header::PROXY_AUTHORIZATION).unwrap(),
            "Basic proxy"
        );
        assert_eq!(headers.get("x-request-id").unwrap(), "chosen");
        assert_eq!(headers.get("x-forwarded-for").unwrap(), "10.0.0.7");
        assert!(headers.get(header::TE).is_none());
    }
}
