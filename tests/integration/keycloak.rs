//! The bundled Keycloak, for real: Keycloak 26 from its own distribution with the realm file
//! as shipped and the hostname settings of docker-compose.yml (harness/keycloak.rs). Login on
//! Keycloak's own page, refresh under rotation and reuse detection, roles, logout at both ends,
//! an administrator ending a session, and a Vestibule restart, each proven through Keycloak's
//! admin API rather than through Vestibule's word.

use std::ffi::OsStr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::browser::run_script_at;
use crate::harness::browser::call_concurrently;
use crate::harness::keycloak::ACCESS_TOKEN_LIFESPAN_SECS;
use crate::harness::{Browser, KeycloakApp, unix_now, wait_for};

/// Vestibule refreshes this long before the access token expires.
const REFRESH_SKEW_SECS: u64 = 2;

/// A logged-in browser and the Keycloak SSO session (`sid`) behind its Vestibule session.
async fn logged_in(app: &KeycloakApp, username: &str) -> (Browser, String) {
    let browser = app.browser();
    let turn = app.keycloak.login_turn().await;
    browser
        .login_with_password(username, &app.keycloak.password_of(username))
        .await;
    drop(turn);
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["claims"]["preferred_username"], username);
    let sid = user["claims"]["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("Keycloak's ID token names its session (sid): {user}"))
        .to_owned();
    (browser, sid)
}

/// Waits until Vestibule will refresh on the next call (the access token is within the skew).
async fn wait_until_refresh_is_due(browser: &Browser) {
    let (_, user) = browser.user().await;
    let expires_at = user["session"]["access_token_expires_at"]
        .as_u64()
        .expect("access token expiry");
    wait_for(
        "the access token to be due for refresh",
        Duration::from_secs(ACCESS_TOKEN_LIFESPAN_SECS + 10),
        || async move { (unix_now() + REFRESH_SKEW_SECS > expires_at).then_some(()) },
    )
    .await;
}

