//! The handle of one watcher of one key ([`KeyWatch`]) and where it reads the key: the
//! in-process store, Redis with the watches' own tracking connection, or Redis polled (a
//! Cluster). It never holds a value: a wake-up only says "check again".

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::StoreError;
use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::redis::watch_tracking::WatchTracker;

/// Where a watch reads its key and learns of changes.
pub(super) enum WatchSource {
    /// The in-process store, which wakes watchers as it deletes or shortens a key.
    Memory(Arc<MemoryStore>),
    /// Redis with a tracking connection of the watches' own: changes are pushed.
    Tracked(Arc<WatchTracker>),
    /// Redis without one (a Cluster): the watcher must poll.
    Polled(RedisStore),
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
