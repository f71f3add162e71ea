//! The per-user index of sessions, the provider-session index beside it, and the count of
//! live sessions: how a session is found without its cookie (to list a user's sessions, to end
//! them from elsewhere, and for back-channel logout).
//!
//! Redis layout, every key with a TTL and every script on one key (so a Cluster serves it
//! unchanged):
//! - `vestibule:user:<name of sub>`, a hash: `m:<handle>` → the entry (opaque bytes here;
//!   [`crate::session::index`] defines them, and they hold no token), `s:<handle>` → when the
//!   session was last used and `x:<handle>` → when it ends however it is used (unix seconds),
//!   `o:<handle>` → its admission order in this index (from the counter `#n`), and
//!   `e:<handle>` while a path that ends sessions is ending it. A set of sessions, never one
//!   slot; it lives as long as its longest-lived session.
//! - `vestibule:sid:<name of sid>`, a set of `<user index name>:<handle>`: the sessions created
//!   in one provider session. A logout takes its member out; other ends leave it to expire
//!   with the set (a member is only ever followed to the user's index, which is exact).
//! - `vestibule:live-sessions`, a sorted set of handles (random, so unique across users)
//!   scored by when each session ends if unused: counting live sessions is `ZCOUNT`, never
//!   `SCAN`.
//!
//! The names are chosen by the session layer (`session/index_names.rs`); this module only
//! keeps what is filed under them.
//!
//! Bounded work: a user's index holds at most their sessions and as many being ended (the
//! limit `session.max_per_user`, at most [`MAX_PER_USER_LIMIT`]), so it is read, and a login
//! admitted, in one step while it is within [`WHOLE_INDEX_FIELDS`]. An index beyond that (one
//! filed before the limit existed, or after the limit was lowered) is never read whole in one
//! command or script: it is read a page at a time, and each login trims one page of it, so no
//! user's index can stall Redis (single-threaded) for everyone else.
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

/// The highest `session.max_per_user`: what keeps a whole index, and so every login's
/// admission, small (see [`WHOLE_INDEX_FIELDS`]).
pub const MAX_PER_USER_LIMIT: usize = 1_000;

/// The fields one session takes in a user's index (`<prefix>:<handle>`): its entry, last use,
/// end, being-ended mark and admission order, in the order [`indexed_session`] reads them.
const ENTRY_FIELDS: [&str; 5] = ["m", "s", "x", "e", "o"];

/// Fields one session takes in a user's index at most.
const FIELDS_PER_ENTRY: usize = ENTRY_FIELDS.len();

/// The largest user index read or admitted in one step (`HGETALL`, the admission script):
/// what a user at [`MAX_PER_USER_LIMIT`] holds at most (their sessions, as many being ended,
/// and 64 logins at once). About 7 ms of Redis time at the most; beyond it, pages.
pub const WHOLE_INDEX_FIELDS: usize = FIELDS_PER_ENTRY * (2 * MAX_PER_USER_LIMIT + 64);

/// Fields one page of a larger index spans (`HSCAN … COUNT`): about 200 sessions.
const PAGE_FIELDS: usize = 1_000;

