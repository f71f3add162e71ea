//! The demo page of issue 30 in Chromium against the real Keycloak, with compose's routes and
//! the real demo API (`dev/demo-api.mjs`): the admin-only call (a claim rule on Keycloak's
//! realm roles), the step-up button, and the live feeds (a WebSocket and an event stream
//! through Vestibule) that end within two seconds of their session's end, whether the user
//! logged out in another tab or an administrator ended the session at Keycloak.

use std::ffi::OsStr;

use serde_json::Value;

use crate::browser::run_script_at;
use crate::harness::KeycloakApp;
use crate::harness::keycloak_app::demo_routes;

/// Vestibule refreshes this long before the access token expires.
const REFRESH_SKEW_SECS: u64 = 2;

/// How long after a session's end its WebSocket and event stream must have ended.
const WITHIN_MS: f64 = 2000.0;

/// The step-up route's `max_age_secs` in the test: compose's 60 s, shortened so the login ages
/// past it within the test.
const STEP_UP_AGE_SECS: u64 = 3;

/// Runs `script` in Chromium as `username` (one login turn for the whole run: the realm's
/// brute-force protection refuses overlapping logins of a user); answers its JSON report.
async fn run_as(app: &KeycloakApp, script: &str, username: &str, extra: &[(&str, &str)]) -> Value {
    let keycloak = app.keycloak;
    let password = keycloak.password_of(username);
    let (admin, admin_password) = keycloak.admin_credentials();
    let mut env: Vec<(&str, &OsStr)> = vec![
        ("E2E_USER", OsStr::new(username)),
        ("E2E_PASSWORD", OsStr::new(&password)),
        ("KEYCLOAK_URL", OsStr::new(&keycloak.front_url)),
        ("KEYCLOAK_ADMIN_URL", OsStr::new(&keycloak.back_url)),
        ("KEYCLOAK_REALM", OsStr::new(&keycloak.realm)),
        ("KEYCLOAK_ADMIN_USER", OsStr::new(admin)),
        ("KEYCLOAK_ADMIN_PASSWORD", OsStr::new(admin_password)),
        ("E2E_TIMEOUT_SECS", OsStr::new("140")),
    ];
    env.extend(
        extra
            .iter()
            .map(|(name, value)| (*name, OsStr::new(*value))),
    );
    let turn = keycloak.login_turn().await;
    let stdout = run_script_at(&app.url, script, &env).await;
    drop(turn);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|error| panic!("{script} report ({error}): {stdout}"))
}

/// Both feeds of one scenario ended with the session, said so, and within two seconds.
fn assert_feeds_ended(scenario: &str, seen: &Value) {
    assert_eq!(
        seen["code"], 4401,
        "{scenario}: the WebSocket closes with 4401: {seen}"
    );
    for feed in ["wsText", "sseText"] {
        let shown = seen[feed].as_str().unwrap_or_default();
        assert!(
            shown.starts_with("Session ended — log in again"),
            "{scenario}: the page says the session ended ({feed}): {seen}"
        );
    }
    assert!(
        seen["wsText"]
            .as_str()
            .unwrap_or_default()
            .contains("4401 session_"),
        "{scenario}: the page shows the close code and reason: {seen}"
    );
    for after in ["wsAfterMs", "sseAfterMs"] {
        let ms = seen[after].as_f64().unwrap_or(f64::MAX);
        assert!(
            ms < WITHIN_MS,
            "{scenario}: {after} = {ms} ms, not within 2 s: {seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pages_live_feeds_end_within_two_seconds_of_a_logout_in_another_tab_and_of_keycloak_ending_the_session_in_chromium()
 {
    let app = KeycloakApp::start_with_backchannel_logout(REFRESH_SKEW_SECS).await;
    let report = run_as(&app, "demo-feeds.mjs", "alice", &[]).await;

    // connect-src 'self' admitted the same-origin WebSocket: no CSP complaint, ticks arrived.
    assert_eq!(report["csp"], Value::Array(Vec::new()), "{report}");
    for feed in ["ws", "sse"] {
        let last: Value = serde_json::from_str(report["first"][feed].as_str().unwrap_or(""))
            .unwrap_or_else(|error| {
                panic!("{feed} shows the demo API's ticks ({error}): {report}")
            });
        assert!(last["tick"].is_u64(), "{feed}: {last}");
        assert_eq!(last["user"], "alice", "{feed}: the API saw alice's token");
    }

    assert_feeds_ended("logout in another tab", &report["logoutInAnotherTab"]);
    let ended = &report["endedAtKeycloak"];
    assert_feeds_ended("Keycloak ended the session", ended);
    let sid = ended["sid"].as_str().expect("the ended SSO session");
    assert!(
        !app.keycloak
            .session_ids("alice")
            .await
            .contains(&sid.to_owned()),
        "Keycloak's session {sid} is gone"
    );
    assert!(
        app.keycloak
            .events(sid, "REFRESH_TOKEN_ERROR")
            .await
            .is_empty(),
        "ended by Keycloak's back-channel logout, not by a refused refresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_demo_page_alice_calls_the_admin_route_bob_is_refused_and_step_up_logs_in_again_in_chromium()
 {
    let shipped = demo_routes(&crate::harness::keycloak::Keycloak::shared().demo_api_url);
    let routes = shipped.replace(
        "step_up={max_age_secs=60}",
        &format!("step_up={{max_age_secs={STEP_UP_AGE_SECS}}}"),
    );
    assert_ne!(routes, shipped, "compose's step-up route is as expected");
    let app = KeycloakApp::start_with_routes(REFRESH_SKEW_SECS, false, &routes).await;
    let age = STEP_UP_AGE_SECS.to_string();

    let alice = run_as(
        &app,
        "demo-routes.mjs",
        "alice",
        &[("E2E_STEP_UP_AGE", &age)],
    )
    .await;
    let admin = &alice["admin"];
    assert_eq!(admin["status"], 200, "alice's admin call: {alice}");
    assert!(admin["refused"].is_null(), "{alice}");
    let text = admin["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("admin report") && text.contains("\"admin\""),
        "the demo API's admin answer names alice's role: {alice}"
    );
    // The step-up button: Vestibule's step_up_required, followed by client.js to the login
    // endpoint with the route's max_age and this page to come back to; back on the page.
    let login = url::Url::parse(alice["stepUp"]["loginUrl"].as_str().unwrap_or("")).unwrap();
    assert_eq!(login.path(), "/api/auth/login", "{alice}");
    let query: std::collections::HashMap<_, _> = login.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("max_age").map(String::as_str),
        Some(age.as_str()),
        "{login}"
    );
    assert_eq!(
        query.get("returnTo").map(String::as_str),
        Some("/"),
        "{login}"
    );
    assert_eq!(
        alice["stepUp"]["backAt"],
        format!("{}/", app.url),
        "{alice}"
    );

    let bob = run_as(&app, "demo-routes.mjs", "bob", &[]).await;
    let admin = &bob["admin"];
    assert_eq!(admin["status"], 403, "bob's admin call: {bob}");
    assert_eq!(admin["refused"], "insufficient_permissions", "{bob}");
    let text = admin["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("403 Insufficient permissions") && text.contains("/api/admin"),
        "the page shows Vestibule's refusal naming the route, not an error: {bob}"
    );
}
