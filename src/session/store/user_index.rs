//! The per-user index of sessions, the provider-session index beside it, and the count of
//! live sessions: how a session is found without its cookie (to list a user's sessions, to end
//! them from elsewhere, and for back-channel logout).
//!
//! Redis layout, every key with a TTL and every script on one key (so a Cluster serves it
//! unchanged):
//! - `vestibule:user:<sha256 of sub, base64url>`, a hash: `m:<handle>` → the entry (opaque
//!   bytes here; [`crate::session::index`] defines them, and they hold no token),
//!   `s:<handle>` → when the session was last used and `x:<handle>` → when it ends however it
//!   is used (unix seconds), and `e:<handle>` while a login beyond the limit is ending it. A set
//!   of sessions, never one slot; it lives as long as its longest-lived session.
//! - `vestibule:sid:<sha256 of sid, base64url>`, a set of `<user hash>:<handle>`: the sessions created
//!   in one provider session. A logout takes its member out; other ends leave it to expire
//!   with the set (a member is only ever followed to the user's index, which is exact).
//! - `vestibule:live-sessions`, a sorted set of handles (random, so unique across users)
//!   scored by when each session ends if unused: counting live sessions is `ZCOUNT`, never
//!   `SCAN`.
//!
//! An entry can outlive its session (an idle expiry, a crash between two writes); readers
//! check the session record itself before trusting one, and remove what they find stale.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::{Store, StoreError};

/// The key prefix of per-user indexes.
pub const USER_INDEX_PREFIX: &str = "vestibule:user:";
/// The sorted set of every live session, scored by its idle deadline.
pub const LIVE_SESSIONS: &str = "vestibule:live-sessions";

/// Adds `ARGV[1]` to the set `KEYS[1]` and keeps the set alive at least `ARGV[2]` seconds (an
/// index lives as long as its longest-lived member).
const ADD_MEMBER: &str = "\
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1";