/// Files session `ARGV[1]` (entry `ARGV[2]`, used at `ARGV[3]`, ending by `ARGV[4]`) in the
/// user index `KEYS[1]`, after every session filed there before (its admission order), kept
/// alive at least `ARGV[5]` seconds. On the way it removes the entries of sessions that have
/// ended by themselves (past their absolute end, or unused for longer than `ARGV[7]` seconds:
/// the idle timeout plus the filing interval), so a user's index stays as small as their live
/// sessions. It then marks the least recently used other sessions beyond the limit `ARGV[6]`
/// as being ended (`e:` = now) and returns them as `handle, entry` pairs, with any whose mark
/// is older than `ARGV[8]` seconds (an ending that did not finish: ended again). Marked
/// entries do not count. Sessions last used in the same second go in admission order, so the
/// session being admitted is never the one chosen, nor a newer one before an older.
///
/// One key, one atomic step: concurrent logins on any number of instances never leave a user
/// above the limit, nor evict more than needed; a marked session stays findable by every path
/// that ends sessions until its record is deleted.
///
/// An index of more than `ARGV[9]` fields is not read whole: one page of it (`ARGV[10]`
/// fields, from where the last page ended: `#c`) is pruned, and its least recently used live
/// sessions end while the index holds more than the limit (counted as its size over `ARGV[11]`,
/// the fields per session), so the index shrinks back a page
/// per login and no login costs more than a page. Returns whether the index was that large,
/// and the pairs.
const ADMIT: &str = "\
local h = ARGV[1]
local now, max, unused_for, retry_after = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local order = redis.call('HINCRBY', KEYS[1], '#n', 1)
redis.call('HSET', KEYS[1], 'm:' .. h, ARGV[2], 's:' .. h, ARGV[3], 'x:' .. h, ARGV[4], 'o:' .. h, order)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
local size = redis.call('HLEN', KEYS[1])
local whole = size <= tonumber(ARGV[9])
local fields = {}
if whole then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do fields[all[i]] = all[i + 1] end
else
  local page = redis.call('HSCAN', KEYS[1], redis.call('HGET', KEYS[1], '#c') or '0', 'COUNT', ARGV[10])
  redis.call('HSET', KEYS[1], '#c', page[1])
  local found = page[2]
  for i = 1, #found, 2 do
    local other = string.match(found[i], '^m:(.*)$')
    if other then
      fields[found[i]] = found[i + 1]
      local more = redis.call('HMGET', KEYS[1], 's:' .. other, 'x:' .. other, 'e:' .. other, 'o:' .. other)
      fields['s:' .. other], fields['x:' .. other], fields['e:' .. other], fields['o:' .. other] = more[1], more[2], more[3], more[4]
    end
  end
