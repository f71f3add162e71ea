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

use crate::session::MasterKey;
use crate::upstreams::Route;

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

    /// Names an ignored variable that looks like a misspelling of this error's key, so a
    /// "missing" setting whose variable has a typo explains itself.
    fn mention_misspelt(mut self, ignored: &[IgnoredVariable]) -> Self {
        let wanted = format!("{ENV_PREFIX}{}", self.key.replace('.', "__")).to_uppercase();
        if let Some(variable) = ignored
            .iter()
            .find(|variable| variable.suggestion.as_deref() == Some(wanted.as_str()))
        {
            self.problem
                .push_str(&format!("; {} is set but is not a setting", variable.name));
        }
        self
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
    /// How log lines are written.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Connection handling and request-size limits of the listener.
    #[serde(default)]
    pub server: ServerSettings,
    /// Limits on starting logins.
    #[serde(default)]
    pub login: LoginSettings,
}

/// `log_format`: one line of text per event, or one JSON object per line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; coloured only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[server]`: what one client may cost the listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// A request's header block must arrive within this many seconds of its first byte.
    pub header_read_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this many seconds (keep it longer than
    /// the load balancer's idle timeout, so the balancer never reuses a closing connection).
    pub keep_alive_timeout_secs: u64,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes (larger: `431`).
    pub max_header_bytes: usize,
    /// A response the client does not read may stall this many seconds between two writes.
    pub send_timeout_secs: u64,
    /// Largest request body accepted by Vestibule's own `/api/auth/*` endpoints (larger: `413`).
    pub max_body_bytes: usize,
    /// Load balancers or proxies (CIDR ranges or addresses) whose `X-Forwarded-For` is believed
    /// when working out the client's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            keep_alive_timeout_secs: 75,
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            send_timeout_secs: 60,
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerSettings {
    /// `header_read_timeout_secs` as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// `keep_alive_timeout_secs` as a duration.
    pub fn keep_alive_timeout(&self) -> Duration {
        Duration::from_secs(self.keep_alive_timeout_secs)
    }

    /// `send_timeout_secs` as a duration.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs)
    }

    /// The parsed `trusted_proxies`; a bare address is a range of one.
    pub fn trusted_proxy_ranges(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let text = text.trim();
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(
                            format!("server.trusted_proxies[{index}]"),
                            "must be an IP address or a CIDR range such as 10.0.0.0/8",
                        )
                    })
            })
            .collect()
    }
}

/// `[login]`: what starting a login may cost, per client and in total.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    /// Login starts allowed per client address and minute, on each instance (0: no limit).
    pub rate_limit_per_minute: u32,
    /// Login starts a client address may make in a burst before the rate applies.
    pub rate_limit_burst: u32,
    /// Logins one browser may have in progress; starting another drops its oldest.
    pub max_pending_per_browser: usize,
    /// Logins in progress across all browsers and instances; past it, new ones get `503`.
    pub max_pending_total: usize,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 60,
            rate_limit_burst: 20,
            max_pending_per_browser: 5,
            max_pending_total: 10_000,
        }
    }
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
    ///
    /// An unknown key in the file is an error. An unknown `VESTIBULE_*` environment variable
    /// is not: platforms set their own (Kubernetes injects `VESTIBULE_PORT`,
    /// `VESTIBULE_SERVICE_HOST`, … for a Service named `vestibule`), so it is left out and
    /// reported in [`LoadedSettings::ignored_environment`].
    pub fn load(file: Option<&Path>) -> Result<LoadedSettings, ConfigError> {
        let mut base = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist or is not a file", path.display()),
                ));
            }
            base = base.merge(Toml::file_exact(path));
        }
        let environment_keys: Vec<String> = environment()
            .iter()
            .map(|(key, _)| key.as_str().to_ascii_lowercase())
            .collect();
        let mut ignored: Vec<IgnoredVariable> = Vec::new();
        loop {
            let skip: Vec<String> = ignored.iter().map(|var| var.key.clone()).collect();
            let figment = merge_environment(base.clone(), &skip);
            let error = match figment.extract::<Settings>() {
                Ok(settings) => {
                    settings.validate()?;
                    return Ok(LoadedSettings {
                        settings,
                        ignored_environment: ignored,
                    });
                }
                Err(error) => error,
            };
            match IgnoredVariable::from_error(&error, &environment_keys) {
                Some(variable) if !skip.contains(&variable.key) => ignored.push(variable),
                _ => return Err(describe_figment_error(error).mention_misspelt(&ignored)),
            }
        }
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
        self.validate_limits()?;
        self.frontend().map(|_| ())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let at_least = |key: &str, value: u64, minimum: u64| {
            if value < minimum {
                Err(ConfigError::new(key, format!("must be at least {minimum}")))
            } else {
                Ok(())
            }
        };
        let server = &self.server;
        at_least(
            "server.header_read_timeout_secs",
            server.header_read_timeout_secs,
            1,
        )?;
        at_least(
            "server.keep_alive_timeout_secs",
            server.keep_alive_timeout_secs,
            1,
        )?;
        at_least("server.max_connections", server.max_connections as u64, 1)?;
        at_least("server.send_timeout_secs", server.send_timeout_secs, 1)?;
        at_least(
            "server.max_header_bytes",
            server.max_header_bytes as u64,
            1024,
        )?;
        at_least("server.max_body_bytes", server.max_body_bytes as u64, 1024)?;
        server.trusted_proxy_ranges()?;
        let login = &self.login;
        at_least(
            "login.rate_limit_burst",
            u64::from(login.rate_limit_burst),
            1,
        )?;
        at_least(
            "login.max_pending_per_browser",
            login.max_pending_per_browser as u64,
            1,
        )?;
        at_least("login.max_pending_total", login.max_pending_total as u64, 1)
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

