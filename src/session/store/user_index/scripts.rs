//! The Lua scripts of the user index, one `.lua` file each (under `scripts/`), and the
//! contract of each: which key it touches (`KEYS`) and what its arguments mean (`ARGV`).
//!
//! Every script works on one key, so a Redis Cluster runs it unchanged; none reads a whole
//! index beyond [`super::WHOLE_INDEX_FIELDS`]. This module only holds the text: the callers
//! (`filing.rs`, `ending.rs`, `live.rs`) pass the arguments in the order documented here.

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
pub(super) const ADMIT: &str = include_str!("scripts/admit.lua");

/// Files sessions copied from another index of the same user in the index `KEYS[1]` (kept
/// alive at least `ARGV[1]` seconds): groups of five `ARGV`s, `handle, entry, last used, end,
/// ending mark ('' for none)`. A session already filed there keeps its entry and admission
/// order; its last use moves forward only, and a mark is never taken away. Returns how many
/// were new here.
pub(super) const MERGE: &str = include_str!("scripts/merge.lua");

/// Removes the fields `ARGV` from the user index `KEYS[1]`, and the index itself once only its
/// counters (`#…`) are left.
pub(super) const REMOVE_FIELDS: &str = include_str!("scripts/remove_fields.lua");

/// Marks the sessions `ARGV[2..]` of the index `KEYS[1]` as being ended at `ARGV[1]`, those
/// filed there only (an index that does not hold a session gets no stray mark).
pub(super) const MARK_ENDING: &str = include_str!("scripts/mark_ending.lua");

/// Not a script of its own: the Lua function `prune(key, before)` that [`ADD_LIVE`] and
/// [`COUNT_LIVE`] are prefixed with. Removes up to [`PRUNE_BATCH`](super::PRUNE_BATCH) (its
/// `LIMIT`) members of the live set `key` whose deadline is before `before` (sessions that
/// ended by themselves); returns how many had reached their idle timeout and how many their
/// absolute end (a score with a fraction: see [`Deadline`](super::Deadline)).
pub(super) const PRUNE_EXPIRED: &str = include_str!("scripts/prune_expired.lua");

/// Adds handle `ARGV[3]` to the live-session set `KEYS[1]` with deadline score `ARGV[2]`, prunes
/// the members whose deadline passed more than a minute before `ARGV[1]`, and keeps the set
/// alive at least `ARGV[4]` seconds. Returns the pruned counts (idle, absolute).
pub(super) const ADD_LIVE: &str = include_str!("scripts/add_live.lua");

/// Moves `s:ARGV[1]` of the index `KEYS[1]` forward to `ARGV[2]` if the entry still exists.
pub(super) const TOUCH: &str = include_str!("scripts/touch.lua");

/// Counts the members of `KEYS[1]` whose deadline is not before `ARGV[1]`, and prunes those
/// whose deadline passed more than `ARGV[2]` seconds before it (a use is filed at most that
/// late, so a member inside that margin may still be live); returns (live, idle expired,
/// absolute expired).
pub(super) const COUNT_LIVE: &str = include_str!("scripts/count_live.lua");
