//! The single-page app: Vestibule's built-in demo page, a directory of built files, or a
//! proxied development server (WebSocket upgrades included, for hot reload).
//!
//! Frontend requests never need a session and never carry a token: Vestibule's cookies are
//! stripped before a development server sees the request.

use std::path::PathBuf;

use askama::Template;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};
use url::Url;

use crate::config::Frontend;
use crate::error::AppError;
use crate::http::AppState;
use crate::http::proxy::upgrade::{self, ClientUpgrade};
use crate::http::proxy::{Destination, ProxyError, into_browser_response};
use crate::http::server::client_address::ClientAddress;
use crate::http::server::connection::ConnectionSlot;
use crate::routes::Route;

/// The JS helper served at `/api/auth/client.js`.
const CLIENT_JS: &str = include_str!("../../../templates/client.js");
/// Its TypeScript declarations, served at `/api/auth/client.d.ts`.
const CLIENT_TYPES: &str = include_str!("../../../templates/client.d.ts");

/// Long-lived caching for files whose names carry a content hash.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else is revalidated on each use (so a new deployment is picked up at once).
const REVALIDATE: &str = "no-cache";

/// How the SPA is served, built once from the configuration.
#[derive(Clone)]
pub enum FrontendService {
    /// The built-in demo page, with the paths its sections call.
    Demo {
        /// What each section of the page calls; a section without a path is left out.
        paths: DemoPaths,
    },
    /// Static files with an `index.html` fallback for client-side routes.
    Dir {
        /// The directory.
        root: PathBuf,
    },
    /// A development server.
    Upstream {
        /// Its base URL.
        base: Url,
    },
}

/// The paths the demo page's sections call, found among the routes by what each route is
/// (in the configuration's order, the first that fits): a section whose kind of route is not
/// configured is not shown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoPaths {
    /// "Call the API": the first route's prefix + `/hello`.
    pub api: Option<String>,
    /// "Admin-only call": the first route with claim rules, + `/report`.
    pub admin: Option<String>,
    /// "Step up": the first route with a step-up, + `/confirm`.
    pub step_up: Option<String>,
    /// The live feeds: the first route with `websocket = true`, whose `/ticks` is the
    /// WebSocket and `/events` the event stream.
    pub live: Option<String>,
}

impl DemoPaths {
    /// The paths for `routes` (as configured, in order).
    pub fn for_routes(routes: &[Route]) -> Self {
        let first = |fits: fn(&Route) -> bool, path: &str| {
            routes
                .iter()
                .find(|route| fits(route))
                .map(|route| format!("{}{path}", route.prefix))
        };
        Self {
            api: first(|_| true, "/hello"),
            admin: first(|route| !route.policy.require().is_empty(), "/report"),
            step_up: first(|route| route.policy.step_up().is_some(), "/confirm"),
            live: first(|route| route.websocket, ""),
        }
    }
}

impl FrontendService {
    /// Builds the service for a validated `[frontend]` choice and the configured routes.
    pub fn new(frontend: Frontend, routes: &[Route]) -> Self {
        match frontend {
            Frontend::Demo => FrontendService::Demo {
                paths: DemoPaths::for_routes(routes),
            },
            Frontend::Dir(root) => FrontendService::Dir { root },
            Frontend::Upstream(base) => FrontendService::Upstream { base },
        }
    }
}

/// `GET /api/auth/client.js`.
pub async fn client_js() -> Response {
    helper_file("text/javascript; charset=utf-8", CLIENT_JS)
}

/// `GET /api/auth/client.d.ts`: the helper's types for a TypeScript SPA (a download: the
/// compiler reads files, so the type only matters to Deno, which takes `application/typescript`).
pub async fn client_types() -> Response {
    helper_file("application/typescript; charset=utf-8", CLIENT_TYPES)
}

/// One of the helper's files, revalidated on each use like `index.html`.
fn helper_file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    set_cache(&mut response, REVALIDATE);
    response
}

/// The router's fallback: every path that is neither an API call nor `/api/auth` belongs to
/// the single-page app.
pub async fn serve(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    match &state.frontend {
        FrontendService::Demo { paths } => Ok(demo_page(request.uri(), paths)),
        FrontendService::Dir { root } => Ok(static_file(root, request).await),
        FrontendService::Upstream { base } => dev_server(&state, base, request).await,
    }
}

#[derive(Template)]
#[template(path = "demo.html")]
struct DemoPage<'a> {
    nonce: String,
    api_path: Option<&'a str>,
    admin_path: Option<&'a str>,
    step_up_path: Option<&'a str>,
    live_path: Option<&'a str>,
}

