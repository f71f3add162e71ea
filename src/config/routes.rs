//! `[[routes]]`: each route's prefix, upstream and time limit, and its policy (access,
//! methods, claim rules, step-up) checked once here, so a route that starts is a route whose
//! rules mean what they say. The policy's own rules live in [`crate::authz`]; this module adds
//! the key to their errors.

use std::time::Duration;

use super::error::ConfigError;
use super::file::RouteSection;
use crate::authz::{
    Access, ClaimPath, ClaimRule, Expected, MethodSet, PolicyError, RoutePolicy, StepUp,
};
use crate::routes::Route;

/// The `[[routes]]` as the route table's entries.
pub(super) fn routes(sections: &[RouteSection]) -> Result<Vec<Route>, ConfigError> {
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
        routes.push(Route {
            policy,
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
