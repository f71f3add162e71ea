//! Login, callback, current user and logout.

use reqwest::StatusCode;

use crate::harness::{Browser, TestApp};

fn assert_error_page(status: StatusCode, content_type: &str, body: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        body.contains("href=\"/api/auth/login\""),
        "error page offers a retry link: {body}"
    );
}

async fn page(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn full_flow_login_user_api_call_and_logout() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let outcome = browser
        .login_as("alice", Some("/orders/42?tab=items"))
        .await;
    assert_eq!(outcome.response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        outcome.response.headers()["location"],
        "/orders/42?tab=items"
    );

    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["sub"], "alice");
    assert_eq!(user["claims"]["email"], "alice@example.test");
    assert_eq!(user["claims"]["aud"], "vestibule");
    assert!(user["session"]["expires_at"].as_u64().unwrap() > crate::harness::unix_now());
    assert!(user["session"]["idle_expires_at"].as_u64().unwrap() > crate::harness::unix_now());
    let logout_url = user["logout_url"].as_str().unwrap().to_owned();
    assert!(logout_url.starts_with("/api/auth/logout?sid="));

    let response = browser.api_get("/api/orders/42?x=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].token_active,
        "the provider confirms the forwarded token"
    );
    assert_eq!(seen[0].path_and_query, "/v1/42?x=1");
    let access_token = seen[0].bearer.clone().unwrap();
    let user_text = serde_json::to_string(&user).unwrap();
    assert!(
        !user_text.contains(&access_token),
        "/api/auth/user never shows a token"
    );
    assert!(!user_text.contains("id_token\""), "no raw ID token either");

    let (status, body) = browser.logout().await;
    assert_eq!(status, StatusCode::OK);
    let end_session = url::Url::parse(body["end_session_url"].as_str().unwrap()).unwrap();
    let params: std::collections::HashMap<_, _> = end_session.query_pairs().into_owned().collect();
    assert!(end_session.as_str().starts_with(&app.provider.issuer));
    assert_eq!(params["client_id"], "vestibule");
    assert_eq!(
        params["post_logout_redirect_uri"],
        format!("{}/api/auth/logout-callback", app.url)
    );
    assert_eq!(params["id_token_hint"].split('.').count(), 3);

    let (status, body) = browser.user().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["login_url"], "/api/auth/login");
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(app.redis().session_keys().await.is_empty());
    crate::harness::wait_for(
        "refresh-token revocation at logout",
        std::time::Duration::from_secs(5),
        || async {
            (app.provider.stats().await["revocations"].as_u64().unwrap() == 1).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn logout_link_requires_the_sessions_sid() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    let logout_url = user["logout_url"].as_str().unwrap().to_owned();

    for forged in [
        "/api/auth/logout",
        "/api/auth/logout?sid=",
        "/api/auth/logout?sid=forged",
    ] {
        let response = browser.get(forged).await;
        assert!(
            response.status().is_client_error(),
            "{forged}: {}",
            response.status()
        );
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(
            browser.user().await.0,
            StatusCode::OK,
            "{forged} must not log out"
        );
    }

    let response = browser.get(&logout_url).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&app.provider.issuer), "{location}");
    assert!(location.contains("id_token_hint="));
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn session_cookie_is_http_only_strict_and_opaque() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let authorization = browser.begin_login(None).await;
    let callback = browser.authorize_at_provider(authorization, "alice").await;
    let response = browser.get(callback.as_str()).await;
    let set_cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = set_cookies
        .iter()
        .find(|c| c.starts_with("vestibule="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.to_ascii_lowercase().contains("domain="),
        "{session}"
    );
    let value = browser.cookie("vestibule").unwrap();
    assert!(value.len() >= 86, "at least 2×256 bits of randomness");
    assert!(!value.contains("alice"));
}

#[tokio::test]
async fn login_cookie_is_lax_and_reused_by_parallel_logins() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let response = browser.get("/api/auth/login").await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("vestibule-login="));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let first = browser.cookie("vestibule-login").unwrap();

    // Three tabs start logins; the browser keeps one login cookie and every login completes.
    let tab1 = browser.begin_login(Some("/one")).await;
    let tab2 = browser.begin_login(Some("/two")).await;
    assert_eq!(browser.cookie("vestibule-login").unwrap(), first);
    assert_eq!(
        browser.cookie_header().matches("vestibule-login=").count(),
        1
    );
    let callback2 = browser.authorize_at_provider(tab2, "alice").await;
    let callback1 = browser.authorize_at_provider(tab1, "alice").await;
    let done1 = browser.get(callback1.as_str()).await;
    assert_eq!(done1.headers()["location"], "/one");
    let done2 = browser.get(callback2.as_str()).await;
    assert_eq!(done2.headers()["location"], "/two");
    assert_eq!(browser.user().await.0, StatusCode::OK);
    assert_eq!(
        app.redis().session_keys().await.len(),
        1,
        "the second login replaced the first session"
    );
}

