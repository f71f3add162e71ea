//! What one client connection may cost: how long it may take to send a request's headers,
//! how long it may sit idle between requests, and how large those headers may be.
//!
//! Hyper's only timer conflates the two (its header-read timeout also runs while a
//! keep-alive connection is idle), which forces a choice between a slow-loris window as long
//! as the load balancer's idle timeout and a keep-alive shorter than it (the balancer then
//! reuses connections Vestibule is closing: sporadic 502s). So each connection has a small
//! [`Activity`] record, updated by its I/O and its requests, and a [`watchdog`] that says when
//! the connection must go:
//! - from the first byte of a request (or from accept) until its headers are complete:
//!   `server.header_read_timeout_secs`, then the connection is dropped;
//! - while no request is in flight and no byte has arrived: `server.keep_alive_timeout_secs`,
//!   then it is closed gracefully;
//! - while a request is in flight (including a long streamed response): no limit on its
//!   length, but a response the client stops reading (its TCP window stays closed) may stall
//!   at most `server.send_timeout_secs` between two writes, then the connection is dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The per-connection limits: `[server]`'s on the public listener, [`super::scrape::LIMITS`] on
/// the metrics one.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From a request's first byte to the end of its headers.
    pub header_read_timeout: Duration,
    /// Idle between two requests.
    pub keep_alive_timeout: Duration,
    /// Request line plus headers, in bytes.
    pub max_header_bytes: usize,
    /// How long a response write may wait for the client to read.
    pub send_timeout: Duration,
}

/// One of a listener's `max_connections` places, held by a connection and by anything that
/// outlives its HTTP exchange on the same socket (an upgraded WebSocket relay), so upgraded
/// connections count against the cap too.
#[derive(Clone)]
pub struct ConnectionSlot {
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnectionSlot {
    /// Holds `permit` until the last clone is dropped.
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self {
            _permit: Arc::new(permit),
        }
    }
}

/// No request head is being read.
const NO_HEAD: u64 = u64::MAX;

/// What a connection is doing, in milliseconds since it was accepted.
pub struct Activity {
    accepted: Instant,
    /// Requests whose headers are complete and whose response body is not yet sent.
    in_flight: AtomicU32,
    /// When the last response finished (or the connection was accepted).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived; [`NO_HEAD`] if none has.
    head_started: AtomicU64,
    /// Since when a write has been waiting for the client to read; [`NOT_STALLED`] if none is.
    write_stalled: AtomicU64,
}

/// No write is waiting.
const NOT_STALLED: u64 = u64::MAX;

