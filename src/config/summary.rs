//! `vestibule --check-config`: what the file and the `VESTIBULE_*` variables produced, as an
//! operator needs to see it (which provider, which store, which routes, which listeners), with
//! every secret left out: a secret is reported as set, never shown, nor its length, and every
//! URL is shown through [`crate::redact::url`] (no user name or password, no query values).

use crate::oidc::dpop::DpopMode;
use std::fmt::Write;

use super::{AuditSubject, Frontend, LogFormat, Settings};
use crate::authz::Expected;
use crate::oidc::ParMode;
use crate::oidc::{ClientAuthMethod, LogoutStrategy, UserInfoMode, UserInfoTokenMethod};
use crate::redact;
use crate::routes::{Credential, Route};
use crate::session::SuspiciousUseAction;

impl Settings {
    /// A few lines describing the effective configuration; no secret appears in them.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<16} {value}");
        };
        line("listen", self.listen.to_string());
        line(
            "public_url",
            format!(
                "{} (callback {})",
                redact::url(&self.public_url),
                redact::url(&self.redirect_uri())
            ),
        );
        if self.other_providers.is_empty() {
            oidc_lines(&mut line, "oidc", &self.oidc);
        } else {
            // Each provider under its id; the first is the one sessions of earlier releases
            // belong to.
            for oidc in self.providers() {
                let prefix = format!("providers[{}]", oidc.id);
                line(&prefix, format!("\"{}\"", oidc.name));
                oidc_lines(&mut line, &prefix, oidc);
            }
        }
        let session = &self.session;
        line(
            "session.store",
            match &session.redis {
                Some(topology) => format!("Redis, {}", topology.describe()),
                None => "in process memory (one instance only; lost on restart)".to_owned(),
            },
        );
        line("session.keys", session.keys.describe());
        line(
            "session.lifetime",
            format!(
                "idle {} s, absolute {} s, cache {} records per instance ({})",
                session.idle_timeout.as_secs(),
                session.absolute_timeout.as_secs(),
                session.local_cache_entries,
                if session.local_cache_opened {
                    "kept opened too"
                } else {
                    "sealed only"
                }
            ),
        );
        line(
            "session.policy",
            format!(
                "max_per_user {}, refresh_token_escrow {}, suspicious_use {}",
                session.max_per_user,
                session.refresh_token_escrow,
                match session.suspicious_use {
                    SuspiciousUseAction::Log => "log",
                    SuspiciousUseAction::End => "end",
                }
            ),
        );
        let assertion = &self.assertion;
        line(
            "assertion",
            match assertion.signing_keys.split_first() {
                None => format!(
                    "keys derived from the session keys, valid {} s",
                    assertion.lifetime_secs
                ),
                Some((signing, older)) => format!(
                    "signed with {} (published: {} key(s)), valid {} s",
                    signing.kid(),
                    older.len() + 1,
                    assertion.lifetime_secs
                ),
            },
        );
        if self.routes.is_empty() {
            line("routes", "none".to_owned());
        }
        for route in &self.routes {
            line(
                "route",
                format!(
                    "{} -> {} (timeout {} s; {})",
                    route.prefix,
                    redact::url(&route.upstream),
                    route.timeout.as_secs(),
                    describe_policy(route)
                ),
            );
        }
        line(
            "frontend",
            match &self.frontend {
                Frontend::Demo => "the built-in demo page".to_owned(),
                Frontend::Dir(dir) => format!("files from {}", dir.display()),
                Frontend::Upstream(url) => format!("proxied from {}", redact::url(url)),
            },
        );
        let server = &self.server;
        line(
            "server",
            format!(
                "trusted_proxies [{}], trust_request_id {}, max_connections {}, shutdown_delay {} s",
                server
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                server.trust_request_id,
                server.max_connections,
                server.shutdown_delay.as_secs()
            ),
        );
        line(
            "upstream tls",
            match server.upstream_ca_certificates.len() {
                0 => "the public roots".to_owned(),
                count => format!(
                    "the public roots and {count} CA certificate(s) of server.upstream_ca_file"
                ),
            },
        );
        line(
            "audit",
            match (&self.audit.subject, &self.audit.subject_key) {
                (AuditSubject::Clear, _) => "subjects in clear (audit.subject = \"clear\")",
                (AuditSubject::Hashed, Some(_)) => "subjects hashed (key set)",
                (AuditSubject::Hashed, None) => {
                    "subjects hashed (key derived from the encryption key)"
                }
            }
            .to_owned(),
        );
        line(
            "metrics",
            match self.metrics_listen {
                Some(address) => format!("GET /metrics on {address}"),
                None => "off (metrics.listen not set)".to_owned(),
            },
        );
        line(
            "traces",
            match &self.traces.otlp_endpoint {
                Some(endpoint) => format!(
                    "OTLP/HTTP to {} as {} (sample_ratio {}, trust_traceparent {})",
                    redact::url(endpoint),
                    self.traces.service_name,
                    self.traces.sample_ratio,
                    self.traces.trust_traceparent
                ),
                None => format!(
                    "off (traces.otlp_endpoint not set); trust_traceparent {}",
                    self.traces.trust_traceparent
                ),
            },
        );
        line(
            "log_format",
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .to_owned(),
        );
        out
    }
}