end
local live, evicted = {}, {}
for field, entry in pairs(fields) do
  local other = string.match(field, '^m:(.*)$')
  if other and other ~= h then
    local seen = tonumber(fields['s:' .. other] or '0')
    local ends = tonumber(fields['x:' .. other] or '0')
    local marked = tonumber(fields['e:' .. other] or '0')
    if ends <= now or seen + unused_for < now then
      redis.call('HDEL', KEYS[1], 'm:' .. other, 's:' .. other, 'x:' .. other, 'e:' .. other, 'o:' .. other)
    elseif marked > 0 then
      if marked + retry_after < now then
        redis.call('HSET', KEYS[1], 'e:' .. other, now)
        evicted[#evicted + 1] = other
        evicted[#evicted + 1] = entry
      end
    else
      live[#live + 1] = {other, seen, tonumber(fields['o:' .. other] or '0'), entry}
    end
  end
end
local excess = #live + 1 - max
if not whole then
  excess = math.min(#live, math.floor(redis.call('HLEN', KEYS[1]) / tonumber(ARGV[11])) - max)
end
if excess > 0 then
  table.sort(live, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    if a[3] ~= b[3] then return a[3] < b[3] end
    return a[1] < b[1]
  end)
  for i = 1, excess do
    redis.call('HSET', KEYS[1], 'e:' .. live[i][1], now)
    evicted[#evicted + 1] = live[i][1]
    evicted[#evicted + 1] = live[i][4]
  end
end
return {whole and 0 or 1, evicted}";

/// Files sessions copied from another index of the same user in the index `KEYS[1]` (kept
/// alive at least `ARGV[1]` seconds): groups of five `ARGV`s, `handle, entry, last used, end,
/// ending mark ('' for none)`. A session already filed there keeps its entry and admission
/// order; its last use moves forward only, and a mark is never taken away. Returns how many
/// were new here.
const MERGE: &str = "\
local added = 0
for i = 2, #ARGV, 5 do
  local h = ARGV[i]
  if redis.call('HSETNX', KEYS[1], 'm:' .. h, ARGV[i + 1]) == 1 then
    added = added + 1
    redis.call('HSET', KEYS[1], 'x:' .. h, ARGV[i + 3], 'o:' .. h, redis.call('HINCRBY', KEYS[1], '#n', 1))
  end
  if tonumber(ARGV[i + 2]) > tonumber(redis.call('HGET', KEYS[1], 's:' .. h) or '0') then
    redis.call('HSET', KEYS[1], 's:' .. h, ARGV[i + 2])
  end
  if ARGV[i + 4] ~= '' then redis.call('HSETNX', KEYS[1], 'e:' .. h, ARGV[i + 4]) end
end
if added > 0 and redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return added";

/// Removes the fields `ARGV` from the user index `KEYS[1]`, and the index itself once only its
/// counters (`#…`) are left.
const REMOVE_FIELDS: &str = "\
for i = 1, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local left = redis.call('HLEN', KEYS[1])
if left > 0 and left <= 2 then
  local counters = redis.call('HEXISTS', KEYS[1], '#n') + redis.call('HEXISTS', KEYS[1], '#c')
  if counters == left then redis.call('DEL', KEYS[1]) end
end
return left";

/// Marks the sessions `ARGV[2..]` of the index `KEYS[1]` as being ended at `ARGV[1]`, those
/// filed there only (an index that does not hold a session gets no stray mark).
const MARK_ENDING: &str = "\
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], 'm:' .. ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], 'e:' .. ARGV[i], ARGV[1])
  end
end
return 1";

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
    /// When a path that ends sessions marked it as being ended (unix seconds), if one did.
    pub ending_since: Option<u64>,
    /// Its admission order in this index (0: unknown, as filed by an earlier release).
    pub order: u64,
}

/// How a user's index admits a new session: how long unused an indexed session must have been
/// to count as ended already (its idle timeout plus the interval its uses are filed at), and
/// the most sessions one user may have.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Seconds.
    pub unused_for: u64,
    /// Sessions per user (at least 1).
    pub max_per_user: usize,
}

/// What admitting a session did besides filing it.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The user's sessions it marked as being ended (beyond the limit), for the caller to end.
    pub evicted: Vec<IndexedSession>,
    /// Whether the user's index was beyond [`WHOLE_INDEX_FIELDS`] (trimmed a page only).
    pub oversized: bool,
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

/// The names of session `handle`'s [`ENTRY_FIELDS`].
fn entry_fields(handle: &str) -> [String; 5] {
    ENTRY_FIELDS.map(|prefix| format!("{prefix}:{handle}"))
}

/// Decimal unix seconds from a hash field, 0 when absent or unreadable.
fn seconds(value: Option<&Vec<u8>>) -> u64 {
    value
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Session `handle` from the values of its [`ENTRY_FIELDS`]; `None` without an entry.
fn indexed_session(handle: &str, fields: [Option<&Vec<u8>>; 5]) -> Option<IndexedSession> {
    let [entry, seen, ends, ending, order] = fields;
    Some(IndexedSession {
        handle: handle.to_owned(),
        entry: entry?.clone(),
        last_seen: seconds(seen),
        expires_at: seconds(ends),
        ending_since: ending.map(|at| seconds(Some(at))),
        order: seconds(order),
    })
}

/// The sessions in a user index's fields (every `m:` entry, with its other fields).
fn sessions_in(fields: &HashMap<String, Vec<u8>>) -> Vec<IndexedSession> {
    fields
        .keys()
        .filter_map(|field| {
            let handle = field.strip_prefix("m:")?;
            indexed_session(
                handle,
                ENTRY_FIELDS.map(|prefix| fields.get(&format!("{prefix}:{handle}"))),
            )
        })
        .collect()
}

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

    /// How many fields each of `user_indexes` holds (0: none filed there).
    pub async fn index_sizes(&self, user_indexes: &[String]) -> Result<Vec<usize>, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                let indexes = memory.indexes();
                return Ok(user_indexes
                    .iter()
                    .map(|index| indexes.size(index))
                    .collect());
            }
            Store::Redis(redis) => redis,
        };
        let sizes = user_indexes.iter().map(|index| {
            let mut conn = redis.conn.clone();
            async move {
                redis::cmd("HLEN")
                    .arg(index)
                    .query_async::<usize>(&mut conn)
                    .await
            }
        });
        Ok(futures_util::future::try_join_all(sizes).await?)
    }

    /// The entries of a user's index (stale ones included: see the module docs), and whether
    /// that is all of them. An index within [`WHOLE_INDEX_FIELDS`] is read in one command;
    /// a larger one a page at a time (every command bounded), stopping once `at_most`
    /// sessions are read, if given.
    pub async fn indexed_sessions(
        &self,
        user_index: &str,
        at_most: Option<usize>,
    ) -> Result<(Vec<IndexedSession>, bool), StoreError> {
        let redis = match self {
            Store::Memory(memory) => return Ok((memory.indexes().entries(user_index), true)),
            Store::Redis(redis) => redis,
        };
        let mut conn = redis.conn.clone();
        let size: usize = redis::cmd("HLEN")
            .arg(user_index)
            .query_async(&mut conn)
            .await?;
        if size <= WHOLE_INDEX_FIELDS {
            let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                .arg(user_index)
                .query_async(&mut conn)
                .await?;
            return Ok((sessions_in(&fields), true));
        }
        // Page by page: an entry's fields may fall in different pages, so the handles are
        // collected first and each session's fields read together.
        let (mut cursor, mut entries) = (0u64, HashMap::<String, Vec<u8>>::new());
        // (The entries' bytes are read again with their other fields: simpler than joining.)
        loop {
            let (next, page): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(user_index)
                .arg(cursor)
                .arg("MATCH")
                .arg("m:*")
                .arg("COUNT")
                .arg(PAGE_FIELDS)
                .query_async(&mut conn)
                .await?;
            entries.extend(page);
            cursor = next;
            if cursor == 0 || at_most.is_some_and(|at_most| entries.len() >= at_most) {
                break;
            }
        }
        let handles: Vec<String> = entries
            .into_keys()
            .filter_map(|field| field.strip_prefix("m:").map(str::to_owned))
            .collect();
        Ok((
            self.sessions_filed(user_index, &handles).await?,
            cursor == 0,
        ))
    }

    /// The sessions `handles` as the user index `user_index` holds them (those it does not
    /// hold are left out).
    pub async fn sessions_filed(
        &self,
        user_index: &str,
        handles: &[String],
    ) -> Result<Vec<IndexedSession>, StoreError> {
        let redis = match self {
            Store::Memory(memory) => {
                let wanted: HashSet<&str> = handles.iter().map(String::as_str).collect();
                let mut sessions = memory.indexes().entries(user_index);
                sessions.retain(|session| wanted.contains(session.handle.as_str()));
                return Ok(sessions);
            }
            Store::Redis(redis) => redis,
        };
        let reads = handles.iter().map(|handle| {
            let mut conn = redis.conn.clone();
            async move {
                let fields: [Option<Vec<u8>>; 5] = redis::cmd("HMGET")
                    .arg(user_index)
                    .arg(&entry_fields(handle))
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, StoreError>(indexed_session(
                    handle,
                    fields.each_ref().map(Option::as_ref),
                ))
            }
        });
        Ok(futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

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
pub(super) struct MemoryIndexes {
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
    fn add(
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

    fn add_to_provider_session(&mut self, provider_session: &str, member: &str) {
        self.provider_sessions
            .entry(provider_session.to_owned())
            .or_default()
            .insert(member.to_owned());
    }

    fn merge(&mut self, user_index: &str, sessions: &[(IndexedSession, String)]) -> usize {
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

    fn touch(&mut self, user_index: &str, handle: &str, at: u64, idle_deadline: Deadline) -> bool {
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

    fn size(&self, user_index: &str) -> usize {
        self.users.get(user_index).map_or(0, HashMap::len)
    }

    fn entries(&self, user_index: &str) -> Vec<IndexedSession> {
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

    fn remove(
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

    fn mark_ending(&mut self, user_index: &str, handles: &[&str], now: u64) {
        if let Some(sessions) = self.users.get_mut(user_index) {
            for handle in handles {
                if let Some(entry) = sessions.get_mut(*handle) {
                    entry.ending_since = Some(now);
                }
            }
        }
    }

    fn contains(&self, user_index: &str, handle: &str) -> bool {
        self.users
            .get(user_index)
            .and_then(|sessions| sessions.get(handle))
            .is_some_and(|entry| entry.ending_since.is_none())
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
