//! The per-user index of sessions, the provider-session index beside it, and the count of
//! live sessions: how a session is found without its cookie (to list a user's sessions, to end
//! them from elsewhere, and for back-channel logout).
//!
//! This file owns the layout of a user's index and the types its callers exchange with it; its parts own
//! the rest: `scripts.rs` (the Lua, each script on one key), `filing.rs` (admitting a login,
//! re-filing, noting a use), `reading.rs` (reading an index, a page at a time when large),
//! `ending.rs` (marking and removing sessions), `live.rs` (the count of live sessions) and
//! `in_memory.rs` (the same indexes in process memory, for one instance).
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

mod ending;
mod filing;
pub(super) mod in_memory;
mod live;
mod reading;
mod scripts;

use std::collections::HashMap;

pub use live::{Deadline, LIVE_SESSIONS, PRUNE_BATCH};

/// The key prefix of per-user indexes.
pub const USER_INDEX_PREFIX: &str = "vestibule:user:";

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
