//! Transparent refresh: one grant per expiry, rotation, rejection and provider outages.

use reqwest::StatusCode;

use crate::harness::browser::call_concurrently;
use crate::harness::{Browser, TestApp};

#[tokio::test]
async fn expired_access_token_is_refreshed_once_even_for_20_concurrent_calls() {
    let (app, browser, first_token) = alice_with_short_lived_tokens().await;
    assert_eq!(app.provider.refresh_grants().await, 0);

    browser.wait_past_access_token_expiry().await;
    let statuses =
        call_concurrently(std::slice::from_ref(&browser), 20, "/api/orders/concurrent").await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        app.provider.refresh_grants().await,
        1,
        "exactly one refresh grant"
    );

    let seen = app.upstream.seen();
    let refreshed: Vec<_> = seen.iter().skip(1).collect();
    assert_eq!(refreshed.len(), 20);
    assert!(
        refreshed.iter().all(|r| r.token_active),
        "the upstream accepted every call"
    );
    let new_token = refreshed[0].bearer.clone().unwrap();
    assert_ne!(new_token, first_token, "a new access token is forwarded");
    assert!(
        refreshed
            .iter()
            .all(|r| r.bearer.as_deref() == Some(new_token.as_str()))
    );

    // The rotated refresh token was stored: the next expiry refreshes again, successfully.
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/again").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 2);
    assert_eq!(app.provider.stats().await["refresh_token_errors"], 0);
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        user["sub"], "alice",
        "claims survive the refreshed ID token (no nonce)"
    );
}

/// Two instances behind one load balancer (same Redis, provider, public URL), 4 s access
/// tokens, and alice's session reached through each: `(app, first, second)`.
async fn one_session_on_two_instances() -> (TestApp, Browser, Browser) {
    let mut app = TestApp::builder()
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let second = app.start_another_instance().await;
    let browser = app.browser();
    browser.login("alice").await;
    let other_instance = Browser::with_session(&second, &browser.cookie("vestibule").unwrap());
    (app, browser, other_instance)
}

