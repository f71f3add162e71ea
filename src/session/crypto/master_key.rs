//! One server key and what is derived from it: the AES-256-GCM key of each record (HKDF with
//! the browser's secret, or with a fixed salt and the record's storage key), and the sealing
//! and opening of `nonce ‖ ciphertext ‖ tag` after a header.
//!
//! Key bytes never leave this module but as derived keys; it never chooses which key seals or
//! reads a label (the ring in `crypto.rs` does).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use super::purpose::purpose_key;

/// Length of the random nonce stored in each sealed record.
pub(super) const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag at the end of each sealed record.
pub(super) const TAG_LEN: usize = 16;
/// HKDF info of unlabelled records (the format of the single `encryption_key`).
pub(super) const UNLABELLED_INFO: &[u8] = b"vestibule record key v1";
/// HKDF info of labelled records: a new format gets its own derived keys.
pub(super) const LABELLED_INFO: &[u8] = b"vestibule record key v2";

/// The HKDF salt of what is sealed under the server keys alone with one key per record, in
/// the place of a browser's secret (no browser secret, 32 random bytes, equals it).
const SERVER_ONLY_SALT: &[u8] = b"vestibule server-only record key v2";
/// The HKDF salt of the one key per server key that escrowed refresh tokens were sealed under
/// before keys were derived per record: records sealed so still open, nothing seals so again.
const SHARED_SERVER_SALT: &[u8] = b"vestibule refresh-token escrow v1";

/// Where a record's key comes from besides the server key.
#[derive(Clone, Copy)]
pub(super) enum Derivation<'a> {
    /// A session record: the browser-held secret is the HKDF salt.
    Browser(&'a [u8]),
    /// Sealed under the server keys alone, one key per record (its storage key in the info).
    ServerPerRecord,
    /// Sealed under the server keys alone with one key for every record (opened, never sealed).
    ServerShared,
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

    /// A key for `purpose` derived from this one (see [`purpose_key`]).
    pub(super) fn purpose_key(&self, purpose: &[u8]) -> SecretBox<[u8; 32]> {
        purpose_key(self.key.expose_secret(), purpose)
    }

    /// The AES key of one record stored under `storage_key`; `info` names the format.
    pub(super) fn record_cipher(
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
    pub(super) fn seal_after(&self, info: &[u8], header: Vec<u8>, parts: SealParts<'_>) -> Vec<u8> {
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
    pub(super) fn open_after(
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
pub(super) struct SealParts<'a> {
    /// Where the record's key comes from besides the server key.
    pub(super) derivation: Derivation<'a>,
    /// The record's storage key: in the key's derivation (server-only) and the associated data.
    pub(super) storage_key: &'a [u8],
    /// What is sealed.
    pub(super) plaintext: &'a [u8],
    /// A fresh random nonce.
    pub(super) nonce: [u8; NONCE_LEN],
}
