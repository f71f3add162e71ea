//! The routes (`[[routes]]`): which upstream API serves a request path, what path it sees,
//! and what belongs to each route.
//!
//! A prefix matches whole path segments only and the longest prefix wins. The remainder is
//! forwarded byte for byte and never rewritten; instead it is refused ([`RouteError::Traversal`])
//! when any common server behind us could read one of its segments as `.` or `..`, or as more
//! than one segment ([`path_safety`] holds those rules).

pub mod credential;
mod path_safety;
#[cfg(test)]
mod properties;

use std::sync::Arc;
use std::time::Duration;

use crate::authz::RoutePolicy;
use crate::metrics::RouteMetrics;
use url::Url;

pub use credential::{AssertionSpec, Credential, TokenParameters};
use path_safety::climbs_out;

/// One configured `[[routes]]` entry: where its calls go and everything that is the route's
/// own (its time limit, its policy, its realtime settings, its metric handles). Built once at
/// start-up and shared as `Arc<Route>` with every call it serves.
#[derive(Debug)]
pub struct Route {
    /// The path prefix, starting with `/`, without a trailing `/`.
    pub prefix: String,
    /// The upstream base URL the remainder is appended to.
    pub upstream: Url,
    /// How long to wait for the upstream's response headers.
    pub timeout: Duration,
    /// Who may call it, with which methods, and what their claims must show.
    pub policy: RoutePolicy,
    /// Whether WebSocket upgrades pass (`GET` only, after the policy).
    pub websocket: bool,
    /// What the upstream receives (`[routes.credential]`).
    pub credential: Credential,
    /// The route's metric handles.
    pub metrics: &'static RouteMetrics,
}

impl Route {
    /// The route for `prefix` (normalised by the config layer), served by `upstream`, with
    /// the default policy (a signed-in user, every method), the session's access token, and
    /// no WebSocket.
    pub fn new(prefix: String, upstream: Url, timeout: Duration) -> Self {
        let metrics = crate::metrics::metrics().route(&prefix);
        Self {
            prefix,
            upstream,
            timeout,
            policy: RoutePolicy::default(),
            websocket: false,
            credential: Credential::Session,
            metrics,
        }
    }
}

/// Why a path could not be routed.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No prefix matches.
    NoRoute,
    /// The remainder tries to leave the prefix.
    Traversal,
}

/// The routes, sorted so that the longest prefix is tried first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

/// A request's route and the upstream URL it is sent to.
#[derive(Debug)]
pub struct RouteMatch {
    /// The matched route.
    pub route: Arc<Route>,
    /// The full upstream URL (path remainder and query appended).
    pub url: String,
}

impl RouteTable {
    /// Builds the table.
    pub fn new(routes: Vec<Route>) -> Self {
        let mut routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Self { routes }
    }

    /// The routes, longest prefix first.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().map(AsRef::as_ref)
    }

    /// Finds the route for `path` and builds the upstream URL with `query`.
    pub fn resolve(&self, path: &str, query: Option<&str>) -> Result<RouteMatch, RouteError> {
        let (route, remainder) = self
            .routes
            .iter()
            .find_map(|route| remainder_after(path, &route.prefix).map(|rest| (route, rest)))
            .ok_or(RouteError::NoRoute)?;
        if climbs_out(remainder) {
            return Err(RouteError::Traversal);
        }
        let base = route.upstream.as_str().trim_end_matches('/');
        let mut url =
            String::with_capacity(base.len() + remainder.len() + 1 + query.map_or(0, str::len));
        url.push_str(base);
        if remainder.is_empty() && route.upstream.path() == "/" {
            url.push('/');
        }
        url.push_str(remainder);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        Ok(RouteMatch {
            route: Arc::clone(route),
            url,
        })
    }
}

