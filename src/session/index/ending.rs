//! Ending sessions without their cookies: one by its handle, all of a user's (or all but
//! one), those of a provider session, and those a login displaced; their records deleted and
//! their escrowed refresh tokens handed back for revocation.
//!
//! Each end marks its sessions before deleting their records, so a login still being created
//! learns it was ended; an unauthenticated end never leaves a mark that refuses later logins.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

use super::entry::Indexed;
use crate::clock::unix_now;
use crate::session::index_names::Filed;
use crate::session::store::user_index::{IndexedSession, parse_member};
use crate::session::{ActiveSession, Ended, SessionRecord, Sessions, StoreError};

/// Sessions ended at once (their records deleted) by one end of many.
const ENDS_IN_FLIGHT: usize = 32;

/// How long the marks of ends that may overtake a login in progress are kept: longer than a
/// login takes from its code exchange to its session being filed.
const ENDED_MARK_TTL: Duration = Duration::from_secs(900);

impl Sessions {
    /// Ends the session `handle` of `sub`'s user (`count` 0 if that user has no such session).
    pub async fn end_by_handle(&self, sub: &str, handle: &str) -> Result<Ended, StoreError> {
        let user_indexes = self.user_indexes(sub);
        let filed = self.filings_of(&user_indexes, &[handle.to_owned()]).await?;
        let found = self.live_among(&user_indexes, filed, false).await?;
        self.end_indexed(&user_indexes, found).await
    }

    /// Ends every session of `current`'s user but `current`.
    pub async fn end_others(&self, current: &ActiveSession) -> Result<Ended, StoreError> {
        let user_indexes = self.user_indexes(&current.record.user_key());
        let others: Vec<Indexed> = self
            .all_live_under(&user_indexes)
            .await?
            .into_iter()
            .filter(|indexed| indexed.handle != current.record.handle)
            .collect();
        self.end_indexed(&user_indexes, others).await
    }

    /// Ends every session of `sub`.
    pub async fn end_all_of(&self, sub: &str) -> Result<Ended, StoreError> {
        // A login of this user whose ID token was issued before now, still on its way to the
        // index, is ended too (see `still_indexed`).
        let now = unix_now();
        self.store
            .put(
                &self.index_names.current(Filed::UserEnded, sub),
                now.to_string().as_bytes(),
                ENDED_MARK_TTL,
            )
            .await?;
        let user_indexes = self.user_indexes(sub);
        let all = self.all_live_under(&user_indexes).await?;
        self.end_indexed(&user_indexes, all).await
    }

    /// Ends the sessions created in the provider session `sid` (only those of `sub`, when
    /// given), and, for a while, any login in it still on its way to the index: an
    /// authenticated end (a verified logout token).
    pub async fn end_provider_session(
        &self,
        sid: &str,
        sub: Option<&str>,
    ) -> Result<Ended, StoreError> {
        // A login in this provider session still on its way to the index is ended too.
        self.store
            .put(
                &self.index_names.current(Filed::ProviderSessionEnded, sid),
                b"1",
                ENDED_MARK_TTL,
            )
            .await?;
        self.end_indexed_provider_session(sid, sub).await
    }

