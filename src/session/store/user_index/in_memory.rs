//! The user, provider-session and live-session indexes in process memory, for the in-memory
//! store (one instance): the same rules as the Redis scripts, under one lock.
//!
//! It never outlives its process, and never holds a session record: a sweep drops the entries
//! whose record is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::{Admission, Deadline, IndexedSession, NewIndexEntry, member};

/// How long an in-memory index entry may go without its record before a sweep drops it.
const SWEEP_GRACE_SECS: u64 = 60;

/// One session in the in-memory user index.
struct MemoryEntry {
    record_key: String,
    entry: Vec<u8>,
    last_seen: u64,
    expires_at: u64,
    /// Its admission order (across all users: the order within each user is what counts).
    order: u64,
    /// When a path that ends sessions chose it (no longer counted against the limit).
    ending_since: Option<u64>,
}

impl MemoryEntry {
    fn indexed(&self, handle: &str) -> IndexedSession {
        IndexedSession {
            handle: handle.to_owned(),
            entry: self.entry.clone(),
            last_seen: self.last_seen,
            expires_at: self.expires_at,
            ending_since: self.ending_since,
            order: self.order,
        }
    }
}

/// The same indexes in process memory (one instance). Entries of sessions that ended without
/// being removed are dropped when the user's index is next read, and by the count.
#[derive(Default)]
pub(in crate::session::store) struct MemoryIndexes {
    /// User index → handle → (record key, entry, last seen, …).
    users: HashMap<String, HashMap<String, MemoryEntry>>,
    /// Provider-session index → members.
    provider_sessions: HashMap<String, HashSet<String>>,
    /// Handle → deadline.
    live: HashMap<String, Deadline>,
    /// Sessions admitted so far (the next admission order).
    admitted: u64,
}

impl MemoryIndexes {
    /// Files `new` (see [`Store::index_session`](crate::session::store::Store::index_session)); returns the sessions it marked.
    pub(super) fn add(
        &mut self,
        new: &NewIndexEntry<'_>,
        member: &str,
        admission: Admission,
    ) -> Vec<IndexedSession> {
        self.admitted += 1;
        let order = self.admitted;
        let sessions = self.users.entry(new.user_index.to_owned()).or_default();
        // Sessions that ended by themselves leave (their records expired with them).
        sessions.retain(|handle, entry| {
            handle.as_str() == new.handle
                || (entry.expires_at > new.now && entry.last_seen + admission.unused_for >= new.now)
        });
        sessions.insert(
            new.handle.to_owned(),
            MemoryEntry {
                record_key: new.record_key.to_owned(),
                entry: new.entry.to_vec(),
                last_seen: new.now,
                expires_at: new.expires_at,
                order,
                ending_since: None,
            },
        );
        // Least recently used first; used in the same second: admitted first, first.
        let mut live: Vec<(u64, u64, String)> = sessions
            .iter()
            .filter(|(handle, entry)| handle.as_str() != new.handle && entry.ending_since.is_none())
            .map(|(handle, entry)| (entry.last_seen, entry.order, handle.clone()))
            .collect();
        live.sort();
        let excess = (live.len() + 1).saturating_sub(admission.max_per_user.max(1));
        let mut evicted = Vec::new();
        for (_, _, handle) in live.into_iter().take(excess) {
            if let Some(entry) = sessions.get_mut(&handle) {
                entry.ending_since = Some(new.now);
                evicted.push(entry.indexed(&handle));
            }
        }
        if let Some(provider_session) = new.provider_session {
            self.add_to_provider_session(provider_session, member);
        }
        self.live.insert(new.handle.to_owned(), new.idle_deadline);
        evicted
    }

    /// Adds `member` to the provider-session index `provider_session`.
    pub(super) fn add_to_provider_session(&mut self, provider_session: &str, member: &str) {
        self.provider_sessions
            .entry(provider_session.to_owned())
            .or_default()
            .insert(member.to_owned());
    }

    /// Files `sessions` from another index of the same user; how many were new here.
    pub(super) fn merge(
        &mut self,
        user_index: &str,
        sessions: &[(IndexedSession, String)],
    ) -> usize {
        let mut added = 0;
        for (session, record_key) in sessions {
            self.admitted += 1;
            let order = self.admitted;
            let filed = self.users.entry(user_index.to_owned()).or_default();
            let entry = filed.entry(session.handle.clone()).or_insert_with(|| {
                added += 1;
                MemoryEntry {
                    record_key: record_key.clone(),
                    entry: session.entry.clone(),
                    last_seen: session.last_seen,
                    expires_at: session.expires_at,
                    order,
                    ending_since: None,
                }
            });
            entry.last_seen = entry.last_seen.max(session.last_seen);
            entry.ending_since = entry.ending_since.or(session.ending_since);
        }
        added
    }

    /// Moves a session's last use and idle deadline forward; `false` if not filed here.
    pub(super) fn touch(
        &mut self,
        user_index: &str,
        handle: &str,
        at: u64,
        idle_deadline: Deadline,
    ) -> bool {
        let Some(entry) = self
            .users
            .get_mut(user_index)
            .and_then(|sessions| sessions.get_mut(handle))
        else {
            return false;
        };
        entry.last_seen = entry.last_seen.max(at);
        if let Some(deadline) = self.live.get_mut(handle)
            && idle_deadline.at > deadline.at
        {
            *deadline = idle_deadline;
        }
        true
    }

