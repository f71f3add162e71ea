//! Watching one key for changes: the registry of watched keys and the [`KeyWatch`] handle.
//!
//! A backend that learns of a change to a key (the in-memory store as it deletes one; the
//! Redis watch tracker as an invalidation arrives, or as it reconnects and may have missed
//! some) wakes that key's watchers here. A wake-up only says "check again": what the key holds
//! is read with [`KeyWatch::remaining`], never inferred from the message. This module knows
//! nothing of sessions, and never holds a value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::StoreError;
use super::memory::MemoryStore;
use super::redis::watch_tracking::WatchTracker;

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
    fn add(&self, key: &str) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        self.keys()
            .entry(key.to_owned())
            .or_default()
            .insert(id, wake.clone());
        (id, wake)
    }

    fn remove(&self, key: &str, id: u64) {
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

/// Where a watch reads its key and learns of changes.
pub(super) enum WatchSource {
    /// The in-process store, which wakes watchers as it deletes or shortens a key.
    Memory(Arc<MemoryStore>),
    /// Redis with a tracking connection of the watches' own: changes are pushed.
    Tracked(Arc<WatchTracker>),
    /// Redis without one (a Cluster): the watcher must poll.
    Polled(super::RedisStore),
}

/// One watcher of one key; dropping it stops the watch.
pub struct KeyWatch {
    key: String,
    id: u64,
    wake: Arc<Notify>,
    source: WatchSource,
}

impl KeyWatch {
    pub(super) fn new(key: &str, source: WatchSource) -> Self {
        let (id, wake) = match &source {
            WatchSource::Memory(memory) => memory.watchers().add(key),
            WatchSource::Tracked(tracker) => tracker.watchers().add(key),
            // Nobody wakes it: an entry of its own, outside any registry.
            WatchSource::Polled(_) => (0, Arc::new(Notify::new())),
        };
        Self {
            key: key.to_owned(),
            id,
            wake,
            source,
        }
    }

    /// Whether changes are pushed to this watch; if not, its holder must poll
    /// [`KeyWatch::remaining`] as often as it needs to learn of a change.
    pub fn is_pushed(&self) -> bool {
        !matches!(self.source, WatchSource::Polled(_))
    }

    /// Resolves when the key may have changed (cancel-safe: a wake-up that arrives while
    /// nobody waits is kept for the next wait).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// How long the key lives unless written again, or `None` if it is gone. Never touches
    /// the key's expiry. On Redis this read also asks to be told of the key's next change.
    pub async fn remaining(&self) -> Result<Option<Duration>, StoreError> {
        match &self.source {
            WatchSource::Memory(memory) => Ok(memory.remaining(&self.key)),
            WatchSource::Tracked(tracker) => tracker.remaining(&self.key).await,
            WatchSource::Polled(redis) => redis.remaining(&self.key).await,
        }
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        match &self.source {
            WatchSource::Memory(memory) => memory.watchers().remove(&self.key, self.id),
            WatchSource::Tracked(tracker) => tracker.watchers().remove(&self.key, self.id),
            WatchSource::Polled(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
