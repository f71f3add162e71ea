//! Watching keys for changes: the registry of watched keys, each with the wake-ups of its
//! watchers (the handle a watcher holds is [`super::key_watch::KeyWatch`]).
//!
//! A backend that learns of a change to a key (the in-memory store as it deletes one; the
//! Redis watch tracker as an invalidation arrives, or as it reconnects and may have missed
//! some) wakes that key's watchers here. A wake-up only says "check again": what the key holds
//! is read again by the watcher, never inferred from the message. This module knows
//! nothing of sessions, and never holds a value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The watched keys of one store, each with the wake-ups of its watchers.
#[derive(Default)]
pub struct KeyWatchers {
    keys: Mutex<HashMap<String, HashMap<u64, Arc<Notify>>>>,
    next_id: AtomicU64,
}

impl KeyWatchers {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, Arc<Notify>>>> {
        // Each change is one insert or remove: nothing is left half-done by a panic.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a watcher of `key`; it stays until [`KeyWatchers::remove`].
    pub(super) fn add(&self, key: &str) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        self.keys()
            .entry(key.to_owned())
            .or_default()
            .insert(id, wake.clone());
        (id, wake)
    }

    pub(super) fn remove(&self, key: &str, id: u64) {
        let mut keys = self.keys();
        if let Some(watchers) = keys.get_mut(key) {
            watchers.remove(&id);
            if watchers.is_empty() {
                keys.remove(key);
            }
        }
    }

    /// `key` may have changed: its watchers check it again.
    pub fn changed(&self, key: &str) {
        if let Some(watchers) = self.keys().get(key) {
            // A stored permit: a watcher not waiting at this moment still wakes at its next wait.
            watchers.values().for_each(|wake| wake.notify_one());
        }
    }

    /// Any key may have changed (messages may have been lost): every watcher checks again.
    pub fn changed_all(&self) {
        self.keys()
            .values()
            .flat_map(HashMap::values)
            .for_each(|wake| wake.notify_one());
    }

    /// Whether no key is watched.
    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_change_wakes_the_watchers_of_that_key_only_and_is_kept_until_waited_for() {
        let watchers = KeyWatchers::default();
        let (a, wake_a) = watchers.add("a");
        let (_, wake_b) = watchers.add("b");
        watchers.changed("a");
        // Kept while nobody waited.
        tokio::time::timeout(Duration::from_secs(1), wake_a.notified())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), wake_b.notified())
                .await
                .is_err()
        );
        watchers.changed_all();
        tokio::time::timeout(Duration::from_secs(1), wake_b.notified())
            .await
            .unwrap();
        watchers.remove("a", a);
        assert!(!watchers.is_empty());
    }
}
