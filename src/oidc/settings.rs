//! What the provider client needs from the configuration, read once at start-up.
//!
//! The only file in [`crate::oidc`] that knows [`crate::config`]: everything else reads these
//! plain values, so the protocol code never depends on how settings are loaded.

use openidconnect::AuthType;
use secrecy::SecretString;
use url::Url;

use crate::config::{ClientAuthMethod, Settings};

/// Settings the provider client needs, taken from [`Settings`].
pub struct ProviderSettings {
    /// The configured issuer; discovery must name exactly this one.
    pub(super) issuer: String,
    /// Where the discovery document is fetched.
    pub(super) discovery_url: Url,
    /// Our client id at the provider.
    pub(super) client_id: String,
    /// Our client secret (also the key of HS256 ID tokens).
    pub(super) client_secret: SecretString,
    /// The callback URL registered at the provider.
    pub(super) redirect_uri: Url,
    /// The scopes to request (`openid` is always sent).
    pub(super) scopes: Vec<String>,
    /// The `prompt` to send, if any.
    pub(super) prompt: Option<String>,
    /// The configured client-authentication method; `None` lets discovery decide.
    pub(super) auth_method: Option<AuthType>,
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
            auth_method: oidc.client_auth_method.map(|method| match method {
                ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
                ClientAuthMethod::ClientSecretPost => AuthType::RequestBody,
            }),
        }
    }
}
