//! One refresh at a time per session within this instance (step 2 of the protocol).
//!
//! Concurrent requests of a session that all find the access token due for refresh queue on
//! the session's lock; the first refreshes, the rest re-read the session and find it fresh.
//! With rotating refresh tokens a second refresh would revoke the grant, so this matters.
//! It never touches the store: the cluster lock covers other instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type LockMap = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// Per-session async locks, created on demand and dropped when no one holds or waits.
#[derive(Default, Clone)]
pub struct LocalLocks {
    locks: LockMap,
}

/// Held while one session refreshes; releasing it wakes the next waiter.
pub struct LocalGuard {
    // Field order matters: the mutex guard is released before the entry is cleaned up.
    _guard: OwnedMutexGuard<()>,
    _entry: EntryCleanup,
}

/// Removes a session's map entry once nobody holds or waits for its lock, including when a
/// waiter is cancelled before it gets the lock.
struct EntryCleanup {
    key: String,
    locks: LockMap,
}

impl Drop for EntryCleanup {
    fn drop(&mut self) {
        let mut map = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.key);
        }
    }
}

impl LocalLocks {
    /// Waits until this task is the only one refreshing the session stored under `key`.
    pub async fn acquire(&self, key: &str) -> LocalGuard {
        let lock = {
            let mut map = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.entry(key.to_owned()).or_default().clone()
        };
        let entry = EntryCleanup {
            key: key.to_owned(),
            locks: self.locks.clone(),
        };
        let guard = lock.lock_owned().await;
        LocalGuard {
            _guard: guard,
            _entry: entry,
        }
    }

    /// How many sessions currently have a lock entry (entries must not leak).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.locks.lock().map(|map| map.len()).unwrap_or(0)
    }

    /// Whether no lock entries exist.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn holders_of_one_key_are_serialised_and_entries_are_dropped() {
        let locks = LocalLocks::default();
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (locks, inside, max_inside) = (locks.clone(), inside.clone(), max_inside.clone());
            tasks.push(tokio::spawn(async move {
                let _guard = locks.acquire("s1").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_entry_behind() {
        let locks = LocalLocks::default();
        let holder = locks.acquire("s1").await;
        let waiter =
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.acquire("s1")).await;
        assert!(waiter.is_err(), "the waiter was cancelled while waiting");
        drop(holder);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn different_sessions_do_not_wait_for_each_other() {
        let locks = LocalLocks::default();
        let _a = locks.acquire("a").await;
        let b = tokio::time::timeout(std::time::Duration::from_secs(1), locks.acquire("b")).await;
        assert!(b.is_ok());
    }
}
