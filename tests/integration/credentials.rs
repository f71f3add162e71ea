//! The right credential for every API (issue 31), against the real test provider: a token
//! exchanged per session for one audience, a token per resource from the refresh token, the
//! client's own token shared by everyone, each held sealed, fetched once across instances,
//! replaced once when an upstream rejects it, and dropped with the session; and a failed
//! grant that fails its route only.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::provider_grants::{BILLING, ORDERS, REFUSED_AUDIENCE, jwt_payload};
use crate::harness::{Browser, TestApp, wait_for};

/// An exchange route for `orders-api`, a route whose exchange the provider refuses, and the
/// harness's `/api/orders` (the login's token) beside them.
const EXCHANGE_ROUTES: &str = r#"
[[routes]]
prefix = "/api/exchanged"
upstream = "{upstream}"
[routes.credential]
kind = "exchange"
audience = "orders-api"
scope = "orders:read"

[[routes]]
prefix = "/api/refused"
upstream = "{upstream}"
[routes.credential]
kind = "exchange"
audience = "refused-api"
"#;

/// The bearer token the upstream saw on the last request under `path`.
fn last_bearer(app: &TestApp, path: &str) -> String {
    app.upstream
        .seen()
        .into_iter()
        .rev()
        .find(|seen| seen.path_and_query.starts_with(path))
        .unwrap_or_else(|| panic!("the upstream saw nothing under {path}"))
        .bearer
        .unwrap_or_else(|| panic!("the request under {path} carried no bearer token"))
}

/// The distinct bearer tokens the upstream saw under `path`.
fn bearers_seen(app: &TestApp, path: &str) -> std::collections::HashSet<String> {
    app.upstream
        .seen()
        .into_iter()
        .filter(|seen| seen.path_and_query.starts_with(path))
        .filter_map(|seen| seen.bearer)
        .collect()
}

/// `browsers` × `per_browser` concurrent GETs of `path`; their statuses.
async fn call_concurrently(
    browsers: &[Browser],
    per_browser: usize,
    path: &str,
) -> Vec<StatusCode> {
    let calls = browsers.iter().flat_map(|browser| {
        (0..per_browser).map(move |_| async move { browser.api_get(path).await.status() })
    });
    join_all(calls).await
}

/// Every Redis value, as bytes, for a search of what a dump would show.
async fn redis_dump(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut conn = app.redis().connection().await;
    let mut dump = Vec::new();
    for key in app.redis().keys("*").await {
        let value: redis::RedisResult<Vec<u8>> =
            redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        if let Ok(value) = value {
            dump.push((key, value));
        }
    }
    dump
}

