//! The replay record of back-channel logout tokens: each accepted `jti` is remembered until
//! the token stops being acceptable, so a replayed token ends nothing.
//!
//! It never stores the token itself, only a hash of its `jti`.

use std::time::Duration;

use super::store::storage_key;
use super::{Sessions, StoreError};
use crate::clock::unix_now;

/// The key that remembers an accepted logout token's `jti` (a random token id, unlike `sub`
/// and `sid`: a plain hash confirms nothing worth hiding).
fn logout_token_key(jti: &str) -> String {
    storage_key("logout-token", jti.as_bytes())
}

/// Clock skew added to a logout token's replay record, beyond its own acceptable window.
const REPLAY_MARGIN_SECS: u64 = 60;

impl Sessions {
    /// Records a back-channel logout token's `jti` until the token stops being acceptable
    /// (`SET NX`); `false` if it was already recorded (a replay).
    pub async fn accept_logout_token(
        &self,
        jti: &str,
        acceptable_until: u64,
    ) -> Result<bool, StoreError> {
        let ttl = acceptable_until.saturating_sub(unix_now()) + REPLAY_MARGIN_SECS;
        self.store
            .try_lock(&logout_token_key(jti), "accepted", Duration::from_secs(ttl))
            .await
    }

    /// Forgets an accepted `jti` whose logout did not complete, so the provider's retry works.
    pub async fn forget_logout_token(&self, jti: &str) {
        if let Err(error) = self.store.delete(&logout_token_key(jti)).await {
            tracing::debug!(error = %error, "could not forget a logout token's jti");
        }
    }
}
