//! Pushed authorization requests (RFC 9126, `oidc.par`) against the real oidc-provider with its
//! `pushedAuthorizationRequests` feature (`OP_PAR`): the browser carries `client_id` and
//! `request_uri` only while every parameter of the request is pushed; a refused push is an
//! error, never a fall-back to the front channel; `required` and `off` against a provider that
//! cannot or must push say so, naming the key.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

use crate::harness::{Browser, TestApp, TestAppBuilder, logs, wait_for};

/// An app whose provider runs with `OP_PAR = op_par` and Vestibule with `oidc.par = mode`
/// (`None`: the default).
fn app_with(op_par: &'static str, mode: Option<&str>) -> TestAppBuilder {
    let builder = TestApp::builder().provider_options(|options| options.par = op_par);
    match mode {
        Some(mode) => builder.oidc_toml(&format!("par = \"{mode}\"\n")),
        None => builder,
    }
}

/// The names of `url`'s query parameters.
fn parameter_names(url: &Url) -> BTreeSet<String> {
    url.query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect()
}

/// `/readyz` of `app`.
async fn readiness(app: &TestApp) -> (StatusCode, Value) {
    let response = app.browser().get("/readyz").await;
    (response.status(), response.json().await.unwrap())
}

/// The front-channel authorization requests (`GET /auth`) the provider received.
async fn front_channel_requests(app: &TestApp) -> Vec<Value> {
    app.provider.stats().await["authorization_requests"]
        .as_array()
        .unwrap()
        .clone()
}

