//! Filing a new session before its record is written: the atomic admission within
//! `session.max_per_user` under the user's current name, the sessions filed under their older
//! names counted too, and the check, once the record is written, that nothing ended it meanwhile.
//!
//! It marks the sessions a login displaces, and never ends them: `ending.rs` does.

use super::SessionOrigin;
use super::entry::{IndexEntry, Indexed};
use super::lookup::PARTIAL_READ;
use crate::clock::unix_now;
use crate::session::index_names::Filed;
use crate::session::store::user_index::{
    Admission, Deadline, IndexedSession, NewIndexEntry, WHOLE_INDEX_FIELDS,
};
use crate::session::{SessionRecord, Sessions, StoreError};

impl Sessions {
    /// Files a new session in the indexes (before its record is written); returns the user's
    /// sessions it displaced beyond `session.max_per_user`, already marked as being ended,
    /// for [`Sessions::end_displaced`].
    pub(in crate::session) async fn index_new(
        &self,
        record: &SessionRecord,
        record_key: &str,
        origin: &SessionOrigin,
    ) -> Result<Vec<IndexedSession>, StoreError> {
        if record.handle.is_empty() {
            return Ok(Vec::new());
        }
        let user_indexes = self.user_indexes(&record.user_key());
        let Some((current, older)) = user_indexes.split_first() else {
            return Ok(Vec::new());
        };
        let provider_session_index = origin
            .provider_session
            .as_deref()
            .map(|sid| self.index_names.current(Filed::ProviderSession, sid));
        let entry = IndexEntry {
            record_key: record_key.to_owned(),
            created_at: record.created_at,
            origin: origin.clone(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|error| {
            StoreError::Unavailable(format!("cannot encode index entry: {error}"))
        })?;
        let now = unix_now();
        let admission = self.admission();
        let new = NewIndexEntry {
            user_index: current,
            handle: &record.handle,
            entry: &bytes,
            record_key,
            now,
            idle_deadline: Deadline::of(now, self.idle_timeout.as_secs(), record.expires_at),
            expires_at: record.expires_at,
            provider_session: provider_session_index.as_deref(),
        };
        // The user's other names are asked at the same time: after an upgrade or a key
        // rotation, sessions filed under them count against the limit too.
        let (admitted, elsewhere) = futures_util::future::join(
            self.store.index_session(&new, admission),
            self.store.index_sizes(older),
        )
        .await;
        let admitted = admitted?;
        if admitted.oversized {
            tracing::warn!(
                fields = WHOLE_INDEX_FIELDS,
                "a user's session index is larger than a whole read allows (filed before \
                 session.max_per_user applied, or the limit was lowered): each login of that \
                 user trims one page of it"
            );
        }
        let mut evicted = admitted.evicted;
        if elsewhere?.iter().any(|size| *size > 0) {
            let beyond = self
                .beyond_limit_across(&user_indexes, &record.handle, &evicted, admission)
                .await?;
            evicted.extend(beyond);
        }
        Ok(evicted)
    }

    /// The user's least recently used sessions beyond the limit once the sessions filed under
    /// their other names (an earlier release's, an older key's) are counted too, not counting
    /// `new`, those already `evicted`, and those admitted after `new` (a concurrent login's:
    /// this pass runs outside the atomic admission, and must never end a newer login than the
    /// one it admits); marked as being ended.
    async fn beyond_limit_across(
        &self,
        user_indexes: &[String],
        new: &str,
        evicted: &[IndexedSession],
        admission: Admission,
    ) -> Result<Vec<IndexedSession>, StoreError> {
        let now = unix_now();
        let (filed, _) = self.filed_under(user_indexes, Some(PARTIAL_READ)).await?;
        let admitted_as = filed
            .iter()
            .find(|indexed| indexed.handle == new && indexed.filed.0 == 0)
            .map(|indexed| indexed.filed.1);
        let admitted_later = |indexed: &Indexed| {
            indexed.filed.0 == 0 && admitted_as.is_none_or(|order| indexed.filed.1 > order)
        };
        let mut live: Vec<Indexed> = filed
            .into_iter()
            .filter(|indexed| {
                indexed.handle != new
                    && !admitted_later(indexed)
                    && indexed.ending_since.is_none()
                    && indexed.expires_at > now
                    && indexed.last_seen + admission.unused_for >= now
                    && !evicted.iter().any(|gone| gone.handle == indexed.handle)
            })
            .collect();
        let excess = (live.len() + 1).saturating_sub(admission.max_per_user.max(1));
        if excess == 0 {
            return Ok(Vec::new());
        }
        // Least recently used first; used in the same second: those filed only under older
        // names (not used since the rotation or upgrade) first, then in admission order.
        live.sort_by(|a, b| {
            let rank = |indexed: &Indexed| {
                (
                    indexed.last_seen,
                    std::cmp::Reverse(indexed.filed.0),
                    indexed.filed.1,
                )
            };
            rank(a).cmp(&rank(b)).then_with(|| a.handle.cmp(&b.handle))
        });
        live.truncate(excess);
        let handles: Vec<&str> = live.iter().map(|indexed| indexed.handle.as_str()).collect();
        self.store.mark_ending(user_indexes, &handles, now).await?;
        Ok(live
            .into_iter()
            .filter_map(|indexed| {
                Some(IndexedSession {
                    entry: serde_json::to_vec(&indexed.entry).ok()?,
                    handle: indexed.handle,
                    last_seen: indexed.last_seen,
                    expires_at: indexed.expires_at,
                    ending_since: Some(now),
                    order: indexed.filed.1,
                })
            })
            .collect())
    }

    /// Tests: [`Sessions::beyond_limit_across`] for `sub`'s login `new`, as its admission runs
    /// it; the handles it marks as being ended.
    #[cfg(test)]
    pub(in crate::session) async fn count_across_older_names(
        &self,
        sub: &str,
        new: &str,
    ) -> Vec<String> {
        let admission = self.admission();
        self.beyond_limit_across(&self.user_indexes(sub), new, &[], admission)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|ended| ended.handle)
            .collect()
    }

