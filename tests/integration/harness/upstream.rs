//! A real upstream API on loopback that verifies every bearer token with the provider
//! (token introspection) and records exactly what it received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path_and_query: String,
    /// All headers.
    pub headers: HeaderMap,
    /// The bearer token, if any.
    pub bearer: Option<String>,
    /// Whether the provider said the token is active.
    pub token_active: bool,
    /// The body.
    pub body: Bytes,
}

#[derive(Clone)]
struct UpstreamState {
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    issuer: String,
    http: reqwest::Client,
}

/// The running upstream.
pub struct Upstream {
    /// Its base URL, e.g. `http://127.0.0.1:1234/v1`.
    pub base_url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts the upstream; tokens are checked at `issuer`'s introspection endpoint.
    pub async fn start(issuer: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = UpstreamState {
            seen: seen.clone(),
            issuer: issuer.to_owned(),
            http: reqwest::Client::new(),
        };
        let app = Router::new()
            .route(
                "/v1/{*rest}",
                axum::routing::get(realtime_or_plain).fallback(handle),
            )
            .fallback(handle)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            seen,
            task,
        }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET`s ending in `/ws` are a WebSocket (after a valid upgrade), those ending in `/events`
/// a stream of server-sent events; every other `GET` is [`handle`]d like any request.
async fn realtime_or_plain(
    State(state): State<UpstreamState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    if path.ends_with("/events") {
        return events(&state, request).await;
    }
    match upgrade {
        Ok(upgrade) if path.ends_with("/ws") => websocket(&state, upgrade, request).await,
        _ => handle(State(state), request).await,
    }
}

/// The bearer token of `headers`, if any.
fn bearer_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// Records `request` (bodiless) as seen, with what the provider says of its bearer token;
/// answers the introspection.
async fn note_seen(state: &UpstreamState, request: &axum::http::request::Parts) -> Value {
    let bearer = bearer_of(&request.headers);
    if let Some(token) = &bearer {
        super::logs::note_secret(token);
    }
    let introspection = match &bearer {
        Some(token) => introspect(state, token).await,
        None => json!({ "active": false }),
    };
    state.seen.lock().unwrap().push(SeenRequest {
        method: request.method.to_string(),
        path_and_query: request
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: request.headers.clone(),
        bearer,
        token_active: introspection["active"].as_bool().unwrap_or(false),
        body: Bytes::new(),
    });
    introspection
}

/// A WebSocket that first says who it was opened by (`hello <sub>` for an active bearer
/// token, `hello anonymous` without one), then echoes every text message.
async fn websocket(state: &UpstreamState, upgrade: WebSocketUpgrade, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let introspection = note_seen(state, &parts).await;
    let who = introspection["sub"]
        .as_str()
        .filter(|_| introspection["active"] == true)
        .unwrap_or("anonymous")
        .to_owned();
    upgrade.on_upgrade(move |mut socket| async move {
        if socket
            .send(Message::Text(format!("hello {who}").into()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if let Message::Text(text) = message {
                let _ = socket
                    .send(Message::Text(format!("echo: {text}").into()))
                    .await;
            }
        }
    })
}

/// Server-sent events, one every 100 ms without end: `data: <n>`.
async fn events(state: &UpstreamState, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    note_seen(state, &parts).await;
    let ticks = futures_util::stream::unfold(0u64, |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let event = Bytes::from(format!("data: {n}\n\n"));
        Some((Ok::<_, std::convert::Infallible>(event), n + 1))
    });
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        axum::body::Body::from_stream(ticks),
    )
        .into_response()
}

async fn handle(State(state): State<UpstreamState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let bearer = bearer_of(&parts.headers);
    let anonymous = bearer.is_none();
    if let Some(token) = &bearer {
        super::logs::note_secret(token);
    }
    let introspection = match &bearer {
        Some(token) => introspect(&state, token).await,
        None => json!({ "active": false }),
    };
    let active = introspection["active"].as_bool().unwrap_or(false);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    state.seen.lock().unwrap().push(SeenRequest {
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: parts.headers.clone(),
        bearer,
        token_active: active,
        body: body.clone(),
    });
    let path = parts.uri.path();
    if path.contains("/any-token/") {
        // A service that takes whatever credential it gets (its tokens may be JWTs for
        // another audience, which the provider does not introspect): the test reads what it
        // received from the record above.
        return axum::Json(json!({ "ok": true, "bearer": !anonymous })).into_response();
    }
    if anonymous && path.contains("/anonymous") {
        return axum::Json(json!({ "ok": true, "anonymous": true })).into_response();
    }
    if let Some(challenge) = bearer_challenge(path, active) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", challenge)],
            axum::Json(json!({ "error": "rejected" })),
        )
            .into_response();
    }
    if !active {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "invalid_token" })),
        )
            .into_response();
    }
    if let Some(answer) = refusal(path) {
        return answer;
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut response = axum::Json(json!({
        "ok": true,
        "sub": introspection["sub"],
        "method": parts.method.as_str(),
        "path": path_and_query,
        "body_len": body.len(),
    }))
    .into_response();
    response
        .headers_mut()
        .insert("x-upstream", "yes".parse().unwrap());
    if path.ends_with("/teapot") {
        *response.status_mut() = StatusCode::IM_A_TEAPOT;
    }
    if path.ends_with("/set-cookie") {
        let headers = response.headers_mut();
        headers.append("set-cookie", "vestibule=fixated; Path=/".parse().unwrap());
        // Names a browser stores apart from ours, but a decoding server reads as ours, and a
        // nameless cookie a browser sends back as `vestibule-login=…`.
        headers.append("set-cookie", "%76estibule=fixated; Path=/".parse().unwrap());
        headers.append(
            "set-cookie",
            "=vestibule-login=planted; Path=/".parse().unwrap(),
        );
        headers.append("set-cookie", "VESTIBULE=fixated; Path=/".parse().unwrap());
        headers.append("set-cookie", "upstream_pref=dark; Path=/".parse().unwrap());
    }
    response
}

/// The RFC 6750 challenge the upstream answers `path` with, if any: under `/rfc6750/` an
/// inactive token gets `error="invalid_token"`; `…/always-invalid-token` rejects every token
/// that way, `…/insufficient-scope` every token as lacking scope. (Elsewhere an inactive token
/// gets a bare `401`.)
fn bearer_challenge(path: &str, active: bool) -> Option<&'static str> {
    if path.ends_with("/always-invalid-token") {
        Some(r#"Bearer realm="orders", error="invalid_token", error_description="rejected""#)
    } else if path.ends_with("/needs-mfa") {
        Some(
            r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="mfa", max_age="300""#,
        )
    } else if path.ends_with("/insufficient-scope") {
        Some(r#"Bearer realm="orders", error="insufficient_scope", scope="orders:admin""#)
    } else if path.contains("/rfc6750/") && !active {
        Some(r#"bearer error=invalid_token, realm="orders""#)
    } else {
        None
    }
}

/// Answers in the shape of Vestibule's own refusals on a route, for the browser helper's
/// tests (they pass through Vestibule as any answer does): `…/step-up-required` (`401
/// step_up_required` with its `login_url`), `…/insufficient-permissions` (`403`), and
/// `…/foreign-login-url` (a `401` whose `login_url` leaves the site).
fn refusal(path: &str) -> Option<Response> {
    let (status, body) = if path.ends_with("/step-up-required") {
        let login_url = "/api/auth/login?acr_values=urn%3Aexample%3Amfa%20gold&max_age=300";
        (
            StatusCode::UNAUTHORIZED,
            json!({ "error": "step_up_required", "login_url": login_url,
                    "message": "this route needs a stronger login" }),
        )
    } else if path.ends_with("/insufficient-permissions") {
        (
            StatusCode::FORBIDDEN,
            json!({ "error": "insufficient_permissions", "route": "/api/admin",
                    "message": "the route's rules do not allow this user" }),
        )
    } else if path.ends_with("/foreign-login-url") {
        (
            StatusCode::UNAUTHORIZED,
            json!({ "error": "unauthenticated", "login_url": "https://login.example/api/auth/login" }),
        )
    } else {
        return None;
    };
    Some((status, axum::Json(body)).into_response())
}

async fn introspect(state: &UpstreamState, token: &str) -> Value {
    super::provider::introspect(&state.http, &state.issuer, token).await
}
