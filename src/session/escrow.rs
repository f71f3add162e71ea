//! Refresh-token escrow: what lets a session ended *without its cookie* (from the user's other
//! device, by `max_per_user`, by the operator) still have its refresh token revoked.
//!
//! A session's record opens only with its browser's secret, so nothing but that browser can
//! reach its refresh token. With `session.refresh_token_escrow` on (the default), each
//! session's current refresh token is also kept beside it, alone, sealed under the server keys
//! (a key of its own derived from each, the record's key as associated data), in
//! `vestibule:revocation:<same hash>`, with the session's lifetime. Ending a session from
//! elsewhere takes it (`GETDEL`) and hands it over for revocation; nothing else ever opens it.
//! The price: a Redis dump *plus* the server keys yields refresh tokens (never access or ID
//! tokens, claims or cookies). With escrow off, that dump yields nothing, and sessions ended
//! from elsewhere end at once but their refresh tokens live on at the provider until they
//! expire (unusable through Vestibule: their only copy is deleted).

use std::time::Duration;

use super::store::storage_key;
use super::{SessionRecord, Sessions, StoreError, StoredToken};
use crate::clock::unix_now;

/// HKDF salt of escrow capsules (where a record's key uses the browser's secret): capsules get
/// keys of their own, which no record key equals.
const ESCROW_SALT: &[u8] = b"vestibule refresh-token escrow v1";

/// The key prefix of session records, whose hash the capsule's key shares.
const SESSION_KEY_PREFIX: &str = "vestibule:session:";

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

/// The escrow key beside a session record's key.
fn capsule_key(record_key: &str) -> String {
    match record_key.strip_prefix(SESSION_KEY_PREFIX) {
        Some(hash) => format!("vestibule:revocation:{hash}"),
        // Not a session key (never happens): a key of its own, still never the record's.
        None => storage_key("revocation", record_key.as_bytes()),
    }
}

impl Sessions {
    /// Keeps `record`'s refresh token in escrow beside `record_key` (or removes a stale capsule
    /// when it has none); nothing when escrow is off.
    pub(super) async fn escrow(
        &self,
        record_key: &str,
        record: &SessionRecord,
    ) -> Result<(), StoreError> {
        self.escrow_token(
            record_key,
            record.tokens.refresh_token.as_ref(),
            record.expires_at,
        )
        .await
    }

    /// [`Sessions::escrow`] of a refresh token for a session that ends at `expires_at`.
    pub(super) async fn escrow_token(
        &self,
        record_key: &str,
        refresh_token: Option<&StoredToken>,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        if !self.refresh_token_escrow {
            return Ok(());
        }
        let key = capsule_key(record_key);
        let Some(refresh_token) = refresh_token else {
            return self.store.delete(&key).await;
        };
        let remaining = expires_at.saturating_sub(unix_now()).max(1);
        let sealed = self
            .keys
            .seal(ESCROW_SALT, key.as_bytes(), refresh_token.text().as_bytes());
        self.store
            .put(&key, &sealed, Duration::from_secs(remaining))
            .await
    }

    /// Like [`Sessions::escrow_token`], for a write that already succeeded: a failure is
    /// logged, and a later remote end then revokes the previous (already rotated) token.
    pub(super) async fn escrow_after_write(
        &self,
        record_key: &str,
        refresh_token: Option<&StoredToken>,
        expires_at: u64,
    ) {
        if let Err(error) = self
            .escrow_token(record_key, refresh_token, expires_at)
            .await
        {
            tracing::warn!(error = %error, "could not escrow a session's refresh token");
        }
    }

    /// Takes the escrowed refresh token of the session at `record_key` (single use); `None`
    /// when escrow is off, the session had none, or no configured key opens it.
    pub(super) async fn take_escrowed(
        &self,
        record_key: &str,
    ) -> Result<Option<EndedRefreshToken>, StoreError> {
        let key = capsule_key(record_key);
        let Some(sealed) = self.store.take(&key).await? else {
            return Ok(None);
        };
        let opened = self.keys.open(ESCROW_SALT, key.as_bytes(), &sealed).ok();
        Ok(opened
            .and_then(|opened| String::from_utf8(opened.plaintext).ok())
            .map(EndedRefreshToken))
    }

    /// Deletes the capsule of a session ended by its own browser (which revokes the record's
    /// token itself); best effort.
    pub(super) async fn drop_escrow(&self, record_key: &str) {
        if let Err(error) = self.store.delete(&capsule_key(record_key)).await {
            tracing::debug!(error = %error, "could not delete an escrowed refresh token");
        }
    }
}
