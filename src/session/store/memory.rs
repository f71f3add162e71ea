//! The in-process store: one instance only, lost on restart, for a first run.
//!
//! A map with lazy expiry and a periodic sweep, with the same semantics as the Redis
//! commands the store uses (`GETEX`, `SET NX|XX`, `GETDEL`, …).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the in-memory store sweeps out expired records on write.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The in-process store: a map with lazy expiry and a periodic sweep.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
    indexes: super::user_index::in_memory::MemoryIndexLock,
    /// Watched keys, woken as a key is deleted or shortened.
    watchers: super::watchers::KeyWatchers,
    /// Tests: index merges that fail before one succeeds (a Redis outage in the middle).
    #[cfg(test)]
    pub(crate) failing_merges: std::sync::atomic::AtomicU32,
}

#[derive(Default)]
struct MemoryInner {
    records: HashMap<String, (Vec<u8>, Instant)>,
    last_sweep: Option<Instant>,
    pending: PendingIndex,
}

/// The pending logins in progress, oldest first, and each browser's. Every pending login lives
/// equally long, so start order is expiry order: pruning and displacing take from the front,
/// in amortised constant time, whatever the number in progress.
#[derive(Default)]
struct PendingIndex {
    /// (expiry, key) in start order; entries no longer in `live` are skipped lazily.
    order: VecDeque<(Instant, String)>,
    /// Key → the browser index it belongs to.
    live: HashMap<String, String>,
    /// Browser index → its keys, oldest first.
    by_browser: HashMap<String, VecDeque<String>>,
}

impl PendingIndex {
    fn remove(&mut self, key: &str) -> bool {
        let Some(browser) = self.live.remove(key) else {
            return false;
        };
        if let Some(keys) = self.by_browser.get_mut(&browser) {
            keys.retain(|pending| pending != key);
            if keys.is_empty() {
                self.by_browser.remove(&browser);
            }
        }
        true
    }

    /// Drops entries that expired or were removed, from the front; `Some(key)` for each live
    /// one dropped because `evict` asked for one more.
    fn pop_oldest(&mut self, now: Instant, evict: bool) -> Option<String> {
        while let Some((expires, key)) = self.order.front() {
            let live = self.live.contains_key(key);
            if live && *expires > now && !evict {
                return None;
            }
            let (_, key) = self.order.pop_front()?;
            if self.remove(&key) && evict {
                return Some(key);
            }
        }
        None
    }

    /// Rebuilds `order` when skipped entries outnumber live ones (removals out of order).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.order.retain(|(_, key)| live.contains_key(key));
        }
    }
}

impl MemoryInner {
    /// Writes a record, sweeping out expired ones now and then; `true` when it swept.
    fn put(&mut self, key: &str, value: &[u8], ttl: Duration, now: Instant) -> bool {
        let sweep = self
            .last_sweep
            .is_none_or(|last| now.duration_since(last) > SWEEP_INTERVAL);
        if sweep {
            self.records.retain(|_, (_, expires)| *expires > now);
            self.last_sweep = Some(now);
        }
        self.records
            .insert(key.to_owned(), (value.to_vec(), now + ttl));
        sweep
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave a half-written map entry, so recover.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn get_and_touch(&self, key: &str, ttl: Duration) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.records.get_mut(key) {
            Some((value, expires)) if *expires > now => {
                *expires = now + ttl;
                Some(value.clone())
            }
            Some(_) => {
                inner.records.remove(key);
                None
            }
            None => None,
        }
    }

    pub(super) fn put(&self, key: &str, value: &[u8], ttl: Duration) {
        let swept = self.lock().put(key, value, ttl, Instant::now());
        if swept {
            // Index lock first, then the records' (never the other way round).
            self.indexes().sweep(crate::clock::unix_now(), |record| {
                self.get(record).is_some()
            });
        }
    }

