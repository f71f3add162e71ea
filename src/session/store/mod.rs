//! Where sealed records live: Redis ([`redis`]), or process memory (`memory.rs`) for a first run.
//!
//! This is the facade the session layer talks to: primitive operations on keys and sealed
//! bytes (read-and-touch, set, compare-and-set, compare-and-delete, `SET NX` locks), each
//! dispatched to a backend. It never holds a plaintext token and knows nothing of what a
//! session means. Every write carries a TTL, so nothing needs cleaning up. Any Redis failure is
//! reported as [`StoreError::Unavailable`] (a 503 upstream), never as "no such session" (a
//! logout).

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::unix_now;

mod key_watch;
mod memory;
mod pending;
pub mod redis;
mod sets;
pub mod user_index;
mod watchers;

pub use key_watch::KeyWatch;
use key_watch::WatchSource;
pub use memory::MemoryStore;
pub use pending::{Displaced, PendingLimits};
pub use redis::cache::{CacheSettings, Cached, Opened, RecordCache};
pub use redis::topology::{SentinelAuth, TopologyError};
pub use redis::{RedisStore, RedisTls, RedisTopology};

/// The store could not answer; the caller must not treat this as a missing record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is unreachable, timed out or answered with an error.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Redis refused our credentials (wrong password or ACL user): a configuration error.
    #[error("session store refused the credentials: {0}")]
    CredentialsRefused(String),
    /// Not a failure of the store: a change made meanwhile, possibly on another instance,
    /// made this operation moot (a session ended while it was being created).
    #[error("a concurrent change won: {0}")]
    Conflict(&'static str),
}

impl From<::redis::RedisError> for StoreError {
    fn from(error: ::redis::RedisError) -> Self {
        // Redis error texts name commands, never values, so they are safe to log.
        let text = format!("{:?}: {}", error.kind(), error);
        let refused = error.kind() == ::redis::ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
        if refused {
            StoreError::CredentialsRefused(text)
        } else {
            StoreError::Unavailable(text)
        }
    }
}

/// A key-value store of sealed records with per-key expiry.
#[derive(Clone)]
pub enum Store {
    /// Redis (shared by every instance).
    Redis(RedisStore),
    /// Process memory (one instance only; lost on restart).
    Memory(Arc<MemoryStore>),
}

/// How current a session read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Recent enough to serve a request: it may trail a change made on another instance by
    /// the moment the store takes to learn of it.
    Recent,
    /// Exactly what the store holds now: the caller is about to act on it (a refresh decision).
    Current,
    /// As [`Freshness::Current`], and this very read pushes the idle expiry back, so the
    /// caller learns the exact deadline the store enforces (the current user's session details).
    Touched,
}

/// A session record as read, and whether (and when) the read pushed its idle expiry back.
pub struct SessionRead {
    /// The sealed record.
    pub sealed: Arc<[u8]>,
    /// What the session layer opened from exactly these bytes earlier and left beside them in
    /// the tracked cache ([`Store::attach`]); `None` when nothing was.
    pub opened: Option<Opened>,
    /// When this read reset the key's expiry to the idle timeout (unix seconds, taken before
    /// the command was sent, so the deadline it implies is never later than the store's), or
    /// `None` if it did not.
    pub touched_at: Option<u64>,
}

impl Store {
    /// Connects lazily to the Redis deployment `topology`; an unreachable Redis is reported
    /// per call, not here. With `cache`, session reads are served from a tracked in-process
    /// cache (see [`redis::cache`]); it needs a Redis that supports `CLIENT TRACKING` and
    /// otherwise stays off, and it is off on a Cluster.
    pub fn redis(
        topology: &RedisTopology,
        tls: &RedisTls,
        cache: Option<CacheSettings>,
    ) -> Result<Self, ::redis::RedisError> {
        Ok(Store::Redis(RedisStore::connect(topology, tls, cache)?))
    }

    /// An empty in-process store.
    pub fn memory() -> Self {
        Store::Memory(Arc::new(MemoryStore::default()))
    }

    /// The tracked cache of session records, if there is one (for tests and diagnostics:
    /// the session layer never asks).
    pub fn cache(&self) -> Option<&RecordCache> {
        match self {
            Store::Redis(redis) => redis.cache(),
            Store::Memory(_) => None,
        }
    }

    /// Watches `key` for changes made anywhere (see [`KeyWatch`]); dropping it stops.
    pub fn watch(&self, key: &str) -> KeyWatch {
        match self {
            Store::Redis(redis) => match redis.watch_tracker() {
                Some(tracker) => {
                    // Registered first: a tracker stopping for want of watches then sees it.
                    let watch = KeyWatch::new(key, WatchSource::Tracked(tracker.clone()));
                    tracker.start();
                    watch
                }
                None => KeyWatch::new(key, WatchSource::Polled(redis.clone())),
            },
            Store::Memory(memory) => KeyWatch::new(key, WatchSource::Memory(memory.clone())),
        }
    }

