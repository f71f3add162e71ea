//! Accepting connections: HTTP/1.1 with upgrades, per-connection limits, a cap on
//! connections and graceful shutdown. Each request on a connection is handed to the
//! [`Dispatcher`], the one place that decides where it goes.
//!
//! At most `server.max_connections` connections are served at once: past that, the loop
//! stops accepting and new connections wait in the kernel's queue, so a flood of idle
//! connections cannot exhaust file descriptors. Each connection is bounded by
//! [`super::connection`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::AppState;
use super::connection::{
    Activity, ConnectionLimits, ConnectionSlot, Expiry, WatchedStream, watchdog,
};
use super::dispatch::Dispatcher;

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
            dispatcher: Dispatcher {
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
    dispatcher: Dispatcher,
}

impl Connection {
    /// Serves the connection until the client closes it, a limit expires, or the server
    /// stops (then in-flight requests finish first, within the same limits).
    async fn run(self, stream: TcpStream, mut stop_signal: watch::Receiver<bool>) {
        let activity = self.dispatcher.activity.clone();
        let io = TokioIo::new(WatchedStream::new(stream, activity.clone()));
        let connection = self
            .builder
            .serve_connection(io, self.dispatcher)
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
