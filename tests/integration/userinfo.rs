//! UserInfo at login and refresh (`oidc.userinfo`), against the real provider's userinfo
//! endpoint: its claims merged into the session's, its `sub` required to be the ID token's
//! under every mode, a refusing endpoint tolerated under `auto` (reported once) and fatal to a
//! login under `required`, and no call at all under `off`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Browser, TestApp, TestAppBuilder, logs, wait_for};

/// An app whose access tokens live 3 s (so a proxied call soon refreshes), with
/// `oidc.userinfo = mode` (`None`: the default).
fn app_with(mode: Option<&str>) -> TestAppBuilder {
    let builder = TestApp::builder().access_token_ttl(3).refresh_skew(1);
    match mode {
        Some(mode) => builder.oidc_toml(&format!("userinfo = \"{mode}\"\n")),
        None => builder,
    }
}

/// The JSON lines of the captured log since `from` (each event is captured in both formats).
fn json_events(from: usize) -> Vec<Value> {
    logs::since(from)
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The audit event `name` of the request that answered `response`.
pub(crate) async fn audit_event_of(from: usize, response: &reqwest::Response, name: &str) -> Value {
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    wait_for(
        &format!("audit event {name} of request {request_id}"),
        std::time::Duration::from_secs(10),
        || {
            let request_id = request_id.clone();
            async move {
                json_events(from).into_iter().find(|event| {
                    event["target"] == "vestibule::audit"
                        && event["event"] == name
                        && event["request_id"] == request_id.as_str()
                })
            }
        },
    )
    .await
}

/// A failed login's page: its status, and that no session was created.
async fn assert_login_failed(app: &TestApp, response: reqwest::Response, status: StatusCode) {
    assert_eq!(response.status(), status);
    let body = response.text().await.unwrap();
    let title = if status == StatusCode::SERVICE_UNAVAILABLE {
        "Temporarily unavailable"
    } else {
        "Login failed"
    };
    assert!(body.contains(title), "{body}");
    assert!(
        app.redis().session_keys().await.is_empty(),
        "never half a session"
    );
}

#[tokio::test]
async fn userinfo_claims_are_merged_into_the_session_and_reread_at_each_refresh() {
    let app = app_with(None).start().await;
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "ally", "name": "Alice Fresh" } }))
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(app.provider.userinfo_calls().await, 1, "one call per login");

    let (_, user) = browser.user().await;
    let claims = &user["claims"];
    assert_eq!(claims["nickname"], "ally", "a UserInfo-only claim: {user}");
    assert_eq!(
        claims["name"], "Alice Fresh",
        "UserInfo wins for profile claims"
    );
    assert_eq!(claims["email"], "alice@example.test", "the ID token's stay");
    assert_eq!(
        (&claims["sub"], &claims["iss"], &claims["aud"]),
        (
            &json!("alice"),
            &json!(app.provider.issuer),
            &json!("vestibule")
        ),
        "protocol claims are the ID token's"
    );
    assert!(claims["nonce"].is_string(), "{claims}");

    // The provider's data changes; the next refresh reads it with the new access token.
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "al", "groups": ["admins"] } }))
        .await;
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    assert_eq!(
        app.provider.userinfo_calls().await,
        2,
        "re-read at the refresh"
    );
    let (_, user) = browser.user().await;
    assert_eq!(user["claims"]["nickname"], "al", "{user}");
    assert_eq!(user["claims"]["groups"], json!(["admins"]));
    assert_eq!(
        user["claims"]["name"], "Test alice",
        "back to the ID token's"
    );

    // Sealed like the rest of the record: no claim value in a Redis dump.
    for (key, value) in app.redis().dump().await {
        assert!(
            !value.windows(6).any(|window| window == b"admins"),
            "{key} reveals a UserInfo claim"
        );
    }
}

#[tokio::test]
async fn a_userinfo_answer_about_another_user_fails_the_login_under_auto() {
    let app = app_with(None).start().await;
    another_sub_fails_the_login(&app).await;
}

#[tokio::test]
async fn a_userinfo_answer_about_another_user_fails_the_login_under_required() {
    let app = app_with(Some("required")).start().await;
    another_sub_fails_the_login(&app).await;
}