/// Makes the provider answer the next `count` pushes with `error`.
async fn refuse_next_pushes(app: &TestApp, error: &str, count: u64) {
    let response = reqwest::Client::new()
        .post(format!("{}/__test/par-error", app.provider.issuer))
        .json(&serde_json::json!({ "error": error, "count": count }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

#[tokio::test]
async fn a_pushed_login_sends_the_browser_with_client_id_and_request_uri_only() {
    let mut app = app_with("1", None).start().await;
    let browser = app.browser();
    let authorization = browser
        .begin_login_at("/api/auth/login?login_hint=alice%40example.test")
        .await;
    assert_eq!(
        parameter_names(&authorization),
        BTreeSet::from(["client_id".to_owned(), "request_uri".to_owned()]),
        "the browser carries a reference only: {authorization}"
    );
    let params: std::collections::HashMap<_, _> =
        authorization.query_pairs().into_owned().collect();
    assert_eq!(params["client_id"], "vestibule");
    assert!(
        params["request_uri"].starts_with("urn:ietf:params:oauth:request_uri:"),
        "{authorization}"
    );
    assert_eq!(
        authorization.path(),
        "/auth",
        "the authorization endpoint: {authorization}"
    );

    // Everything the request carries was pushed, over the client's authentication.
    let stats = app.provider.stats().await;
    let pushes = stats["par_requests"].as_array().unwrap();
    assert_eq!(pushes.len(), 1, "{stats}");
    assert_eq!(pushes[0]["client_id"], "vestibule");
    let pushed: BTreeSet<&str> = pushes[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    for expected in [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "login_hint",
    ] {
        assert!(pushed.contains(expected), "{expected} pushed: {pushed:?}");
    }
    assert_eq!(pushes[0]["params"]["login_hint"], "alice@example.test");
    assert_eq!(pushes[0]["params"]["code_challenge_method"], "S256");

    // The login completes, and a proxied call works with its token.
    let callback = browser.authorize_at_provider(authorization, "alice").await;
    let response = browser.get(callback.as_str()).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "callback redirects"
    );
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["sub"], "alice");
    let response = browser.api_get("/api/orders/42").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(app.upstream.seen()[0].token_active);
    for request in front_channel_requests(&app).await {
        let names: BTreeSet<&str> = request["params"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["client_id", "request_uri"]),
            "no authorization request through the browser carried more: {request}"
        );
    }
    let (status, body) = readiness(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["negotiated"]["default"]["par"], "on", "{body}");

    // A provider that cannot be reached for the push is an outage, as at any other endpoint.
    app.provider.stop();
    let response = Browser::new(&app.url).get("/api/auth/login").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn auto_against_a_provider_without_par_sends_the_request_through_the_browser_as_before() {
    let app = app_with("0", None).start().await;
    let browser = app.browser();
    let authorization = browser.begin_login(None).await;
    let names = parameter_names(&authorization);
    for expected in [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "nonce",
        "code_challenge",
    ] {
        assert!(names.contains(expected), "{expected} in {authorization}");
    }
    assert!(!names.contains("request_uri"), "{authorization}");
    let callback = browser.authorize_at_provider(authorization, "alice").await;
    assert_eq!(
        browser.get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    assert!(
        app.provider.stats().await["par_requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, body) = readiness(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["negotiated"]["default"]["par"], "off", "{body}");
}

#[tokio::test]
async fn a_refused_push_is_an_error_page_and_never_falls_back_to_the_browser() {
    // The provider offers PAR without requiring it: a front-channel request would succeed,
    // so only the refusal itself shows that none was made.
    let app = app_with("1", None).start().await;
    refuse_next_pushes(&app, "invalid_request", 1).await;
    let browser = app.browser();
    let response = browser.get("/api/auth/login").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        response.headers().get("location").is_none(),
        "no redirect to the provider"
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("Login failed"), "{page}");
    assert!(page.contains("authorization_request_refused"), "{page}");
    assert!(page.contains("invalid_request"), "{page}");
    assert!(page.contains("href=\"/api/auth/login\""), "{page}");

    // An API-style start gets JSON.
    refuse_next_pushes(&app, "unauthorized_client", 1).await;
    let response = browser
        .http()
        .get(browser.url("/api/auth/login"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "authorization_request_refused", "{body}");

    let stats = app.provider.stats().await;
    assert_eq!(stats["par_errors"], 2, "{stats}");
    assert!(
        front_channel_requests(&app).await.is_empty(),
        "the browser never went to the authorization endpoint: {stats}"
    );
    // Once the provider accepts pushes again, logins work.
    browser.login("alice").await;
}

#[tokio::test]
async fn off_against_a_provider_that_requires_par_is_warned_about_and_its_logins_fail() {
    let from = logs::position();
    let app = app_with("required", Some("off")).start().await;
    wait_for(
        "the warning naming oidc.par",
        std::time::Duration::from_secs(10),
        || async {
            let log = logs::since(from);
            (log.contains("require_pushed_authorization_requests")
                && log.contains("oidc.par is \\\"off\\\""))
            .then_some(())
        },
    )
    .await;
    let browser = app.browser();
    let authorization = browser.begin_login(None).await;
    assert!(
        parameter_names(&authorization).contains("code_challenge"),
        "off sends the request through the browser: {authorization}"
    );
    let callback = browser.authorize_at_provider(authorization, "alice").await;
    let params: std::collections::HashMap<_, _> = callback.query_pairs().into_owned().collect();
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("invalid_request"),
        "the provider refuses a request that was not pushed: {callback}"
    );
    let response = browser.get(callback.as_str()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("Login failed"));
    let (status, _) = browser.user().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // With the default (auto), the same provider's logins are pushed and succeed.
    let auto = app_with("required", None).start().await;
    auto.browser().login("alice").await;
}

#[tokio::test]
async fn required_against_a_provider_without_par_is_not_ready_and_names_the_key() {
    let from = logs::position();
    let app = app_with("0", Some("required")).start().await;
    let (status, body) = readiness(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["provider"], "not_discovered", "{body}");
    assert!(
        logs::since(from).contains("oidc.par is \\\"required\\\""),
        "the discovery error names the key"
    );
    // A login meanwhile is refused as while discovery fails (backing off), never sent
    // through the browser.
    let browser = app.browser();
    let response = browser.get("/api/auth/login").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("location").is_none());
    assert!(front_channel_requests(&app).await.is_empty());
}

#[test]
fn check_config_reports_the_par_mode() {
    let file = std::env::temp_dir().join(format!("vestibule-par-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            r#"
listen = "127.0.0.1:8080"
public_url = "http://localhost:8080"
[oidc]
issuer = "http://localhost:8081/realms/vestibule"
client_id = "vestibule"
client_secret = "file-secret"
par = "required"
[session]
encryption_key = "{}"
"#,
            crate::harness::ENCRYPTION_KEY
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vestibule"))
        .env_remove("VESTIBULE_CONFIG")
        .arg("--config")
        .arg(&file)
        .arg("--check-config")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        summary
            .lines()
            .any(|line| line.starts_with("oidc.par") && line.ends_with("(required)")),
        "{summary}"
    );
}
