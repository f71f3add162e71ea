//! One entry of a user's index as the session layer writes it (the record's key, when and
//! where the session was created), and one session as found under all of its user's names.
//!
//! An entry never holds a token, nor anything that opens the record without the cookie.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::SessionOrigin;
use crate::session::store::user_index::IndexedSession;

/// One session in a user's index, as stored (compactly: keys without their common prefix).
#[derive(Serialize, Deserialize)]
pub(super) struct IndexEntry {
    /// The record's store key.
    #[serde(rename = "k", with = "record_key")]
    pub(super) record_key: String,
    /// When it was created (unix seconds).
    #[serde(rename = "c")]
    pub(super) created_at: u64,
    /// Where it was created.
    #[serde(flatten)]
    pub(super) origin: SessionOrigin,
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

/// A session found in a user's index (under any of the user's names).
pub(super) struct Indexed {
    /// The session's public handle.
    pub(super) handle: String,
    /// When it was last used (unix seconds), as its most recent filing says.
    pub(super) last_seen: u64,
    /// When it ends however it is used (unix seconds).
    pub(super) expires_at: u64,
    /// When a path that ends sessions marked it, if one did under any name.
    pub(super) ending_since: Option<u64>,
    /// Where in the user's names (0: the current one) and in which order it was filed, as
    /// far as the most current name holding it says.
    pub(super) filed: (usize, u64),
    /// The entry, decoded.
    pub(super) entry: IndexEntry,
}

impl Indexed {
    /// The stored session, decoded; `None` when its entry does not decode.
    pub(super) fn decode(stored: IndexedSession) -> Option<Self> {
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

/// The filings of one session under its user's names (in the order of the names), keyed by
/// handle: a session filed under several names is one session, as recently used as its most
/// recent filing says.
pub(super) fn merge_filings(filings: Vec<Vec<Indexed>>) -> Vec<Indexed> {
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
