//! The OpenID Provider, as seen by a confidential client: discovery, authorization requests,
//! code exchange, ID-token validation, refresh, revocation and the end-session URL.
//!
//! Protocol only: nothing here knows about cookies, sessions or HTTP handlers. Tokens leave
//! this module only inside [`LoginTokens`] / [`RefreshedTokens`], which are not `Debug`.

mod metadata;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreIdToken, CoreJsonWebKeySet,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use url::Url;

use crate::clock::unix_now;
use crate::config::{ClientAuthMethod, Settings};
use metadata::{ExtraMetadata, ProviderMetadata};

/// What went wrong talking to the provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense (a 502/503 for the caller).
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the grant (`invalid_grant`): the tokens are no longer valid.
    #[error("identity provider rejected the grant: {0}")]
    Rejected(String),
    /// The provider's answer failed validation (bad ID token, wrong issuer, …).
    #[error("identity provider response is invalid: {0}")]
    Invalid(String),
}

/// Settings the provider client needs, taken from [`Settings`].
pub struct ProviderSettings {
    issuer: String,
    discovery_url: Url,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: Url,
    scopes: Vec<String>,
    prompt: Option<String>,
    auth_method: Option<ClientAuthMethod>,
}

impl ProviderSettings {
    /// Extracts the provider-related settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let oidc = &settings.oidc;
        let discovery_url = oidc.discovery_url.clone().unwrap_or_else(|| {
            let well_known = format!(
                "{}/.well-known/openid-configuration",
                oidc.issuer.trim_end_matches('/')
            );
            // The issuer was validated as a URL; appending a path keeps it one.
            Url::parse(&well_known).unwrap_or_else(|_| settings.public_url.clone())
        });
        let wants_offline = oidc.scopes.iter().any(|scope| scope == "offline_access");
        let prompt = match &oidc.prompt {
            Some(prompt) if prompt.is_empty() => None,
            Some(prompt) => Some(prompt.clone()),
            None if wants_offline => Some("consent".to_owned()),
            None => None,
        };
        Self {
            issuer: oidc.issuer.clone(),
            discovery_url,
            client_id: oidc.client_id.clone(),
            client_secret: oidc.client_secret.clone(),
            redirect_uri: settings.redirect_uri(),
            scopes: oidc.scopes.clone(),
            prompt,
            auth_method: oidc.client_auth_method,
        }
    }
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointMaybeSet,
>;

/// One successful discovery: a configured client plus the endpoints openidconnect does not model.
struct Discovered {
    client: Client,
    extra: ExtraMetadata,
    at: Instant,
}

/// A started authorization request: the URL to send the browser to and what to remember.
pub struct AuthorizationRequest {
    /// The provider's authorization URL with all parameters.
    pub url: Url,
    /// The `state` value.
    pub state: String,
    /// The `nonce` value.
    pub nonce: String,
    /// The PKCE verifier for the code exchange.
    pub pkce_verifier: String,
}

/// Tokens and verified claims from a code exchange.
pub struct LoginTokens {
    /// The ID token's `sub`.
    pub sub: String,
    /// All claims of the verified ID token.
    pub claims: Map<String, Value>,
    /// The raw tokens.
    pub tokens: crate::session::TokenSet,
}

/// Tokens from a refresh grant.
pub struct RefreshedTokens {
    /// The new token set (old refresh token kept when none was returned).
    pub tokens: crate::session::TokenSet,
    /// Claims of the new ID token, when one was returned.
    pub claims: Option<Map<String, Value>>,
}

/// Minimum time between two discoveries triggered by unknown signing keys. Only ID tokens
/// fetched from the provider's own token endpoint can trigger one, so this only bounds load.
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// The OpenID Provider client.
pub struct Provider {
    settings: ProviderSettings,
    http: reqwest::Client,
    discovered: ArcSwapOption<Discovered>,
    discovery_lock: Mutex<()>,
}

