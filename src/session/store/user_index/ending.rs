//! Ending sessions in the indexes: marking them as being ended (before their records are
//! deleted) and removing them from every index that holds them.
//!
//! It never deletes a session record: the session layer does, between the mark and the
//! removal.

use super::live::LIVE_SESSIONS;
use super::scripts::{MARK_ENDING, REMOVE_FIELDS};
use super::{entry_fields, member};
use crate::session::store::{Store, StoreError};

impl Store {
    /// Removes sessions `handles` from every index of their user (`user_indexes`), from the
    /// count, and from the provider-session indexes `provider_sessions` (as filed under any
    /// of the user's indexes).
    pub async fn unindex_sessions(
        &self,
        user_indexes: &[String],
        handles: &[&str],
        provider_sessions: &[String],
    ) -> Result<(), StoreError> {
        if handles.is_empty() {
            return Ok(());
        }
        let members: Vec<String> = user_indexes
            .iter()
            .flat_map(|user_index| handles.iter().map(|handle| member(user_index, handle)))
            .collect();
        let redis = match self {
            Store::Memory(memory) => {
                memory
                    .indexes()
                    .remove(user_indexes, handles, provider_sessions, &members);
                return Ok(());
            }
            Store::Redis(redis) => redis,
        };
        let fields: Vec<String> = handles.iter().flat_map(|h| entry_fields(h)).collect();
        let remove = redis::Script::new(REMOVE_FIELDS);
        let from_indexes = user_indexes.iter().map(|user_index| {
            let mut invocation = remove.key(user_index);
            invocation.arg(&fields);
            let mut conn = redis.conn.clone();
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        });
        let mut commands = Vec::new();
        for provider_session in provider_sessions {
            let mut forget = redis::cmd("SREM");
            forget.arg(provider_session).arg(&members);
            commands.push(forget);
        }
        let mut live = redis::cmd("ZREM");
        live.arg(LIVE_SESSIONS).arg(handles);
        commands.push(live);
        let (removed, rest) = futures_util::future::join(
            futures_util::future::try_join_all(from_indexes),
            redis.run_all(commands),
        )
        .await;
        removed?;
        rest
    }

    /// Marks sessions as being ended in every index of their user that holds them, before
    /// their records are deleted: a session still being created then sees, once its record is
    /// written, that it must not start (see [`Store::is_indexed`]).
    pub async fn mark_ending(
        &self,
        user_indexes: &[String],
        handles: &[&str],
        now: u64,
    ) -> Result<(), StoreError> {
        if handles.is_empty() {
            return Ok(());
        }
        let redis = match self {
            Store::Memory(memory) => {
                let mut indexes = memory.indexes();
                for user_index in user_indexes {
                    indexes.mark_ending(user_index, handles, now);
                }
                return Ok(());
            }
            Store::Redis(redis) => redis,
        };
        let script = redis::Script::new(MARK_ENDING);
        let marks = user_indexes.iter().map(|user_index| {
            let mut invocation = script.key(user_index);
            invocation.arg(now).arg(handles);
            let mut conn = redis.conn.clone();
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        });
        futures_util::future::try_join_all(marks).await?;
        Ok(())
    }
}
