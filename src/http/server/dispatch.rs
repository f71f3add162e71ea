//! Where a request goes, decided once: a proxied API call goes straight to the proxy, a path
//! that no route may serve is refused, and everything else (Vestibule's `/api/auth`
//! endpoints, the single-page app) goes through the router. Every branch runs inside the
//! same [`RequestScope`], so whatever it adds covers them all.
//!
//! Proxied calls are the hot path of a BFF; the router would cost them a path match and a
//! fallback dispatch per call (about a tenth of the throughput, measured with `bench/run`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;

use super::accept::{Accepted, ConnectionService};
use super::client_address::{ClientAddress, TrustedProxies};
use super::connection::ConnectionSlot;
use super::request_id::RequestIds;
use super::scope::RequestScope;
use super::trace_context::TraceContextTrust;
use crate::error::AppError;
use crate::http::AppState;
use crate::http::endpoints::{api, health, jwks};
use crate::metrics::metrics;
use crate::routes::{RouteError, RouteMatch, RouteTable};
use crate::traces;
use tracing::Instrument;

/// How one request is handled.
#[derive(Debug)]
pub enum Dispatch {
    /// A call on an API route.
    Proxy(RouteMatch),
    /// Answer with an error without looking further (a path that tries to leave its route,
    /// an `/api` path no route serves).
    Refused(AppError),
    /// Vestibule's own endpoints and the single-page app.
    Router,
}

impl Dispatch {
    /// Classifies a request by its path. Vestibule's own `/api/auth`, the probes and the
    /// key sets (assertions', client authentication's) are never proxied, even under a route like `/api`, `/.well-known` or
    /// `/`; any other `/api` path belongs to a route or to no one.
    pub fn classify(routes: &RouteTable, uri: &Uri) -> Self {
        let path = uri.path();
        if path == "/api/auth"
            || path.starts_with("/api/auth/")
            || health::is_probe(path)
            || path == jwks::JWKS_PATH
            || path == jwks::CLIENT_JWKS_PATH
        {
            return Dispatch::Router;
        }
        match routes.resolve(path, uri.query()) {
            Ok(call) => Dispatch::Proxy(call),
            Err(RouteError::Traversal) => {
                Dispatch::Refused(AppError::BadRequest("path leaves its route"))
            }
            Err(RouteError::NoRoute) if path == "/api" || path.starts_with("/api/") => {
                Dispatch::Refused(AppError::NotFound)
            }
            Err(RouteError::NoRoute) => Dispatch::Router,
        }
    }
}

/// Whose word about a request is believed: the client's address behind trusted proxies, their
/// request id, their trace context. The server's own concern, held by every dispatcher.
pub struct CallerTrust {
    /// Whose `X-Forwarded-For` is believed when working out the client's address.
    pub trusted_proxies: TrustedProxies,
    /// Where request ids come from.
    pub request_ids: RequestIds,
    /// Whose W3C trace context is believed (`traces.trust_traceparent`).
    pub trace_context: TraceContextTrust,
}

/// The service for one connection of the public listener: dispatches each request within its
/// scope.
pub struct Dispatcher {
    state: AppState,
    trust: Arc<CallerTrust>,
    router: Router,
    /// The client's (or the front proxy's) address.
    peer: SocketAddr,
    /// The connection's place under the cap on connections.
    slot: ConnectionSlot,
}

impl Dispatcher {
    /// The dispatcher for the `accepted` connection, to `router` and the API routes, believing
    /// callers as `trust` says.
    pub fn new(
        state: AppState,
        trust: Arc<CallerTrust>,
        router: Router,
        accepted: Accepted,
    ) -> Self {
        Self {
            state,
            trust,
            router,
            peer: accepted.peer,
            slot: accepted.slot,
        }
    }
}

