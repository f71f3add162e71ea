//! An HTTP front for the test provider that a test switches between passing requests on,
//! failing them (`503` at once) and hanging (holding each request until switched): a provider
//! whose discovery fails or stalls, which the real one cannot be made to do on demand. It
//! counts the requests it receives and keeps their `Authorization` headers.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// What the front does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Passes it on to the provider.
    Up,
    /// Answers `503` at once.
    Failing,
    /// Holds it until the mode changes, then answers as the new mode says.
    Hanging,
}

#[derive(Clone)]
struct FrontState {
    mode: watch::Receiver<Mode>,
    provider_port: u16,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    http: reqwest::Client,
}

/// A running front; it lives as long as the runtime that started it.
pub struct ProviderFront {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    mode: watch::Sender<Mode>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProviderFront {
    /// Listens on a free loopback port in front of the provider on `provider_port`.
    pub async fn start(provider_port: u16, mode: Mode) -> Self {
        let (sender, receiver) = watch::channel(mode);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = FrontState {
            mode: receiver,
            provider_port,
            seen: seen.clone(),
            http: reqwest::Client::new(),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            mode: sender,
            seen,
            task,
        }
    }

    /// The provider's discovery URL through this front, with `userinfo` (`user:password`).
    pub fn discovery_url(&self, userinfo: &str) -> String {
        format!(
            "http://{userinfo}@127.0.0.1:{}/.well-known/openid-configuration",
            self.port
        )
    }

    /// Switches what it does (held requests follow the new mode).
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// How many requests it received so far.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The `Authorization` header of each request so far.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ProviderFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(mut state): State<FrontState>, request: Request) -> Response {
    let authorization = request
        .headers()
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_owned());
    state.seen.lock().unwrap().push(authorization);
    let mode = *state
        .mode
        .wait_for(|mode| *mode != Mode::Hanging)
        .await
        .unwrap();
    if mode == Mode::Failing {
        return (StatusCode::SERVICE_UNAVAILABLE, "provider failing").into_response();
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let method = request.method().clone();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let answer = state
        .http
        .request(
            method,
            format!("http://127.0.0.1:{}{path}", state.provider_port),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let mut headers = HeaderMap::new();
    if let Some(content_type) = answer.headers().get("content-type") {
        headers.insert("content-type", content_type.clone());
    }
    (status, headers, answer.bytes().await.unwrap()).into_response()
}
