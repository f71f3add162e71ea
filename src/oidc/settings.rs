//! What the provider client needs to know: plain values, handed over by [`crate::app`] from
//! the configuration. The protocol code never depends on how settings are loaded.

use openidconnect::AuthType;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use super::client_assertion::ClientKeys;
use super::{LogoutStrategy, LogoutTemplate, ParMode, SigningAlg};

/// How the client authenticates at the token endpoint (`oidc.client_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with client id and secret.
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's own key (RFC 7523 §2.2, OIDC Core §9): no secret.
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    /// The method used when none is configured, from whether discovery's
    /// `token_endpoint_auth_methods_supported` lists Basic and POST (`None`: it lists
    /// nothing): Basic, the specification's default, unless POST is listed and Basic is not.
    pub fn when_unconfigured(listed: Option<(bool, bool)>) -> Self {
        match listed {
            Some((false, true)) => ClientAuthMethod::ClientSecretPost,
            _ => ClientAuthMethod::ClientSecretBasic,
        }
    }

    /// The configuration's spelling (`oidc.client_auth_method`).
    pub fn name(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// The other method (tried once when an auto-selected one is refused; only the two
    /// secret methods are ever auto-selected, and `private_key_jwt` is never switched).
    pub fn other(self) -> Self {
        match self {
            ClientAuthMethod::ClientSecretBasic => ClientAuthMethod::ClientSecretPost,
            ClientAuthMethod::ClientSecretPost => ClientAuthMethod::ClientSecretBasic,
            ClientAuthMethod::PrivateKeyJwt => ClientAuthMethod::PrivateKeyJwt,
        }
    }

    /// The same choice in openidconnect's terms.
    pub(super) fn auth_type(self) -> AuthType {
        match self {
            ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            // The client id in the body, no secret: the assertion is added as two parameters.
            ClientAuthMethod::ClientSecretPost | ClientAuthMethod::PrivateKeyJwt => {
                AuthType::RequestBody
            }
        }
    }
}

/// When the UserInfo endpoint is read (`oidc.userinfo`, OIDC Core §5.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserInfoMode {
    /// At each login and refresh when discovery names a `userinfo_endpoint`; an endpoint that
    /// refuses the token or fails is reported once and the session keeps the ID token's claims.
    #[default]
    Auto,
    /// At each login and refresh; a login fails unless UserInfo answers, and discovery fails
    /// without a `userinfo_endpoint`.
    Required,
    /// Never: the session's claims are the ID token's.
    Off,
}

/// How the access token travels to the UserInfo endpoint (`oidc.userinfo_token_method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserInfoTokenMethod {
    /// `Authorization: Bearer` (RFC 6750 §2.1): what every server must accept.
    #[default]
    Header,
    /// A form-encoded `POST` body with `access_token` (RFC 6750 §2.2), for the rare provider
    /// that demands it.
    Body,
}