async fn another_sub_fails_the_login(app: &TestApp) {
    let from = logs::position();
    app.provider.set_userinfo(json!({ "sub": "mallory" })).await;
    let browser = app.browser();
    let outcome = browser.login_as("alice", None).await;
    let event = audit_event_of(from, &outcome.response, "login_failed").await;
    assert_eq!(event["reason"], "userinfo_subject_mismatch");
    assert_login_failed(app, outcome.response, StatusCode::BAD_GATEWAY).await;
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_refusing_userinfo_keeps_the_id_token_claims_under_auto_and_is_reported_once() {
    let app = app_with(None).start().await;
    let from = logs::position();
    app.provider.set_userinfo(json!({ "refuse": true })).await;
    for user in ["alice", "bob", "carol"] {
        let browser = app.browser();
        browser.login(user).await;
        let (_, body) = browser.user().await;
        assert_eq!(body["claims"]["email"], format!("{user}@example.test"));
        assert_eq!(body["claims"]["sub"], user);
    }
    assert_eq!(
        app.provider.userinfo_calls().await,
        3,
        "asked at each login"
    );
    let warnings: Vec<Value> = json_events(from)
        .into_iter()
        .filter(|event| {
            event["level"] == "WARN"
                && event["issuer"] == app.provider.issuer.as_str()
                && event["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("UserInfo is unusable"))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "once, not once a login: {warnings:?}");
    assert!(
        warnings[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("refused the access token")),
        "{}",
        warnings[0]
    );
}

#[tokio::test]
async fn a_refusing_userinfo_fails_the_login_under_required() {
    let app = app_with(Some("required")).start().await;
    let from = logs::position();
    app.provider.set_userinfo(json!({ "refuse": true })).await;
    let outcome = app.browser().login_as("alice", None).await;
    let event = audit_event_of(from, &outcome.response, "login_failed").await;
    assert_eq!(event["reason"], "userinfo_refused");
    assert_login_failed(&app, outcome.response, StatusCode::BAD_GATEWAY).await;
}

#[tokio::test]
async fn an_unreachable_userinfo_is_an_outage_under_required() {
    // The endpoint is discovered, then the provider's UserInfo answers 503: only UserInfo
    // fails, after a successful code exchange.
    let app = app_with(Some("required")).start().await;
    app.provider.set_userinfo(json!({ "status": 503 })).await;
    let outcome = app.browser().login_as("alice", None).await;
    assert_login_failed(&app, outcome.response, StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test]
async fn off_never_calls_userinfo() {
    let app = app_with(Some("off")).start().await;
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "ally" } }))
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    assert_eq!(app.provider.userinfo_calls().await, 0);
    let (_, user) = browser.user().await;
    assert!(user["claims"]["nickname"].is_null(), "{user}");
}

#[tokio::test]
async fn another_sub_at_a_refresh_ends_the_session() {
    let app = app_with(None).start().await;
    let from = logs::position();
    let browser = app.browser();
    browser.login("alice").await;
    app.provider.set_userinfo(json!({ "sub": "mallory" })).await;
    browser.wait_past_access_token_expiry().await;

    let response = browser.api_get("/api/orders/1").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let event = audit_event_of(from, &response, "refresh_failed").await;
    assert_eq!(
        (&event["reason"], &event["outcome"]),
        (&json!("subject_changed"), &json!("session_ended"))
    );
    assert!(app.redis().session_keys().await.is_empty());
    assert!(app.upstream.seen().is_empty(), "no token forwarded");
}

#[tokio::test]
async fn a_refusing_userinfo_at_a_refresh_keeps_the_session_and_its_claims_even_when_required() {
    let app = app_with(Some("required")).start().await;
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "ally" } }))
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    app.provider.set_userinfo(json!({ "refuse": true })).await;
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let (_, user) = browser.user().await;
    assert_eq!(
        user["claims"]["nickname"], "ally",
        "the previous claims stay"
    );
}

