//! `[[routes]]`: each route's prefix, upstream and time limit, and its policy (access,
//! methods, claim rules, step-up) checked once here, so a route that starts is a route whose
//! rules mean what they say. The policy's own rules live in [`crate::authz`]; this module adds
//! the key to their errors.

use std::time::Duration;

use axum::http::HeaderName;

use super::error::ConfigError;
use super::file::{CredentialSection, RouteSection};
use crate::authz::{
    Access, ClaimPath, ClaimRule, Expected, MethodSet, PolicyError, RoutePolicy, StepUp,
};
use crate::routes::credential::DEFAULT_ASSERTION_HEADER;
use crate::routes::{AssertionSpec, Credential, Route, TokenParameters};

/// The `[[routes]]` as the route table's entries; `dpop_on`: some provider's `oidc.dpop` is
/// not `off`, so a session's own tokens may be bound to its key.
pub(super) fn routes(sections: &[RouteSection], dpop_on: bool) -> Result<Vec<Route>, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    let mut routes = Vec::with_capacity(sections.len());
    for (index, route) in sections.iter().enumerate() {
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
        // The probes (`http::endpoints::health`) are Vestibule's own, whatever the routes say.
        if ["/healthz", "/readyz"]
            .iter()
            .any(|probe| prefix == *probe || prefix.starts_with(&format!("{probe}/")))
        {
            return Err(ConfigError::new(
                key("prefix"),
                "/healthz and /readyz are reserved for Vestibule's health probes",
            ));
        }
        if prefix == crate::assertion::JWKS_PATH
            || prefix.starts_with(&format!("{}/", crate::assertion::JWKS_PATH))
        {
            return Err(ConfigError::new(
                key("prefix"),
                "/.well-known/jwks.json is reserved for Vestibule's assertion keys",
            ));
        }
        if prefix == crate::oidc::CLIENT_JWKS_PATH
            || prefix.starts_with(&format!("{}/", crate::oidc::CLIENT_JWKS_PATH))
        {
            return Err(ConfigError::new(
                key("prefix"),
                "/.well-known/client-jwks.json is reserved for Vestibule's client keys",
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
        let policy = policy(route)
            .map_err(|(field, error)| ConfigError::new(key(&field), error.to_string()))?;
        let credential = credential(route, &policy)
            .and_then(|credential| check_dpop(route, &credential, dpop_on).map(|()| credential))
            .map_err(|(field, why)| ConfigError::new(key(&format!("credential.{field}")), why))?;
        routes.push(Route {
            policy,
            credential,
            websocket: route.websocket,
            ..Route::new(
                route.prefix.clone(),
                route.upstream.clone(),
                Duration::from_secs(route.timeout_secs),
            )
        });
    }
    Ok(routes)
}

/// The policy of one route, or the field (relative to the route) that is wrong and why.
fn policy(route: &RouteSection) -> Result<RoutePolicy, (String, PolicyError)> {
    let access = match &route.access {
        Some(access) => Access::parse(access).map_err(|error| ("access".to_owned(), error))?,
        None => Access::default(),
    };
    let methods = match &route.methods {
        Some(methods) => {
            MethodSet::parse(methods).map_err(|error| ("methods".to_owned(), error))?
        }
        None => MethodSet::every(),
    };
    let mut require = Vec::with_capacity(route.require.len());
    for (index, rule) in route.require.iter().enumerate() {
        let field = |name: &str| format!("require[{index}].{name}");
        let claim = ClaimPath::parse(&rule.claim).map_err(|error| (field("claim"), error))?;
        // The list the error is about: `all_of` when only it is given.
        let values = if rule.any_of.is_none() && rule.all_of.is_some() {
            field("all_of")
        } else {
            field("any_of")
        };
        let expected = Expected::parse(rule.any_of.clone(), rule.all_of.clone())
            .map_err(|error| (values.clone(), error))?;
        require.push(ClaimRule::new(claim, expected).map_err(|error| (values, error))?);
    }
    let step_up = match &route.step_up {
        Some(step_up) => Some(
            StepUp::new(
                step_up.acr_values.clone(),
                step_up.max_age_secs.map(Duration::from_secs),
            )
            .map_err(|error| ("step_up".to_owned(), error))?,
        ),
        None => None,
    };
    RoutePolicy::new(access, methods, require, step_up)
        .map_err(|error| ("access".to_owned(), error))
}

/// The credential of one route, or the field (relative to `credential`) that is wrong and why.
fn credential(route: &RouteSection, policy: &RoutePolicy) -> Result<Credential, (String, String)> {
    let anonymous = policy.access() == Access::Anonymous;
    let Some(section) = &route.credential else {
        return Ok(Credential::default_for(anonymous));
    };
    let field = |name: &str, why: &str| Err((name.to_owned(), why.to_owned()));
    let credential = match section.kind.as_str() {
        "session" => Credential::Session,
        "exchange" => Credential::Exchange(token_parameters(section)?),
        "refresh" => Credential::Refresh(token_parameters(section)?),
        "client" => Credential::Client(token_parameters(section)?),
        "assertion" => Credential::Assertion(assertion(section, route)?),
        "none" => Credential::None,
        _ => {
            return field(
                "kind",
                "must be one of session, exchange, refresh, client, assertion, none",
            );
        }
    };
    if !matches!(credential, Credential::Assertion(_))
        && (section.header.is_some() || !section.claims.is_empty() || section.also_bearer)
    {
        return field(
            "kind",
            "header, claims and also_bearer belong to kind = \"assertion\" only",
        );
    }
    if credential.held_token().is_none()
        && !matches!(credential, Credential::Assertion(_))
        && (section.audience.is_some() || section.scope.is_some() || section.resource.is_some())
    {
        return field(
            "kind",
            "audience, scope and resource belong to kinds that obtain a token (exchange, refresh, client)",
        );
    }
    if anonymous && credential.needs_session() {
        return field(
            "kind",
            "needs a signed-in user's session, which an access = \"anonymous\" route never has (use client or none)",
        );
    }
    Ok(credential)
}

/// The token request parameters of an `exchange`, `refresh` or `client` credential.
fn token_parameters(section: &CredentialSection) -> Result<TokenParameters, (String, String)> {
    if section.scope.as_deref().is_some_and(|scope| {
        scope.trim().is_empty()
            || scope
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
    }) {
        return Err(("scope".into(), "must be space-separated scope names".into()));
    }
    let resource = match &section.resource {
        Some(resource) => Some(resource_uri(resource).map_err(|why| ("resource".to_owned(), why))?),
        None => None,
    };
    let audience = match &section.audience {
        Some(audience) => {
            Some(audience_value(audience).map_err(|why| ("audience".to_owned(), why))?)
        }
        None => None,
    };
    Ok(TokenParameters {
        audience,
        scope: section.scope.clone(),
        resource,
        dpop: section.dpop.unwrap_or(true),
    })
}

/// `[routes.credential] dpop`: `false` asks for an unbound token of the route's own, which only
/// a kind that obtains one can; the session's own token (`session`, an assertion's
/// `also_bearer`) is bound whenever `oidc.dpop` is on, and a bound token is never sent as
/// `Bearer`, so `dpop = false` there is refused, naming the route.
fn check_dpop(
    route: &RouteSection,
    credential: &Credential,
    dpop_on: bool,
) -> Result<(), (String, String)> {
    let Some(dpop) = route.credential.as_ref().and_then(|section| section.dpop) else {
        return Ok(());
    };
    let sends_session_token = match credential {
        Credential::Session => true,
        Credential::Assertion(spec) => spec.also_bearer,
        _ => false,
    };
    if credential.held_token().is_none() && !sends_session_token {
        return Err((
            "dpop".into(),
            "belongs to kinds that send a token (session, exchange, refresh, client, assertion \
             with also_bearer)"
                .into(),
        ));
    }
    if sends_session_token && !dpop && dpop_on {
        return Err((
            "dpop".into(),
            format!(
                "route {}: dpop = false cannot apply to the session's own token, which oidc.dpop \
                 binds to the session's key (a bound token is never sent as Bearer); for an \
                 upstream that only knows Bearer use kind = \"exchange\" or \"refresh\" with \
                 dpop = false",
                route.prefix
            ),
        ));
    }
    Ok(())
}

/// An `assertion` credential: its audience (default: the upstream's origin), header and claims.
fn assertion(
    section: &CredentialSection,
    route: &RouteSection,
) -> Result<AssertionSpec, (String, String)> {
    if section.scope.is_some() || section.resource.is_some() {
        return Err((
            "kind".into(),
            "scope and resource belong to kinds that obtain a token (exchange, refresh, client)"
                .into(),
        ));
    }
    let audience = match &section.audience {
        Some(audience) => audience_value(audience).map_err(|why| ("audience".to_owned(), why))?,
        None => route.upstream.origin().ascii_serialization(),
    };
    let header_name = section
        .header
        .as_deref()
        .unwrap_or(DEFAULT_ASSERTION_HEADER);
    let header = HeaderName::try_from(header_name).map_err(|_| {
        (
            "header".to_owned(),
            "must be an HTTP header name".to_owned(),
        )
    })?;
    let reserved = [
        "authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
    ];
    if reserved.contains(&header.as_str()) {
        return Err((
            "header".into(),
            format!("must not be {}, which the forwarder owns", header.as_str()),
        ));
    }
    let mut claims = Vec::with_capacity(section.claims.len());
    for (index, claim) in section.claims.iter().enumerate() {
        claims.push(
            ClaimPath::parse(claim)
                .map_err(|error| (format!("claims[{index}]"), error.to_string()))?,
        );
    }
    Ok(AssertionSpec {
        audience,
        header,
        claims,
        also_bearer: section.also_bearer,
    })
}

/// An RFC 8707 resource: an absolute URI without a fragment.
fn resource_uri(text: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(url) if url.fragment().is_none() && !url.cannot_be_a_base() => Ok(text.to_owned()),
        _ => Err("must be an absolute URI without a fragment (RFC 8707)".into()),
    }
}

/// An audience: printable text without spaces.
fn audience_value(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a non-empty value without spaces".into());
    }
    Ok(text.to_owned())
}

/// `oidc.resource`: each an RFC 8707 resource.
pub(super) fn resources(key: &str, resources: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for (index, resource) in resources.iter().enumerate() {
        resource_uri(resource).map_err(|why| ConfigError::new(format!("{key}[{index}]"), why))?;
    }
    Ok(resources)
}

/// `oidc.audience`.
pub(super) fn audience(key: &str, audience: Option<String>) -> Result<Option<String>, ConfigError> {
    audience
        .map(|audience| audience_value(&audience).map_err(|why| ConfigError::new(key, why)))
        .transpose()
}
