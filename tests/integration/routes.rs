//! Routes that know what they protect (issue 30): per-route access (`anonymous`, `optional`,
//! `user`), methods, claim rules and step-up, against the real provider and a real upstream
//! that introspects every token it receives.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{Browser, TestApp};

/// Routes beside the harness's `/api/orders` (a `user` route): a public catalogue, an
/// optional feed, an admin API for `roles` containing `admin`, and a read-only reports API.
const ROUTES: &str = r#"
[[routes]]
prefix = "/api/catalogue"
upstream = "{upstream}"
access = "anonymous"
methods = ["GET"]

[[routes]]
prefix = "/api/feed"
upstream = "{upstream}"
access = "optional"

[[routes]]
prefix = "/api/admin"
upstream = "{upstream}"
[[routes.require]]
claim = "roles"
any_of = ["admin"]

[[routes]]
prefix = "/api/reports"
upstream = "{upstream}"
methods = ["GET", "POST"]
"#;

async fn app() -> TestApp {
    TestApp::builder().extra_toml(ROUTES).start().await
}

/// The last request the upstream saw under `path` (the upstream's own path).
fn last_seen(app: &TestApp, path: &str) -> crate::harness::upstream::SeenRequest {
    app.upstream
        .seen()
        .into_iter()
        .rev()
        .find(|seen| seen.path_and_query.starts_with(path))
        .unwrap_or_else(|| panic!("the upstream saw nothing under {path}"))
}

#[tokio::test]
async fn an_anonymous_route_never_sends_a_token_even_when_the_browser_has_a_session() {
    let app = app().await;
    let browser = app.browser();
    let response = browser
        .http()
        .get(browser.url("/api/catalogue/anonymous/items"))
        .header("x-csrf", "1")
        .header("authorization", "Bearer forged-by-the-browser")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["anonymous"], true);
    let seen = last_seen(&app, "/v1/anonymous/items");
    assert_eq!(seen.bearer, None, "the browser's Authorization is removed");

    browser.login("alice").await;
    let response = browser.api_get("/api/catalogue/anonymous/items").await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = last_seen(&app, "/v1/anonymous/items");
    assert_eq!(
        seen.bearer, None,
        "no token on an anonymous route, even signed in"
    );
    let cookies = seen
        .headers
        .get("cookie")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(!cookies.contains("vestibule"), "{cookies}");
    // The anti-forgery rules hold on every route, whatever its access.
    let unforged = browser
        .http()
        .get(browser.url("/api/catalogue/anonymous/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(unforged.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_optional_route_sends_the_token_only_with_a_valid_session() {
    let app = app().await;
    let stranger = app.browser();
    assert_eq!(
        stranger.api_get("/api/feed/anonymous/news").await.status(),
        StatusCode::OK
    );
    assert_eq!(last_seen(&app, "/v1/anonymous/news").bearer, None);

    // An unknown or ended session is no session here: forwarded anonymously, not a 401.
    let unknown = Browser::with_session(&app.url, "not-a-session-cookie");
    assert_eq!(
        unknown.api_get("/api/feed/anonymous/news").await.status(),
        StatusCode::OK
    );
    assert_eq!(last_seen(&app, "/v1/anonymous/news").bearer, None);

    let alice = app.browser();
    alice.login("alice").await;
    let response = alice.api_get("/api/feed/personal").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["sub"], "alice");
    let seen = last_seen(&app, "/v1/personal");
    assert!(seen.bearer.is_some() && seen.token_active);

    let session = alice.cookie("vestibule").unwrap();
    assert_eq!(alice.logout().await.0, StatusCode::OK);
    let ended = Browser::with_session(&app.url, &session);
    assert_eq!(
        ended.api_get("/api/feed/anonymous/news").await.status(),
        StatusCode::OK
    );
    assert_eq!(last_seen(&app, "/v1/anonymous/news").bearer, None);
}

#[tokio::test]
async fn a_method_the_route_does_not_serve_is_405_with_allow_before_anything_else() {
    let app = app().await;
    let stranger = app.browser();
    let before = app.upstream.seen().len();
    for (browser, path) in [
        (&stranger, "/api/catalogue/anonymous/items"),
        // A user route refuses the method before asking for a session.
        (&stranger, "/api/reports/x"),
    ] {
        let response = browser.api_call(Method::DELETE, path).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
        assert!(allow.starts_with("GET, HEAD"), "{allow}");
    }
    assert_eq!(
        app.upstream.seen().len(),
        before,
        "nothing reached the upstream"
    );
    // HEAD goes where GET goes.
    let head = stranger
        .api_call(Method::HEAD, "/api/catalogue/anonymous/items")
        .await;
    assert_eq!(head.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_claim_rule_lets_alice_through_and_refuses_bob_without_naming_his_claims() {
    let app = app().await;
    let alice = app.browser();
    alice.login("alice").await;
    let response = alice.api_get("/api/admin/users").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["sub"], "alice");

    let bob = app.browser();
    bob.login("bob").await;
    let before = app.upstream.seen().len();
    let response = bob.api_get("/api/admin/users").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "insufficient_permissions");
    assert_eq!(body["route"], "/api/admin");
    for private in ["roles", "bob", "user"] {
        assert!(!text.contains(private), "the answer names no claim: {text}");
    }
    assert_eq!(
        app.upstream.seen().len(),
        before,
        "nothing reached the upstream"
    );
    // Bob's other routes still work.
    assert_eq!(bob.api_get("/api/orders/1").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upstreams_demand_for_stronger_authentication_becomes_step_up_required() {
    let app = app().await;
    let alice = app.browser();
    alice.login("alice").await;
    let response = alice.api_get("/api/orders/needs-mfa").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "step_up_required");
    assert_eq!(
        body["login_url"],
        "/api/auth/login?acr_values=mfa&max_age=300"
    );
    // The session stays: a step-up is not a logout.
    assert_eq!(alice.user().await.0, StatusCode::OK);
}
