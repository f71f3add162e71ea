//! Discovery: the provider's metadata and signing keys, fetched once and replaced on key rotation.
//!
//! A snapshot is swapped in whole (`arc-swap`), so a request always sees one consistent client;
//! a request that has one never waits for discovery. Attempts are serialised (one at a time,
//! and a request that needs the outcome of one already running shares it) and paced by
//! [`super::attempts`], which counts attempts rather than successes: a failing provider is
//! asked less and less often however many requests want it. A token anyone may post never
//! waits for an attempt someone else started: it answers from what is known, or `503` at once.

use std::sync::Arc;
use std::time::Instant;

#[cfg(doc)]
use openidconnect::core::CoreClient;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse,
};
use openidconnect::{
    ClientId, ClientSecret, EmptyAdditionalClaims, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    JsonWebKeySetUrl, JwsSigningAlgorithm, RedirectUrl, StandardErrorResponse, TokenUrl,
    UserInfoUrl,
};
use secrecy::ExposeSecret;

use super::attempts::{Attempts, Gate};
use super::back_channel::BackChannel;
use super::issuer::{IssuerRule, IssuerTemplate};
use super::metadata::{ExtraMetadata, ProviderMetadata};
use super::token_response::LenientTokenResponse;
use super::{OidcError, Provider, UserInfoMode};

/// The openidconnect client as discovery configures it (authorization and token endpoints
/// set): [`CoreClient`]'s types, but for the token response, read leniently.
pub(super) type Client = openidconnect::Client<
    EmptyAdditionalClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    LenientTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
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
    /// The provider's asymmetric ID-token algorithms (`id_token_signing_alg_values_supported`
    /// without HS*): what logout tokens fall back to while no algorithm has been learnt.
    pub(super) asymmetric_id_token_algs: Vec<CoreJwsSigningAlgorithm>,
    /// The UserInfo endpoint, on the back channel's origin (see [`BackChannel`]), if any.
    pub(super) userinfo_endpoint: Option<UserInfoUrl>,
    /// Where authorization requests are pushed (`oidc.par` against discovery, on the back
    /// channel's origin); `None`: through the browser.
    pub(super) par_endpoint: Option<url::Url>,
    /// How back-channel URLs on the issuer's origin are reached (distributed claims too).
    pub(super) back_channel: BackChannel,
    /// The multi-tenant template discovery named as its `issuer`, if it did (see
    /// [`super::issuer`]).
    pub(super) issuer_template: Option<IssuerTemplate>,
}

/// What a token anyone may post may have discovery do for it (see
/// [`Provider::rediscover_unsolicited`]).
pub(super) enum Unsolicited {
    /// A discovery newer than the one the token was checked against.
    Newer(Arc<Discovered>),
    /// The keys known are as fresh as a stranger may ask for: the token is checked against them.
    Current,
}

impl Provider {
    /// Fetches discovery and the JWKS now (at start-up, to report problems early).
    pub async fn discover(&self) -> Result<(), OidcError> {
        self.rediscover(None).await.map(|_| ())
    }

    /// Whether discovery (metadata and signing keys) has succeeded at least once.
    pub fn is_discovered(&self) -> bool {
        self.discovered.load().is_some()
    }

    /// The current discovery, fetching it on first use (a solicited attempt).
    pub(super) async fn current(&self) -> Result<Arc<Discovered>, OidcError> {
        match self.discovered.load_full() {
            Some(discovered) => Ok(discovered),
            None => self.rediscover(None).await,
        }
    }

    /// A solicited re-discovery replacing `stale` (with `stale` absent: the first one), unless
    /// another task already replaced it. A request arriving while an attempt runs waits for it
    /// and takes its outcome rather than asking again; while discovery fails, attempts back off
    /// and the requests in between are answered at once ([`OidcError::Deferred`]).
    pub(super) async fn rediscover(
        &self,
        stale: Option<&Arc<Discovered>>,
    ) -> Result<Arc<Discovered>, OidcError> {
        let _guard = self.discovery_lock.lock().await;
        if let Some(current) = self.replaced(stale) {
            return Ok(current);
        }
        let gate = self.attempts().solicited(Instant::now());
        match gate {
            Gate::Open => {}
            // The provider answered a moment ago: bound its load without failing a genuine key
            // rotation (the token came from its own token endpoint), by waiting.
            Gate::OpenAt(at) => tokio::time::sleep_until(at.into()).await,
            Gate::Closed { retry_in, .. } => return Err(OidcError::Deferred(retry_in)),
        }
        self.attempt().await
    }

