//! A call on an API route (`[[routes]]`): the route's steps in order, then the forwarder.
//!
//! 1. The method: one the route does not serve is `405` with `Allow`, before anything else.
//! 2. Forgery: the `X-CSRF` rules on every call, whatever the route's access; a WebSocket
//!    handshake (only on a route with `websocket = true`) proves its origin instead.
//! 3. The session, as the route's access needs it: none for `anonymous`, any valid one for
//!    `optional` (an unknown or expired cookie is no session), a valid one for `user`.
//! 4. The verdict of [`crate::authz::decide`] on the session's principal: forwarded with the
//!    route's credential, forwarded without the user's, or refused (`401`, `step_up_required`,
//!    `insufficient_permissions`) before anything reaches the upstream.
//! 5. The credential ([`crate::routes::Credential`]): the session's access token, a token held
//!    for this API, the client's own, an identity assertion signed for this call (with the
//!    login's token too under `also_bearer`), or nothing; one the provider will not issue
//!    fails this route only (`credential_refused`, `credential_unavailable`). Whatever a
//!    browser sends under an assertion header is removed on every route.
//! 6. The forwarder, and on the way back the upstream's own challenges, read under the scheme
//!    the token went with (`Bearer`, or `DPoP` for a bound token: [`Authorization`]): a proof
//!    without the upstream's nonce (`401 DPoP error="use_dpop_nonce"`, its `DPoP-Nonce` now
//!    kept for the origin) is sent once more with a new proof when the call has no body, whatever
//!    its method (the upstream refused the proof before acting); a token rejected as
//!    invalid (`401 error="invalid_token"`, [`bearer_challenge`]) is replaced once and only an
//!    idempotent call without a body is sent again (bodies stream and are never replayed); an
//!    RFC 9470 demand for stronger authentication becomes the same `step_up_required` answer.

use std::net::IpAddr;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;

use crate::authz::{Access, Decision, decide, step_up_login_url};
use crate::clock::unix_now;
use crate::error::{AppError, LOGIN_URL};
use crate::http::proxy::authorization::Authorization;
use crate::http::proxy::bearer_challenge::{
    Scheme, says_invalid_token, says_use_dpop_nonce, step_up_demanded,
};
use crate::http::proxy::upgrade::ClientUpgrade;
use crate::http::proxy::websocket::{self, Close};
use crate::http::proxy::{
    Destination, ProxyError, into_browser_response, into_browser_response_until,
};
use crate::http::server::connection::ConnectionSlot;
use crate::http::{AppState, csrf};
use crate::metrics::metrics;
use crate::oidc::ProviderKey;
use crate::refresh::AccessError;
use crate::routes::{Credential, Route, RouteMatch};
use crate::session::{ActiveSession, SessionEnd};

