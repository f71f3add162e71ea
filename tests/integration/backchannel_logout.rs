//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0) with the real provider's
//! logout tokens: after an RP-initiated logout from another client of the same provider
//! session, after a provider-side session end, and by `sub` alone; on two instances, the
//! second serving from its cache. Tokens that break a rule of the specification, or come a
//! second time, are refused with a JSON `400` and end nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Browser, TestApp, unix_now, wait_for, wait_for_the_next_second};

/// Whether the browser's session is still alive at its Vestibule.
pub(crate) async fn alive(browser: &Browser) -> bool {
    browser.user().await.0 == StatusCode::OK
}

/// Waits until `browser`'s session is refused (the other instance's cache learns of the
/// deletion from Redis within its documented second).
async fn wait_until_ended(browser: &Browser, what: &str) {
    wait_for(what, std::time::Duration::from_secs(2), || async {
        (!alive(browser).await).then_some(())
    })
    .await;
}

/// Posts a logout token as the provider does.
pub(crate) async fn post_logout_token(
    base: &str,
    token: &str,
) -> (StatusCode, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cache_control = response
        .headers()
        .get("cache-control")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, cache_control, body)
}

#[tokio::test]
async fn rp_initiated_logout_at_another_client_ends_exactly_that_session_on_every_instance() {
    let mut app = TestApp::start().await;
    let other_instance = app.start_another_instance().await;
    let laptop = Browser::new(&app.url);
    laptop.login("alice").await;
    let phone = Browser::new(&app.url);
    phone.login("alice").await;
    let bob = Browser::new(&app.url);
    bob.login("bob").await;
    // The laptop's session, seen (and cached) by the other instance too.
    let laptop_elsewhere =
        Browser::with_session(&other_instance, &laptop.cookie("vestibule").unwrap());
    assert!(alive(&laptop_elsewhere).await);
    assert!(alive(&laptop_elsewhere).await, "served from the cache");

    // The laptop also signs in to another application of the same provider, then signs out
    // there: the provider tells every client of that provider session.
    laptop.authorize_portal(&app.provider.issuer, "alice").await;
    laptop
        .logout_at_provider(&app.provider.issuer, "portal")
        .await;
    let stats = app.provider.stats().await;
    assert_eq!(stats["backchannel_logouts"], 1, "{stats}");
    assert_eq!(stats["backchannel_logout_errors"], 0, "{stats}");

    assert!(!alive(&laptop).await, "ended where the token arrived");
    wait_until_ended(&laptop_elsewhere, "the other instance to drop the session").await;
    assert!(
        alive(&phone).await,
        "alice's other provider session is another sid"
    );
    assert!(alive(&bob).await);
    // The phone's list no longer shows the laptop.
    let sessions: Value = phone
        .api_get("/api/auth/sessions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        1,
        "{sessions}"
    );
}

#[tokio::test]
async fn a_provider_side_session_end_ends_every_session_of_that_user_signed_with_the_client_secret()
{
    // HS256: the provider signs logout tokens with the client secret, as its ID tokens; HS
    // counts for logout tokens only because it is configured.
    let mut app = TestApp::builder()
        .id_token_alg("HS256")
        .oidc_toml("id_token_signed_response_alg = \"HS256\"\n")
        .start()
        .await;
    let other_instance = app.start_another_instance().await;
    let first = Browser::new(&app.url);
    first.login("alice").await;
    let second = Browser::new(&other_instance);
    second.login("alice").await;
    let bob = Browser::new(&app.url);
    bob.login("bob").await;

    let (ended, notified) = app.provider.end_sessions_of("alice").await;
    assert_eq!(
        (ended, notified),
        (2, 2),
        "two provider sessions, one token each"
    );
    assert!(!alive(&first).await);
    wait_until_ended(&second, "alice's second session to end").await;
    assert!(alive(&bob).await, "bob is not alice");
}

/// The provider session alice's browser is in (the `sid` of its ID token).
async fn provider_session(browser: &Browser) -> String {
    let (_, user) = browser.user().await;
    user["claims"]["sid"]
        .as_str()
        .expect("the ID token names the provider session")
        .to_owned()
}

