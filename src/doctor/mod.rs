//! `vestibule doctor`: checks, from where Vestibule will run, that its configuration works
//! against the real provider and Redis, and says what to do about each problem.
//!
//! Each family of checks has its file: gathering is a thin async step, and every verdict is a
//! pure function over what was gathered (tested without a network). The doctor only reads and
//! probes: it never logs in, never changes the provider, and on Redis touches nothing but keys
//! of its own (see [`redis_acl`]). No line of its report carries a secret.

mod certificates;
mod deployment;
mod par;
mod provider;
mod redis_acl;
pub mod report;
mod token_endpoint;

use redis::ConnectionAddr;
use url::Url;

use crate::config::{OidcSettings, Settings};
use crate::oidc::BackChannel;
use crate::session::store::RedisTopology;
use report::Check;
pub use report::Report;

/// Runs every check against `settings`.
pub async fn examine(settings: &Settings) -> Report {
    let facts = deployment::DeploymentFacts {
        public_url: settings.public_url.clone(),
        trusted_proxies: settings.server.trusted_proxies.clone(),
        login_rate_limited: settings.login.rate_limit_per_minute > 0,
    };
    let mut checks = vec![Check::ok("config.load", "the configuration loads")];
    checks.push(deployment::cookie_security(&facts));
    checks.extend(deployment::client_addresses(&facts));
    let several = !settings.other_providers.is_empty();
    for oidc in settings.providers() {
        let mut found = provider_checks(settings, oidc).await;
        if several {
            // Each line says which provider it is about.
            for check in &mut found {
                check.summary = format!("[{}] {}", oidc.id, check.summary);
            }
        }
        checks.extend(found);
    }
    checks.extend(redis_checks(settings).await);
    Report::new(checks)
}

/// Discovery, issuer, clock, JWKS, client authentication, logout support and TLS of the
/// provider `oidc` (one of `settings.providers()`).
async fn provider_checks(settings: &Settings, oidc: &OidcSettings) -> Vec<Check> {
    let mut checks = Vec::new();
    let http = match crate::oidc::provider_http_client(&oidc.ca_certificates) {
        Ok(http) => http,
        Err(error) => {
            checks.push(Check::fail(
                "provider.discovery",
                format!("cannot build an HTTP client: {error}"),
                "check oidc.ca_file",
            ));
            return checks;
        }
    };
    checks.push(provider_certificate(&oidc.discovery_url).await);
    let fetched = provider::fetch(&http, &oidc.discovery_url).await;
    let (check, document) = provider::discovery(&oidc.discovery_url, &fetched);
    checks.push(check);
    let (Some(document), Ok(fetched)) = (document, &fetched) else {
        checks.push(Check::skip(
            "provider.*",
            "issuer, JWKS, client authentication, logout support and clock not checked \
             (no discovery document)",
        ));
        return checks;
    };
    let issuer = provider::issuer(&oidc.issuer, &oidc.allowed_tenants, document);
    // Vestibule refuses a discovery document of another issuer and never sends it the secret;
    // neither does the doctor.
    let issuer_fits = issuer.status == report::Status::Ok;
    checks.push(issuer);
    checks.push(provider::clock(fetched));
    let endpoint = |field: &str| {
        document
            .get(field)
            .and_then(serde_json::Value::as_str)
            .and_then(|url| Url::parse(url).ok())
    };
    let Some(token_endpoint) = endpoint("token_endpoint") else {
        checks.push(Check::fail(
            "provider.client_auth",
            "discovery names no token_endpoint",
            "point oidc.issuer at an OpenID Connect provider",
        ));
        return checks;
    };
    let routes = BackChannel::new(&oidc.issuer, &oidc.discovery_url, &token_endpoint);
    match endpoint("jwks_uri") {
        Some(jwks_uri) => {
            let jwks_uri = routes.route(jwks_uri);
            let algs = provider::id_token_algs(
                oidc.id_token_signed_response_alg
                    .as_ref()
                    .map(|alg| alg.name()),
                document,
            );
            let fetched = provider::fetch(&http, &jwks_uri).await;
            checks.push(provider::jwks(&jwks_uri, &fetched, &algs));
        }
        None => checks.push(Check::fail(
            "provider.jwks",
            "discovery names no jwks_uri: no ID token can be verified",
            "point oidc.issuer at an OpenID Connect provider",
        )),
    }
    checks.extend(provider::audience(
        oidc.provider.profile,
        oidc.audience.as_deref(),
    ));
    checks.push(if issuer_fits {
        client_authentication(
            settings,
            oidc,
            &http,
            routes.route(token_endpoint),
            document,
        )
        .await
    } else {
        Check::skip(
            "provider.client_auth",
            "not probed: discovery names another issuer, so the client secret is not sent to \
             its token endpoint",
        )
    });
    checks.extend(provider::logout_support(
        document,
        oidc.logout,
        oidc.logout_url.is_some(),
    ));
    checks.push(par::pushed_authorization_requests(document, oidc.par));
    checks
}

