//! Accepting connections: HTTP/1.1 with upgrades, per-connection limits, a cap on
//! connections and graceful shutdown, for every listener Vestibule has (the public one, whose
//! requests go to the [`super::dispatch::Dispatcher`], and the metrics one). Each request is
//! handed to the listener's [`ConnectionService`].
//!
//! At most `max_connections` connections are served at once: past that, the loop stops
//! accepting and new connections wait in the kernel's queue, so a flood of idle connections
//! cannot exhaust file descriptors. Each connection is bounded by [`super::connection`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::connection::{
    Activity, ConnectionLimits, ConnectionSlot, Expiry, TrackedBody, WatchedStream, watchdog,
};

/// How a listener treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Per-connection limits.
    pub connection: ConnectionLimits,
    /// Connections served at once.
    pub max_connections: usize,
}

/// One accepted connection, as the service for it is made.
pub struct Accepted {
    /// The client's (or the front proxy's) address.
    pub peer: SocketAddr,
    /// The connection's place under the cap (the connection holds it until it is done; a
    /// clone keeps it for whatever outlives the HTTP exchange, such as an upgraded relay).
    pub slot: ConnectionSlot,
}

/// What answers the requests of one connection.
pub trait ConnectionService: Send + 'static {
    /// The response to `request` (errors are responses too).
    fn respond(&self, request: Request) -> impl Future<Output = Response> + Send + 'static;
}

/// A plain router answers as it routes (the metrics listener's).
impl ConnectionService for Router {
    fn respond(&self, request: Request) -> impl Future<Output = Response> + Send + 'static {
        self.clone().oneshot(request).map(|outcome| {
            let Ok(response) = outcome;
            response
        })
    }
}

/// Serves connections from `listener`, each answered by the service `service_for` makes for
/// it, until `shutdown` completes; then lets in-flight requests finish.
pub async fn serve<S: ConnectionService>(
    listener: TcpListener,
    limits: ServeLimits,
    service_for: impl Fn(Accepted) -> S,
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
    let mut accept_errors = AcceptErrors {
        listener: listener.local_addr().ok(),
        last_logged: None,
    };
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
        let slot = ConnectionSlot::new(slot);
        let service = service_for(Accepted {
            peer,
            slot: slot.clone(),
        });
        let connection = Connection {
            builder: builder.clone(),
            limits: limits.connection,
            service: Watched {
                service,
                activity: Activity::accepted_now(),
            },
            _slot: slot,
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
struct Connection<S> {
    builder: http1::Builder,
    limits: ConnectionLimits,
    service: Watched<S>,
    /// Held until the connection is done, whatever its service keeps.
    _slot: ConnectionSlot,
}

impl<S: ConnectionService> Connection<S> {
    /// Serves the connection until the client closes it, a limit expires, or the server
    /// stops (then in-flight requests finish first, within the same limits).
    async fn run(self, stream: TcpStream, mut stop_signal: watch::Receiver<bool>) {
        let activity = self.service.activity.clone();
        let io = TokioIo::new(WatchedStream::new(stream, activity.clone()));
        let connection = self
            .builder
            .serve_connection(io, self.service)
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

/// A connection's service, with each request in flight for its [`Activity`] from its complete
/// head until its response body is sent: the watchdog then applies no header or idle deadline.
struct Watched<S> {
    service: S,
    activity: Arc<Activity>,
}

type WatchedResponse =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl<S: ConnectionService> hyper::service::Service<hyper::Request<Incoming>> for Watched<S> {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = WatchedResponse;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
        let responding = self.service.respond(request.map(Body::new));
        Box::pin(
            responding
                .map(move |response| Ok(response.map(|body| TrackedBody::new(body, in_flight)))),
        )
    }
}

/// Logs failed accepts at most once a second. Per-connection errors (a client that went
/// away) are routine; anything else (out of file descriptors) pauses the loop instead of
/// spinning.
struct AcceptErrors {
    /// The listener's address, for the log.
    listener: Option<SocketAddr>,
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
            tracing::error!(
                error = %error,
                listener = ?self.listener,
                "accepting a connection failed; pausing (is server.max_connections above the \
                 file-descriptor limit?)"
            );
            self.last_logged = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
