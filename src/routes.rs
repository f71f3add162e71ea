//! The route table: which upstream serves a request path, and what path it sees.
//!
//! A prefix matches whole path segments only, the longest prefix wins, and a remainder that
//! tries to climb out of its prefix (`..`, `%2e%2e`, encoded slashes) is refused.

use percent_encoding::percent_decode_str;
use url::Url;

/// One configured `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// The path prefix, starting with `/`, without a trailing `/`.
    pub prefix: String,
    /// The upstream base URL the remainder is appended to.
    pub upstream: Url,
    /// How long to wait for the upstream's response headers.
    pub timeout: std::time::Duration,
}

/// Why a path could not be routed.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No prefix matches.
    NoRoute,
    /// The remainder tries to leave the prefix.
    Traversal,
}

/// Routes sorted so that the longest prefix is tried first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// A matched route and the upstream URL for the request.
#[derive(Debug)]
pub struct Target<'a> {
    /// The matched route.
    pub route: &'a Route,
    /// The full upstream URL (path remainder and query appended).
    pub url: String,
}

impl RouteTable {
    /// Builds the table; prefixes are normalised by the config layer.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Self { routes }
    }

    /// Finds the route for `path` and builds the upstream URL with `query`.
    pub fn resolve(&self, path: &str, query: Option<&str>) -> Result<Target<'_>, RouteError> {
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
        Ok(Target { route, url })
    }
}

/// `Some(rest)` when `prefix` matches whole segments of `path`.
fn remainder_after<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Whether any segment, decoded up to three times, is `.`/`..` or hides a separator.
fn climbs_out(remainder: &str) -> bool {
    if remainder.contains('\\') {
        return true;
    }
    remainder.split('/').any(|segment| {
        let mut current = segment.to_owned();
        for _ in 0..3 {
            let decoded = percent_decode_str(&current)
                .decode_utf8_lossy()
                .into_owned();
            if decoded == "." || decoded == ".." || decoded.contains(['/', '\\']) {
                return true;
            }
            if decoded == current {
                return false;
            }
            current = decoded;
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let route = |prefix: &str, upstream: &str| Route {
            prefix: prefix.into(),
            upstream: Url::parse(upstream).unwrap(),
            timeout: std::time::Duration::from_secs(1),
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
            "/api/orders/../admin",
            "/api/orders/..",
            "/api/orders/%2e%2e/admin",
            "/api/orders/%2E%2E",
            "/api/orders/.%2e/x",
            "/api/orders/%252e%252e/x",
            "/api/orders/..%2fadmin",
            "/api/orders/a%2f..%2f..%2fb",
            "/api/orders/a%5cb",
            "/api/orders/./x",
            "/api/orders\\..\\x",
        ] {
            assert_eq!(url(path, None), Err(RouteError::Traversal), "{path}");
        }
        assert!(
            url("/api/orders/..foo", None).is_ok(),
            "dots inside a name are fine"
        );
    }
}
