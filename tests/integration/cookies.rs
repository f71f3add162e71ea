//! Cookies on the wire: only byte-exact names are Vestibule's, whatever else the browser
//! carries; bytes outside ASCII do not lock anyone out.

use reqwest::StatusCode;

use crate::harness::TestApp;

#[tokio::test]
async fn a_percent_encoded_name_is_not_the_session_cookie_on_any_path() {
    let app = TestApp::start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let token = alice.cookie("vestibule").unwrap();
    let disguised = format!("%76estibule={token}");

    let user = alice
        .get_with_cookie_header("/api/auth/user", disguised.as_bytes(), true)
        .await;
    assert_eq!(user.status(), StatusCode::UNAUTHORIZED, "/api/auth/user");
    let call = alice
        .get_with_cookie_header("/api/orders/1", disguised.as_bytes(), true)
        .await;
    assert_eq!(call.status(), StatusCode::UNAUTHORIZED, "proxied call");
    let logout = alice
        .get_with_cookie_header("/api/auth/logout?sid=x", disguised.as_bytes(), false)
        .await;
    assert!(
        logout.status().is_redirection(),
        "nothing to end: {}",
        logout.status()
    );
    assert_eq!(
        alice.user().await.0,
        StatusCode::OK,
        "the real session lives on"
    );
    assert!(app.upstream.seen().is_empty());
}

/// The attacker starts a login, signs in at the provider as themself, and keeps the callback
/// URL (not visited) and their login binding: what a login CSRF plants in a victim's browser.
async fn attackers_unfinished_login(app: &TestApp) -> (url::Url, String) {
    let attacker = app.browser();
    let authorization = attacker.begin_login(None).await;
    let callback = attacker
        .authorize_at_provider(authorization, "mallory")
        .await;
    (callback, attacker.cookie("vestibule-login").unwrap())
}

#[tokio::test]
async fn a_login_binding_planted_under_an_encoded_name_cannot_log_a_victim_in() {
    let app = TestApp::start().await;
    let (callback, binding) = attackers_unfinished_login(&app).await;

    // A sibling subdomain plants the attacker's binding in the victim's browser under a name
    // that only decodes to the login cookie's, then sends the victim to the callback.
    let victim = app.browser();
    let planted = format!("%76estibule-login={binding}");
    let response = victim
        .get_with_cookie_header(callback.as_str(), planted.as_bytes(), false)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "no session for the victim"
    );
    assert!(app.redis().session_keys().await.is_empty());
}

#[tokio::test]
async fn a_non_ascii_cookie_does_not_lock_the_user_out_and_reaches_the_upstream_unchanged() {
    let app = TestApp::start().await;
    let alice = app.browser();
    let pref: &[u8] = b"pref=caf\xc3\xa9";

    // Logging in with the cookie present: start, provider, callback.
    let start = alice
        .get_with_cookie_header("/api/auth/login", pref, false)
        .await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let set_cookie = start.headers()["set-cookie"].to_str().unwrap().to_owned();
    let binding = set_cookie
        .strip_prefix("vestibule-login=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    let authorization = crate::harness::browser::location(&start, &alice.url("/api/auth/login"));
    let callback = alice.authorize_at_provider(authorization, "alice").await;
    let with_binding = [pref, b"; vestibule-login=", binding.as_bytes()].concat();
    let done = alice
        .get_with_cookie_header(callback.as_str(), &with_binding, false)
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER, "the login completes");
    let session = done.headers()["set-cookie"].to_str().unwrap().to_owned();
    let token = session
        .strip_prefix("vestibule=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();

    // Calls with the cookie present work, and the upstream gets it byte for byte.
    let cookies = [pref, b"; vestibule=", token.as_bytes(), b"; z=\xff"].concat();
    let user = alice
        .get_with_cookie_header("/api/auth/user", &cookies, true)
        .await;
    assert_eq!(user.status(), StatusCode::OK);
    let call = alice
        .get_with_cookie_header("/api/orders/7", &cookies, true)
        .await;
    assert_eq!(call.status(), StatusCode::OK);
    let seen = app.upstream.seen();
    let forwarded = seen.last().unwrap().headers["cookie"].as_bytes().to_vec();
    assert_eq!(forwarded, b"pref=caf\xc3\xa9; z=\xff".to_vec());
}

#[tokio::test]
async fn a_second_login_binding_planted_beside_the_victims_is_refused() {
    let app = TestApp::start().await;
    let (callback, planted) = attackers_unfinished_login(&app).await;

    // The victim has a binding of their own; a sibling subdomain (Domain=parent, a longer
    // Path so it is sent first) adds the attacker's under the very same name.
    let victim = app.browser();
    victim.begin_login(None).await;
    let own = victim.cookie("vestibule-login").unwrap();
    let both = format!("vestibule-login={planted}; vestibule-login={own}");
    let response = victim
        .get_with_cookie_header(callback.as_str(), both.as_bytes(), false)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("set-cookie").is_none());
    assert!(app.redis().session_keys().await.is_empty());
}
