//! Where sealed records live: Redis, or process memory for a first run.
//!
//! The store sees only opaque keys and sealed bytes; it never holds a plaintext token.
//! Every write carries a TTL, so nothing needs cleaning up. Any Redis failure is reported as
//! [`StoreError::Unavailable`] (a 503 upstream), never as "no such session" (a logout).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};

use super::cache::{self, CacheSettings, Lookup, RecordCache, SESSION_KEY_PREFIX};

/// The store could not answer; the caller must not treat this as a missing record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is unreachable, timed out or answered with an error.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        // Redis error texts name commands, never values, so they are safe to log.
        StoreError::Unavailable(format!("{:?}: {}", error.kind(), error))
    }
}

/// Bounds on every Redis call: an outage must turn into a quick 503, not a hung request.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const REDIS_RECONNECT_RETRIES: usize = 2;

/// A key-value store of sealed records with per-key expiry.
#[derive(Clone)]
pub enum Store {
    /// Redis (shared by every instance).
    Redis(RedisStore),
    /// Process memory (one instance only; lost on restart).
    Memory(std::sync::Arc<MemoryStore>),
}

/// A Redis connection plus, optionally, the tracked cache of session records.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    cache: Option<std::sync::Arc<RecordCache>>,
}

/// Whether a session read may be answered by the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A cached copy is fine (it is dropped as soon as Redis reports a change).
    Cached,
    /// Ask Redis: the caller is about to act on what it reads (a refresh decision).
    FromRedis,
}

/// A session record as read, and whether the read pushed its idle expiry back.
pub struct SessionRead {
    /// The sealed record.
    pub sealed: Vec<u8>,
    /// Whether the key's expiry was reset to the idle timeout by this read.
    pub touched: bool,
}

impl Store {
    /// Connects lazily to Redis at `url`; an unreachable Redis is reported per call, not here.
    /// With `cache`, session reads are served from a tracked in-process cache (see
    /// [`super::cache`]); it needs a Redis that supports `CLIENT TRACKING` and otherwise stays off.
    pub fn redis(url: &str, cache: Option<CacheSettings>) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_number_of_retries(REDIS_RECONNECT_RETRIES)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let cache = match cache {
            Some(settings) => {
                // Invalidation messages need RESP3 on the tracking connection.
                let info = url.into_connection_info()?;
                let resp3 = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let tracking = redis::Client::open(info.set_redis_settings(resp3))?;
                let cache = std::sync::Arc::new(RecordCache::new(settings));
                cache::start(&cache, tracking, conn.clone());
                Some(cache)
            }
            None => None,
        };
        Ok(Store::Redis(RedisStore { conn, cache }))
    }

    /// The tracked cache of session records, if there is one.
    pub fn cache(&self) -> Option<&RecordCache> {
        match self {
            Store::Redis(redis) => redis.cache.as_deref(),
            Store::Memory(_) => None,
        }
    }

    /// An empty in-process store.
    pub fn memory() -> Self {
        Store::Memory(std::sync::Arc::new(MemoryStore::default()))
    }

    /// Checks that the store answers (used at start-up to warn early).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => {
                let _: String = redis::cmd("PING")
                    .query_async(&mut redis.conn.clone())
                    .await?;
                Ok(())
            }
            Store::Memory(_) => Ok(()),
        }
    }

    /// Reads a session record and resets its expiry to `ttl` from now, in the same round trip.
    /// With the cache on, a read is usually answered from memory and the expiry is reset at
    /// most once per touch interval.
    pub async fn read_session(
        &self,
        key: &str,
        ttl: Duration,
        freshness: Freshness,
    ) -> Result<Option<SessionRead>, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                return Ok(memory.get_and_touch(key, ttl).map(|sealed| SessionRead {
                    sealed,
                    touched: true,
                }));
            }
            Store::Redis(redis) => redis,
        };
        let Some(cache) = &redis.cache else {
            let sealed = redis_getex(&redis.conn, key, ttl).await?;
            return Ok(sealed.map(|sealed| SessionRead {
                sealed,
                touched: true,
            }));
        };
        let read = match freshness {
            Freshness::Cached => match cache.lookup(key) {
                Lookup::Hit(sealed) => {
                    return Ok(Some(SessionRead {
                        sealed,
                        touched: false,
                    }));
                }
                Lookup::Miss(read) => read,
            },
            Freshness::FromRedis => cache.begin_read(key),
        };
        let sealed = if read.touch {
            redis_getex(&redis.conn, key, ttl).await?
        } else {
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis.conn.clone())
                .await?
        };
        cache.store(key, sealed.as_deref(), read);
        Ok(sealed.map(|sealed| SessionRead {
            sealed,
            touched: read.touch,
        }))
    }

    /// Writes a record that expires `ttl` from now, replacing any previous value.
    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => {
                redis_set(&redis.conn, key, value, ttl, None).await?;
                redis.forget(key);
                Ok(())
            }
            Store::Memory(memory) => {
                memory.put(key, value, ttl);
                Ok(())
            }
        }
    }

    /// Reads a record without touching its expiry.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redis(redis) => Ok(redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis.conn.clone())
                .await?),
            Store::Memory(memory) => Ok(memory.get(key)),
        }
    }

    /// Replaces a record only if it still exists (so a concurrent delete wins); `false` if gone.
    pub async fn replace(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(redis) => {
                let replaced = redis_set(&redis.conn, key, value, ttl, Some("XX")).await?;
                redis.forget(key);
                Ok(replaced)
            }
            Store::Memory(memory) => Ok(memory.replace(key, value, ttl)),
        }
    }

    /// Takes the lock `key` for `ttl` if nobody holds it; `owner` identifies the holder.
    pub async fn try_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(redis) => {
                redis_set(&redis.conn, key, owner.as_bytes(), ttl, Some("NX")).await
            }
            Store::Memory(memory) => Ok(memory.try_lock(key, owner, ttl)),
        }
    }

    /// Releases the lock `key` if `owner` still holds it (an expired lock may have a new owner).
    pub async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => {
                let script = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                );
                let _: i64 = script
                    .key(key)
                    .arg(owner)
                    .invoke_async(&mut redis.conn.clone())
                    .await?;
                Ok(())
            }
            Store::Memory(memory) => {
                memory.unlock(key, owner);
                Ok(())
            }
        }
    }

    /// Reads and deletes a record atomically, so it can be used at most once.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redis(redis) => Ok(redis::cmd("GETDEL")
                .arg(key)
                .query_async(&mut redis.conn.clone())
                .await?),
            Store::Memory(memory) => Ok(memory.take(key)),
        }
    }

    /// Deletes a record; deleting a missing record is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => {
                let _: i64 = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut redis.conn.clone())
                    .await?;
                if let Some(cache) = &redis.cache {
                    cache.forget_entirely(key);
                }
                Ok(())
            }
            Store::Memory(memory) => {
                memory.take(key);
                Ok(())
            }
        }
    }

    /// Shortens a record's remaining lifetime to `ttl` from now.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => {
                let _: i64 = redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(millis(ttl))
                    .query_async(&mut redis.conn.clone())
                    .await?;
                redis.forget(key);
                Ok(())
            }
            Store::Memory(memory) => {
                memory.expire(key, ttl);
                Ok(())
            }
        }
    }
}