/// Forwards an API call from `client` (as the dispatcher worked it out) on its route, after
/// the route's policy.
pub async fn call_route(
    state: &AppState,
    client: IpAddr,
    mut request: Request,
    call: RouteMatch,
) -> Result<Response, AppError> {
    let RouteMatch { route, url } = call;
    let methods = route.policy.methods();
    if !methods.allows(request.method().as_str()) {
        return Err(AppError::MethodNotAllowed(methods.allow_header().into()));
    }
    let client_upgrade = if route.websocket && request.method() == Method::GET {
        ClientUpgrade::take_websocket(&mut request)
    } else {
        None
    };
    match client_upgrade {
        Some(_) => csrf::check_upgrade(request.headers(), &state.origin)?,
        None => csrf::check(request.headers(), &state.origin)?,
    }
    let slot = request.extensions().get::<ConnectionSlot>().cloned();
    let (mut parts, body) = request.into_parts();
    let session = session_for(state, &route, client, &mut parts).await?;
    let principal = session
        .as_ref()
        .and_then(|session| session.record.tokens.principal());
    // A step-up logs in again at the session's own provider, not through the chooser: its key,
    // kept only where there are several (a plain call pays nothing for it).
    let provider_key: ProviderKey = session
        .as_ref()
        .filter(|_| state.providers.is_several())
        .and_then(|session| session.record.provider.clone());
    let verdict = decide(
        &route.policy,
        parts.method.as_str(),
        principal.as_deref(),
        unix_now(),
    );
    let session = match verdict {
        Decision::ForwardWithCredential => session,
        Decision::ForwardAnonymously => None,
        Decision::MethodNotAllowed { allow } => {
            return Err(AppError::MethodNotAllowed(allow.into()));
        }
        Decision::Unauthenticated => return Err(AppError::Unauthenticated),
        Decision::Forbidden { rule, reason } => {
            tracing::info!(route = %route.prefix, rule, ?reason, "a claim rule refused the call");
            return Err(AppError::InsufficientPermissions {
                route: route.prefix.clone(),
            });
        }
        Decision::StepUpRequired(step_up) => {
            return Err(AppError::StepUpRequired {
                login_url: step_up.login_url(&login_path_of(state, provider_key.as_deref())),
            });
        }
    };
    // A relay holds a place among its session's WebSockets, and watches its session's end.
    let socket_permit = match (&client_upgrade, &session) {
        (Some(_), Some(session)) => Some(
            state
                .websockets
                .admit(&session.record.handle)
                .ok_or(AppError::TooManyWebSockets)?,
        ),
        _ => None,
    };
    let watched = session
        .as_ref()
        .map(|session| (session.cookie.clone(), session.record.expires_at));
    let assertion = assertion_for(state, &route, session.as_ref());
    let credential = credential_for(state, &route, session).await?;
    let destination = Destination::ApiRoute(route.metrics.label);
    state.forwarder.prepare(
        &mut parts,
        &url,
        client,
        destination,
        credential.as_ref(),
        client_upgrade.is_some(),
    )?;
    // No browser ever sends an assertion under any route's header: only Vestibule's own pass.
    state.assertions.strip_forged(&mut parts.headers);
    if let Some((name, value)) = assertion {
        parts.headers.insert(name, value);
    }
    // A call without a body can be sent again (bodies stream and are never held): with a new
    // proof after a nonce challenge, whatever its method (the upstream refused the proof, it
    // did not act); with another token only when idempotent (RFC 9110 §9.2.2), so a POST or
    // PATCH never is, even without a body.
    let again = (credential.is_some() && body.is_end_stream()).then(|| Resendable::of(&parts));
    let send = |request: Request| send(state, &route, request);
    let mut response = send(Request::from_parts(parts, body)).await?;
    // Only a relay or a stream of events watches its session: a plain call never does.
    let until_session_ends = || {
        let mut watch = watched
            .as_ref()
            .map(|(cookie, expires_at)| state.sessions.watch_cookie(cookie, *expires_at));
        async move {
            match watch.as_mut() {
                Some(watch) => watch.ended().await,
                None => std::future::pending().await,
            }
        }
    };
    if let Some(client_upgrade) = client_upgrade {
        let until = until_session_ends();
        return Ok(websocket::relay(
            client_upgrade,
            response,
            destination,
            state.websockets.idle_timeout(),
            async move { close_for(until.await) },
            (slot, socket_permit),
        ));
    }
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(sent) = credential.as_ref()
        && sent.scheme() == Scheme::Dpop
        && let Some(parts) = again.as_ref()
        && says_use_dpop_nonce(response.headers())
    {
        // The forwarder kept the nonce of this answer: once more, with a proof that has it.
        let mut parts = parts.clone().into_parts();
        state.forwarder.authorize(&mut parts, sent)?;
        response = send(Request::from_parts(parts, Body::empty())).await?;
    }
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(sent) = credential.as_ref()
    {
        let scheme = sent.scheme();
        if watched.is_some()
            && let Some(step_up) = step_up_demanded(response.headers(), scheme)
        {
            return Err(AppError::StepUpRequired {
                login_url: step_up_login_url(
                    &login_path_of(state, provider_key.as_deref()),
                    &step_up.acr_values,
                    step_up.max_age,
                ),
            });
        }
        if says_invalid_token(response.headers(), scheme) {
            // Believed valid, rejected as invalid (revoked, or a lifetime the provider never
            // named): replace it, once per token, and send a bodiless call once more.
            let cookie = watched.as_ref().map(|(cookie, _)| cookie);
            match state
                .refresher
                .replace_rejected_credential(cookie, &route.credential, sent.token())
                .await
            {
                Ok(Some(replacement)) if replacement.token != sent.token() => {
                    if let Some(again) = again.filter(|again| again.method.is_idempotent()) {
                        let mut parts = again.into_parts();
                        let replacement = state.forwarder.authorization(replacement)?;
                        state.forwarder.authorize(&mut parts, &replacement)?;
                        response = send(Request::from_parts(parts, Body::empty())).await?;
                    }
                }
                // Not replaced, or the provider is unavailable or refuses: the upstream's
                // answer stands and the session stays.
                Ok(_) | Err(AccessError::Provider(_) | AccessError::Credential(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    if watched.is_some() && is_event_stream(&response) {
        // A stream of events for a session ends when the session does, wherever it ends.
        let until = until_session_ends();
        return Ok(into_browser_response_until(
            response,
            destination,
            async move {
                until.await;
            },
        ));
    }
    Ok(into_browser_response(response, destination))
}

/// What a bodiless call needs to be sent again: its method, URL and headers as prepared. Not
/// its extensions, which only its first sending reads: cloning those on every call that
/// carries a credential costs more than the headers.
#[derive(Clone)]
struct Resendable {
    method: Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
}

impl Resendable {
    fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    fn into_parts(self) -> Parts {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method;
        parts.uri = self.uri;
        parts.version = axum::http::Version::HTTP_11;
        parts.headers = self.headers;
        parts
    }
}

/// The close frame a relay gets when its session is over.
fn close_for(end: SessionEnd) -> Close {
    match end {
        SessionEnd::Ended => Close::SessionEnded,
        SessionEnd::Expired(_) => Close::SessionExpired,
    }
}

/// Whether `response` is a stream of server-sent events (`text/event-stream`).
fn is_event_stream(response: &axum::http::Response<hyper::body::Incoming>) -> bool {
    response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The token the route's credential sends for `session` (`None`: the call goes without one):
/// the login's access token, a token held for this API, or the client's own, as `Bearer` or,
/// when bound, as `DPoP` with proofs of the session's key. A token that cannot be had fails
/// this route only (`credential_refused`, `credential_unavailable`).
async fn credential_for(
    state: &AppState,
    route: &Route,
    session: Option<ActiveSession>,
) -> Result<Option<Authorization>, AppError> {
    let token = state
        .refresher
        .credential_token(session, &route.credential)
        .await
        .map_err(|error| match error {
            AccessError::Credential(error) => AppError::Credential {
                route: route.prefix.clone(),
                error,
            },
            other => other.into(),
        })?;
    Ok(token
        .map(|token| state.forwarder.authorization(token))
        .transpose()?)
}

/// The identity assertion an `assertion` route sends, signed for this call, with the header
/// it goes in; none on other routes, and none without a session (an `optional` route called
/// anonymously) or a principal.
fn assertion_for(
    state: &AppState,
    route: &Route,
    session: Option<&ActiveSession>,
) -> Option<(HeaderName, HeaderValue)> {
    let Credential::Assertion(spec) = &route.credential else {
        return None;
    };
    let session = session?;
    let principal = session.record.tokens.principal()?;
    // Whose `sub` it is, where that is a question (several providers): the issuer the
    // session's ID token names. With one provider the assertion stays as it was.
    let idp = state
        .providers
        .is_several()
        .then(|| crate::oidc::jwt_issuer(&session.record.tokens.id_token.text()))
        .flatten();
    let token = state.assertions.sign(
        spec,
        &principal,
        idp.as_deref(),
        &session.record.handle,
        unix_now(),
    );
    // Base64url and dots: always a valid header value.
    let value = HeaderValue::try_from(token).ok()?;
    Some((spec.header.clone(), value))
}

/// The login endpoint for a session whose stored provider key is `key`: with several
/// providers it names the session's own (a login without one gets the chooser). Provider ids
/// are URL-safe by construction.
fn login_path_of(state: &AppState, key: Option<&str>) -> String {
    match state.providers.by_key(key) {
        Some(provider) if state.providers.is_several() => {
            format!("{LOGIN_URL}?provider={}", provider.id())
        }
        _ => LOGIN_URL.to_owned(),
    }
}

/// The session the route's access asks for, with Vestibule's cookies taken off the request:
/// `anonymous` never looks (and never touches the store), `optional` takes a valid one and
/// treats an unknown or ended one as none, `user` requires one (`401`). A store outage is a
/// `503` whichever the access: never a silent logout.
async fn session_for(
    state: &AppState,
    route: &Route,
    client: IpAddr,
    parts: &mut Parts,
) -> Result<Option<ActiveSession>, AppError> {
    let cookie = state.cookies.strip(&mut parts.headers).session;
    match route.policy.access() {
        Access::Anonymous => Ok(None),
        Access::Optional => state.optional_session(cookie, client, &parts.headers).await,
        Access::User => state
            .require_session(cookie, client, &parts.headers)
            .await
            .map(Some),
    }
}

/// Sends a prepared request on `route` within its time limit, counting upstream failures.
async fn send(
    state: &AppState,
    route: &Route,
    request: Request,
) -> Result<axum::http::Response<hyper::body::Incoming>, AppError> {
    let label = route.metrics.label;
    state
        .forwarder
        .send(request, Some(route.timeout), Destination::ApiRoute(label))
        .await
        .map_err(|error| {
            let kind = match error {
                ProxyError::Timeout => "timeout",
                _ => "connect",
            };
            metrics().upstream_error(label, kind);
            error.into()
        })
}
