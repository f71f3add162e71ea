//! Accepting connections: HTTP/1.1 with upgrades, per-connection limits, a cap on
//! connections, graceful shutdown, and a fast path that hands proxied API calls straight to
//! the proxy.
//!
//! Proxied calls are the hot path of a BFF. Sending them through the router costs a path
//! match, the tracing and panic layers' futures and a fallback dispatch on every call (about
//! a tenth of the throughput, measured with `bench/run`), so they skip it: the decision is the
//! same one the router's fallback makes ([`super::proxy::dispatch`]), and the guarantees the
//! layers give (a span with method and path, a panic costs one request a 500) are kept here.
//! Everything else goes through the router unchanged.
//!
//! At most `server.max_connections` connections are served at once: past that, the loop
//! stops accepting and new connections wait in the kernel's queue, so a flood of idle
//! connections cannot exhaust file descriptors. Each connection is bounded by
//! [`super::connection`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;
use tracing::Instrument;

use super::connection::{
    Activity, ConnectionLimits, ConnectionSlot, Expiry, TrackedBody, WatchedStream, watchdog,
};
use super::{AppState, proxy};
use crate::error::panic_response;

/// How the listener treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Per-connection limits.
    pub connection: ConnectionLimits,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves connections from `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stopping, stop_signal) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .max_header_size(limits.connection.max_header_bytes);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_errors = AcceptErrors::default();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.wait_after(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            limits: limits.connection,
            entry: Entry {
                state: state.clone(),
                router: router.clone(),
                peer,
                activity: Activity::accepted_now(),
                slot: ConnectionSlot::new(slot),
            },
        };
        let stop_signal = stop_signal.clone();
        tokio::spawn(connection.run(stream, stop_signal));
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a slot until it is done: having them all back means drained. A
    // response that never ends (a stream, an upgraded socket) does not hold the process.
    let drained = tokio::time::timeout(DRAIN_LIMIT, slots.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!(
            "connections still open {DRAIN_LIMIT:?} after the stop signal; closing them"
        );
    }
}

/// How long a stopping server waits for in-flight requests (Kubernetes' default grace
/// period is 30 s, after which it kills the process anyway).
const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// One accepted connection and what it needs.
struct Connection {
    builder: http1::Builder,
    limits: ConnectionLimits,
    entry: Entry,
}

impl Connection {
    /// Serves the connection until the client closes it, a limit expires, or the server
    /// stops (then in-flight requests finish first, within the same limits).
    async fn run(self, stream: TcpStream, mut stop_signal: watch::Receiver<bool>) {
        let activity = self.entry.activity.clone();
        let io = TokioIo::new(WatchedStream::new(stream, activity.clone()));
        let connection = self
            .builder
            .serve_connection(io, self.entry)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(error = %error, "connection ended with an error");
                    }
                    return;
                }
                // A fresh watchdog each turn: the loop turns only on a stop or an expiry.
                reason = watchdog(&activity, &self.limits) => match reason {
                    Expiry::SlowHeaders => {
                        tracing::debug!("closing a connection whose request headers are too slow");
                        return;
                    }
                    Expiry::SlowReader => {
                        tracing::debug!("closing a connection whose client stopped reading");
                        return;
                    }
                    // Idle again after a graceful shutdown was asked: nothing left to finish.
                    Expiry::Idle if stopping => return,
                    Expiry::Idle => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                },
                changed = stop_signal.changed(), if !stopping => {
                    if changed.is_err() || *stop_signal.borrow() {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Logs failed accepts at most once a second. Per-connection errors (a client that went
/// away) are routine; anything else (out of file descriptors) pauses the loop instead of
/// spinning.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    async fn wait_after(&mut self, error: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::error!(error = %error, "accepting a connection failed; pausing (is server.max_connections above the file-descriptor limit?)");
            self.last_logged = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    activity: Arc<Activity>,
    slot: ConnectionSlot,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Entry {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
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
                    .map(move |outcome| {
                        let response = outcome.unwrap_or_else(|_| panic_response());
                        Ok(response.map(|body| TrackedBody::new(body, in_flight)))
                    })
                    .instrument(span),
            );
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.slot.clone());
        Box::pin(self.router.clone().oneshot(request).map(move |outcome| {
            let Ok(response) = outcome;
            Ok(response.map(|body| TrackedBody::new(body, in_flight)))
        }))
    }
}
