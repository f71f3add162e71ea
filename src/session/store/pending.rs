//! Bounds on logins in progress, so anonymous login starts cannot fill the store.
//!
//! Every pending login is listed in two sorted sets scored by its expiry (unix ms, by
//! Redis's clock): one for
//! all browsers and one per browser. Each is capped: a new login beyond a cap displaces the
//! oldest entries of that set (the browser's own oldest tabs; across all browsers, the logins
//! started longest ago), whose records are deleted with them. Displacing rather than refusing
//! keeps logins working under a flood: only a login slower than the flood's turnover is lost,
//! and its user simply starts again, where a refusing cap would lock everyone out until the
//! flood's entries expire.
//!
//! Each index is trimmed by a one-key Lua script (prune expired, add, pop the excess),
//! atomically, so concurrent starts on any number of instances never leave an index over its
//! cap; no command or pipeline spans two keys, so everything works unchanged on Redis Cluster.
//! A browser's index holds the
//! 64-character hashes of its pending logins (Redis keeps such small sets in its compact
//! encoding); the index of all names each login together with its browser's index, so a login
//! displaced there leaves its browser's index too (otherwise every anonymous start of a flood
//! would leave an index behind for ten minutes). Every key carries a TTL.

use std::time::Duration;

use super::redis::millis;
use super::{Store, StoreError};

/// The index of every pending login, across all browsers and instances.
const ALL_PENDING: &str = "vestibule:pending-logins";

/// The key prefix of pending-login records; a browser index's members are the rest of the key.
pub(super) const LOGIN_KEY_PREFIX: &str = "vestibule:login:";

/// The key prefix of browser indexes.
pub(super) const BROWSER_INDEX_PREFIX: &str = "vestibule:login-browser:";

/// The member for a login in the index of all: `<login hash>:<browser index hash>`.
fn global_member(login: &str, browser_index: &str) -> String {
    let browser = browser_index
        .strip_prefix(BROWSER_INDEX_PREFIX)
        .unwrap_or(browser_index);
    format!("{login}:{browser}")
}

/// Prunes expired entries from the index `KEYS[1]`, adds `ARGV[1]` to expire `ARGV[3]` ms
/// from now, keeps the index alive that long and pops the oldest entries beyond `ARGV[2]`;
/// returns the popped members. Time is Redis's own, so instances with skewed clocks agree.
const ADMIT: &str = "\
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local displaced = {}
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], excess)
  for i = 1, #popped, 2 do displaced[#displaced + 1] = popped[i] end
end
return displaced";

/// `name key [member]`.
fn command(name: &str, key: &str, member: Option<&str>) -> redis::Cmd {
    let mut command = redis::cmd(name);
    command.arg(key);
    if let Some(member) = member {
        command.arg(member);
    }
    command
}

/// How many logins may be in progress.
#[derive(Debug, Clone, Copy)]
pub struct PendingLimits {
    /// Per browser; a new login beyond it displaces that browser's oldest.
    pub per_browser: usize,
    /// In total; a new login beyond it displaces the oldest of all.
    pub total: usize,
}

/// The pending logins a new one displaced to stay within the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Displaced {
    /// The same browser's oldest.
    pub by_browser: usize,
    /// The oldest across all browsers (a sign of a flood when it happens).
    pub by_total: usize,
}

