//! Configuration: a TOML file merged with `VESTIBULE_*` environment variables, validated once.
//!
//! Every problem becomes one [`ConfigError`] line naming the key and what is wrong. Secrets are
//! held as `SecretString` so they cannot be `Debug`-printed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::routes::Route;
use crate::session::MasterKey;

/// A setting is missing or wrong; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {problem}")]
pub struct ConfigError {
    /// The key path, e.g. `oidc.client_secret`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with client id and secret.
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
}

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The origin the browser uses; the redirect URI is derived from it.
    pub public_url: Url,
    /// The OpenID Provider and this client's registration.
    pub oidc: OidcSettings,
    /// Session storage and lifetimes.
    pub session: SessionSettings,
    /// Reverse-proxied API routes.
    #[serde(default)]
    pub routes: Vec<RouteSettings>,
    /// Where the single-page app comes from; absent: the built-in demo SPA.
    #[serde(default)]
    pub frontend: Option<FrontendSettings>,
}

/// `[frontend]`: exactly one of `dir` or `upstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSettings {
    /// A directory of built static files with an `index.html`.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// A development server to proxy (e.g. Vite), WebSocket upgrades included.
    #[serde(default)]
    pub upstream: Option<Url>,
}

/// Where the SPA is served from, after validation.
#[derive(Debug, Clone)]
pub enum Frontend {
    /// Vestibule's built-in demo page.
    Demo,
    /// Static files from a directory.
    Dir(std::path::PathBuf),
    /// A proxied development server.
    Upstream(Url),
}

/// `[oidc]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer identifier; must equal the discovery document's `issuer` exactly.
    pub issuer: String,
    /// Where to fetch discovery from, when it differs from `issuer` + well-known path.
    #[serde(default)]
    pub discovery_url: Option<Url>,
    /// The registered client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// Scopes to request; must include `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Refresh when the access token expires within this many seconds.
    #[serde(default = "default_refresh_skew")]
    pub refresh_skew_secs: u64,
    /// Token endpoint authentication; chosen from discovery when absent.
    #[serde(default)]
    pub client_auth_method: Option<ClientAuthMethod>,
    /// `prompt` sent with the authorization request; defaults to `consent` when
    /// `offline_access` is requested (OIDC Core §11), set to `""` to send none.
    #[serde(default)]
    pub prompt: Option<String>,
}

/// `[session]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Redis URL; absent means the in-memory store (single instance only).
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    /// Base64 of 32 random bytes.
    pub encryption_key: SecretString,
    /// Sliding idle timeout.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Absolute session lifetime.
    #[serde(default = "default_absolute")]
    pub absolute_timeout_secs: u64,
    /// Sealed session records each instance keeps in memory, kept exact by Redis client
    /// tracking (0 turns the cache off: every call reads Redis).
    #[serde(default = "default_local_cache_entries")]
    pub local_cache_entries: usize,
}

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Path prefix handled by this route.
    pub prefix: String,
    /// Upstream base URL.
    pub upstream: Url,
    /// Seconds to wait for the upstream's response headers.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}
fn default_refresh_skew() -> u64 {
    30
}
fn default_idle() -> u64 {
    1800
}
fn default_local_cache_entries() -> usize {
    10_000
}

fn default_absolute() -> u64 {
    28800
}
fn default_upstream_timeout() -> u64 {
    30
}

/// The prefix of every environment variable Vestibule reads.
pub const ENV_PREFIX: &str = "VESTIBULE_";

