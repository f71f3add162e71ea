//! Keys for purposes other than sealing records, and the HMAC they are made with.
//!
//! It never seals or opens a record, and never returns the secret it derives from.

use secrecy::SecretBox;
use sha2::Sha256;

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