    /// Whether the session `record` is still filed in its user's index: a creation that finds
    /// it gone was ended meanwhile (a back-channel logout, the user's "end all others").
    ///
    /// Also `false` when, meanwhile, its provider session was ended by a back-channel logout,
    /// or all of its user's sessions were ended after its ID token was issued: those ends may
    /// have read the indexes before this session was filed.
    pub(in crate::session) async fn still_indexed(
        &self,
        record: &SessionRecord,
        origin: &SessionOrigin,
    ) -> Result<bool, StoreError> {
        if record.handle.is_empty() {
            return Ok(true);
        }
        let user_index = self.index_names.current(Filed::User, &record.user_key());
        if !self.store.is_indexed(&user_index, &record.handle).await? {
            return Ok(false);
        }
        if let Some(sid) = &origin.provider_session
            && !self
                .marks(Filed::ProviderSessionEnded, sid)
                .await?
                .is_empty()
        {
            return Ok(false);
        }
        let ended_at = self
            .marks(Filed::UserEnded, &record.user_key())
            .await?
            .into_iter()
            .filter_map(|value| String::from_utf8(value).ok()?.parse::<u64>().ok())
            .max();
        let issued_at = record
            .claims()
            .get("iat")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(record.created_at);
        Ok(ended_at.is_none_or(|ended_at| issued_at > ended_at))
    }

    /// The values of the `marked` marks of `identifier` under each of its names (written
    /// under the current name; an instance not yet rolled may have written an older one).
    async fn marks(&self, marked: Filed, identifier: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let names = self.index_names.all(marked, identifier);
        let reads = names.iter().map(|name| self.store.get(name));
        Ok(futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }
}