/// What a route lets through: its access, methods, claim rules, step-up and WebSockets.
fn describe_policy(route: &Route) -> String {
    let policy = &route.policy;
    let mut parts = vec![
        format!("access {}", policy.access()),
        format!("methods {}", policy.methods()),
    ];
    for rule in policy.require() {
        let (kind, values) = match rule.expected() {
            Expected::AnyOf(values) => ("any_of", values),
            Expected::AllOf(values) => ("all_of", values),
        };
        parts.push(format!(
            "require {} {kind} [{}]",
            rule.claim().as_str(),
            values.join(", ")
        ));
    }
    if let Some(step_up) = policy.step_up() {
        let mut demands = Vec::new();
        if !step_up.acr_values().is_empty() {
            demands.push(format!("acr [{}]", step_up.acr_values().join(", ")));
        }
        if let Some(max_age) = step_up.max_age() {
            demands.push(format!("auth at most {} s old", max_age.as_secs()));
        }
        parts.push(format!("step-up {}", demands.join(", ")));
    }
    if route.websocket {
        parts.push("websocket".to_owned());
    }
    parts.push(describe_credential(&route.credential));
    parts.join("; ")
}

/// What a route's upstream receives, with the parameters its token is asked for.
fn describe_credential(credential: &Credential) -> String {
    let mut text = format!("credential {}", credential.kind());
    let mut detail = Vec::new();
    if let Some(parameters) = credential.held_token() {
        for (name, value) in [
            ("audience", &parameters.audience),
            ("scope", &parameters.scope),
            ("resource", &parameters.resource),
        ] {
            if let Some(value) = value {
                detail.push(format!("{name} {value}"));
            }
        }
    }
    if let Credential::Assertion(assertion) = credential {
        detail.push(format!("aud {}", assertion.audience));
        detail.push(format!("in {}", assertion.header));
        if assertion.also_bearer {
            detail.push("with the session's bearer token".to_owned());
        }
    }
    if !detail.is_empty() {
        text.push_str(&format!(" ({})", detail.join(", ")));
    }
    text
}