/// The token-endpoint probe, repeated with the other method where Vestibule would switch.
async fn client_authentication(
    settings: &Settings,
    oidc: &OidcSettings,
    http: &reqwest::Client,
    endpoint: Url,
    document: &serde_json::Value,
) -> Check {
    let configured = oidc.client_auth_method;
    let method = token_endpoint::method(configured, document);
    let client = token_endpoint::Client {
        endpoint,
        credentials: crate::oidc::Credentials {
            id: &oidc.client_id,
            secret: oidc.client_secret.as_ref(),
            keys: oidc.client_keys.as_ref(),
            audience: &oidc.issuer,
        },
        redirect_uri: settings.redirect_uri(),
    };
    let first = token_endpoint::probe(http, &client, method).await;
    let refused = matches!(&first, Ok(answer) if answer.error.as_deref() != Some("invalid_grant"));
    let switched = if configured.is_none() && refused {
        Some(token_endpoint::probe(http, &client, method.other()).await)
    } else {
        None
    };
    token_endpoint::judge(method, configured.is_some(), &first, switched.as_ref())
}

/// The provider's certificate, when discovery is https.
async fn provider_certificate(discovery_url: &Url) -> Check {
    const ID: &str = "provider.tls";
    let (Some(host), Some(port)) = (
        discovery_url.host_str(),
        discovery_url.port_or_known_default(),
    ) else {
        return Check::skip(ID, "no host in the discovery URL");
    };
    if discovery_url.scheme() != "https" {
        return Check::skip(
            ID,
            "the provider is reached over plain http: no certificate",
        );
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let validity = certificates::read(host, port).await;
    certificates::judge(
        ID,
        &format!("the provider ({host}:{port})"),
        &validity,
        crate::clock::unix_now(),
    )
}

/// Redis reachable with its permissions, and its TLS certificates.
async fn redis_checks(settings: &Settings) -> Vec<Check> {
    let Some(topology) = &settings.session.redis else {
        return vec![Check::skip(
            "redis.reachable",
            "no session.redis_url: the in-memory store (one instance only; sessions end at restart)",
        )];
    };
    let mut checks = Vec::new();
    for (host, port) in tls_addresses(topology) {
        let validity = certificates::read(&host, port).await;
        checks.push(certificates::judge(
            "redis.tls",
            &format!("Redis ({host}:{port})"),
            &validity,
            crate::clock::unix_now(),
        ));
    }
    match topology {
        RedisTopology::Server(_) => {
            let facts = redis_acl::gather(topology, &settings.session.redis_tls).await;
            checks.extend(redis_acl::judge(&facts, &topology.describe()));
        }
        RedisTopology::Sentinel(_) | RedisTopology::Cluster(_) => checks.push(Check::skip(
            "redis.acl",
            format!(
                "{}: reachability and ACL permissions are checked on a single server only; \
                 run doctor with VESTIBULE_SESSION__REDIS_URL set to one data node \
                 (rediss://user@node:port) to check them",
                topology.describe()
            ),
        )),
    }
    checks
}

/// The TLS addresses of `topology` (the server, the Sentinels, the Cluster's seeds).
fn tls_addresses(topology: &RedisTopology) -> Vec<(String, u16)> {
    let tls = |addr: &ConnectionAddr| match addr {
        ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
        _ => None,
    };
    match topology {
        RedisTopology::Server(info) => tls(info.addr()).into_iter().collect(),
        RedisTopology::Sentinel(group) if group.tls => group
            .sentinels
            .iter()
            .filter_map(|addr| match addr {
                ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
                other => tls(other),
            })
            .collect(),
        RedisTopology::Sentinel(_) => Vec::new(),
        RedisTopology::Cluster(nodes) => nodes.iter().filter_map(|node| tls(node.addr())).collect(),
    }
}

/// An error with its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
