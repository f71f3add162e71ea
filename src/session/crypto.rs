//! Sealing of stored records: AES-256-GCM under a key derived per record from a ring of keys.
//!
//! A session record's key is HKDF-SHA256 of a server key *and* a secret that only the browser
//! holds (in its cookie), so neither a store dump nor a store dump plus the server keys opens
//! it. What is sealed under the server keys alone (an escrowed refresh token) gets a key of its
//! own per record too: HKDF-SHA256 of the server key with the record's storage key in the info,
//! so no two records share an AES-GCM key and random nonces never approach their limit. The
//! storage key (and a labelled record's key id) is the associated data as well: a record copied
//! under another key or relabelled fails to open. Key bytes never leave this module.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

/// Length of the random nonce stored in each sealed record.
const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag at the end of each sealed record.
const TAG_LEN: usize = 16;
/// HKDF info of unlabelled records (the format of the single `encryption_key`).
const UNLABELLED_INFO: &[u8] = b"vestibule record key v1";
/// HKDF info of labelled records: a new format gets its own derived keys.
const LABELLED_INFO: &[u8] = b"vestibule record key v2";
/// First byte of a labelled record.
const LABEL_MARKER: u8 = 0xA5;
/// Longest key id, so the id's length fits one byte and records stay small.
pub const MAX_KEY_ID_LEN: usize = 32;

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

/// The HKDF salt of what is sealed under the server keys alone with one key per record, in
/// the place of a browser's secret (no browser secret, 32 random bytes, equals it).
const SERVER_ONLY_SALT: &[u8] = b"vestibule server-only record key v2";
/// The HKDF salt of the one key per server key that escrowed refresh tokens were sealed under
/// before keys were derived per record: records sealed so still open, nothing seals so again.
const SHARED_SERVER_SALT: &[u8] = b"vestibule refresh-token escrow v1";

/// Where a record's key comes from besides the server key.
#[derive(Clone, Copy)]
enum Derivation<'a> {
    /// A session record: the browser-held secret is the HKDF salt.
    Browser(&'a [u8]),
    /// Sealed under the server keys alone, one key per record (its storage key in the info).
    ServerPerRecord,
    /// Sealed under the server keys alone with one key for every record (opened, never sealed).
    ServerShared,
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

/// A server-wide 256-bit key: `session.encryption_key` or one entry of `encryption_keys`.
pub struct MasterKey {
    key: SecretBox<[u8; 32]>,
    /// HKDF-Extract of this key with [`SERVER_ONLY_SALT`], on first use: a per-record key
    /// then costs one HMAC (the expansion), not two.
    server_only: std::sync::OnceLock<Hkdf<Sha256>>,
    /// The [`SHARED_SERVER_SALT`] ciphers (unlabelled, labelled), derived on first use.
    shared_server: std::sync::OnceLock<Box<[Aes256Gcm; 2]>>,
}

impl MasterKey {
    /// Wraps 32 key bytes; the caller guarantees they come from a secure source.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self {
            key: SecretBox::new(Box::new(bytes)),
            server_only: std::sync::OnceLock::new(),
            shared_server: std::sync::OnceLock::new(),
        }
    }

    /// The AES key of one record stored under `storage_key`; `info` names the format.
    fn record_cipher(
        &self,
        derivation: Derivation<'_>,
        info: &[u8],
        storage_key: &[u8],
    ) -> Aes256Gcm {
        match derivation {
            Derivation::Browser(secret) => cipher(
                &Hkdf::<Sha256>::new(Some(secret), self.key.expose_secret()),
                &[info],
            ),
            Derivation::ServerPerRecord => {
                let hkdf = self.server_only.get_or_init(|| {
                    Hkdf::<Sha256>::new(Some(SERVER_ONLY_SALT), self.key.expose_secret())
                });
                // The info's parts are fixed-length but for the last: no two records share it.
                cipher(hkdf, &[info, b"\0", storage_key])
            }
            Derivation::ServerShared => {
                let [unlabelled, labelled] = &**self.shared_server.get_or_init(|| {
                    let hkdf =
                        Hkdf::<Sha256>::new(Some(SHARED_SERVER_SALT), self.key.expose_secret());
                    Box::new([
                        cipher(&hkdf, &[UNLABELLED_INFO]),
                        cipher(&hkdf, &[LABELLED_INFO]),
                    ])
                });
                if info == LABELLED_INFO {
                    labelled.clone()
                } else {
                    unlabelled.clone()
                }
            }
        }
    }

    /// Appends `ciphertext ‖ tag` of `plaintext` to `header ‖ nonce`.
    fn seal_after(&self, info: &[u8], header: Vec<u8>, parts: SealParts<'_>) -> Vec<u8> {
        let aad = [header.as_slice(), parts.storage_key].concat();
        let payload = Payload {
            msg: parts.plaintext,
            aad: &aad,
        };
        // Encryption only fails for inputs beyond 64 GiB, which records never approach.
        let ciphertext = self
            .record_cipher(parts.derivation, info, parts.storage_key)
            .encrypt(&Nonce::from(parts.nonce), payload)
            .unwrap_or_default();
        let mut sealed = header;
        sealed.extend_from_slice(&parts.nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens `nonce ‖ ciphertext ‖ tag` found after `header`, which is authenticated too.
    fn open_after(
        &self,
        info: &[u8],
        header: &[u8],
        body: &[u8],
        derivation: Derivation<'_>,
        storage_key: &[u8],
    ) -> Option<Vec<u8>> {
        if body.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let aad = [header, storage_key].concat();
        let payload = Payload {
            msg: ciphertext,
            aad: &aad,
        };
        self.record_cipher(derivation, info, storage_key)
            .decrypt(&Nonce::from(nonce), payload)
            .ok()
    }
}

/// HKDF-Expand of `hkdf` with the concatenated `info`, as an AES-256-GCM cipher.
fn cipher(hkdf: &Hkdf<Sha256>, info: &[&[u8]]) -> Aes256Gcm {
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255*32 byte limit, so expansion cannot fail.
    let _ = hkdf.expand_multi_info(info, &mut okm);
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(okm));
    okm.fill(0);
    cipher
}