#[tokio::test]
async fn logout_tokens_under_an_algorithm_this_client_does_not_receive_are_refused_on_every_instance()
 {
    // The provider lists ES256 and HS256 too (as Keycloak and Auth0 list several), and its
    // JWKS holds an ES256 key, but it signs this client's ID tokens with RS256.
    let mut app = TestApp::builder()
        .provider_also_supports("ES256,HS256")
        .start()
        .await;
    let discovery: Value = reqwest::get(format!(
        "{}/.well-known/openid-configuration",
        app.provider.issuer
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let supported = discovery["id_token_signing_alg_values_supported"].to_string();
    for alg in ["RS256", "ES256", "HS256"] {
        assert!(supported.contains(alg), "{alg} listed: {supported}");
    }
    // A second instance behind the same load balancer, which verifies no ID token itself.
    let restarted = app.start_another_instance().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let sid = provider_session(&alice).await;

    let wrong = [
        (
            "ES256",
            "provider",
            "an ES256 token signed by a key of the provider's JWKS",
        ),
        (
            "HS256",
            "client-secret",
            "an HS256 token keyed with the client secret",
        ),
    ];
    for instance in [&restarted, &app.url] {
        for (alg, key, what) in wrong {
            let jti = format!("{alg}-{instance}");
            let claims = app.provider.logout_claims(Some("alice"), Some(&sid), &jti);
            let token = app.provider.logout_token_under(alg, key, claims).await;
            let (status, _, body) = post_logout_token(instance, &token).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{what} at {instance}: {body}"
            );
            assert_eq!(
                body["message"], "the logout token's algorithm is not accepted.",
                "{what} at {instance}"
            );
            assert!(alive(&alice).await, "{what} at {instance} ended nothing");
        }
    }
    // The algorithm the login's ID token came under is known to the instance that never saw
    // an ID token: a genuine RS256 token ends the session there.
    let claims = app
        .provider
        .logout_claims(Some("alice"), Some(&sid), "genuine");
    let genuine = app
        .provider
        .logout_token_under("RS256", "provider", claims)
        .await;
    let (status, _, body) = post_logout_token(&restarted, &genuine).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(&alice).await);
}

#[tokio::test]
async fn until_a_refresh_teaches_the_algorithm_the_providers_asymmetric_ones_stand_in_never_hs() {
    // The provider lists ES256 and HS256 too, but signs this client's ID tokens with RS256.
    let mut app = TestApp::builder()
        .provider_also_supports("ES256,HS256")
        .access_token_ttl(2)
        .refresh_skew(1)
        .start()
        .await;
    let other = app.start_another_instance().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let sid = provider_session(&alice).await;
    // As after an upgrade from a version that recorded no algorithm: alice's session lives,
    // but nothing is known of the algorithm it came under.
    let _: () = redis::cmd("DEL")
        .arg("vestibule:id-token-algs")
        .query_async(&mut app.redis().connection().await)
        .await
        .unwrap();
    let token = |alg: &'static str, key: &'static str, sub: &'static str, jti: &'static str| {
        let sid = (sub == "alice").then_some(sid.as_str());
        let claims = app.provider.logout_claims(Some(sub), sid, jti);
        app.provider.logout_token_under(alg, key, claims)
    };
    // Never one keyed with the client secret...
    let hs = token("HS256", "client-secret", "alice", "hs-before").await;
    let (status, _, body) = post_logout_token(&app.url, &hs).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(alive(&alice).await);
    // ...but any asymmetric algorithm the provider lists stands in (for a user with no
    // session here, so that alice's survives to be tested below).
    let es = token("ES256", "provider", "bob", "es-before").await;
    let (status, _, body) = post_logout_token(&app.url, &es).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the provider's ES256 stands in: {body}"
    );
    assert!(alive(&alice).await);

    // A call through the other instance (which wrote nothing yet) refreshes the session; the
    // refreshed ID token teaches every instance its algorithm, RS256.
    alice.wait_past_access_token_expiry().await;
    let through_other = Browser::with_session(&other, &alice.cookie("vestibule").unwrap());
    assert_eq!(
        through_other.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let es = token("ES256", "provider", "alice", "es-after").await;
    let (status, _, body) = post_logout_token(&app.url, &es).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "ES256 no longer: {body}");
    assert!(alive(&alice).await);
    let rs = token("RS256", "provider", "alice", "rs-after").await;
    let (status, _, body) = post_logout_token(&app.url, &rs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(&alice).await);
}

#[tokio::test]
async fn hs256_id_tokens_do_not_make_hs256_logout_tokens_acceptable_unless_configured() {
    let app = TestApp::builder().id_token_alg("HS256").start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let sid = provider_session(&alice).await;
    let claims = app
        .provider
        .logout_claims(Some("alice"), Some(&sid), "hs-unconfigured");
    let token = app
        .provider
        .logout_token_under("HS256", "client-secret", claims)
        .await;
    let (status, _, body) = post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["message"],
        "the logout token's algorithm is not accepted."
    );
    assert!(alive(&alice).await);
}

#[tokio::test]
async fn a_token_naming_only_sub_ends_all_of_that_users_sessions() {
    let app = TestApp::start().await;
    let browsers = [Browser::new(&app.url), Browser::new(&app.url)];
    for browser in &browsers {
        browser.login("alice").await;
    }
    let bob = Browser::new(&app.url);
    bob.login("bob").await;
    let token = app
        .provider
        .logout_token_for_sub("alice", "sub-only-1")
        .await;
    let (status, cache_control, _) = post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_control.as_deref(), Some("no-store"));
    for browser in &browsers {
        assert!(!alive(browser).await);
    }
    assert!(alive(&bob).await);
}