    /// The current discovery for a token anyone may post: fetched on first use as an
    /// unsolicited attempt, never waiting for another one ([`OidcError::Deferred`] instead).
    pub(super) async fn current_unsolicited(&self) -> Result<Arc<Discovered>, OidcError> {
        if let Some(discovered) = self.discovered.load_full() {
            return Ok(discovered);
        }
        let _guard = self.try_discovery_lock()?;
        if let Some(current) = self.replaced(None) {
            return Ok(current);
        }
        let now = Instant::now();
        let gate = self.attempts().unsolicited(now);
        match gate {
            Gate::Open => self.attempt().await,
            Gate::Closed { retry_in, .. } => Err(OidcError::Deferred(retry_in)),
            Gate::OpenAt(at) => Err(OidcError::Deferred(at.saturating_duration_since(now))),
        }
    }

    /// An unsolicited re-discovery replacing `stale`, for a token anyone may post that no key of
    /// `stale` verifies. It never waits: while another attempt runs, or discovery backs off after
    /// failures, the answer is [`OidcError::Deferred`] (a `503` the provider may retry); within
    /// the interval after a successful attempt, [`Unsolicited::Current`].
    pub(super) async fn rediscover_unsolicited(
        &self,
        stale: &Arc<Discovered>,
    ) -> Result<Unsolicited, OidcError> {
        let _guard = self.try_discovery_lock()?;
        if let Some(current) = self.replaced(Some(stale)) {
            return Ok(Unsolicited::Newer(current));
        }
        let now = Instant::now();
        let gate = self.attempts().unsolicited(now);
        match gate {
            Gate::Open => self.attempt().await.map(Unsolicited::Newer),
            // The last attempt succeeded moments ago: its keys are what the provider publishes.
            Gate::Closed { failing: false, .. } => Ok(Unsolicited::Current),
            Gate::Closed { retry_in, .. } => Err(OidcError::Deferred(retry_in)),
            Gate::OpenAt(at) => Err(OidcError::Deferred(at.saturating_duration_since(now))),
        }
    }

