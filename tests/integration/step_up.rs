//! The login side of step-up (issue 30): `/api/auth/login` takes `acr_values`, `max_age` and
//! `prompt`, sends them to the real provider, and the callback checks the ID token's `acr` and
//! `auth_time` (OIDC Core §3.1.2.1, §5.5.1.1); a declined silent check (`prompt=none`) goes back
//! to the SPA with a marker. The test provider issues `acr` `1` for a password and `mfa` when a
//! login asks for it (re-showing its login page), unless the user has no second factor.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Browser, TestApp, wait_for};

/// A payments API that needs the second factor, and a transfers API that needs a login at most
/// a few seconds old.
const ROUTES: &str = r#"
[[routes]]
prefix = "/api/payments"
upstream = "{upstream}"
[routes.step_up]
acr_values = ["mfa"]

[[routes]]
prefix = "/api/transfers"
upstream = "{upstream}"
[routes.step_up]
max_age_secs = 4
"#;

async fn app() -> TestApp {
    TestApp::builder().extra_toml(ROUTES).start().await
}

/// The `step_up_required` answer's `login_url` for a call to `path`.
pub(crate) async fn step_up_login_url(browser: &Browser, path: &str) -> String {
    let response = browser.api_get(path).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "step_up_required", "{body}");
    body["login_url"].as_str().unwrap().to_owned()
}

/// The session's claims (`/api/auth/user`).
async fn claims(browser: &Browser) -> Value {
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    user["claims"].clone()
}

fn query_of(url: &reqwest::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[tokio::test]
async fn a_password_session_is_sent_to_step_up_and_the_login_url_brings_back_mfa() {
    let app = app().await;
    let alice = app.browser();
    alice.login("alice").await;
    assert_eq!(claims(&alice).await["acr"], "1", "a password login");

    let login_url = step_up_login_url(&alice, "/api/payments/pay").await;
    assert_eq!(login_url, "/api/auth/login?acr_values=mfa");
    let authorization = alice
        .begin_login_at(&format!("{login_url}&returnTo=%2Fcheckout"))
        .await;
    assert_eq!(
        query_of(&authorization, "acr_values").as_deref(),
        Some("mfa"),
        "the provider is asked for mfa: {authorization}"
    );
    // The provider shows its login page again (a session at "1" asking for "mfa").
    let callback = alice.authorize_at_provider(authorization, "alice").await;
    let back = alice.get(callback.as_str()).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(back.headers()["location"], "/checkout");

    let stepped_up = claims(&alice).await;
    assert_eq!(stepped_up["acr"], "mfa", "{stepped_up}");
    assert_eq!(stepped_up["amr"], serde_json::json!(["pwd", "otp"]));
    let response = alice.api_get("/api/payments/pay").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );
    assert_eq!(response.json::<Value>().await.unwrap()["sub"], "alice");
}

#[tokio::test]
async fn a_login_older_than_max_age_is_sent_to_step_up_and_a_fresh_one_passes() {
    let app = app().await;
    let alice = app.browser();
    alice.login("alice").await;
    let first_auth_time = claims(&alice).await["auth_time"].as_u64().unwrap();
    assert_eq!(
        alice.api_get("/api/transfers/t1").await.status(),
        StatusCode::OK,
        "a fresh login passes"
    );

    let login_url = wait_for(
        "the login to grow older than max_age_secs",
        Duration::from_secs(30),
        || async {
            let response = alice.api_get("/api/transfers/t1").await;
            if response.status() != StatusCode::UNAUTHORIZED {
                return None;
            }
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "step_up_required");
            Some(body["login_url"].as_str().unwrap().to_owned())
        },
    )
    .await;
    assert_eq!(login_url, "/api/auth/login?max_age=4");
    let authorization = alice.begin_login_at(&login_url).await;
    assert_eq!(query_of(&authorization, "max_age").as_deref(), Some("4"));
    // The provider's session is older than 4 s: it asks for the password again.
    let callback = alice.authorize_at_provider(authorization, "alice").await;
    assert_eq!(
        alice.get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER
    );
    let auth_time = claims(&alice).await["auth_time"].as_u64().unwrap();
    assert!(auth_time > first_auth_time, "a new authentication");
    assert_eq!(
        alice.api_get("/api/transfers/t1").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_provider_answering_a_weaker_acr_fails_the_login_with_a_clear_page() {
    let app = app().await;
    app.provider.set_second_factor(false).await;
    let alice = app.browser();
    alice.login("alice").await;

    let login_url = step_up_login_url(&alice, "/api/payments/pay").await;
    let log_from = crate::harness::logs::position();
    let page = alice.login_at(&login_url, "alice").await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(alice_got_no_new_session(&page));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("did not authenticate you as required")
            && html.contains("step_up_not_satisfied"),
        "{html}"
    );
    // The session alice had is left as it was: still a password session, still refused.
    assert_eq!(claims(&alice).await["acr"], "1");
    assert_eq!(
        alice.api_get("/api/payments/pay").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        crate::harness::logs::since(log_from).contains("step_up_not_satisfied"),
        "the failure is audited with its reason"
    );
}