#[tokio::test]
async fn an_exchange_route_gets_its_own_token_once_per_session_sealed_and_dropped_at_logout() {
    let app = TestApp::builder().extra_toml(EXCHANGE_ROUTES).start().await;
    let browser = app.browser();
    browser.login("alice").await;

    for call in 0..3 {
        let response = browser
            .api_get(&format!("/api/exchanged/any-token/{call}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "call {call}");
    }
    // Once held, a call costs Redis nothing: the token, like the session, comes from the
    // instance's tracked cache (once the cache serves: it waits for Redis to confirm tracking).
    wait_for(
        "a call on the exchange route to read nothing from Redis",
        std::time::Duration::from_secs(10),
        || {
            let (browser, app) = (browser.clone(), &app);
            async move {
                let before = app.redis().session_reads().await;
                let response = browser.api_get("/api/exchanged/any-token/warm").await;
                assert_eq!(response.status(), StatusCode::OK);
                (app.redis().session_reads().await == before).then_some(())
            }
        },
    )
    .await;
    let reads = app.redis().session_reads().await;
    for call in 3..23 {
        let response = browser
            .api_get(&format!("/api/exchanged/any-token/{call}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "call {call}");
    }
    let read = app.redis().session_reads().await - reads;
    // As for the session cache alone: a touch or a lapse of tracking's confirmation may cost one.
    assert!(
        read <= 2,
        "20 calls with the token held read Redis {read} times"
    );
    let exchanged = last_bearer(&app, "/v1/any-token/2");
    let claims = jwt_payload(&exchanged);
    assert_eq!(
        claims["aud"], "orders-api",
        "a token for that API: {claims}"
    );
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        app.provider.exchange_grants().await,
        1,
        "one exchange, held for the later calls"
    );
    let request = app
        .provider
        .token_requests()
        .await
        .into_iter()
        .rev()
        .find(|request| request["grant_type"] == crate::harness::provider_grants::TOKEN_EXCHANGE)
        .expect("the provider recorded the exchange");
    assert_eq!(
        request["audience"],
        serde_json::json!(["orders-api"]),
        "{request}"
    );

    // The session's own route still gets the login's token, never the exchanged one.
    assert_eq!(
        browser
            .api_get("/api/orders/any-token/login")
            .await
            .status(),
        StatusCode::OK
    );
    let login_token = last_bearer(&app, "/v1/any-token/login");
    assert_ne!(login_token, exchanged);

    // Held under a key of its own, sealed: no Redis value shows the token or its claims.
    let held: Vec<String> = app.redis().keys("vestibule:credential:*").await;
    assert_eq!(held.len(), 1, "one held token: {held:?}");
    let payload = exchanged.split('.').nth(1).unwrap().to_owned();
    for (key, value) in redis_dump(&app).await {
        let text = String::from_utf8_lossy(&value);
        assert!(
            !text.contains(&exchanged) && !text.contains(&payload) && !text.contains("orders-api"),
            "{key} shows the exchanged token"
        );
    }

    assert_eq!(browser.logout().await.0, StatusCode::OK);
    assert!(
        app.redis().keys("vestibule:credential:*").await.is_empty(),
        "the held token ends with the session"
    );
}

#[tokio::test]
async fn calls_on_two_instances_at_expiry_cause_one_exchange_per_expiry() {
    let mut app = TestApp::builder()
        .refresh_skew(1)
        .provider_options(|options| options.exchanged_token_ttl = Some(4))
        .extra_toml(EXCHANGE_ROUTES)
        .start()
        .await;
    let second = app.start_another_instance().await;
    let browser = app.browser();
    browser.login("alice").await;
    let other = Browser::with_session(&second, &browser.cookie("vestibule").unwrap());
    // Each exchange takes a while, so the calls really overlap it.
    app.provider
        .delay_grants(
            crate::harness::provider_grants::TOKEN_EXCHANGE,
            std::time::Duration::from_millis(300),
        )
        .await;

    let first = call_concurrently(
        &[browser.clone(), other.clone()],
        10,
        "/api/exchanged/any-token/a",
    )
    .await;
    assert!(first.iter().all(|s| *s == StatusCode::OK), "{first:?}");
    assert_eq!(
        app.provider.exchange_grants().await,
        1,
        "20 calls, one exchange"
    );
    let first_token = last_bearer(&app, "/v1/any-token/a");
    let expires_at = jwt_payload(&first_token)["exp"].as_u64().unwrap();

    // Past the point where it is due (the skew is capped at half its 4 s life).
    wait_for(
        "the exchanged token to be due",
        std::time::Duration::from_secs(20),
        || async move { (crate::harness::unix_now() + 1 >= expires_at).then_some(()) },
    )
    .await;
    let second_round = call_concurrently(
        &[browser.clone(), other.clone()],
        10,
        "/api/exchanged/any-token/b",
    )
    .await;
    assert!(
        second_round.iter().all(|s| *s == StatusCode::OK),
        "{second_round:?}"
    );
    assert_eq!(
        app.provider.exchange_grants().await,
        2,
        "one more exchange for the expiry, across both instances"
    );
    let tokens = bearers_seen(&app, "/v1/any-token/b");
    assert_eq!(
        tokens.len(),
        1,
        "every call of the second round had the new token"
    );
    assert!(!tokens.contains(&first_token));
}

#[tokio::test]
async fn a_refused_or_failed_exchange_fails_that_route_only() {
    let app = TestApp::builder().extra_toml(EXCHANGE_ROUTES).start().await;
    let browser = app.browser();
    browser.login("alice").await;

    let refused = browser.api_get("/api/refused/any-token/x").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "credential_refused", "{body}");
    assert_eq!(body["route"], "/api/refused");
    assert!(
        !body.to_string().contains(REFUSED_AUDIENCE)
            && !body.to_string().contains("invalid_target"),
        "the provider's words stay in the log: {body}"
    );
    assert!(
        app.upstream
            .seen()
            .iter()
            .all(|seen| !seen.path_and_query.starts_with("/v1/any-token/x")),
        "nothing reached the upstream without its credential"
    );

    // A provider failing the exchange is a 502 for that route; the session goes on.
    app.provider
        .fail_next_exchanges(1, 503, "temporarily_unavailable")
        .await;
    let failed = browser.api_get("/api/exchanged/any-token/y").await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["error"], "credential_unavailable", "{body}");

    assert_eq!(browser.user().await.0, StatusCode::OK, "the session stays");
    assert_eq!(
        browser.api_get("/api/orders/any-token/z").await.status(),
        StatusCode::OK,
        "its other routes work"
    );
    assert_eq!(
        browser
            .api_get("/api/exchanged/any-token/again")
            .await
            .status(),
        StatusCode::OK,
        "and the failed route works once the provider does"
    );
}

#[tokio::test]
async fn an_upstream_rejecting_a_held_token_gets_one_replacement_not_one_per_call() {
    let app = TestApp::builder().extra_toml(EXCHANGE_ROUTES).start().await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser
            .api_get("/api/exchanged/any-token/first")
            .await
            .status(),
        StatusCode::OK
    );
    let first = last_bearer(&app, "/v1/any-token/first");
    assert_eq!(app.provider.exchange_grants().await, 1);

    for call in 0..4 {
        let response = browser
            .api_get(&format!("/api/exchanged/{call}/always-invalid-token"))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "the upstream's answer stands"
        );
    }
    assert_eq!(
        app.provider.exchange_grants().await,
        2,
        "the rejected token was replaced once; its replacement is never replaced that way"
    );
    let seen: Vec<String> = app
        .upstream
        .seen()
        .into_iter()
        .filter(|seen| seen.path_and_query.ends_with("/always-invalid-token"))
        .filter_map(|seen| seen.bearer)
        .collect();
    assert_eq!(seen[0], first, "the first call carried the held token");
    assert_ne!(
        seen[1], first,
        "and was sent once more with its replacement"
    );
    let which: Vec<&str> = seen
        .iter()
        .map(|token| {
            if *token == first {
                "first"
            } else if *token == seen[1] {
                "replacement"
            } else {
                "another"
            }
        })
        .collect();
    assert!(
        seen[1..].iter().all(|token| *token == seen[1]),
        "every later call carried the replacement: {which:?}"
    );
    assert_eq!(browser.user().await.0, StatusCode::OK, "the session stays");
}

