//! Reading a user's index and the provider-session index: whole when within
//! [`WHOLE_INDEX_FIELDS`], a page at a time beyond it (every command bounded).
//!
//! It only reads: stale entries it returns are for the caller to check against the session
//! records and remove (through `ending.rs`).

use std::collections::{HashMap, HashSet};

use super::{
    IndexedSession, PAGE_FIELDS, WHOLE_INDEX_FIELDS, entry_fields, indexed_session, sessions_in,
};
use crate::session::store::{Store, StoreError};

impl Store {
    /// How many fields each of `user_indexes` holds (0: none filed there).
    pub async fn index_sizes(&self, user_indexes: &[String]) -> Result<Vec<usize>, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                let indexes = memory.indexes();
                return Ok(user_indexes
                    .iter()
                    .map(|index| indexes.size(index))
                    .collect());
            }
            Store::Redis(redis) => redis,
        };
        let sizes = user_indexes.iter().map(|index| {
            let mut conn = redis.conn.clone();
            async move {
                redis::cmd("HLEN")
                    .arg(index)
                    .query_async::<usize>(&mut conn)
                    .await
            }
        });
        Ok(futures_util::future::try_join_all(sizes).await?)
    }

    /// The entries of a user's index (stale ones included: see the module docs), and whether
    /// that is all of them. An index within [`WHOLE_INDEX_FIELDS`] is read in one command;
    /// a larger one a page at a time (every command bounded), stopping once `at_most`
    /// sessions are read, if given.
    pub async fn indexed_sessions(
        &self,
        user_index: &str,
        at_most: Option<usize>,
    ) -> Result<(Vec<IndexedSession>, bool), StoreError> {
        let redis = match self {
            Store::Memory(memory) => return Ok((memory.indexes().entries(user_index), true)),
            Store::Redis(redis) => redis,
        };
        let mut conn = redis.conn.clone();
        let size: usize = redis::cmd("HLEN")
            .arg(user_index)
            .query_async(&mut conn)
            .await?;
        if size <= WHOLE_INDEX_FIELDS {
            let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                .arg(user_index)
                .query_async(&mut conn)
                .await?;
            return Ok((sessions_in(&fields), true));
        }
        // Page by page: an entry's fields may fall in different pages, so the handles are
        // collected first and each session's fields read together.
        let (mut cursor, mut entries) = (0u64, HashMap::<String, Vec<u8>>::new());
        // (The entries' bytes are read again with their other fields: simpler than joining.)
        loop {
            let (next, page): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(user_index)
                .arg(cursor)
                .arg("MATCH")
                .arg("m:*")
                .arg("COUNT")
                .arg(PAGE_FIELDS)
                .query_async(&mut conn)
                .await?;
            entries.extend(page);
            cursor = next;
            if cursor == 0 || at_most.is_some_and(|at_most| entries.len() >= at_most) {
                break;
            }
        }
        let handles: Vec<String> = entries
            .into_keys()
            .filter_map(|field| field.strip_prefix("m:").map(str::to_owned))
            .collect();
        Ok((
            self.sessions_filed(user_index, &handles).await?,
            cursor == 0,
        ))
    }

    /// The sessions `handles` as the user index `user_index` holds them (those it does not
    /// hold are left out).
    pub async fn sessions_filed(
        &self,
        user_index: &str,
        handles: &[String],
    ) -> Result<Vec<IndexedSession>, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                let wanted: HashSet<&str> = handles.iter().map(String::as_str).collect();
                let mut sessions = memory.indexes().entries(user_index);
                sessions.retain(|session| wanted.contains(session.handle.as_str()));
                return Ok(sessions);
            }
            Store::Redis(redis) => redis,
        };
        let reads = handles.iter().map(|handle| {
            let mut conn = redis.conn.clone();
            async move {
                let fields: [Option<Vec<u8>>; 5] = redis::cmd("HMGET")
                    .arg(user_index)
                    .arg(&entry_fields(handle))
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, StoreError>(indexed_session(
                    handle,
                    fields.each_ref().map(Option::as_ref),
                ))
            }
        });
        Ok(futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Whether session `handle` is in the user index `user_index` and not being ended.
    pub async fn is_indexed(&self, user_index: &str, handle: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(memory) => Ok(memory.indexes().contains(user_index, handle)),
            Store::Redis(redis) => {
                let (entry, ending): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
                    .arg(user_index)
                    .arg(format!("m:{handle}"))
                    .arg(format!("e:{handle}"))
                    .query_async(&mut redis.conn.clone())
                    .await?;
                Ok(entry.is_some() && ending.is_none())
            }
        }
    }

    /// The sessions (as [`member`](super::member)s) filed under one provider session.
    pub async fn provider_session_members(
        &self,
        provider_session: &str,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(memory) => Ok(memory.indexes().provider_session(provider_session)),
            Store::Redis(redis) => Ok(redis::cmd("SMEMBERS")
                .arg(provider_session)
                .query_async(&mut redis.conn.clone())
                .await?),
        }
    }

    /// Which of `keys` exist now (never the cache: an index is pruned by what Redis holds).
    pub async fn exist(&self, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                return Ok(keys.iter().map(|key| memory.get(key).is_some()).collect());
            }
            Store::Redis(redis) => redis,
        };
        let checks = keys.iter().map(|key| {
            let mut conn = redis.conn.clone();
            async move {
                let found: i64 = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await?;
                Ok::<_, StoreError>(found == 1)
            }
        });
        futures_util::future::try_join_all(checks).await
    }
}
