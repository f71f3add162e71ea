//! Issue 31's `kind = "exchange"` through Vestibule against the real Keycloak 26.4.7 (its
//! standard token exchange, set up by `harness/keycloak/exchange.rs`): a route whose upstream
//! gets a token for `orders-api`, checked by the demo API against Keycloak's keys, beside a
//! session route whose token that API refuses; one exchange per expiry for 20 calls on two
//! instances; logout ending the held token in Redis and at Keycloak; and an exchange Keycloak
//! refuses failing its own route only. Proven through Keycloak's events and introspection and
//! through a relay in front of the demo API that saw every bearer token, not Vestibule's word.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::browser::call_concurrently;
use crate::harness::keycloak::exchange::{
    API_CLIENT_ID, API_PATH, API_SCOPE, UNMAPPED_API_CLIENT_ID,
};
use crate::harness::keycloak::{ACCESS_TOKEN_LIFESPAN_SECS, Keycloak};
use crate::harness::relay::Relay;
use crate::harness::{Browser, KeycloakApp, free_port, unix_now, wait_for};

/// Vestibule refreshes (and re-exchanges) this long before a token expires.
const REFRESH_SKEW_SECS: u64 = 2;

/// The exchange route, a session route and an exchange Keycloak refuses, all to the demo API's
/// `/orders` (which wants `aud` = `orders-api`); `{orders}` is that base behind the relay.
fn routes() -> String {
    format!(
        r#"
[[routes]]
prefix = "/api/orders-exchanged"
upstream = "{{orders}}"
[routes.credential]
kind = "exchange"
audience = "{API_CLIENT_ID}"
scope = "{API_SCOPE}"

[[routes]]
prefix = "/api/orders-session"
upstream = "{{orders}}"

[[routes]]
prefix = "/api/billing-exchanged"
upstream = "{{orders}}"
[routes.credential]
kind = "exchange"
audience = "{UNMAPPED_API_CLIENT_ID}"
scope = "{API_SCOPE}"
"#
    )
}

/// A Vestibule with a client of its own that may exchange, and the relay in front of the
/// demo API that its routes go through.
struct Deployment {
    app: KeycloakApp,
    client_id: String,
    upstream: Relay,
}

impl Deployment {
    async fn start() -> Self {
        let keycloak = Keycloak::shared();
        let demo_port = keycloak
            .demo_api_url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("the demo API's port");
        let upstream = Relay::start(demo_port).await;
        let port = free_port();
        let (client_id, client_secret) = keycloak
            .register_exchange_client(&format!("http://localhost:{port}"))
            .await;
        let routes = routes().replace(
            "{orders}",
            &format!("http://127.0.0.1:{}{API_PATH}", upstream.port),
        );
        let app = KeycloakApp::start_at(
            port,
            (&client_id, &client_secret),
            REFRESH_SKEW_SECS,
            &routes,
        )
        .await;
        Self {
            app,
            client_id,
            upstream,
        }
    }

    /// The bearer tokens the demo API received under `/orders/<path>`, each one required.
    fn tokens_to(&self, path: &str) -> Vec<String> {
        self.upstream
            .bearer_tokens_to(&format!("{API_PATH}/{path}"))
            .into_iter()
            .map(|token| token.unwrap_or_else(|| panic!("a call to {path} without a token")))
            .collect()
    }

    /// The one bearer token the demo API received under `/orders/<path>`.
    fn token_to(&self, path: &str) -> String {
        let tokens = self.tokens_to(path);
        assert_eq!(
            tokens.len(),
            1,
            "one request to {path}, whose token the demo API took"
        );
        tokens.into_iter().next().unwrap()
    }

    /// The tokens Vestibule holds for sessions (`vestibule:credential:*`, their locks aside).
    async fn held_keys(&self) -> Vec<String> {
        self.app
            .redis()
            .keys("vestibule:credential:*")
            .await
            .into_iter()
            .filter(|key| !key.ends_with(":lock"))
            .collect()
    }
}

