//! The names of the Redis keys that file sessions by user (`sub`) and by provider session
//! (`sid`): keyed hashes, so a Redis dump alone cannot confirm a guessed identifier.
//!
//! A name is `vestibule:<kind>:` + base64url(HMAC-SHA256(k, kind ‖ 0 ‖ identifier)), where k is
//! derived from a server key (`session.encryption_key`, or each key of `encryption_keys`) for
//! this purpose only. New entries are filed under the sealing key's name; lookups try every
//! ring key's name and then the unkeyed SHA-256 name earlier releases wrote (read, never
//! written), so a rotation done the documented way and an upgrade both keep every session
//! findable. A session still filed under an older key's name is filed under the current one
//! when it is read under an older key (see [`crate::session::index`]), before anything can seal
//! it under the current key. This module never sees a session, only identifiers and names.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretBox};

use super::crypto::{KeyRing, hmac_sha256};
use super::store::compact_storage_key;

/// The purpose the names' keys are derived for (see [`crate::session::crypto::purpose_key`]).
const INDEX_NAMES_PURPOSE: &[u8] = b"vestibule index names v1";

/// What a name files sessions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filed {
    /// A user's sessions (`sub`).
    User,
    /// The mark that every session of a user was ended (`sub`).
    UserEnded,
    /// The sessions created in one provider session (`sid`).
    ProviderSession,
    /// The mark that a provider session was ended by a back-channel logout (`sid`).
    ProviderSessionEnded,
}

impl Filed {
    /// The key's kind, after `vestibule:`.
    fn kind(self) -> &'static str {
        match self {
            Filed::User => "user",
            Filed::UserEnded => "user-ended",
            Filed::ProviderSession => "sid",
            Filed::ProviderSessionEnded => "sid-ended",
        }
    }
}

/// The name keys: one per server key, the sealing key's first.
pub(super) struct IndexNames {
    current: SecretBox<[u8; 32]>,
    older: Vec<SecretBox<[u8; 32]>>,
}

impl IndexNames {
    /// The names `keys` give (instances with the same keys agree).
    pub(super) fn from_ring(keys: &KeyRing) -> Self {
        let mut derived = keys.derive_purpose_keys(INDEX_NAMES_PURPOSE).into_iter();
        // A ring holds at least one key; an empty one would name nothing but fail nothing.
        let current = derived
            .next()
            .unwrap_or_else(|| SecretBox::new(Box::new([0; 32])));
        Self {
            current,
            older: derived.collect(),
        }
    }

    /// Where `identifier`'s entries are filed now: its name under the sealing key.
    pub(super) fn current(&self, filed: Filed, identifier: &str) -> String {
        keyed(&self.current, filed, identifier)
    }

    /// Every name `identifier`'s entries may be filed under, the current one first, then the
    /// other keys' names and the unkeyed name of earlier releases (each once).
    pub(super) fn all(&self, filed: Filed, identifier: &str) -> Vec<String> {
        let mut names = Vec::with_capacity(self.older.len() + 2);
        names.push(self.current(filed, identifier));
        for key in &self.older {
            names.push(keyed(key, filed, identifier));
        }
        names.push(compact_storage_key(filed.kind(), identifier.as_bytes()));
        let mut seen = std::collections::HashSet::new();
        names.retain(|name| seen.insert(name.clone()));
        names
    }
}

/// `vestibule:<kind>:` + base64url(HMAC-SHA256(`key`, kind ‖ 0 ‖ identifier)).
fn keyed(key: &SecretBox<[u8; 32]>, filed: Filed, identifier: &str) -> String {
    let mac = hmac_sha256(
        key.expose_secret(),
        &[filed.kind().as_bytes(), &[0], identifier.as_bytes()],
    );
    format!("vestibule:{}:{}", filed.kind(), URL_SAFE_NO_PAD.encode(mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{KeyId, MasterKey};

    fn ring(ids: &[(&str, u8)]) -> KeyRing {
        KeyRing::labelled(
            ids.iter()
                .map(|(id, byte)| (KeyId::parse(id).unwrap(), MasterKey::new([*byte; 32])))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_name_is_keyed_so_the_plain_hash_of_a_guess_does_not_find_it() {
        let names = IndexNames::from_ring(&KeyRing::single(MasterKey::new([1; 32])));
        let unkeyed = compact_storage_key("user", b"alice");
        let name = names.current(Filed::User, "alice");
        assert!(name.starts_with("vestibule:user:"));
        assert_eq!(name.len(), unkeyed.len(), "as compact as before");
        assert_ne!(name, unkeyed);
        assert!(!name.contains("alice"));
        let other_key = IndexNames::from_ring(&KeyRing::single(MasterKey::new([2; 32])));
        assert_ne!(name, other_key.current(Filed::User, "alice"));
        assert_ne!(name, names.current(Filed::User, "bob"));
        assert_ne!(
            names.current(Filed::ProviderSession, "alice"),
            name.replace(":user:", ":sid:"),
            "each kind its own hash"
        );
    }

    #[test]
    fn lookups_try_every_ring_key_then_the_unkeyed_name_and_write_under_the_sealing_key() {
        let k1 = IndexNames::from_ring(&ring(&[("k1", 1)]));
        let rolled = IndexNames::from_ring(&ring(&[("k2", 2), ("k1", 1)]));
        let k2 = IndexNames::from_ring(&ring(&[("k2", 2)]));
        let filed_under_k1 = k1.current(Filed::User, "alice");
        let all = rolled.all(Filed::User, "alice");
        assert_eq!(all[0], k2.current(Filed::User, "alice"), "k2 seals");
        assert_eq!(all[1], filed_under_k1, "k1 still found");
        assert_eq!(
            all[2],
            compact_storage_key("user", b"alice"),
            "then unkeyed"
        );
        assert_eq!(all.len(), 3);
        // A single key and a ring of the same bytes name alike (the first rotation step).
        let single = IndexNames::from_ring(&KeyRing::single(MasterKey::new([1; 32])));
        assert_eq!(single.current(Filed::User, "alice"), filed_under_k1);
    }
}
