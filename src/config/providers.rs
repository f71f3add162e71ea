//! The providers: `[oidc]` (one, id `default`) or each `[[providers]]` entry, checked and
//! converted into [`OidcSettings`]. Every error names its key, `oidc.*` or `providers[N].*`;
//! nothing here fetches from a provider (discovery happens when the app starts).

use std::time::Duration;

use url::Url;

use super::OidcSettings;
use super::error::ConfigError;
use super::file::OidcSection;
use super::secret_files;
use crate::oidc::{ProviderSettings, SigningAlg};

/// `oidc.assumed_token_lifetime_secs`: below 5 s every call would refresh (the refresh skew is
/// capped at half the lifetime); beyond a day a revoked token would be proxied for too long.
const ASSUMED_TOKEN_LIFETIME_SECS: std::ops::RangeInclusive<u64> = 5..=86_400;

/// The providers: `[oidc]` (one, id `default`) or `[[providers]]` (each with its id), never
/// both; the first apart, as the one whose sessions are stored as earlier releases stored
/// them. Ids are unique tokens, issuers distinct (back-channel logout finds its provider by
/// `iss`).
pub(super) fn providers(
    oidc: Option<OidcSection>,
    listed: Vec<OidcSection>,
) -> Result<(OidcSettings, Vec<OidcSettings>), ConfigError> {
    let sections = match (oidc, listed.is_empty()) {
        (Some(_), false) => {
            return Err(ConfigError::new(
                "providers",
                "set either [oidc] (one provider) or [[providers]] (several), not both: move \
                 [oidc] into [[providers]] with an id",
            ));
        }
        (None, true) => {
            return Err(ConfigError::new(
                "oidc",
                "is missing: configure the provider in [oidc] (or several in [[providers]])",
            ));
        }
        (Some(single), true) => {
            if let Some(id) = &single.id {
                provider_id("oidc.id", id)?;
            }
            vec![("oidc".to_owned(), single)]
        }
        (None, false) => listed
            .into_iter()
            .enumerate()
            .map(|(index, section)| (format!("providers[{index}]"), section))
            .collect(),
    };
    let mut parsed: Vec<OidcSettings> = Vec::with_capacity(sections.len());
    for (prefix, section) in sections {
        let in_list = prefix != "oidc";
        let id = match (&section.id, in_list) {
            (Some(id), _) => provider_id(&format!("{prefix}.id"), id)?.to_owned(),
            (None, false) => DEFAULT_PROVIDER_ID.to_owned(),
            (None, true) => {
                return Err(ConfigError::new(
                    format!("{prefix}.id"),
                    "is missing (each of [[providers]] needs an id: letters, digits, - and _)",
                ));
            }
        };
        if parsed.iter().any(|other| other.id == id) {
            return Err(ConfigError::new(
                format!("{prefix}.id"),
                format!("\"{id}\" is the id of another provider; ids must be unique"),
            ));
        }
        let settings = oidc_settings(section, id).map_err(|error| in_section(error, &prefix))?;
        // Every spelling a provider answers to is its alone: back-channel logout finds its
        // provider by the token's issuer.
        if let Some(taken) = issuer_spellings(&settings).find(|own| {
            parsed
                .iter()
                .flat_map(issuer_spellings)
                .any(|other| other == *own)
        }) {
            let key = if taken == settings.issuer {
                "issuer"
            } else {
                "issuer_aliases"
            };
            return Err(ConfigError::new(
                format!("{prefix}.{key}"),
                format!(
                    "{taken:?} is the issuer or an alias of another provider; issuers and their \
                     aliases must be distinct (back-channel logout finds its provider by the \
                     token's issuer)"
                ),
            ));
        }
        if let Some((kid, other)) = settings.client_keys.as_ref().and_then(|ring| {
            let others = parsed.iter().filter_map(|other| {
                other
                    .client_keys
                    .as_ref()
                    .map(|keys| (other.id.as_str(), keys))
            });
            super::client_keys::conflicting_kid(ring, others)
        }) {
            return Err(ConfigError::new(
                format!("{prefix}.client_keys"),
                format!(
                    "the id {kid:?} names another key in provider {other:?}; one key set is \
                     published for every provider, so an id names one key"
                ),
            ));
        }
        parsed.push(settings);
    }
    let mut parsed = parsed.into_iter();
    let first = parsed
        .next()
        .ok_or_else(|| ConfigError::new("providers", "lists no provider"))?;
    Ok((first, parsed.collect()))
}

