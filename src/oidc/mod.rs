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
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreIdToken, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreTokenResponse, CoreTokenType,
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
use crate::session::StoredToken;
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
    /// The token endpoint refused the request for another reason (`invalid_client`, …):
    /// a configuration problem, not worth an immediate retry.
    #[error("identity provider refused the request: {0}")]
    Refused(String),
    /// A refreshed ID token names another user (OIDC Core §12.2): the session must end.
    #[error("refreshed ID token is for another subject")]
    SubjectChanged,
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
    /// The new token set (old refresh token kept when none was returned; the new ID token
    /// only if it verified, else the previous one).
    pub tokens: crate::session::TokenSet,
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
    /// The client-authentication method that worked after a switch; survives re-discovery.
    preferred_auth: std::sync::Mutex<Option<AuthType>>,
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
            preferred_auth: std::sync::Mutex::new(None),
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
        let preferred = self
            .preferred_auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let auth_type = preferred.unwrap_or_else(|| self.auth_type(&metadata));
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
        let (discovered, response) = self
            .token_request(|discovered: Arc<Discovered>| async move {
                discovered
                    .client
                    .exchange_code(AuthorizationCode::new(code.to_owned()))
                    .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
                    .request_async(&self.http)
                    .await
            })
            .await?;
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
                refresh_token: response
                    .refresh_token()
                    .map(|token| StoredToken::new(token.secret())),
                id_token: StoredToken::new(&id_token.to_string()),
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
        let refresh_token = &RefreshToken::new(refresh_token.text());
        let (discovered, response) = self
            .token_request(|discovered: Arc<Discovered>| async move {
                discovered
                    .client
                    .exchange_refresh_token(refresh_token)
                    .request_async(&self.http)
                    .await
            })
            .await?;
        let mut kept_id_token = current.id_token.clone();
        if let Some(id_token) = response.id_token() {
            // Refreshed ID tokens need not carry a nonce (Keycloak omits it).
            match self
                .verify_id_token(discovered, id_token, response.access_token(), |_| Ok(()))
                .await
            {
                Ok(verified) if subject(&verified)? != sub => {
                    return Err(OidcError::SubjectChanged);
                }
                Ok(_) => kept_id_token = StoredToken::new(&id_token.to_string()),
                // The token endpoint answered over an authenticated channel and has already
                // rotated the refresh token: keep the new tokens, keep the old ID token.
                Err(error) => {
                    tracing::warn!(error = %error, "refreshed ID token rejected; keeping the previous one");
                }
            }
        }
        let now = unix_now();
        Ok(RefreshedTokens {
            tokens: crate::session::TokenSet {
                access_token: response.access_token().secret().clone(),
                access_expires_at: expiry(now, response.expires_in(), response.access_token()),
                obtained_at: now,
                refresh_token: response
                    .refresh_token()
                    .map(|token| StoredToken::new(token.secret()))
                    .or_else(|| current.refresh_token.clone()),
                id_token: kept_id_token,
            },
        })
    }

    /// Verifies an ID token; on a signature failure, re-fetches the JWKS once (key rotation).
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
        let secret = self.settings.client_secret.expose_secret();
        let client_id = &self.settings.client_id;
        let verify = |client: &Client| {
            verify_with(
                client,
                client_id,
                secret,
                id_token,
                access_token,
                nonce_check.clone(),
            )
        };
        match verify(&discovered.client) {
            Err(VerifyFailure::Signature(_)) => {
                // New kid, or a rotated key published under the old kid or none: fetch again.
                let fresh = self.rediscover(Some(&discovered)).await?;
                verify(&fresh.client).map_err(VerifyFailure::into_error)
            }
            other => other.map_err(VerifyFailure::into_error),
        }
    }

    /// RFC 9207 mix-up defence: an `iss` on the authorization response must be our issuer, and
    /// must be present when the provider says it sends one.
    pub async fn check_response_issuer(&self, iss: Option<&str>) -> Result<(), OidcError> {
        match iss {
            Some(iss) if iss == self.settings.issuer => Ok(()),
            Some(_) => Err(OidcError::Invalid(
                "authorization response from another issuer".into(),
            )),
            None => {
                let discovered = self.current().await?;
                if discovered
                    .extra
                    .authorization_response_iss_parameter_supported
                    == Some(true)
                {
                    Err(OidcError::Invalid(
                        "authorization response without iss".into(),
                    ))
                } else {
                    Ok(())
                }
            }
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

    /// Runs a token-endpoint request, retrying once with the other client-authentication
    /// method when the auto-selected one is refused, and checks the token type.
    async fn token_request<F, Fut, RE>(
        &self,
        request: F,
    ) -> Result<(Arc<Discovered>, CoreTokenResponse), OidcError>
    where
        F: Fn(Arc<Discovered>) -> Fut,
        Fut: Future<Output = Result<CoreTokenResponse, TokenRequestError<RE>>>,
        RE: std::error::Error + 'static,
    {
        let mut discovered = self.current().await?;
        let response = match request(discovered.clone()).await {
            Err(error) if self.may_switch_auth_method(&error) => {
                discovered = self.switch_auth_method(&discovered);
                request(discovered.clone()).await
            }
            other => other,
        }
        .map_err(token_error)?;
        if *response.token_type() != CoreTokenType::Bearer {
            return Err(OidcError::Invalid(format!(
                "token type {:?} is not Bearer",
                response.token_type().as_ref()
            )));
        }
        Ok((discovered, response))
    }

    /// Whether a token request failed because of how the client authenticated, and the method
    /// was auto-selected (a provider may advertise both methods but accept only the registered one).
    fn may_switch_auth_method<RE: std::error::Error + 'static>(
        &self,
        error: &TokenRequestError<RE>,
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
        *self
            .preferred_auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(other.clone());
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
    /// No key, several candidate keys, or a signature that does not verify with the known keys.
    Signature(String),
    Invalid(String),
}

impl VerifyFailure {
    fn into_error(self) -> OidcError {
        match self {
            VerifyFailure::Signature(reason) => {
                OidcError::Invalid(format!("ID token signature: {reason}"))
            }
            VerifyFailure::Invalid(reason) => OidcError::Invalid(reason),
        }
    }
}

/// Checks the ID token (OIDC Core §3.1.3.7: signature, `iss`, `aud`, `azp`, `exp`, `nonce`)
/// and its `at_hash`, returning the raw claims of the verified token.
fn verify_with<N>(
    client: &Client,
    client_id: &str,
    client_secret: &str,
    id_token: &CoreIdToken,
    access_token: &AccessToken,
    nonce_check: N,
) -> Result<Map<String, Value>, VerifyFailure>
where
    N: Fn(Option<&Nonce>) -> Result<(), String>,
{
    use openidconnect::{ClaimsVerificationError, JsonWebKey, JwsSigningAlgorithm};
    check_mac_length(id_token)?;
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, |nonce: Option<&Nonce>| nonce_check(nonce))
        .map_err(|error| match error {
            ClaimsVerificationError::SignatureVerification(reason) => {
                VerifyFailure::Signature(reason.to_string())
            }
            other => VerifyFailure::Invalid(format!("ID token: {other}")),
        })?;
    if claims
        .authorized_party()
        .is_some_and(|azp| azp.as_str() != client_id)
    {
        return Err(VerifyFailure::Invalid(
            "ID token azp is another client".into(),
        ));
    }
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token
            .signing_alg()
            .map_err(|error| VerifyFailure::Invalid(format!("ID token alg: {error}")))?;
        let shared_key;
        let key = if alg.uses_shared_secret() {
            // HS256/384/512 are keyed with the client secret, which is not in the JWKS.
            shared_key = CoreJsonWebKey::new_symmetric(client_secret.as_bytes().to_vec());
            &shared_key
        } else {
            id_token
                .signing_key(&verifier)
                .map_err(|error| VerifyFailure::Invalid(format!("ID token key: {error}")))?
        };
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

/// HMAC signatures of the wrong length make the underlying crypto panic; refuse them first.
fn check_mac_length(id_token: &CoreIdToken) -> Result<(), VerifyFailure> {
    use openidconnect::core::CoreJwsSigningAlgorithm as Alg;
    let expected = match id_token.signing_alg() {
        Ok(Alg::HmacSha256) => 32,
        Ok(Alg::HmacSha384) => 48,
        Ok(Alg::HmacSha512) => 64,
        _ => return Ok(()),
    };
    let compact = id_token.to_string();
    let signature = compact.rsplit('.').next().unwrap_or_default();
    match URL_SAFE_NO_PAD.decode(signature) {
        Ok(bytes) if bytes.len() == expected => Ok(()),
        _ => Err(VerifyFailure::Signature(
            "HMAC signature has the wrong length".into(),
        )),
    }
}

use crate::session::record::jwt_payload as raw_claims;

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
/// A failed token-endpoint request.
type TokenRequestError<RE> =
    RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>;

fn token_error<RE>(error: TokenRequestError<RE>) -> OidcError
where
    RE: std::error::Error + 'static,
{
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error().clone();
            let text = code.as_ref().to_string();
            match code {
                CoreErrorResponseType::InvalidGrant => OidcError::Rejected(text),
                _ => OidcError::Refused(format!("token endpoint error: {text}")),
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
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    const ISSUER: &str = "https://op.example";
    const SECRET: &str = "a-client-secret-of-thirty-two-bytes!";

    /// A client for an HS256 provider: ID tokens are keyed with the client secret, so tests can
    /// mint them without a network or key pair.
    fn hs256_client() -> Client {
        let metadata: ProviderMetadata = serde_json::from_value(serde_json::json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["HS256"],
        }))
        .unwrap();
        let token_uri = metadata.token_endpoint().cloned().unwrap();
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new("vestibule".into()),
            Some(ClientSecret::new(SECRET.into())),
        )
        .set_token_uri(token_uri)
    }

    fn mint(claims: serde_json::Value) -> CoreIdToken {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        serde_json::from_value(serde_json::Value::String(format!(
            "{signing_input}.{signature}"
        )))
        .unwrap()
    }

    fn at_hash(access_token: &str) -> String {
        URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16])
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let now = unix_now();
        let mut base = serde_json::json!({
            "iss": ISSUER, "aud": "vestibule", "sub": "alice", "nonce": "n-1",
            "iat": now, "exp": now + 300,
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    }

    fn check(token: &CoreIdToken, access: &str) -> Result<Map<String, Value>, VerifyFailure> {
        let nonce = |found: Option<&Nonce>| match found {
            Some(n) if n.secret() == "n-1" => Ok(()),
            _ => Err("nonce".to_owned()),
        };
        verify_with(
            &hs256_client(),
            "vestibule",
            SECRET,
            token,
            &AccessToken::new(access.into()),
            nonce,
        )
    }

    #[test]
    fn valid_id_token_with_at_hash_is_accepted() {
        let token = mint(claims(
            serde_json::json!({ "at_hash": at_hash("at-1"), "email": "a@x" }),
        ));
        let verified = check(&token, "at-1").ok().unwrap();
        assert_eq!(verified["email"], "a@x");
    }

    #[test]
    fn id_token_validation_rejects_each_broken_claim() {
        let cases = [
            (
                "at_hash of another token",
                claims(serde_json::json!({ "at_hash": at_hash("other") })),
            ),
            (
                "wrong issuer",
                claims(serde_json::json!({ "iss": "https://evil.example" })),
            ),
            (
                "wrong audience",
                claims(serde_json::json!({ "aud": "someone-else" })),
            ),
            (
                "untrusted extra audience",
                claims(serde_json::json!({ "aud": ["vestibule", "other"], "azp": "vestibule" })),
            ),
            (
                "azp of another client",
                claims(serde_json::json!({ "azp": "other" })),
            ),
            (
                "expired",
                claims(serde_json::json!({ "exp": unix_now() - 600 })),
            ),
            ("wrong nonce", claims(serde_json::json!({ "nonce": "n-2" }))),
        ];
        for (what, claims) in cases {
            assert!(
                check(&mint(claims), "at-1").is_err(),
                "{what} must be rejected"
            );
        }
        let mut tampered = mint(claims(serde_json::json!({}))).to_string();
        tampered.push('A');
        let tampered: CoreIdToken =
            serde_json::from_value(serde_json::Value::String(tampered)).unwrap();
        assert!(matches!(
            check(&tampered, "at-1"),
            Err(VerifyFailure::Signature(_))
        ));
    }

    #[test]
    fn unsigned_id_tokens_are_rejected() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims(serde_json::json!({})).to_string());
        let token: CoreIdToken =
            serde_json::from_value(serde_json::Value::String(format!("{header}.{payload}.")))
                .unwrap();
        assert!(check(&token, "at-1").is_err());
    }

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
