//! Keycloak 26.4.7 with a client that requires what FAPI 2.0 asks of a client (issue 33): DPoP
//! bound access tokens, pushed authorization requests and a signed-JWT client authentication
//! with no secret at all (`harness/keycloak/fapi.rs`, set through the admin API). Vestibule runs
//! with `oidc.dpop = "required"`, `oidc.par = "required"` and `oidc.client_auth_method =
//! "private_key_jwt"`; its API route leads to the harness's resource server, which takes only
//! DPoP-bound tokens and checks every proof and the token's `cnf.jkt` (`harness/dpop_upstream.rs`,
//! reading `cnf` from Keycloak's JWT access token). Proven through Keycloak's own answers and
//! events and through what the resource server accepted and refused.

use std::ffi::OsStr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::browser::run_script_at;
use crate::harness::dpop_upstream::{DpopUpstream, DpopUpstreamOptions, jwt_claims};
use crate::harness::keycloak::{ACCESS_TOKEN_LIFESPAN_SECS, Keycloak};
use crate::harness::{Browser, KeycloakApp, unix_now, wait_for};

/// Vestibule refreshes this long before the access token expires.
const REFRESH_SKEW_SECS: u64 = 2;

/// The route to the resource server (the demo page calls `<prefix>/hello`).
const API: &str = "/api/bank";

/// The resource server: every proof checked, and the token bound to the proof's key.
async fn resource_server() -> DpopUpstream {
    DpopUpstream::start_with(DpopUpstreamOptions {
        cnf_in_jwt: true,
        ..DpopUpstreamOptions::default()
    })
    .await
}

/// One call the resource server accepted.
#[derive(Clone, Debug)]
struct AcceptedCall {
    /// Method and path as the server saw it, e.g. `GET /v1/hello`.
    request: String,
    /// The access token (from `Authorization: DPoP <token>`).
    access_token: String,
    /// The RFC 7638 thumbprint of the proof's key.
    jkt: String,
    /// The proof, as received.
    proof: String,
}

/// The calls `upstream` accepted, oldest first.
fn accepted(upstream: &DpopUpstream) -> Vec<AcceptedCall> {
    upstream
        .calls()
        .into_iter()
        .filter_map(|call| {
            let facts = call.verdict.ok()?;
            Some(AcceptedCall {
                request: format!("{} {}", call.method, call.path_and_query),
                access_token: call.token?,
                jkt: facts.thumbprint,
                proof: call.proof?,
            })
        })
        .collect()
}

/// Why each call `upstream` refused was refused, oldest first.
fn refusals(upstream: &DpopUpstream) -> Vec<String> {
    upstream
        .calls()
        .into_iter()
        .filter_map(|call| call.verdict.err())
        .collect()
}

/// Vestibule with the sender-constrained client, its only route leading to `upstream`.
async fn start(upstream: &DpopUpstream) -> KeycloakApp {
    let routes = format!(
        r#"[{{ prefix = "{API}", upstream = "{}" }}]"#,
        upstream.base_url
    );
    KeycloakApp::start_sender_constrained(REFRESH_SKEW_SECS, &routes).await
}

/// The client id of `app` (from its ID token's `azp`, as Keycloak names it).
fn client_of(user: &Value) -> String {
    user["claims"]["azp"]
        .as_str()
        .unwrap_or_else(|| panic!("the ID token names its client (azp): {user}"))
        .to_owned()
}

/// Logs `username` in with a new browser, checking on the way that the browser is sent to
/// Keycloak with nothing but `client_id` and the pushed request's `request_uri`; returns the
/// browser and the Keycloak SSO session (`sid`).
async fn logged_in(app: &KeycloakApp, username: &str) -> (Browser, String) {
    let browser = app.browser();
    let authorization = browser.begin_login(None).await;
    let mut names: Vec<String> = authorization
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["client_id", "request_uri"],
        "PAR: only the client and the pushed request's handle pass through the browser: \
         {authorization}"
    );
    let turn = app.keycloak.login_turn().await;
    let callback = browser
        .authorize_with_password(authorization, username, &app.keycloak.password_of(username))
        .await;
    drop(turn);
    let landed = browser.get(callback.as_str()).await;
    assert_eq!(
        landed.status(),
        StatusCode::SEE_OTHER,
        "the callback succeeds"
    );
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let sid = user["claims"]["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("Keycloak's ID token names its session (sid): {user}"))
        .to_owned();
    (browser, sid)
}