impl OidcSettings {
    /// What the provider client needs of these settings, with the `redirect_uri` every
    /// provider shares.
    pub fn into_provider_settings(self, redirect_uri: Url) -> ProviderSettings {
        ProviderSettings {
            id: self.id,
            name: self.name,
            refresh_skew: self.refresh_skew,
            issuer: self.issuer,
            issuer_aliases: self.issuer_aliases,
            allowed_tenants: self.allowed_tenants,
            discovery_url: self.discovery_url,
            client_id: self.client_id,
            client_secret: self.client_secret,
            client_keys: self.client_keys,
            redirect_uri,
            scopes: self.scopes,
            prompt: self.prompt,
            userinfo: self.userinfo,
            dpop: self.dpop,
            userinfo_token_method: self.userinfo_token_method,
            resources: self.resources,
            audience: self.audience,
            auth_method: self.client_auth_method,
            id_token_alg: self.id_token_signed_response_alg,
            ca_certificates: self.ca_certificates,
            assumed_token_lifetime: self.assumed_token_lifetime,
            extra_auth_params: self.extra_auth_params,
            logout: self.logout,
            logout_url: self.logout_url,
            logout_hint_claim: self.logout_hint_claim,
            par: self.par,
        }
    }
}

/// The issuer and the aliases of `oidc`: every `iss` spelling it answers to by configuration.
fn issuer_spellings(oidc: &OidcSettings) -> impl Iterator<Item = &str> {
    std::iter::once(oidc.issuer.as_str()).chain(oidc.issuer_aliases.iter().map(String::as_str))
}

/// The id of `[oidc]` when it names none.
pub const DEFAULT_PROVIDER_ID: &str = "default";

/// Longest provider id (it travels in URLs and in every session of the provider).
const MAX_PROVIDER_ID_LEN: usize = 32;

/// `id` when it is a provider id: 1 to 32 letters, digits, `-` and `_`.
fn provider_id<'a>(key: &str, id: &'a str) -> Result<&'a str, ConfigError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_PROVIDER_ID_LEN
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(id)
    } else {
        Err(ConfigError::new(
            key,
            format!(
                "must be 1 to {MAX_PROVIDER_ID_LEN} letters, digits, - or _ (it is used in \
                 login URLs: ?provider=ID)"
            ),
        ))
    }
}

/// An error about an `[oidc]` key, renamed for the `[[providers]]` entry it is about.
fn in_section(mut error: ConfigError, prefix: &str) -> ConfigError {
    if let Some(key) = error.key.strip_prefix("oidc.") {
        error.key = format!("{prefix}.{key}");
    }
    error
}

