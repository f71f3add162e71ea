//! Learning that a session has ended, wherever it ended, while something long-lived holds it
//! (a WebSocket or server-sent-events relay).
//!
//! A [`SessionWatch`] resolves [`SessionWatch::ended`] once the session's record is gone from
//! the store: a logout, a back-channel logout, "my sessions", an operator's revoke, a
//! `max_per_user` eviction, a suspicious-use end (each deletes the record, on any instance),
//! or its idle or absolute timeout (the record expires). It reads the record's remaining
//! lifetime only when told something changed (the store's push), when the idle or absolute
//! deadline it last read has passed, and on a slow jittered safety poll; on a Redis Cluster,
//! where nothing is pushed, it polls every [`POLLED_CHECK`].
//!
//! It must never end a watch because the store did not answer: an outage is a 503, not a
//! logout, so a failed read is tried again and the watch goes on. It never touches the
//! record: an open relay is not use, and does not keep a session from its idle timeout. It
//! never logs which session it watches.

use std::time::{Duration, Instant};

use super::{ActiveSession, SessionCookie, Sessions};
use crate::clock::unix_now;
use crate::session::store::KeyWatch;

/// The safety poll, in case a pushed change was lost: every 30 to 60 s (jittered, so watches
/// started together do not read together).
const SAFETY_POLL: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(60));
/// How soon a read that failed (the store unavailable) is tried again.
const RETRY_AFTER_FAILURE: (Duration, Duration) =
    (Duration::from_millis(1000), Duration::from_millis(2000));
/// How often a watch reads when changes are not pushed (a Redis Cluster), so that an end is
/// seen within two seconds.
pub const POLLED_CHECK: Duration = Duration::from_millis(1000);
/// Read this long after a deadline, so the store has expired the record by then.
const PAST_DEADLINE: Duration = Duration::from_millis(50);
/// A record gone within this of a deadline went by that deadline (the store counts its
/// expiry in whole seconds at the absolute end).
const DEADLINE_SLACK: Duration = Duration::from_millis(1500);

/// Why a watched session is over, as far as the watch can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Ended (a logout, a revoke, an eviction, …; the watch cannot tell which).
    Ended,
    /// It reached a timeout.
    Expired(Timeout),
}

/// Which of a session's deadlines passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// `session.idle_timeout`: unused for that long.
    Idle,
    /// `session.absolute_timeout`: that long since login.
    Absolute,
}

/// A watch of one session (see the module doc); dropping it stops watching.
pub struct SessionWatch {
    key: KeyWatch,
    /// The session's absolute end.
    absolute_end: Instant,
    /// When the record expires unless used, as last read.
    idle_end: Option<Instant>,
    /// When to read the record again (now, at first).
    next_read: Instant,
    /// Whether a read is due now (at first, after a pushed change, or at a deadline).
    read_due: bool,
}

impl Sessions {
    /// Watches `session` for its end (see [`SessionWatch`]). Watching does not extend it.
    pub fn watch(&self, session: &ActiveSession) -> SessionWatch {
        self.watch_cookie(&session.cookie, session.record.expires_at)
    }

    /// Watches the session of `cookie`, which ends at the latest at `expires_at` (unix
    /// seconds), for its end: [`Sessions::watch`] once the session itself is handed on.
    pub fn watch_cookie(&self, cookie: &SessionCookie, expires_at: u64) -> SessionWatch {
        let key = self.store().watch(&cookie.storage_key());
        let left = expires_at.saturating_sub(unix_now());
        let now = Instant::now();
        SessionWatch {
            key,
            absolute_end: now + Duration::from_secs(left),
            idle_end: None,
            next_read: now,
            read_due: true,
        }
    }
}

impl SessionWatch {
    /// Resolves once the session is over, and why. Cancel-safe: it may be dropped and called
    /// again (as a `select!` branch in a loop) without missing an end.
    pub async fn ended(&mut self) -> SessionEnd {
        loop {
            if (self.read_due || Instant::now() >= self.next_wake())
                && let Some(end) = self.read().await
            {
                return end;
            }
            let wake = self.next_wake();
            tokio::select! {
                () = self.key.changed() => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            self.read_due = true;
        }
    }

    /// Reads the record's remaining lifetime once; `Some` if the session is over.
    async fn read(&mut self) -> Option<SessionEnd> {
        let remaining = self.key.remaining().await;
        let now = Instant::now();
        self.read_due = false;
        match remaining {
            Ok(None) => return Some(self.reason(now)),
            Ok(Some(left)) => {
                self.idle_end = now.checked_add(left);
                self.next_read = now + self.poll_interval();
            }
            Err(error) => {
                // An outage is not an end: keep watching, read again soon.
                tracing::debug!(error = %error, "a session watch could not read the store; it goes on");
                self.next_read = now + jittered(RETRY_AFTER_FAILURE);
            }
        }
        None
    }

    /// When to wake without a pushed change: the next read, or just after a deadline.
    fn next_wake(&self) -> Instant {
        let deadline = self
            .idle_end
            .map_or(self.absolute_end, |idle| idle.min(self.absolute_end));
        self.next_read.min(deadline + PAST_DEADLINE)
    }

    fn poll_interval(&self) -> Duration {
        if self.key.is_pushed() {
            jittered(SAFETY_POLL)
        } else {
            POLLED_CHECK
        }
    }

    /// Why the record is gone at `now`: a deadline it reached, or an end.
    fn reason(&self, now: Instant) -> SessionEnd {
        let reached = |deadline: Instant| now + DEADLINE_SLACK >= deadline;
        if reached(self.absolute_end) {
            SessionEnd::Expired(Timeout::Absolute)
        } else if self.idle_end.is_some_and(reached) {
            SessionEnd::Expired(Timeout::Idle)
        } else {
            SessionEnd::Ended
        }
    }
}

/// A duration between `range.0` and `range.1`, uniformly at random.
fn jittered(range: (Duration, Duration)) -> Duration {
    let [a, b] = crate::random::bytes::<2>();
    let fraction = f64::from(u16::from_le_bytes([a, b])) / f64::from(u16::MAX);
    range.0 + (range.1 - range.0).mul_f64(fraction)
}

#[cfg(test)]
mod tests;