    /// The session indexes (see `user_index/in_memory.rs`).
    pub(super) fn indexes(
        &self,
    ) -> std::sync::MutexGuard<'_, super::user_index::in_memory::MemoryIndexes> {
        self.indexes.lock()
    }

    /// Tests: whether this index merge fails (one of the injected failures).
    #[cfg(test)]
    pub(super) fn merge_fails(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.failing_merges
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    pub(super) fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.lock()
            .records
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.clone())
    }

    pub(super) fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.records.get(key) {
            Some((_, expires)) if *expires > now => false,
            _ => {
                inner
                    .records
                    .insert(key.to_owned(), (owner.as_bytes().to_vec(), now + ttl));
                true
            }
        }
    }

    pub(super) fn take(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let taken = self.lock().records.remove(key);
        self.watchers.changed(key);
        taken
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value)
    }

    pub(super) fn expire(&self, key: &str, ttl: Duration) {
        if let Some((_, expires)) = self.lock().records.get_mut(key) {
            *expires = Instant::now() + ttl;
        }
        self.watchers.changed(key);
    }

    /// The watched keys (see `watchers.rs`).
    pub(super) fn watchers(&self) -> &super::watchers::KeyWatchers {
        &self.watchers
    }

    /// How long `key` lives unless written again; `None` if it is gone. Touches nothing.
    pub(super) fn remaining(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        self.lock()
            .records
            .get(key)
            .and_then(|(_, expires)| expires.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    pub(super) fn replace_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> bool {
        let now = Instant::now();
        match self.lock().records.get_mut(key) {
            Some(entry) if entry.1 > now && entry.0 == expected => {
                *entry = (value.to_vec(), now + ttl);
                true
            }
            _ => false,
        }
    }

    pub(super) fn delete_if_unchanged(&self, key: &str, expected: &[u8]) -> bool {
        let now = Instant::now();
        let deleted = {
            let mut inner = self.lock();
            match inner.records.get(key) {
                Some((value, expires)) if *expires > now && value == expected => {
                    inner.records.remove(key);
                    true
                }
                _ => false,
            }
        };
        if deleted {
            self.watchers.changed(key);
        }
        deleted
    }

    /// Adds `member` to the set at `key` (newline-separated members), keeping the set at
    /// least `ttl` longer (an expiry is only ever pushed back, as `SADD` + the set script).
    pub(super) fn add_to_set(&self, key: &str, member: &str, ttl: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = inner
            .records
            .entry(key.to_owned())
            .or_insert_with(|| (Vec::new(), now));
        if entry.1 <= now {
            *entry = (Vec::new(), now);
        }
        let text = String::from_utf8_lossy(&entry.0).into_owned();
        if !text.lines().any(|present| present == member) {
            let mut members: Vec<&str> = text.lines().collect();
            members.push(member);
            entry.0 = members.join("\n").into_bytes();
        }
        entry.1 = entry.1.max(now + ttl);
    }

    /// The members of the set at `key` (see [`MemoryStore::add_to_set`]).
    pub(super) fn set_members(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|value| {
                String::from_utf8_lossy(&value)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn renew_lock(&self, key: &str, owner: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        match self.lock().records.get_mut(key) {
            Some((value, expires)) if *expires > now && value == owner.as_bytes() => {
                *expires = now + ttl;
                true
            }
            _ => false,
        }
    }

    pub(super) fn put_pending_login(
        &self,
        key: &str,
        sealed: &[u8],
        ttl: Duration,
        browser_index: &str,
        limits: super::PendingLimits,
    ) -> super::pending::Displaced {
        let now = Instant::now();
        let mut displaced = super::pending::Displaced::default();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let index = &mut inner.pending;
        index.pop_oldest(now, false);
        let browser = index
            .by_browser
            .entry(browser_index.to_owned())
            .or_default();
        let mut dropped = Vec::new();
        while browser.len() >= limits.per_browser {
            let Some(oldest) = browser.pop_front() else {
                break;
            };
            dropped.push(oldest);
        }
        browser.push_back(key.to_owned());
        for oldest in dropped {
            index.live.remove(&oldest);
            inner.records.remove(&oldest);
            displaced.by_browser += 1;
        }
        index.live.insert(key.to_owned(), browser_index.to_owned());
        index.order.push_back((now + ttl, key.to_owned()));
        while index.live.len() > limits.total {
            let Some(oldest) = index.pop_oldest(now, true) else {
                break;
            };
            inner.records.remove(&oldest);
            displaced.by_total += 1;
        }
        index.compact();
        // Under the same lock as the index, so a concurrent start can never displace this
        // login before its record exists (and leave the record behind).
        inner.put(key, sealed, ttl, now);
        displaced
    }

    pub(super) fn forget_pending_login(&self, key: &str) {
        let mut inner = self.lock();
        inner.pending.remove(key);
        inner.pending.compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store::{Freshness, Store};

    #[tokio::test]
    async fn memory_store_expires_and_takes_once() {
        let store = Store::memory();
        store.put("a", b"1", Duration::from_secs(60)).await.unwrap();
        let read = store
            .read_session("a", Duration::from_secs(60), Freshness::Recent)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&*read.sealed, b"1");
        assert!(read.touched_at.is_some());
        assert_eq!(store.take("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.take("a").await.unwrap(), None);

        store
            .put("b", b"2", Duration::from_millis(1))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let read = store
            .read_session("b", Duration::from_secs(60), Freshness::Recent)
            .await
            .unwrap();
        assert!(read.is_none());
    }

    #[tokio::test]
    async fn memory_store_replaces_only_the_value_it_was_given() {
        let store = Store::memory();
        let ttl = Duration::from_secs(60);
        assert!(
            !store
                .replace_if_unchanged("a", b"0", b"1", ttl)
                .await
                .unwrap()
        );
        assert_eq!(store.get("a").await.unwrap(), None, "never creates");
        store.put("a", b"1", ttl).await.unwrap();
        assert!(
            !store
                .replace_if_unchanged("a", b"0", b"2", ttl)
                .await
                .unwrap()
        );
        assert!(
            store
                .replace_if_unchanged("a", b"1", b"2", ttl)
                .await
                .unwrap()
        );
        assert_eq!(store.get("a").await.unwrap(), Some(b"2".to_vec()));
    }

    #[tokio::test]
    async fn memory_locks_are_renewed_only_by_their_owner() {
        let store = Store::memory();
        assert!(
            store
                .try_lock("l", "a", Duration::from_millis(30))
                .await
                .unwrap()
        );
        assert!(
            !store
                .renew_lock("l", "b", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            store
                .renew_lock("l", "a", Duration::from_secs(60))
                .await
                .unwrap()
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            !store
                .try_lock("l", "b", Duration::from_secs(60))
                .await
                .unwrap(),
            "renewed"
        );
    }

    #[tokio::test]
    async fn memory_locks_have_one_owner_until_released() {
        let store = Store::memory();
        let ttl = Duration::from_secs(60);
        assert!(store.try_lock("l", "a", ttl).await.unwrap());
        assert!(!store.try_lock("l", "b", ttl).await.unwrap());
        store.unlock("l", "b").await.unwrap();
        assert!(
            !store.try_lock("l", "b", ttl).await.unwrap(),
            "only the owner unlocks"
        );
        store.unlock("l", "a").await.unwrap();
        assert!(store.try_lock("l", "b", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn memory_store_expire_shortens_lifetime() {
        let store = Store::memory();
        store.put("a", b"1", Duration::from_secs(60)).await.unwrap();
        store.expire("a", Duration::from_millis(1)).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.take("a").await.unwrap(), None);
    }
}
