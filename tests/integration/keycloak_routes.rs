//! Issue 30's route policies against the real Keycloak (the shared boot of `keycloak.rs`): a
//! claim rule on Keycloak's realm roles (`alice` has `admin`, `bob` has not), `anonymous` and
//! `optional` access, and step-up with Keycloak's own Levels of Authentication (an ACR-to-LoA
//! map and a conditional browser flow, set up through the admin API). Each upstream sits behind
//! a relay that records every request, so "nothing reached the upstream" is seen, not assumed.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::keycloak::Keycloak;
use crate::harness::relay::Relay;
use crate::harness::{Browser, KeycloakApp, free_port};

/// Vestibule refreshes this long before the access token expires.
const REFRESH_SKEW_SECS: u64 = 2;

/// A relay in front of the demo API (which checks each token at Keycloak's UserInfo and answers
/// with the caller it names): the witness of what reached the upstream.
async fn recorded_demo_api(keycloak: &Keycloak) -> Relay {
    let port = keycloak
        .demo_api_url
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the demo API's port");
    Relay::start(port).await
}

/// Vestibule with the realm's own client (as shipped: realm roles mapped into UserInfo) and
/// `routes` (`{upstream}` is the recorded demo API).
async fn app_with_realm_client(routes: &str) -> (KeycloakApp, Relay) {
    let keycloak = Keycloak::shared();
    let upstream = recorded_demo_api(keycloak).await;
    let port = free_port();
    keycloak
        .register_vestibule(&format!("http://localhost:{port}"))
        .await;
    let routes = routes.replace("{upstream}", &format!("http://127.0.0.1:{}", upstream.port));
    let app = KeycloakApp::start_at(
        port,
        (&keycloak.client_id, &keycloak.client_secret),
        REFRESH_SKEW_SECS,
        &routes,
    )
    .await;
    (app, upstream)
}

/// A browser signed in as `username` on Keycloak's page.
async fn logged_in(app: &KeycloakApp, username: &str) -> Browser {
    let browser = app.browser();
    let turn = app.keycloak.login_turn().await;
    browser
        .login_with_password(username, &app.keycloak.password_of(username))
        .await;
    drop(turn);
    browser
}

/// The session's claims: the ID token's merged with UserInfo's (`/api/auth/user`).
async fn claims(browser: &Browser) -> Value {
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    user["claims"].clone()
}

/// An API call through Vestibule: (status, JSON body or `null`).
async fn call(browser: &Browser, path: &str) -> (StatusCode, Value) {
    let response = browser.api_get(path).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Whether any request to the upstream had `marker` in its request line.
fn reached(upstream: &Relay, marker: &str) -> bool {
    upstream
        .request_lines()
        .iter()
        .any(|line| line.contains(marker))
}

const ADMIN_ROUTE: &str = r#"
[[routes]]
prefix = "/api/admin"
upstream = "{upstream}"
[[routes.require]]
claim = "realm_access.roles"
any_of = ["admin"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloaks_admin_role_lets_alice_through_and_bob_gets_403_with_nothing_upstream() {
    let (app, upstream) = app_with_realm_client(ADMIN_ROUTE).await;

    let alice = logged_in(&app, "alice").await;
    // The rule reads Keycloak's realm roles: the realm file's client maps them into UserInfo
    // (not the ID token), and Vestibule merges UserInfo into the claims at login.
    let roles = &claims(&alice).await["realm_access"]["roles"];
    assert!(
        roles
            .as_array()
            .is_some_and(|roles| roles.iter().any(|role| role == "admin")),
        "alice's claims carry the realm role admin: {roles}"
    );
    let (status, answer) = call(&alice, "/api/admin/alice-call").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The upstream saw alice's token (it asked Keycloak's UserInfo who holds it).
    assert_eq!(answer["caller"]["preferred_username"], "alice", "{answer}");
    assert_eq!(answer["path"], "/alice-call");
    assert!(reached(&upstream, "/alice-call"));

    let bob = logged_in(&app, "bob").await;
    let (status, answer) = call(&bob, "/api/admin/bob-call").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "bob has no admin role: {answer}"
    );
    assert_eq!(answer["error"], "insufficient_permissions", "{answer}");
    assert_eq!(answer["route"], "/api/admin", "{answer}");
    assert!(
        !answer.to_string().contains("default-roles"),
        "the answer never names the user's claims: {answer}"
    );
    assert!(
        !reached(&upstream, "/bob-call"),
        "nothing of bob's call reached the upstream: {:?}",
        upstream.request_lines()
    );
    // Refused by the rule, not for want of a session: bob's own calls on a route without
    // rules pass.
    let (status, answer) = call(&bob, "/api/demo/whoami").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["caller"]["preferred_username"], "bob");
}

