//! The configured providers (`[oidc]`, or each of `[[providers]]`), found by id (a login's
//! `provider=ID`), by issuer (a logout token's `iss`, a third-party login's `iss`) or by the
//! key a session or a login in progress stores.
//!
//! The first provider is stored as no key at all, as every session was before several
//! providers existed; the others by their ids. A stored id that is no longer configured finds
//! no provider: its session's tokens are never sent to another one.

use std::sync::Arc;

use super::Provider;

/// How a session or a login in progress names its provider in storage: `None` for the first.
pub type ProviderKey = Option<String>;

/// The providers, the first one first; never empty.
pub struct Providers {
    first: Arc<Provider>,
    others: Vec<Arc<Provider>>,
    /// Every provider's `private_key_jwt` keys, published (JSON, serialised once).
    client_key_set: String,
}

impl Providers {
    /// The registry of `first` and `others` (ids and issuers are distinct: the configuration
    /// checked them).
    pub fn new(first: Provider, others: Vec<Provider>) -> Self {
        let client_key_set = super::client_key_set(
            std::iter::once(&first)
                .chain(&others)
                .filter_map(|provider| provider.settings.client_keys.as_ref()),
        );
        Self {
            first: Arc::new(first),
            others: others.into_iter().map(Arc::new).collect(),
            client_key_set,
        }
    }

    /// The key set served at [`super::CLIENT_JWKS_PATH`]: the public halves of every
    /// provider's client keys (`{"keys":[]}` when none uses `private_key_jwt`).
    pub fn client_key_set(&self) -> &str {
        &self.client_key_set
    }

    /// The first provider: `[oidc]`, or the first of `[[providers]]`.
    pub fn first(&self) -> &Arc<Provider> {
        &self.first
    }

    /// Every provider, the first one first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        std::iter::once(&self.first).chain(&self.others)
    }

    /// Whether there is more than one (a login without `provider` then shows the chooser).
    pub fn is_several(&self) -> bool {
        !self.others.is_empty()
    }

    /// The provider whose id is `id`.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Provider>> {
        self.iter().find(|provider| provider.id() == id)
    }

    /// The provider that accepts `iss` as its issuer (the configured one, an alias, or an
    /// allowed tenant's under its template).
    pub fn by_issuer(&self, iss: &str) -> Option<&Arc<Provider>> {
        self.iter().find(|provider| provider.is_issuer(iss))
    }

    /// The provider a stored `key` names: the first for `None`; the one with that id (even
    /// if it has become the first since); `None` for an id no longer configured.
    pub fn by_key(&self, key: Option<&str>) -> Option<&Arc<Provider>> {
        match key {
            None => Some(&self.first),
            Some(id) => self.by_id(id),
        }
    }

    /// The provider a session stored as `key` may use with its tokens: that provider, if it
    /// is configured and, once discovered, accepts the issuer the session's `id_token` names.
    /// `None` otherwise (a provider or tenant removed, or a reordered `[[providers]]` whose
    /// new first provider is not the one a session stored without a key logged in at): its
    /// refresh token and ID token are then never sent anywhere.
    pub fn of_session(&self, key: Option<&str>, id_token: &str) -> Option<&Arc<Provider>> {
        let provider = self.by_key(key)?;
        if !provider.is_discovered() {
            // Not reachable yet: the next step (refresh, logout) waits for discovery anyway.
            return Some(provider);
        }
        let iss = super::jwt_issuer(id_token)?;
        provider.is_issuer(&iss).then_some(provider)
    }

    /// The key `provider` is stored under (see [`Providers::by_key`]).
    pub fn key_of(&self, provider: &Provider) -> ProviderKey {
        (provider.id() != self.first.id()).then(|| provider.id().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::ProviderSettings;

    fn provider(id: &str, issuer: &str) -> Provider {
        Provider::new(ProviderSettings::for_testing(id, issuer)).unwrap()
    }

    fn two() -> Providers {
        Providers::new(
            provider("staff", "https://staff.example"),
            vec![provider("partners", "https://partners.example")],
        )
    }

    #[test]
    fn the_first_provider_is_stored_as_no_key_and_others_by_their_ids() {
        let providers = two();
        let staff = providers.by_id("staff").unwrap();
        let partners = providers.by_id("partners").unwrap();
        assert_eq!(providers.key_of(staff), None, "as records were before");
        assert_eq!(providers.key_of(partners).as_deref(), Some("partners"));
        assert_eq!(providers.by_key(None).unwrap().id(), "staff");
        assert_eq!(providers.by_key(Some("partners")).unwrap().id(), "partners");
        // A provider that became the first keeps the sessions stored under its id; an unknown
        // id is no provider at all: such a session's tokens go nowhere.
        assert_eq!(providers.by_key(Some("staff")).unwrap().id(), "staff");
        assert!(providers.by_key(Some("gone")).is_none());
    }

    #[test]
    fn issuers_and_ids_find_exactly_their_provider() {
        let providers = two();
        assert!(providers.is_several());
        assert_eq!(
            providers
                .by_issuer("https://partners.example")
                .unwrap()
                .id(),
            "partners"
        );
        assert!(
            providers
                .by_issuer("https://partners.example/other")
                .is_none()
        );
        assert!(providers.by_id("nobody").is_none());
        let one = Providers::new(provider("default", "https://op.example"), Vec::new());
        assert!(!one.is_several());
        let ids: Vec<&str> = providers.iter().map(|p| p.id()).collect();
        assert_eq!(ids, ["staff", "partners"]);
    }
}