fn demo_page(uri: &Uri, paths: &DemoPaths) -> Response {
    if uri.path() != "/" {
        return AppError::NotFound.into_response();
    }
    let nonce = crate::random::url_safe_secret();
    let page = DemoPage {
        nonce: nonce.clone(),
        api_path: paths.api.as_deref(),
        admin_path: paths.admin.as_deref(),
        step_up_path: paths.step_up.as_deref(),
        live_path: paths.live.as_deref(),
    };
    let Ok(html) = page.render() else {
        return AppError::NotFound.into_response();
    };
    let mut response = Html(html).into_response();
    // `connect-src 'self'` also admits the live feed's same-origin WebSocket: CSP Level 3
    // matches `ws:`/`wss:` on the page's host and port to `'self'` (§6.7.2.5; Chromium, Firefox
    // and Safari do), so the policy needs no scheme source that would admit any host.
    let csp = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    if let Ok(value) = HeaderValue::try_from(csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    set_cache(&mut response, "no-store");
    response
}

async fn static_file(root: &std::path::Path, request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = request.uri().path().to_owned();
    let (parts, _) = request.into_parts();
    let files = ServeDir::new(root).append_index_html_on_directories(true);
    let retry = Request::from_parts(parts.clone(), Body::empty());
    let Ok(response) = files
        .oneshot(Request::from_parts(parts, Body::empty()))
        .await;
    let (mut response, served_index) =
        if response.status() == StatusCode::NOT_FOUND && is_client_route(&path) {
            let Ok(index) = ServeFile::new(root.join("index.html")).oneshot(retry).await;
            (index.map(Body::new), true)
        } else {
            (response.map(Body::new), path.ends_with('/'))
        };
    let cache = if !served_index && response.status().is_success() && has_content_hash(&path) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    set_cache(&mut response, cache);
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A path without a file extension in its last segment is a client-side route (`/orders/42`).
fn is_client_route(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    !last.contains('.')
}

/// Whether a file name carries a build hash (`app.3f9a1c2b.js`, `index-BxHVVlQ1.js`).
fn has_content_hash(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let Some((stem, _extension)) = name.rsplit_once('.') else {
        return false;
    };
    let candidate = stem.rsplit(['.', '-']).next().unwrap_or("");
    candidate != stem
        && candidate.len() >= 8
        && candidate
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && (candidate.bytes().any(|b| b.is_ascii_digit())
            || (candidate.bytes().any(|b| b.is_ascii_uppercase())
                && candidate.bytes().any(|b| b.is_ascii_lowercase())))
}

fn set_cache(response: &mut Response, value: &'static str) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
}

/// Relays to the development server through the one forwarder, without a credential; an
/// `Upgrade` (WebSocket, for hot reload) is relayed byte for byte.
async fn dev_server(
    state: &AppState,
    base: &Url,
    mut request: Request,
) -> Result<Response, AppError> {
    let mut target = base.clone();
    target.set_path(request.uri().path());
    target.set_query(request.uri().query());
    let client_upgrade = ClientUpgrade::take(&mut request);
    let client = request.extensions().get::<ClientAddress>().map_or(
        std::net::Ipv4Addr::LOCALHOST.into(),
        |ClientAddress(client)| *client,
    );
    // The relay outlives this exchange: it keeps the connection's place under the cap.
    let slot = request.extensions().get::<ConnectionSlot>().cloned();

    let (mut parts, body) = request.into_parts();
    // A frontend server never sees Vestibule's cookies nor a credential; the session is not
    // its business. It gets the same forwarding headers as an API, from what Vestibule knows.
    let _ = state.cookies.strip(&mut parts.headers);
    state.forwarder.prepare(
        &mut parts,
        target.as_str(),
        client,
        Destination::Frontend,
        None,
        client_upgrade.is_some(),
    )?;
    let response = state
        .forwarder
        .send(
            Request::from_parts(parts, body),
            None,
            Destination::Frontend,
        )
        .await
        .map_err(|error| match error {
            ProxyError::Unavailable(cause) => {
                AppError::UpstreamUnavailable(format!("frontend dev server: {cause}"))
            }
            other => other.into(),
        })?;
    // An SSR or dev server must not be able to set Vestibule's cookies (session fixation).
    Ok(match client_upgrade {
        Some(client_upgrade) => upgrade::relay_bytes(client_upgrade, response, slot),
        None => into_browser_response(response, Destination::Frontend),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::authz::{Access, ClaimPath, ClaimRule, Expected, MethodSet, RoutePolicy, StepUp};

    fn route(prefix: &str, policy: RoutePolicy, websocket: bool) -> Route {
        Route {
            policy,
            websocket,
            ..Route::new(
                prefix.to_owned(),
                Url::parse("http://127.0.0.1:9000").unwrap(),
                Duration::from_secs(5),
            )
        }
    }

    fn admins_only() -> RoutePolicy {
        let rule = ClaimRule::new(
            ClaimPath::parse("realm_access.roles").unwrap(),
            Expected::parse(Some(vec!["admin".to_owned()]), None).unwrap(),
        )
        .unwrap();
        RoutePolicy::new(Access::User, MethodSet::every(), vec![rule], None).unwrap()
    }

    fn recent_login() -> RoutePolicy {
        let step_up = StepUp::new(Vec::new(), Some(Duration::from_secs(60))).unwrap();
        RoutePolicy::new(Access::User, MethodSet::every(), Vec::new(), Some(step_up)).unwrap()
    }

    #[test]
    fn each_demo_section_calls_the_first_route_of_its_kind() {
        let routes = [
            route("/api/demo", RoutePolicy::default(), false),
            route("/api/admin", admins_only(), false),
            route("/api/step-up", recent_login(), false),
            route("/api/live", RoutePolicy::default(), true),
            route("/api/live-too", RoutePolicy::default(), true),
        ];
        assert_eq!(
            DemoPaths::for_routes(&routes),
            DemoPaths {
                api: Some("/api/demo/hello".to_owned()),
                admin: Some("/api/admin/report".to_owned()),
                step_up: Some("/api/step-up/confirm".to_owned()),
                live: Some("/api/live".to_owned()),
            }
        );
    }

    #[test]
    fn a_section_without_its_kind_of_route_has_no_path() {
        let plain = [route("/api/orders", RoutePolicy::default(), false)];
        assert_eq!(
            DemoPaths::for_routes(&plain),
            DemoPaths {
                api: Some("/api/orders/hello".to_owned()),
                ..DemoPaths::default()
            }
        );
        assert_eq!(DemoPaths::for_routes(&[]), DemoPaths::default());
    }
}
