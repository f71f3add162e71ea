//! Small sets of short names kept for every instance (the ID-token signing algorithms learnt
//! from verified ID tokens): add a member, list the members.
//!
//! One key per set, written by a one-key Lua script (Cluster-safe), always with a TTL that an
//! addition only ever pushes back, so a set outlives the longest-lived thing that depends on it
//! and vanishes once nothing writes it. Not for anything large or read on every request. The
//! provider-session indexes (`user_index/`) are added to the same way ([`RedisStore::add_keeping`]).

use std::time::Duration;

use super::redis::{RedisStore, millis};
use super::{Store, StoreError};

/// Adds `ARGV[1]` to the set `KEYS[1]` and keeps the set at least `ARGV[2]` ms from now (a
/// longer expiry, set by an instance configured with longer sessions, is left alone).
const ADD_KEEPING: &str = "\
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1";

impl RedisStore {
    /// Adds `member` to the set at `key`, which then lives at least `ttl` from now.
    pub(super) async fn add_keeping(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let _: i64 = ::redis::Script::new(ADD_KEEPING)
            .key(key)
            .arg(member)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

impl Store {
    /// Adds `member` to the set at `key`, which then lives at least `ttl` from now.
    pub async fn add_to_set(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Redis(redis) => redis.add_keeping(key, member, ttl).await,
            Store::Memory(memory) => {
                memory.add_to_set(key, member, ttl);
                Ok(())
            }
        }
    }

    /// The members of the set at `key` (none when it does not exist).
    pub async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Redis(redis) => Ok(::redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(&mut redis.conn.clone())
                .await?),
            Store::Memory(memory) => Ok(memory.set_members(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_set_gathers_distinct_members_and_its_expiry_only_grows() {
        let store = Store::memory();
        assert!(store.set_members("s").await.unwrap().is_empty());
        store
            .add_to_set("s", "RS256", Duration::from_secs(60))
            .await
            .unwrap();
        store
            .add_to_set("s", "ES256", Duration::ZERO)
            .await
            .unwrap();
        store
            .add_to_set("s", "RS256", Duration::from_secs(60))
            .await
            .unwrap();
        let mut members = store.set_members("s").await.unwrap();
        members.sort();
        assert_eq!(members, ["ES256", "RS256"]);
        // The addition with no time to live did not cut the set's life short.
        assert_eq!(store.set_members("s").await.unwrap().len(), 2);
        store
            .add_to_set("gone", "RS256", Duration::ZERO)
            .await
            .unwrap();
        assert!(store.set_members("gone").await.unwrap().is_empty());
    }
}
