//! The configuration's schema, exactly as an operator writes it: key names, defaults and
//! which keys exist. Values are checked and converted into [`super::Settings`] in one place,
//! [`super::parse`]; nothing else reads these types.

use std::net::SocketAddr;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

pub use super::oidc_file::{ClientKeySection, OidcSection};

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
    /// Keep each cached record opened too, beside its sealed bytes and dropped with them, so
    /// a call on a cached session derives no key and decrypts nothing (false: every call
    /// opens its record; see the security model).
    #[serde(default = "default_true")]
    pub local_cache_opened: bool,
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
    /// (an assertion signing key).
    #[serde(default)]
    pub key: Option<SecretString>,
    /// A file holding the key.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
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
