//! Configuration: a TOML file merged with `VESTIBULE_*` environment variables, checked and
//! converted once into typed [`Settings`] (durations, the key ring, the route table, the
//! frontend), which [`crate::app`] alone reads.
//!
//! Every problem becomes one [`ConfigError`] line naming the key and what is wrong. Secrets are
//! held as `SecretString` or in a [`KeyRing`] so they cannot be `Debug`-printed.

mod assertion_keys;
mod client_keys;
mod encryption_keys;
mod environment;
mod error;
mod file;
mod oidc_file;
mod parse;
mod profiles;
mod providers;
mod redis;
#[cfg(test)]
mod reference;
mod route_sections;
mod routes;
mod secret_files;
mod summary;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::SecretString;
use url::Url;

use crate::oidc::ParMode;
use crate::oidc::{
    ClientAuthMethod, LogoutStrategy, LogoutTemplate, SigningAlg, UserInfoMode, UserInfoTokenMethod,
};
use crate::routes::Route;
use crate::session::KeyRing;
use crate::session::store::{RedisTls, RedisTopology};
use error::describe_figment_error;
use file::FileSettings;

pub use environment::{ENV_PREFIX, IgnoredVariable};
pub use error::ConfigError;
pub use file::{AuditSubject, LogFormat, LoginSettings};
pub use profiles::{ProfileChoice, ProviderProfile};
pub use providers::DEFAULT_PROVIDER_ID;

/// The whole configuration, checked and converted.
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The origin the browser uses; the redirect URI is derived from it.
    pub public_url: Url,
    /// The OpenID Provider and this client's registration: `[oidc]`, or the first of
    /// `[[providers]]` (the provider whose sessions are stored as earlier releases stored them).
    pub oidc: OidcSettings,
    /// The other providers of `[[providers]]`, in their order; empty with `[oidc]`.
    pub other_providers: Vec<OidcSettings>,
    /// Session storage and lifetimes.
    pub session: SessionSettings,
    /// The upstream table's entries (`[[routes]]`).
    pub routes: Vec<Route>,
    /// Where the single-page app comes from.
    pub frontend: Frontend,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Connection handling and request-size limits of the listener.
    pub server: ServerSettings,
    /// Limits on starting logins.
    pub login: LoginSettings,
    /// How the audit trail names users.
    pub audit: AuditSettings,
    /// Where Prometheus scrapes (`metrics.listen`); `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// OpenTelemetry trace export (`[traces]`).
    pub traces: crate::traces::TraceSettings,
    /// How identity assertions are signed (`[assertion]`).
    pub assertion: crate::assertion::AssertionSettings,
}

/// `[audit]`.
pub struct AuditSettings {
    /// Hashed or clear subjects.
    pub subject: AuditSubject,
    /// The subject hash's key (`audit.subject_key`); `None`: derived from the encryption key.
    pub subject_key: Option<SecretString>,
}