impl Store {
    /// Stores a pending login under `key` for `ttl` within `limits`; `browser_index` is the key
    /// of the starting browser's own index.
    pub async fn put_pending_login(
        &self,
        key: &str,
        sealed: &[u8],
        ttl: Duration,
        browser_index: &str,
        limits: PendingLimits,
    ) -> Result<Displaced, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                return Ok(memory.put_pending_login(key, sealed, ttl, browser_index, limits));
            }
            Store::Redis(redis) => redis,
        };
        let member = key.strip_prefix(LOGIN_KEY_PREFIX).unwrap_or(key);
        let in_all = global_member(member, browser_index);
        let script = redis::Script::new(ADMIT);
        let admit = |index: &str, member: &str, cap: usize| {
            let mut conn = redis.conn.clone();
            let mut invocation = script.key(index);
            invocation.arg(member).arg(cap).arg(millis(ttl));
            async move {
                let popped: Vec<String> = invocation.invoke_async(&mut conn).await?;
                Ok::<_, StoreError>(popped)
            }
        };
        // In this order, so a concurrent start that displaces this login (its browser's
        // other tab) finds its record and both index entries, and deletes all of them.
        redis.set(key, sealed, ttl, None).await?;
        let by_total = admit(ALL_PENDING, &in_all, limits.total).await?;
        let by_browser = admit(browser_index, member, limits.per_browser).await?;
        // The oldest of all leave their browsers' indexes; a browser's oldest leave the
        // index of all; both lose their records. One command per key, sent together: on a
        // Cluster these keys live in different slots, which no pipeline may span.
        let mut cleanup = Vec::new();
        for displaced in &by_total {
            let (login, browser) = displaced.split_once(':').unwrap_or((displaced, ""));
            cleanup.push(command("DEL", &format!("{LOGIN_KEY_PREFIX}{login}"), None));
            cleanup.push(command(
                "ZREM",
                &format!("{BROWSER_INDEX_PREFIX}{browser}"),
                Some(login),
            ));
        }
        for displaced in &by_browser {
            cleanup.push(command(
                "DEL",
                &format!("{LOGIN_KEY_PREFIX}{displaced}"),
                None,
            ));
            cleanup.push(command(
                "ZREM",
                ALL_PENDING,
                Some(&global_member(displaced, browser_index)),
            ));
        }
        redis.run_all(cleanup).await?;
        Ok(Displaced {
            by_browser: by_browser.len(),
            by_total: by_total.len(),
        })
    }

    /// Removes a finished pending login from both indexes.
    pub async fn forget_pending_login(
        &self,
        key: &str,
        browser_index: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(memory) => {
                memory.forget_pending_login(key);
                Ok(())
            }
            Store::Redis(redis) => {
                let member = key.strip_prefix(LOGIN_KEY_PREFIX).unwrap_or(key);
                redis
                    .run_all(vec![
                        command(
                            "ZREM",
                            ALL_PENDING,
                            Some(&global_member(member, browser_index)),
                        ),
                        command("ZREM", browser_index, Some(member)),
                    ])
                    .await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_keeps_pending_logins_within_both_limits_by_displacing_the_oldest() {
        let store = Store::memory();
        let limits = PendingLimits {
            per_browser: 2,
            total: 3,
        };
        let ttl = Duration::from_secs(60);
        let put = |key: &'static str, browser: &'static str| {
            let store = store.clone();
            async move {
                store
                    .put_pending_login(key, b"x", ttl, browser, limits)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(put("l1", "b1").await, Displaced::default());
        put("l2", "b1").await;
        let third = put("l3", "b1").await;
        assert_eq!(third.by_browser, 1);
        assert_eq!(
            store.get("l1").await.unwrap(),
            None,
            "b1's oldest displaced"
        );
        assert!(store.get("l2").await.unwrap().is_some());
        put("l4", "b2").await;
        let fifth = put("l5", "b3").await;
        assert_eq!(
            fifth.by_total, 1,
            "three in progress: the oldest of all goes"
        );
        assert_eq!(store.get("l2").await.unwrap(), None);
        for kept in ["l3", "l4", "l5"] {
            assert!(store.get(kept).await.unwrap().is_some(), "{kept}");
        }
        store.take("l4").await.unwrap();
        store.forget_pending_login("l4", "b2").await.unwrap();
        assert_eq!(
            put("l6", "b4").await,
            Displaced::default(),
            "a finished login frees its place"
        );
    }
}