/// The demo API's answer to a call through Vestibule: (status, body).
async fn call_demo_api(browser: &Browser, path: &str) -> (StatusCode, Value) {
    let response = browser.api_get(path).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn roles(answer: &Value) -> Vec<String> {
    answer["caller"]["roles"]
        .as_array()
        .unwrap_or_else(|| panic!("the demo API names the caller's roles: {answer}"))
        .iter()
        .map(|role| role.as_str().unwrap().to_owned())
        .collect()
}

/// Nothing Vestibule does may need the browser's host name for Keycloak: in compose that name
/// (localhost:8081) is Vestibule's own container.
fn assert_back_channel_stayed_on_the_back_channel(app: &KeycloakApp) {
    let wrong = app.keycloak.back_channel_calls_on_the_front_name();
    assert!(
        wrong.is_empty(),
        "back-channel calls reached Keycloak through the browser's host name: {wrong:?}"
    );
    assert!(
        app.back
            .request_lines()
            .iter()
            .all(|line| !line.contains("/auth?")),
        "Vestibule's back channel carried a browser request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_signs_in_on_keycloaks_own_page_calls_the_api_and_signs_out_in_chromium() {
    let app = KeycloakApp::start(REFRESH_SKEW_SECS).await;
    let keycloak = app.keycloak;
    let password = keycloak.password_of("alice");
    // The whole browser run is one turn: the login happens inside the script.
    let turn = keycloak.login_turn().await;
    let stdout = run_script_at(
        &app.url,
        "keycloak-login.mjs",
        &[
            ("E2E_USER", OsStr::new("alice")),
            ("E2E_PASSWORD", OsStr::new(&password)),
            ("KEYCLOAK_URL", OsStr::new(&keycloak.front_url)),
        ],
    )
    .await;
    drop(turn);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|error| panic!("keycloak-login.mjs report ({error}): {stdout}"));

    // The demo page showed the ID token's claims, issued by the realm for our client.
    let claims = &report["claims"];
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["iss"], keycloak.issuer());
    let audience = &claims["aud"];
    assert!(
        *audience == keycloak.client_id.as_str()
            || audience
                .as_array()
                .is_some_and(|list| list.iter().any(|a| *a == keycloak.client_id.as_str())),
        "aud names our client: {audience}"
    );
    let sid = claims["sid"].as_str().expect("sid claim").to_owned();

    // The demo API accepted the token after asking Keycloak (userinfo) and sees alice's role.
    assert_eq!(report["api"]["status"], 200, "API call: {}", report["api"]);
    assert_eq!(
        report["api"]["body"]["caller"]["preferred_username"],
        "alice"
    );
    assert!(
        roles(&report["api"]["body"]).contains(&"admin".to_owned()),
        "alice has the realm role admin: {}",
        report["api"]
    );

    // Keycloak accepted the end-session URL Vestibule returned and sent the browser back.
    let end_session = &report["endSession"];
    let url =
        url::Url::parse(end_session["url"].as_str().expect("an end-session request")).unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{}/protocol/openid-connect/logout", keycloak.issuer())
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert!(
        query
            .get("id_token_hint")
            .is_some_and(|hint| hint.split('.').count() == 3),
        "id_token_hint is a JWT: {url}"
    );
    assert_eq!(
        query.get("post_logout_redirect_uri").map(String::as_str),
        Some(format!("{}/api/auth/logout-callback", app.url).as_str())
    );
    let state = query
        .get("state")
        .expect("the end-session URL carries a state");
    assert_eq!(
        end_session["status"], 302,
        "Keycloak redirected: {end_session}"
    );
    // Keycloak passed the state back; Vestibule's logout callback checked it and went home.
    assert_eq!(
        end_session["location"],
        format!("{}/api/auth/logout-callback?state={state}", app.url)
    );
    assert_eq!(report["landedOn"], format!("{}/", app.url));

    // The SSO session is gone at Keycloak. (Which of the two ends it, the revocation Vestibule
    // sends in the background or the browser's end-session request, is a race; the revocation
    // itself is proven in the next-but-one test, where the order is fixed.)
    let alice = keycloak.session_ids("alice").await;
    assert!(!alice.contains(&sid), "Keycloak session {sid} still alive");
    assert_back_channel_stayed_on_the_back_channel(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_has_no_admin_role_and_the_demo_api_sees_that() {
    let app = KeycloakApp::start(REFRESH_SKEW_SECS).await;
    let log_from = crate::harness::logs::position();
    let (bob, _) = logged_in(&app, "bob").await;
    // UserInfo (oidc.userinfo = "auto") was read on the back channel, and Keycloak accepted its
    // own access token there: no "unusable" warning.
    assert!(
        app.back
            .request_lines()
            .iter()
            .any(|line| line.contains("/protocol/openid-connect/userinfo")),
        "UserInfo is read through the back channel"
    );
    let log = crate::harness::logs::since(log_from);
    assert!(
        !log.contains("UserInfo is unusable"),
        "Keycloak's UserInfo answers: {log}"
    );
    let (status, answer) = call_demo_api(&bob, "/api/demo/whoami").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["caller"]["preferred_username"], "bob");
    // The route's prefix is Vestibule's; the API sees its own path.
    assert_eq!(answer["path"], "/whoami");
    let bobs = roles(&answer);
    assert!(
        !bobs.contains(&"admin".to_owned()),
        "bob must not have admin: {bobs:?}"
    );
    // Roles are read, not absent: bob has the realm's default roles.
    assert!(
        bobs.iter().any(|role| role.starts_with("default-roles-")),
        "{bobs:?}"
    );
    assert_back_channel_stayed_on_the_back_channel(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_calls_at_expiry_make_one_refresh_grant_under_rotation() {
    let app = KeycloakApp::start(REFRESH_SKEW_SECS).await;
    let keycloak = app.keycloak;
    let realm = keycloak.admin_get("").await;
    assert_eq!(
        realm["revokeRefreshToken"], true,
        "the realm rotates refresh tokens"
    );
    assert_eq!(
        realm["refreshTokenMaxReuse"], 0,
        "and refuses any reuse of an old one"
    );
    let (browser, sid) = logged_in(&app, "alice").await;

    let mut previous_refresh_token_id: Option<String> = None;
    for round in 1..=2usize {
        wait_until_refresh_is_due(&browser).await;
        let statuses =
            call_concurrently(std::slice::from_ref(&browser), 20, "/api/demo/at-expiry").await;
        assert!(
            statuses.iter().all(|status| *status == StatusCode::OK),
            "round {round}: every call succeeds: {statuses:?}"
        );
        let refreshes = wait_for("Keycloak's refresh event", Duration::from_secs(10), || {
            let sid = sid.clone();
            async move {
                let events = keycloak.events(&sid, "REFRESH_TOKEN").await;
                (events.len() >= round).then_some(events)
            }
        })
        .await;
        assert_eq!(
            refreshes.len(),
            round,
            "round {round}: exactly one refresh grant per expiry: {refreshes:#?}"
        );
        assert!(
            keycloak
                .events(&sid, "REFRESH_TOKEN_ERROR")
                .await
                .is_empty(),
            "round {round}: no refresh was refused (no reuse of a rotated token)"
        );
        // Rotation: each grant used the refresh token the previous one issued.
        let details = &refreshes[round - 1]["details"];
        if let Some(previous) = &previous_refresh_token_id {
            assert_eq!(
                details["refresh_token_id"].as_str(),
                Some(previous.as_str()),
                "round {round} used the rotated refresh token: {details}"
            );
        }
        previous_refresh_token_id = details["updated_refresh_token_id"]
            .as_str()
            .map(str::to_owned);
        assert!(
            previous_refresh_token_id.is_some(),
            "Keycloak rotated the refresh token: {details}"
        );
    }
    let (status, _) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert_back_channel_stayed_on_the_back_channel(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_at_keycloak_and_keycloak_accepts_the_end_session_url() {
    let app = KeycloakApp::start(REFRESH_SKEW_SECS).await;
    let keycloak = app.keycloak;
    let (browser, sid) = logged_in(&app, "alice").await;

    let (status, body) = browser.logout().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The refresh token is revoked at Keycloak's revocation endpoint (through the back channel).
    let revocations = wait_for(
        "Keycloak's revocation event",
        Duration::from_secs(10),
        || {
            let sid = sid.clone();
            async move {
                let events = keycloak.events(&sid, "REVOKE_GRANT").await;
                (!events.is_empty()).then_some(events)
            }
        },
    )
    .await;
    assert_eq!(revocations.len(), 1, "{revocations:#?}");
    assert!(
        keycloak.events(&sid, "REVOKE_GRANT_ERROR").await.is_empty(),
        "the revocation was accepted"
    );
    assert_eq!(
        app.back
            .requests_to("/realms/vestibule/protocol/openid-connect/revoke"),
        1,
        "the revocation went through Vestibule's back channel: {:?}",
        app.back.request_lines()
    );

    // The end-session URL, followed by the same browser (it holds Keycloak's cookies).
    let end_session = url::Url::parse(body["end_session_url"].as_str().unwrap()).unwrap();
    assert!(
        end_session.as_str().starts_with(&keycloak.front_url),
        "the browser is sent to Keycloak's public name: {end_session}"
    );
    let response = browser.get(end_session.as_str()).await;
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "Keycloak accepted the end-session request"
    );
    let state = end_session
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .expect("the end-session URL carries a state");
    let back = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        back,
        format!("{}/api/auth/logout-callback?state={state}", app.url),
        "Keycloak sends the state back to the registered logout callback"
    );
    let landing = browser.get(&back).await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(landing.headers()["location"], "/");
    let alive = keycloak.session_ids("alice").await;
    assert!(!alive.contains(&sid), "Keycloak session {sid} still alive");
    let (status, _) = browser.user().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_back_channel_stayed_on_the_back_channel(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_ending_the_sso_session_ends_the_vestibule_session_with_401() {
    let app = KeycloakApp::start(REFRESH_SKEW_SECS).await;
    let keycloak = app.keycloak;
    let (browser, sid) = logged_in(&app, "alice").await;
    let (status, _) = call_demo_api(&browser, "/api/demo/before").await;
    assert_eq!(status, StatusCode::OK);

    keycloak.end_session(&sid).await;
    assert!(!keycloak.session_ids("alice").await.contains(&sid));

    wait_until_refresh_is_due(&browser).await;
    let response = browser.api_get("/api/demo/after").await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "the refused refresh ends the session"
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "a JSON error: {body}");
    // Ended, not retried: the next calls are refused without another grant.
    let (status, _) = browser.user().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call_demo_api(&browser, "/api/demo/again").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let failures = keycloak.events(&sid, "REFRESH_TOKEN_ERROR").await;
    assert_eq!(
        failures.len(),
        1,
        "one refused refresh, no loop: {failures:#?}"
    );
    assert!(keycloak.events(&sid, "REFRESH_TOKEN").await.is_empty());
    assert_back_channel_stayed_on_the_back_channel(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_vestibule_keeps_the_session_and_fetches_discovery_again() {
    let mut app = KeycloakApp::start(REFRESH_SKEW_SECS).await;
    let keycloak = app.keycloak;
    let (browser, sid) = logged_in(&app, "alice").await;
    let (status, _) = call_demo_api(&browser, "/api/demo/before-restart").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.discoveries(), 1);

    app.restart().await;
    assert_eq!(
        app.discoveries(),
        2,
        "the new instance read discovery again"
    );
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "the session survived in Redis");
    assert_eq!(user["claims"]["sid"], sid.as_str());

    // A refresh after the restart uses the token endpoint of the new discovery.
    wait_until_refresh_is_due(&browser).await;
    let (status, answer) = call_demo_api(&browser, "/api/demo/after-restart").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["caller"]["preferred_username"], "alice");
    let refreshes = keycloak.events(&sid, "REFRESH_TOKEN").await;
    assert_eq!(refreshes.len(), 1, "{refreshes:#?}");
    assert_back_channel_stayed_on_the_back_channel(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_ending_the_sso_session_logs_out_through_the_back_channel_at_once() {
    let app = KeycloakApp::start_with_backchannel_logout(REFRESH_SKEW_SECS).await;
    let keycloak = app.keycloak;
    let (browser, sid) = logged_in(&app, "alice").await;
    let (other, other_sid) = logged_in(&app, "alice").await;
    assert_ne!(sid, other_sid, "two SSO sessions");
    let (status, _) = call_demo_api(&browser, "/api/demo/before").await;
    assert_eq!(status, StatusCode::OK);

    // An administrator signs one SSO session out: Keycloak posts its logout token (signed
    // with the realm's key, typ logout+jwt, naming sid) to this Vestibule, which ends exactly
    // that session, before any refresh could have noticed.
    keycloak.end_session(&sid).await;
    wait_for(
        "Keycloak's logout token to end the session",
        Duration::from_secs(10),
        || async { (browser.user().await.0 == StatusCode::UNAUTHORIZED).then_some(()) },
    )
    .await;
    assert!(
        keycloak
            .events(&sid, "REFRESH_TOKEN_ERROR")
            .await
            .is_empty(),
        "ended by the back channel, not by a refused refresh"
    );
    assert_eq!(
        other.user().await.0,
        StatusCode::OK,
        "the other SSO session stays"
    );
    let listed: Value = other
        .api_get("/api/auth/sessions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");
}