impl Activity {
    /// A connection accepted just now: it must send its first request's headers within the
    /// header-read timeout.
    pub fn accepted_now() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            write_stalled: AtomicU64::new(NOT_STALLED),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes arrived: if the connection was idle, a request head has started.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == NO_HEAD
        {
            let _ = self.head_started.compare_exchange(
                NO_HEAD,
                self.now(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// A write could not proceed (the client is not reading) or did: tracks stalls.
    fn write_polled<T>(&self, outcome: &Poll<io::Result<T>>) {
        match outcome {
            Poll::Pending => {
                if self.write_stalled.load(Ordering::Relaxed) == NOT_STALLED {
                    self.write_stalled.store(self.now(), Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => {
                if self.write_stalled.load(Ordering::Relaxed) != NOT_STALLED {
                    self.write_stalled.store(NOT_STALLED, Ordering::Relaxed);
                }
            }
        }
    }

    /// A request's headers are complete; the returned guard ends it when dropped (with the
    /// response body, or with the request if it never produced one).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        InFlight(self.clone())
    }

    /// When the connection must close and why, judged now; `None` while a request is in
    /// flight and its response is not stalled.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(u64, Expiry)> {
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return match self.write_stalled.load(Ordering::Relaxed) {
                NOT_STALLED => None,
                since => Some((
                    since.saturating_add(millis(limits.send_timeout)),
                    Expiry::SlowReader,
                )),
            };
        }
        match self.head_started.load(Ordering::Acquire) {
            NO_HEAD => Some((
                self.idle_since
                    .load(Ordering::Acquire)
                    .saturating_add(millis(limits.keep_alive_timeout)),
                Expiry::Idle,
            )),
            started => Some((
                started.saturating_add(millis(limits.header_read_timeout)),
                Expiry::SlowHeaders,
            )),
        }
    }
}

/// Marks one request in flight on its connection until dropped.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection is closed by its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request for the keep-alive timeout: close gracefully.
    Idle,
    /// A request's headers did not arrive in time: drop the connection.
    SlowHeaders,
    /// The client stopped reading its response: drop the connection.
    SlowReader,
}

/// Resolves when the connection described by `activity` has outlived `limits`.
pub async fn watchdog(activity: &Activity, limits: &ConnectionLimits) -> Expiry {
    // Nothing wakes the watchdog when the state changes (a head starts on an idle
    // connection, a write stalls), so it looks again at least this often.
    let recheck = limits
        .header_read_timeout
        .min(limits.keep_alive_timeout)
        .min(limits.send_timeout);
    loop {
        let wait = match activity.deadline(limits) {
            None => recheck,
            Some((at, expiry)) => {
                let now = activity.now();
                if now >= at {
                    return expiry;
                }
                Duration::from_millis(at - now).min(recheck)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// A connection's byte stream, reporting reads to its [`Activity`].
pub struct WatchedStream<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> WatchedStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_polled(&outcome);
        outcome
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_polled(&outcome);
        outcome
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.write_polled(&outcome);
        outcome
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it is sent (or abandoned).
pub struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    /// `inner`, ending `in_flight` when dropped.
    pub fn new(inner: Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(75),
        max_header_bytes: 8192,
        send_timeout: Duration::from_secs(60),
    };

    #[test]
    fn a_new_connection_must_send_its_headers_in_time() {
        let activity = Activity::accepted_now();
        assert_eq!(
            activity.deadline(&LIMITS),
            Some((10_000, Expiry::SlowHeaders))
        );
    }

    #[test]
    fn in_flight_requests_have_no_deadline_and_then_the_idle_one_applies() {
        let activity = Activity::accepted_now();
        let request = activity.request_started();
        activity.bytes_read(); // body bytes: not a new head
        assert_eq!(activity.deadline(&LIMITS), None);
        drop(request);
        let (at, expiry) = activity.deadline(&LIMITS).unwrap();
        assert_eq!(expiry, Expiry::Idle);
        assert!((75_000..76_000).contains(&at), "{at}");
        activity.bytes_read(); // the next request's first byte
        assert_eq!(activity.deadline(&LIMITS).unwrap().1, Expiry::SlowHeaders);
    }

    #[test]
    fn a_stalled_response_has_the_send_deadline() {
        let activity = Activity::accepted_now();
        let _request = activity.request_started();
        activity.write_polled::<usize>(&Poll::Pending);
        assert_eq!(
            activity.deadline(&LIMITS),
            Some((60_000, Expiry::SlowReader))
        );
        activity.write_polled(&Poll::Ready(Ok(1usize)));
        assert_eq!(activity.deadline(&LIMITS), None, "writing again clears it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_on_a_kept_alive_connection_is_caught_at_its_own_deadline() {
        let activity = Activity::accepted_now();
        drop(activity.request_started()); // one request served: idle, 75 s deadline
        let started = tokio::time::Instant::now();
        let watching = watchdog(&activity, &LIMITS);
        tokio::pin!(watching);
        // 30 s into the idle period, the next request's first byte arrives and no more.
        let trickle = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            activity.bytes_read();
            std::future::pending::<()>().await
        };
        let expiry = tokio::select! {
            expiry = &mut watching => expiry,
            () = trickle => unreachable!(),
        };
        assert_eq!(expiry, Expiry::SlowHeaders);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(40) && elapsed <= Duration::from_secs(50),
            "caught after {elapsed:?}, not at the idle deadline (75 s)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_at_the_header_deadline() {
        let activity = Activity::accepted_now();
        let started = tokio::time::Instant::now();
        assert_eq!(watchdog(&activity, &LIMITS).await, Expiry::SlowHeaders);
        assert!(started.elapsed() >= Duration::from_secs(10));
    }
}
