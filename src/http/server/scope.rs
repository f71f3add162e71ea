//! What every request gets, whichever way it is dispatched: a span with its method and path,
//! a panic that costs the one request a JSON 500 (never the connection), and one debug line
//! with its status and duration, and its request id (see [`super::request_id`]) on the span and
//! the response. The id and the client's network are also the request's audit context
//! ([`crate::audit::context`]). Metrics hook in here too, so that they cover the proxied calls and
//! Vestibule's own endpoints alike.
//!
//! The span holds method, path and request id only: queries carry codes and states, headers
//! cookies.

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::response::Response;
use futures_util::FutureExt;
use tracing::Instrument;

use super::client_address::client_network;
use super::request_id::{RequestId, X_REQUEST_ID};
use crate::audit::RequestContext;
use crate::error::panic_response;

/// The scope one request is handled in, opened before it is dispatched.
pub struct RequestScope {
    span: tracing::Span,
    started: Instant,
    context: RequestContext,
}

impl RequestScope {
    /// Opens the scope for `request` from `client`, known by `id`. With `trusted_context`
    /// (see [`super::trace_context`]), a `traceparent` the request brings becomes its span's
    /// parent.
    pub fn open<B>(
        request: &hyper::Request<B>,
        id: &RequestId,
        client: IpAddr,
        trusted_context: bool,
    ) -> Self {
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = %id.as_str()
        );
        if trusted_context {
            crate::traces::adopt_parent(&span, request.headers());
        }
        Self {
            span,
            started: Instant::now(),
            context: RequestContext {
                request_id: id.header_value().clone(),
                client_network: client_network(client),
            },
        }
    }

    /// Runs the handling of the request inside the scope.
    pub fn run(
        self,
        handling: impl Future<Output = Response> + Send,
    ) -> impl Future<Output = Response> + Send {
        let Self {
            span,
            started,
            context,
        } = self;
        let request_id = context.request_id.clone();
        AssertUnwindSafe(context.scope(handling))
            .catch_unwind()
            .map(move |outcome| {
                let mut response = outcome.unwrap_or_else(|_| {
                    tracing::error!("a request handler panicked");
                    panic_response()
                });
                response.headers_mut().insert(X_REQUEST_ID, request_id);
                tracing::debug!(
                    status = response.status().as_u16(),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "response"
                );
                response
            })
            .instrument(span)
    }
}
