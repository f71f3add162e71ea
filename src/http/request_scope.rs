//! What every request gets, whichever way it is dispatched: a span with its method and path,
//! a panic that costs the one request a JSON 500 (never the connection), and one debug line
//! with its status and duration. Request ids and metrics hook in here, so that they cover the
//! proxied calls and Vestibule's own endpoints alike.
//!
//! The span holds method and path only: queries carry codes and states, headers cookies.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::response::Response;
use futures_util::FutureExt;
use tracing::Instrument;

use crate::error::panic_response;

/// The scope one request is handled in, opened before it is dispatched.
pub struct RequestScope {
    span: tracing::Span,
    started: Instant,
}

impl RequestScope {
    /// Opens the scope for `request`.
    pub fn open<B>(request: &hyper::Request<B>) -> Self {
        Self {
            span: tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path()
            ),
            started: Instant::now(),
        }
    }

    /// Runs the handling of the request inside the scope.
    pub fn run(
        self,
        handling: impl Future<Output = Response> + Send,
    ) -> impl Future<Output = Response> + Send {
        let Self { span, started } = self;
        AssertUnwindSafe(handling)
            .catch_unwind()
            .map(move |outcome| {
                let response = outcome.unwrap_or_else(|_| {
                    tracing::error!("a request handler panicked");
                    panic_response()
                });
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
