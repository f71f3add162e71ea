//! A user's sessions, found without their cookies: listed for "my sessions", ended from
//! another session, by the provider's back-channel logout, or by the operator.
//!
//! Every session is filed in its user's index (see `store/user_index/`) before its record is
//! written, so no session exists that these paths cannot find. An entry holds no token and
//! nothing that opens or reaches the record without the browser's cookie: the record's key is
//! a hash of the cookie's id, and the record opens only with the cookie's secret. What it does
//! hold is what the user is shown: times, a coarse device, a truncated network.
//!
//! A user's and a provider session's indexes are named by keyed hashes of `sub` and `sid`
//! (see `index_names.rs`): new entries go under the current key's names, and every path here
//! looks under all of them (older ring keys', and the unkeyed names of earlier releases), so
//! listing, ending and the limit see every session through a key rotation and an upgrade.
//! Work is bounded however large an index grows: "my sessions" lists at most [`LIST_LIMIT`],
//! and a login reads at most a few hundred sessions of an index too large to read whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::index_names::Filed;
use super::store::storage_key;
use super::store::user_index::{
    Admission, Deadline, IndexedSession, NewIndexEntry, WHOLE_INDEX_FIELDS, member, parse_member,
};
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

/// "My sessions": the sessions listed (at most [`LIST_LIMIT`]) and whether the user has more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionList {
    /// The current session and the most recently used others, oldest first.
    pub sessions: Vec<SessionSummary>,
    /// Whether the user may have more sessions than listed.
    pub truncated: bool,
}

/// `session.max_per_user` when it is not set: far above what one person uses (a laptop, a
/// phone, a tablet, a few browsers and private windows: rarely more than 20 sessions at once),
/// with room for a shared kiosk or test account on dozens of terminals, and small enough that
/// every login of that user costs Redis well under a millisecond (see
/// `store/user_index/`). At most
/// [`MAX_PER_USER_LIMIT`](crate::session::store::user_index::MAX_PER_USER_LIMIT).
pub const DEFAULT_MAX_PER_USER: usize = 100;

/// Most sessions "my sessions" lists: the current one and the most recently used others.
pub const LIST_LIMIT: usize = 100;

/// Most sessions read from an index too large to read whole ([`WHOLE_INDEX_FIELDS`]) when not
/// all of them are needed: to choose what to list, to count a login against the limit.
const PARTIAL_READ: usize = 4 * LIST_LIMIT;

/// Sessions ended at once (their records deleted) by one end of many.
const ENDS_IN_FLIGHT: usize = 32;

/// A session found in a user's index (under any of the user's names).
struct Indexed {
    handle: String,
    last_seen: u64,
    expires_at: u64,
    ending_since: Option<u64>,
    /// Where in the user's names (0: the current one) and in which order it was filed, as
    /// far as the most current name holding it says.
    filed: (usize, u64),
    entry: IndexEntry,
}

impl Indexed {
    /// The stored session, decoded; `None` when its entry does not decode.
    fn decode(stored: IndexedSession) -> Option<Self> {
        Some(Self {
            entry: serde_json::from_slice(&stored.entry).ok()?,
            handle: stored.handle,
            last_seen: stored.last_seen,
            expires_at: stored.expires_at,
            ending_since: stored.ending_since,
            filed: (0, stored.order),
        })
    }
}

/// How long the marks of ends that may overtake a login in progress are kept: longer than a
/// login takes from its code exchange to its session being filed.
const ENDED_MARK_TTL: Duration = Duration::from_secs(900);

/// The filings of one session under its user's names (in the order of the names), keyed by
/// handle: a session filed under several names is one session, as recently used as its most
/// recent filing says.
fn merge_filings(filings: Vec<Vec<Indexed>>) -> Vec<Indexed> {
    let mut by_handle: HashMap<String, Indexed> = HashMap::new();
    let filings = filings.into_iter().enumerate().flat_map(|(rank, filing)| {
        filing.into_iter().map(move |mut indexed| {
            indexed.filed.0 = rank;
            indexed
        })
    });
    for indexed in filings {
        match by_handle.get_mut(&indexed.handle) {
            Some(known) => {
                known.last_seen = known.last_seen.max(indexed.last_seen);
                known.ending_since = known.ending_since.or(indexed.ending_since);
            }
            None => {
                by_handle.insert(indexed.handle.clone(), indexed);
            }
        }
    }
    by_handle.into_values().collect()
}

impl Sessions {
    /// How a user's index admits a new session here: past how long unused a session counts
    /// as ended already (the idle timeout plus the interval uses are filed at), and the limit.
    fn admission(&self) -> Admission {
        Admission {
            unused_for: (self.idle_timeout + self.recent_uses.interval()).as_secs(),
            max_per_user: self.max_per_user,
        }
    }

