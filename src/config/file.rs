//! The configuration's schema, exactly as an operator writes it: key names, defaults and
//! which keys exist. Values are checked and converted into [`super::Settings`] in one place,
//! [`super::parse`]; nothing else reads these types.

use std::net::SocketAddr;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::oidc::ParMode;
use crate::oidc::{ClientAuthMethod, LogoutStrategy, UserInfoMode, UserInfoTokenMethod};

pub use super::route_sections::{CredentialSection, RouteSection};

/// The whole configuration file, as written (environment variables merged in).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The origin the browser uses; the redirect URI is derived from it.
    pub public_url: Url,
    /// The OpenID Provider and this client's registration (one provider); absent when
    /// `[[providers]]` lists them instead.
    #[serde(default)]
    pub oidc: Option<OidcSection>,
    /// Several OpenID Providers, each an `[oidc]` table with an `id` (instead of `[oidc]`).
    #[serde(default)]
    pub providers: Vec<OidcSection>,
    /// Session storage and lifetimes.
    pub session: SessionSection,
    /// Reverse-proxied API routes.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Where the single-page app comes from; absent: the built-in demo SPA.
    #[serde(default)]
    pub frontend: Option<FrontendSection>,
    /// How log lines are written.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Connection handling and request-size limits of the listener.
    #[serde(default)]
    pub server: ServerSection,
    /// Limits on starting logins.
    #[serde(default)]
    pub login: LoginSettings,
    /// How the audit trail names users.
    #[serde(default)]
    pub audit: AuditSection,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// OpenTelemetry trace export.
    #[serde(default)]
    pub traces: TracesSection,
    /// The keys and lifetime of identity assertions.
    #[serde(default)]
    pub assertion: AssertionSection,
}

/// `[assertion]`: how identity assertions are signed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionSection {
    /// A ring of PEM keys, the first signing, all published; absent: derived from the session
    /// keys.
    #[serde(default)]
    pub signing_keys: Option<Vec<RingKeySection>>,
    /// Seconds an assertion is valid (1 to 60; absent: 60).
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

/// `[traces]`: OpenTelemetry spans over OTLP/HTTP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesSection {
    /// The collector's OTLP/HTTP base URL (e.g. `http://collector:4318`); absent: no export.
    pub otlp_endpoint: Option<Url>,
    /// Adopt the `traceparent` a request brings as the parent of its spans.
    pub trust_traceparent: bool,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of new traces sampled, 0 to 1.
    pub sample_ratio: f64,
}

impl Default for TracesSection {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            trust_traceparent: false,
            service_name: "vestibule".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

/// `[audit]`: how audit events name the user.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// `hashed` (a keyed hash of `sub`, the default) or `clear` (the `sub` itself).
    #[serde(default)]
    pub subject: AuditSubject,
    /// The key of the subject hash (at least 32 characters); absent: derived from the
    /// encryption key (so it changes when the sealing key rotates).
    #[serde(default)]
    pub subject_key: Option<SecretString>,
    /// A file holding `subject_key`.
    #[serde(default)]
    pub subject_key_file: Option<std::path::PathBuf>,
}

/// `audit.subject`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSubject {
    /// A keyed hash (HMAC-SHA256) of `sub`: events correlate, identities stay out of the logs.
    #[default]
    Hashed,
    /// The `sub` in clear.
    Clear,
}

/// `[metrics]`: the Prometheus endpoint, on a listener of its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the metrics listener (`GET /metrics`); absent: no metrics listener.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
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
pub struct ServerSection {
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
    /// After a stop signal, readiness answers 503 but connections are still accepted for this
    /// many seconds, so load balancers stop sending traffic before the listener closes.
    pub shutdown_delay_secs: u64,
    /// Keep the `X-Request-Id` of requests that come through `trusted_proxies` instead of
    /// generating one.
    pub trust_request_id: bool,
    /// A WebSocket relay nothing has crossed for this many seconds is closed (`4408`).
    pub websocket_idle_timeout_secs: u64,
    /// WebSockets one session may hold open on one instance at once (more: `429`).
    pub max_websockets_per_session: usize,
    /// A PEM file of CA certificates trusted, besides the public roots, for calls to upstream
    /// APIs and the frontend's development server.
    pub upstream_ca_file: Option<std::path::PathBuf>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            keep_alive_timeout_secs: 75,
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            send_timeout_secs: 60,
            max_body_bytes: 64 * 1024,
            websocket_idle_timeout_secs: 300,
            max_websockets_per_session: 16,
            trusted_proxies: Vec::new(),
            shutdown_delay_secs: 5,
            trust_request_id: false,
            upstream_ca_file: None,
        }
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
    /// Logins in progress across all browsers and instances; past it, a new one displaces the
    /// oldest.
    pub max_pending_total: usize,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            // One address can be a campus NAT or a carrier's CGNAT: a thousand browsers may
            // start logins through it within a minute (after an outage, all at once), so the
            // burst alone admits them. The sustained rate stays low (5/s, far above any NAT's
            // steady logins), so a flood cannot turn the logins in progress over quickly.
            rate_limit_per_minute: 300,
            rate_limit_burst: 1_200,
            // An SPA whose session expired sends every open tab to the login at once.
            max_pending_per_browser: 20,
            // Room for a morning rush ten times over, and for a flood from one network on
            // several instances without displacing a login that takes a couple of minutes.
            max_pending_total: 20_000,
        }
    }
}

