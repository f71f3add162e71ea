//! A user's sessions, found without their cookies: listed for "my sessions", ended from
//! another session, by the provider's back-channel logout, or by the operator.
//!
//! Every session is filed in its user's index (see `store/user_index.rs`) before its record is
//! written, so no session exists that these paths cannot find. An entry holds no token and
//! nothing that opens or reaches the record without the browser's cookie: the record's key is
//! a hash of the cookie's id, and the record opens only with the cookie's secret. What it does
//! hold is what the user is shown: times, a coarse device, a truncated network.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::user_index::{Admission, Deadline, IndexedSession, NewIndexEntry, parse_member};
use super::store::{compact_storage_key, storage_key};
use super::{ActiveSession, Ended, SessionRecord, Sessions, StoreError};
use crate::clock::unix_now;

/// How long after it was filed a session may still lack its record (it is being created).
const CREATION_GRACE_SECS: u64 = 60;

/// Sessions whose last use this instance filed recently, so it files each at most once per
/// touch interval (bounded; an evicted session is merely filed again).
pub(super) const RECENT_USES: usize = 16_384;

/// Where a session was created: shown in "my sessions", compared for suspicious use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOrigin {
    /// A coarse description of the browser and system ("Firefox on Linux").
    #[serde(rename = "d")]
    pub device: String,
    /// The client's network, truncated ("203.0.113.0/24", "2001:db8:1::/48").
    #[serde(rename = "n")]
    pub network: String,
    /// The browser family alone ("Firefox"); kept in the session record, not in the index.
    #[serde(skip)]
    pub browser_family: String,
    /// The provider's session id (`sid` of the ID token), if it named one.
    #[serde(skip)]
    pub provider_session: Option<String>,
}

/// One session in a user's index, as stored (compactly: keys without their common prefix).
#[derive(Serialize, Deserialize)]
struct IndexEntry {
    /// The record's store key.
    #[serde(rename = "k", with = "record_key")]
    record_key: String,
    /// When it was created (unix seconds).
    #[serde(rename = "c")]
    created_at: u64,
    /// Where it was created.
    #[serde(flatten)]
    origin: SessionOrigin,
}

/// A session record's key, stored as its hash in base64url (43 characters instead of the
/// key's 82).
mod record_key {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    const PREFIX: &str = "vestibule:session:";

    pub fn serialize<S: Serializer>(key: &str, serializer: S) -> Result<S::Ok, S::Error> {
        let hex = key.strip_prefix(PREFIX).unwrap_or(key);
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|at| {
                hex.get(at..at + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect();
        match bytes {
            Some(bytes) => serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes)),
            None => Err(serde::ser::Error::custom("not a session key")),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        let encoded = String::deserialize(deserializer)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(serde::de::Error::custom)?;
        let mut key = String::with_capacity(PREFIX.len() + 2 * bytes.len());
        key.push_str(PREFIX);
        for byte in bytes {
            key.push_str(&format!("{byte:02x}"));
        }
        Ok(key)
    }
}

/// One of the user's sessions, as "my sessions" shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The session's public handle (never the cookie, nor derived from it).
    pub id: String,
    /// When it was created (unix seconds).
    pub created_at: u64,
    /// When it was last used (unix seconds), as precise as the touch interval.
    pub last_seen_at: u64,
    /// A coarse description of the browser and system.
    pub device: String,
    /// The client's network, truncated.
    pub network: String,
    /// Whether this is the session that asked.
    pub current: bool,
}

/// A live session found in an index.
struct Indexed {
    handle: String,
    last_seen: u64,
    expires_at: u64,
    entry: IndexEntry,
}

/// The index key of a user's sessions.
pub(super) fn user_index(sub: &str) -> String {
    compact_storage_key("user", sub.as_bytes())
}

/// How long the marks of ends that may overtake a login in progress are kept: longer than a
/// login takes from its code exchange to its session being filed.
const ENDED_MARK_TTL: Duration = Duration::from_secs(900);

/// The key marking that every session of `sub` was ended (its value: when, unix seconds).
fn user_ended_key(sub: &str) -> String {
    compact_storage_key("user-ended", sub.as_bytes())
}