impl Provider {
    /// A provider client; discovery happens on first use (or in [`Provider::discover`]).
    pub fn new(settings: ProviderSettings) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            // Never follow redirects from the provider's back channel (SSRF and token leaks).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|error| {
                OidcError::Unavailable(format!("cannot build HTTP client: {error}"))
            })?;
        Ok(Self {
            settings,
            http,
            discovered: ArcSwapOption::empty(),
            discovery_lock: Mutex::new(()),
        })
    }

    /// Fetches discovery and the JWKS now (at start-up, to report problems early).
    pub async fn discover(&self) -> Result<(), OidcError> {
        self.rediscover(None).await.map(|_| ())
    }

    async fn current(&self) -> Result<Arc<Discovered>, OidcError> {
        match self.discovered.load_full() {
            Some(discovered) => Ok(discovered),
            None => self.rediscover(None).await,
        }
    }

    /// Re-runs discovery unless another task already replaced `stale` (or, with `stale` absent,
    /// unless a discovery exists at all).
    async fn rediscover(
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
        let discovered = Arc::new(self.fetch_discovery().await?);
        self.discovered.store(Some(discovered.clone()));
        Ok(discovered)
    }

    async fn fetch_discovery(&self) -> Result<Discovered, OidcError> {
        let unavailable = |what: &str, error: &dyn std::fmt::Display| {
            OidcError::Unavailable(format!("{what} ({}): {error}", self.settings.discovery_url))
        };
        let response = self
            .http
            .get(self.settings.discovery_url.clone())
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
        if metadata.issuer().as_str() != self.settings.issuer {
            return Err(OidcError::Invalid(format!(
                "discovery issuer {:?} differs from configured oidc.issuer {:?}",
                metadata.issuer().as_str(),
                self.settings.issuer
            )));
        }
        let jwks = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(|error| unavailable("JWKS fetch failed", &error))?;
        let token_uri = metadata
            .token_endpoint()
            .cloned()
            .ok_or_else(|| OidcError::Invalid("discovery has no token_endpoint".into()))?;
        let auth_type = self.auth_type(&metadata);
        let extra = metadata.additional_metadata().clone();
        let metadata = metadata.set_jwks(jwks);
        let redirect = RedirectUrl::from_url(self.settings.redirect_uri.clone());
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_token_uri(token_uri)
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type);
        tracing::info!(issuer = %self.settings.issuer, "provider discovered");
        Ok(Discovered {
            client,
            extra,
            at: Instant::now(),
        })
    }

    /// The configured method, else Basic when the provider supports it (the spec default), else POST.
    fn auth_type(&self, metadata: &ProviderMetadata) -> AuthType {
        use openidconnect::core::CoreClientAuthMethod as Method;
        let method = self.settings.auth_method.unwrap_or_else(|| {
            match metadata.token_endpoint_auth_methods_supported() {
                Some(methods)
                    if !methods.contains(&Method::ClientSecretBasic)
                        && methods.contains(&Method::ClientSecretPost) =>
                {
                    ClientAuthMethod::ClientSecretPost
                }
                _ => ClientAuthMethod::ClientSecretBasic,
            }
        });
        match method {
            ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuthMethod::ClientSecretPost => AuthType::RequestBody,
        }
    }

    /// Builds an authorization request with PKCE (S256), `state` and `nonce`.
    pub async fn authorization_request(&self) -> Result<AuthorizationRequest, OidcError> {
        let discovered = self.current().await?;
        let state = crate::random::token();
        let nonce = crate::random::token();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            {
                let state = state.clone();
                move || CsrfToken::new(state)
            },
            {
                let nonce = nonce.clone();
                move || Nonce::new(nonce)
            },
        );
        for scope in self
            .settings
            .scopes
            .iter()
            .filter(|scope| *scope != "openid")
        {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(prompt) = &self.settings.prompt {
            request = request.add_extra_param("prompt", prompt.clone());
        }
        let (url, _, _) = request.set_pkce_challenge(challenge).url();
        Ok(AuthorizationRequest {
            url,
            state,
            nonce,
            pkce_verifier: verifier.into_secret(),
        })
    }

    /// Exchanges an authorization code and validates the ID token (signature, `iss`, `aud`,
    /// `exp`, `nonce`, `at_hash`).
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<LoginTokens, OidcError> {
        let mut discovered = self.current().await?;
        let exchange = |discovered: Arc<Discovered>| async move {
            discovered
                .client
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
                .request_async(&self.http)
                .await
        };
        let response = match exchange(discovered.clone()).await {
            Err(error) if self.may_switch_auth_method(&error) => {
                discovered = self.switch_auth_method(&discovered);
                exchange(discovered.clone()).await
            }
            other => other,
        }
        .map_err(token_error)?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Invalid("token response has no id_token".into()))?;
        let expected_nonce = Nonce::new(nonce.to_owned());
        let claims = self
            .verify_id_token(
                discovered,
                id_token,
                response.access_token(),
                |found| match found {
                    Some(found) if found.secret().len() == nonce.len() => {
                        use subtle::ConstantTimeEq;
                        if bool::from(
                            found
                                .secret()
                                .as_bytes()
                                .ct_eq(expected_nonce.secret().as_bytes()),
                        ) {
                            Ok(())
                        } else {
                            Err("nonce does not match".to_owned())
                        }
                    }
                    _ => Err("nonce missing or wrong".to_owned()),
                },
            )
            .await?;
        let sub = subject(&claims)?;
        let now = unix_now();
        Ok(LoginTokens {
            sub,
            claims,
            tokens: crate::session::TokenSet {
                access_token: response.access_token().secret().clone(),
                access_expires_at: expiry(now, response.expires_in(), response.access_token()),
                obtained_at: now,
                refresh_token: response.refresh_token().map(|token| token.secret().clone()),
                id_token: id_token.to_string(),
            },
        })
    }

    /// Refreshes `current`, keeping its refresh token when the provider returns none and
    /// checking that a returned ID token is for the same `sub` (OIDC Core §12.2).
    pub async fn refresh(
        &self,
        current: &crate::session::TokenSet,
        sub: &str,
    ) -> Result<RefreshedTokens, OidcError> {
        let refresh_token = current
            .refresh_token
            .as_ref()
            .ok_or_else(|| OidcError::Rejected("the session has no refresh token".into()))?;
        let mut discovered = self.current().await?;
        let refresh_token = RefreshToken::new(refresh_token.clone());
        let refresh_token = &refresh_token;
        let exchange = |discovered: Arc<Discovered>| async move {
            discovered
                .client
                .exchange_refresh_token(refresh_token)
                .request_async(&self.http)
                .await
        };
        let response = match exchange(discovered.clone()).await {
            Err(error) if self.may_switch_auth_method(&error) => {
                discovered = self.switch_auth_method(&discovered);
                exchange(discovered.clone()).await
            }
            other => other,
        }
        .map_err(token_error)?;
        let mut claims = None;
        let mut id_token_string = current.id_token.clone();
        if let Some(id_token) = response.id_token() {
            // Refreshed ID tokens need not carry a nonce (Keycloak omits it).
            let verified = self
                .verify_id_token(discovered, id_token, response.access_token(), |_| Ok(()))
                .await?;
            if subject(&verified)? != sub {
                return Err(OidcError::Invalid(
                    "refreshed ID token has another sub".into(),
                ));
            }
            claims = Some(verified);
            id_token_string = id_token.to_string();
        }
        let now = unix_now();
        Ok(RefreshedTokens {
            tokens: crate::session::TokenSet {
                access_token: response.access_token().secret().clone(),
                access_expires_at: expiry(now, response.expires_in(), response.access_token()),
                obtained_at: now,
                refresh_token: response
                    .refresh_token()
                    .map(|token| token.secret().clone())
                    .or_else(|| current.refresh_token.clone()),
                id_token: id_token_string,
            },
            claims,
        })
    }

    /// Verifies an ID token; on an unknown signing key, re-fetches the JWKS once (key rotation).
    async fn verify_id_token<N>(
        &self,
        discovered: Arc<Discovered>,
        id_token: &CoreIdToken,
        access_token: &AccessToken,
        nonce_check: N,
    ) -> Result<Map<String, Value>, OidcError>
    where
        N: Fn(Option<&Nonce>) -> Result<(), String> + Clone,
    {
        match verify_with(
            &discovered.client,
            id_token,
            access_token,
            nonce_check.clone(),
        ) {
            Err(VerifyFailure::UnknownKey) => {
                let fresh = self.rediscover(Some(&discovered)).await?;
                verify_with(&fresh.client, id_token, access_token, nonce_check)
                    .map_err(VerifyFailure::into_error)
            }
            other => other.map_err(VerifyFailure::into_error),
        }
    }

    /// The provider's end-session URL for RP-initiated logout, when it advertises one.
    pub async fn end_session_url(
        &self,
        id_token_hint: &str,
        post_logout_redirect_uri: &Url,
    ) -> Option<Url> {
        let discovered = self.current().await.ok()?;
        let mut url = discovered.extra.end_session_endpoint.clone()?;
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token_hint)
            .append_pair(
                "post_logout_redirect_uri",
                post_logout_redirect_uri.as_str(),
            )
            .append_pair("client_id", &self.settings.client_id);
        Some(url)
    }

    /// Revokes a refresh token (RFC 7009) when the provider supports it; best effort.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) {
        let Ok(discovered) = self.current().await else {
            return;
        };
        let Some(endpoint) = discovered.extra.revocation_endpoint.clone() else {
            return;
        };
        let mut form = vec![
            ("token", refresh_token.to_owned()),
            ("token_type_hint", "refresh_token".to_owned()),
        ];
        let mut request = self.http.post(endpoint);
        if self.uses_post_auth(&discovered) {
            form.push(("client_id", self.settings.client_id.clone()));
            form.push((
                "client_secret",
                self.settings.client_secret.expose_secret().to_owned(),
            ));
        } else {
            request = request.basic_auth(
                form_encode(&self.settings.client_id),
                Some(form_encode(self.settings.client_secret.expose_secret())),
            );
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let result = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::warn!(status = %response.status(), "token revocation refused"),
            Err(error) => tracing::warn!(error = %error, "token revocation failed"),
        }
    }

    /// Whether a token request failed because of how the client authenticated, and the method
    /// was auto-selected (a provider may advertise both methods but accept only the registered one).
    fn may_switch_auth_method<RE: std::error::Error + 'static>(
        &self,
        error: &RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
    ) -> bool {
        self.settings.auth_method.is_none()
            && matches!(error, RequestTokenError::ServerResponse(response)
                if *response.error() == CoreErrorResponseType::InvalidClient)
    }

    /// Switches between `client_secret_basic` and `client_secret_post` for all later requests.
    fn switch_auth_method(&self, current: &Arc<Discovered>) -> Arc<Discovered> {
        let other = match current.client.auth_type() {
            AuthType::BasicAuth => AuthType::RequestBody,
            _ => AuthType::BasicAuth,
        };
        tracing::info!(method = ?other, "provider refused the client authentication method; switching");
        let switched = Arc::new(Discovered {
            client: current.client.clone().set_auth_type(other),
            extra: current.extra.clone(),
            at: current.at,
        });
        self.discovered.store(Some(switched.clone()));
        switched
    }

    fn uses_post_auth(&self, discovered: &Discovered) -> bool {
        matches!(discovered.client.auth_type(), AuthType::RequestBody)
    }
}