impl ConnectionService for Dispatcher {
    fn respond(&self, mut request: Request) -> impl Future<Output = Response> + Send + 'static {
        let id = self
            .trust
            .request_ids
            .assign(self.peer.ip(), request.headers());
        let client = self
            .trust
            .trusted_proxies
            .client(self.peer.ip(), request.headers());
        let trusted_context = self
            .trust
            .trace_context
            .admit(self.peer.ip(), request.headers_mut());
        let scope = RequestScope::open(&request, &id, client, trusted_context);
        request.extensions_mut().insert(id);
        let handling = match Dispatch::classify(&self.state.routes, request.uri()) {
            Dispatch::Proxy(call) => {
                // A WebSocket relay outlives its exchange: it keeps the connection's place.
                if call.route.websocket {
                    request.extensions_mut().insert(self.slot.clone());
                }
                let state = self.state.clone();
                let (method, route, started) =
                    (request.method().clone(), call.route.metrics, Instant::now());
                Either::Left(async move {
                    let span = traces::span(|| tracing::debug_span!("proxy", route = route.label));
                    // Boxed: the forwarding future is large, and the layers around a request
                    // (its scope, span, panic guard) would otherwise each move all of it.
                    let response = match span {
                        Some(span) => {
                            Box::pin(
                                api::call_route(&state, client, request, call).instrument(span),
                            )
                            .await
                        }
                        None => Box::pin(api::call_route(&state, client, request, call)).await,
                    }
                    .unwrap_or_else(IntoResponse::into_response);
                    metrics().proxied(
                        route,
                        &method,
                        response.status().as_u16(),
                        started.elapsed(),
                    );
                    response
                })
            }
            Dispatch::Refused(error) => {
                Either::Right(Either::Left(std::future::ready(error.into_response())))
            }
            Dispatch::Router => {
                request.extensions_mut().insert(ClientAddress(client));
                request.extensions_mut().insert(self.slot.clone());
                Either::Right(Either::Right(self.router.respond(request)))
            }
        };
        scope.run(handling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Route;
    use std::time::Duration;

    fn route(prefix: &str) -> Route {
        Route::new(
            prefix.into(),
            url::Url::parse("http://127.0.0.1:9000").unwrap(),
            Duration::from_secs(3),
        )
    }

    fn classify(path: &str) -> Dispatch {
        let table = RouteTable::new(vec![route("/api")]);
        Dispatch::classify(&table, &path.parse().unwrap())
    }

    #[test]
    fn api_paths_are_proxied_except_vestibules_own() {
        match classify("/api/orders?x=1") {
            Dispatch::Proxy(call) => {
                assert_eq!(call.url, "http://127.0.0.1:9000/orders?x=1");
                assert_eq!(call.route.timeout, Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
        for own in ["/api/auth", "/api/auth/login", "/", "/index.html"] {
            assert!(matches!(classify(own), Dispatch::Router), "{own}");
        }
        assert!(matches!(
            classify("/api/a/../../x"),
            Dispatch::Refused(AppError::BadRequest(_))
        ));
    }

    #[test]
    fn the_probes_are_never_proxied_even_by_a_route_that_claims_them() {
        // The configuration refuses such routes; the dispatcher does not rely on it.
        let table = RouteTable::new(vec![route("/healthz"), route("/readyz")]);
        for path in ["/healthz", "/readyz", "/healthz?x=/api/orders"] {
            let dispatch = Dispatch::classify(&table, &path.parse().unwrap());
            assert!(matches!(dispatch, Dispatch::Router), "{path}");
        }
        assert!(matches!(classify("/api/healthz"), Dispatch::Proxy(_)));
    }

    #[test]
    fn the_key_sets_are_never_proxied_even_under_a_well_known_route() {
        let table = RouteTable::new(vec![route("/.well-known")]);
        for path in ["/.well-known/jwks.json", "/.well-known/client-jwks.json"] {
            let dispatch = Dispatch::classify(&table, &path.parse().unwrap());
            assert!(matches!(dispatch, Dispatch::Router), "{path}");
        }
        let other = Dispatch::classify(&table, &"/.well-known/other".parse().unwrap());
        assert!(
            matches!(other, Dispatch::Proxy(_)),
            "the route keeps the rest"
        );
    }

    #[test]
    fn api_paths_without_a_route_are_not_found() {
        let table = RouteTable::new(Vec::new());
        for path in ["/api", "/api/x"] {
            assert!(matches!(
                Dispatch::classify(&table, &path.parse().unwrap()),
                Dispatch::Refused(AppError::NotFound)
            ));
        }
        assert!(matches!(
            Dispatch::classify(&table, &"/app".parse().unwrap()),
            Dispatch::Router
        ));
    }
}
