//! Bounds on logins in progress, so anonymous login starts cannot fill the store.
//!
//! Every pending login is listed in two sorted sets scored by its expiry (unix ms): one for
//! all browsers (capped: past it, new logins are refused) and one per browser (capped: a new
//! login drops that browser's oldest). Expired entries are pruned on each start, so the
//! indexes never outgrow the pending logins they describe. Each command touches one key, so
//! this works unchanged on Redis Cluster; two instances starting logins at the same moment
//! may overshoot a cap by the logins in flight between two round trips, never more.

use std::time::Duration;

use super::{Store, StoreError, millis};

/// The index of every pending login, across all browsers and instances.
const ALL_PENDING: &str = "vestibule:pending-logins";

/// How many logins may be in progress.
#[derive(Debug, Clone, Copy)]
pub struct PendingLimits {
    /// Per browser; a new login beyond it drops that browser's oldest.
    pub per_browser: usize,
    /// In total; a new login beyond it is refused.
    pub total: usize,
}

/// Whether a pending login was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Stored (perhaps after dropping the browser's oldest pending logins).
    Admitted,
    /// Refused: the total number of logins in progress is at its limit.
    Full,
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
    ) -> Result<Admission, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                return Ok(memory.put_pending_login(key, sealed, ttl, browser_index, limits));
            }
            Store::Redis(redis) => redis,
        };
        let now = unix_millis();
        let mut conn = redis.conn.clone();
        let (total, browser): (usize, Vec<String>) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(ALL_PENDING)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZCARD")
            .arg(ALL_PENDING)
            .cmd("ZREMRANGEBYSCORE")
            .arg(browser_index)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGE")
            .arg(browser_index)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        if total >= limits.total {
            return Ok(Admission::Full);
        }
        let expires = now + millis(ttl);
        let mut write = redis::pipe();
        write
            .cmd("SET")
            .arg(key)
            .arg(sealed)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .cmd("ZADD")
            .arg(ALL_PENDING)
            .arg(expires)
            .arg(key)
            .ignore()
            // Every key expires: an index outlives its newest entry by nothing.
            .cmd("PEXPIRE")
            .arg(ALL_PENDING)
            .arg(millis(ttl))
            .ignore()
            .cmd("ZADD")
            .arg(browser_index)
            .arg(expires)
            .arg(key)
            .ignore()
            .cmd("PEXPIRE")
            .arg(browser_index)
            .arg(millis(ttl))
            .ignore();
        for oldest in oldest_beyond(&browser, limits.per_browser) {
            write
                .cmd("DEL")
                .arg(oldest)
                .ignore()
                .cmd("ZREM")
                .arg(ALL_PENDING)
                .arg(oldest)
                .ignore()
                .cmd("ZREM")
                .arg(browser_index)
                .arg(oldest)
                .ignore();
        }
        let () = write.query_async(&mut conn).await?;
        Ok(Admission::Admitted)
    }

    /// Removes a finished pending login from both indexes.
    pub async fn forget_pending_login(
        &self,
        key: &str,
        browser_index: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(memory) => {
                memory.forget_pending_login(key, browser_index);
                Ok(())
            }
            Store::Redis(redis) => {
                let () = redis::pipe()
                    .cmd("ZREM")
                    .arg(ALL_PENDING)
                    .arg(key)
                    .ignore()
                    .cmd("ZREM")
                    .arg(browser_index)
                    .arg(key)
                    .ignore()
                    .query_async(&mut redis.conn.clone())
                    .await?;
                Ok(())
            }
        }
    }
}

/// The entries (oldest first) to drop so that one more fits within `per_browser`.
pub(super) fn oldest_beyond(entries: &[String], per_browser: usize) -> &[String] {
    let excess = (entries.len() + 1).saturating_sub(per_browser);
    &entries[..excess.min(entries.len())]
}

/// Milliseconds since the unix epoch, the scores of the indexes.
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_browser_drops_exactly_its_oldest() {
        let entries: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(oldest_beyond(&entries, 3), ["a"]);
        assert_eq!(oldest_beyond(&entries, 2), ["a", "b"]);
        assert!(oldest_beyond(&entries, 4).is_empty());
        assert_eq!(oldest_beyond(&entries, 1), ["a", "b", "c"]);
        assert!(oldest_beyond(&[], 1).is_empty());
    }

    #[tokio::test]
    async fn memory_store_keeps_pending_logins_within_both_limits() {
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
        assert_eq!(put("l1", "b1").await, Admission::Admitted);
        assert_eq!(put("l2", "b1").await, Admission::Admitted);
        assert_eq!(put("l3", "b1").await, Admission::Admitted);
        assert_eq!(store.get("l1").await.unwrap(), None, "b1's oldest dropped");
        assert!(store.get("l2").await.unwrap().is_some());
        assert_eq!(put("l4", "b2").await, Admission::Admitted);
        assert_eq!(put("l5", "b3").await, Admission::Full, "three in progress");
        assert_eq!(store.get("l5").await.unwrap(), None);
        store.take("l4").await.unwrap();
        store.forget_pending_login("l4", "b2").await.unwrap();
        assert_eq!(put("l5", "b3").await, Admission::Admitted);
    }
}
