//! The Redis backend: one connection manager for every command, its Lua scripts, and
//! (optionally) the tracked cache of session records that only this backend can have.
//!
//! It sees only keys and sealed bytes. Every call is bounded by a timeout, and every failure
//! comes back as a [`StoreError`] (a 503 upstream), never as "no such record".

pub mod cache;
pub(super) mod connection;
pub(super) mod sentinel;
mod tls;
pub mod topology;
mod tracking;
pub(super) mod watch_tracking;

use std::sync::Arc;
use std::time::Duration;

use super::{Freshness, SessionRead, StoreError};
use crate::clock::unix_now;
use cache::{CACHED_KEY_PREFIXES, CacheSettings, Cached, Lookup, Opened, RecordCache};
use connection::{RedisConnection, TrackingTarget};
pub use tls::RedisTls;
pub use topology::RedisTopology;

/// Replaces `KEYS[1]` with `ARGV[2]` (expiring in `ARGV[3]` ms) only if it holds `ARGV[1]`.
const REPLACE_IF_UNCHANGED: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
     end return false";

/// Deletes `KEYS[1]` only if it holds `ARGV[1]` (also: releases a lock only for its owner).
const DELETE_IF_UNCHANGED: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('DEL', KEYS[1]) \
     end return 0";

/// Extends `KEYS[1]` to `ARGV[2]` ms from now only if it holds `ARGV[1]` (its owner).
const RENEW_IF_OWNER: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
     end return 0";

/// A Redis connection plus, optionally, the tracked cache of session records.
#[derive(Clone)]
pub struct RedisStore {
    pub(super) conn: RedisConnection,
    cache: Option<Arc<RecordCache>>,
    /// What pushes changes to watched keys (none on a Cluster: watches poll there).
    watches: Option<Arc<watch_tracking::WatchTracker>>,
}

impl RedisStore {
    /// Connects lazily to `topology` (with `tls` for `rediss…` URLs), and starts the tracked
    /// cache if `cache` is set and the topology can keep it exact.
    pub(super) fn connect(
        topology: &RedisTopology,
        tls: &RedisTls,
        cache: Option<CacheSettings>,
    ) -> Result<Self, redis::RedisError> {
        let conn = RedisConnection::open(topology, tls)?;
        let watches = TrackingTarget::for_topology(topology, tls)?
            .map(|target| Arc::new(watch_tracking::WatchTracker::new(target)));
        let cache = match (cache, TrackingTarget::for_topology(topology, tls)?) {
            (Some(settings), Some(target)) => {
                let cache = Arc::new(RecordCache::new(settings));
                tracking::start(&cache, target, conn.clone());
                Some(cache)
            }
            (Some(_), None) => {
                // Each Cluster node reports only its own slots' changes: an exact cache would
                // need a tracking connection per node, followed through every resharding.
                tracing::warn!(
                    "session cache off on Redis Cluster (session.local_cache_entries is ignored): \
                     invalidations would come from each node separately; every call reads Redis"
                );
                None
            }
            (None, _) => None,
        };
        Ok(Self {
            conn,
            cache,
            watches,
        })
    }

    /// The watch tracker that pushes changes of watched keys, `None` on a Cluster (where
    /// watches poll).
    pub(super) fn watch_tracker(&self) -> Option<&Arc<watch_tracking::WatchTracker>> {
        self.watches.as_ref()
    }

    /// `PTTL key` on the data connection: how long the key lives, `None` if it is gone.
    pub(super) async fn remaining(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let millis: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(watch_tracking::remaining_from_pttl(millis))
    }

    /// Sends `commands` together (each on its own, so they may hit different Cluster slots)
    /// and waits for all of them.
    pub(super) async fn run_all(&self, commands: Vec<redis::Cmd>) -> Result<(), StoreError> {
        let sent = commands.into_iter().map(|command| {
            let mut conn = self.conn.clone();
            async move { command.query_async::<redis::Value>(&mut conn).await }
        });
        futures_util::future::try_join_all(sent).await?;
        Ok(())
    }