/// Variables with the prefix that are not settings at all.
const NOT_SETTINGS: [&str; 2] = ["CONFIG", "LOG"];

/// The `VESTIBULE_*` variables as settings: `VESTIBULE_A__B=…` → key `a.b`.
fn environment() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").ignore(&NOT_SETTINGS)
}

/// Merges the environment over `figment`, leaving out the keys in `skip`. String settings are
/// taken verbatim; others are parsed (numbers, arrays, tables).
fn merge_environment(figment: Figment, skip: &[String]) -> Figment {
    let skip = skip.to_vec();
    let kept = move |key: &str| !skip.iter().any(|skipped| covers(skipped, key));
    let parsed = kept.clone();
    let mut figment = figment.merge(
        environment().filter(move |key| !is_string_key(key.as_str()) && parsed(key.as_str())),
    );
    for (key, value) in environment().iter() {
        if is_string_key(key.as_str()) && kept(key.as_str()) {
            let key = key.as_str().to_ascii_lowercase();
            figment = figment.merge(figment::providers::Serialized::default(&key, value));
        }
    }
    figment
}

/// Whether the (unknown) key `unknown` is `key` or a table above it: `foo` covers `foo.bar`.
fn covers(unknown: &str, key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == unknown
        || key
            .strip_prefix(unknown)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The settings together with what loading them left out.
pub struct LoadedSettings {
    /// The validated settings.
    pub settings: Settings,
    /// `VESTIBULE_*` environment variables that are not settings and were ignored.
    pub ignored_environment: Vec<IgnoredVariable>,
}

/// A `VESTIBULE_*` environment variable that is not a setting. Only its name is kept, never
/// its value (it may be a secret with a misspelt name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredVariable {
    /// The variable's name, e.g. `VESTIBULE_OIDC__CLIENT_SECRT`.
    pub name: String,
    /// The real setting it most resembles, as a variable name, if any is close.
    pub suggestion: Option<String>,
    /// Whether it sits inside a real section (`VESTIBULE_OIDC__…`), which only a person does.
    pub in_section: bool,
    key: String,
}

/// How alike (normalised Levenshtein) a name must be to a real key to count as its typo.
const TYPO_SIMILARITY: f64 = 0.75;

impl IgnoredVariable {
    /// The variable behind an "unknown field" error, if the field came from the environment.
    fn from_error(error: &figment::Error, environment_keys: &[String]) -> Option<Self> {
        let figment::error::Kind::UnknownField(field, expected) = &error.kind else {
            return None;
        };
        let mut path = error.path.clone();
        if path.last() != Some(field) {
            path.push(field.clone());
        }
        let key = path.join(".").to_ascii_lowercase();
        // `VESTIBULE_FOO__BAR` is reported by serde as the unknown table `foo`.
        let set = environment_keys
            .iter()
            .find(|environment_key| covers(&key, environment_key))?;
        let variable = |path: &[String]| format!("{ENV_PREFIX}{}", path.join("__")).to_uppercase();
        let suggestion = expected
            .iter()
            .map(|candidate| (strsim::normalized_levenshtein(field, candidate), candidate))
            .filter(|(similarity, _)| *similarity >= TYPO_SIMILARITY)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, candidate)| {
                let mut path = path[..path.len() - 1].to_vec();
                path.push((*candidate).to_owned());
                variable(&path)
            });
        let set_path: Vec<String> = set.split('.').map(str::to_owned).collect();
        Some(Self {
            name: variable(&set_path),
            suggestion,
            in_section: path.len() > 1,
            key,
        })
    }

    /// Whether a person probably meant a real setting (worth a warning), rather than a
    /// platform exporting its own variable.
    pub fn looks_like_a_typo(&self) -> bool {
        self.suggestion.is_some() || self.in_section
    }
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