const OPEN_ROUTES: &str = r#"
[[routes]]
prefix = "/api/catalogue"
upstream = "{upstream}"
access = "anonymous"

[[routes]]
prefix = "/api/feed"
upstream = "{upstream}"
access = "optional"
"#;

/// The demo API's own refusal of a call without a bearer token (not Vestibule's `401`).
fn refused_by_the_demo_api_for_want_of_a_token((status, answer): &(StatusCode, Value)) -> bool {
    *status == StatusCode::UNAUTHORIZED && answer["error"] == "invalid_token"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_routes_never_send_keycloaks_token_and_optional_ones_send_it_only_with_a_session()
{
    let (app, upstream) = app_with_realm_client(OPEN_ROUTES).await;
    let alice = logged_in(&app, "alice").await;

    // anonymous: alice's session is not used, and no token goes out (the demo API, which
    // needs one, refuses the call itself).
    let answer = call(&alice, "/api/catalogue/signed-in").await;
    assert!(
        refused_by_the_demo_api_for_want_of_a_token(&answer),
        "{answer:?}"
    );
    assert!(reached(&upstream, "/signed-in"));

    // optional, with a session: alice's token, which Keycloak's UserInfo accepts.
    let (status, answer) = call(&alice, "/api/feed/personal").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["caller"]["preferred_username"], "alice");

    // optional, without a session, and with a session that has ended (a stale cookie):
    // forwarded without a token, never Vestibule's 401.
    let stranger = app.browser();
    let answer = call(&stranger, "/api/feed/stranger").await;
    assert!(
        refused_by_the_demo_api_for_want_of_a_token(&answer),
        "{answer:?}"
    );
    assert!(reached(&upstream, "/stranger"));
    let ended = alice.cookie("vestibule").expect("alice's session cookie");
    let (status, body) = alice.logout().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice.set_cookie("vestibule", &ended);
    let answer = call(&alice, "/api/feed/after-logout").await;
    assert!(
        refused_by_the_demo_api_for_want_of_a_token(&answer),
        "{answer:?}"
    );
    assert!(reached(&upstream, "/after-logout"));
}

/// A route for Keycloak's level 2, by the ACR value the step-up client maps to it, and one for
/// an ACR value no map names.
const STEP_UP_ROUTES: &str = r#"
[[routes]]
prefix = "/api/gold"
upstream = "{upstream}"
[routes.step_up]
acr_values = ["gold"]

[[routes]]
prefix = "/api/platinum"
upstream = "{upstream}"
[routes.step_up]
acr_values = ["platinum"]
"#;

/// Vestibule with a client of its own whose browser flow has two levels and whose
/// `acr.loa.map` names them `silver` (1) and `gold` (2).
async fn app_with_step_up_client() -> (KeycloakApp, Relay) {
    let keycloak = Keycloak::shared();
    let upstream = recorded_demo_api(keycloak).await;
    let port = free_port();
    let (client_id, client_secret) = keycloak
        .register_step_up_client(&format!("http://localhost:{port}"))
        .await;
    let routes =
        STEP_UP_ROUTES.replace("{upstream}", &format!("http://127.0.0.1:{}", upstream.port));
    let app = KeycloakApp::start_at(
        port,
        (&client_id, &client_secret),
        REFRESH_SKEW_SECS,
        &routes,
    )
    .await;
    (app, upstream)
}

/// The `login_url` of the `step_up_required` answer to a call to `path`.
async fn step_up_login_url(browser: &Browser, path: &str) -> String {
    let (status, answer) = call(browser, path).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {answer}");
    assert_eq!(answer["error"], "step_up_required", "{answer}");
    answer["login_url"].as_str().unwrap().to_owned()
}

