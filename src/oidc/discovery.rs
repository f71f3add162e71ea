//! Discovery: the provider's metadata and signing keys, fetched once and replaced on key rotation.
//!
//! A snapshot is swapped in whole (`arc-swap`), so a request always sees one consistent client.
//! Re-discovery is serialised and rate-limited: an unknown signing key can trigger it, but never
//! more than once per [`REDISCOVERY_INTERVAL`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreClient, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, JsonWebKeySetUrl,
    RedirectUrl, TokenUrl,
};
use secrecy::ExposeSecret;

use super::back_channel::BackChannel;
use super::metadata::{ExtraMetadata, ProviderMetadata};
use super::{OidcError, Provider};

/// The openidconnect client as discovery configures it (authorization and token endpoints set).
pub(super) type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointMaybeSet,
>;

/// One successful discovery: a configured client plus the endpoints openidconnect does not model.
pub(super) struct Discovered {
    /// The client, with the JWKS of this discovery and the client-authentication method in use.
    pub(super) client: Client,
    /// End-session, revocation and RFC 9207 metadata.
    pub(super) extra: ExtraMetadata,
    /// The provider's signing keys (also inside `client`, which does not expose them), for
    /// tokens openidconnect has no verifier for (back-channel logout tokens).
    pub(super) jwks: CoreJsonWebKeySet,
    /// The algorithms the provider signs ID tokens with (`id_token_signing_alg_values_supported`):
    /// the only ones accepted for its logout tokens too.
    pub(super) id_token_algs: Vec<CoreJwsSigningAlgorithm>,
    /// When this discovery was fetched (for the rate limit).
    pub(super) at: Instant,
}

/// Minimum time between two discoveries triggered by unknown signing keys. Only ID tokens
/// fetched from the provider's own token endpoint can trigger one, so this only bounds load.
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Minimum time between two discoveries triggered by tokens anyone may post (back-channel
/// logout tokens with an unknown key): a stranger can cost the provider one JWKS fetch per
/// interval at most, and never makes a request wait.
const UNSOLICITED_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

impl Provider {
    /// Fetches discovery and the JWKS now (at start-up, to report problems early).
    pub async fn discover(&self) -> Result<(), OidcError> {
        self.rediscover(None).await.map(|_| ())
    }

    /// Whether discovery (metadata and signing keys) has succeeded at least once.
    pub fn is_discovered(&self) -> bool {
        self.discovered.load().is_some()
    }

    /// The current discovery, fetching it on first use.
    pub(super) async fn current(&self) -> Result<Arc<Discovered>, OidcError> {
        match self.discovered.load_full() {
            Some(discovered) => Ok(discovered),
            None => self.rediscover(None).await,
        }
    }

    /// Whether a token anyone may post may trigger a re-discovery replacing `stale` now:
    /// when another task already replaced it, or it is older than the unsolicited interval.
    pub(super) fn may_rediscover_now(&self, stale: &Arc<Discovered>) -> bool {
        let replaced = self
            .discovered
            .load_full()
            .is_none_or(|current| !Arc::ptr_eq(&current, stale));
        replaced || stale.at.elapsed() >= UNSOLICITED_REDISCOVERY_INTERVAL
    }

    /// Re-runs discovery unless another task already replaced `stale` (or, with `stale` absent,
    /// unless a discovery exists at all).
    pub(super) async fn rediscover(
        &self,
        stale: Option<&Arc<Discovered>>,
    ) -> Result<Arc<Discovered>, OidcError> {
        let _guard = self.discovery_lock.lock().await;
        if let Some(current) = self.discovered.load_full() {
            if stale.is_none_or(|old| !Arc::ptr_eq(old, &current)) {
                return Ok(current);
            }
            // Bound the load on the provider without failing a genuine key rotation: wait out
            // the interval instead of answering with the stale keys.
            let elapsed = current.at.elapsed();
            if elapsed < REDISCOVERY_INTERVAL {
                tokio::time::sleep(REDISCOVERY_INTERVAL - elapsed).await;
            }
        }
        let discovered = Arc::new(super::observed("discovery", self.fetch_discovery()).await?);
        self.discovered.store(Some(discovered.clone()));
        Ok(discovered)
    }

    /// Fetches the discovery document and the JWKS, checks the issuer, and builds the client.
    async fn fetch_discovery(&self) -> Result<Discovered, OidcError> {
        let settings = &self.settings;
        let unavailable = |what: &str, error: &dyn std::fmt::Display| {
            OidcError::Unavailable(format!("{what} ({}): {error}", settings.discovery_url))
        };
        let response = self
            .http
            .get(settings.discovery_url.clone())
            .headers(crate::traces::headers())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| unavailable("discovery request failed", &error))?;
        if !response.status().is_success() {
            return Err(unavailable("discovery answered", &response.status()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| unavailable("discovery body", &error))?;
        let metadata: ProviderMetadata = serde_json::from_slice(&body)
            .map_err(|error| OidcError::Invalid(format!("discovery document: {error}")))?;
        if metadata.issuer().as_str() != settings.issuer {
            return Err(OidcError::Invalid(format!(
                "discovery issuer {:?} differs from configured oidc.issuer {:?}",
                metadata.issuer().as_str(),
                settings.issuer
            )));
        }
        let token_endpoint = metadata
            .token_endpoint()
            .map(|endpoint| endpoint.url().clone())
            .ok_or_else(|| OidcError::Invalid("discovery has no token_endpoint".into()))?;
        // Back-channel URLs, routed through the discovery origin where they name the issuer's.
        let back_channel =
            BackChannel::new(&settings.issuer, &settings.discovery_url, &token_endpoint);
        let jwks_uri =
            JsonWebKeySetUrl::from_url(back_channel.route(metadata.jwks_uri().url().clone()));
        let jwks = CoreJsonWebKeySet::fetch_async(&jwks_uri, &self.traced_http())
            .await
            .map_err(|error| unavailable("JWKS fetch failed", &error))?;
        let token_uri = TokenUrl::from_url(back_channel.route(token_endpoint));
        let auth_type = self.client_auth.for_discovered(&metadata);
        let mut extra = metadata.additional_metadata().clone();
        extra.revocation_endpoint = extra
            .revocation_endpoint
            .map(|endpoint| back_channel.route(endpoint));
        let id_token_algs = metadata.id_token_signing_alg_values_supported().clone();
        let metadata = metadata.set_jwks(jwks.clone());
        let redirect = RedirectUrl::from_url(settings.redirect_uri.clone());
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            Some(ClientSecret::new(
                settings.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_token_uri(token_uri)
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type);
        tracing::info!(issuer = %settings.issuer, "provider discovered");
        Ok(Discovered {
            client,
            extra,
            jwks,
            id_token_algs,
            at: Instant::now(),
        })
    }
}
