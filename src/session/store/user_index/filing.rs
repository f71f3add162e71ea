//! Filing sessions in a user's index: admitting a new login (within `session.max_per_user`,
//! choosing whom it displaces, in one atomic script), copying sessions from another name of the
//! same user, and noting a use.
//!
//! It marks the sessions a login displaces, and never ends them: the caller ends them (and
//! `ending.rs` removes their entries).

use super::live::{LIVE_SESSIONS, LIVE_SET_MARGIN_SECS, count_expired};
use super::scripts::{ADD_LIVE, ADMIT, MERGE, PRUNE_EXPIRED, TOUCH};
use super::{
    Admission, Admitted, Deadline, FIELDS_PER_ENTRY, IndexedSession, NewIndexEntry, PAGE_FIELDS,
    WHOLE_INDEX_FIELDS, member,
};
use crate::session::store::{Store, StoreError};

/// How long a session marked as being ended may stay marked before a login ends it again.
const ENDING_RETRY_SECS: u64 = 60;

impl Store {
    /// Files a new session in its user's index, its provider session's index and the count
    /// (before the session record is written, so no session exists that cannot be found).
    /// Sessions that ended by themselves leave the user's index on the way, and the user's
    /// least recently used sessions beyond the limit are marked in the same atomic step and
    /// returned for the caller to end (and then remove from the indexes).
    pub async fn index_session(
        &self,
        new: &NewIndexEntry<'_>,
        admission: Admission,
    ) -> Result<Admitted, StoreError> {
        let keep_for = new.expires_at.saturating_sub(new.now).max(1);
        let member = member(new.user_index, new.handle);
        let redis = match self {
            Store::Memory(memory) => {
                return Ok(Admitted {
                    evicted: memory.indexes().add(new, &member, admission),
                    oversized: false,
                });
            }
            Store::Redis(redis) => redis,
        };
        let (oversized, admitted): (i64, Vec<Vec<u8>>) = redis::Script::new(ADMIT)
            .key(new.user_index)
            .arg(new.handle)
            .arg(new.entry)
            .arg(new.now)
            .arg(new.expires_at)
            .arg(keep_for)
            .arg(admission.max_per_user.max(1))
            .arg(admission.unused_for)
            .arg(ENDING_RETRY_SECS)
            .arg(WHOLE_INDEX_FIELDS)
            .arg(PAGE_FIELDS)
            .arg(FIELDS_PER_ENTRY)
            .invoke_async(&mut redis.conn.clone())
            .await?;
        // The live set and the provider session's set, together (different Cluster slots).
        let add_live = redis::Script::new(&format!("{PRUNE_EXPIRED}{ADD_LIVE}"));
        let mut live = add_live.key(LIVE_SESSIONS);
        live.arg(new.now)
            .arg(new.idle_deadline.score())
            .arg(new.handle)
            .arg(keep_for + LIVE_SET_MARGIN_SECS);
        // A provider session's index lives as long as its longest-lived member.
        let in_provider_session = async {
            match new.provider_session {
                Some(key) => self.add_to_provider_session(key, &member, keep_for).await,
                None => Ok(()),
            }
        };
        let mut live_conn = redis.conn.clone();
        let (live, in_provider_session) = futures_util::future::join(
            live.invoke_async::<(u64, u64)>(&mut live_conn),
            in_provider_session,
        )
        .await;
        let (idle, absolute) = live?;
        count_expired(idle, absolute);
        in_provider_session?;
        let evicted = admitted
            .chunks(2)
            .filter_map(|pair| match pair {
                [handle, entry] => Some(IndexedSession {
                    handle: String::from_utf8_lossy(handle).into_owned(),
                    entry: entry.clone(),
                    last_seen: 0,
                    expires_at: 0,
                    ending_since: Some(new.now),
                    order: 0,
                }),
                _ => None,
            })
            .collect();
        Ok(Admitted {
            evicted,
            oversized: oversized == 1,
        })
    }

    /// Adds the session `member` to the provider-session index `provider_session`, kept alive
    /// at least `keep_for` seconds (a session re-filed under another name).
    pub async fn add_to_provider_session(
        &self,
        provider_session: &str,
        member: &str,
        keep_for: u64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(memory) => {
                memory
                    .indexes()
                    .add_to_provider_session(provider_session, member);
                Ok(())
            }
            Store::Redis(redis) => {
                let keep = std::time::Duration::from_secs(keep_for.max(1));
                redis.add_keeping(provider_session, member, keep).await
            }
        }
    }

    /// Files `sessions`, read from another index of the same user, in `user_index` too, kept
    /// alive at least `keep_for` seconds (each with its record's key, which the in-memory index
    /// keeps). A session filed there already keeps its entry and admission order; its last use
    /// only moves forward and a mark is never taken away. Returns how many were new there.
    pub async fn merge_indexed_sessions(
        &self,
        user_index: &str,
        sessions: &[(IndexedSession, String)],
        keep_for: u64,
    ) -> Result<usize, StoreError> {
        if sessions.is_empty() {
            return Ok(0);
        }
        let redis = match self {
            Store::Memory(memory) => {
                #[cfg(test)]
                if memory.merge_fails() {
                    return Err(StoreError::Unavailable("injected by a test".into()));
                }
                return Ok(memory.indexes().merge(user_index, sessions));
            }
            Store::Redis(redis) => redis,
        };
        let script = redis::Script::new(MERGE);
        let mut invocation = script.key(user_index);
        invocation.arg(keep_for.max(1));
        for (session, _) in sessions {
            invocation
                .arg(&session.handle)
                .arg(&session.entry)
                .arg(session.last_seen)
                .arg(session.expires_at)
                .arg(
                    session
                        .ending_since
                        .map(|at| at.to_string())
                        .unwrap_or_default(),
                );
        }
        let added: usize = invocation.invoke_async(&mut redis.conn.clone()).await?;
        Ok(added)
    }

    /// Records that a session was used at `at` and now ends, if unused, at `idle_deadline`;
    /// `false` if the user index `user_index` does not hold it.
    pub async fn touch_indexed_session(
        &self,
        user_index: &str,
        handle: &str,
        at: u64,
        idle_deadline: Deadline,
    ) -> Result<bool, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                return Ok(memory
                    .indexes()
                    .touch(user_index, handle, at, idle_deadline));
            }
            Store::Redis(redis) => redis,
        };
        let mut conn = redis.conn.clone();
        let touched: i64 = redis::Script::new(TOUCH)
            .key(user_index)
            .arg(handle)
            .arg(at)
            .invoke_async(&mut conn)
            .await?;
        if touched == 1 {
            // XX: never re-adds a session another instance just ended; GT: never moves back.
            let _: i64 = redis::cmd("ZADD")
                .arg(LIVE_SESSIONS)
                .arg("XX")
                .arg("GT")
                .arg(idle_deadline.score())
                .arg(handle)
                .query_async(&mut conn)
                .await?;
        }
        Ok(touched == 1)
    }
}