    /// Every name `sub`'s sessions may be filed under, the current one first.
    fn user_indexes(&self, sub: &str) -> Vec<String> {
        self.index_names.all(Filed::User, sub)
    }

    /// Files a new session in the indexes (before its record is written); returns the user's
    /// sessions it displaced beyond `session.max_per_user`, already marked as being ended,
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
        let user_indexes = self.user_indexes(&record.sub);
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
    pub(super) async fn count_across_older_names(&self, sub: &str, new: &str) -> Vec<String> {
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
    pub(super) async fn still_indexed(
        &self,
        record: &SessionRecord,
        origin: &SessionOrigin,
    ) -> Result<bool, StoreError> {
        if record.handle.is_empty() {
            return Ok(true);
        }
        let user_index = self.index_names.current(Filed::User, &record.sub);
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
            .marks(Filed::UserEnded, &record.sub)
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

    /// Ends sessions [`Sessions::index_new`] displaced: their records, the rest of their index
    /// entries, and their escrowed refresh tokens.
    pub(super) async fn end_displaced(
        &self,
        sub: &str,
        displaced: Vec<IndexedSession>,
    ) -> Result<Ended, StoreError> {
        let sessions = displaced.into_iter().filter_map(Indexed::decode).collect();
        self.end_indexed(&self.user_indexes(sub), sessions).await
    }

    /// Files that `record`'s session was used at `at`, at most once per touch interval per
    /// instance, in the background: a slow index never delays a request.
    pub(super) fn note_use(&self, record: &SessionRecord, at: u64) {
        if record.handle.is_empty() || !self.recent_uses.due(&record.handle, at) {
            return;
        }
        let store = self.store.clone();
        let user_indexes = self.user_indexes(&record.sub);
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
    pub(super) async fn refile(&self, record: &SessionRecord) -> Result<(), StoreError> {
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
        let user_indexes = self.user_indexes(&record.sub);
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
        if let Some(sid) = record.claims().get("sid").and_then(|sid| sid.as_str()) {
            self.store
                .add_to_provider_session(
                    &self.index_names.current(Filed::ProviderSession, sid),
                    &member(current, &record.handle),
                    keep_for,
                )
                .await?;
        }
        Ok(())
    }

    /// The live sessions of `current`'s user (at most [`LIST_LIMIT`]: the current one and the
    /// most recently used others), oldest first, the current one marked.
    pub async fn list_for(&self, current: &ActiveSession) -> Result<SessionList, StoreError> {
        let user_indexes = self.user_indexes(&current.record.sub);
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

    /// Ends the session `handle` of `sub`'s user (`count` 0 if that user has no such session).
    pub async fn end_by_handle(&self, sub: &str, handle: &str) -> Result<Ended, StoreError> {
        let user_indexes = self.user_indexes(sub);
        let filed = self.filings_of(&user_indexes, &[handle.to_owned()]).await?;
        let found = self.live_among(&user_indexes, filed, false).await?;
        self.end_indexed(&user_indexes, found).await
    }

    /// Ends every session of `current`'s user but `current`.
    pub async fn end_others(&self, current: &ActiveSession) -> Result<Ended, StoreError> {
        let user_indexes = self.user_indexes(&current.record.sub);
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
    async fn all_live_under(&self, user_indexes: &[String]) -> Result<Vec<Indexed>, StoreError> {
        let (filed, _) = self.filed_under(user_indexes, None).await?;
        self.live_among(user_indexes, filed, true).await
    }

    /// The sessions filed under any of `user_indexes` (each once), reading at most
    /// `at_most` from each index too large to read whole; and whether that is all of them.
    /// Entries that do not decode are removed on the way.
    async fn filed_under(
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
    async fn filings_of(
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
    async fn live_among(
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
    pub(super) async fn unindex(&self, record: &SessionRecord) {
        if record.handle.is_empty() {
            return;
        }
        let provider_sessions = record
            .claims()
            .get("sid")
            .and_then(serde_json::Value::as_str)
            .map(|sid| self.index_names.all(Filed::ProviderSession, sid))
            .unwrap_or_default();
        if let Err(error) = self
            .store
            .unindex_sessions(
                &self.user_indexes(&record.sub),
                &[record.handle.as_str()],
                &provider_sessions,
            )
            .await
        {
            tracing::debug!(error = %error, "could not remove an ended session from its index");
        }
    }
}

/// The key that remembers an accepted logout token's `jti` (a random token id, unlike `sub`
/// and `sid`: a plain hash confirms nothing worth hiding).
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
