//! How the client authenticates to the provider's back channel (RFC 6749 §2.3.1, RFC 7523
//! §2.2): which of `client_secret_basic` and `client_secret_post` to use, and one switch to
//! the other when the provider refuses an auto-selected method; or `private_key_jwt`, a fresh
//! client assertion ([`super::client_assertion`]) on every request.
//!
//! A configured method is never switched (`private_key_jwt` is never auto-selected). The client
//! secret leaves here only inside a request.

use std::sync::{Arc, Mutex};

use openidconnect::AuthType;
use openidconnect::core::{CoreClientAuthMethod, CoreErrorResponseType};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::client_assertion::{ASSERTION_TYPE, Asserter, ClientKeys};
use super::discovery::Discovered;
use super::grants::TokenRequestError;
use super::metadata::ProviderMetadata;
use super::{ClientAuthMethod, Provider};

/// The client-authentication method: configured, or negotiated with the provider.
pub(super) struct ClientAuth {
    /// `oidc.client_auth_method`, if set; then nothing is negotiated.
    configured: Option<ClientAuthMethod>,
    /// The method that worked after a switch; survives re-discovery.
    preferred: Mutex<Option<AuthType>>,
}

impl ClientAuth {
    /// Negotiation starting from the configured method, if any.
    pub(super) fn new(configured: Option<ClientAuthMethod>) -> Self {
        Self {
            configured,
            preferred: Mutex::new(None),
        }
    }

    /// The method for a freshly discovered client: the one a switch settled on, else the
    /// configured one, else Basic when the provider supports it (the spec default), else POST.
    pub(super) fn for_discovered(&self, metadata: &ProviderMetadata) -> AuthType {
        let preferred = self
            .preferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        preferred
            .or_else(|| self.configured.map(ClientAuthMethod::auth_type))
            .unwrap_or_else(|| {
                let listed = metadata
                    .token_endpoint_auth_methods_supported()
                    .map(|methods| {
                        (
                            methods.contains(&CoreClientAuthMethod::ClientSecretBasic),
                            methods.contains(&CoreClientAuthMethod::ClientSecretPost),
                        )
                    });
                ClientAuthMethod::when_unconfigured(listed).auth_type()
            })
    }

    /// Whether a token request failed because of how the client authenticated, and the method
    /// was auto-selected (a provider may advertise both methods but accept only the registered one).
    pub(super) fn may_switch<RE: std::error::Error + 'static>(
        &self,
        error: &TokenRequestError<RE>,
    ) -> bool {
        use openidconnect::RequestTokenError;
        self.configured.is_none()
            && matches!(error, RequestTokenError::ServerResponse(response)
                if *response.error() == CoreErrorResponseType::InvalidClient)
    }

    /// Whether a request refused with `invalid_client` may be tried again with the other
    /// method: the method was auto-selected (for requests openidconnect does not make itself).
    pub(super) fn may_switch_on_refusal(&self) -> bool {
        self.configured.is_none()
    }

    /// Records that `refused` did not work and returns the other method, used from now on.
    fn switch_from(&self, refused: &AuthType) -> AuthType {
        let other = match refused {
            AuthType::BasicAuth => AuthType::RequestBody,
            _ => AuthType::BasicAuth,
        };
        *self
            .preferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(other.clone());
        other
    }
}

impl Provider {
    /// Switches between `client_secret_basic` and `client_secret_post` for all later requests.
    pub(super) fn switch_auth_method(&self, current: &Arc<Discovered>) -> Arc<Discovered> {
        let other = self.client_auth.switch_from(current.client.auth_type());
        tracing::info!(method = ?other, "provider refused the client authentication method; switching");
        let switched = Arc::new(Discovered {
            client: current.client.clone().set_auth_type(other),
            extra: current.extra.clone(),
            jwks: current.jwks.clone(),
            asymmetric_id_token_algs: current.asymmetric_id_token_algs.clone(),
            userinfo_endpoint: current.userinfo_endpoint.clone(),
            par_endpoint: current.par_endpoint.clone(),
            back_channel: current.back_channel.clone(),
            issuer_template: current.issuer_template.clone(),
        });
        self.discovered.store(Some(switched.clone()));
        switched
    }

