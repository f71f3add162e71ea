//! The key id of a labelled record: `session.encryption_keys` names, and the header
//! `0xA5 ‖ id length ‖ id` that carries one in front of a record.
//!
//! It never touches key bytes or ciphertext: it only writes and splits the header.

/// First byte of a labelled record.
pub(super) const LABEL_MARKER: u8 = 0xA5;
/// Longest key id, so the id's length fits one byte and records stay small.
pub const MAX_KEY_ID_LEN: usize = 32;

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

/// The header of a record labelled with `id`: marker, id length, id.
pub(super) fn label(id: &KeyId) -> Vec<u8> {
    let id = id.as_str().as_bytes();
    let mut header = Vec::with_capacity(2 + id.len());
    header.push(LABEL_MARKER);
    // KeyId::parse caps the length at MAX_KEY_ID_LEN, well below 256.
    header.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    header.extend_from_slice(id);
    header
}

/// Splits a labelled record into header, id and `nonce ‖ ciphertext ‖ tag`; `None` if it
/// cannot be one.
pub(super) fn parse_label(sealed: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&marker, rest) = sealed.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if marker != LABEL_MARKER || len == 0 || len > MAX_KEY_ID_LEN || rest.len() < len {
        return None;
    }
    let (header, body) = sealed.split_at(2 + len);
    Some((header, &header[2..], body))
}