#[tokio::test]
async fn a_token_naming_only_sub_also_ends_sessions_an_earlier_release_filed_under_unkeyed_names() {
    let app = TestApp::start().await;
    let browsers = crate::my_sessions::sessions_across_an_upgrade(&app, "alice").await;
    let token = app
        .provider
        .logout_token_for_sub("alice", "earlier-sub-1")
        .await;
    let (status, _, _) = post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK);
    for browser in &browsers {
        assert!(!alive(browser).await);
    }
}

#[tokio::test]
async fn logout_tokens_that_break_a_rule_are_refused_and_a_replay_changes_nothing() {
    let app = TestApp::start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let (_, user) = alice.user().await;
    let sid = user["claims"]["sid"]
        .as_str()
        .expect("the ID token names the provider session")
        .to_owned();
    let now = unix_now();
    let claims = |changes: Value| {
        let jti = format!("jti-{changes}");
        let mut claims = app.provider.logout_claims(Some("alice"), Some(&sid), &jti);
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    };
    let typed = json!({ "alg": "RS256", "typ": "logout+jwt" });
    let refused: Vec<(&str, Value, Value, &str)> = vec![
        (
            "another audience",
            typed.clone(),
            claims(json!({ "aud": "portal" })),
            "provider",
        ),
        (
            "another issuer",
            typed.clone(),
            claims(json!({ "iss": "http://evil.example" })),
            "provider",
        ),
        (
            "no events",
            typed.clone(),
            claims(json!({ "events": null })),
            "provider",
        ),
        (
            "a nonce",
            typed.clone(),
            claims(json!({ "nonce": "n-1" })),
            "provider",
        ),
        (
            "expired",
            typed.clone(),
            claims(json!({ "iat": now - 200, "exp": now - 10 })),
            "provider",
        ),
        (
            "issued in the future",
            typed.clone(),
            claims(json!({ "iat": now + 3600, "exp": now + 3700 })),
            "provider",
        ),
        (
            "neither sub nor sid",
            typed.clone(),
            claims(json!({ "sub": null, "sid": null })),
            "provider",
        ),
        (
            "no jti",
            typed.clone(),
            claims(json!({ "jti": null })),
            "provider",
        ),
        (
            "signed by an unknown key",
            typed.clone(),
            claims(json!({})),
            "unknown",
        ),
        (
            "typed as something else",
            json!({ "alg": "RS256", "typ": "JWT" }),
            claims(json!({})),
            "provider",
        ),
    ];
    for (what, header, claims, key) in refused {
        let token = app.provider.logout_token(header, claims, key).await;
        let (status, _, body) = post_logout_token(&app.url, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], "invalid_request", "{what}: {body}");
        assert!(alive(&alice).await, "{what} ended nothing");
    }
    // Unsigned, garbage, missing and wrongly posted tokens: clear 4xx answers, never a 500.
    let header = base64_url(&json!({ "alg": "none" }).to_string());
    let payload = base64_url(&claims(json!({})).to_string());
    let (status, _, body) = post_logout_token(&app.url, &format!("{header}.{payload}.")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, _, _) = post_logout_token(&app.url, "not-a-jwt").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let http = reqwest::Client::new();
    let endpoint = format!("{}/api/auth/backchannel-logout", app.url);
    let missing = http
        .post(&endpoint)
        .form(&[("other", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let as_json = http
        .post(&endpoint)
        .json(&json!({ "logout_token": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(as_json.status(), StatusCode::BAD_REQUEST);
    let get = http.get(&endpoint).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers()["allow"], "POST");
    assert!(alive(&alice).await);

    // A valid token naming only alice works once; the same token again is a replay, which
    // must not end the session she signs in with afterwards.
    let valid = app
        .provider
        .logout_token(
            typed,
            claims(json!({ "jti": "the-one", "sid": null })),
            "provider",
        )
        .await;
    let (status, _, _) = post_logout_token(&app.url, &valid).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!alive(&alice).await);
    // A login whose ID token is from the second of that logout could have overtaken it: the
    // next login is from a later second.
    wait_for_the_next_second().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let (status, _, body) = post_logout_token(&app.url, &valid).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["message"], "the logout token was already used.");
    assert!(
        alive(&alice).await,
        "the replay did not end the new session"
    );
}

#[tokio::test]
async fn back_channel_logout_works_on_the_in_memory_store() {
    let app = TestApp::builder().in_memory().start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let phone = Browser::new(&app.url);
    phone.login("alice").await;
    alice.authorize_portal(&app.provider.issuer, "alice").await;
    alice
        .logout_at_provider(&app.provider.issuer, "portal")
        .await;
    assert!(!alive(&alice).await);
    assert!(alive(&phone).await);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
