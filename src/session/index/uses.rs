//! Filing what happens to a session after it is created: its uses (in the background, at
//! most once per touch interval), and its re-filing under the current key's names when it was
//! read under an older key's.
//!
//! It never delays a request on a slow index, and never re-seals a record.

use super::entry::IndexEntry;
use crate::clock::unix_now;
use crate::session::index_names::Filed;
use crate::session::store::user_index::{Deadline, IndexedSession, member};
use crate::session::{SessionRecord, Sessions, StoreError};

impl Sessions {
    /// Files that `record`'s session was used at `at`, at most once per touch interval per
    /// instance, in the background: a slow index never delays a request.
    pub(in crate::session) fn note_use(&self, record: &SessionRecord, at: u64) {
        if record.handle.is_empty() || !self.recent_uses.due(&record.handle, at) {
            return;
        }
        let store = self.store.clone();
        let user_indexes = self.user_indexes(&record.user_key());
        let handle = record.handle.clone();
        let deadline = Deadline::of(at, self.idle_timeout.as_secs(), record.expires_at);
        tokio::spawn(async move {
            // Where it is filed: under the current name, or (filed before an upgrade or a
            // rotation) under an older one.
            for user_index in &user_indexes {
                match store
                    .touch_indexed_session(user_index, &handle, at, deadline)
                    .await
                {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::debug!(error = %error, "could not file a session's last use");
                        return;
                    }
                }
            }
        });
    }

    /// Files `record`'s session under its user's current names too, when it was filed under
    /// an older key's (it was just read under an older key, and may be sealed under the
    /// current one at any moment: once that key is removed, only the current names are
    /// looked up). At most once per touch interval per session on this instance, counted from
    /// a re-file that succeeded: one that failed is tried again at the next read (and that read
    /// must not re-seal, or the session could end up sealed under the current key but filed
    /// only under the older one's names).
    pub(in crate::session) async fn refile(
        &self,
        record: &SessionRecord,
    ) -> Result<(), StoreError> {
        if record.handle.is_empty() || !self.refiled.due(&record.handle, unix_now()) {
            return Ok(());
        }
        let refiled = self.refile_now(record).await;
        if refiled.is_err() {
            self.refiled.forget(&record.handle);
        }
        refiled
    }

    /// [`Sessions::refile`]'s work, every time.
    async fn refile_now(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let user_indexes = self.user_indexes(&record.user_key());
        let Some((current, older)) = user_indexes.split_first() else {
            return Ok(());
        };
        let handle = [record.handle.clone()];
        let keep_for = record.expires_at.saturating_sub(unix_now());
        let mut filed = self.store.sessions_filed(current, &handle).await?;
        if filed.is_empty() {
            for user_index in older {
                filed = self.store.sessions_filed(user_index, &handle).await?;
                if !filed.is_empty() {
                    break;
                }
            }
            let copies: Vec<(IndexedSession, String)> = filed
                .iter()
                .filter_map(|stored| {
                    let entry: IndexEntry = serde_json::from_slice(&stored.entry).ok()?;
                    Some((stored.clone(), entry.record_key))
                })
                .collect();
            self.store
                .merge_indexed_sessions(current, &copies, keep_for)
                .await?;
        }
        if let Some(sid) = record.provider_session_key() {
            self.store
                .add_to_provider_session(
                    &self.index_names.current(Filed::ProviderSession, &sid),
                    &member(current, &record.handle),
                    keep_for,
                )
                .await?;
        }
        Ok(())
    }
}