    /// The discovery lock if no attempt holds it; else [`OidcError::Deferred`] (for requests
    /// that must not wait for an attempt someone else started).
    fn try_discovery_lock(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, OidcError> {
        self.discovery_lock
            .try_lock()
            .map_err(|_| OidcError::Deferred(std::time::Duration::from_secs(1)))
    }

    /// The current discovery, if it is not `stale` (with `stale` absent: if there is one).
    fn replaced(&self, stale: Option<&Arc<Discovered>>) -> Option<Arc<Discovered>> {
        self.discovered
            .load_full()
            .filter(|current| stale.is_none_or(|old| !Arc::ptr_eq(old, current)))
    }

    /// One attempt (the caller holds the discovery lock): fetched, recorded, swapped in.
    async fn attempt(&self) -> Result<Arc<Discovered>, OidcError> {
        self.attempts().begin(Instant::now());
        let fetched = super::observed("discovery", self.fetch_discovery()).await;
        self.attempts().end(Instant::now(), fetched.is_ok());
        let discovered = Arc::new(fetched?);
        self.discovered.store(Some(discovered.clone()));
        Ok(discovered)
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, Attempts> {
        // Plain bookkeeping: a panic elsewhere cannot leave it half-written.
        self.attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fetches the discovery document and the JWKS, checks the issuer, and builds the client.
    async fn fetch_discovery(&self) -> Result<Discovered, OidcError> {
        let settings = &self.settings;
        // URLs are shown redacted: a discovery URL may carry credentials (Basic authentication).
        let unavailable = |what: &str, url: &url::Url, error: &dyn std::fmt::Display| {
            OidcError::Unavailable(format!("{what} ({}): {error}", crate::redact::url(url)))
        };
        let discovery_url = &settings.discovery_url;
        let response = self
            .http
            .get(discovery_url.clone())
            .headers(crate::traces::headers())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| {
                unavailable("discovery request failed", discovery_url, &cause(error))
            })?;
        if !response.status().is_success() {
            return Err(unavailable(
                "discovery answered",
                discovery_url,
                &response.status(),
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| unavailable("discovery body", discovery_url, &cause(error)))?;
        let metadata: ProviderMetadata = serde_json::from_slice(&body)
            .map_err(|error| OidcError::Invalid(format!("discovery document: {error}")))?;
        let metadata_issuer = metadata.issuer().as_str().to_owned();
        let issuer_template = IssuerRule::discovered(
            &settings.issuer,
            &settings.allowed_tenants,
            &metadata_issuer,
        )
        .map_err(OidcError::Invalid)?;
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
            .map_err(|error| unavailable("JWKS fetch failed", jwks_uri.url(), &error))?;
        let token_uri = TokenUrl::from_url(back_channel.route(token_endpoint));
        let userinfo_endpoint = metadata
            .userinfo_endpoint()
            .map(|endpoint| UserInfoUrl::from_url(back_channel.route(endpoint.url().clone())));
        if userinfo_endpoint.is_none() && settings.userinfo == UserInfoMode::Required {
            return Err(OidcError::Invalid(
                "oidc.userinfo is \"required\", but the provider's discovery names no \
                 userinfo_endpoint"
                    .into(),
            ));
        }
        let par_endpoint = self.par_endpoint(metadata.additional_metadata())?;
        let par_endpoint = par_endpoint.map(|endpoint| back_channel.route(endpoint));
        let auth_type = self.client_auth.for_discovered(&metadata);
        let mut extra = metadata.additional_metadata().clone();
        extra.revocation_endpoint = extra
            .revocation_endpoint
            .map(|endpoint| back_channel.route(endpoint));
        if let Some(configured) = &settings.id_token_alg
            && !metadata
                .id_token_signing_alg_values_supported()
                .contains(&configured.0)
        {
            tracing::warn!(
                alg = %configured,
                "oidc.id_token_signed_response_alg is not in the provider's \
                 id_token_signing_alg_values_supported; logins fail unless it signs this client's \
                 ID tokens with it"
            );
        }
        let asymmetric_id_token_algs = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| !alg.uses_shared_secret())
            .cloned()
            .collect();
        let metadata = metadata.set_jwks(jwks.clone());
        let redirect = RedirectUrl::from_url(settings.redirect_uri.clone());
        let client: Client = openidconnect::Client::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            settings
                .client_secret
                .as_ref()
                .map(|secret| ClientSecret::new(secret.expose_secret().to_owned())),
        )
        .set_token_uri(token_uri)
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type);
        match &issuer_template {
            None => tracing::info!(issuer = %settings.issuer, "provider discovered"),
            Some(_) => tracing::info!(
                issuer = %settings.issuer,
                template = %metadata_issuer,
                tenants = settings.allowed_tenants.len(),
                "provider discovered: multi-tenant, tokens checked against the template with \
                 their own tenant (oidc.allowed_tenants)"
            ),
        }
        Ok(Discovered {
            client,
            extra,
            jwks,
            asymmetric_id_token_algs,
            userinfo_endpoint,
            par_endpoint,
            back_channel,
            issuer_template,
        })
    }
}

/// A request error without its URL (shown redacted by the caller), with its causes.
fn cause(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

impl Provider {
    /// The issuer rule under `discovered` (its template, if any); `None`: what the
    /// configuration alone allows (the issuer and its aliases).
    pub(super) fn issuer_rule<'a>(&'a self, discovered: Option<&'a Discovered>) -> IssuerRule<'a> {
        IssuerRule {
            issuer: &self.settings.issuer,
            aliases: &self.settings.issuer_aliases,
            allowed_tenants: &self.settings.allowed_tenants,
            template: discovered.and_then(|discovered| discovered.issuer_template.as_ref()),
        }
    }
}