/// Whether a callback's answer set no session cookie.
fn alice_got_no_new_session(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|cookie| !cookie.to_str().unwrap().starts_with("vestibule="))
}

#[tokio::test]
async fn max_age_without_auth_time_in_the_id_token_is_refused() {
    let app = app().await;
    app.provider
        .change_token_responses(&["auth_time"], false)
        .await;
    let browser = app.browser();
    let page = browser
        .login_at("/api/auth/login?max_age=300", "alice")
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(alice_got_no_new_session(&page));
    assert!(page.text().await.unwrap().contains("no auth_time"));
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
    // Without max_age the same ID token is fine: auth_time is only required once asked for.
    browser.login("alice").await;
}

#[tokio::test]
async fn a_silent_check_without_a_provider_session_returns_to_the_spa_with_a_marker() {
    let app = app().await;
    let browser = app.browser();
    let authorization = browser
        .begin_login_at("/api/auth/login?prompt=none&returnTo=%2Forders%3Ftab%3D1%23top")
        .await;
    assert_eq!(query_of(&authorization, "prompt").as_deref(), Some("none"));
    let callback = browser.through_provider_silently(authorization).await;
    assert_eq!(
        query_of(&callback, "error").as_deref(),
        Some("login_required")
    );
    let back = browser.get(callback.as_str()).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER, "no error page");
    assert_eq!(
        back.headers()["location"],
        "/orders?tab=1&vestibule_login=login_required#top"
    );
    assert!(alice_got_no_new_session(&back));
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);

    // The same answer to a login that was not silent is an error page, as before.
    let authorization = browser.begin_login(None).await;
    let state = query_of(&authorization, "state").unwrap();
    let page = browser
        .get(format!("/api/auth/callback?state={state}&error=login_required").as_str())
        .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_silent_check_with_a_provider_session_signs_in_without_a_page() {
    let app = app().await;
    let browser = app.browser();
    browser.login("alice").await;
    // The browser lost its Vestibule session (as when it timed out); the provider still knows
    // it. (A logout would revoke the grant, and the provider would answer consent_required.)
    browser.set_cookie("vestibule", "gone");
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);

    let authorization = browser
        .begin_login_at("/api/auth/login?prompt=none&returnTo=%2Fhome")
        .await;
    assert_eq!(query_of(&authorization, "prompt").as_deref(), Some("none"));
    let callback = browser.through_provider_silently(authorization).await;
    let back = browser.get(callback.as_str()).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(back.headers()["location"], "/home");
    assert_eq!(claims(&browser).await["sub"], "alice");
}

#[tokio::test]
async fn bad_login_parameters_get_a_400_page_naming_the_parameter() {
    let app = app().await;
    let browser = app.browser();
    for (query, named) in [
        ("max_age=-1", "max_age must be"),
        ("max_age=1e3", "max_age must be"),
        ("max_age=99999999999", "max_age must be"),
        ("prompt=none%20login", "prompt must be"),
        ("prompt=create", "prompt must be"),
        ("acr_values=", "acr_values must be"),
        ("acr_values=mfa%09gold", "acr_values must be"),
    ] {
        let response = browser.get(format!("/api/auth/login?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let html = response.text().await.unwrap();
        assert!(html.contains(named), "{query}: {html}");
    }
}

#[tokio::test]
async fn the_logins_own_prompt_replaces_the_configured_one() {
    let app = TestApp::builder()
        .oidc_toml("prompt = \"consent\"\n")
        .start()
        .await;
    let browser = app.browser();
    let plain = browser.begin_login(None).await;
    assert_eq!(query_of(&plain, "prompt").as_deref(), Some("consent"));
    let own = browser
        .begin_login_at("/api/auth/login?prompt=login%20select_account")
        .await;
    assert_eq!(
        query_of(&own, "prompt").as_deref(),
        Some("login select_account")
    );
}