impl Settings {
    /// Loads `file` (if any) and the environment (which wins), then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist or is not a file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(merge_environment(figment))
    }

    /// Extracts and validates settings from any figment (tests build their own).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(describe_figment_error)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.public_url.scheme(), "http" | "https") || self.public_url.host().is_none()
        {
            return Err(ConfigError::new(
                "public_url",
                "must be an http(s) URL with a host",
            ));
        }
        if self.public_url.path() != "/" || self.public_url.query().is_some() {
            return Err(ConfigError::new(
                "public_url",
                "must be an origin only (no path or query), e.g. https://app.example.com",
            ));
        }
        let issuer = Url::parse(&self.oidc.issuer)
            .map_err(|error| ConfigError::new("oidc.issuer", format!("not a URL: {error}")))?;
        if !matches!(issuer.scheme(), "http" | "https") {
            return Err(ConfigError::new("oidc.issuer", "must be an http(s) URL"));
        }
        if self.oidc.client_id.trim().is_empty() {
            return Err(ConfigError::new("oidc.client_id", "must not be empty"));
        }
        if self.oidc.client_secret.expose_secret().is_empty() {
            return Err(ConfigError::new("oidc.client_secret", "must not be empty"));
        }
        if !self.oidc.scopes.iter().any(|scope| scope == "openid") {
            return Err(ConfigError::new("oidc.scopes", "must include \"openid\""));
        }
        if self
            .oidc
            .scopes
            .iter()
            .any(|scope| scope.is_empty() || scope.contains(' '))
        {
            return Err(ConfigError::new(
                "oidc.scopes",
                "scopes must be non-empty words",
            ));
        }
        self.master_key()?;
        if self.session.idle_timeout_secs == 0 {
            return Err(ConfigError::new(
                "session.idle_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.session.absolute_timeout_secs < self.session.idle_timeout_secs {
            return Err(ConfigError::new(
                "session.absolute_timeout_secs",
                "must not be shorter than session.idle_timeout_secs",
            ));
        }
        if let Some(url) = &self.session.redis_url {
            redis::parse_redis_url(url.expose_secret()).ok_or_else(|| {
                ConfigError::new("session.redis_url", "not a redis:// or rediss:// URL")
            })?;
        }
        self.validate_routes()?;
        self.frontend().map(|_| ())
    }

    /// The validated `[frontend]` choice.
    pub fn frontend(&self) -> Result<Frontend, ConfigError> {
        let Some(frontend) = &self.frontend else {
            return Ok(Frontend::Demo);
        };
        match (&frontend.dir, &frontend.upstream) {
            (Some(dir), None) => {
                if !dir.join("index.html").is_file() {
                    return Err(ConfigError::new(
                        "frontend.dir",
                        format!("{} has no index.html", dir.display()),
                    ));
                }
                Ok(Frontend::Dir(dir.clone()))
            }
            (None, Some(upstream)) => {
                if !matches!(upstream.scheme(), "http" | "https") || upstream.host().is_none() {
                    return Err(ConfigError::new(
                        "frontend.upstream",
                        "must be an http(s) URL",
                    ));
                }
                Ok(Frontend::Upstream(upstream.clone()))
            }
            _ => Err(ConfigError::new(
                "frontend",
                "set exactly one of frontend.dir or frontend.upstream",
            )),
        }
    }

    fn validate_routes(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (index, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{index}].{field}");
            let prefix = route.prefix.as_str();
            if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
                return Err(ConfigError::new(
                    key("prefix"),
                    "must start with / and not end with / (e.g. \"/api/orders\")",
                ));
            }
            if prefix.contains(['?', '#', '\\', '%'])
                || prefix.split('/').any(|s| s == "." || s == "..")
            {
                return Err(ConfigError::new(key("prefix"), "must be a plain path"));
            }
            if prefix == "/api/auth" || prefix.starts_with("/api/auth/") {
                return Err(ConfigError::new(
                    key("prefix"),
                    "/api/auth is reserved for Vestibule",
                ));
            }
            if !seen.insert(prefix) {
                return Err(ConfigError::new(key("prefix"), "is configured twice"));
            }
            if !matches!(route.upstream.scheme(), "http" | "https")
                || route.upstream.host().is_none()
                || route.upstream.query().is_some()
                || route.upstream.fragment().is_some()
            {
                return Err(ConfigError::new(
                    key("upstream"),
                    "must be an http(s) URL without query or fragment",
                ));
            }
            if route.timeout_secs == 0 {
                return Err(ConfigError::new(key("timeout_secs"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The decoded `session.encryption_key`.
    pub fn master_key(&self) -> Result<MasterKey, ConfigError> {
        let problem = "must be the base64 encoding of exactly 32 random bytes (e.g. `openssl rand -base64 32`)";
        let encoded = self.session.encryption_key.expose_secret().trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded))
            .map_err(|_| ConfigError::new("session.encryption_key", problem))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ConfigError::new("session.encryption_key", problem))?;
        if key.iter().all(|byte| *byte == key[0]) {
            return Err(ConfigError::new(
                "session.encryption_key",
                "is not random (all bytes equal)",
            ));
        }
        Ok(MasterKey::new(key))
    }

    /// The redirect URI registered at the provider: `public_url` + `/api/auth/callback`.
    pub fn redirect_uri(&self) -> Url {
        self.public_url_with_path("/api/auth/callback")
    }

    /// `public_url` + `path`.
    pub fn public_url_with_path(&self, path: &str) -> Url {
        let mut url = self.public_url.clone();
        url.set_path(path);
        url
    }

    /// Whether the browser reaches us over https (cookies get `Secure` and `__Host-`).
    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// The route table entries.
    pub fn route_table(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|route| Route {
                prefix: route.prefix.clone(),
                upstream: route.upstream.clone(),
                timeout: Duration::from_secs(route.timeout_secs),
            })
            .collect()
    }
}