/// One API call through Vestibule that the resource server must accept; returns what it saw.
async fn bound_call(browser: &Browser, upstream: &DpopUpstream, path: &str) -> AcceptedCall {
    let before = accepted(upstream).len();
    let response = browser.api_get(&format!("{API}{path}")).await;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::OK,
        "the resource server accepts the DPoP-bound call: {body}; its refusals: {:?}",
        refusals(upstream)
    );
    let accepted = accepted(upstream);
    assert_eq!(accepted.len(), before + 1, "one call arrived");
    accepted[before].clone()
}

/// What a resource server can check of a token Keycloak issued to `client_id`: its issuer, its
/// client and the key it is bound to (`cnf.jkt`), which must be the key of `call`'s proof.
fn assert_bound_token(keycloak: &Keycloak, client_id: &str, call: &AcceptedCall) {
    let claims = jwt_claims(&call.access_token).expect("Keycloak's access token is a JWT");
    assert_eq!(claims["iss"], keycloak.issuer(), "{claims}");
    assert_eq!(claims["azp"], client_id, "{claims}");
    assert_eq!(
        claims["cnf"]["jkt"], call.jkt,
        "the token is bound to the session's key: {claims}"
    );
}

/// A thief holding a copy of `call`'s token (and even its proof) gets nowhere: Keycloak's
/// userinfo refuses it as a bearer token, the resource server refuses it without a proof and
/// refuses the replayed proof.
async fn assert_stolen_token_is_useless(
    keycloak: &Keycloak,
    upstream: &DpopUpstream,
    call: &AcceptedCall,
) {
    let (status, challenge, body) = keycloak.userinfo_with_bearer(&call.access_token).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "Keycloak refuses the bound token without a proof: {challenge} {body}"
    );
    let http = reqwest::Client::new();
    let url = format!("{}/hello", upstream.base_url);
    let as_bearer = http
        .get(&url)
        .bearer_auth(&call.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), StatusCode::UNAUTHORIZED);
    let replayed = http
        .get(&url)
        .header("authorization", format!("DPoP {}", call.access_token))
        .header("dpop", &call.proof)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let refusals = refusals(upstream);
    assert!(
        refusals
            .iter()
            .any(|reason| reason.contains("the Bearer scheme"))
            && refusals.iter().any(|reason| reason.contains("replayed")),
        "the resource server says why: {refusals:?}"
    );
}

/// Keycloak's events of `kind` for `sid`, once at least one has arrived.
async fn events_once_there(keycloak: &Keycloak, sid: &str, kind: &str) -> Vec<Value> {
    wait_for(
        &format!("Keycloak's {kind} event"),
        Duration::from_secs(15),
        || async move {
            let events = keycloak.events(sid, kind).await;
            (!events.is_empty()).then_some(events)
        },
    )
    .await
}

