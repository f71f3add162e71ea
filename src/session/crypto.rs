//! Sealing of stored records: AES-256-GCM under a key derived per record from a ring of keys.
//!
//! A session record's key is HKDF-SHA256 of a server key *and* a secret that only the browser
//! holds (in its cookie), so neither a store dump nor a store dump plus the server keys opens
//! it. What is sealed under the server keys alone (an escrowed refresh token) gets a key of its
//! own per record too: HKDF-SHA256 of the server key with the record's storage key in the info,
//! so no two records share an AES-GCM key and random nonces never approach their limit. The
//! storage key (and a labelled record's key id) is the associated data as well: a record copied
//! under another key or relabelled fails to open. Key bytes never leave this module.
//!
//! The parts: `master_key.rs` (one server key and the per-record keys derived from it),
//! `label.rs` (key ids and the labelled header) and `purpose.rs` (keys for other purposes);
//! this file owns the ring: which key seals, and the order in which keys are tried to open.

mod label;
mod master_key;
mod purpose;

use secrecy::SecretBox;

pub use label::{KeyId, MAX_KEY_ID_LEN};
pub use master_key::MasterKey;
pub(crate) use purpose::hmac_sha256;
pub use purpose::purpose_key;

use label::{label, parse_label};
use master_key::{Derivation, LABELLED_INFO, SealParts, UNLABELLED_INFO};

/// A sealed record could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// It names a key id the ring no longer holds (the key was removed).
    #[error("the stored record is sealed under a key that is no longer configured")]
    RemovedKey,
    /// Wrong key, wrong browser secret, moved or tampered.
    #[error("the stored record does not open with any configured key")]
    DoesNotOpen,
}

/// How something sealed under the server keys alone was sealed (the caller's format says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSealing {
    /// Under a key derived for its record alone: what [`KeyRing::seal_for_server`] writes.
    PerRecord,
    /// Under one key shared by every record of a server key, as escrow was sealed before
    /// per-record keys; opened, never written.
    Shared,
}

/// The keys an instance seals and opens records with.
enum Keys {
    /// `session.encryption_key`: unlabelled records, as every earlier release writes them.
    Single(MasterKey),
    /// `session.encryption_keys`: labelled records; never empty, the first entry seals.
    Ring(Vec<(KeyId, MasterKey)>),
}

/// The configured keys: the first seals, all open. `Debug` shows the ids, never key bytes.
///
/// Two formats, so keys can rotate while instances of the previous release still run:
/// - *unlabelled* (the single `session.encryption_key`): `nonce(12) ‖ ciphertext ‖ tag(16)`;
/// - *labelled* (`session.encryption_keys`): `0xA5 ‖ id length ‖ id ‖ nonce ‖ ciphertext ‖
///   tag`, the header being associated data too, under keys derived with HKDF info v2.
///
/// Either format's key is derived from the server key with the browser's secret as HKDF
/// salt ([`KeyRing::seal`]), or, for what the server alone must open, with a fixed salt and
/// the storage key appended to the info ([`KeyRing::seal_for_server`]).
///
/// A random nonce can start with the marker byte, so an unlabelled record may parse as
/// labelled: whatever does not open as labelled is tried as unlabelled with every key (the GCM
/// tag makes trial decryption safe, and a ring holds a handful of keys).
pub struct KeyRing(Keys);

/// A record that opened, and whether it is sealed the way this ring seals today.
pub struct Opened {
    /// The record's plaintext.
    pub plaintext: Vec<u8>,
    /// `false` when it opened under an older key or format and is worth re-sealing.
    pub current: bool,
}

impl KeyRing {
    /// The single `session.encryption_key`: seals unlabelled records.
    pub fn single(key: MasterKey) -> Self {
        Self(Keys::Single(key))
    }

