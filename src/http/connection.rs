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
//! - while a request is in flight (including a long streamed response): no limit here; the
//!   route's upstream timeout applies.

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

use crate::config::ServerSettings;

/// The per-connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From a request's first byte to the end of its headers.
    pub header_read_timeout: Duration,
    /// Idle between two requests.
    pub keep_alive_timeout: Duration,
    /// Request line plus headers, in bytes.
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    /// The limits configured in `[server]`.
    pub fn from_settings(server: &ServerSettings) -> Self {
        Self {
            header_read_timeout: server.header_read_timeout(),
            keep_alive_timeout: server.keep_alive_timeout(),
            max_header_bytes: server.max_header_bytes,
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
}

impl Activity {
    /// A connection accepted just now: it must send its first request's headers within the
    /// header-read timeout.
    pub fn accepted_now() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
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

    /// A request's headers are complete; the returned guard ends it when dropped (with the
    /// response body, or with the request if it never produced one).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        InFlight(self.clone())
    }

    /// When the connection must close and why, judged now; `None` while a request is in
    /// flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(u64, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
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
}

/// Resolves when the connection described by `activity` has outlived `limits`.
pub async fn watchdog(activity: &Activity, limits: &ConnectionLimits) -> Expiry {
    // While a request is in flight, look again this often (a slow head may follow it).
    let recheck = limits.header_read_timeout.min(limits.keep_alive_timeout);
    loop {
        let wait = match activity.deadline(limits) {
            None => recheck,
            Some((at, expiry)) => {
                let now = activity.now();
                if now >= at {
                    return expiry;
                }
                Duration::from_millis(at - now)
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
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

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_at_the_header_deadline() {
        let activity = Activity::accepted_now();
        let started = tokio::time::Instant::now();
        assert_eq!(watchdog(&activity, &LIMITS).await, Expiry::SlowHeaders);
        assert!(started.elapsed() >= Duration::from_secs(10));
    }
}