/// Every grant event was authenticated with a signed JWT (the client has no secret).
fn assert_signed_jwt(events: &[Value]) {
    for event in events {
        assert_eq!(
            event["details"]["client_auth_method"], "client-jwt",
            "Keycloak authenticated Vestibule by its client assertion: {event}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_signs_in_with_par_a_signed_jwt_and_dpop_in_chromium_and_a_stolen_token_is_useless() {
    let upstream = resource_server().await;
    let app = start(&upstream).await;
    let keycloak = app.keycloak;
    let password = keycloak.password_of("alice");
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
    assert_eq!(report["claims"]["preferred_username"], "alice");
    let sid = report["claims"]["sid"].as_str().expect("sid").to_owned();
    let client_id = report["claims"]["azp"].as_str().expect("azp").to_owned();

    // The page's API call reached the resource server with a valid proof and a bound token.
    assert_eq!(
        report["api"]["status"],
        200,
        "{}; refusals: {:?}",
        report["api"],
        refusals(&upstream)
    );
    let calls = accepted(&upstream);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].request, "GET /v1/hello");
    assert_bound_token(keycloak, &client_id, &calls[0]);

    // The login pushed its request over the back channel and authenticated with a signed JWT.
    assert!(
        app.back
            .requests_to("/realms/vestibule/protocol/openid-connect/ext/par/request")
            >= 1,
        "the authorization request was pushed: {:?}",
        app.back.request_lines()
    );
    assert_signed_jwt(&events_once_there(keycloak, &sid, "CODE_TO_TOKEN").await);

    assert_stolen_token_is_useless(keycloak, &upstream, &calls[0]).await;

    // The script logged out through Keycloak's end-session endpoint and landed home, logged
    // out; Keycloak's SSO session is gone.
    assert_eq!(
        report["endSession"]["status"], 302,
        "{}",
        report["endSession"]
    );
    assert!(
        report["landedOn"]
            .as_str()
            .is_some_and(|url| url.starts_with(&app.url)),
        "{}",
        report["landedOn"]
    );
    wait_for(
        "Keycloak's SSO session to end",
        Duration::from_secs(15),
        || {
            let sid = sid.clone();
            async move { (!keycloak.session_ids("alice").await.contains(&sid)).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_hold_their_own_keys_through_refresh_and_logout_ends_only_its_own() {
    let upstream = resource_server().await;
    let app = start(&upstream).await;
    let keycloak = app.keycloak;
    let (alice, alice_sid) = logged_in(&app, "alice").await;
    let (bob, _) = logged_in(&app, "bob").await;
    let (_, user) = alice.user().await;
    let client_id = client_of(&user);

    let first = bound_call(&alice, &upstream, "/first").await;
    let bobs = bound_call(&bob, &upstream, "/first").await;
    assert_bound_token(keycloak, &client_id, &first);
    assert_bound_token(keycloak, &client_id, &bobs);
    assert_ne!(first.jkt, bobs.jkt, "each session has a key of its own");

    // Past the access token's lifetime (less the skew) the next call refreshes first, with a
    // proof by the same key: the new token is bound to the session's key, as the old one was.
    let (_, user) = alice.user().await;
    let expires_at = user["session"]["access_token_expires_at"]
        .as_u64()
        .expect("access token expiry");
    wait_for(
        "the access token to be due for refresh",
        Duration::from_secs(ACCESS_TOKEN_LIFESPAN_SECS + 10),
        || async move { (unix_now() + REFRESH_SKEW_SECS > expires_at).then_some(()) },
    )
    .await;
    let refreshed = bound_call(&alice, &upstream, "/after-refresh").await;
    assert_ne!(refreshed.access_token, first.access_token, "a new token");
    assert_eq!(refreshed.jkt, first.jkt, "bound to the same session key");
    assert_bound_token(keycloak, &client_id, &refreshed);
    let refreshes = events_once_there(keycloak, &alice_sid, "REFRESH_TOKEN").await;
    assert_eq!(refreshes.len(), 1, "{refreshes:#?}");
    assert_signed_jwt(&refreshes);
    assert!(
        keycloak
            .events(&alice_sid, "REFRESH_TOKEN_ERROR")
            .await
            .is_empty(),
        "no refresh was refused"
    );

    // Alice's logout revokes at Keycloak (authenticated with a signed JWT) and ends her
    // session only; Bob's key and tokens keep working.
    let (status, body) = alice.logout().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(alice.user().await.0, StatusCode::UNAUTHORIZED);
    let revocations = events_once_there(keycloak, &alice_sid, "REVOKE_GRANT").await;
    assert_eq!(revocations.len(), 1, "{revocations:#?}");
    assert!(
        keycloak
            .events(&alice_sid, "REVOKE_GRANT_ERROR")
            .await
            .is_empty(),
        "the revocation was accepted"
    );
    let after = alice.api_get(&format!("{API}/after-logout")).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let bobs_again = bound_call(&bob, &upstream, "/after-alice-left").await;
    assert_eq!(bobs_again.jkt, bobs.jkt);
}