impl RedisStore {
    /// Drops a session key this instance just wrote from the cache, without waiting for
    /// Redis to report the change.
    fn forget(&self, key: &str) {
        if let Some(cache) = &self.cache
            && key.starts_with(SESSION_KEY_PREFIX)
        {
            cache.forget(key);
        }
    }
}

/// `GETEX key PX ttl`: read and reset the expiry in one round trip.
async fn redis_getex(
    conn: &ConnectionManager,
    key: &str,
    ttl: Duration,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(redis::cmd("GETEX")
        .arg(key)
        .arg("PX")
        .arg(millis(ttl))
        .query_async(&mut conn.clone())
        .await?)
}

/// `SET key value PX ttl [NX|XX]`; `Ok(false)` when the condition kept it from writing.
async fn redis_set(
    conn: &ConnectionManager,
    key: &str,
    value: &[u8],
    ttl: Duration,
    condition: Option<&str>,
) -> Result<bool, StoreError> {
    let mut command = redis::cmd("SET");
    command.arg(key).arg(value).arg("PX").arg(millis(ttl));
    if let Some(condition) = condition {
        command.arg(condition);
    }
    let reply: Option<String> = command.query_async(&mut conn.clone()).await?;
    Ok(reply.is_some())
}

/// Milliseconds for Redis expiry arguments; never 0, which Redis rejects.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// How often the in-memory store sweeps out expired records on write.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The in-process store: a map with lazy expiry and a periodic sweep.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    records: HashMap<String, (Vec<u8>, Instant)>,
    last_sweep: Option<Instant>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave a half-written map entry, so recover.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get_and_touch(&self, key: &str, ttl: Duration) -> Option<Vec<u8>> {
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

    fn put(&self, key: &str, value: &[u8], ttl: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner
            .last_sweep
            .is_none_or(|last| now.duration_since(last) > SWEEP_INTERVAL)
        {
            inner.records.retain(|_, (_, expires)| *expires > now);
            inner.last_sweep = Some(now);
        }
        inner
            .records
            .insert(key.to_owned(), (value.to_vec(), now + ttl));
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.lock()
            .records
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.clone())
    }

    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> bool {
        let now = Instant::now();
        match self.lock().records.get_mut(key) {
            Some(entry) if entry.1 > now => {
                *entry = (value.to_vec(), now + ttl);
                true
            }
            _ => false,
        }
    }

    fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> bool {
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

    fn unlock(&self, key: &str, owner: &str) {
        let mut inner = self.lock();
        if inner
            .records
            .get(key)
            .is_some_and(|(value, _)| value == owner.as_bytes())
        {
            inner.records.remove(key);
        }
    }

    fn take(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.lock()
            .records
            .remove(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value)
    }

    fn expire(&self, key: &str, ttl: Duration) {
        if let Some((_, expires)) = self.lock().records.get_mut(key) {
            *expires = Instant::now() + ttl;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_expires_and_takes_once() {
        let store = Store::memory();
        store.put("a", b"1", Duration::from_secs(60)).await.unwrap();
        let read = store
            .read_session("a", Duration::from_secs(60), Freshness::Cached)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.sealed, b"1");
        assert!(read.touched);
        assert_eq!(store.take("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.take("a").await.unwrap(), None);

        store
            .put("b", b"2", Duration::from_millis(1))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let read = store
            .read_session("b", Duration::from_secs(60), Freshness::Cached)
            .await
            .unwrap();
        assert!(read.is_none());
    }

    #[tokio::test]
    async fn memory_store_replace_only_updates_existing_records() {
        let store = Store::memory();
        assert!(
            !store
                .replace("a", b"1", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(store.get("a").await.unwrap(), None);
        store.put("a", b"1", Duration::from_secs(60)).await.unwrap();
        assert!(
            store
                .replace("a", b"2", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(store.get("a").await.unwrap(), Some(b"2".to_vec()));
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