/// Whether a Keycloak login page asks for a password and nothing else (its Password Form).
fn is_a_password_only_page(html: &str) -> bool {
    html.contains("name=\"password\"") && !html.contains("name=\"username\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gold_route_sends_alice_through_keycloaks_second_password_prompt_and_then_passes() {
    let (app, upstream) = app_with_step_up_client().await;
    let password = app.keycloak.password_of("alice");
    let alice = logged_in(&app, "alice").await;
    let first = claims(&alice).await;
    // Keycloak names level 1 by the client's ACR-to-LoA map.
    assert_eq!(first["acr"], "silver", "a password login: {first}");

    let login_url = step_up_login_url(&alice, "/api/gold/before").await;
    assert_eq!(login_url, "/api/auth/login?acr_values=gold");
    assert!(
        !reached(&upstream, "/before"),
        "refused before the upstream"
    );

    let authorization = alice
        .begin_login_at(&format!("{login_url}&returnTo=%2Fvault"))
        .await;
    // Keycloak offers pushed authorization requests, so under oidc.par = "auto" the request,
    // acr_values=gold with it, travels over the back channel and the browser carries a
    // reference only; the stepped-up session's acr below shows what Keycloak was asked.
    let carried: Vec<String> = authorization
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    assert_eq!(
        carried,
        ["client_id", "request_uri"],
        "the request for gold is pushed to Keycloak: {authorization}"
    );
    // Keycloak's SSO cookie covers level 1 only: its flow asks for the password again (level
    // 2's Password Form), and only that.
    let turn = app.keycloak.login_turn().await;
    let (callback, pages) = alice
        .authorize_with_password_seeing_pages(authorization, "alice", &password)
        .await;
    drop(turn);
    assert_eq!(pages.len(), 1, "one prompt for the step-up");
    assert!(
        is_a_password_only_page(&pages[0]),
        "Keycloak asked for the password alone: {}",
        pages[0]
    );
    let back = alice.get(callback.as_str()).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(back.headers()["location"], "/vault");

    let stepped_up = claims(&alice).await;
    assert_eq!(stepped_up["acr"], "gold", "{stepped_up}");
    assert_eq!(
        stepped_up["sid"], first["sid"],
        "the same Keycloak SSO session, stepped up"
    );
    let (status, answer) = call(&alice, "/api/gold/after").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["caller"]["preferred_username"], "alice");
    assert!(reached(&upstream, "/after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_ignoring_an_acr_it_does_not_map_answers_silver_and_vestibule_refuses_the_login() {
    let (app, upstream) = app_with_step_up_client().await;
    let alice = logged_in(&app, "alice").await;
    assert_eq!(claims(&alice).await["acr"], "silver");

    // `platinum` is in no acr.loa.map: Keycloak treats acr_values as a wish, ignores it and
    // signs alice in again from its SSO cookie, at the level she has.
    let login_url = step_up_login_url(&alice, "/api/platinum/before").await;
    assert_eq!(login_url, "/api/auth/login?acr_values=platinum");
    let authorization = alice.begin_login_at(&login_url).await;
    let callback = alice.through_provider_silently(authorization).await;
    let log_from = crate::harness::logs::position();
    let page = alice.get(callback.as_str()).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(
        page.headers()
            .get_all("set-cookie")
            .iter()
            .all(|cookie| !cookie.to_str().unwrap().starts_with("vestibule=")),
        "no new session"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("step_up_not_satisfied"),
        "Vestibule refuses the weaker login: {html}"
    );
    assert!(
        crate::harness::logs::since(log_from).contains("step_up_not_satisfied"),
        "the refusal is audited with its reason"
    );
    // alice keeps the session she had, still at silver, still refused.
    assert_eq!(claims(&alice).await["acr"], "silver");
    assert_eq!(
        step_up_login_url(&alice, "/api/platinum/after").await,
        login_url
    );
    assert!(
        upstream.request_lines().is_empty(),
        "nothing reached the upstream: {:?}",
        upstream.request_lines()
    );
}
