//! Writing over a loaded session only if the store still holds exactly what was read
//! (compare-and-set): a refresh's replacement, a re-seal under the current key, a deletion.
//!
//! It never writes over what another instance wrote meanwhile, and never resurrects a session
//! a logout ended: a write that finds the record changed does nothing.

use std::time::Duration;

use super::{ActiveSession, SessionCookie, SessionRecord, Sessions, StoreError};

/// How long a re-seal's hold on its session's refresh lock lasts unless released (see
/// [`Sessions::reseal`]): a refresh's lease, far longer than the one compare-and-set it guards
/// can take (each store call is bounded to about a second), so that write cannot land after
/// the lock lapsed and a refresh took it.
const RESEAL_LOCK_LEASE: Duration = Duration::from_secs(10);

/// A refreshed record sealed for one session, ready to be written (see
/// [`Sessions::replace`]).
pub struct Replacement {
    key: String,
    expected: std::sync::Arc<[u8]>,
    sealed: Vec<u8>,
    ttl: Duration,
}

impl Sessions {
    /// Writes `record`, read as `read` under an older key or format, back under the current
    /// key, only over exactly what was read (the compare-and-set a refresh's write uses, so a
    /// concurrent write wins), and only while holding the session's refresh lock: a refresh
    /// that is running holds it from before its read to after its compare-and-set, which a
    /// re-seal landing in between would make fail (losing the tokens the provider just
    /// rotated). If a refresh holds it, the refresh writes under the current key anyway.
    /// Best effort: a failure leaves the old record, which still opens, and never fails the
    /// request. Returns the sealed record the store now holds, as far as this instance knows.
    pub(super) async fn reseal(
        &self,
        cookie: &SessionCookie,
        record: &SessionRecord,
        read: std::sync::Arc<[u8]>,
    ) -> std::sync::Arc<[u8]> {
        let (key, sealed, ttl) = match self.seal_record(cookie, record) {
            Ok(sealed) => sealed,
            Err(error) => {
                tracing::warn!(error = %error, "re-sealing a session under the current key failed");
                return read;
            }
        };
        let lock = cookie.refresh_lock_key();
        let owner = crate::random::url_safe_secret();
        match self.store.try_lock(&lock, &owner, RESEAL_LOCK_LEASE).await {
            Ok(true) => {}
            Ok(false) => return read,
            Err(error) => {
                tracing::warn!(error = %error, "re-sealing a session under the current key failed");
                return read;
            }
        }
        let written = match self
            .store
            .replace_if_unchanged(&key, &read, &sealed, ttl)
            .await
        {
            Ok(written) => written,
            Err(error) => {
                // The write may still land: the lock is left to expire, not released under it.
                tracing::warn!(error = %error, "re-sealing a session under the current key failed");
                return read;
            }
        };
        if let Err(error) = self.store.unlock(&lock, &owner).await {
            tracing::warn!(error = %error, "releasing the re-seal's lock failed; it expires by itself");
        }
        if written {
            tracing::debug!("session re-sealed under the current key");
            sealed.into()
        } else {
            read
        }
    }

    /// Seals `record` to replace what `current` read. Sealed once, so a retried write of the
    /// same replacement is recognised if an earlier attempt's reply was lost.
    pub fn prepare_replacement(
        &self,
        current: &ActiveSession,
        record: &SessionRecord,
    ) -> Result<Replacement, StoreError> {
        let (key, sealed, ttl) = self.seal_record(&current.cookie, record)?;
        Ok(Replacement {
            key,
            expected: current.sealed.clone(),
            sealed,
            ttl,
        })
    }

    /// Writes `replacement` only if the store still holds exactly what its session read:
    /// `Ok(false)` if the session was ended or rewritten meanwhile (a logout wins over a
    /// refresh that finishes after it, and a refresh whose lock lapsed cannot overwrite the
    /// next holder's tokens). `Ok(true)` also when an earlier attempt of this replacement
    /// already wrote it. The TTL is the idle timeout, capped by the absolute end.
    #[tracing::instrument(level = "debug", name = "session_store", skip_all)]
    pub async fn replace(&self, replacement: &Replacement) -> Result<bool, StoreError> {
        let Replacement {
            key,
            expected,
            sealed,
            ttl,
        } = replacement;
        if self
            .store
            .replace_if_unchanged(key, expected, sealed, *ttl)
            .await?
        {
            return Ok(true);
        }
        // The sealed bytes carry a fresh random nonce: finding them means we wrote them.
        Ok(self.store.get(key).await?.as_deref() == Some(sealed.as_slice()))
    }

    /// Deletes the session only if the store still holds exactly what `current` read: a
    /// refresh whose lock lapsed must not end a session another instance just renewed.
    pub async fn delete_if_unchanged(&self, current: &ActiveSession) -> Result<bool, StoreError> {
        let deleted = self
            .store
            .delete_if_unchanged(&current.cookie.storage_key(), &current.sealed)
            .await?;
        if deleted {
            self.unindex(&current.record).await;
            self.drop_held_tokens(&current.cookie.storage_key()).await;
        }
        Ok(deleted)
    }
}