    /// How many sessions `user_index` holds.
    pub(super) fn size(&self, user_index: &str) -> usize {
        self.users.get(user_index).map_or(0, HashMap::len)
    }

    /// Every session `user_index` holds, by handle.
    pub(super) fn entries(&self, user_index: &str) -> Vec<IndexedSession> {
        let mut sessions: Vec<IndexedSession> = self
            .users
            .get(user_index)
            .into_iter()
            .flatten()
            .map(|(handle, entry)| entry.indexed(handle))
            .collect();
        sessions.sort_by(|a, b| a.handle.cmp(&b.handle));
        sessions
    }

    /// Removes `handles` from the user indexes, `members` from the provider-session indexes.
    pub(super) fn remove(
        &mut self,
        user_indexes: &[String],
        handles: &[&str],
        provider_sessions: &[String],
        members: &[String],
    ) {
        for user_index in user_indexes {
            if let Some(sessions) = self.users.get_mut(user_index) {
                for handle in handles {
                    sessions.remove(*handle);
                }
                if sessions.is_empty() {
                    self.users.remove(user_index);
                }
            }
        }
        for index in provider_sessions {
            if let Some(filed) = self.provider_sessions.get_mut(index) {
                for member in members {
                    filed.remove(member);
                }
                if filed.is_empty() {
                    self.provider_sessions.remove(index);
                }
            }
        }
        for handle in handles {
            self.live.remove(*handle);
        }
    }

    /// Marks `handles` of `user_index` as being ended at `now`.
    pub(super) fn mark_ending(&mut self, user_index: &str, handles: &[&str], now: u64) {
        if let Some(sessions) = self.users.get_mut(user_index) {
            for handle in handles {
                if let Some(entry) = sessions.get_mut(*handle) {
                    entry.ending_since = Some(now);
                }
            }
        }
    }

    /// Whether `handle` is filed in `user_index` and not being ended.
    pub(super) fn contains(&self, user_index: &str, handle: &str) -> bool {
        self.users
            .get(user_index)
            .and_then(|sessions| sessions.get(handle))
            .is_some_and(|entry| entry.ending_since.is_none())
    }

    /// The members of the provider-session index `provider_session`.
    pub(super) fn provider_session(&self, provider_session: &str) -> Vec<String> {
        self.provider_sessions
            .get(provider_session)
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// (live, idle expired, absolute expired), pruning what expired more than `margin`
    /// seconds ago.
    pub(super) fn count_live(&mut self, now: u64, margin: u64) -> (u64, u64, u64) {
        let (mut idle, mut absolute) = (0, 0);
        self.live.retain(|_, deadline| {
            let kept = deadline.at.saturating_add(margin) >= now;
            if !kept {
                *if deadline.absolute {
                    &mut absolute
                } else {
                    &mut idle
                } += 1;
            }
            kept
        });
        let live = self
            .live
            .values()
            .filter(|deadline| deadline.at >= now)
            .count();
        (live as u64, idle, absolute)
    }

    /// Drops the entries whose record is gone (`exists` says) and that were filed a while ago
    /// (a session being created is filed before its record is written), so a long-running
    /// instance's index does not keep every session it ever saw.
    pub(in crate::session::store) fn sweep(&mut self, now: u64, exists: impl Fn(&str) -> bool) {
        let mut removed = Vec::new();
        for (user_index, sessions) in &self.users {
            for (handle, entry) in sessions {
                if entry.last_seen + SWEEP_GRACE_SECS < now && !exists(&entry.record_key) {
                    removed.push((user_index.clone(), handle.clone()));
                }
            }
        }
        for (user_index, handle) in removed {
            let member = member(&user_index, &handle);
            if let Some(sessions) = self.users.get_mut(&user_index) {
                sessions.remove(&handle);
                if sessions.is_empty() {
                    self.users.remove(&user_index);
                }
            }
            self.live.remove(&handle);
            self.provider_sessions.retain(|_, members| {
                members.remove(&member);
                !members.is_empty()
            });
        }
    }
}

/// The lock around [`MemoryIndexes`].
#[derive(Default)]
pub(in crate::session::store) struct MemoryIndexLock(Mutex<MemoryIndexes>);

impl MemoryIndexLock {
    /// The indexes; a lock poisoned by a panic elsewhere is taken all the same.
    pub(in crate::session::store) fn lock(&self) -> std::sync::MutexGuard<'_, MemoryIndexes> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_sessions_are_told_apart_by_timeout_when_pruned() {
        let mut indexes = MemoryIndexes::default();
        indexes
            .live
            .insert("idle".into(), Deadline::of(0, 100, 1_000));
        indexes
            .live
            .insert("absolute".into(), Deadline::of(950, 100, 1_000));
        indexes
            .live
            .insert("live".into(), Deadline::of(1_900, 100, 5_000));
        assert_eq!(indexes.count_live(2_000, 0), (1, 1, 1));
        assert_eq!(indexes.count_live(2_000, 0), (1, 0, 0), "counted once");
        indexes
            .live
            .insert("lately".into(), Deadline::of(1_850, 100, 5_000));
        assert_eq!(
            indexes.count_live(2_000, 60),
            (1, 0, 0),
            "not live, but within the filing delay: kept, not counted yet"
        );
        assert_eq!(indexes.count_live(2_100, 60), (0, 2, 0));
    }
}
