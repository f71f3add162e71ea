//! Refresh-token escrow: what lets a session ended *without its cookie* (from the user's other
//! device, by `max_per_user`, by the operator, by the provider) still have its refresh token
//! revoked.
//!
//! A session's record opens only with its browser's secret, so without escrow nothing but that
//! browser can reach its refresh token. With `session.refresh_token_escrow` on (the default),
//! the refresh token is not in that sealed record but beside it, in the same Redis value,
//! sealed under the server keys alone, with a key derived for this record (its Redis key in
//! the HKDF info, and as associated data: see [`super::crypto`]):
//!
//! `0xE6 ‖ length (u16, big endian) ‖ refresh token sealed under the server keys ‖ the rest of
//! the record sealed under the server keys and the browser's secret`
//!
//! Values that start with `0xE5` have their refresh token sealed under one key per server key
//! shared by every record, as before keys were derived per record: they still open, and the
//! next write of the session (a refresh, a re-seal under a new key) replaces them.
//!
//! One value, so every write (a refresh's compare-and-set included) replaces both halves at
//! once, and the token is stored once. Ending a session from elsewhere takes the value
//! (`GETDEL`) and opens the first half only. The price: a Redis dump *plus* the server keys
//! yields refresh tokens (never access or ID tokens, claims or cookies; using a refresh token
//! also takes the client's credentials). With escrow off, that dump yields nothing, and
//! sessions ended from elsewhere end at once but their refresh tokens live on at the provider
//! until they expire (unusable through Vestibule: their only copy is deleted).

use super::crypto::ServerSealing;
use super::record::StoredToken;
use super::{SessionRecord, Sessions, StoreError};

/// First byte of a value with an escrowed refresh token sealed under a key of its record's.
const ESCROW_MARKER: u8 = 0xE6;
/// First byte of a value whose refresh token is sealed under the key every record shared
/// (written before per-record keys; read, never written).
const SHARED_KEY_ESCROW_MARKER: u8 = 0xE5;

/// A refresh token of a session that just ended, to be revoked at the provider. Not `Debug`:
/// it is a credential.
pub struct EndedRefreshToken(String);

impl EndedRefreshToken {
    /// The token, for the revocation request.
    pub fn text(&self) -> &str {
        &self.0
    }
}

/// What ending sessions did.
#[derive(Default)]
pub struct Ended {
    /// How many sessions ended.
    pub count: usize,
    /// Their refresh tokens, recovered from escrow, for the caller to revoke.
    pub refresh_tokens: Vec<EndedRefreshToken>,
}

/// How the escrowed part of a value that has both was sealed, that part, and the
/// browser-sealed part.
fn split(value: &[u8]) -> Option<(ServerSealing, &[u8], &[u8])> {
    let (&marker, rest) = value.split_first()?;
    let sealing = match marker {
        ESCROW_MARKER => ServerSealing::PerRecord,
        SHARED_KEY_ESCROW_MARKER => ServerSealing::Shared,
        _ => return None,
    };
    let length = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    let rest = rest.get(2..)?;
    let (escrowed, browser_part) = rest.split_at_checked(length)?;
    (!browser_part.is_empty()).then_some((sealing, escrowed, browser_part))
}

impl Sessions {
    /// The value stored for `record` under `storage_key`: sealed with the browser's
    /// `secret`, its refresh token in escrow in front when escrow is on.
    pub(super) fn seal_value(
        &self,
        secret: &[u8],
        storage_key: &str,
        record: &SessionRecord,
    ) -> Result<Vec<u8>, StoreError> {
        let encode = |record: &SessionRecord| {
            record
                .encode()
                .map_err(|error| StoreError::Unavailable(format!("cannot encode session: {error}")))
        };
        let escrowed = record
            .tokens
            .refresh_token
            .as_ref()
            .filter(|_| self.refresh_token_escrow);
        let Some(refresh_token) = escrowed else {
            return Ok(self
                .keys
                .seal(secret, storage_key.as_bytes(), &encode(record)?));
        };
        let mut rest = record.clone();
        rest.tokens.refresh_token = None;
        let server_part = self
            .keys
            .seal_for_server(storage_key.as_bytes(), refresh_token.as_bytes());
        let browser_part = self
            .keys
            .seal(secret, storage_key.as_bytes(), &encode(&rest)?);
        let length = u16::try_from(server_part.len())
            .map_err(|_| StoreError::Unavailable("refresh token too large to escrow".into()))?;
        let mut value = Vec::with_capacity(3 + server_part.len() + browser_part.len());
        value.push(ESCROW_MARKER);
        value.extend_from_slice(&length.to_be_bytes());
        value.extend_from_slice(&server_part);
        value.extend_from_slice(&browser_part);
        Ok(value)
    }

    /// Opens a stored value with the browser's `secret`: the record (its refresh token back in
    /// place) and whether it is sealed under the current key; `None` when nothing opens it.
    pub(super) fn open_value(
        &self,
        secret: &[u8],
        storage_key: &str,
        value: &[u8],
    ) -> Option<(SessionRecord, bool)> {
        if let Some((sealing, server_part, browser_part)) = split(value)
            && let Ok(opened) = self.keys.open(secret, storage_key.as_bytes(), browser_part)
        {
            let mut record = SessionRecord::decode(&opened.plaintext)?;
            let escrowed = self
                .keys
                .open_for_server(storage_key.as_bytes(), server_part, sealing)
                .ok()?;
            record.tokens.refresh_token = Some(StoredToken::from_bytes(escrowed.plaintext)?);
            return Some((record, opened.current && escrowed.current));
        }
        // No escrow (or a record without one whose random first byte is the marker).
        match self.keys.open(secret, storage_key.as_bytes(), value) {
            Ok(opened) => Some((SessionRecord::decode(&opened.plaintext)?, opened.current)),
            Err(error) => {
                // A removed key, or a cookie whose secret is wrong: no session, never an error.
                tracing::info!(reason = %error, "a session record did not open; no session");
                None
            }
        }
    }

    /// The refresh token escrowed in a stored value, opened with the server keys alone;
    /// `None` when the value has none (escrow off, or no refresh token).
    pub(super) fn escrowed_token(
        &self,
        storage_key: &str,
        value: &[u8],
    ) -> Option<EndedRefreshToken> {
        let (sealing, server_part, _) = split(value)?;
        let opened = self
            .keys
            .open_for_server(storage_key.as_bytes(), server_part, sealing)
            .ok()?;
        Some(EndedRefreshToken(
            StoredToken::from_bytes(opened.plaintext)?.text(),
        ))
    }
}