/// RFC 6749 §2.3.1: Basic credentials are form-encoded before base64.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

enum VerifyFailure {
    UnknownKey,
    Invalid(String),
}

impl VerifyFailure {
    fn into_error(self) -> OidcError {
        match self {
            VerifyFailure::UnknownKey => OidcError::Invalid(
                "ID token signed with a key the provider does not publish".into(),
            ),
            VerifyFailure::Invalid(reason) => OidcError::Invalid(reason),
        }
    }
}

/// Checks the ID token and its `at_hash`, returning the raw claims of the verified token.
fn verify_with<N>(
    client: &Client,
    id_token: &CoreIdToken,
    access_token: &AccessToken,
    nonce_check: N,
) -> Result<Map<String, Value>, VerifyFailure>
where
    N: Fn(Option<&Nonce>) -> Result<(), String>,
{
    use openidconnect::{ClaimsVerificationError, SignatureVerificationError};
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, |nonce: Option<&Nonce>| nonce_check(nonce))
        .map_err(|error| match error {
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            ) => VerifyFailure::UnknownKey,
            other => VerifyFailure::Invalid(format!("ID token: {other}")),
        })?;
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token
            .signing_alg()
            .map_err(|error| VerifyFailure::Invalid(format!("ID token alg: {error}")))?;
        let key = id_token
            .signing_key(&verifier)
            .map_err(|error| VerifyFailure::Invalid(format!("ID token key: {error}")))?;
        let actual = AccessTokenHash::from_token(access_token, alg, key)
            .map_err(|error| VerifyFailure::Invalid(format!("at_hash: {error}")))?;
        if actual != *expected {
            return Err(VerifyFailure::Invalid(
                "at_hash does not match the access token".into(),
            ));
        }
    }
    raw_claims(&id_token.to_string())
        .ok_or_else(|| VerifyFailure::Invalid("ID token payload is not a JSON object".into()))
}

