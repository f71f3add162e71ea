//! Sealing of stored records: AES-256-GCM under a key derived per record.
//!
//! The key is HKDF-SHA256 of the server's `encryption_key` *and* a secret that only the
//! browser holds (in its cookie), so neither a store dump nor a store dump plus the server key
//! opens a record. The storage key is the associated data: a record copied under another key
//! fails to open. Plaintext never leaves this module except to its owner.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

/// Length of the random nonce stored in front of each sealed record.
const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag at the end of each sealed record.
const TAG_LEN: usize = 16;
/// Domain separation for the HKDF expansion: bump when the record format changes.
const KEY_INFO: &[u8] = b"vestibule record key v1";

/// A sealed record could not be opened: wrong key, wrong browser secret, moved or tampered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the stored record does not open with this key")]
pub struct OpenError;

/// The server-wide 256-bit master key from `session.encryption_key`.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl MasterKey {
    /// Wraps 32 key bytes; the caller guarantees they come from a secure source.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// Derives the AES key for one record from the master key and the browser-held secret.
    fn record_cipher(&self, browser_secret: &[u8]) -> Aes256Gcm {
        let hkdf = Hkdf::<Sha256>::new(Some(browser_secret), self.0.expose_secret());
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 255*32 byte limit, so expansion cannot fail.
        let _ = hkdf.expand(KEY_INFO, &mut okm);
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(okm));
        okm.fill(0);
        cipher
    }

    /// Encrypts `plaintext` for the record stored under `storage_key` with a fresh random nonce.
    /// Output layout: nonce (12 bytes) || ciphertext || tag (16 bytes).
    pub fn seal(&self, browser_secret: &[u8], storage_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = self.record_cipher(browser_secret);
        let nonce_bytes: [u8; NONCE_LEN] = crate::random::bytes();
        let nonce = Nonce::from(nonce_bytes);
        let payload = Payload {
            msg: plaintext,
            aad: storage_key,
        };
        // Encryption only fails for inputs beyond 64 GiB, which records never approach.
        let ciphertext = cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts a record sealed by [`MasterKey::seal`] under the same secret and storage key.
    pub fn open(
        &self,
        browser_secret: &[u8],
        storage_key: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError);
        }
        let (nonce_bytes, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce_array: [u8; NONCE_LEN] = nonce_bytes.try_into().map_err(|_| OpenError)?;
        let payload = Payload {
            msg: ciphertext,
            aad: storage_key,
        };
        self.record_cipher(browser_secret)
            .decrypt(&Nonce::from(nonce_array), payload)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::new([byte; 32])
    }

    #[test]
    fn sealed_record_round_trips() {
        let sealed = key(1).seal(b"secret", b"k1", b"hello tokens");
        assert_eq!(
            key(1).open(b"secret", b"k1", &sealed).unwrap(),
            b"hello tokens"
        );
    }

    #[test]
    fn ciphertext_does_not_contain_plaintext_and_nonce_is_fresh() {
        let a = key(1).seal(b"secret", b"k1", b"access-token-value");
        let b = key(1).seal(b"secret", b"k1", b"access-token-value");
        assert_ne!(a, b, "two writes must use different nonces");
        assert!(!a.windows(6).any(|w| w == b"access"));
    }

    #[test]
    fn wrong_master_key_fails() {
        let sealed = key(1).seal(b"secret", b"k1", b"x");
        assert_eq!(key(2).open(b"secret", b"k1", &sealed), Err(OpenError));
    }

    #[test]
    fn server_key_alone_without_browser_secret_fails() {
        let sealed = key(1).seal(b"secret", b"k1", b"x");
        assert_eq!(key(1).open(b"other", b"k1", &sealed), Err(OpenError));
        assert_eq!(key(1).open(b"", b"k1", &sealed), Err(OpenError));
    }

    #[test]
    fn record_moved_to_another_storage_key_fails() {
        let sealed = key(1).seal(b"secret", b"k1", b"x");
        assert_eq!(key(1).open(b"secret", b"k2", &sealed), Err(OpenError));
    }

    #[test]
    fn tampered_or_truncated_record_fails() {
        let mut sealed = key(1).seal(b"secret", b"k1", b"some payload");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(key(1).open(b"secret", b"k1", &sealed), Err(OpenError));
        assert_eq!(key(1).open(b"secret", b"k1", &sealed[..10]), Err(OpenError));
        assert_eq!(key(1).open(b"secret", b"k1", &[]), Err(OpenError));
    }
}