/// `[frontend]`: exactly one of `dir` or `upstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSection {
    /// A directory of built static files with an `index.html`.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// A development server to proxy (e.g. Vite), WebSocket upgrades included.
    #[serde(default)]
    pub upstream: Option<Url>,
}

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
    /// `private_key_jwt`: a ring of `{ id, key | key_file }` PEM keys, the first signing, all
    /// published.
    #[serde(default)]
    pub client_keys: Option<Vec<RingKeySection>>,
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

/// `[session]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// Redis URL (`redis://`, `rediss://`, `redis+sentinel://`, `redis+cluster://`); absent
    /// means the in-memory store (single instance only).
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    /// A file holding the Redis password (the URL keeps the ACL user name).
    #[serde(default)]
    pub redis_password_file: Option<std::path::PathBuf>,
    /// ACL user on the Sentinels themselves (with `redis_sentinel_password`).
    #[serde(default)]
    pub redis_sentinel_username: Option<String>,
    /// Password the Sentinels require (their own, not the master's).
    #[serde(default)]
    pub redis_sentinel_password: Option<SecretString>,
    /// A file holding `redis_sentinel_password`.
    #[serde(default)]
    pub redis_sentinel_password_file: Option<std::path::PathBuf>,
    /// PEM of the CA that signed Redis's certificate (`rediss://` with a private CA).
    #[serde(default)]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// PEM certificate Vestibule presents to Redis (mutual TLS), with its key.
    #[serde(default)]
    pub redis_client_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `redis_client_cert_file`.
    #[serde(default)]
    pub redis_client_key_file: Option<std::path::PathBuf>,
    /// Base64 of 32 random bytes (or `encryption_key_file`).
    #[serde(default)]
    pub encryption_key: Option<SecretString>,
    /// A file holding the encryption key.
    #[serde(default)]
    pub encryption_key_file: Option<std::path::PathBuf>,
    /// A ring of keys instead of `encryption_key`: the first seals, all open.
    #[serde(default)]
    pub encryption_keys: Option<Vec<RingKeySection>>,
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
    /// Most sessions one user may have (1 to 1000; absent: 100); a login beyond it ends their
    /// least recently used.
    #[serde(default)]
    pub max_per_user: Option<usize>,
    /// Keep each session's refresh token in escrow under the server keys, so sessions ended
    /// without their cookie still have it revoked.
    #[serde(default = "default_true")]
    pub refresh_token_escrow: bool,
    /// What happens when a session is used from another network with another browser:
    /// `log` or `end`.
    #[serde(default)]
    pub suspicious_use: crate::session::SuspiciousUseAction,
}

/// One entry of a key ring (`session.encryption_keys`, `assertion.signing_keys`): an id and
/// exactly one of `key` or `key_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingKeySection {
    /// The id stored in every record this key seals, or the `kid` of the assertions it signs.
    pub id: String,
    /// Base64 of 32 random bytes (an encryption key), or the PEM of an EC P-256 private key
    /// (an assertion or client signing key).
    #[serde(default)]
    pub key: Option<SecretString>,
    /// A file holding the key.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

fn default_refresh_skew() -> u64 {
    30
}
/// Keycloak's default access-token lifespan, and the shortest common among providers: a
/// guess that errs towards refreshing a little early rather than proxying a dead token.
fn default_assumed_token_lifetime() -> u64 {
    300
}
fn default_true() -> bool {
    true
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
