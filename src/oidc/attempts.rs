//! When discovery may be attempted again: the bookkeeping between requests and the provider's
//! discovery endpoint. It counts *attempts*, not successes, so a provider that fails is asked
//! less and less often (exponential back-off with a cap) however many requests want it.
//!
//! Two kinds of request want a discovery. *Solicited* ones come from the provider's own answers
//! or need discovery to serve a user at all (the first login, an ID token from the token
//! endpoint signed by a key not yet known); *unsolicited* ones come from tokens anyone may post
//! (back-channel logout tokens), and are held to a slower pace. Pure bookkeeping on instants
//! handed in: no clock, no network, no lock (the caller's).

use std::time::{Duration, Instant};

/// Minimum time between two solicited discoveries while the provider answers: a request
/// waits out the rest of it rather than being refused (a genuine key rotation must not fail).
const SOLICITED_INTERVAL: Duration = Duration::from_secs(1);

/// The longest solicited back-off while discovery fails: how long after the provider is back
/// a login may still be answered `503` at most.
const SOLICITED_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Minimum time between two discoveries a token anyone may post can cause, while the provider
/// answers: a stranger costs the provider one JWKS fetch per interval at most.
const UNSOLICITED_INTERVAL: Duration = Duration::from_secs(10);

/// The longest unsolicited back-off while discovery fails.
const UNSOLICITED_BACKOFF_CAP: Duration = Duration::from_secs(120);

/// What the last discovery attempts did.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    /// When the last attempt ended (or began, while it runs or if it never ended).
    last: Option<Instant>,
    /// Consecutive attempts that did not succeed (0: the last one succeeded).
    failures: u32,
}

/// Whether a discovery may be attempted now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// Yes.
    Open,
    /// After this instant (the provider answered moments ago: wait, do not refuse).
    OpenAt(Instant),
    /// Not now: the last attempt was this recent. `failing` tells whether it failed (then the
    /// provider is unavailable for this request) or succeeded (then what it fetched is current).
    Closed {
        /// How long until an attempt is allowed.
        retry_in: Duration,
        /// Whether the last attempt failed.
        failing: bool,
    },
}

impl Attempts {
    /// Records an attempt beginning at `now`. It counts as failed until it [ends](Self::end)
    /// well: an attempt whose request was cancelled (a client that hung up, a probe's time
    /// limit) still counts, so cancelling cannot bypass the back-off.
    pub(super) fn begin(&mut self, now: Instant) {
        self.last = Some(now);
        self.failures = self.failures.saturating_add(1);
    }

    /// Records that the attempt begun last ended at `now`.
    pub(super) fn end(&mut self, now: Instant, succeeded: bool) {
        self.last = Some(now);
        if succeeded {
            self.failures = 0;
        }
    }

    /// For a solicited discovery at `now`: open, open after the short interval when the last
    /// attempt succeeded, or closed while backing off after failures.
    pub(super) fn solicited(&self, now: Instant) -> Gate {
        let Some(last) = self.last else {
            return Gate::Open;
        };
        let since = now.saturating_duration_since(last);
        if self.failures == 0 {
            return if since >= SOLICITED_INTERVAL {
                Gate::Open
            } else {
                Gate::OpenAt(last + SOLICITED_INTERVAL)
            };
        }
        let backoff = backoff(SOLICITED_INTERVAL, self.failures - 1, SOLICITED_BACKOFF_CAP);
        self.open_after(backoff, since)
    }

    /// For an unsolicited discovery at `now`: open once the last attempt is an interval old,
    /// an interval that doubles with each consecutive failure, up to its cap.
    pub(super) fn unsolicited(&self, now: Instant) -> Gate {
        let Some(last) = self.last else {
            return Gate::Open;
        };
        let since = now.saturating_duration_since(last);
        let wait = backoff(UNSOLICITED_INTERVAL, self.failures, UNSOLICITED_BACKOFF_CAP);
        self.open_after(wait, since)
    }

    fn open_after(&self, wait: Duration, since: Duration) -> Gate {
        if since >= wait {
            Gate::Open
        } else {
            Gate::Closed {
                retry_in: wait - since,
                failing: self.failures > 0,
            }
        }
    }
}

/// `base` doubled `doublings` times, at most `cap`.
fn backoff(base: Duration, doublings: u32, cap: Duration) -> Duration {
    base.checked_mul(2u32.saturating_pow(doublings))
        .map_or(cap, |wait| wait.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_first_attempt_is_always_open() {
        let attempts = Attempts::default();
        let now = Instant::now();
        assert_eq!(attempts.solicited(now), Gate::Open);
        assert_eq!(attempts.unsolicited(now), Gate::Open);
    }

    #[test]
    fn after_a_success_solicited_ones_wait_a_second_and_strangers_ten() {
        let start = Instant::now();
        let mut attempts = Attempts::default();
        attempts.begin(start);
        attempts.end(start, true);
        assert_eq!(attempts.solicited(start), Gate::OpenAt(start + secs(1)));
        assert_eq!(attempts.solicited(start + secs(1)), Gate::Open);
        assert_eq!(
            attempts.unsolicited(start + secs(4)),
            Gate::Closed {
                retry_in: secs(6),
                failing: false
            }
        );
        assert_eq!(attempts.unsolicited(start + secs(10)), Gate::Open);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_a_cap_counting_attempts_not_successes() {
        let mut at = Instant::now();
        let mut attempts = Attempts::default();
        let mut solicited = Vec::new();
        let mut unsolicited = Vec::new();
        for _ in 0..8 {
            attempts.begin(at);
            attempts.end(at, false);
            let wait = |gate: Gate| match gate {
                Gate::Closed {
                    retry_in,
                    failing: true,
                } => retry_in.as_secs(),
                other => panic!("closed while failing, not {other:?}"),
            };
            solicited.push(wait(attempts.solicited(at)));
            unsolicited.push(wait(attempts.unsolicited(at)));
            at += secs(300);
        }
        assert_eq!(solicited, [1, 2, 4, 8, 10, 10, 10, 10]);
        assert_eq!(unsolicited, [20, 40, 80, 120, 120, 120, 120, 120]);
        // The wait counts from the last attempt's end; a success starts over.
        let last = at - secs(300);
        assert_eq!(attempts.solicited(last + secs(10)), Gate::Open);
        attempts.begin(last + secs(10));
        attempts.end(last + secs(11), true);
        assert_eq!(
            attempts.unsolicited(last + secs(12)),
            Gate::Closed {
                retry_in: secs(9),
                failing: false
            }
        );
    }

    #[test]
    fn an_attempt_that_never_ends_counts_as_failed_from_its_start() {
        let start = Instant::now();
        let mut attempts = Attempts::default();
        attempts.begin(start);
        attempts.end(start, true);
        // Begun (a stranger's), then cancelled: its request hung up.
        attempts.begin(start + secs(10));
        assert_eq!(
            attempts.unsolicited(start + secs(11)),
            Gate::Closed {
                retry_in: secs(19),
                failing: true
            }
        );
        assert_eq!(
            attempts.solicited(start + secs(10)),
            Gate::Closed {
                retry_in: secs(1),
                failing: true
            }
        );
    }
}