#[tokio::test]
async fn a_signed_userinfo_is_verified_and_merged() {
    let app = app_with(Some("required"))
        .provider_userinfo("signed")
        .start()
        .await;
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "signed-ally" } }))
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    assert_eq!(user["claims"]["nickname"], "signed-ally", "{user}");
    assert_eq!(user["claims"]["aud"], "vestibule");

    // Signed, and about another user: still refused.
    let from = logs::position();
    app.provider.set_userinfo(json!({ "sub": "mallory" })).await;
    let outcome = Browser::new(&app.url).login_as("bob", None).await;
    let event = audit_event_of(from, &outcome.response, "login_failed").await;
    assert_eq!(event["reason"], "userinfo_subject_mismatch");
    assert_eq!(outcome.response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn required_without_a_userinfo_endpoint_is_not_ready_and_refuses_logins() {
    let app = app_with(Some("required"))
        .provider_userinfo("absent")
        .start()
        .await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = app
        .browser()
        .get(format!("{}/api/auth/login", app.url))
        .await;
    assert!(response.status().is_server_error(), "{}", response.status());
    let body = response.text().await.unwrap();
    assert!(
        !body.contains("userinfo_endpoint"),
        "causes are logged, not shown"
    );

    // Under `auto` the same provider is fine: logins keep the ID token's claims.
    let auto = app_with(None).provider_userinfo("absent").start().await;
    let browser = auto.browser();
    browser.login("alice").await;
    assert_eq!(auto.provider.userinfo_calls().await, 0);
}

/// A loopback HTTP server on another origin than the provider's, counting the requests it
/// receives (a distributed claim source Vestibule must never call).
async fn counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            "eyJhbGciOiJub25lIn0.eyJ0ZWFtIjoiZXZpbCJ9."
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/claims", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, hits)
}

#[tokio::test]
async fn under_body_the_token_reaches_userinfo_in_a_form_post_and_claims_are_merged() {
    let app = app_with(None)
        .oidc_toml("userinfo_token_method = \"body\"\n")
        .start()
        .await;
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "posted" } }))
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    assert_eq!(user["claims"]["nickname"], "posted", "{user}");
    let record = app.provider.claim_source_record().await;
    assert_eq!(
        record["userinfo_transports"],
        json!([{ "method": "POST", "header": false, "body": true, "query": false }]),
        "the token in the form body only"
    );
}

#[tokio::test]
async fn by_default_the_token_reaches_userinfo_in_the_authorization_header() {
    let app = app_with(None).start().await;
    app.browser().login("alice").await;
    let record = app.provider.claim_source_record().await;
    assert_eq!(
        record["userinfo_transports"],
        json!([{ "method": "GET", "header": true, "body": false, "query": false }])
    );
}

#[tokio::test]
async fn aggregated_and_distributed_claims_of_the_provider_are_resolved() {
    let app = app_with(None).start().await;
    app.provider
        .set_claim_sources(json!({
            "aggregated": { "claims": { "team": "blue" } },
            "distributed": { "claims": { "credit_score": 650 }, "access_token": "source-token-1" },
        }))
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    let claims = &user["claims"];
    assert_eq!(claims["team"], "blue", "aggregated: {user}");
    assert_eq!(claims["credit_score"], 650, "distributed: {user}");
    assert!(claims.get("_claim_names").is_none(), "{user}");
    assert!(claims.get("_claim_sources").is_none(), "{user}");
    let record = app.provider.claim_source_record().await;
    assert_eq!(
        record["claims_endpoint_requests"],
        json!([{ "method": "GET", "bearer_ok": true }]),
        "fetched once, with the source's own access token"
    );
    assert!(
        !user.to_string().contains("source-token-1"),
        "never kept: {user}"
    );
    assert!(!logs::since(0).contains("source-token-1"), "never logged");
}

#[tokio::test]
async fn a_distributed_source_on_another_origin_is_never_fetched() {
    let (elsewhere, hits) = counting_server().await;
    let app = app_with(None).start().await;
    app.provider
        .set_claim_sources(json!({
            "distributed": { "claims": { "credit_score": 999 }, "endpoint": elsewhere },
            "aggregated": { "claims": { "team": "blue" } },
        }))
        .await;
    let from = logs::position();
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    assert!(user["claims"].get("credit_score").is_none(), "{user}");
    assert_eq!(
        user["claims"]["team"], "blue",
        "the other sources still count"
    );
    assert_eq!(user["claims"]["nickname"], Value::Null);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other origin saw no request"
    );
    wait_for(
        "the unresolved source's warning",
        std::time::Duration::from_secs(10),
        || async move {
            logs::since(from)
                .contains("not on the provider's origin")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_claim_source_not_signed_by_the_provider_is_not_merged() {
    let app = app_with(Some("required")).start().await;
    app.provider
        .set_claim_sources(json!({
            "aggregated": { "claims": { "team": "forged" }, "key": "unknown" },
            "distributed": { "claims": { "credit_score": 1 }, "key": "unknown" },
        }))
        .await;
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "ally" } }))
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    let claims = &user["claims"];
    assert!(claims.get("team").is_none(), "{user}");
    assert!(claims.get("credit_score").is_none(), "{user}");
    assert_eq!(
        claims["nickname"], "ally",
        "the login and the rest of UserInfo stand, even under required"
    );
}
