//! Checking and converting the file's values into typed settings, once: durations, the
//! key ring, the route table, the trusted proxies and the frontend choice. Every check
//! names the key it is about.

use std::time::Duration;

use secrecy::ExposeSecret;
use url::Url;

use super::error::ConfigError;
use super::file::{
    AuditSection, AuditSubject, FileSettings, FrontendSection, ServerSection, TracesSection,
};
use super::providers::providers;
use super::redis;
use super::{AuditSettings, Frontend, ServerSettings, SessionSettings, Settings};
use super::{assertion_keys, encryption_keys, secret_files};
use crate::session::DEFAULT_MAX_PER_USER;
use crate::session::store::user_index::MAX_PER_USER_LIMIT;
use crate::traces::TraceSettings;

/// Checks every value of `file` and converts it into [`Settings`].
pub(super) fn parse(file: FileSettings) -> Result<Settings, ConfigError> {
    check_public_url(&file.public_url)?;
    let (oidc, other_providers) = providers(file.oidc, file.providers)?;
    let mut session = file.session;
    let keys = encryption_keys::key_ring(&mut session)?;
    let redis = redis::topology(&session)?;
    let redis_tls = redis::tls(&session, redis.as_ref())?;
    if session.idle_timeout_secs == 0 {
        return Err(ConfigError::new(
            "session.idle_timeout_secs",
            "must be at least 1",
        ));
    }
    if session.absolute_timeout_secs < session.idle_timeout_secs {
        return Err(ConfigError::new(
            "session.absolute_timeout_secs",
            "must not be shorter than session.idle_timeout_secs",
        ));
    }
    let dpop_on = std::iter::once(&oidc)
        .chain(&other_providers)
        .any(|provider| provider.dpop != crate::oidc::dpop::DpopMode::Off);
    let routes = super::routes::routes(&file.routes, dpop_on)?;
    let server = server(file.server)?;
    let traces = traces(file.traces, &server)?;
    check_login_limits(&file.login)?;
    let frontend = frontend(file.frontend)?;
    let assertion = assertion_keys::assertion(file.assertion)?;
    Ok(Settings {
        listen: file.listen,
        public_url: file.public_url,
        oidc,
        other_providers,
        session: SessionSettings {
            redis,
            redis_tls,
            keys,
            idle_timeout: Duration::from_secs(session.idle_timeout_secs),
            absolute_timeout: Duration::from_secs(session.absolute_timeout_secs),
            local_cache_entries: session.local_cache_entries,
            local_cache_opened: session.local_cache_opened,
            max_per_user: match session.max_per_user {
                None => DEFAULT_MAX_PER_USER,
                Some(max @ 1..=MAX_PER_USER_LIMIT) => max,
                Some(_) => {
                    return Err(ConfigError::new(
                        "session.max_per_user",
                        format!(
                            "must be between 1 and {MAX_PER_USER_LIMIT} (every login of a user \
                             costs Redis time in proportion to it; {DEFAULT_MAX_PER_USER} when \
                             left out)"
                        ),
                    ));
                }
            },
            refresh_token_escrow: session.refresh_token_escrow,
            suspicious_use: session.suspicious_use,
        },
        routes,
        frontend,
        log_format: file.log_format,
        server,
        login: file.login,
        audit: audit(file.audit)?,
        metrics_listen: file.metrics.listen,
        traces,
        assertion,
    })
}

/// `[traces]`; a trace context is trusted from `server.trusted_proxies` alone, so trusting it
/// without any would trust nobody (and a browser never).
fn traces(section: TracesSection, server: &ServerSettings) -> Result<TraceSettings, ConfigError> {
    only_with_trusted_proxies(
        "traces.trust_traceparent",
        section.trust_traceparent,
        &server.trusted_proxies,
        "trusts the trace context of server.trusted_proxies only, and none is set (a browser's \
         is never trusted: find its requests by their X-Request-Id)",
    )?;
    if let Some(endpoint) = &section.otlp_endpoint
        && !matches!(endpoint.scheme(), "http" | "https")
    {
        return Err(ConfigError::new(
            "traces.otlp_endpoint",
            "must be an http(s) URL (OTLP over HTTP)",
        ));
    }
    if !(0.0..=1.0).contains(&section.sample_ratio) {
        return Err(ConfigError::new(
            "traces.sample_ratio",
            "must be between 0 and 1",
        ));
    }
    if section.service_name.trim().is_empty() {
        return Err(ConfigError::new("traces.service_name", "must not be empty"));
    }
    Ok(TraceSettings {
        otlp_endpoint: section.otlp_endpoint,
        trust_traceparent: section.trust_traceparent,
        service_name: section.service_name,
        sample_ratio: section.sample_ratio,
    })
}

/// Minimum length of `audit.subject_key`: a guessable key would let anyone holding the logs
/// test candidate user ids against the hashes.
const MIN_SUBJECT_KEY_LEN: usize = 32;