/// The payload of an already verified compact JWT, as a JSON object.
fn raw_claims(compact: &str) -> Option<Map<String, Value>> {
    let payload = compact.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn subject(claims: &Map<String, Value>) -> Result<String, OidcError> {
    claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| !sub.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| OidcError::Invalid("ID token has no sub".into()))
}

/// Access-token expiry: `expires_in` if given, else the `exp` of a JWT access token, else unknown.
fn expiry(now: u64, expires_in: Option<Duration>, access_token: &AccessToken) -> Option<u64> {
    expires_in
        .map(|lifetime| now + lifetime.as_secs())
        .or_else(|| {
            raw_claims(access_token.secret())
                .and_then(|claims| claims.get("exp").and_then(Value::as_u64))
        })
}

/// Classifies a token-endpoint failure: `invalid_grant` means the grant is gone.
fn token_error<RE>(
    error: RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
) -> OidcError
where
    RE: std::error::Error + 'static,
{
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error().clone();
            let text = code.as_ref().to_string();
            match code {
                CoreErrorResponseType::InvalidGrant => OidcError::Rejected(text),
                _ => OidcError::Unavailable(format!("token endpoint error: {text}")),
            }
        }
        RequestTokenError::Request(error) => {
            OidcError::Unavailable(format!("token endpoint unreachable: {error}"))
        }
        RequestTokenError::Parse(_, _) => OidcError::Unavailable(
            "token endpoint answered something that is not a token response".into(),
        ),
        RequestTokenError::Other(text) => OidcError::Unavailable(format!("token endpoint: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_claims_reads_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":10}"#);
        let claims = raw_claims(&format!("h.{payload}.s")).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert!(raw_claims("not-a-jwt").is_none());
        assert!(raw_claims(&format!("h.{}.s", URL_SAFE_NO_PAD.encode(b"[1]"))).is_none());
    }

    #[test]
    fn expiry_prefers_expires_in_then_jwt_exp() {
        let opaque = AccessToken::new("opaque".into());
        assert_eq!(
            expiry(100, Some(Duration::from_secs(60)), &opaque),
            Some(160)
        );
        assert_eq!(expiry(100, None, &opaque), None);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":500}"#);
        let jwt = AccessToken::new(format!("h.{payload}.s"));
        assert_eq!(expiry(100, None, &jwt), Some(500));
    }
}