    /// Checks that the store answers (used at start-up to warn early).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => redis.ping().await,
            Store::Memory(_) => Ok(()),
        }
    }

    /// Reads a session record as current as `freshness` asks, resetting its expiry to `ttl`
    /// from now in the same round trip when the store decides it is due (always for
    /// [`Freshness::Touched`]); the read says whether it did.
    pub async fn read_session(
        &self,
        key: &str,
        ttl: Duration,
        freshness: Freshness,
    ) -> Result<Option<SessionRead>, StoreError> {
        match self {
            Store::Redis(redis) => redis.read_session(key, ttl, freshness).await,
            Store::Memory(memory) => {
                let touched_at = unix_now();
                Ok(memory.get_and_touch(key, ttl).map(|sealed| SessionRead {
                    sealed: sealed.into(),
                    opened: None,
                    touched_at: Some(touched_at),
                }))
            }
        }
    }

    /// Reads a value whose expiry is its own and never pushed back (a token held for an API),
    /// from the in-process cache when it holds it (kept exact by Redis client tracking).
    pub async fn read_untouched(&self, key: &str) -> Result<Option<Cached>, StoreError> {
        match self {
            Store::Redis(redis) => redis.read_untouched(key).await,
            Store::Memory(memory) => Ok(memory.get(key).map(Cached::sealed_only)),
        }
    }

    /// Keeps `opened` (what the session layer opened from `sealed`, the bytes a read of `key`
    /// returned) beside them in the tracked cache, to be dropped with them: at an
    /// invalidation, an eviction, or the cache emptying itself. Nothing is kept when the
    /// cache holds other bytes for `key` by now, or without a tracked cache.
    pub fn attach(&self, key: &str, sealed: &Arc<[u8]>, opened: Opened) {
        if let Store::Redis(redis) = self {
            redis.attach(key, sealed, opened);
        }
    }

    /// Writes a record that expires `ttl` from now, replacing any previous value.
    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => redis.put(key, value, ttl).await,
            Store::Memory(memory) => {
                memory.put(key, value, ttl);
                Ok(())
            }
        }
    }

    /// Reads a record without touching its expiry.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redis(redis) => redis.get(key).await,
            Store::Memory(memory) => Ok(memory.get(key)),
        }
    }

    /// Takes the lock `key` for `ttl` if nobody holds it (`SET NX PX`); `owner` identifies
    /// the holder.
    pub async fn try_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(redis) => redis.try_lock(key, owner, ttl).await,
            Store::Memory(memory) => Ok(memory.try_lock(key, owner, ttl)),
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
            Store::Redis(redis) => redis.renew_lock(key, owner, ttl).await,
            Store::Memory(memory) => Ok(memory.renew_lock(key, owner, ttl)),
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
            Store::Redis(redis) => redis.take(key).await,
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
            Store::Redis(redis) => redis.replace_if_unchanged(key, expected, value, ttl).await,
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
            Store::Redis(redis) => redis.delete_if_unchanged(key, expected).await,
            Store::Memory(memory) => Ok(memory.delete_if_unchanged(key, expected)),
        }
    }

    /// Deletes a record; deleting a missing record is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => redis.delete(key).await,
            Store::Memory(memory) => {
                memory.take(key);
                Ok(())
            }
        }
    }

    /// Shortens a record's remaining lifetime to `ttl` from now.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => redis.expire(key, ttl).await,
            Store::Memory(memory) => {
                memory.expire(key, ttl);
                Ok(())
            }
        }
    }
}

/// The Redis key (and in-memory map key) for an identifier:
/// `vestibule:<kind>:<hex sha256 of the identifier>`, so the store never holds the identifier.
pub fn storage_key(kind: &str, identifier: &[u8]) -> String {
    let digest = Sha256::digest(identifier);
    let mut key = String::with_capacity(11 + kind.len() + 64);
    key.push_str("vestibule:");
    key.push_str(kind);
    key.push(':');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in digest {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    key
}

/// Like [`storage_key`], with the hash in base64url (43 characters, not 64): for the index keys,
/// which are many and whose names Redis keeps in memory beside each one.
pub fn compact_storage_key(kind: &str, identifier: &[u8]) -> String {
    use base64::Engine;
    let digest = Sha256::digest(identifier);
    format!(
        "vestibule:{kind}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_key_is_the_hex_sha256_of_the_identifier() {
        assert_eq!(
            storage_key("session", b"abc"),
            "vestibule:session:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            compact_storage_key("user", b"abc"),
            "vestibule:user:ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