    /// The tracked cache of session records, if there is one.
    pub(super) fn cache(&self) -> Option<&RecordCache> {
        self.cache.as_deref()
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.conn.ping().await?)
    }

    /// Reads a session record, from the cache when `freshness` allows and it holds one, and
    /// pushes its idle expiry back to `ttl` when asked or due.
    pub(super) async fn read_session(
        &self,
        key: &str,
        ttl: Duration,
        freshness: Freshness,
    ) -> Result<Option<SessionRead>, StoreError> {
        // Taken before the command is sent: a touch sets the expiry at or after this moment.
        let sent_at = unix_now();
        let Some(cache) = &self.cache else {
            let sealed = self.getex(key, ttl).await?;
            return Ok(sealed.map(|sealed| SessionRead {
                sealed: sealed.into(),
                opened: None,
                touched_at: Some(sent_at),
            }));
        };
        let read = match freshness {
            Freshness::Recent => match cache.lookup(key) {
                Lookup::Hit(cached) => {
                    return Ok(Some(SessionRead {
                        sealed: cached.sealed,
                        opened: cached.opened,
                        touched_at: None,
                    }));
                }
                Lookup::Miss(read) => read,
            },
            Freshness::Current => cache.begin_read(key, false),
            Freshness::Touched => cache.begin_read(key, true),
        };
        let sealed: Option<Arc<[u8]>> = if read.touch {
            self.getex(key, ttl).await?
        } else {
            self.get(key).await?
        }
        .map(Arc::from);
        cache.store(key, sealed.as_ref(), read);
        Ok(sealed.map(|sealed| SessionRead {
            sealed,
            opened: None,
            touched_at: read.touch.then_some(sent_at),
        }))
    }

    /// A value that is never touched (a token held for an API), from the tracked cache
    /// when it holds it: kept exact by the same invalidations as session records.
    pub(super) async fn read_untouched(&self, key: &str) -> Result<Option<Cached>, StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(self.get(key).await?.map(Cached::sealed_only));
        };
        let read = match cache.lookup_untouched(key) {
            Lookup::Hit(cached) => return Ok(Some(cached)),
            Lookup::Miss(read) => read,
        };
        let sealed = self.get(key).await?.map(Arc::from);
        cache.store(key, sealed.as_ref(), read);
        Ok(sealed.map(Cached::sealed_only))
    }

    /// Keeps `opened` beside the cached value of `key` while that is still `sealed`.
    pub(super) fn attach(&self, key: &str, sealed: &Arc<[u8]>, opened: Opened) {
        if let Some(cache) = &self.cache {
            cache.attach(key, sealed, opened);
        }
    }

    pub(super) async fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.set(key, value, ttl, None).await?;
        self.forget(key);
        Ok(())
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// `SET key owner PX ttl NX`.
    pub(super) async fn try_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set(key, owner.as_bytes(), ttl, Some("NX")).await
    }

    /// `GETDEL`: never the cache.
    pub(super) async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let taken = redis::cmd("GETDEL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        self.forget_entirely(key);
        Ok(taken)
    }

    pub(super) async fn replace_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let reply: Option<String> = redis::Script::new(REPLACE_IF_UNCHANGED)
            .key(key)
            .arg(expected)
            .arg(value)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        self.forget(key);
        Ok(reply.is_some())
    }

    pub(super) async fn delete_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
    ) -> Result<bool, StoreError> {
        let deleted: i64 = redis::Script::new(DELETE_IF_UNCHANGED)
            .key(key)
            .arg(expected)
            .invoke_async(&mut self.conn.clone())
            .await?;
        self.forget_entirely(key);
        Ok(deleted == 1)
    }

    pub(super) async fn renew_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let renewed: i64 = redis::Script::new(RENEW_IF_OWNER)
            .key(key)
            .arg(owner)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(renewed == 1)
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        self.forget_entirely(key);
        Ok(())
    }

    pub(super) async fn expire(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(millis(ttl))
            .query_async(&mut self.conn.clone())
            .await?;
        self.forget(key);
        Ok(())
    }

    /// `GETEX key PX ttl`: read and reset the expiry in one round trip.
    async fn getex(&self, key: &str, ttl: Duration) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redis::cmd("GETEX")
            .arg(key)
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// `SET key value PX ttl [NX|XX]`; `Ok(false)` when the condition kept it from writing.
    pub(super) async fn set(
        &self,
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
        let reply: Option<String> = command.query_async(&mut self.conn.clone()).await?;
        Ok(reply.is_some())
    }

    /// Drops a cached key (a session, or a token held for an API) this instance just wrote
    /// from the cache, without waiting for Redis to report the change.
    fn forget(&self, key: &str) {
        if let Some(cache) = &self.cache
            && CACHED_KEY_PREFIXES
                .iter()
                .any(|prefix| key.starts_with(prefix))
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

/// Milliseconds for Redis expiry arguments; never 0, which Redis rejects.
pub(super) fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