#[tokio::test]
async fn two_instances_sharing_redis_refresh_a_session_once() {
    let (app, browser, other_instance) = one_session_on_two_instances().await;
    assert_eq!(
        other_instance.user().await.1["sub"],
        "alice",
        "the session is shared"
    );

    browser.wait_past_access_token_expiry().await;
    let statuses = call_concurrently(
        &[browser.clone(), other_instance.clone()],
        20,
        "/api/orders/both",
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        app.provider.refresh_grants().await,
        1,
        "one refresh across both instances"
    );
    assert_eq!(app.provider.stats().await["refresh_token_errors"], 0);
    assert!(app.upstream.seen().iter().all(|r| r.token_active));

    // A logout on one instance ends the session on the other at the very next request, even
    // though the other one has it cached.
    for _ in 0..5 {
        assert_eq!(
            other_instance.api_get("/api/orders/cached").await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(browser.logout().await.0, StatusCode::OK);
    assert_eq!(other_instance.user().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        other_instance
            .api_get("/api/orders/after-logout")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_provider_slower_than_the_lock_lease_still_gets_one_refresh_across_instances() {
    let (app, browser, other_instance) = one_session_on_two_instances().await;
    browser.wait_past_access_token_expiry().await;

    // The refresh takes longer than the lock's lease: the holder must keep the lock, or the
    // other instance refreshes with the same (rotated) token and the provider revokes the grant.
    let lease = vestibule::refresh::REFRESH_LOCK_LEASE;
    app.provider
        .delay_refresh_grants(lease + std::time::Duration::from_secs(2))
        .await;
    let statuses = call_concurrently(
        &[browser.clone(), other_instance.clone()],
        10,
        "/api/orders/slow-provider",
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let stats = app.provider.stats().await;
    assert_eq!(stats["refresh_token"], 1, "one refresh grant: {stats}");
    assert_eq!(
        stats["refresh_token_errors"], 0,
        "no reuse of a rotated token: {stats}"
    );
    app.provider
        .delay_refresh_grants(std::time::Duration::ZERO)
        .await;
    assert_eq!(
        other_instance.user().await.0,
        StatusCode::OK,
        "the session lives on"
    );
}

#[tokio::test]
async fn refresh_rejected_by_the_provider_ends_the_session() {
    let app = TestApp::builder()
        .access_token_ttl(3)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(app.redis().session_keys().await.len(), 1);
    app.provider.revoke_all().await;
    browser.wait_past_access_token_expiry().await;

    let response = browser.api_get("/api/orders/1").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["login_url"],
        "/api/auth/login"
    );
    assert!(
        app.redis().session_keys().await.is_empty(),
        "the session is gone from Redis"
    );
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
    assert!(app.upstream.seen().is_empty());
}

#[tokio::test]
async fn provider_unreachable_during_refresh_is_503_and_the_session_stays() {
    let mut app = TestApp::builder()
        .access_token_ttl(3)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    browser.wait_past_access_token_expiry().await;
    app.provider.stop();

    let response = browser.api_get("/api/orders/1").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "identity_provider_unavailable"
    );
    assert_eq!(
        app.redis().session_keys().await.len(),
        1,
        "the session stays"
    );
    assert_eq!(browser.user().await.0, StatusCode::OK);
    assert!(
        app.upstream.seen().is_empty(),
        "an expired token is never forwarded"
    );
}

/// Login, a proxied call after the access token expired, and exactly one refresh grant,
/// against a provider with the given signing algorithm and client authentication.
async fn login_and_refresh_with(alg: &'static str, auth_method: &'static str, user: &str) {
    let app = TestApp::builder()
        .id_token_alg(alg)
        .auth_method(auth_method)
        .access_token_ttl(3)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login(user).await;
    assert_eq!(browser.user().await.1["sub"], user);
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    assert!(app.upstream.seen()[0].token_active);
}

#[tokio::test]
async fn works_with_es256_keys_and_client_secret_post() {
    login_and_refresh_with("ES256", "client_secret_post", "bob").await;
}

#[tokio::test]
async fn works_with_ps256_keys() {
    login_and_refresh_with("PS256", "client_secret_basic", "carol").await;
}

#[tokio::test]
async fn works_with_hs256_id_tokens_keyed_by_the_client_secret() {
    login_and_refresh_with("HS256", "client_secret_basic", "dave").await;
}

#[tokio::test]
async fn short_lived_tokens_with_a_large_skew_do_not_refresh_on_every_call() {
    // Tokens live 6 s, the configured skew is 30 s: refresh is capped at half the lifetime.
    let app = TestApp::builder()
        .access_token_ttl(6)
        .refresh_skew(30)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    for _ in 0..5 {
        assert_eq!(
            browser.api_get("/api/orders/1").await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(app.provider.refresh_grants().await, 0);
}

#[tokio::test]
async fn provider_key_rotation_is_picked_up_without_a_restart() {
    let mut app = TestApp::start().await;
    app.browser().login("alice").await;
    let old_kid = app.provider.signing_kid().await;
    app.provider.restart_with_new_keys();
    assert_ne!(
        app.provider.signing_kid().await,
        old_kid,
        "the provider rotated its key"
    );
    // Vestibule still holds the old JWKS; the new ID token's kid makes it fetch the new one.
    let browser = app.browser();
    browser.login("bob").await;
    assert_eq!(browser.user().await.1["sub"], "bob");
}

/// A provider that names no lifetime (no `expires_in`, opaque access tokens; RFC 6749 only
/// RECOMMENDS it) still gets its tokens refreshed: after `oidc.assumed_token_lifetime_secs`,
/// on login and again after each refresh, instead of a dead token proxied until the session ends.
#[tokio::test]
async fn without_expires_in_tokens_are_refreshed_after_the_assumed_lifetime() {
    let app = TestApp::builder()
        .refresh_skew(1)
        .oidc_toml("assumed_token_lifetime_secs = 5\n")
        .start()
        .await;
    app.provider.change_token_responses(&[], true).await;
    let browser = app.browser();
    let logged_in = std::time::Instant::now();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    let first_expiry = user["session"]["access_token_expires_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("an assumed expiry: {user}"));
    assert!(
        first_expiry <= crate::harness::unix_now() + 5,
        "{first_expiry}"
    );
    assert_eq!(
        browser.api_get("/api/orders/first").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 0);

    crate::harness::wait_for(
        "a refresh after the assumed lifetime",
        std::time::Duration::from_secs(15),
        || async {
            assert_eq!(
                browser.api_get("/api/orders/poll").await.status(),
                StatusCode::OK
            );
            (app.provider.refresh_grants().await >= 1).then_some(())
        },
    )
    .await;
    assert!(
        logged_in.elapsed() >= std::time::Duration::from_secs(3),
        "refreshed when the assumed lifetime was nearly over, not at once: {:?}",
        logged_in.elapsed()
    );
    let (_, user) = browser.user().await;
    let second_expiry = user["session"]["access_token_expires_at"].as_u64().unwrap();
    assert!(
        second_expiry > first_expiry,
        "{second_expiry} {first_expiry}"
    );
    let seen = app.upstream.seen();
    assert!(seen.iter().all(|request| request.token_active));
    assert_ne!(seen[0].bearer, seen.last().unwrap().bearer, "a new token");
}

/// Alice signed in with 4-second access tokens, one call made: the app, her browser and the
/// access token the upstream saw.
async fn alice_with_short_lived_tokens() -> (TestApp, Browser, String) {
    let app = TestApp::builder()
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/api/orders/first").await.status(),
        StatusCode::OK
    );
    let first_token = app.upstream.seen()[0].bearer.clone().unwrap();
    (app, browser, first_token)
}

/// After the access token's expiry, the next call's refresh is answered with a broken ID token
/// (the provider was told so): the call is refused, nothing of that answer reaches an upstream
/// or UserInfo, no spent refresh token is replayed, and the session has ended.
pub(crate) async fn assert_the_refresh_ends_the_session_unused(app: &TestApp, browser: &Browser) {
    let userinfo_calls = app.provider.stats().await["userinfo"].clone();
    browser.wait_past_access_token_expiry().await;
    let response = browser.api_get("/api/orders/after").await;
    assert_eq!(
        app.provider.refresh_grants().await,
        1,
        "the refresh was tried"
    );
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1, "no call with the refreshed tokens: {seen:?}");
    let stats = app.provider.stats().await;
    assert_eq!(
        stats["userinfo"], userinfo_calls,
        "UserInfo is not asked with the refreshed access token"
    );
    assert_eq!(
        stats["refresh_token_errors"], 0,
        "no replay of a spent refresh token"
    );
    assert_eq!(
        browser.user().await.0,
        StatusCode::UNAUTHORIZED,
        "the session ended"
    );
}

/// A refresh answer whose ID token fails its checks (here: another issuer, properly signed) is
/// untrustworthy as a whole (OIDC Core §12.2): its access token never reaches an upstream,
/// UserInfo is not asked with it, and the session ends (`id_token_invalid`; with a rotating
/// provider its refresh token was spent on this answer anyway). The conformance suite's
/// `oidcc-client-test-refresh-token-invalid-issuer` found Vestibule using them.
#[tokio::test]
async fn a_refreshed_id_token_from_another_issuer_ends_the_session_unused() {
    let (app, browser, _) = alice_with_short_lived_tokens().await;
    app.provider
        .set_id_token_claims(serde_json::json!({ "iss": "https://another-issuer.example" }))
        .await;
    assert_the_refresh_ends_the_session_unused(&app, &browser).await;
}

/// The same for a refreshed ID token without `sub` (the answer cannot even be parsed), which
/// was kept on its dying token while the rotated refresh token of that answer was thrown away
/// (the next refresh would have replayed the spent one: a false theft alarm).
#[tokio::test]
async fn a_refreshed_id_token_without_sub_ends_the_session_unused() {
    let (app, browser, _) = alice_with_short_lived_tokens().await;
    app.provider.change_token_responses(&["sub"], false).await;
    assert_the_refresh_ends_the_session_unused(&app, &browser).await;
}
