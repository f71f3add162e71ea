//! Wall-clock time in unix seconds, the unit of token and session expiry.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Lets something be done at most once per interval per key (a session's handle), on this
/// instance: filing a session's last use, reporting its suspicious use. Bounded: the least
/// recently seen keys are forgotten, which only lets their next occurrence through early.
pub struct OncePerInterval {
    interval: std::time::Duration,
    last: std::sync::Mutex<lru::LruCache<String, u64>>,
}

impl OncePerInterval {
    /// At most once per `interval` for each of up to `keys` keys.
    pub fn new(interval: std::time::Duration, keys: usize) -> Self {
        let capacity = std::num::NonZeroUsize::new(keys).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            interval,
            last: std::sync::Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    /// The interval.
    pub fn interval(&self) -> std::time::Duration {
        self.interval
    }

    /// Whether `key` may be acted on at `now` (unix seconds); if so, remembers that it was.
    pub fn due(&self, key: &str, now: u64) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match last.get(key) {
            Some(at) if now < at + self.interval.as_secs() => false,
            _ => {
                last.put(key.to_owned(), now);
                true
            }
        }
    }

    /// Forgets that `key` was acted on (the action failed): its next occurrence is due.
    pub fn forget(&self, key: &str) {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_once_per_interval_and_others_independently() {
        let gate = OncePerInterval::new(std::time::Duration::from_secs(10), 2);
        assert!(gate.due("a", 100));
        assert!(!gate.due("a", 109));
        assert!(gate.due("b", 109));
        assert!(gate.due("a", 110));
        gate.forget("a");
        assert!(gate.due("a", 111), "forgotten: due again at once");
    }
}