#[tokio::test]
async fn every_unsafe_return_to_falls_back_to_root() {
    let app = TestApp::start().await;
    for evil in [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "%2F%2Fevil.example",
        "/\tevil.example",
        "/\r\nX: y",
        "javascript:alert(1)",
        "http:/evil.example",
        "/.//evil.example",
        "/a/..//evil.example",
    ] {
        let browser = app.browser();
        let outcome = browser.login_as("alice", Some(evil)).await;
        assert_eq!(outcome.response.status(), StatusCode::SEE_OTHER, "{evil:?}");
        assert_eq!(outcome.response.headers()["location"], "/", "{evil:?}");
    }
}

#[tokio::test]
async fn forged_state_gives_an_error_page_and_no_session() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.begin_login(None).await;
    let (status, content_type, body) = page(
        browser
            .get("/api/auth/callback?code=abc&state=forged")
            .await,
    )
    .await;
    assert_error_page(status, &content_type, &body);
    for odd in [
        "/api/auth/callback?code=abc",
        "/api/auth/callback",
        "/api/auth/callback?state=a&state=b&code=x&code=y",
        "/api/auth/callback?state=%ZZ%00&code=%",
    ] {
        let (status, content_type, body) = page(browser.get(odd).await).await;
        assert_error_page(status, &content_type, &body);
    }
    // Repeated parameters on the login URL are not a framework error either.
    let response = browser
        .get("/api/auth/login?returnTo=/a&returnTo=//evil.example")
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(browser.cookie("vestibule").is_none());
    assert!(app.redis().session_keys().await.is_empty());
}

#[tokio::test]
async fn replayed_state_gives_an_error_page() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let authorization = browser.begin_login(None).await;
    let callback = browser.authorize_at_provider(authorization, "alice").await;
    assert_eq!(
        browser.get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER
    );
    let cookie_after_login = browser.cookie("vestibule").unwrap();

    let (status, content_type, body) = page(browser.get(callback.as_str()).await).await;
    assert_error_page(status, &content_type, &body);
    assert_eq!(
        browser.cookie("vestibule").unwrap(),
        cookie_after_login,
        "no new session"
    );
    assert_eq!(app.redis().session_keys().await.len(), 1);
}

#[tokio::test]
async fn state_from_another_browser_gives_an_error_page_and_no_session() {
    let app = TestApp::start().await;
    let victim = app.browser();
    let authorization = victim.begin_login(None).await;
    let callback = victim.authorize_at_provider(authorization, "alice").await;

    // The attacker's browser has its own (or no) login cookie.
    let attacker = app.browser();
    let (status, content_type, body) = page(attacker.get(callback.as_str()).await).await;
    assert_error_page(status, &content_type, &body);
    attacker.begin_login(None).await;
    let (status, content_type, body) = page(attacker.get(callback.as_str()).await).await;
    assert_error_page(status, &content_type, &body);
    assert!(attacker.cookie("vestibule").is_none());
    assert!(app.redis().session_keys().await.is_empty());
}

#[tokio::test]
async fn provider_error_gives_an_error_page_and_no_session() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let authorization = browser.begin_login(None).await;
    let state = authorization
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let url = format!(
        "/api/auth/callback?error=access_denied&error_description=%3Cscript%3E&state={state}"
    );
    let (status, content_type, body) = page(browser.get(&url).await).await;
    assert_error_page(status, &content_type, &body);
    assert!(body.contains("access_denied"));
    assert!(
        !body.contains("<script>"),
        "provider text is never echoed raw"
    );
    assert!(app.redis().session_keys().await.is_empty());
}

#[tokio::test]
async fn authorization_request_uses_pkce_state_nonce_and_consent_for_offline_access() {
    let app = TestApp::start().await;
    let authorization = app.browser().begin_login(None).await;
    let params: std::collections::HashMap<_, _> =
        authorization.query_pairs().into_owned().collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["code_challenge"].len(), 43);
    assert!(params["state"].len() >= 43);
    assert!(params["nonce"].len() >= 43);
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["prompt"], "consent");
    let scopes: Vec<&str> = params["scope"].split(' ').collect();
    for scope in ["openid", "profile", "email", "offline_access"] {
        assert!(scopes.contains(&scope), "{scopes:?}");
    }
    assert_eq!(
        params["redirect_uri"],
        format!("{}/api/auth/callback", app.url)
    );
}

#[tokio::test]
async fn login_replaces_any_session_the_browser_brought() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let first = browser.cookie("vestibule").unwrap();
    browser.login("alice").await;
    let second = browser.cookie("vestibule").unwrap();
    assert_ne!(first, second, "a login always creates a new session id");
    let stale = Browser::new(&app.url);
    stale.set_cookie("vestibule", &first);
    assert_eq!(
        stale.user().await.0,
        StatusCode::UNAUTHORIZED,
        "the old session was ended"
    );
    assert_eq!(app.redis().session_keys().await.len(), 1);
}