    /// Ends the sessions already indexed under the provider session `sid`, and nothing more:
    /// an unauthenticated end (front-channel logout) must not leave a mark that refuses later
    /// logins in that provider session (whoever learnt a `sid` could keep its user out), nor
    /// write to Redis for a `sid` nobody has.
    pub async fn end_indexed_provider_session(
        &self,
        sid: &str,
        sub: Option<&str>,
    ) -> Result<Ended, StoreError> {
        let indexes = self.index_names.all(Filed::ProviderSession, sid);
        let reads = indexes
            .iter()
            .map(|index| self.store.provider_session_members(index));
        let members: HashSet<String> = futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let expected_user = sub.map(|sub| self.user_indexes(sub));
        // Each session with the names it is filed under (several, after a rotation).
        let mut filed_as: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for member in &members {
            let Some((user_index, handle)) = parse_member(member) else {
                continue;
            };
            if expected_user
                .as_ref()
                .is_some_and(|expected| !expected.contains(&user_index))
            {
                continue;
            }
            filed_as.entry(handle).or_default().push(user_index);
        }
        // Sessions filed under the same names are ended together (one user's, usually all).
        let mut by_names: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        for (handle, mut user_indexes) in filed_as {
            user_indexes.sort();
            let names = expected_user.clone().unwrap_or(user_indexes);
            by_names.entry(names).or_default().push(handle);
        }
        let mut ended = Ended::default();
        for (user_indexes, handles) in by_names {
            let filed = self.filings_of(&user_indexes, &handles).await?;
            let sessions = self.live_among(&user_indexes, filed, true).await?;
            let these = self.end_indexed(&user_indexes, sessions).await?;
            ended.count += these.count;
            ended.refresh_tokens.extend(these.refresh_tokens);
        }
        Ok(ended)
    }

    /// Ends sessions [`Sessions::index_new`] displaced: their records, the rest of their index
    /// entries, and their escrowed refresh tokens.
    pub(in crate::session) async fn end_displaced(
        &self,
        sub: &str,
        displaced: Vec<IndexedSession>,
    ) -> Result<Ended, StoreError> {
        let sessions = displaced.into_iter().filter_map(Indexed::decode).collect();
        self.end_indexed(&self.user_indexes(sub), sessions).await
    }

    /// Deletes the records of `sessions` (every instance's cache drops them as for a logout)
    /// and their entries under every one of `user_indexes`, and takes their escrowed refresh
    /// tokens.
    async fn end_indexed(
        &self,
        user_indexes: &[String],
        sessions: Vec<Indexed>,
    ) -> Result<Ended, StoreError> {
        let mut ended = Ended::default();
        // Marked first: a session being created that these include learns, once its record
        // is written, that it was ended (and deletes it), whatever the order of the writes.
        let handles: Vec<&str> = sessions
            .iter()
            .map(|indexed| indexed.handle.as_str())
            .collect();
        self.store
            .mark_ending(user_indexes, &handles, unix_now())
            .await?;
        // Many at once (a kill switch on a large index), a bounded number in flight.
        let store = &self.store;
        let keys: Vec<String> = sessions
            .iter()
            .map(|indexed| indexed.entry.record_key.clone())
            .collect();
        let takes = futures_util::stream::iter(keys.into_iter().map(|key| async move {
            let value = store.take(&key).await?;
            Ok::<_, StoreError>((key, value))
        }))
        .buffer_unordered(ENDS_IN_FLIGHT);
        let taken: Vec<(String, Option<Vec<u8>>)> = takes.try_collect().await?;
        for (key, value) in taken {
            ended.count += 1;
            self.drop_held_tokens(&key).await;
            if let Some(value) = value
                && let Some(token) = self.escrowed_token(&key, &value)
            {
                ended.refresh_tokens.push(token);
            }
        }
        self.store
            .unindex_sessions(user_indexes, &handles, &[])
            .await?;
        Ok(ended)
    }

    /// Removes an ended session (a logout) from the indexes; best effort, as stale entries are
    /// pruned by readers anyway.
    pub(in crate::session) async fn unindex(&self, record: &SessionRecord) {
        if record.handle.is_empty() {
            return;
        }
        let provider_sessions = record
            .provider_session_key()
            .map(|sid| self.index_names.all(Filed::ProviderSession, &sid))
            .unwrap_or_default();
        if let Err(error) = self
            .store
            .unindex_sessions(
                &self.user_indexes(&record.user_key()),
                &[record.handle.as_str()],
                &provider_sessions,
            )
            .await
        {
            tracing::debug!(error = %error, "could not remove an ended session from its index");
        }
    }
}