/// What one seal needs besides the key.
struct SealParts<'a> {
    derivation: Derivation<'a>,
    storage_key: &'a [u8],
    plaintext: &'a [u8],
    nonce: [u8; NONCE_LEN],
}

/// A key's name in `session.encryption_keys`, stored in every record it seals.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyId(String);

impl KeyId {
    /// The rule an id must follow, for error messages.
    pub const RULE: &str = "must be 1 to 32 printable ASCII characters without spaces";

    /// Checks an id against [`KeyId::RULE`].
    pub fn parse(id: &str) -> Option<Self> {
        let valid = !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && id.bytes().all(|byte| byte.is_ascii_graphic());
        valid.then(|| Self(id.to_owned()))
    }

    /// The id as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
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
        purpose_key(self.sealing_key().key.expose_secret(), purpose)
    }

    /// [`KeyRing::derive_purpose_key`] under every key of the ring, the sealing key first: for
    /// a purpose whose values made under an older key must still be recognised.
    pub fn derive_purpose_keys(&self, purpose: &[u8]) -> Vec<SecretBox<[u8; 32]>> {
        self.master_keys()
            .into_iter()
            .map(|key| purpose_key(key.key.expose_secret(), purpose))
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
                    let position = keys.iter().position(|(known, _)| known.0.as_bytes() == id);
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

/// HMAC-SHA256(`secret`, label ‖ `purpose`): a key for `purpose` that reveals nothing of
/// `secret`. (HMAC, not HKDF: one pass, and the record path's HKDF stays its only user.)
pub fn purpose_key(secret: &[u8], purpose: &[u8]) -> SecretBox<[u8; 32]> {
    SecretBox::new(Box::new(hmac_sha256(
        secret,
        &[b"vestibule purpose key v1\0", purpose],
    )))
}

/// HMAC-SHA256 under `key` of the concatenated `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The header of a record labelled with `id`: marker, id length, id.
fn label(id: &KeyId) -> Vec<u8> {
    let id = id.0.as_bytes();
    let mut header = Vec::with_capacity(2 + id.len());
    header.push(LABEL_MARKER);
    // KeyId::parse caps the length at MAX_KEY_ID_LEN, well below 256.
    header.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    header.extend_from_slice(id);
    header
}

/// Splits a labelled record into header, id and `nonce ‖ ciphertext ‖ tag`; `None` if it
/// cannot be one.
fn parse_label(sealed: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&marker, rest) = sealed.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if marker != LABEL_MARKER || len == 0 || len > MAX_KEY_ID_LEN || rest.len() < len {
        return None;
    }
    let (header, body) = sealed.split_at(2 + len);
    Some((header, &header[2..], body))
}

#[cfg(test)]
mod tests;