fn audit(section: AuditSection) -> Result<AuditSettings, ConfigError> {
    let subject_key = secret_files::value_or_file(
        "audit.subject_key",
        section.subject_key,
        section.subject_key_file.as_deref(),
    )?;
    match &subject_key {
        Some(_) if section.subject == AuditSubject::Clear => Err(ConfigError::new(
            "audit.subject_key",
            "is set but audit.subject is \"clear\"; remove one of them",
        )),
        Some(key) if key.expose_secret().chars().count() < MIN_SUBJECT_KEY_LEN => {
            Err(ConfigError::new(
                "audit.subject_key",
                format!(
                    "must be at least {MIN_SUBJECT_KEY_LEN} characters (e.g. openssl rand -base64 32)"
                ),
            ))
        }
        _ => Ok(AuditSettings {
            subject: section.subject,
            subject_key,
        }),
    }
}

fn check_public_url(public_url: &Url) -> Result<(), ConfigError> {
    if !matches!(public_url.scheme(), "http" | "https") || public_url.host().is_none() {
        return Err(ConfigError::new(
            "public_url",
            "must be an http(s) URL with a host",
        ));
    }
    if public_url.path() != "/" || public_url.query().is_some() {
        return Err(ConfigError::new(
            "public_url",
            "must be an origin only (no path or query), e.g. https://app.example.com",
        ));
    }
    Ok(())
}

/// A setting `key` that believes what `server.trusted_proxies` send, turned on (`on`) with
/// none listed (`proxies`): it would silently believe nobody, so it is refused with `problem`.
fn only_with_trusted_proxies<T>(
    key: &str,
    on: bool,
    proxies: &[T],
    problem: &str,
) -> Result<(), ConfigError> {
    if on && proxies.is_empty() {
        Err(ConfigError::new(key, problem))
    } else {
        Ok(())
    }
}

/// `value` must be at least `minimum`.
fn at_least(key: &str, value: u64, minimum: u64) -> Result<(), ConfigError> {
    if value < minimum {
        Err(ConfigError::new(key, format!("must be at least {minimum}")))
    } else {
        Ok(())
    }
}

fn server(server: ServerSection) -> Result<ServerSettings, ConfigError> {
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
    at_least(
        "server.websocket_idle_timeout_secs",
        server.websocket_idle_timeout_secs,
        1,
    )?;
    at_least(
        "server.max_websockets_per_session",
        server.max_websockets_per_session as u64,
        1,
    )?;
    only_with_trusted_proxies(
        "server.trust_request_id",
        server.trust_request_id,
        &server.trusted_proxies,
        "keeps the X-Request-Id of server.trusted_proxies only, and none is set",
    )?;
    Ok(ServerSettings {
        header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
        keep_alive_timeout: Duration::from_secs(server.keep_alive_timeout_secs),
        max_connections: server.max_connections,
        max_header_bytes: server.max_header_bytes,
        send_timeout: Duration::from_secs(server.send_timeout_secs),
        max_body_bytes: server.max_body_bytes,
        trusted_proxies: trusted_proxies(&server.trusted_proxies)?,
        shutdown_delay: Duration::from_secs(server.shutdown_delay_secs),
        trust_request_id: server.trust_request_id,
        websocket_idle_timeout: Duration::from_secs(server.websocket_idle_timeout_secs),
        max_websockets_per_session: server.max_websockets_per_session,
        upstream_ca_certificates: upstream_ca(server.upstream_ca_file.as_deref())?,
    })
}

/// The CA certificates of `server.upstream_ca_file`: a readable PEM bundle with at least one
/// certificate, every one of which parses.
fn upstream_ca(
    file: Option<&std::path::Path>,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    const KEY: &str = "server.upstream_ca_file";
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(file).map_err(|error| {
        ConfigError::new(KEY, format!("cannot read {}: {error}", file.display()))
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            ConfigError::new(
                KEY,
                format!("{} is not a PEM bundle: {error}", file.display()),
            )
        })?;
    if certificates.is_empty() {
        return Err(ConfigError::new(
            KEY,
            format!("{} holds no PEM certificate", file.display()),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(certificates.iter().cloned());
    if unusable > 0 {
        return Err(ConfigError::new(
            KEY,
            format!(
                "{} holds {unusable} certificate(s) that cannot be a trust anchor",
                file.display()
            ),
        ));
    }
    Ok(certificates)
}

/// The parsed `server.trusted_proxies`; a bare address is a range of one.
fn trusted_proxies(entries: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
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

fn check_login_limits(login: &super::LoginSettings) -> Result<(), ConfigError> {
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

/// The `[frontend]` choice: exactly one of `dir` or `upstream`, or the demo page.
fn frontend(frontend: Option<FrontendSection>) -> Result<Frontend, ConfigError> {
    let Some(frontend) = frontend else {
        return Ok(Frontend::Demo);
    };
    match (frontend.dir, frontend.upstream) {
        (Some(dir), None) => {
            if !dir.join("index.html").is_file() {
                return Err(ConfigError::new(
                    "frontend.dir",
                    format!("{} has no index.html", dir.display()),
                ));
            }
            Ok(Frontend::Dir(dir))
        }
        (None, Some(upstream)) => {
            if !matches!(upstream.scheme(), "http" | "https") || upstream.host().is_none() {
                return Err(ConfigError::new(
                    "frontend.upstream",
                    "must be an http(s) URL",
                ));
            }
            Ok(Frontend::Upstream(upstream))
        }
        _ => Err(ConfigError::new(
            "frontend",
            "set exactly one of frontend.dir or frontend.upstream",
        )),
    }
}