/// Settings the provider client needs.
pub struct ProviderSettings {
    /// The provider's id among the configured ones (`oidc.id`, `providers[].id`).
    pub id: String,
    /// The name the login chooser shows.
    pub name: String,
    /// `oidc.refresh_skew_secs`: refresh when the access token expires within this long.
    pub refresh_skew: std::time::Duration,
    /// The configured issuer; discovery must name exactly this one, or a tenant template it
    /// instantiates (see `allowed_tenants`).
    pub issuer: String,
    /// `oidc.issuer_aliases`: other `iss` values accepted as the configured issuer.
    pub issuer_aliases: Vec<String>,
    /// `oidc.allowed_tenants`: the tenants whose tokens are accepted when discovery names a
    /// multi-tenant issuer template; empty: single-tenant (such a discovery is refused).
    pub allowed_tenants: Vec<String>,
    /// Where the discovery document is fetched.
    pub discovery_url: Url,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret (also the key of HS256 ID tokens); `None` under `private_key_jwt`.
    pub client_secret: Option<SecretString>,
    /// The keys of `private_key_jwt` (`oidc.client_key_file`, `oidc.client_keys`); `None`
    /// under the secret methods.
    pub client_keys: Option<ClientKeys>,
    /// The callback URL registered at the provider.
    pub redirect_uri: Url,
    /// The scopes to request (`openid` is always sent).
    pub scopes: Vec<String>,
    /// The `prompt` to send, if any.
    pub prompt: Option<String>,
    /// The configured client-authentication method; `None` lets discovery decide.
    pub auth_method: Option<ClientAuthMethod>,
    /// `oidc.id_token_signed_response_alg`: the one algorithm ID tokens (and logout tokens) must
    /// be signed with; `None`: ID tokens under any the provider supports, logout tokens under
    /// those learnt from verified ID tokens.
    pub id_token_alg: Option<SigningAlg>,
    /// CA certificates trusted besides the public roots (`oidc.ca_file`).
    pub ca_certificates: Vec<reqwest::Certificate>,
    /// `oidc.assumed_token_lifetime_secs`: the access token's lifetime when the provider names
    /// none, so a refreshable token is still refreshed.
    pub assumed_token_lifetime: std::time::Duration,
    /// `oidc.userinfo`: whether logins and refreshes read the UserInfo endpoint.
    pub userinfo: UserInfoMode,
    /// `oidc.dpop`: whether the session's tokens are bound to a key of its own (RFC 9449).
    pub dpop: super::dpop::DpopMode,
    /// `oidc.userinfo_token_method`: how UserInfo receives the access token.
    pub userinfo_token_method: UserInfoTokenMethod,
    /// `oidc.resource`: RFC 8707 resources asked for at login (authorization and code exchange).
    pub resources: Vec<String>,
    /// `oidc.audience`: the `audience` asked for at login (Auth0's API identifier).
    pub audience: Option<String>,
    /// `oidc.extra_auth_params`: more parameters of the authorization request.
    pub extra_auth_params: Vec<(String, String)>,
    /// `oidc.logout`: where a logout sends the browser.
    pub logout: LogoutStrategy,
    /// `oidc.logout_url`: the logout URL template.
    pub logout_url: Option<LogoutTemplate>,
    /// `oidc.logout_hint_claim`: the session claim sent as `logout_hint` on RP-initiated logout.
    pub logout_hint_claim: Option<String>,
    /// `oidc.par`: whether authorization requests are pushed (RFC 9126).
    pub par: ParMode,
}

#[cfg(test)]
impl ProviderSettings {
    /// A provider `id` at `issuer` with the defaults of an `[oidc]` table, for unit tests.
    pub fn for_testing(id: &str, issuer: &str) -> Self {
        Self {
            id: id.into(),
            name: format!("{id} (name)"),
            refresh_skew: std::time::Duration::from_secs(30),
            issuer: issuer.into(),
            discovery_url: Url::parse(&format!("{issuer}/.well-known/openid-configuration"))
                .unwrap(),
            client_id: "vestibule".into(),
            client_secret: Some("a-client-secret-of-thirty-two-bytes!".into()),
            client_keys: None,
            redirect_uri: "https://app.example/api/auth/callback".parse().unwrap(),
            scopes: vec!["openid".into()],
            prompt: None,
            auth_method: None,
            id_token_alg: None,
            ca_certificates: Vec::new(),
            assumed_token_lifetime: std::time::Duration::from_secs(300),
            userinfo: UserInfoMode::default(),
            dpop: super::dpop::DpopMode::default(),
            userinfo_token_method: UserInfoTokenMethod::default(),
            resources: Vec::new(),
            audience: None,
            issuer_aliases: Vec::new(),
            allowed_tenants: Vec::new(),
            extra_auth_params: Vec::new(),
            logout: LogoutStrategy::default(),
            logout_url: None,
            logout_hint_claim: None,
            par: ParMode::default(),
        }
    }
}