/// The key marking that the provider session `sid` was ended by a back-channel logout.
fn provider_session_ended_key(sid: &str) -> String {
    compact_storage_key("sid-ended", sid.as_bytes())
}

/// The index key of a provider session's sessions.
fn provider_session_index(sid: &str) -> String {
    compact_storage_key("sid", sid.as_bytes())
}

impl Sessions {
    /// Files a new session in the indexes (before its record is written); returns the user's
    /// sessions it displaced beyond `session.max_per_user`, already out of the user's index,
    /// for [`Sessions::end_displaced`].
    pub(super) async fn index_new(
        &self,
        record: &SessionRecord,
        record_key: &str,
        origin: &SessionOrigin,
    ) -> Result<Vec<IndexedSession>, StoreError> {
        if record.handle.is_empty() {
            return Ok(Vec::new());
        }
        let user_index = user_index(&record.sub);
        let provider_session_index = origin
            .provider_session
            .as_deref()
            .map(provider_session_index);
        let entry = IndexEntry {
            record_key: record_key.to_owned(),
            created_at: record.created_at,
            origin: origin.clone(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|error| {
            StoreError::Unavailable(format!("cannot encode index entry: {error}"))
        })?;
        let now = unix_now();
        self.store
            .index_session(
                &NewIndexEntry {
                    user_index: &user_index,
                    handle: &record.handle,
                    entry: &bytes,
                    record_key,
                    now,
                    idle_deadline: Deadline::of(
                        now,
                        self.idle_timeout.as_secs(),
                        record.expires_at,
                    ),
                    expires_at: record.expires_at,
                    provider_session: provider_session_index.as_deref(),
                },
                Admission {
                    unused_for: (self.idle_timeout + self.recent_uses.interval()).as_secs(),
                    max_per_user: self.max_per_user,
                },
            )
            .await
    }

    /// Whether the session `record` is still filed in its user's index: a creation that finds
    /// it gone was ended meanwhile (a back-channel logout, the user's "end all others").
    ///
    /// Also `false` when, meanwhile, its provider session was ended by a back-channel logout,
    /// or all of its user's sessions were ended after its ID token was issued: those ends may
    /// have read the indexes before this session was filed.
    pub(super) async fn still_indexed(
        &self,
        record: &SessionRecord,
        origin: &SessionOrigin,
    ) -> Result<bool, StoreError> {
        if record.handle.is_empty() {
            return Ok(true);
        }
        if !self
            .store
            .is_indexed(&user_index(&record.sub), &record.handle)
            .await?
        {
            return Ok(false);
        }
        if let Some(sid) = &origin.provider_session
            && self
                .store
                .get(&provider_session_ended_key(sid))
                .await?
                .is_some()
        {
            return Ok(false);
        }
        let ended_at = self
            .store
            .get(&user_ended_key(&record.sub))
            .await?
            .and_then(|value| String::from_utf8(value).ok())
            .and_then(|value| value.parse::<u64>().ok());
        let issued_at = record
            .claims()
            .get("iat")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(record.created_at);
        Ok(ended_at.is_none_or(|ended_at| issued_at > ended_at))
    }

    /// Ends sessions [`Sessions::index_new`] displaced: their records, the rest of their index
    /// entries, and their escrowed refresh tokens.
    pub(super) async fn end_displaced(
        &self,
        sub: &str,
        displaced: Vec<IndexedSession>,
    ) -> Result<Ended, StoreError> {
        let sessions = displaced
            .into_iter()
            .filter_map(|stored| {
                Some(Indexed {
                    entry: serde_json::from_slice(&stored.entry).ok()?,
                    handle: stored.handle,
                    last_seen: stored.last_seen,
                    expires_at: stored.expires_at,
                })
            })
            .collect();
        self.end_indexed(&user_index(sub), sessions).await
    }

    /// Files that `record`'s session was used at `at`, at most once per touch interval per
    /// instance, in the background: a slow index never delays a request.
    pub(super) fn note_use(&self, record: &SessionRecord, at: u64) {
        if record.handle.is_empty() || !self.recent_uses.due(&record.handle, at) {
            return;
        }
        let store = self.store.clone();
        let user_index = user_index(&record.sub);
        let handle = record.handle.clone();
        let deadline = Deadline::of(at, self.idle_timeout.as_secs(), record.expires_at);
        tokio::spawn(async move {
            if let Err(error) = store
                .touch_indexed_session(&user_index, &handle, at, deadline)
                .await
            {
                tracing::debug!(error = %error, "could not file a session's last use");
            }
        });
    }

    /// The live sessions of `current`'s user, the current one marked, oldest first.
    pub async fn list_for(
        &self,
        current: &ActiveSession,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let live = self.live_sessions_of(&current.record.sub, false).await?;
        let mut summaries: Vec<SessionSummary> = live
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
        summaries.sort_by_key(|summary| (summary.created_at, summary.id.clone()));
        Ok(summaries)
    }

    /// Ends the session `handle` of `sub`'s user (`count` 0 if that user has no such session).
    pub async fn end_by_handle(&self, sub: &str, handle: &str) -> Result<Ended, StoreError> {
        let found: Vec<Indexed> = self
            .live_sessions_of(sub, false)
            .await?
            .into_iter()
            .filter(|indexed| indexed.handle == handle)
            .collect();
        self.end_indexed(&user_index(sub), found).await
    }

    /// Ends every session of `current`'s user but `current`.
    pub async fn end_others(&self, current: &ActiveSession) -> Result<Ended, StoreError> {
        let sub = &current.record.sub;
        let others: Vec<Indexed> = self
            .live_sessions_of(sub, true)
            .await?
            .into_iter()
            .filter(|indexed| indexed.handle != current.record.handle)
            .collect();
        self.end_indexed(&user_index(sub), others).await
    }

    /// Ends every session of `sub`.
    pub async fn end_all_of(&self, sub: &str) -> Result<Ended, StoreError> {
        // A login of this user whose ID token was issued before now, still on its way to the
        // index, is ended too (see `still_indexed`).
        let now = unix_now();
        self.store
            .put(
                &user_ended_key(sub),
                now.to_string().as_bytes(),
                ENDED_MARK_TTL,
            )
            .await?;
        let all = self.live_sessions_of(sub, true).await?;
        self.end_indexed(&user_index(sub), all).await
    }

    /// Ends the sessions created in the provider session `sid` (only those of `sub`, when
    /// given).
    pub async fn end_provider_session(
        &self,
        sid: &str,
        sub: Option<&str>,
    ) -> Result<Ended, StoreError> {
        // A login in this provider session still on its way to the index is ended too.
        self.store
            .put(&provider_session_ended_key(sid), b"1", ENDED_MARK_TTL)
            .await?;
        let members = self
            .store
            .provider_session_members(&provider_session_index(sid))
            .await?;
        let expected_user = sub.map(user_index);
        let mut by_user: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for member in &members {
            let Some((user, handle)) = parse_member(member) else {
                continue;
            };
            if expected_user
                .as_ref()
                .is_some_and(|expected| *expected != user)
            {
                continue;
            }
            by_user.entry(user).or_default().push(handle);
        }
        let mut ended = Ended::default();
        for (user, handles) in by_user {
            let sessions: Vec<Indexed> = self
                .live_in_index(&user, true)
                .await?
                .into_iter()
                .filter(|indexed| handles.contains(&indexed.handle))
                .collect();
            let these = self.end_indexed(&user, sessions).await?;
            ended.count += these.count;
            ended.refresh_tokens.extend(these.refresh_tokens);
        }
        Ok(ended)
    }

    /// How many sessions are live, across every instance (cheap: see the store's index).
    pub async fn count_live(&self) -> Result<u64, StoreError> {
        self.store
            .count_live_sessions(unix_now(), self.recent_uses.interval().as_secs())
            .await
    }

    /// How many sessions `sub` has.
    pub async fn count_of(&self, sub: &str) -> Result<usize, StoreError> {
        Ok(self.live_sessions_of(sub, false).await?.len())
    }

    async fn live_sessions_of(
        &self,
        sub: &str,
        include_pending: bool,
    ) -> Result<Vec<Indexed>, StoreError> {
        self.live_in_index(&user_index(sub), include_pending).await
    }

    /// The sessions of the index `user_index` whose record still exists (and, with
    /// `include_pending`, those still being created); entries of ended sessions are removed on
    /// the way.
    async fn live_in_index(
        &self,
        user_index: &str,
        include_pending: bool,
    ) -> Result<Vec<Indexed>, StoreError> {
        let stored = self.store.indexed_sessions(user_index).await?;
        let mut candidates = Vec::with_capacity(stored.len());
        let mut unreadable = Vec::new();
        for stored in stored {
            match serde_json::from_slice::<IndexEntry>(&stored.entry) {
                Ok(entry) => candidates.push(Indexed {
                    handle: stored.handle,
                    last_seen: stored.last_seen,
                    expires_at: stored.expires_at,
                    entry,
                }),
                Err(_) => unreadable.push(stored.handle),
            }
        }
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
        let mut removed: Vec<(&str, Option<&str>)> = stale
            .iter()
            .map(|(indexed, _)| (indexed.handle.as_str(), None))
            .collect();
        removed.extend(unreadable.iter().map(|handle| (handle.as_str(), None)));
        self.store.unindex_sessions(user_index, &removed).await?;
        Ok(live.into_iter().map(|(indexed, _)| indexed).collect())
    }

    /// Deletes the records of `sessions` (every instance's cache drops them as for a logout)
    /// and their index entries, and takes their escrowed refresh tokens.
    async fn end_indexed(
        &self,
        user_index: &str,
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
            .mark_ending(user_index, &handles, unix_now())
            .await?;
        for indexed in &sessions {
            let key = &indexed.entry.record_key;
            ended.count += 1;
            if let Some(value) = self.store.take(key).await?
                && let Some(token) = self.escrowed_token(key, &value)
            {
                ended.refresh_tokens.push(token);
            }
        }
        let removed: Vec<(&str, Option<&str>)> = sessions
            .iter()
            .map(|indexed| (indexed.handle.as_str(), None))
            .collect();
        self.store.unindex_sessions(user_index, &removed).await?;
        Ok(ended)
    }

    /// Removes an ended session (a logout) from the indexes; best effort, as stale entries are
    /// pruned by readers anyway.
    pub(super) async fn unindex(&self, record: &SessionRecord) {
        if record.handle.is_empty() {
            return;
        }
        let user_index = user_index(&record.sub);
        let provider_session = record
            .claims()
            .get("sid")
            .and_then(serde_json::Value::as_str)
            .map(provider_session_index);
        if let Err(error) = self
            .store
            .unindex_sessions(
                &user_index,
                &[(record.handle.as_str(), provider_session.as_deref())],
            )
            .await
        {
            tracing::debug!(error = %error, "could not remove an ended session from its index");
        }
    }
}

/// The key that remembers an accepted logout token's `jti`.
fn logout_token_key(jti: &str) -> String {
    storage_key("logout-token", jti.as_bytes())
}

/// Clock skew added to a logout token's replay record, beyond its own acceptable window.
const REPLAY_MARGIN_SECS: u64 = 60;

impl Sessions {
    /// Records a back-channel logout token's `jti` until the token stops being acceptable
    /// (`SET NX`); `false` if it was already recorded (a replay).
    pub async fn accept_logout_token(
        &self,
        jti: &str,
        acceptable_until: u64,
    ) -> Result<bool, StoreError> {
        let ttl = acceptable_until.saturating_sub(unix_now()) + REPLAY_MARGIN_SECS;
        self.store
            .try_lock(&logout_token_key(jti), "accepted", Duration::from_secs(ttl))
            .await
    }

    /// Forgets an accepted `jti` whose logout did not complete, so the provider's retry works.
    pub async fn forget_logout_token(&self, jti: &str) {
        if let Err(error) = self.store.delete(&logout_token_key(jti)).await {
            tracing::debug!(error = %error, "could not forget a logout token's jti");
        }
    }
}
