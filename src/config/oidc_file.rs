//! The `[oidc]` table's schema (and each `[[providers]]` entry's), exactly as an operator writes
//! it: the provider, this client's registration there and its keys. Part of [`super::file`],
//! apart because a provider has more keys than any other table.

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::oidc::{ClientAuthMethod, LogoutStrategy, ParMode, UserInfoMode, UserInfoTokenMethod};

/// `[oidc]`, and each `[[providers]]` entry: one provider and this client's registration
/// there. One struct for both, so every provider key is a key of each entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's id (`provider=ID` at login, kept in its sessions): required in
    /// `[[providers]]`; `default` for `[oidc]`.
    #[serde(default)]
    pub id: Option<String>,
    /// The name the login chooser shows; absent: the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The issuer identifier; must equal the discovery document's `issuer` exactly (or be an
    /// instance of its tenant template, with `allowed_tenants`).
    pub issuer: String,
    /// Other `iss` values accepted in ID and logout tokens as this issuer (Google's
    /// `accounts.google.com`).
    #[serde(default)]
    pub issuer_aliases: Vec<String>,
    /// The tenants accepted when discovery names a multi-tenant issuer template (Entra ID's
    /// `{tenantid}`); empty: single-tenant only.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// Where to fetch discovery from, when it differs from `issuer` + well-known path.
    #[serde(default)]
    pub discovery_url: Option<Url>,
    /// The registered client id.
    pub client_id: String,
    /// The client secret (or `client_secret_file`).
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// A file holding the client secret (Docker/Kubernetes secrets).
    #[serde(default)]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// `private_key_jwt`: a PEM file holding the client's P-256 key (its `kid` is its
    /// RFC 7638 thumbprint).
    #[serde(default)]
    pub client_key_file: Option<std::path::PathBuf>,
    /// `private_key_jwt`: the algorithm of `client_key_file`'s key (`RS256` or `PS256` for an
    /// RSA key, `ES256` for P-256); absent: ES256 for P-256, RS256 for RSA.
    #[serde(default)]
    pub client_key_alg: Option<String>,
    /// `private_key_jwt`: a ring of `{ id, key | key_file, alg }` PEM keys, the first signing,
    /// all published.
    #[serde(default)]
    pub client_keys: Option<Vec<ClientKeySection>>,
    /// Scopes to request; must include `openid`; absent: the profile's.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Refresh when the access token expires within this many seconds.
    #[serde(default = "default_refresh_skew")]
    pub refresh_skew_secs: u64,
    /// The access token's lifetime when the token response has no `expires_in` and the access
    /// token is not a JWT with `exp`.
    #[serde(default = "default_assumed_token_lifetime")]
    pub assumed_token_lifetime_secs: u64,
    /// Token endpoint authentication; chosen from discovery when absent.
    #[serde(default)]
    pub client_auth_method: Option<ClientAuthMethod>,
    /// `prompt` sent with the authorization request; defaults to `consent` when
    /// `offline_access` is requested (OIDC Core §11), set to `""` to send none.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Whether logins and refreshes read the UserInfo endpoint (`auto`, `required`, `off`).
    #[serde(default)]
    pub userinfo: UserInfoMode,
    /// Whether the session's tokens are bound to a key of its own (DPoP: `off`, `auto`,
    /// `required`).
    #[serde(default)]
    pub dpop: crate::oidc::dpop::DpopMode,
    /// How UserInfo receives the access token (`header`, `body`).
    #[serde(default)]
    pub userinfo_token_method: UserInfoTokenMethod,
    /// The algorithm this client's ID tokens are signed with, as registered at the provider
    /// (OIDC Dynamic Client Registration's parameter of the same name); absent: learnt.
    #[serde(default)]
    pub id_token_signed_response_alg: Option<String>,
    /// A PEM bundle of CA certificates trusted, besides the public roots, for every call to
    /// the provider (a provider on a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// RFC 8707 resources asked for at login (authorization and code exchange).
    #[serde(default)]
    pub resource: Vec<String>,
    /// The `audience` asked for at login (Auth0's API identifier).
    #[serde(default)]
    pub audience: Option<String>,
    /// The provider profile whose defaults apply (`generic`, `keycloak`, `entra`, …);
    /// absent: detected from the issuer, else `generic`.
    #[serde(default)]
    pub provider: Option<String>,
    /// More parameters of the authorization request; absent: the profile's.
    #[serde(default)]
    pub extra_auth_params: Option<std::collections::BTreeMap<String, String>>,
    /// Where a logout sends the browser (`rp_initiated`, `url_template`, `local`); absent:
    /// the profile's.
    #[serde(default)]
    pub logout: Option<LogoutStrategy>,
    /// The logout URL template; absent: the profile's.
    #[serde(default)]
    pub logout_url: Option<String>,
    /// The claim whose value RP-initiated logout sends as `logout_hint`; absent: the
    /// profile's; `""`: none.
    #[serde(default)]
    pub logout_hint_claim: Option<String>,
    /// Whether authorization requests are pushed (RFC 9126: `auto`, `required`, `off`).
    #[serde(default)]
    pub par: ParMode,
}

/// One entry of `oidc.client_keys`: a ring entry ([`RingKeySection`]'s `id`, `key`,
/// `key_file`) and the algorithm its key signs with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeySection {
    /// The `kid` of the assertions it signs and of its JWK.
    pub id: String,
    /// The PEM of a P-256 or RSA private key.
    #[serde(default)]
    pub key: Option<SecretString>,
    /// A file holding the key.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
    /// `ES256`, `RS256` or `PS256`; absent: ES256 for P-256, RS256 for RSA.
    #[serde(default)]
    pub alg: Option<String>,
}

fn default_refresh_skew() -> u64 {
    30
}
/// Keycloak's default access-token lifespan, and the shortest common among providers: a
/// guess that errs towards refreshing a little early rather than proxying a dead token.
fn default_assumed_token_lifetime() -> u64 {
    300
}
