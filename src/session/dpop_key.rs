//! A session's DPoP key as its record keeps it: the PKCS#8 bytes, sealed with the record and
//! turned back into a signing key ([`DpopKey`]) only where a proof is made.
//!
//! Not `Debug`: the bytes are the private key.

use serde::{Deserialize, Serialize};

use crate::oidc::dpop::{DpopError, DpopKey};

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
}