/// `[oidc]` (or one `[[providers]]` entry): an OpenID Provider and this client's registration.
pub struct OidcSettings {
    /// The provider's id (`oidc.id`; `default` for `[oidc]` without one).
    pub id: String,
    /// The name the login chooser shows (`oidc.name`; absent: the id).
    pub name: String,
    /// The issuer identifier; must equal the discovery document's `issuer` exactly (or be an
    /// instance of its tenant template, with `allowed_tenants`).
    pub issuer: String,
    /// `oidc.issuer_aliases`: other `iss` values accepted as the issuer.
    pub issuer_aliases: Vec<String>,
    /// `oidc.allowed_tenants`: tenants accepted under a multi-tenant discovery issuer; empty:
    /// single-tenant only.
    pub allowed_tenants: Vec<String>,
    /// Where discovery is fetched: `oidc.discovery_url`, else `issuer` + the well-known path.
    pub discovery_url: Url,
    /// The registered client id.
    pub client_id: String,
    /// The client secret; `None` under `private_key_jwt`.
    pub client_secret: Option<SecretString>,
    /// The keys of `private_key_jwt` (`oidc.client_key_file`, `oidc.client_keys`).
    pub client_keys: Option<crate::oidc::ClientKeys>,
    /// Scopes to request; includes `openid`.
    pub scopes: Vec<String>,
    /// Refresh when the access token expires within this long.
    pub refresh_skew: Duration,
    /// `oidc.assumed_token_lifetime_secs`: an access token's lifetime when the provider names
    /// none (no `expires_in`, not a JWT with `exp`).
    pub assumed_token_lifetime: Duration,
    /// Token endpoint authentication; chosen from discovery when absent.
    pub client_auth_method: Option<ClientAuthMethod>,
    /// `prompt` sent with the authorization request: as configured (`""`: none), else the
    /// profile's, else `consent` when `offline_access` is requested (OIDC Core §11).
    pub prompt: Option<String>,
    /// `oidc.userinfo`: whether logins and refreshes read the UserInfo endpoint.
    pub userinfo: UserInfoMode,
    /// `oidc.dpop`: whether the session's tokens are bound to a key of its own (RFC 9449).
    pub dpop: crate::oidc::dpop::DpopMode,
    /// `oidc.userinfo_token_method`: how UserInfo receives the access token.
    pub userinfo_token_method: UserInfoTokenMethod,
    /// `oidc.id_token_signed_response_alg`: the one algorithm ID tokens and logout tokens must
    /// be signed with; `None`: logout tokens under the algorithms of verified ID tokens (never HS).
    pub id_token_signed_response_alg: Option<SigningAlg>,
    /// `oidc.ca_file`: CA certificates trusted besides the public roots for provider calls.
    pub ca_certificates: Vec<reqwest::Certificate>,
    /// `oidc.resource`: RFC 8707 resources asked for at login.
    pub resources: Vec<String>,
    /// `oidc.audience`: the `audience` asked for at login (Auth0).
    pub audience: Option<String>,
    /// `oidc.extra_auth_params`: more parameters of the authorization request.
    pub extra_auth_params: Vec<(String, String)>,
    /// `oidc.logout`: where a logout sends the browser.
    pub logout: LogoutStrategy,
    /// `oidc.logout_url`: the logout URL template.
    pub logout_url: Option<LogoutTemplate>,
    /// `oidc.logout_hint_claim`: the claim sent as `logout_hint` on RP-initiated logout.
    pub logout_hint_claim: Option<String>,
    /// `oidc.par`: whether authorization requests are pushed (RFC 9126).
    pub par: ParMode,
    /// `oidc.provider`: the profile whose defaults apply, and how it was chosen.
    pub provider: ProviderProfile,
}

/// `[session]`: storage, encryption and lifetimes.
pub struct SessionSettings {
    /// The Redis deployment (`session.redis_url`); absent means the in-memory store (single
    /// instance only).
    pub redis: Option<RedisTopology>,
    /// Certificates for `rediss…` URLs (private CA, client certificate).
    pub redis_tls: RedisTls,
    /// The keys records are sealed and opened with (`session.encryption_key` or `_keys`).
    pub keys: KeyRing,
    /// Sliding idle timeout.
    pub idle_timeout: Duration,
    /// Absolute session lifetime.
    pub absolute_timeout: Duration,
    /// Sealed session records each instance keeps in memory (0: no cache).
    pub local_cache_entries: usize,
    /// Whether the cache keeps each record opened too (`session.local_cache_opened`).
    pub local_cache_opened: bool,
    /// Most sessions one user may have (`session.max_per_user`).
    pub max_per_user: usize,
    /// Whether refresh tokens are kept in escrow for remote revocation.
    pub refresh_token_escrow: bool,
    /// What happens on suspicious use (`session.suspicious_use`).
    pub suspicious_use: crate::session::SuspiciousUseAction,
}

/// `[server]`: what one client may cost the listener.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A request's header block must arrive within this long of its first byte.
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes (larger: `431`).
    pub max_header_bytes: usize,
    /// A response the client does not read may stall this long between two writes.
    pub send_timeout: Duration,
    /// Largest request body accepted by Vestibule's own `/api/auth/*` endpoints.
    pub max_body_bytes: usize,
    /// Load balancers or proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long an instance stays up, unready, between a stop signal and closing its listener.
    pub shutdown_delay: Duration,
    /// Keep the front proxies' `X-Request-Id` (`server.trust_request_id`).
    pub trust_request_id: bool,
    /// A WebSocket relay nothing has crossed for this long is closed.
    pub websocket_idle_timeout: Duration,
    /// WebSockets one session may hold open on one instance at once.
    pub max_websockets_per_session: usize,
    /// `server.upstream_ca_file`: CA certificates trusted besides the public roots for calls
    /// to upstreams (DER).
    pub upstream_ca_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Where the SPA is served from.
#[derive(Debug, Clone)]
pub enum Frontend {
    /// Vestibule's built-in demo page.
    Demo,
    /// Static files from a directory.
    Dir(PathBuf),
    /// A proxied development server.
    Upstream(Url),
}

/// The settings together with what loading them left out.
pub struct LoadedSettings {
    /// The validated settings.
    pub settings: Settings,
    /// `VESTIBULE_*` environment variables that are not settings and were ignored.
    pub ignored_environment: Vec<IgnoredVariable>,
}