/// A logged-in browser and the Keycloak SSO session (`sid`) behind its Vestibule session.
async fn logged_in(app: &KeycloakApp, username: &str) -> (Browser, String) {
    let browser = app.browser();
    let turn = app.keycloak.login_turn().await;
    browser
        .login_with_password(username, &app.keycloak.password_of(username))
        .await;
    drop(turn);
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let sid = user["claims"]["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("Keycloak's ID token names its session (sid): {user}"))
        .to_owned();
    (browser, sid)
}

/// An API call through Vestibule: (status, JSON body or `null`).
async fn call(browser: &Browser, path: &str) -> (StatusCode, Value) {
    let response = browser.api_get(path).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Keycloak's events of `kind` for `sid` once there are at least `at_least` (events are
/// written as the grants finish): all of them, to be counted exactly.
async fn events_once(sid: &str, kind: &str, at_least: usize) -> Vec<Value> {
    let keycloak = Keycloak::shared();
    wait_for(
        &format!("{at_least} {kind} event(s)"),
        Duration::from_secs(10),
        || async move {
            let events = keycloak.events(sid, kind).await;
            (events.len() >= at_least).then_some(events)
        },
    )
    .await
}

/// A JWT's claims (its payload, not verified: the demo API and Keycloak do that).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("a JSON payload")
}

/// `aud` as a list (a single audience is a string).
fn audiences(aud: &Value) -> Vec<String> {
    match aud {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|aud| aud.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn is_for_the_orders_api(aud: &Value) -> bool {
    audiences(aud).contains(&API_CLIENT_ID.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_api_accepts_the_exchange_routes_token_and_refuses_the_session_routes() {
    let deployment = Deployment::start().await;
    let keycloak = deployment.app.keycloak;
    let log_from = crate::harness::logs::position();
    let (alice, sid) = logged_in(&deployment.app, "alice").await;

    let (status, answer) = call(&alice, "/api/orders-exchanged/first").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The demo API verified the token with Keycloak's JWKS and found its audience in `aud`.
    assert!(is_for_the_orders_api(&answer["token"]["aud"]), "{answer}");
    assert_eq!(answer["token"]["azp"], deployment.client_id.as_str());
    assert_eq!(answer["caller"]["preferred_username"], "alice", "{answer}");
    assert_eq!(answer["path"], format!("{API_PATH}/first"));
    let exchanged = deployment.token_to("first");
    let exchanged_claims = claims(&exchanged);
    assert_eq!(exchanged_claims["sid"], sid.as_str(), "{exchanged_claims}");
    let exchanges = events_once(&sid, "TOKEN_EXCHANGE", 1).await;
    assert_eq!(exchanges.len(), 1, "one exchange: {exchanges:#?}");
    assert_eq!(exchanges[0]["details"]["audience"], API_CLIENT_ID);
    assert_eq!(exchanges[0]["clientId"], deployment.client_id.as_str());

    // The session route sends the login's own token, which the demo API refuses for want of
    // the audience. Its `invalid_token` makes Vestibule refresh the login token once and try
    // again: two requests, two login tokens, both refused.
    let (status, answer) = call(&alice, "/api/orders-session/own").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"], "invalid_token", "{answer}");
    assert!(
        answer["error_description"]
            .as_str()
            .is_some_and(|reason| reason.ends_with(&format!("does not name {API_CLIENT_ID}"))),
        "refused by the demo API for its audience: {answer}"
    );
    let own = deployment.tokens_to("own");
    assert_eq!(own.len(), 2, "the call and its retry");
    assert_ne!(own[0], own[1], "the retry had the refreshed login token");
    for token in &own {
        assert!(!is_for_the_orders_api(&claims(token)["aud"]));
        assert_ne!(*token, exchanged);
    }
    let refreshes = events_once(&sid, "REFRESH_TOKEN", 1).await;
    assert_eq!(
        refreshes.len(),
        1,
        "one refresh for the retry: {refreshes:#?}"
    );

    // The exchanged token is held: the next call sends it again, with no new exchange.
    let (status, answer) = call(&alice, "/api/orders-exchanged/again").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(deployment.token_to("again"), exchanged);
    assert_eq!(keycloak.token_exchange_events(&sid).await.len(), 1);

    let log = crate::harness::logs::since(log_from);
    assert!(
        !log.contains(&exchanged) && !log.contains(exchanged.split('.').nth(2).unwrap()),
        "the exchanged token never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_calls_on_two_instances_make_one_keycloak_exchange_per_expiry() {
    let mut deployment = Deployment::start().await;
    let second = deployment.app.start_another_instance().await;
    let keycloak = deployment.app.keycloak;
    let (alice, sid) = logged_in(&deployment.app, "alice").await;
    let other = Browser::with_session(&second, &alice.cookie("vestibule").unwrap());
    let browsers = [alice.clone(), other];

    let first = call_concurrently(&browsers, 20, "/api/orders-exchanged/round-1").await;
    assert!(
        first.iter().all(|status| *status == StatusCode::OK),
        "{first:?}"
    );
    let exchanges = events_once(&sid, "TOKEN_EXCHANGE", 1).await;
    assert_eq!(
        exchanges.len(),
        1,
        "20 calls on two instances, one exchange: {exchanges:#?}"
    );
    let first_tokens: HashSet<String> = deployment.tokens_to("round-1").into_iter().collect();
    assert_eq!(
        first_tokens.len(),
        1,
        "every call had the one exchanged token"
    );
    let first_token = first_tokens.into_iter().next().unwrap();
    let first_claims = claims(&first_token);
    let expires_at = first_claims["exp"].as_u64().expect("exp");
    assert_eq!(
        expires_at - first_claims["iat"].as_u64().expect("iat"),
        ACCESS_TOKEN_LIFESPAN_SECS,
        "it lives as long as the realm's access tokens"
    );

    // Until the held token is due (Vestibule noted its expiry on receipt, at most a second
    // after Keycloak's `iat`): the login's own token, older, is due by then as well.
    wait_for(
        "the exchanged token to be due",
        Duration::from_secs(ACCESS_TOKEN_LIFESPAN_SECS + 10),
        || async move { (unix_now() + 1 >= expires_at).then_some(()) },
    )
    .await;
    let refreshes_before = keycloak.events(&sid, "REFRESH_TOKEN").await.len();
    let second_round = call_concurrently(&browsers, 20, "/api/orders-exchanged/round-2").await;
    assert!(
        second_round.iter().all(|status| *status == StatusCode::OK),
        "{second_round:?}"
    );
    let exchanges = events_once(&sid, "TOKEN_EXCHANGE", 2).await;
    assert_eq!(
        exchanges.len(),
        2,
        "one more exchange for the expiry, across both instances: {exchanges:#?}"
    );
    let second_tokens: HashSet<String> = deployment.tokens_to("round-2").into_iter().collect();
    assert_eq!(
        second_tokens.len(),
        1,
        "every call of the second round had the new token"
    );
    assert!(!second_tokens.contains(&first_token));
    // The subject of the new exchange was the login's token, refreshed once for it.
    assert_eq!(
        keycloak.events(&sid, "REFRESH_TOKEN").await.len(),
        refreshes_before + 1,
        "one refresh of the expired login token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_drops_the_held_exchange_token_and_keycloak_calls_it_inactive() {
    let deployment = Deployment::start().await;
    let keycloak = deployment.app.keycloak;
    let (bob, sid) = logged_in(&deployment.app, "bob").await;
    let (status, answer) = call(&bob, "/api/orders-exchanged/before").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let exchanged = deployment.token_to("before");
    let seen = keycloak.introspect_as_api(&exchanged).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert!(is_for_the_orders_api(&seen["aud"]), "{seen}");
    let held = deployment.held_keys().await;
    assert_eq!(held.len(), 1, "one held token: {held:?}");

    let (status, body) = bob.logout().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let held = deployment.held_keys().await;
    assert!(
        held.is_empty(),
        "the held token ends with the session: {held:?}"
    );
    assert!(
        deployment
            .app
            .redis()
            .keys("vestibule:credential:*")
            .await
            .is_empty(),
        "nothing of it is left"
    );
    // Vestibule revoked the login's refresh token and, in the background, the exchanged
    // access token it held: Keycloak calls it inactive before the SSO session ends.
    let expires_at = claims(&exchanged)["exp"].as_u64().expect("exp");
    if unix_now() + 2 < expires_at {
        let exchanged = &exchanged;
        let keycloak = &keycloak;
        wait_for(
            "Keycloak to call the revoked exchanged token inactive",
            Duration::from_secs(10),
            || async move {
                let seen = keycloak.introspect_as_api(exchanged).await;
                // Inactive only because it expired would prove nothing.
                assert!(
                    unix_now() < expires_at,
                    "the exchanged token expired before Keycloak called it revoked"
                );
                (seen["active"] == false).then_some(())
            },
        )
        .await;
    }
    // The end-session URL Vestibule answers, followed by bob's browser, ends his SSO session
    // at Keycloak, and the token with it.
    let end_session = body["end_session_url"]
        .as_str()
        .unwrap_or_else(|| panic!("Keycloak has an end-session endpoint: {body}"));
    let response = bob.get(end_session).await;
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "Keycloak logged bob out"
    );
    assert!(!keycloak.session_ids("bob").await.contains(&sid));
    let seen = keycloak.introspect_as_api(&exchanged).await;
    assert_eq!(
        seen["active"], false,
        "the exchanged token ended with the session it came from: {seen}"
    );
    let (status, _) = call(&bob, "/api/orders-exchanged/after").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        deployment
            .upstream
            .bearer_tokens_to("/orders/after")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_keycloak_refuses_is_a_403_for_its_route_only() {
    let deployment = Deployment::start().await;
    let keycloak = deployment.app.keycloak;
    let (alice, sid) = logged_in(&deployment.app, "alice").await;

    let (status, answer) = call(&alice, "/api/billing-exchanged/refused").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"], "credential_refused", "{answer}");
    assert_eq!(answer["route"], "/api/billing-exchanged", "{answer}");
    assert!(
        !answer.to_string().contains("invalid_request")
            && !answer.to_string().contains("not available"),
        "Keycloak's words stay in the log: {answer}"
    );
    assert!(
        deployment
            .upstream
            .bearer_tokens_to("/orders/refused")
            .is_empty(),
        "nothing reached the upstream without its credential"
    );
    assert!(keycloak.token_exchange_events(&sid).await.is_empty());

    // The session and its other routes go on.
    let (status, user) = alice.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["claims"]["preferred_username"], "alice");
    let (status, answer) = call(&alice, "/api/orders-exchanged/fine").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(is_for_the_orders_api(&answer["token"]["aud"]), "{answer}");
    let (status, answer) = call(&alice, "/api/demo/whoami").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["caller"]["preferred_username"], "alice");
    // And the refused route stays refused, without ending anything.
    let (status, answer) = call(&alice, "/api/billing-exchanged/again").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(alice.user().await.0, StatusCode::OK);
}
