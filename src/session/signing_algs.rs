//! The ID-token signing algorithms this deployment has received, shared by its instances
//! through the store: a back-channel logout token that lands on an instance which never
//! verified an ID token itself (just restarted, behind a load balancer) is still checked
//! against the algorithms the provider really signs this client's tokens with.
//!
//! One small set under one key, with a TTL longer than the longest session, so no live session
//! is older than what the set remembers. An instance writes an algorithm only when it is new to
//! it or its own last write is [`REWRITE_INTERVAL`] old: a login or refresh writes rarely, a
//! proxied call never. What an algorithm may be learnt from is the protocol's decision
//! ([`crate::oidc::Provider::learnable_alg`]); this file only remembers names.

use std::time::Duration;

use super::{Sessions, StoreError};
use crate::clock::unix_now;

/// The set of learnt algorithm names.
const KEY: &str = "vestibule:id-token-algs";

/// How often one instance writes an algorithm it keeps receiving (which also pushes the set's
/// expiry back).
const REWRITE_INTERVAL: Duration = Duration::from_secs(3600);

/// Distinct algorithms one instance remembers writing (a provider uses one or two).
pub(super) const REMEMBERED_ALGS: usize = 8;

/// The memo of algorithms this instance wrote lately.
pub(super) fn memo() -> crate::clock::OncePerInterval {
    crate::clock::OncePerInterval::new(REWRITE_INTERVAL, REMEMBERED_ALGS)
}

impl Sessions {
    /// Records that a verified ID token was signed with `alg`, for every instance. Written
    /// at most once per [`REWRITE_INTERVAL`] per algorithm by this instance; the set then lives
    /// at least the absolute session timeout beyond the write, so it outlives every session
    /// created or refreshed before the next write.
    pub async fn learn_id_token_alg(&self, alg: &str) -> Result<(), StoreError> {
        if !self.algs_written.due(alg, unix_now()) {
            return Ok(());
        }
        let ttl = self.absolute_timeout + REWRITE_INTERVAL;
        let written = self.store.add_to_set(KEY, alg, ttl).await;
        if written.is_err() {
            // Not written: the next login tries again.
            self.algs_written.forget(alg);
        }
        written
    }

    /// The algorithms any instance learnt (names, as the provider's JOSE headers spell them).
    pub async fn learnt_id_token_algs(&self) -> Result<Vec<String>, StoreError> {
        self.store.set_members(KEY).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{MasterKey, Store};

    fn sessions(store: Store) -> Sessions {
        Sessions::new(
            store,
            MasterKey::new([7; 32]),
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
    }

    #[tokio::test]
    async fn an_algorithm_one_instance_learns_is_known_to_all() {
        let store = Store::memory();
        let (first, restarted) = (sessions(store.clone()), sessions(store));
        assert!(restarted.learnt_id_token_algs().await.unwrap().is_empty());
        first.learn_id_token_alg("RS256").await.unwrap();
        first.learn_id_token_alg("RS256").await.unwrap();
        first.learn_id_token_alg("ES256").await.unwrap();
        let mut learnt = restarted.learnt_id_token_algs().await.unwrap();
        learnt.sort();
        assert_eq!(learnt, ["ES256", "RS256"]);
    }
}