/// `GET /api/auth/login` with `params` (as a third party's link would carry them).
fn third_party_login_url(browser: &Browser, params: &[(&str, &str)]) -> url::Url {
    let mut url = browser.url("/api/auth/login");
    url.query_pairs_mut().extend_pairs(params);
    url
}

#[tokio::test]
async fn third_party_initiated_login_passes_the_login_hint_and_lands_on_the_target_link() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let target = format!("{}/orders/7?tab=items", app.url);
    let start = third_party_login_url(
        &browser,
        &[
            ("iss", &app.provider.issuer),
            ("login_hint", "alice@example.test"),
            ("target_link_uri", &target),
        ],
    );
    let response = browser.get(start.as_str()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let authorization = crate::harness::browser::location(&response, &start);
    assert!(authorization.as_str().starts_with(&app.provider.issuer));
    assert!(
        authorization
            .query_pairs()
            .any(|(name, value)| name == "login_hint" && value == "alice@example.test"),
        "{authorization}"
    );
    // The provider received it: its login form is filled in with the hint.
    let mut next = authorization.clone();
    let login_page = loop {
        let response = browser.get(next.as_str()).await;
        if response.status().is_redirection() {
            next = crate::harness::browser::location(&response, &next);
            continue;
        }
        break response.text().await.unwrap();
    };
    assert!(
        login_page.contains("value=\"alice@example.test\""),
        "the provider's login form: {login_page}"
    );

    let callback = browser.authorize_at_provider(authorization, "alice").await;
    let done = browser.get(callback.as_str()).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()["location"], "/orders/7?tab=items");
    assert_eq!(browser.user().await.0, StatusCode::OK);
}

#[tokio::test]
async fn third_party_initiated_login_for_another_issuer_is_refused_before_the_provider() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let issuer_with_slash = format!("{}/", app.provider.issuer);
    for iss in ["https://evil.example", issuer_with_slash.as_str(), ""] {
        let start = third_party_login_url(&browser, &[("iss", iss), ("login_hint", "alice")]);
        let response = browser.get(start.as_str()).await;
        assert!(
            !response.headers().contains_key("location"),
            "{iss:?}: no redirect"
        );
        assert!(
            !response.headers().contains_key("set-cookie"),
            "{iss:?}: no login started"
        );
        let (status, content_type, body) = page(response).await;
        assert_error_page(status, &content_type, &body);
        assert!(body.contains("another issuer"), "{iss:?}: {body}");
    }
}

#[tokio::test]
async fn a_target_link_uri_on_another_origin_is_not_honoured() {
    let app = TestApp::start().await;
    for target in [
        "https://evil.example/orders/7".to_owned(),
        "//evil.example/orders/7".to_owned(),
        format!("{}@evil.example/", app.url),
    ] {
        let browser = app.browser();
        let start = third_party_login_url(
            &browser,
            &[("iss", &app.provider.issuer), ("target_link_uri", &target)],
        );
        let response = browser.get(start.as_str()).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{target}");
        let authorization = crate::harness::browser::location(&response, &start);
        let callback = browser.authorize_at_provider(authorization, "alice").await;
        let done = browser.get(callback.as_str()).await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER, "{target}");
        assert_eq!(done.headers()["location"], "/", "{target}");
    }
}

/// An ID token without `sub` or without `iat` (signed by the provider's own key, so only the
/// claim is wrong) is a bad token like any other: `502`, the page that says the answer could
/// not be verified, no session, and the audit reason `id_token_invalid`; never a provider
/// outage (`503`, `provider_unavailable`), which would tell alerts and users the wrong thing.
#[tokio::test]
async fn an_id_token_without_sub_or_iat_is_refused_as_invalid_not_as_an_outage() {
    use crate::audit::audit_events;
    use crate::harness::binary::binary_in_front;
    let (app, binary, dir) = binary_in_front(TestApp::builder(), |config| config).await;
    for (nth, claim) in ["sub", "iat"].into_iter().enumerate() {
        // Failed logins from one network are audited once a second.
        crate::harness::wait_for_the_next_second().await;
        app.provider.change_token_responses(&[claim], false).await;
        let browser = Browser::new(&binary.base);
        let outcome = browser.login_as("alice", None).await;
        let (status, content_type, body) = page(outcome.response).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "without {claim}: {body}");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(
            body.contains("could not be verified"),
            "without {claim}: {body}"
        );
        assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
        let failed = crate::harness::wait_for(
            "the login_failed audit event",
            std::time::Duration::from_secs(10),
            || async {
                audit_events(&binary)
                    .into_iter()
                    .filter(|event| event["event"] == "login_failed")
                    .nth(nth)
            },
        )
        .await;
        assert_eq!(failed["reason"], "id_token_invalid", "without {claim}");
    }
    assert!(app.redis().session_keys().await.is_empty());
    // The same provider with whole ID tokens: logins work.
    app.provider.change_token_responses(&[], false).await;
    Browser::new(&binary.base).login("alice").await;
    drop(binary);
    let _ = std::fs::remove_dir_all(dir);
}