impl Settings {
    /// Loads `file` (if any) and the environment (which wins), then checks and converts.
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
        let environment_keys: Vec<String> = environment::environment()
            .iter()
            .map(|(key, _)| key.as_str().to_ascii_lowercase())
            .collect();
        let mut ignored: Vec<IgnoredVariable> = Vec::new();
        let mut verbatim: Vec<String> = Vec::new();
        loop {
            let skip: Vec<String> = ignored.iter().map(|var| var.key.clone()).collect();
            let figment = environment::merge_environment(base.clone(), &skip, &verbatim);
            let error = match figment.extract::<FileSettings>() {
                Ok(file) => {
                    return Ok(LoadedSettings {
                        settings: parse::parse(file)
                            .map_err(|error| error.mention_misspelt(&ignored))?,
                        ignored_environment: ignored,
                    });
                }
                Err(error) => error,
            };
            if let Some(key) = environment::wants_verbatim(&error, &environment_keys)
                && !verbatim.contains(&key)
            {
                verbatim.push(key);
                continue;
            }
            match IgnoredVariable::from_error(&error, &environment_keys) {
                Some(variable) if !skip.contains(&variable.key) => ignored.push(variable),
                _ => return Err(describe_figment_error(error).mention_misspelt(&ignored)),
            }
        }
    }

    /// Extracts, checks and converts settings from any figment (tests build their own).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let file: FileSettings = figment.extract().map_err(describe_figment_error)?;
        parse::parse(file)
    }

    /// Every provider: [`Settings::oidc`] first, then [`Settings::other_providers`].
    pub fn providers(&self) -> impl Iterator<Item = &OidcSettings> {
        std::iter::once(&self.oidc).chain(&self.other_providers)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;
    use secrecy::ExposeSecret;

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

    fn load_error(toml: &str) -> ConfigError {
        match load(toml) {
            Ok(_) => panic!("loaded a bad configuration"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_cache_keeps_records_opened_unless_told_not_to() {
        assert!(load(&base()).unwrap().session.local_cache_opened);
        let sealed_only = base().replace(
            &format!("encryption_key = \"{KEY}\""),
            &format!("encryption_key = \"{KEY}\"\nlocal_cache_opened = false"),
        );
        assert!(!load(&sealed_only).unwrap().session.local_cache_opened);
    }

    #[test]
    fn tenants_and_aliases_are_checked_and_a_template_is_never_the_issuer() {
        let oidc = |issuer: &str, extra: &str| {
            base().replace(
                "issuer = \"http://localhost:8081/realms/vestibule\"",
                &format!("issuer = \"{issuer}\"\n{extra}"),
            )
        };
        let template = load_error(&oidc(
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "allowed_tenants = [\"t-1\"]",
        ));
        assert_eq!(template.key, "oidc.issuer");
        assert!(
            template.problem.contains("oidc.allowed_tenants"),
            "{template}"
        );
        let organizations = "https://login.microsoftonline.com/organizations/v2.0";
        let ok = load(&oidc(
            organizations,
            "allowed_tenants = [\"t-1\", \"t-1\"]\nissuer_aliases = [\"login.example\"]",
        ))
        .unwrap();
        assert_eq!(ok.oidc.allowed_tenants, ["t-1"]);
        assert_eq!(ok.oidc.issuer_aliases, ["login.example"]);
        assert!(load(&base()).unwrap().oidc.allowed_tenants.is_empty());
        for (extra, key) in [
            ("allowed_tenants = [\"a/b\"]", "oidc.allowed_tenants"),
            ("allowed_tenants = [\"\"]", "oidc.allowed_tenants"),
            ("issuer_aliases = [\"a b\"]", "oidc.issuer_aliases"),
        ] {
            assert_eq!(load_error(&oidc(organizations, extra)).key, key, "{extra}");
        }
    }

    #[test]
    fn the_audit_subject_key_is_long_and_only_for_hashed_subjects() {
        let key = "k".repeat(32);
        let hashed = load(&format!("{}\n[audit]\nsubject_key = \"{key}\"", base())).unwrap();
        assert_eq!(hashed.audit.subject, AuditSubject::Hashed);
        assert!(hashed.audit.subject_key.is_some());
        let short = load_error(&format!("{}\n[audit]\nsubject_key = \"short\"", base()));
        assert_eq!(short.key, "audit.subject_key");
        let both = load_error(&format!(
            "{}\n[audit]\nsubject = \"clear\"\nsubject_key = \"{key}\"",
            base()
        ));
        assert!(both.problem.contains("clear"), "{both}");
        let clear = load(&format!("{}\n[audit]\nsubject = \"clear\"", base())).unwrap();
        assert_eq!(clear.audit.subject, AuditSubject::Clear);
        assert!(load(&base()).unwrap().metrics_listen.is_none());
    }

    #[test]
    fn the_assumed_token_lifetime_defaults_to_five_minutes_within_a_sensible_range() {
        let settings = load(&base()).unwrap();
        assert_eq!(
            settings.oidc.assumed_token_lifetime,
            Duration::from_secs(300)
        );
        let with = |secs: u64| {
            base().replace(
                "client_secret = \"s3cret\"",
                &format!("client_secret = \"s3cret\"\nassumed_token_lifetime_secs = {secs}"),
            )
        };
        for good in [5, 60, 86_400] {
            let settings = load(&with(good)).unwrap();
            assert_eq!(settings.oidc.assumed_token_lifetime.as_secs(), good);
        }
        for bad in [0, 4, 86_401] {
            let error = load_error(&with(bad));
            assert_eq!(error.key, "oidc.assumed_token_lifetime_secs");
            assert!(error.problem.contains("between 5 and 86400"), "{error}");
        }
    }

    #[test]
    fn valid_config_loads_with_defaults() {
        let settings = load(&base()).unwrap();
        assert_eq!(settings.oidc.refresh_skew, Duration::from_secs(30));
        assert_eq!(settings.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(
            settings.redirect_uri().as_str(),
            "http://localhost:8080/api/auth/callback"
        );
        // The issuer's /realms/ path names Keycloak, whose profile leaves offline_access out.
        assert_eq!(settings.oidc.provider.profile.name, "keycloak");
        assert_eq!(settings.oidc.scopes, ["openid", "profile", "email"]);
        assert!(settings.oidc.id_token_signed_response_alg.is_none());
        let es256 =
            load(&base().replace("[oidc]", "[oidc]\nid_token_signed_response_alg = \"ES256\""))
                .unwrap();
        assert_eq!(
            es256.oidc.id_token_signed_response_alg,
            SigningAlg::parse("ES256")
        );
    }

    #[test]
    fn the_userinfo_token_travels_in_the_header_unless_body_is_asked_for() {
        let method = |line: &str| load(&base().replace("[oidc]", &format!("[oidc]\n{line}")));
        assert_eq!(
            method("").unwrap().oidc.userinfo_token_method,
            UserInfoTokenMethod::Header
        );
        assert_eq!(
            method("userinfo_token_method = \"body\"")
                .unwrap()
                .oidc
                .userinfo_token_method,
            UserInfoTokenMethod::Body
        );
        for refused in ["\"query\"", "\"Body\"", "true"] {
            let error = method(&format!("userinfo_token_method = {refused}"))
                .err()
                .unwrap();
            assert!(
                error.to_string().contains("oidc.userinfo_token_method"),
                "{error}"
            );
        }
    }

    #[test]
    fn userinfo_is_auto_unless_required_or_off() {
        let mode = |line: &str| load(&base().replace("[oidc]", &format!("[oidc]\n{line}")));
        assert_eq!(mode("").unwrap().oidc.userinfo, UserInfoMode::Auto);
        assert_eq!(
            mode("userinfo = \"required\"").unwrap().oidc.userinfo,
            UserInfoMode::Required
        );
        assert_eq!(
            mode("userinfo = \"off\"").unwrap().oidc.userinfo,
            UserInfoMode::Off
        );
        for refused in ["\"Auto\"", "\"on\"", "true"] {
            let error = mode(&format!("userinfo = {refused}")).err().unwrap();
            assert!(error.to_string().contains("oidc.userinfo"), "{error}");
        }
    }

    #[test]
    fn par_is_auto_unless_required_or_off() {
        let mode = |line: &str| load(&base().replace("[oidc]", &format!("[oidc]\n{line}")));
        assert_eq!(mode("").unwrap().oidc.par, ParMode::Auto);
        assert_eq!(
            mode("par = \"required\"").unwrap().oidc.par,
            ParMode::Required
        );
        assert_eq!(mode("par = \"off\"").unwrap().oidc.par, ParMode::Off);
        for refused in ["\"Auto\"", "\"on\"", "true"] {
            let error = mode(&format!("par = {refused}")).err().unwrap();
            assert!(error.to_string().contains("oidc.par"), "{error}");
        }
    }

    #[test]
    fn missing_secret_names_the_key_and_env_var() {
        let error = load_error(&base().replace("client_secret = \"s3cret\"", ""));
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
                base().replace("\"/api/orders\"", "\"/healthz\""),
                "routes[0].prefix",
            ),
            (
                base().replace("\"/api/orders\"", "\"/readyz/deep\""),
                "routes[0].prefix",
            ),
            (
                base().replace("\"/api/orders\"", "\"/.well-known/jwks.json\""),
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
                base().replace("[session]", "[session]\nmax_per_user = 0"),
                "session.max_per_user",
            ),
            (
                base().replace("[session]", "[session]\nmax_per_user = 1001"),
                "session.max_per_user",
            ),
            (
                base().replace("[oidc]", "[oidc]\nca_file = \"/etc/hostname\""),
                "oidc.ca_file",
            ),
            (
                base().replace("[oidc]", "[oidc]\nca_file = \"/nonexistent/ca.pem\""),
                "oidc.ca_file",
            ),
            (
                base().replace("[oidc]", "[server]\nupstream_ca_file = \"/etc/hostname\"\n[oidc]"),
                "server.upstream_ca_file",
            ),
            (
                base().replace("[oidc]", "[server]\nupstream_ca_file = \"/nonexistent\"\n[oidc]"),
                "server.upstream_ca_file",
            ),
            (
                base().replace(
                    "[session]",
                    "[session]\nredis_url = \"redis://x\"\nredis_ca_file = \"/etc/hostname\"",
                ),
                "session.redis_ca_file",
            ),
            (
                base().replace(
                    "[session]",
                    "[session]\nredis_url = \"rediss://x\"\nredis_client_cert_file = \"/etc/hostname\"",
                ),
                "session.redis_client_cert_file",
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
            (
                base().replace("[oidc]", "[oidc]\nid_token_signed_response_alg = \"none\""),
                "oidc.id_token_signed_response_alg",
            ),
            (
                base().replace("[oidc]", "[oidc]\nid_token_signed_response_alg = \"rs256\""),
                "oidc.id_token_signed_response_alg",
            ),
        ];
        for (toml, key) in cases {
            let error = load_error(&toml);
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
        assert_eq!(load_error(&both).key, "frontend");
        let no_index = format!("{}\n[frontend]\ndir = \"/nonexistent\"\n", base());
        assert_eq!(load_error(&no_index).key, "frontend.dir");
        let dev = format!(
            "{}\n[frontend]\nupstream = \"http://127.0.0.1:5173\"\n",
            base()
        );
        assert!(matches!(
            load(&dev).unwrap().frontend,
            Frontend::Upstream(_)
        ));
        assert!(matches!(load(&base()).unwrap().frontend, Frontend::Demo));
    }

    #[test]
    fn errors_never_echo_secret_values() {
        let toml = base().replace(KEY, "not-base64-SECRETVALUE");
        let error = load_error(&toml);
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

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn environment_values_keep_the_type_their_setting_wants() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("VESTIBULE_LISTEN", "127.0.0.1:8080");
            jail.set_env("VESTIBULE_PUBLIC_URL", "http://localhost:8080");
            jail.set_env("VESTIBULE_OIDC__ISSUER", "http://localhost:8081");
            jail.set_env("VESTIBULE_OIDC__CLIENT_ID", "007");
            jail.set_env("VESTIBULE_OIDC__CLIENT_SECRET", "0123");
            jail.set_env("VESTIBULE_OIDC__PROMPT", "1.50");
            jail.set_env("VESTIBULE_SESSION__ENCRYPTION_KEY", KEY);
            jail.set_env("VESTIBULE_SESSION__IDLE_TIMEOUT_SECS", "90");
            jail.set_env("VESTIBULE_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]");
            let settings = match Settings::load(None) {
                Ok(loaded) => loaded.settings,
                Err(error) => panic!("{error}"),
            };
            // Strings stay exactly as written, however they look...
            assert_eq!(settings.oidc.client_id, "007");
            assert_eq!(settings.oidc.client_secret.unwrap().expose_secret(), "0123");
            assert_eq!(settings.oidc.prompt.as_deref(), Some("1.50"));
            // ...and numbers and lists are parsed.
            assert_eq!(settings.session.idle_timeout, Duration::from_secs(90));
            assert_eq!(settings.server.trusted_proxies.len(), 1);
            jail.set_env("VESTIBULE_SESSION__IDLE_TIMEOUT_SECS", "1.5");
            let Err(error) = Settings::load(None) else {
                panic!("a fractional number of seconds was accepted");
            };
            assert_eq!(error.key, "session.idle_timeout_secs");
            Ok(())
        });
    }

    #[test]
    fn redis_deployments_and_their_secrets_come_from_the_url_and_files() {
        let dir =
            std::env::temp_dir().join(format!("vestibule-config-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password_file = dir.join("redis-password");
        std::fs::write(&password_file, "data-pw\n").unwrap();
        let sentinel_file = dir.join("sentinel-password");
        std::fs::write(&sentinel_file, "sentinel-pw\n").unwrap();
        let with = |lines: &str| base().replace("[session]", &format!("[session]\n{lines}"));

        let settings = load(&with(&format!(
            "redis_url = \"redis+sentinel://app@127.0.0.1:26379,127.0.0.1:26380/main\"\n\
             redis_password_file = \"{}\"\n\
             redis_sentinel_username = \"watcher\"\n\
             redis_sentinel_password_file = \"{}\"",
            password_file.display(),
            sentinel_file.display()
        )))
        .unwrap();
        let Some(RedisTopology::Sentinel(group)) = settings.session.redis else {
            panic!("a Sentinel deployment");
        };
        assert_eq!(group.master_name, "main");
        assert_eq!(group.sentinels.len(), 2);
        assert_eq!(
            (group.node.username(), group.node.password()),
            (Some("app"), Some("data-pw"))
        );
        let auth = group.sentinel_auth.expect("the Sentinels' own credentials");
        assert_eq!(
            (auth.username.as_deref(), auth.password.as_str()),
            (Some("watcher"), "sentinel-pw")
        );

        let settings = load(&with(
            "redis_url = \"rediss+cluster://127.0.0.1:7000,127.0.0.1:7001\"\n\
             redis_ca_file = \"/etc/hostname\"",
        ))
        .unwrap();
        assert!(
            matches!(settings.session.redis, Some(RedisTopology::Cluster(ref nodes)) if nodes.len() == 2)
        );
        assert!(settings.session.redis_tls.ca_pem.is_some());

        let cases = [
            (
                format!(
                    "redis_url = \"redis+cluster://:inline@h:7000\"\nredis_password_file = \"{}\"",
                    password_file.display()
                ),
                "session.redis_url",
            ),
            (
                format!("redis_password_file = \"{}\"", password_file.display()),
                "session.redis_password_file",
            ),
            (
                "redis_url = \"redis://h\"\nredis_sentinel_password = \"x\"".to_owned(),
                "session.redis_sentinel_password",
            ),
            (
                "redis_url = \"redis+sentinel://h/m\"\nredis_sentinel_username = \"u\"".to_owned(),
                "session.redis_sentinel_username",
            ),
            (
                format!(
                    "redis_url = \"redis+sentinel://h/m\"\nredis_sentinel_password = \"x\"\n\
                     redis_sentinel_password_file = \"{}\"",
                    sentinel_file.display()
                ),
                "session.redis_sentinel_password",
            ),
            (
                "redis_url = \"redis+cluster://h:7000\"\nredis_ca_file = \"/etc/hostname\""
                    .to_owned(),
                "session.redis_ca_file",
            ),
            (
                "redis_url = \"redis+sentinel://h\"".to_owned(),
                "session.redis_url",
            ),
        ];
        for (lines, key) in cases {
            let error = load_error(&with(&lines));
            assert_eq!(error.key, key, "{lines}: {error}");
            assert!(!error.to_string().contains("inline"), "{error}");
            assert!(!error.to_string().contains("data-pw"), "{error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_proxies_send_is_believed_only_with_trusted_proxies_to_believe_it_from() {
        /// Whether loaded settings believe what the proxies send.
        type Believed = fn(&Settings) -> bool;
        let settings: [(&str, &str, Believed); 2] = [
            (
                "traces.trust_traceparent",
                "[traces]\ntrust_traceparent = true\n[server]\n",
                |settings| settings.traces.trust_traceparent,
            ),
            (
                "server.trust_request_id",
                "[server]\ntrust_request_id = true\n",
                |settings| settings.server.trust_request_id,
            ),
        ];
        for (key, toml, believed) in settings {
            let trusting = format!("{}\n{toml}", base());
            let error = load_error(&trusting);
            assert_eq!(error.key, key);
            assert!(error.problem.contains("server.trusted_proxies"), "{error}");
            let behind_proxies = format!("{trusting}trusted_proxies = [\"10.0.0.0/8\"]\n");
            assert!(believed(&load(&behind_proxies).unwrap()), "{key}");
        }
    }

    #[test]
    fn each_credential_kind_takes_its_own_keys_and_anonymous_routes_only_need_no_session() {
        use crate::routes::Credential;
        let route = |credential: &str| {
            format!(
                "{}\n[[routes]]\nprefix = \"/api/x\"\nupstream = \"http://127.0.0.1:9001\"\n{credential}",
                base()
            )
        };
        let settings = load(&base()).unwrap();
        assert_eq!(settings.routes[0].credential, Credential::Session);
        let exchange = load(&route(
            "[routes.credential]\nkind = \"exchange\"\naudience = \"orders-api\"\nscope = \"orders:read\"\nresource = \"https://orders.example/\"",
        ))
        .unwrap();
        let Credential::Exchange(parameters) = &exchange.routes[1].credential else {
            panic!("an exchange credential");
        };
        assert_eq!(parameters.audience.as_deref(), Some("orders-api"));
        assert_eq!(parameters.scope.as_deref(), Some("orders:read"));
        assert_eq!(
            parameters.resource.as_deref(),
            Some("https://orders.example/")
        );
        let assertion = load(&route(
            "[routes.credential]\nkind = \"assertion\"\nclaims = [\"email\", \"realm_access.roles\"]\nalso_bearer = true",
        ))
        .unwrap();
        let Credential::Assertion(spec) = &assertion.routes[1].credential else {
            panic!("an assertion credential");
        };
        assert_eq!(
            spec.audience, "http://127.0.0.1:9001",
            "the upstream's origin by default"
        );
        assert_eq!(spec.header.as_str(), "x-vestibule-assertion");
        assert!(spec.also_bearer);
        assert_eq!(spec.claims.len(), 2);
        let anonymous = load(&route("access = \"anonymous\"")).unwrap();
        assert_eq!(anonymous.routes[1].credential, Credential::None);
        let anonymous_client = load(&route(
            "access = \"anonymous\"\n[routes.credential]\nkind = \"client\"\nscope = \"machine\"",
        ))
        .unwrap();
        assert!(matches!(
            anonymous_client.routes[1].credential,
            Credential::Client(_)
        ));
        for (credential, key) in [
            (
                "access = \"anonymous\"\n[routes.credential]\nkind = \"exchange\"",
                "routes[1].credential.kind",
            ),
            (
                "[routes.credential]\nkind = \"exchanged\"",
                "routes[1].credential.kind",
            ),
            (
                "[routes.credential]\nkind = \"session\"\naudience = \"a\"",
                "routes[1].credential.kind",
            ),
            (
                "[routes.credential]\nkind = \"exchange\"\nheader = \"X-A\"",
                "routes[1].credential.kind",
            ),
            (
                "[routes.credential]\nkind = \"exchange\"\nresource = \"orders\"",
                "routes[1].credential.resource",
            ),
            (
                "[routes.credential]\nkind = \"refresh\"\naudience = \"two words\"",
                "routes[1].credential.audience",
            ),
            (
                "[routes.credential]\nkind = \"assertion\"\nheader = \"Authorization\"",
                "routes[1].credential.header",
            ),
            (
                "[routes.credential]\nkind = \"assertion\"\nclaims = [\"sub\"]",
                "routes[1].credential.claims[0]",
            ),
        ] {
            assert_eq!(load_error(&route(credential)).key, key, "{credential}");
        }
    }

    #[test]
    fn dpop_false_asks_for_an_unbound_token_and_never_unbinds_the_sessions_own() {
        let route = |oidc: &str, credential: &str| {
            format!(
                "{}\n[[routes]]\nprefix = \"/api/legacy\"\nupstream = \"http://127.0.0.1:9001\"\n\
                 [routes.credential]\n{credential}",
                base().replace(
                    "client_secret = \"s3cret\"",
                    &format!("client_secret = \"s3cret\"\n{oidc}")
                )
            )
        };
        let unbound = load(&route(
            "dpop = \"auto\"",
            "kind = \"exchange\"\naudience = \"legacy\"\ndpop = false",
        ))
        .unwrap();
        assert!(!unbound.routes[1].credential.dpop());
        assert!(unbound.routes[0].credential.dpop());
        for mode in ["auto", "required"] {
            for credential in [
                "kind = \"session\"\ndpop = false",
                "kind = \"assertion\"\nalso_bearer = true\ndpop = false",
            ] {
                let error = load_error(&route(&format!("dpop = \"{mode}\""), credential));
                assert_eq!(
                    error.key, "routes[1].credential.dpop",
                    "{mode} {credential}"
                );
                assert!(error.to_string().contains("/api/legacy"), "{error}");
            }
        }
        // With DPoP off the session's tokens are Bearer tokens: nothing to refuse.
        assert!(load(&route("", "kind = \"session\"\ndpop = false")).is_ok());
        assert!(load(&route("dpop = \"auto\"", "kind = \"session\"\ndpop = true")).is_ok());
        assert_eq!(
            load_error(&route("", "kind = \"none\"\ndpop = false")).key,
            "routes[1].credential.dpop"
        );
    }

    #[test]
    fn login_resources_are_absolute_uris_and_the_audience_one_word() {
        let with = |extra: &str| {
            base().replace(
                "client_secret = \"s3cret\"",
                &format!("client_secret = \"s3cret\"\n{extra}"),
            )
        };
        let settings = load(&with(
            "resource = [\"https://orders.example/\", \"https://billing.example/\"]\naudience = \"https://api.example\"",
        ))
        .unwrap();
        assert_eq!(settings.oidc.resources.len(), 2);
        assert_eq!(
            settings.oidc.audience.as_deref(),
            Some("https://api.example")
        );
        assert!(load(&base()).unwrap().oidc.resources.is_empty());
        assert_eq!(
            load_error(&with("resource = [\"orders\"]")).key,
            "oidc.resource[0]"
        );
        assert_eq!(load_error(&with("audience = \"\"")).key, "oidc.audience");
    }

    /// `base()` with its `[oidc]` table replaced by `providers`.
    fn with_providers(providers: &str) -> String {
        let base = base();
        let start = base.find("[oidc]").unwrap();
        let end = base.find("[session]").unwrap();
        format!("{}{providers}\n{}", &base[..start], &base[end..])
    }

    const TWO: &str = r#"
        [[providers]]
        id = "staff"
        name = "Staff"
        issuer = "https://staff.example"
        client_id = "a"
        client_secret = "s1"
        [[providers]]
        id = "partners"
        issuer = "https://partners.example"
        client_id = "b"
        client_secret = "s2"
        refresh_skew_secs = 10
    "#;

    #[test]
    fn several_providers_are_listed_with_their_ids_the_first_apart() {
        let settings = load(&with_providers(TWO)).unwrap();
        assert_eq!(
            (settings.oidc.id.as_str(), settings.oidc.name.as_str()),
            ("staff", "Staff")
        );
        let ids: Vec<&str> = settings.providers().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["staff", "partners"]);
        let partners = &settings.other_providers[0];
        assert_eq!(partners.name, "partners", "the id when no name");
        assert_eq!(
            partners.refresh_skew,
            Duration::from_secs(10),
            "every [oidc] key"
        );
        let summary = settings.summary();
        assert!(summary.contains("providers[partners].issuer"), "{summary}");
        // [oidc] alone: one provider, id "default", exactly as before.
        let single = load(&base()).unwrap();
        assert_eq!(single.oidc.id, DEFAULT_PROVIDER_ID);
        assert!(single.other_providers.is_empty());
        assert!(single.summary().contains("oidc.issuer"));
    }

    #[test]
    fn provider_ids_and_issuers_are_checked_naming_the_key() {
        let both = load_error(&format!("{}\n{TWO}", base()));
        assert_eq!(both.key, "providers");
        assert!(both.problem.contains("not both"), "{both}");
        let no_id = load_error(&with_providers(&TWO.replace("id = \"partners\"\n", "")));
        assert_eq!(no_id.key, "providers[1].id");
        for bad in ["", "has space", "a/b", &"x".repeat(33)] {
            let error = load_error(&with_providers(
                &TWO.replace("id = \"partners\"", &format!("id = \"{bad}\"")),
            ));
            assert_eq!(error.key, "providers[1].id", "{bad:?}");
        }
        let twice = load_error(&with_providers(&TWO.replace("\"partners\"", "\"staff\"")));
        assert_eq!(twice.key, "providers[1].id");
        assert!(twice.problem.contains("unique"), "{twice}");
        let same_issuer = load_error(&with_providers(
            &TWO.replace("https://partners.example", "https://staff.example"),
        ));
        assert_eq!(same_issuer.key, "providers[1].issuer");
        let alias_of_another = load_error(&with_providers(&TWO.replace(
            "refresh_skew_secs = 10",
            "issuer_aliases = [\"https://staff.example\"]",
        )));
        assert_eq!(alias_of_another.key, "providers[1].issuer_aliases");
        // An [oidc] key's error names the entry it is about.
        let scopes = load_error(&with_providers(
            &TWO.replace("refresh_skew_secs = 10", "scopes = [\"email\"]"),
        ));
        assert_eq!(scopes.key, "providers[1].scopes");
        let unknown = load_error(&with_providers(
            &TWO.replace("refresh_skew_secs = 10", "colour = \"blue\""),
        ));
        assert!(unknown.key.contains("colour"), "{unknown}");
        let none = load_error(&with_providers(""));
        assert_eq!(none.key, "oidc");
        let bad_oidc_id = load_error(&base().replace("[oidc]", "[oidc]\nid = \"a b\""));
        assert_eq!(bad_oidc_id.key, "oidc.id");
    }
}
