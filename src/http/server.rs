//! Accepting connections: HTTP/1.1 with upgrades, graceful shutdown, and a fast path that
//! hands proxied API calls straight to the proxy.
//!
//! Proxied calls are the hot path of a BFF. Sending them through the router costs a path
//! match, the tracing and panic layers' futures and a fallback dispatch on every call (about
//! a tenth of the throughput, measured with `bench/run`), so they skip it: the decision is the
//! same one the router's fallback makes ([`super::proxy::dispatch`]), and the guarantees the
//! layers give (a span with method and path, a panic costs one request a 500) are kept here.
//! Everything else goes through the router unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::Instrument;

use super::{AppState, proxy};
use crate::error::panic_response;

/// Serves connections from `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    wait_after_accept_error(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Entry {
            state: state.clone(),
            router: router.clone(),
            peer,
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Per-connection errors (a client that went away) are routine; anything else (out of file
/// descriptors) would spin, so it is logged and the loop pauses.
async fn wait_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The span every request is handled in. Method and path only: queries carry codes and
/// states, headers carry cookies.
pub fn request_span<B>(request: &hyper::Request<B>) -> tracing::Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path()
    )
}

/// The service for one connection.
#[derive(Clone)]
struct Entry {
    state: AppState,
    router: Router,
    peer: SocketAddr,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Entry {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        if let Some(upstream) = proxy::upstream_for(&self.state, request.uri()) {
            let span = request_span(&request);
            let (state, peer) = (self.state.clone(), self.peer);
            let call = async move {
                let outcome = match upstream {
                    Ok((url, timeout)) => proxy::forward(&state, peer, request, url, timeout).await,
                    Err(error) => Err(error),
                };
                outcome.unwrap_or_else(IntoResponse::into_response)
            };
            return Box::pin(
                AssertUnwindSafe(call)
                    .catch_unwind()
                    .map(|outcome| Ok(outcome.unwrap_or_else(|_| panic_response())))
                    .instrument(span),
            );
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(self.router.clone().oneshot(request))
    }
}