/// One provider's keys (as `[oidc]` names them), checked and converted.
fn oidc_settings(mut oidc: OidcSection, id: String) -> Result<OidcSettings, ConfigError> {
    let name = match oidc.name.take() {
        Some(name) if name.trim().is_empty() => {
            return Err(ConfigError::new("oidc.name", "must not be empty"));
        }
        Some(name) => name,
        None => id.clone(),
    };
    let issuer = Url::parse(&oidc.issuer)
        .map_err(|error| ConfigError::new("oidc.issuer", format!("not a URL: {error}")))?;
    if !matches!(issuer.scheme(), "http" | "https") {
        return Err(ConfigError::new("oidc.issuer", "must be an http(s) URL"));
    }
    if oidc.issuer.contains(['{', '}']) {
        // The template is what discovery names, never an issuer a token can carry.
        return Err(ConfigError::new(
            "oidc.issuer",
            "is a multi-tenant issuer template: configure the URL you discover through \
             (e.g. https://login.microsoftonline.com/organizations/v2.0) and list the tenants \
             to accept in oidc.allowed_tenants",
        ));
    }
    let profiled = super::profiles::apply(&mut oidc, &issuer)?;
    if oidc.client_id.trim().is_empty() {
        return Err(ConfigError::new("oidc.client_id", "must not be empty"));
    }
    let (client_secret, client_keys) = super::client_keys::credential(&mut oidc)?;
    if !profiled.scopes.iter().any(|scope| scope == "openid") {
        return Err(ConfigError::new("oidc.scopes", "must include \"openid\""));
    }
    if profiled
        .scopes
        .iter()
        .any(|scope| scope.is_empty() || scope.contains(' '))
    {
        return Err(ConfigError::new(
            "oidc.scopes",
            "scopes must be non-empty words",
        ));
    }
    let id_token_signed_response_alg = match oidc.id_token_signed_response_alg.as_deref() {
        None => None,
        Some(name) => Some(SigningAlg::parse(name).ok_or_else(|| {
            ConfigError::new(
                "oidc.id_token_signed_response_alg",
                "must be a JWS algorithm as registered at the provider: RS256, RS384, RS512, \
                 PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384 or HS512",
            )
        })?),
    };
    if client_secret.is_none()
        && id_token_signed_response_alg
            .as_ref()
            .is_some_and(SigningAlg::uses_client_secret)
    {
        return Err(ConfigError::new(
            "oidc.id_token_signed_response_alg",
            "is an HS algorithm, keyed with the client secret, and a private_key_jwt client \
             has none: register an asymmetric one (RS256, ES256, …)",
        ));
    }
    let discovery_url = match oidc.discovery_url {
        Some(url) => url,
        None => well_known_discovery(&oidc.issuer)?,
    };
    if !ASSUMED_TOKEN_LIFETIME_SECS.contains(&oidc.assumed_token_lifetime_secs) {
        return Err(ConfigError::new(
            "oidc.assumed_token_lifetime_secs",
            format!(
                "must be between {} and {} seconds (the access token's lifetime when the \
                 provider names none; 300 when left out)",
                ASSUMED_TOKEN_LIFETIME_SECS.start(),
                ASSUMED_TOKEN_LIFETIME_SECS.end()
            ),
        ));
    }
    Ok(OidcSettings {
        id,
        name,
        discovery_url,
        prompt: profiled.prompt,
        userinfo: oidc.userinfo,
        dpop: oidc.dpop,
        userinfo_token_method: oidc.userinfo_token_method,
        issuer: oidc.issuer,
        issuer_aliases: words("oidc.issuer_aliases", oidc.issuer_aliases)?,
        allowed_tenants: tenants(oidc.allowed_tenants)?,
        client_id: oidc.client_id,
        client_secret,
        client_keys,
        scopes: profiled.scopes,
        refresh_skew: Duration::from_secs(oidc.refresh_skew_secs),
        assumed_token_lifetime: Duration::from_secs(oidc.assumed_token_lifetime_secs),
        client_auth_method: oidc.client_auth_method,
        id_token_signed_response_alg,
        ca_certificates: provider_ca(oidc.ca_file.as_deref())?,
        resources: super::routes::resources("oidc.resource", oidc.resource)?,
        audience: super::routes::audience("oidc.audience", oidc.audience)?,
        extra_auth_params: profiled.extra_auth_params,
        logout: profiled.logout,
        logout_url: profiled.logout_url,
        logout_hint_claim: profiled.logout_hint_claim,
        par: oidc.par,
        provider: profiled.provider,
    })
}

/// A list of non-empty values without white space (`key` names it in errors), duplicates dropped.
fn words(key: &str, values: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut kept: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                key,
                format!("{value:?} must be non-empty, without white space"),
            ));
        }
        if !kept.contains(&value) {
            kept.push(value);
        }
    }
    Ok(kept)
}

/// `oidc.allowed_tenants`: tenant ids, each one path segment of an issuer (no `/`).
fn tenants(values: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let tenants = words("oidc.allowed_tenants", values)?;
    if let Some(bad) = tenants
        .iter()
        .find(|tenant| tenant.contains(['/', '?', '#', '{', '}']))
    {
        return Err(ConfigError::new(
            "oidc.allowed_tenants",
            format!("{bad:?} is not a tenant id (one path segment of the issuer)"),
        ));
    }
    Ok(tenants)
}

/// `issuer` + `/.well-known/openid-configuration` (OpenID Connect Discovery §4).
fn well_known_discovery(issuer: &str) -> Result<Url, ConfigError> {
    let well_known = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    Url::parse(&well_known)
        .map_err(|error| ConfigError::new("oidc.issuer", format!("not a URL: {error}")))
}

/// The CA certificates of `oidc.ca_file`: a readable PEM bundle with at least one certificate.
fn provider_ca(file: Option<&std::path::Path>) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    const KEY: &str = "oidc.ca_file";
    let Some(path) = file else {
        return Ok(Vec::new());
    };
    let pem = secret_files::read_bytes(KEY, path)?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certificates) if !certificates.is_empty() => Ok(certificates),
        Ok(_) => Err(ConfigError::new(
            KEY,
            format!("{} holds no PEM certificate", path.display()),
        )),
        Err(error) => Err(ConfigError::new(
            KEY,
            format!(
                "{} is not a PEM certificate bundle: {error}",
                path.display()
            ),
        )),
    }
}
