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
//!
//! This file owns the types "my sessions" shows and the user's names; its parts own the rest:
//! `entry.rs` (what an entry holds, and one session filed under several names),
//! `admission.rs` (filing a login within `session.max_per_user`), `uses.rs` (filing uses,
//! re-filing under a rotated key's names), `lookup.rs` (finding the live sessions of a user)
//! and `ending.rs` (ending them without their cookies).

mod admission;
mod ending;
mod entry;
mod lookup;
mod uses;

use serde::{Deserialize, Serialize};

use super::Sessions;
use super::index_names::Filed;
use super::store::user_index::Admission;

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
}