    /// A form POST to `endpoint`, authenticated the way the token endpoint currently accepts
    /// (for the endpoints openidconnect does not call itself, such as revocation).
    pub(super) fn authenticated_form_post<K: AsRef<str> + From<&'static str>>(
        &self,
        discovered: &Discovered,
        endpoint: Url,
        form: Vec<(K, String)>,
    ) -> reqwest::RequestBuilder {
        let method = self.client_auth.in_use(discovered.client.auth_type());
        client_authenticated_post(&self.http, endpoint, &self.credentials(), method, form)
            .headers(crate::traces::headers())
    }

    /// Whether the method `discovered` authenticates with puts `client_id` in the form itself
    /// (a request that names the client must then not name it twice: RFC 9126 §2.1).
    pub(super) fn auth_sends_client_id(&self, discovered: &Discovered) -> bool {
        match self.client_auth.in_use(discovered.client.auth_type()) {
            ClientAuthMethod::ClientSecretPost | ClientAuthMethod::PrivateKeyJwt => true,
            ClientAuthMethod::ClientSecretBasic => false,
        }
    }

    /// This client's credentials at the provider.
    pub(super) fn credentials(&self) -> Credentials<'_> {
        Credentials {
            id: &self.settings.client_id,
            secret: self.settings.client_secret.as_ref(),
            keys: self.settings.client_keys.as_ref(),
            audience: &self.settings.issuer,
        }
    }

    /// The client-authentication method in use: the configured one, else the one discovery
    /// (or a switch) settled on; `None` while neither is known (not yet discovered).
    pub fn client_auth_method(&self) -> Option<ClientAuthMethod> {
        self.client_auth.configured.or_else(|| {
            self.discovered
                .load()
                .as_ref()
                .map(|discovered| self.client_auth.in_use(discovered.client.auth_type()))
        })
    }

    /// The `client_assertion_type` and `client_assertion` parameters when the client
    /// authenticates with `private_key_jwt` (a fresh assertion each call), else none: added to
    /// the requests openidconnect makes itself (code exchange, refresh).
    pub(super) fn client_assertion_params(&self) -> Vec<(&'static str, String)> {
        match self.asserter() {
            Some(asserter) => vec![
                ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                ("client_assertion", asserter.assertion()),
            ],
            None => Vec::new(),
        }
    }

    /// What signs this client's assertions when it authenticates with `private_key_jwt`.
    pub(super) fn asserter(&self) -> Option<Asserter<'_>> {
        match (self.client_auth.configured, &self.settings.client_keys) {
            (Some(ClientAuthMethod::PrivateKeyJwt), Some(keys)) => Some(Asserter {
                keys,
                client_id: &self.settings.client_id,
                audience: &self.settings.issuer,
            }),
            _ => None,
        }
    }
}

impl ClientAuth {
    /// The method requests go out with, given the openidconnect client's `auth_type`.
    fn in_use(&self, auth_type: &AuthType) -> ClientAuthMethod {
        match (self.configured, auth_type) {
            (Some(ClientAuthMethod::PrivateKeyJwt), _) => ClientAuthMethod::PrivateKeyJwt,
            (_, AuthType::RequestBody) => ClientAuthMethod::ClientSecretPost,
            _ => ClientAuthMethod::ClientSecretBasic,
        }
    }
}

/// A client's credentials at the token endpoint: its id, and its secret or its keys.
pub struct Credentials<'a> {
    /// `client_id`.
    pub id: &'a str,
    /// `client_secret` (the secret methods).
    pub secret: Option<&'a SecretString>,
    /// The key ring (`private_key_jwt`).
    pub keys: Option<&'a ClientKeys>,
    /// The provider's issuer identifier: a client assertion's `aud`.
    pub audience: &'a str,
}

/// A form POST of `form` to `endpoint` with `client` authenticated by `method`: in the body
/// (`client_secret_post`), as HTTP Basic, each part form-encoded first (RFC 6749 §2.3.1), or
/// with a fresh client assertion (`private_key_jwt`, RFC 7523 §2.2). The one way a request
/// outside openidconnect's flows is authenticated (revocation, the grants for APIs, pushed
/// authorization requests, `vestibule doctor`'s probe). Parameter names are static words, or
/// owned for forms whose names are configured (a pushed authorization request's extra
/// parameters). A credential the method needs but `client` lacks (configuration refuses
/// that) is left out: the provider refuses the request.
pub fn client_authenticated_post<K: AsRef<str> + From<&'static str>>(
    http: &reqwest::Client,
    endpoint: Url,
    client: &Credentials<'_>,
    method: ClientAuthMethod,
    mut form: Vec<(K, String)>,
) -> reqwest::RequestBuilder {
    let mut request = http.post(endpoint);
    let secret = client.secret.map_or("", |secret| secret.expose_secret());
    match method {
        ClientAuthMethod::ClientSecretPost => {
            form.push(("client_id".into(), client.id.to_owned()));
            form.push(("client_secret".into(), secret.to_owned()));
        }
        ClientAuthMethod::ClientSecretBasic => {
            request = request.basic_auth(form_encode(client.id), Some(form_encode(secret)));
        }
        ClientAuthMethod::PrivateKeyJwt => {
            form.push(("client_id".into(), client.id.to_owned()));
            if let Some(keys) = client.keys {
                let assertion = keys.form(client.id, client.audience, crate::clock::unix_now());
                form.extend(assertion.map(|(name, value)| (name.into(), value)));
            }
        }
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (k.as_ref(), v.as_str())))
        .finish();
    request
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
}

/// RFC 6749 §2.3.1: Basic credentials are form-encoded before base64.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