/// Settings that are strings whatever they look like: a numeric secret must stay a string.
const STRING_KEYS: [&str; 11] = [
    "listen",
    "public_url",
    "oidc.issuer",
    "oidc.discovery_url",
    "oidc.client_id",
    "oidc.client_secret",
    "oidc.prompt",
    "session.redis_url",
    "session.encryption_key",
    "frontend.dir",
    "frontend.upstream",
];

fn is_string_key(key: &str) -> bool {
    STRING_KEYS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(key))
}

/// `VESTIBULE_A__B=…` → key `a.b`; `VESTIBULE_CONFIG` and `VESTIBULE_LOG` are not settings.
/// String settings are taken verbatim; others are parsed (numbers, arrays, tables).
fn merge_environment(figment: Figment) -> Figment {
    let env = || {
        Env::prefixed(ENV_PREFIX)
            .split("__")
            .ignore(&["CONFIG", "LOG"])
    };
    let mut figment = figment.merge(env().filter(|key| !is_string_key(key.as_str())));
    for (key, value) in env().iter() {
        if is_string_key(key.as_str()) {
            let key = key.as_str().to_ascii_lowercase();
            figment = figment.merge(figment::providers::Serialized::default(&key, value));
        }
    }
    figment
}

/// Turns figment's error into one line naming the key.
fn describe_figment_error(error: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path = error.path.clone();
    let problem = match &error.kind {
        Kind::MissingField(field) => {
            path.push(field.to_string());
            let env = format!("{ENV_PREFIX}{}", path.join("__").to_uppercase());
            format!("is missing (set it in the config file or as {env})")
        }
        Kind::UnknownField(field, _) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            "is not a known setting (check the spelling)".to_owned()
        }
        other => {
            let source = error
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.source.as_ref())
                .map(|source| format!(" (from {source})"))
                .unwrap_or_default();
            // Kind's text describes the value's type, never echoes a secret's content.
            format!("{}{source}", redact_kind(other))
        }
    };
    let key = if path.is_empty() {
        "(file)".to_owned()
    } else {
        path.join(".")
    };
    ConfigError::new(key, problem)
}

/// Describes an error kind without quoting the offending value (it may be a secret).
fn redact_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(actual, expected) => {
            format!(
                "has the wrong type: found {}, expected {expected}",
                type_only(actual)
            )
        }
        Kind::InvalidValue(_, expected) => format!("has an invalid value: expected {expected}"),
        Kind::UnknownVariant(_, allowed) => format!("must be one of: {}", allowed.join(", ")),
        // Parser messages span several lines and quote the source: keep the prose lines only.
        Kind::Message(message) => message
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.contains('|'))
            .collect::<Vec<_>>()
            .join(": "),
        other => other.to_string(),
    }
}