    /// `session.encryption_keys` in order; `None` if empty. The caller checks ids are unique.
    pub fn labelled(keys: Vec<(KeyId, MasterKey)>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self(Keys::Ring(keys)))
    }

    /// The keys by name, for an operator (never their bytes): the single key, or the ring's
    /// ids with the one that seals marked.
    pub fn describe(&self) -> String {
        match &self.0 {
            Keys::Single(_) => "one key (session.encryption_key)".to_owned(),
            Keys::Ring(keys) => {
                let ids: Vec<String> = keys
                    .iter()
                    .enumerate()
                    .map(|(at, (id, _))| {
                        if at == 0 {
                            format!("{} (seals)", id.as_str())
                        } else {
                            id.as_str().to_owned()
                        }
                    })
                    .collect();
                format!("ring of {}: {}", keys.len(), ids.join(", "))
            }
        }
    }

    /// A 256-bit key for another purpose than sealing records (`purpose` names it, e.g. the
    /// audit trail's subject hashing), derived from the sealing key: instances with the same
    /// keys derive the same one, and it reveals nothing of the sealing key.
    pub fn derive_purpose_key(&self, purpose: &[u8]) -> SecretBox<[u8; 32]> {
        self.sealing_key().purpose_key(purpose)
    }

    /// [`KeyRing::derive_purpose_key`] under every key of the ring, the sealing key first: for
    /// a purpose whose values made under an older key must still be recognised.
    pub fn derive_purpose_keys(&self, purpose: &[u8]) -> Vec<SecretBox<[u8; 32]>> {
        self.master_keys()
            .into_iter()
            .map(|key| key.purpose_key(purpose))
            .collect()
    }

    /// Every key, the sealing key first.
    fn master_keys(&self) -> Vec<&MasterKey> {
        match &self.0 {
            Keys::Single(key) => vec![key],
            Keys::Ring(keys) => keys.iter().map(|(_, key)| key).collect(),
        }
    }

    /// The key that seals.
    fn sealing_key(&self) -> &MasterKey {
        match &self.0 {
            Keys::Single(key) => key,
            Keys::Ring(keys) => &keys[0].1,
        }
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        match &self.0 {
            Keys::Single(_) => 1,
            Keys::Ring(keys) => keys.len(),
        }
    }

    /// Never: a ring holds at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The id records are sealed under now (`None`: the single, unlabelled key).
    pub fn sealing_id(&self) -> Option<&KeyId> {
        match &self.0 {
            Keys::Single(_) => None,
            Keys::Ring(keys) => keys.first().map(|(id, _)| id),
        }
    }

    /// Encrypts `plaintext` for the record stored under `storage_key` with a fresh random
    /// nonce, under the sealing key and the browser's secret.
    pub fn seal(&self, browser_secret: &[u8], storage_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with_nonce(SealParts {
            derivation: Derivation::Browser(browser_secret),
            storage_key,
            plaintext,
            nonce: crate::random::bytes(),
        })
    }

    /// Encrypts `plaintext` for the record stored under `storage_key` under the sealing key
    /// alone (no browser secret), with a key derived for that storage key only.
    pub fn seal_for_server(&self, storage_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with_nonce(SealParts {
            derivation: Derivation::ServerPerRecord,
            storage_key,
            plaintext,
            nonce: crate::random::bytes(),
        })
    }

    fn seal_with_nonce(&self, parts: SealParts<'_>) -> Vec<u8> {
        match &self.0 {
            Keys::Single(key) => key.seal_after(UNLABELLED_INFO, Vec::new(), parts),
            Keys::Ring(keys) => {
                let (id, key) = &keys[0];
                key.seal_after(LABELLED_INFO, label(id), parts)
            }
        }
    }

    /// Decrypts a record sealed by any key of this ring (or of the single key before it)
    /// under the same browser secret and storage key.
    pub fn open(
        &self,
        browser_secret: &[u8],
        storage_key: &[u8],
        sealed: &[u8],
    ) -> Result<Opened, OpenError> {
        self.open_with(Derivation::Browser(browser_secret), storage_key, sealed)
    }

    /// Decrypts what was sealed under the server keys alone for `storage_key`, the way
    /// `sealing` says. [`Opened::current`] speaks of the key only: a shared-key record is not
    /// worth re-sealing for its format alone (reading it seals nothing under the shared key).
    pub fn open_for_server(
        &self,
        storage_key: &[u8],
        sealed: &[u8],
        sealing: ServerSealing,
    ) -> Result<Opened, OpenError> {
        let derivation = match sealing {
            ServerSealing::PerRecord => Derivation::ServerPerRecord,
            ServerSealing::Shared => Derivation::ServerShared,
        };
        self.open_with(derivation, storage_key, sealed)
    }

    fn open_with(
        &self,
        derivation: Derivation<'_>,
        storage_key: &[u8],
        sealed: &[u8],
    ) -> Result<Opened, OpenError> {
        let mut removed = false;
        if let Some((header, id, body)) = parse_label(sealed) {
            let (key, current) = match &self.0 {
                // The single key has no id: it opens what a ring sealed with the same bytes.
                Keys::Single(key) => (Some(key), false),
                Keys::Ring(keys) => {
                    let position = keys
                        .iter()
                        .position(|(known, _)| known.as_str().as_bytes() == id);
                    removed = position.is_none();
                    (position.map(|at| &keys[at].1), position == Some(0))
                }
            };
            let opened = key.and_then(|key| {
                key.open_after(LABELLED_INFO, header, body, derivation, storage_key)
            });
            if let Some(plaintext) = opened {
                return Ok(Opened { plaintext, current });
            }
        }
        // Unlabelled, or an unlabelled record whose random nonce happens to look labelled.
        let single = matches!(self.0, Keys::Single(_));
        for key in self.master_keys() {
            if let Some(plaintext) =
                key.open_after(UNLABELLED_INFO, &[], sealed, derivation, storage_key)
            {
                return Ok(Opened {
                    plaintext,
                    current: single,
                });
            }
        }
        Err(if removed {
            OpenError::RemovedKey
        } else {
            OpenError::DoesNotOpen
        })
    }
}

impl From<MasterKey> for KeyRing {
    fn from(key: MasterKey) -> Self {
        Self::single(key)
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Keys::Single(_) => formatter.write_str("KeyRing(single key)"),
            Keys::Ring(keys) => formatter
                .debug_tuple("KeyRing")
                .field(&keys.iter().map(|(id, _)| id).collect::<Vec<_>>())
                .finish(),
        }
    }
}

#[cfg(test)]
impl KeyRing {
    /// A ring of `(id, key byte)` entries, the first sealing (unit tests only).
    pub(crate) fn for_testing(entries: &[(&str, u8)]) -> Self {
        let keys = entries
            .iter()
            .filter_map(|(id, byte)| Some((KeyId::parse(id)?, MasterKey::new([*byte; 32]))))
            .collect();
        Self(Keys::Ring(keys))
    }

    /// Seals for the server under the key every record shared, as escrow was sealed before
    /// per-record keys (unit tests of that format only: nothing seals so any more).
    pub(crate) fn seal_for_server_shared(&self, storage_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with_nonce(SealParts {
            derivation: Derivation::ServerShared,
            storage_key,
            plaintext,
            nonce: crate::random::bytes(),
        })
    }
}

#[cfg(test)]
mod tests;
