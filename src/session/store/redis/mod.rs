//! The Redis backend: one connection manager for every command, its Lua scripts, and
//! (optionally) the tracked cache of session records that only this backend can have.
//!
//! It sees only keys and sealed bytes. Every call is bounded by a timeout, and every failure
//! comes back as a [`StoreError`] (a 503 upstream), never as "no such record".

pub mod cache;
mod tls;
mod tracking;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};

use super::{Freshness, SessionRead, StoreError};
use crate::clock::unix_now;
use cache::{CacheSettings, Lookup, RecordCache, SESSION_KEY_PREFIX};
pub use tls::RedisTls;

/// Bounds on every Redis call: an outage must turn into a quick 503, not a hung request.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const REDIS_RECONNECT_RETRIES: usize = 2;

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
    pub(super) conn: ConnectionManager,
    cache: Option<Arc<RecordCache>>,
}

impl RedisStore {
    /// Connects lazily to Redis at `url` (with `tls` for `rediss://`), and starts the tracked
    /// cache if `cache` is set.
    pub(super) fn connect(
        url: &str,
        tls: &RedisTls,
        cache: Option<CacheSettings>,
    ) -> Result<Self, redis::RedisError> {
        let client = tls.client(url.into_connection_info()?)?;
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
                let tracking = tls.client(info.set_redis_settings(resp3))?;
                let cache = Arc::new(RecordCache::new(settings));
                tracking::start(&cache, tracking, conn.clone());
                Some(cache)
            }
            None => None,
        };
        Ok(Self { conn, cache })
    }

    /// The tracked cache of session records, if there is one.
    pub(super) fn cache(&self) -> Option<&RecordCache> {
        self.cache.as_deref()
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
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
                sealed,
                touched_at: Some(sent_at),
            }));
        };
        let read = match freshness {
            Freshness::Recent => match cache.lookup(key) {
                Lookup::Hit(sealed) => {
                    return Ok(Some(SessionRead {
                        sealed,
                        touched_at: None,
                    }));
                }
                Lookup::Miss(read) => read,
            },
            Freshness::Current => cache.begin_read(key, false),
            Freshness::Touched => cache.begin_read(key, true),
        };
        let sealed = if read.touch {
            self.getex(key, ttl).await?
        } else {
            self.get(key).await?
        };
        cache.store(key, sealed.as_deref(), read);
        Ok(sealed.map(|sealed| SessionRead {
            sealed,
            touched_at: read.touch.then_some(sent_at),
        }))
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

/// Milliseconds for Redis expiry arguments; never 0, which Redis rejects.
pub(super) fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
