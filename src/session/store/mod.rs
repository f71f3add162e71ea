//! Where sealed records live: Redis, or process memory for a first run.
//!
//! The store sees only opaque keys and sealed bytes; it never holds a plaintext token.
//! Every write carries a TTL, so nothing needs cleaning up. Any Redis failure is reported as
//! [`StoreError::Unavailable`] (a 503 upstream), never as "no such session" (a logout).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};

use super::cache::{self, CacheSettings, Lookup, RecordCache, SESSION_KEY_PREFIX};

mod memory;
mod pending;

pub use memory::MemoryStore;
pub use pending::{Displaced, PendingLimits};

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
    /// Ask Redis and push the idle expiry back now, so the caller knows the exact deadline
    /// Redis enforces (the current user's session details).
    Touched,
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
            Freshness::FromRedis => cache.begin_read(key, false),
            Freshness::Touched => cache.begin_read(key, true),
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
        self.delete_if_unchanged(key, owner.as_bytes())
            .await
            .map(|_| ())
    }

    /// Reads and deletes a record atomically, so it can be used at most once. Always asks
    /// Redis, never the cache: what is taken is what Redis held at that moment.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redis(redis) => {
                let taken = redis::cmd("GETDEL")
                    .arg(key)
                    .query_async(&mut redis.conn.clone())
                    .await?;
                redis.forget_entirely(key);
                Ok(taken)
            }
            Store::Memory(memory) => Ok(memory.take(key)),
        }
    }

    /// Replaces a record only if it still holds exactly `expected` (compare-and-set), so a
    /// writer that lost its lock can never overwrite what the next holder stored, nor
    /// resurrect a deleted record; `false` if it did not write.
    pub async fn replace_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(redis) => {
                let script = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
                     end return false",
                );
                let reply: Option<String> = script
                    .key(key)
                    .arg(expected)
                    .arg(value)
                    .arg(millis(ttl))
                    .invoke_async(&mut redis.conn.clone())
                    .await?;
                redis.forget(key);
                Ok(reply.is_some())
            }
            Store::Memory(memory) => Ok(memory.replace_if_unchanged(key, expected, value, ttl)),
        }
    }

    /// Deletes a record only if it still holds exactly `expected`; `false` if it did not.
    pub async fn delete_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(redis) => {
                let script = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) \
                     end return 0",
                );
                let deleted: i64 = script
                    .key(key)
                    .arg(expected)
                    .invoke_async(&mut redis.conn.clone())
                    .await?;
                redis.forget_entirely(key);
                Ok(deleted == 1)
            }
            Store::Memory(memory) => Ok(memory.delete_if_unchanged(key, expected)),
        }
    }

    /// Extends the lock `key` to `ttl` from now if `owner` still holds it; `false` if it
    /// expired or has another owner.
    pub async fn renew_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(redis) => {
                let script = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
                     end return 0",
                );
                let renewed: i64 = script
                    .key(key)
                    .arg(owner)
                    .arg(millis(ttl))
                    .invoke_async(&mut redis.conn.clone())
                    .await?;
                Ok(renewed == 1)
            }
            Store::Memory(memory) => Ok(memory.renew_lock(key, owner, ttl)),
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
                redis.forget_entirely(key);
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

    /// Drops a key this instance deleted from the cache, with its touch time.
    fn forget_entirely(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.forget_entirely(key);
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