/// `Some(rest)` when `prefix` matches whole segments of `path`.
fn remainder_after<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let route = |prefix: &str, upstream: &str| {
            Route::new(
                prefix.into(),
                Url::parse(upstream).unwrap(),
                Duration::from_secs(1),
            )
        };
        RouteTable::new(vec![
            route("/api/orders", "http://127.0.0.1:9000/v1"),
            route("/api/orders/admin", "http://127.0.0.1:9001/"),
            route("/api", "http://127.0.0.1:9002"),
        ])
    }

    fn url(path: &str, query: Option<&str>) -> Result<String, RouteError> {
        table().resolve(path, query).map(|t| t.url)
    }

    #[test]
    fn remainder_and_query_are_appended() {
        assert_eq!(
            url("/api/orders/42", Some("x=1")).unwrap(),
            "http://127.0.0.1:9000/v1/42?x=1"
        );
        assert_eq!(
            url("/api/orders", None).unwrap(),
            "http://127.0.0.1:9000/v1"
        );
        assert_eq!(
            url("/api/orders/", None).unwrap(),
            "http://127.0.0.1:9000/v1/"
        );
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(
            url("/api/orders/admin/x", None).unwrap(),
            "http://127.0.0.1:9001/x"
        );
        assert_eq!(
            url("/api/orders/admin", None).unwrap(),
            "http://127.0.0.1:9001/"
        );
        assert_eq!(
            url("/api/other", None).unwrap(),
            "http://127.0.0.1:9002/other"
        );
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        assert_eq!(
            url("/api/ordersX", None).unwrap(),
            "http://127.0.0.1:9002/ordersX"
        );
        assert_eq!(url("/apix", None), Err(RouteError::NoRoute));
        assert_eq!(url("/", None), Err(RouteError::NoRoute));
    }

    #[test]
    fn traversal_is_refused() {
        for path in [
            // Plain and percent-encoded dot segments.
            "/api/orders/../admin",
            "/api/orders/..",
            "/api/orders/%2e%2e/admin",
            "/api/orders/%2E%2E",
            "/api/orders/.%2e/x",
            "/api/orders/./x",
            "/api/orders/.",
            // Double encoding.
            "/api/orders/%252e%252e/x",
            "/api/orders/%25%32%65%25%32%65/x",
            "/api/orders/%25u002e/x",
            // Separators inside a segment.
            "/api/orders/..%2fadmin",
            "/api/orders/a%2f..%2f..%2fb",
            "/api/orders/a%5cb",
            "/api/orders\\..\\x",
            "/api/orders/a\\b",
            // Path parameters on dot segments (Tomcat, Jetty, Spring).
            "/api/orders/..;/admin",
            "/api/orders/..;x=1/admin",
            "/api/orders/.;/x",
            "/api/orders/%2e%2e%3b/admin",
            "/api/orders/%2e%2e%3B/admin",
            "/api/orders/.%2e;x/y",
            // Control characters, raw and encoded.
            "/api/orders/..%00",
            "/api/orders/..%00/x",
            "/api/orders/a%00b",
            "/api/orders/.%09./x",
            "/api/orders/a%0ab",
            "/api/orders/a%0d%0ab",
            "/api/orders/a%7f",
            "/api/orders/a%c2%85",
            "/api/orders/a\u{0}b",
            "/api/orders/a\tb",
            "/api/orders/a\u{85}b",
            // Overlong and other invalid UTF-8.
            "/api/orders/%c0%ae%c0%ae/x",
            "/api/orders/%e0%80%ae%e0%80%ae/x",
            "/api/orders/%c0%af",
            "/api/orders/%ed%a0%80",
            "/api/orders/caf%e9",
            // Malformed percent-encoding and IIS's %uXXXX.
            "/api/orders/%u002e%u002e/x",
            "/api/orders/%U002E",
            "/api/orders/%",
            "/api/orders/%2",
            "/api/orders/%zz",
            "/api/orders/%%32%65",
            // Unicode compatibility forms of dots and separators.
            "/api/orders/%EF%BC%8E%EF%BC%8E/x",
            "/api/orders/\u{ff0e}\u{ff0e}/x",
            "/api/orders/%E2%80%A5/x",
            "/api/orders/%E2%80%A4%E2%80%A4/x",
            "/api/orders/%EF%B9%92/x",
            "/api/orders/%E2%80%A6/x",
            "/api/orders/..%EF%BC%8Fadmin",
            "/api/orders/..%EF%BC%BCadmin",
            "/api/orders/%EF%BC%852e%EF%BC%852e/x",
            "/api/orders/%EF%BC%8E%EF%BC%8E%EF%BC%9Bx/y",
            // Whitespace and Windows' trailing dots and spaces.
            "/api/orders/.../x",
            "/api/orders/..%20/x",
            "/api/orders/%20../x",
            "/api/orders/. ./x",
            "/api/orders/..%E3%80%80/x",
            "/api/orders/..%C2%A0/x",
            "/api/orders/....;x/y",
        ] {
            assert_eq!(url(path, None), Err(RouteError::Traversal), "{path}");
        }
    }

    #[test]
    fn legitimate_paths_are_forwarded_byte_exact() {
        for remainder in [
            "/a;b=c/d",
            "/a;b=c",
            "/caf%C3%A9",
            "/caf\u{e9}",
            "/100%25",
            "/%25zz",
            "/%25",
            "/..foo",
            "/a..b",
            "/foo..",
            "/.well-known/x",
            "/a%20b",
            "/%20",
            "/a//b",
            "/;x",
            "/a%3fb%23c",
            "/~user/_x-y",
        ] {
            assert_eq!(
                url(&format!("/api/orders{remainder}"), Some("q=1")).as_deref(),
                Ok(format!("http://127.0.0.1:9000/v1{remainder}?q=1").as_str()),
                "{remainder}"
            );
        }
    }
}