fn type_only(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) | Actual::Other(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::NewtypeStruct | Actual::Seq | Actual::Map | Actual::Enum => "a table or list",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn base() -> String {
        format!(
            r#"
            listen = "127.0.0.1:8080"
            public_url = "http://localhost:8080"
            [oidc]
            issuer = "http://localhost:8081/realms/vestibule"
            client_id = "vestibule"
            client_secret = "s3cret"
            [session]
            encryption_key = "{KEY}"
            [[routes]]
            prefix = "/api/orders"
            upstream = "http://127.0.0.1:9000/v1"
            "#
        )
    }

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        Settings::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    #[test]
    fn valid_config_loads_with_defaults() {
        let settings = load(&base()).unwrap();
        assert_eq!(settings.oidc.refresh_skew_secs, 30);
        assert_eq!(settings.session.idle_timeout_secs, 1800);
        assert_eq!(
            settings.redirect_uri().as_str(),
            "http://localhost:8080/api/auth/callback"
        );
        assert!(settings.oidc.scopes.contains(&"offline_access".to_owned()));
    }

    #[test]
    fn missing_secret_names_the_key_and_env_var() {
        let error = load(&base().replace("client_secret = \"s3cret\"", "")).unwrap_err();
        assert_eq!(error.key, "oidc.client_secret");
        assert!(
            error.to_string().contains("VESTIBULE_OIDC__CLIENT_SECRET"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_name_their_keys() {
        let cases = [
            (
                base().replace(KEY, "dG9vIHNob3J0"),
                "session.encryption_key",
            ),
            (
                base().replace("\"/api/orders\"", "\"api/orders\""),
                "routes[0].prefix",
            ),
            (
                base().replace("\"/api/orders\"", "\"/api/auth\""),
                "routes[0].prefix",
            ),
            (
                base().replace("http://localhost:8080\"", "localhost\""),
                "public_url",
            ),
            (base().replace("127.0.0.1:8080", "nope"), "listen"),
            (
                base().replace("[session]", "[session]\nidle_timeout_secs = \"x\""),
                "session.idle_timeout_secs",
            ),
            (
                base().replace("[session]", "[session]\nredis_url = \"http://x\""),
                "session.redis_url",
            ),
            (
                base().replace("[session]", "[session]\ntypo = 1"),
                "session.typo",
            ),
            (
                base().replace("[oidc]", "[oidc]\nscopes = [\"profile\"]"),
                "oidc.scopes",
            ),
        ];
        for (toml, key) in cases {
            let error = load(&toml).unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(!error.to_string().contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn frontend_needs_exactly_one_source() {
        let both = format!(
            "{}\n[frontend]\ndir = \"/\"\nupstream = \"http://127.0.0.1:5173\"\n",
            base()
        );
        assert_eq!(load(&both).unwrap_err().key, "frontend");
        let no_index = format!("{}\n[frontend]\ndir = \"/nonexistent\"\n", base());
        assert_eq!(load(&no_index).unwrap_err().key, "frontend.dir");
        let dev = format!(
            "{}\n[frontend]\nupstream = \"http://127.0.0.1:5173\"\n",
            base()
        );
        assert!(matches!(
            load(&dev).unwrap().frontend().unwrap(),
            Frontend::Upstream(_)
        ));
        assert!(matches!(
            load(&base()).unwrap().frontend().unwrap(),
            Frontend::Demo
        ));
    }

    #[test]
    fn errors_never_echo_secret_values() {
        let toml = base().replace(KEY, "not-base64-SECRETVALUE");
        let error = load(&toml).unwrap_err();
        assert!(!error.to_string().contains("SECRETVALUE"));
    }

    #[test]
    fn environment_style_values_override_the_file() {
        let figment = Figment::new()
            .merge(Toml::string(&base()))
            .merge(Serialized::default("oidc.client_id", "from-env"));
        assert_eq!(
            Settings::from_figment(figment).unwrap().oidc.client_id,
            "from-env"
        );
    }
}