/// The lines about one provider, each named `prefix` + `.` + what it is about.
fn oidc_lines(line: &mut impl FnMut(&str, String), prefix: &str, oidc: &super::OidcSettings) {
    line(&format!("{prefix}.issuer"), oidc.issuer.clone());
    line(&format!("{prefix}.provider"), oidc.provider.describe());
    if !oidc.issuer_aliases.is_empty() {
        line(&format!("{prefix}.aliases"), oidc.issuer_aliases.join(", "));
    }
    if !oidc.allowed_tenants.is_empty() {
        line(
            &format!("{prefix}.tenants"),
            format!(
                "{} allowed under a multi-tenant discovery issuer",
                oidc.allowed_tenants.len()
            ),
        );
    }
    line(
        &format!("{prefix}.discovery"),
        redact::url(&oidc.discovery_url),
    );
    line(
        &format!("{prefix}.tls"),
        match oidc.ca_certificates.len() {
            0 => "the public roots".to_owned(),
            count => format!("the public roots and {count} CA certificate(s) of oidc.ca_file"),
        },
    );
    line(
        &format!("{prefix}.client"),
        match &oidc.client_keys {
            Some(keys) => format!(
                "{} (no secret; authentication private_key_jwt signed with key {} ({}), {} \
                 key(s) published at {})",
                oidc.client_id,
                keys.signing_kid(),
                keys.signing_alg().name(),
                keys.all().count(),
                crate::oidc::CLIENT_JWKS_PATH
            ),
            None => format!(
                "{} (secret set; authentication {})",
                oidc.client_id,
                oidc.client_auth_method
                    .map_or("from discovery", ClientAuthMethod::name)
            ),
        },
    );
    line(
        &format!("{prefix}.signing"),
        match &oidc.id_token_signed_response_alg {
            Some(alg) => format!(
                "ID and logout tokens signed with {alg} (oidc.id_token_signed_response_alg)"
            ),
            None => "logout tokens under the algorithms of verified ID tokens, never HS* \
                     (oidc.id_token_signed_response_alg not set)"
                .to_owned(),
        },
    );
    line(
        &format!("{prefix}.scopes"),
        format!(
            "{} (prompt {}; refresh {} s before expiry; {} s assumed when unnamed)",
            oidc.scopes.join(" "),
            oidc.prompt.as_deref().unwrap_or("none"),
            oidc.refresh_skew.as_secs(),
            oidc.assumed_token_lifetime.as_secs()
        ),
    );
    if !oidc.extra_auth_params.is_empty() {
        line(
            &format!("{prefix}.extra_auth_params"),
            oidc.extra_auth_params
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    line(
        &format!("{prefix}.logout"),
        match (oidc.logout, oidc.logout_url.is_some()) {
            (LogoutStrategy::Local, _) => {
                "local: the session ends here only (its refresh token is revoked)".to_owned()
            }
            (LogoutStrategy::UrlTemplate, _) => {
                "url_template: the browser goes to oidc.logout_url".to_owned()
            }
            (LogoutStrategy::RpInitiated, true) => {
                "rp_initiated: the end_session_endpoint, else oidc.logout_url".to_owned()
            }
            (LogoutStrategy::RpInitiated, false) => {
                "rp_initiated: the end_session_endpoint, else the session ends here only".to_owned()
            }
        } + &match &oidc.logout_hint_claim {
            Some(claim) => format!(" (logout_hint from the claim {claim})"),
            None => String::new(),
        },
    );
    line(
        &format!("{prefix}.dpop"),
        match oidc.dpop {
            DpopMode::Off => "tokens are Bearer tokens (off)",
            DpopMode::Auto => {
                "tokens bound to a key per session when discovery lists ES256 in \
                 dpop_signing_alg_values_supported (auto)"
            }
            DpopMode::Required => {
                "tokens bound to a key per session; a provider without DPoP fails the login \
                 (required)"
            }
        }
        .to_owned(),
    );
    line(
        &format!("{prefix}.userinfo"),
        match oidc.userinfo {
            UserInfoMode::Auto => {
                "read at each login and refresh when discovery names an endpoint; \
                 tolerated when it refuses (auto)"
            }
            UserInfoMode::Required => "read at each login and refresh; required (required)",
            UserInfoMode::Off => "never read (off)",
        }
        .to_owned(),
    );
    line(
        &format!("{prefix}.par"),
        match oidc.par {
            ParMode::Auto => {
                "authorization requests pushed (RFC 9126) when discovery names a \
                 pushed_authorization_request_endpoint (auto)"
            }
            ParMode::Required => {
                "authorization requests always pushed (RFC 9126); a provider without PAR is \
                 an error (required)"
            }
            ParMode::Off => "authorization requests sent through the browser (off)",
        }
        .to_owned(),
    );
    line(
        &format!("{prefix}.userinfo_token_method"),
        match oidc.userinfo_token_method {
            UserInfoTokenMethod::Header => "Authorization: Bearer header (header)",
            UserInfoTokenMethod::Body => "form-encoded POST body (body)",
        }
        .to_owned(),
    );
}
