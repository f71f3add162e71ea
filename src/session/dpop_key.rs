//! A session's DPoP key as its record keeps it: the PKCS#8 bytes, sealed with the record and
//! turned back into a signing key ([`DpopKey`]) only where a proof is made; and the keys the
//! proxy parsed lately ([`ParsedDpopKeys`]), so a session's calls do not parse its key again.
//!
//! Not `Debug`: the bytes are the private key.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::oidc::dpop::{DpopError, DpopKey};

/// How many sessions' parsed keys one instance keeps (about 0.7 kB each).
const PARSED_KEYS: usize = 4096;

/// The private key, in the session record.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredDpopKey(#[serde(with = "super::byte_string")] Vec<u8>);

impl StoredDpopKey {
    /// Keeps `key` for the record.
    pub fn new(key: &DpopKey) -> Self {
        Self(key.to_pkcs8().to_vec())
    }

    /// The signing key; [`DpopError::NotAKey`] for bytes that are not one.
    pub fn key(&self) -> Result<DpopKey, DpopError> {
        DpopKey::from_pkcs8(&self.0)
    }
}

/// The keys of the sessions whose calls this instance proxied lately, parsed, by their stored
/// bytes. Parsing a key costs as much CPU as the signature a proxied call makes with it (about
/// 8 µs against 13 µs), so each call of a DPoP session would otherwise pay twice. In memory
/// only and bounded (the least recently used key goes); it holds nothing a dump of the
/// running instance would not yield anyway (the master key opens every record).
pub struct ParsedDpopKeys {
    keys: Mutex<LruCache<Vec<u8>, Arc<DpopKey>>>,
}

impl ParsedDpopKeys {
    /// Room for [`PARSED_KEYS`] keys.
    pub fn new() -> Self {
        Self {
            keys: Mutex::new(LruCache::new(
                NonZeroUsize::new(PARSED_KEYS).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The signing key `stored` holds: parsed before by this instance, or now.
    pub fn get(&self, stored: &StoredDpopKey) -> Result<Arc<DpopKey>, DpopError> {
        if let Some(key) = self.lock().get(stored.0.as_slice()) {
            return Ok(key.clone());
        }
        let key = Arc::new(stored.key()?);
        self.lock().put(stored.0.clone(), key.clone());
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Vec<u8>, Arc<DpopKey>>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for ParsedDpopKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_key_is_the_same_key_after_a_round_trip_through_messagepack() {
        let key = DpopKey::generate().unwrap();
        let stored = StoredDpopKey::new(&key);
        let bytes = rmp_serde::to_vec(&stored).unwrap();
        // A `bin` of the PKCS#8 document, not an array of integers.
        assert!(bytes.len() < key.to_pkcs8().len() + 4);
        let read: StoredDpopKey = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(read.key().unwrap().thumbprint(), key.thumbprint());
    }

    #[test]
    fn a_parsed_key_is_the_stored_one_and_parsed_once() {
        let parsed = ParsedDpopKeys::new();
        let one = StoredDpopKey::new(&DpopKey::generate().unwrap());
        let other = StoredDpopKey::new(&DpopKey::generate().unwrap());
        let first = parsed.get(&one).unwrap();
        assert_eq!(first.thumbprint(), one.key().unwrap().thumbprint());
        assert!(
            Arc::ptr_eq(&first, &parsed.get(&one).unwrap()),
            "parsed once"
        );
        assert_ne!(parsed.get(&other).unwrap().thumbprint(), first.thumbprint());
        assert!(parsed.get(&StoredDpopKey(b"junk".to_vec())).is_err());
    }
}