/// Files session `ARGV[1]` (entry `ARGV[2]`, used at `ARGV[3]`, ending by `ARGV[4]`) in the
/// user index `KEYS[1]`, kept alive at least `ARGV[5]` seconds. On the way it removes the
/// entries of sessions that have ended by themselves (past their absolute end, or unused for
/// longer than `ARGV[7]` seconds: the idle timeout plus the filing interval), so a user's index
/// stays as small as their live sessions. With a limit `ARGV[6]` (0: none) it then marks the
/// least recently used other sessions beyond it as being ended (`e:` = now) and returns them as
/// `handle, entry` pairs, with any whose mark is older than `ARGV[8]` seconds (an ending that
/// did not finish: ended again). Marked entries do not count. One key, one atomic step:
/// concurrent logins on any number of instances never leave a user above the limit, nor evict
/// more than needed; a marked session stays findable by every path that ends sessions until its
/// record is deleted.
const ADMIT: &str = "\
local h = ARGV[1]
redis.call('HSET', KEYS[1], 'm:' .. h, ARGV[2], 's:' .. h, ARGV[3], 'x:' .. h, ARGV[4])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
local now, max, unused_for, retry_after = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local all = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #all, 2 do fields[all[i]] = all[i + 1] end
local live, evicted = {}, {}
for field, entry in pairs(fields) do
  local other = string.match(field, '^m:(.*)$')
  if other and other ~= h then
    local seen = tonumber(fields['s:' .. other] or '0')
    local ends = tonumber(fields['x:' .. other] or '0')
    local marked = tonumber(fields['e:' .. other] or '0')
    if ends <= now or seen + unused_for < now then
      redis.call('HDEL', KEYS[1], 'm:' .. other, 's:' .. other, 'x:' .. other, 'e:' .. other)
    elseif marked > 0 then
      if max > 0 and marked + retry_after < now then
        redis.call('HSET', KEYS[1], 'e:' .. other, now)
        evicted[#evicted + 1] = other
        evicted[#evicted + 1] = entry
      end
    else
      live[#live + 1] = {other, seen, entry}
    end
  end
end
if max == 0 then return evicted end
local excess = #live + 1 - max
if excess <= 0 then return evicted end
table.sort(live, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[1] < b[1]
end)
for i = 1, excess do
  redis.call('HSET', KEYS[1], 'e:' .. live[i][1], now)
  evicted[#evicted + 1] = live[i][1]
  evicted[#evicted + 1] = live[i][3]
end
return evicted";

/// Removes up to [`PRUNE_BATCH`] members of the live set `key` whose deadline is before
/// `before` (sessions that ended by themselves); returns how many had reached their idle
/// timeout and how many their absolute end (a score with a fraction: see [`Deadline`]).
const PRUNE_EXPIRED: &str = "\
local function prune(key, before)
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. before, 'WITHSCORES', 'LIMIT', 0, 1000)
  local members, absolute = {}, 0
  for i = 1, #gone, 2 do
    members[#members + 1] = gone[i]
    if tonumber(gone[i + 1]) % 1 ~= 0 then absolute = absolute + 1 end
  end
  if #members > 0 then redis.call('ZREM', key, unpack(members)) end
  return {#members - absolute, absolute}
end
";

/// How much longer than its longest-lived session the live set is kept: past their deadline,
/// members wait to be pruned (and counted) by the next login or scrape, not expired unseen
/// with the whole set.
const LIVE_SET_MARGIN_SECS: u64 = 600;

/// Most expired members one prune removes (the rest go at the next).
pub const PRUNE_BATCH: usize = 1000;

/// Adds handle `ARGV[3]` to the live-session set `KEYS[1]` with deadline score `ARGV[2]`, prunes
/// the members whose deadline passed more than a minute before `ARGV[1]`, and keeps the set
/// alive at least `ARGV[4]` seconds. Returns the pruned counts (idle, absolute).
const ADD_LIVE: &str = "\
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local expired = prune(KEYS[1], tonumber(ARGV[1]) - 60)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return expired";

/// How long a session marked as being ended may stay marked before a login ends it again.
const ENDING_RETRY_SECS: u64 = 60;

/// Moves `s:ARGV[1]` of the index `KEYS[1]` forward to `ARGV[2]` if the entry still exists.
const TOUCH: &str = "\
if redis.call('HEXISTS', KEYS[1], 'm:' .. ARGV[1]) == 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 's:' .. ARGV[1]) or '0')
if tonumber(ARGV[2]) > seen then redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[2]) end
return 1";

/// Counts the members of `KEYS[1]` whose deadline is not before `ARGV[1]`, and prunes those
/// whose deadline passed more than `ARGV[2]` seconds before it (a use is filed at most that
/// late, so a member inside that margin may still be live); returns (live, idle expired,
/// absolute expired).
const COUNT_LIVE: &str = "\
local expired = prune(KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[2]))
return {redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf'), expired[1], expired[2]}";

/// When a session ends if it is not used again, and whether that is its absolute end (else its
/// idle timeout). In the live set the score is the deadline, plus a half for an absolute end:
/// counts and order are the same, and an expiry can be told apart when it is pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// Unix seconds.
    pub at: u64,
    /// Whether `at` is the session's absolute end.
    pub absolute: bool,
}

impl Deadline {
    /// The deadline of a session last used at `last_use`, idle for at most `idle_secs`, ending
    /// at `expires_at` however it is used.
    pub fn of(last_use: u64, idle_secs: u64, expires_at: u64) -> Self {
        let idle_end = last_use.saturating_add(idle_secs);
        Self {
            at: idle_end.min(expires_at),
            absolute: expires_at <= idle_end,
        }
    }

    /// Its score in the live set.
    fn score(self) -> String {
        if self.absolute {
            format!("{}.5", self.at)
        } else {
            self.at.to_string()
        }
    }
}

/// Counts the sessions a prune found expired, by which of their timeouts ended them.
fn count_expired(idle: u64, absolute: u64) {
    let metrics = crate::metrics::metrics();
    metrics.sessions_ended("idle_timeout", usize::try_from(idle).unwrap_or(usize::MAX));
    metrics.sessions_ended(
        "absolute_timeout",
        usize::try_from(absolute).unwrap_or(usize::MAX),
    );
}

/// One session in a user's index, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedSession {
    /// The session's public handle.
    pub handle: String,
    /// The entry's bytes.
    pub entry: Vec<u8>,
    /// When the session was last used (unix seconds).
    pub last_seen: u64,
    /// When the session ends however it is used (unix seconds).
    pub expires_at: u64,
}

/// How a user's index admits a new session: how long unused an indexed session must have been
/// to count as ended already (its idle timeout plus the interval its uses are filed at), and
/// the most sessions one user may have.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Seconds.
    pub unused_for: u64,
    /// Sessions per user (`None`: no limit).
    pub max_per_user: Option<usize>,
}

/// Where one new session is filed.
pub struct NewIndexEntry<'a> {
    /// The user's index key.
    pub user_index: &'a str,
    /// The session's handle.
    pub handle: &'a str,
    /// The entry's bytes.
    pub entry: &'a [u8],
    /// The session record's key (the in-memory index prunes by it).
    pub record_key: &'a str,
    /// Now (unix seconds): the first use.
    pub now: u64,
    /// When the session ends if unused.
    pub idle_deadline: Deadline,
    /// When the session ends however it is used (unix seconds).
    pub expires_at: u64,
    /// The provider-session index key, when the ID token named a `sid`.
    pub provider_session: Option<&'a str>,
}

/// The member naming one session in the shared indexes: `<user hash>:<handle>`.
pub fn member(user_index: &str, handle: &str) -> String {
    let user = user_index
        .strip_prefix(USER_INDEX_PREFIX)
        .unwrap_or(user_index);
    format!("{user}:{handle}")
}

/// The user index key and handle a [`member`] names.
pub fn parse_member(member: &str) -> Option<(String, String)> {
    let (user, handle) = member.split_once(':')?;
    Some((format!("{USER_INDEX_PREFIX}{user}"), handle.to_owned()))
}

impl Store {
    /// Files a new session in its user's index, its provider session's index and the count
    /// (before the session record is written, so no session exists that cannot be found).
    /// Sessions that ended by themselves leave the user's index on the way; with a limit, the
    /// user's least recently used sessions beyond it are marked in the same atomic step and
    /// returned for the caller to end (and then remove from the indexes).
    pub async fn index_session(
        &self,
        new: &NewIndexEntry<'_>,
        admission: Admission,
    ) -> Result<Vec<IndexedSession>, StoreError> {
        let keep_for = new.expires_at.saturating_sub(new.now).max(1);
        let member = member(new.user_index, new.handle);
        let redis = match self {
            Store::Memory(memory) => return Ok(memory.indexes().add(new, &member, admission)),
            Store::Redis(redis) => redis,
        };
        let admitted: Vec<Vec<u8>> = redis::Script::new(ADMIT)
            .key(new.user_index)
            .arg(new.handle)
            .arg(new.entry)
            .arg(new.now)
            .arg(new.expires_at)
            .arg(keep_for)
            .arg(admission.max_per_user.unwrap_or(0))
            .arg(admission.unused_for)
            .arg(ENDING_RETRY_SECS)
            .invoke_async(&mut redis.conn.clone())
            .await?;
        // The live set and the provider session's set, together (different Cluster slots).
        let add_live = redis::Script::new(&format!("{PRUNE_EXPIRED}{ADD_LIVE}"));
        let mut live = add_live.key(LIVE_SESSIONS);
        live.arg(new.now)
            .arg(new.idle_deadline.score())
            .arg(new.handle)
            .arg(keep_for + LIVE_SET_MARGIN_SECS);
        let add_member = redis::Script::new(ADD_MEMBER);
        let in_provider_session = new.provider_session.map(|key| {
            let mut invocation = add_member.key(key);
            invocation.arg(&member).arg(keep_for);
            invocation
        });
        let (mut live_conn, mut member_conn) = (redis.conn.clone(), redis.conn.clone());
        let (live, in_provider_session) =
            futures_util::future::join(live.invoke_async::<(u64, u64)>(&mut live_conn), async {
                match &in_provider_session {
                    Some(invocation) => invocation.invoke_async::<i64>(&mut member_conn).await,
                    None => Ok(0),
                }
            })
            .await;
        let (idle, absolute) = live?;
        count_expired(idle, absolute);
        in_provider_session?;
        Ok(admitted
            .chunks(2)
            .filter_map(|pair| match pair {
                [handle, entry] => Some(IndexedSession {
                    handle: String::from_utf8_lossy(handle).into_owned(),
                    entry: entry.clone(),
                    last_seen: 0,
                    expires_at: 0,
                }),
                _ => None,
            })
            .collect())
    }

    /// Records that a session was used at `at` and now ends, if unused, at `idle_deadline`.
    pub async fn touch_indexed_session(
        &self,
        user_index: &str,
        handle: &str,
        at: u64,
        idle_deadline: Deadline,
    ) -> Result<(), StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                memory
                    .indexes()
                    .touch(user_index, handle, at, idle_deadline);
                return Ok(());
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
        Ok(())
    }

    /// Every entry of a user's index (stale ones included: see the module docs).
    pub async fn indexed_sessions(
        &self,
        user_index: &str,
    ) -> Result<Vec<IndexedSession>, StoreError> {
        let redis = match self {
            Store::Memory(memory) => return Ok(memory.indexes().entries(user_index)),
            Store::Redis(redis) => redis,
        };
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(user_index)
            .query_async(&mut redis.conn.clone())
            .await?;
        let mut sessions: Vec<IndexedSession> = fields
            .iter()
            .filter_map(|(field, entry)| {
                let handle = field.strip_prefix("m:")?;
                let number = |prefix: &str| {
                    fields
                        .get(&format!("{prefix}:{handle}"))
                        .and_then(|value| std::str::from_utf8(value).ok())
                        .and_then(|value| value.parse().ok())
                        .unwrap_or(0)
                };
                Some(IndexedSession {
                    handle: handle.to_owned(),
                    entry: entry.clone(),
                    last_seen: number("s"),
                    expires_at: number("x"),
                })
            })
            .collect();
        sessions.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok(sessions)
    }

    /// Removes sessions from a user's index, the count, and (each with the provider-session
    /// index it was filed in, if any) the provider-session indexes.
    pub async fn unindex_sessions(
        &self,
        user_index: &str,
        removed: &[(&str, Option<&str>)],
    ) -> Result<(), StoreError> {
        if removed.is_empty() {
            return Ok(());
        }
        let redis = match self {
            Store::Memory(memory) => {
                memory.indexes().remove(user_index, removed);
                return Ok(());
            }
            Store::Redis(redis) => redis,
        };
        let mut fields = redis::cmd("HDEL");
        fields.arg(user_index);
        let mut live = redis::cmd("ZREM");
        live.arg(LIVE_SESSIONS);
        let mut commands = Vec::new();
        for (handle, provider_session) in removed {
            fields
                .arg(format!("m:{handle}"))
                .arg(format!("s:{handle}"))
                .arg(format!("x:{handle}"))
                .arg(format!("e:{handle}"));
            let member = member(user_index, handle);
            live.arg(*handle);
            if let Some(provider_session) = provider_session {
                let mut forget = redis::cmd("SREM");
                forget.arg(*provider_session).arg(&member);
                commands.push(forget);
            }
        }
        commands.push(fields);
        commands.push(live);
        redis.run_all(commands).await
    }

    /// Marks sessions of the user index `user_index` as being ended, before their records are
    /// deleted: a session still being created then sees, once its record is written, that it
    /// must not start (see [`Store::is_indexed`]).
    pub async fn mark_ending(
        &self,
        user_index: &str,
        handles: &[&str],
        now: u64,
    ) -> Result<(), StoreError> {
        if handles.is_empty() {
            return Ok(());
        }
        let redis = match self {
            Store::Memory(memory) => {
                memory.indexes().mark_ending(user_index, handles);
                return Ok(());
            }
            Store::Redis(redis) => redis,
        };
        let mut command = redis::cmd("HSET");
        command.arg(user_index);
        for handle in handles {
            command.arg(format!("e:{handle}")).arg(now);
        }
        let _: i64 = command.query_async(&mut redis.conn.clone()).await?;
        Ok(())
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

    /// The sessions (as [`member`]s) filed under one provider session.
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

    /// How many sessions are live at `now` (by the deadlines the index knows; those ended by
    /// expiry drop out as their deadline passes). `ZCOUNT`-cheap, whatever the number.
    /// Sessions whose deadline passed more than `filing_delay` ago (the longest a use may wait
    /// to be filed) are pruned on the way and counted in the metrics, by timeout.
    pub async fn count_live_sessions(
        &self,
        now: u64,
        filing_delay: u64,
    ) -> Result<u64, StoreError> {
        let (live, idle, absolute) = match self {
            Store::Memory(memory) => memory.indexes().count_live(now, filing_delay),
            Store::Redis(redis) => {
                redis::Script::new(&format!("{PRUNE_EXPIRED}{COUNT_LIVE}"))
                    .key(LIVE_SESSIONS)
                    .arg(now)
                    .arg(filing_delay)
                    .invoke_async(&mut redis.conn.clone())
                    .await?
            }
        };
        count_expired(idle, absolute);
        Ok(live)
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

/// How long an in-memory index entry may go without its record before a sweep drops it.
const SWEEP_GRACE_SECS: u64 = 60;

/// One session in the in-memory user index.
struct MemoryEntry {
    record_key: String,
    entry: Vec<u8>,
    last_seen: u64,
    expires_at: u64,
    /// Chosen to be ended by a login beyond the limit (no longer counted against it).
    ending: bool,
}

/// The same indexes in process memory (one instance). Entries of sessions that ended without
/// being removed are dropped when the user's index is next read, and by the count.
#[derive(Default)]
pub(super) struct MemoryIndexes {
    /// User index → handle → (record key, entry, last seen).
    users: HashMap<String, HashMap<String, MemoryEntry>>,
    /// Provider-session index → members.
    provider_sessions: HashMap<String, HashSet<String>>,
    /// Handle → deadline.
    live: HashMap<String, Deadline>,
}

impl MemoryIndexes {
    fn add(
        &mut self,
        new: &NewIndexEntry<'_>,
        member: &str,
        admission: Admission,
    ) -> Vec<IndexedSession> {
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
                ending: false,
            },
        );
        let mut evicted = Vec::new();
        if let Some(max) = admission.max_per_user {
            let mut live: Vec<(u64, String)> = sessions
                .iter()
                .filter(|(handle, entry)| handle.as_str() != new.handle && !entry.ending)
                .map(|(handle, entry)| (entry.last_seen, handle.clone()))
                .collect();
            live.sort();
            let excess = (live.len() + 1).saturating_sub(max);
            for (_, handle) in live.into_iter().take(excess) {
                if let Some(entry) = sessions.get_mut(&handle) {
                    entry.ending = true;
                    evicted.push(IndexedSession {
                        handle,
                        entry: entry.entry.clone(),
                        last_seen: entry.last_seen,
                        expires_at: entry.expires_at,
                    });
                }
            }
        }
        if let Some(provider_session) = new.provider_session {
            self.provider_sessions
                .entry(provider_session.to_owned())
                .or_default()
                .insert(member.to_owned());
        }
        self.live.insert(new.handle.to_owned(), new.idle_deadline);
        evicted
    }

    fn touch(&mut self, user_index: &str, handle: &str, at: u64, idle_deadline: Deadline) {
        let Some(entry) = self
            .users
            .get_mut(user_index)
            .and_then(|sessions| sessions.get_mut(handle))
        else {
            return;
        };
        entry.last_seen = entry.last_seen.max(at);
        if let Some(deadline) = self.live.get_mut(handle)
            && idle_deadline.at > deadline.at
        {
            *deadline = idle_deadline;
        }
    }

    fn entries(&self, user_index: &str) -> Vec<IndexedSession> {
        let mut sessions: Vec<IndexedSession> = self
            .users
            .get(user_index)
            .into_iter()
            .flatten()
            .map(|(handle, entry)| IndexedSession {
                handle: handle.clone(),
                entry: entry.entry.clone(),
                last_seen: entry.last_seen,
                expires_at: entry.expires_at,
            })
            .collect();
        sessions.sort_by(|a, b| a.handle.cmp(&b.handle));
        sessions
    }

    fn remove(&mut self, user_index: &str, removed: &[(&str, Option<&str>)]) {
        for (handle, provider_session) in removed {
            let member = member(user_index, handle);
            if let Some(sessions) = self.users.get_mut(user_index) {
                sessions.remove(*handle);
                if sessions.is_empty() {
                    self.users.remove(user_index);
                }
            }
            if let Some(index) = provider_session
                && let Some(members) = self.provider_sessions.get_mut(*index)
            {
                members.remove(&member);
                if members.is_empty() {
                    self.provider_sessions.remove(*index);
                }
            }
            self.live.remove(*handle);
        }
    }

    fn mark_ending(&mut self, user_index: &str, handles: &[&str]) {
        if let Some(sessions) = self.users.get_mut(user_index) {
            for handle in handles {
                if let Some(entry) = sessions.get_mut(*handle) {
                    entry.ending = true;
                }
            }
        }
    }

    fn contains(&self, user_index: &str, handle: &str) -> bool {
        self.users
            .get(user_index)
            .and_then(|sessions| sessions.get(handle))
            .is_some_and(|entry| !entry.ending)
    }

    fn provider_session(&self, provider_session: &str) -> Vec<String> {
        self.provider_sessions
            .get(provider_session)
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// (live, idle expired, absolute expired), pruning what expired more than `margin`
    /// seconds ago.
    fn count_live(&mut self, now: u64, margin: u64) -> (u64, u64, u64) {
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
    pub(super) fn sweep(&mut self, now: u64, exists: impl Fn(&str) -> bool) {
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
pub(super) struct MemoryIndexLock(Mutex<MemoryIndexes>);

impl MemoryIndexLock {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, MemoryIndexes> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_absolute_when_the_session_ends_before_its_idle_timeout() {
        let idle = Deadline::of(1_000, 600, 10_000);
        assert_eq!(
            (idle.at, idle.absolute, idle.score()),
            (1_600, false, "1600".into())
        );
        let absolute = Deadline::of(9_700, 600, 10_000);
        assert_eq!(
            (absolute.at, absolute.absolute, absolute.score()),
            (10_000, true, "10000.5".into())
        );
    }

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
