//! Finding a user's live sessions: under every name the user has, each session once, only
//! those whose record exists (or is still being created), stale entries removed on the way;
//! "my sessions" and the counts.
//!
//! It never reads more than [`PARTIAL_READ`] sessions of an index too large to read whole
//! when not all are needed, and never ends a session.

use super::entry::{Indexed, merge_filings};
use super::{LIST_LIMIT, SessionList, SessionSummary};
use crate::clock::unix_now;
use crate::session::{ActiveSession, Sessions, StoreError};

/// How long after it was filed a session may still lack its record (it is being created).
const CREATION_GRACE_SECS: u64 = 60;

/// Most sessions read from an index too large to read whole
/// ([`WHOLE_INDEX_FIELDS`](crate::session::store::user_index::WHOLE_INDEX_FIELDS)) when not
/// all of them are needed: to choose what to list, to count a login against the limit.
pub(super) const PARTIAL_READ: usize = 4 * LIST_LIMIT;

impl Sessions {
    /// The live sessions of `current`'s user (at most [`LIST_LIMIT`]: the current one and the
    /// most recently used others), oldest first, the current one marked.
    pub async fn list_for(&self, current: &ActiveSession) -> Result<SessionList, StoreError> {
        let user_indexes = self.user_indexes(&current.record.user_key());
        let (mut filed, complete) = self.filed_under(&user_indexes, Some(PARTIAL_READ)).await?;
        if !filed
            .iter()
            .any(|indexed| indexed.handle == current.record.handle)
        {
            // Not in the part of a large index that was read: the caller's own is always listed.
            filed.extend(
                self.filings_of(&user_indexes, std::slice::from_ref(&current.record.handle))
                    .await?,
            );
        }
        // The current session first, then the most recently used: checked (and listed) in
        // that order, a round at a time, until the list is full.
        filed.sort_by(|a, b| {
            let rank = |indexed: &Indexed| {
                (
                    indexed.handle != current.record.handle,
                    std::cmp::Reverse(indexed.last_seen),
                )
            };
            rank(a).cmp(&rank(b)).then_with(|| a.handle.cmp(&b.handle))
        });
        let mut unchecked = filed.into_iter().peekable();
        let mut live = Vec::new();
        while live.len() < LIST_LIMIT && unchecked.peek().is_some() {
            let round: Vec<Indexed> = unchecked.by_ref().take(LIST_LIMIT).collect();
            live.extend(self.live_among(&user_indexes, round, false).await?);
        }
        let truncated = !complete || live.len() > LIST_LIMIT || unchecked.peek().is_some();
        live.truncate(LIST_LIMIT);
        let mut sessions: Vec<SessionSummary> = live
            .into_iter()
            .map(|indexed| SessionSummary {
                current: indexed.handle == current.record.handle,
                id: indexed.handle,
                created_at: indexed.entry.created_at,
                last_seen_at: indexed.last_seen,
                device: indexed.entry.origin.device,
                network: indexed.entry.origin.network,
            })
            .collect();
        sessions.sort_by_key(|summary| (summary.created_at, summary.id.clone()));
        Ok(SessionList {
            sessions,
            truncated,
        })
    }

    /// How many sessions are live, across every instance (cheap: see the store's index).
    pub async fn count_live(&self) -> Result<u64, StoreError> {
        self.store
            .count_live_sessions(unix_now(), self.recent_uses.interval().as_secs())
            .await
    }

    /// How many sessions `sub` has.
    pub async fn count_of(&self, sub: &str) -> Result<usize, StoreError> {
        let user_indexes = self.user_indexes(sub);
        let (filed, _) = self.filed_under(&user_indexes, None).await?;
        Ok(self.live_among(&user_indexes, filed, false).await?.len())
    }

    /// Every session filed under `user_indexes` whose record exists or that is still being
    /// created (the paths that end sessions end those too).
    pub(super) async fn all_live_under(
        &self,
        user_indexes: &[String],
    ) -> Result<Vec<Indexed>, StoreError> {
        let (filed, _) = self.filed_under(user_indexes, None).await?;
        self.live_among(user_indexes, filed, true).await
    }

    /// The sessions filed under any of `user_indexes` (each once), reading at most
    /// `at_most` from each index too large to read whole; and whether that is all of them.
    /// Entries that do not decode are removed on the way.
    pub(super) async fn filed_under(
        &self,
        user_indexes: &[String],
        at_most: Option<usize>,
    ) -> Result<(Vec<Indexed>, bool), StoreError> {
        let reads = user_indexes
            .iter()
            .map(|user_index| self.store.indexed_sessions(user_index, at_most));
        let mut complete = true;
        let mut filings = Vec::with_capacity(user_indexes.len());
        let mut unreadable = Vec::new();
        for (stored, all) in futures_util::future::try_join_all(reads).await? {
            complete &= all;
            let mut filing = Vec::with_capacity(stored.len());
            for stored in stored {
                let handle = stored.handle.clone();
                match Indexed::decode(stored) {
                    Some(indexed) => filing.push(indexed),
                    None => unreadable.push(handle),
                }
            }
            filings.push(filing);
        }
        let unreadable: Vec<&str> = unreadable.iter().map(String::as_str).collect();
        self.store
            .unindex_sessions(user_indexes, &unreadable, &[])
            .await?;
        Ok((merge_filings(filings), complete))
    }

    /// The sessions `handles` as filed under any of `user_indexes` (each once).
    pub(super) async fn filings_of(
        &self,
        user_indexes: &[String],
        handles: &[String],
    ) -> Result<Vec<Indexed>, StoreError> {
        let reads = user_indexes
            .iter()
            .map(|user_index| self.store.sessions_filed(user_index, handles));
        let filings = futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .map(|stored| stored.into_iter().filter_map(Indexed::decode).collect())
            .collect();
        Ok(merge_filings(filings))
    }

    /// Those of `candidates` whose record still exists (and, with `include_pending`, those
    /// still being created), all filed under `user_indexes`; entries of ended sessions are
    /// removed on the way.
    pub(super) async fn live_among(
        &self,
        user_indexes: &[String],
        candidates: Vec<Indexed>,
        include_pending: bool,
    ) -> Result<Vec<Indexed>, StoreError> {
        let keys: Vec<String> = candidates
            .iter()
            .map(|indexed| indexed.entry.record_key.clone())
            .collect();
        let exists = self.store.exist(&keys).await?;
        let now = unix_now();
        // A session being created is filed before its record exists: within the grace it is
        // pending (ended by the paths that end sessions, neither listed nor pruned).
        let pending = |indexed: &Indexed| indexed.last_seen + CREATION_GRACE_SECS >= now;
        let (live, stale): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .zip(exists)
            .filter(|(indexed, exists)| *exists || include_pending || !pending(indexed))
            .partition(|(indexed, exists)| {
                indexed.expires_at > now && (*exists || pending(indexed))
            });
        let removed: Vec<&str> = stale
            .iter()
            .map(|(indexed, _)| indexed.handle.as_str())
            .collect();
        self.store
            .unindex_sessions(user_indexes, &removed, &[])
            .await?;
        Ok(live.into_iter().map(|(indexed, _)| indexed).collect())
    }
}
