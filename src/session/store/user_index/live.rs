//! The count of live sessions: a sorted set of every session's handle scored by when it ends
//! if unused, so counting is `ZCOUNT`, never `SCAN`; expired members are pruned (and counted
//! in the metrics, by timeout) a batch at a time.
//!
//! It never says which sessions are live, only how many: the records decide.

use super::scripts::{COUNT_LIVE, PRUNE_EXPIRED};
use crate::session::store::{Store, StoreError};

/// The sorted set of every live session, scored by its idle deadline.
pub const LIVE_SESSIONS: &str = "vestibule:live-sessions";

/// How much longer than its longest-lived session the live set is kept: past their deadline,
/// members wait to be pruned (and counted) by the next login or scrape, not expired unseen
/// with the whole set.
pub(super) const LIVE_SET_MARGIN_SECS: u64 = 600;

/// Most expired members one prune removes (the rest go at the next).
pub const PRUNE_BATCH: usize = 1000;

/// When a session ends if it is not used again, and whether that is its absolute end (else its
/// idle timeout). In the live set the score is the deadline, plus a half for an absolute end:
/// counts and order are the same, and an expiry can be told apart when it is pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// Unix seconds.
    pub at: u64,
    /// Whether `at` is the session's absolute end.
    pub absolute: bool,
}

impl Deadline {
    /// The deadline of a session last used at `last_use`, idle for at most `idle_secs`, ending
    /// at `expires_at` however it is used.
    pub fn of(last_use: u64, idle_secs: u64, expires_at: u64) -> Self {
        let idle_end = last_use.saturating_add(idle_secs);
        Self {
            at: idle_end.min(expires_at),
            absolute: expires_at <= idle_end,
        }
    }

    /// Its score in the live set.
    pub(super) fn score(self) -> String {
        if self.absolute {
            format!("{}.5", self.at)
        } else {
            self.at.to_string()
        }
    }
}

/// Counts the sessions a prune found expired, by which of their timeouts ended them.
pub(super) fn count_expired(idle: u64, absolute: u64) {
    let metrics = crate::metrics::metrics();
    metrics.sessions_ended("idle_timeout", usize::try_from(idle).unwrap_or(usize::MAX));
    metrics.sessions_ended(
        "absolute_timeout",
        usize::try_from(absolute).unwrap_or(usize::MAX),
    );
}

impl Store {
    /// How many sessions are live at `now` (by the deadlines the index knows; those ended by
    /// expiry drop out as their deadline passes). `ZCOUNT`-cheap, whatever the number.
    /// Sessions whose deadline passed more than `filing_delay` ago (the longest a use may wait
    /// to be filed) are pruned on the way and counted in the metrics, by timeout.
    pub async fn count_live_sessions(
        &self,
        now: u64,
        filing_delay: u64,
    ) -> Result<u64, StoreError> {
        let (live, idle, absolute) = match self {
            Store::Memory(memory) => memory.indexes().count_live(now, filing_delay),
            Store::Redis(redis) => {
                redis::Script::new(&format!("{PRUNE_EXPIRED}{COUNT_LIVE}"))
                    .key(LIVE_SESSIONS)
                    .arg(now)
                    .arg(filing_delay)
                    .invoke_async(&mut redis.conn.clone())
                    .await?
            }
        };
        count_expired(idle, absolute);
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_absolute_when_the_session_ends_before_its_idle_timeout() {
        let idle = Deadline::of(1_000, 600, 10_000);
        assert_eq!(
            (idle.at, idle.absolute, idle.score()),
            (1_600, false, "1600".into())
        );
        let absolute = Deadline::of(9_700, 600, 10_000);
        assert_eq!(
            (absolute.at, absolute.absolute, absolute.score()),
            (10_000, true, "10000.5".into())
        );
    }
}