/// A login asking for two resources up front, then a route per resource whose token comes
/// from the refresh token (Entra ID's one resource per token).
fn resource_app() -> crate::harness::TestAppBuilder {
    TestApp::builder()
        .oidc_toml(&format!(
            "scopes = [\"openid\", \"profile\", \"email\", \"offline_access\", \"orders:read\", \"billing:read\"]\nresource = [\"{ORDERS}\", \"{BILLING}\"]\naudience = \"orders-api\"\n"
        ))
        .extra_toml(&format!(
            r#"
[[routes]]
prefix = "/api/shop"
upstream = "{{upstream}}"
[routes.credential]
kind = "refresh"
resource = "{ORDERS}"
scope = "orders:read"

[[routes]]
prefix = "/api/billing"
upstream = "{{upstream}}"
[routes.credential]
kind = "refresh"
resource = "{BILLING}"
scope = "billing:read"
"#
        ))
}

#[tokio::test]
async fn login_asks_for_the_configured_resources_on_the_authorization_and_the_code_exchange() {
    let app = resource_app().start().await;
    app.browser().login("alice").await;
    let authorization = app.provider.authorization_requests().await;
    let last = authorization
        .last()
        .expect("the provider saw the authorization");
    assert_eq!(
        last["resource"],
        serde_json::json!([ORDERS, BILLING]),
        "{last}"
    );
    let code = app
        .provider
        .token_requests()
        .await
        .into_iter()
        .find(|request| request["grant_type"] == "authorization_code")
        .expect("the code exchange was recorded");
    assert_eq!(
        code["resource"],
        serde_json::json!([ORDERS, BILLING]),
        "{code}"
    );
}

#[tokio::test]
async fn refresh_credentials_get_a_token_per_resource_and_the_rotated_refresh_token_is_kept() {
    let app = resource_app()
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;

    for (path, resource) in [("/api/shop", ORDERS), ("/api/billing", BILLING)] {
        let response = browser.api_get(&format!("{path}/any-token/r")).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let token = last_bearer(&app, "/v1/any-token/r");
        assert_eq!(jwt_payload(&token)["aud"], resource, "{path}");
        assert_eq!(app.provider.refresh_grants_for(resource).await, 1, "{path}");
    }
    // Held: no further grant.
    assert_eq!(
        browser.api_get("/api/shop/any-token/again").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants_for(ORDERS).await, 1);

    // The provider rotated the refresh token at each of those grants: the login's own refresh
    // works only with the newest one.
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser
            .api_get("/api/orders/any-token/login")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        browser.user().await.0,
        StatusCode::OK,
        "the session survived"
    );
    assert_eq!(
        app.provider.stats().await["refresh_token_errors"],
        0,
        "no refresh token was ever used twice"
    );
}

#[tokio::test]
async fn the_client_token_is_shared_by_every_session_and_anonymous_callers_and_fetched_once() {
    let mut app = TestApp::builder()
        .extra_toml(&format!(
            r#"
[[routes]]
prefix = "/api/machine"
upstream = "{{upstream}}"
access = "anonymous"
[routes.credential]
kind = "client"
resource = "{ORDERS}"
scope = "orders:read"
"#
        ))
        .start()
        .await;
    let second = app.start_another_instance().await;
    let alice = app.browser();
    alice.login("alice").await;
    let stranger = Browser::new(&second);

    let statuses = call_concurrently(
        &[alice.clone(), stranger.clone()],
        5,
        "/api/machine/any-token/c",
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        app.provider.client_credentials_grants().await,
        1,
        "one grant for everyone"
    );
    let tokens = bearers_seen(&app, "/v1/any-token/c");
    assert_eq!(tokens.len(), 1);
    let token = tokens.into_iter().next().unwrap();
    let claims = jwt_payload(&token);
    assert_eq!(claims["aud"], ORDERS);
    assert_eq!(
        claims["sub"],
        crate::harness::provider::client_id(),
        "the client's own token"
    );
    assert_eq!(app.redis().keys("vestibule:client-token:*").await.len(), 1);
}
