//! One refresh at a time per session across every instance that shares the store.
//!
//! The lock is a key in the store (`SET NX` with a short lease) whose value names its holder;
//! the holder renews the lease while its refresh runs, however slow the provider, and only
//! the holder can renew or release it. Losing it never corrupts anything: the refresh's
//! write is fenced (compare-and-set), so a late holder cannot overwrite the next one's tokens.
//! The session layer takes the same lock for the one write that re-seals a session under a
//! new key, so that write never lands inside a refresh (a request finding it taken waits as
//! for a refresh, for one round trip).

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::AccessError;
use super::local_lock::LocalGuard;
use crate::audit::context::carry;
use crate::oidc::OidcError;
use crate::session::{SessionCookie, Store, StoreError};

/// How long the cross-instance refresh lock lives unless its holder renews it. The holder
/// renews it every [`REFRESH_LOCK_RENEWAL`] while its refresh runs, however slow the provider
/// is; if the holder dies, another instance may refresh after at most this long.
pub const REFRESH_LOCK_LEASE: Duration = Duration::from_secs(10);

/// How often a refresh in progress renews its lock: a few renewals fit in one lease, so a
/// late one does not lose it.
pub const REFRESH_LOCK_RENEWAL: Duration = Duration::from_millis(2_500);

/// How often a request waiting for another instance's refresh looks for the new tokens.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long a request waits for another instance's refresh before answering 503 (the
/// session is kept). A holder that died releases the lock within one lease, well inside it.
const LOCK_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One session's lock in the shared store, as one would-be holder sees it.
pub(super) struct ClusterLock {
    store: Store,
    key: String,
    /// A random value only this holder knows: renewing and releasing check it.
    owner: String,
}

impl ClusterLock {
    /// The lock of `cookie`'s session in `store`, with a new random owner; not taken yet.
    pub(super) fn new(store: &Store, cookie: &SessionCookie) -> Self {
        Self::named(store, cookie.refresh_lock_key())
    }

    /// The lock stored under `key` (one token held for an API: see `held.rs`).
    pub(super) fn named(store: &Store, key: String) -> Self {
        Self {
            store: store.clone(),
            key,
            owner: crate::random::url_safe_secret(),
        }
    }

    /// Takes the lock for one lease if nobody holds it.
    pub(super) async fn try_take(&self) -> Result<bool, StoreError> {
        self.store
            .try_lock(&self.key, &self.owner, REFRESH_LOCK_LEASE)
            .await
    }

    /// Renews the lock every [`REFRESH_LOCK_RENEWAL`] for as long as it is polled (the refresh
    /// it guards is running). Never completes: if the lock is lost, the refresh goes on and
    /// its fenced write decides.
    pub(super) async fn keep(&self) -> std::convert::Infallible {
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + REFRESH_LOCK_RENEWAL,
            REFRESH_LOCK_RENEWAL,
        );
        loop {
            ticks.tick().await;
            match self
                .store
                .renew_lock(&self.key, &self.owner, REFRESH_LOCK_LEASE)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "the refresh lock lapsed while the provider answered; the refreshed tokens are stored only if no one else refreshed meanwhile"
                    );
                    return std::future::pending().await;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "renewing the refresh lock failed; retrying");
                }
            }
        }
    }

    /// Releases the lock if this holder still has it; a failure only leaves it to expire.
    pub(super) async fn release(&self) {
        if let Err(error) = self.store.unlock(&self.key, &self.owner).await {
            tracing::warn!(error = %error, "releasing the refresh lock failed; it expires by itself");
        }
    }
}

/// A request's wait for another instance's refresh, bounded by [`LOCK_WAIT_LIMIT`].
impl ClusterLock {
    /// Runs `work` in a task of its own while this lock is taken and kept (and this instance's
    /// `local` guard held), then releases both: once the provider has answered, its tokens are
    /// stored even if the call that asked is cancelled. `failed` is the answer should the
    /// task itself fail.
    pub(super) async fn hold_while<T: Send + 'static>(
        self,
        local: LocalGuard,
        work: impl Future<Output = Result<T, AccessError>> + Send + 'static,
        failed: fn() -> AccessError,
    ) -> Result<T, AccessError> {
        let task = tokio::spawn(carry(
            async move {
                let outcome = self.run_kept(work).await;
                drop(local);
                outcome
            }
            .in_current_span(),
        ));
        task.await.unwrap_or_else(|_| Err(failed()))
    }

    /// Runs `work` while this lock (taken) is kept, then releases it.
    pub(super) async fn run_kept<T>(&self, work: impl Future<Output = T>) -> T {
        let outcome = tokio::select! {
            biased;
            outcome = work => outcome,
            never = self.keep() => match never {},
        };
        self.release().await;
        outcome
    }
}

pub(super) struct Wait {
    deadline: Instant,
}

impl Wait {
    /// Starts waiting now.
    pub(super) fn start() -> Self {
        Self {
            deadline: Instant::now() + LOCK_WAIT_LIMIT,
        }
    }

    /// Pauses until the next look at the session, or gives up (a 503; the session is kept)
    /// once the holder has taken too long.
    pub(super) async fn next_poll(&self) -> Result<(), AccessError> {
        if Instant::now() > self.deadline {
            return Err(AccessError::Provider(OidcError::Unavailable(
                "another instance is still refreshing this session".into(),
            )));
        }
        tokio::time::sleep(LOCK_POLL_INTERVAL).await;
        Ok(())
    }
}
