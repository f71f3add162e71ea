//! DPoP between Vestibule and the provider (`oidc.dpop`, RFC 9449), against the real
//! oidc-provider: each session's tokens bound to a key of its own (`cnf.jkt` as the provider's
//! introspection reports it, and the `dpop_jkt` of its authorization request), the provider's
//! nonce challenges answered, refreshes bound to the same key, UserInfo read with a proof, a
//! stolen bound token refused as Bearer; `off` (the default) exactly as before; `auto` with a
//! provider without DPoP working with Bearer tokens; `required` with one failing the login
//! with a page that says why.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vestibule::oidc::dpop::DpopKey;
use vestibule::session::store::RedisTls;
use vestibule::session::{MasterKey, SessionCookie, SessionRecord, Sessions, Store};

use crate::harness::dpop_upstream::DpopUpstream;
use crate::harness::{Browser, ENCRYPTION_KEY, TestApp, TestAppBuilder};

/// An app with `oidc.dpop = mode` (`None`: not set) at a provider with `OP_DPOP = op`, whose
/// access tokens live 3 s.
fn app_with(mode: Option<&str>, op: &'static str) -> TestAppBuilder {
    let builder = TestApp::builder()
        .access_token_ttl(3)
        .refresh_skew(1)
        .provider_options(|options| options.dpop = Some(op));
    match mode {
        Some(mode) => builder.oidc_toml(&format!("dpop = \"{mode}\"\n")),
        None => builder,
    }
}

/// The session record of `browser`'s session, opened as Vestibule opens it.
async fn record_of(app: &TestApp, browser: &Browser) -> SessionRecord {
    let store = Store::redis(&app.redis().topology(), &RedisTls::default(), None).unwrap();
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(ENCRYPTION_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    let sessions = Sessions::new(
        store,
        MasterKey::new(key),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    );
    let cookie = SessionCookie::parse(&browser.cookie("vestibule").unwrap()).unwrap();
    SessionRecord::clone(&sessions.load(&cookie).await.unwrap().unwrap().record)
}

/// The thumbprint of the session key `record` keeps.
fn thumbprint_of(record: &SessionRecord) -> String {
    let key: DpopKey = record
        .tokens
        .dpop_key
        .as_ref()
        .expect("the record keeps the session's key")
        .key()
        .unwrap();
    key.thumbprint().to_owned()
}

/// The provider's DPoP counters (`nonce_challenges`, `bound_token_responses`).
async fn dpop_stats(app: &TestApp) -> Value {
    reqwest::get(format!("{}/__test/dpop", app.provider.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `dpop_jkt` of each authorization request the provider received, in order.
async fn authorization_jkts(app: &TestApp) -> Vec<Value> {
    app.provider.stats().await["authorization_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|request| request["params"]["dpop_jkt"].clone())
        .collect()
}

/// What `/readyz` says was negotiated for DPoP with the (only) provider.
async fn negotiated_dpop(app: &TestApp) -> Value {
    let body: Value = app.browser().get("/readyz").await.json().await.unwrap();
    let negotiated = body["negotiated"].as_object().expect("negotiated: {body}");
    assert_eq!(negotiated.len(), 1, "{body}");
    negotiated.values().next().unwrap()["dpop"].clone()
}

#[tokio::test]
async fn under_auto_each_session_binds_its_tokens_to_its_own_key_answering_nonce_challenges() {
    // An API that accepts only DPoP-bound tokens with a valid proof, as a resource server does.
    let api = DpopUpstream::start().await;
    let app = app_with(Some("auto"), "nonce")
        .extra_toml(&format!(
            "[[routes]]\nprefix = \"/api/bound\"\nupstream = \"{}\"\n",
            api.base_url
        ))
        .start()
        .await;
    app.provider
        .set_userinfo(json!({ "claims": { "nickname": "ally" } }))
        .await;
    let alice = app.browser();
    alice.login("alice").await;
    let bob = app.browser();
    bob.login("bob").await;

    let first = record_of(&app, &alice).await;
    let other = record_of(&app, &bob).await;
    assert!(first.tokens.dpop_bound && other.tokens.dpop_bound);
    let key = thumbprint_of(&first);
    assert_ne!(key, thumbprint_of(&other), "one key per session");
    // The code was bound to the key (RFC 9449 §10), the token too.
    assert_eq!(
        authorization_jkts(&app).await,
        [json!(key), json!(thumbprint_of(&other))]
    );
    let seen = app.provider.introspect(&first.tokens.access_token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["token_type"], "DPoP", "{seen}");
    assert_eq!(seen["cnf"]["jkt"], key, "{seen}");
    let seen = app.provider.introspect(&other.tokens.access_token).await;
    assert_eq!(seen["cnf"]["jkt"], thumbprint_of(&other), "{seen}");
    // The provider asked for a nonce once; this instance kept it for every later request
    // (the second login's exchange and both UserInfo reads).
    let stats = dpop_stats(&app).await;
    assert_eq!(stats["nonce_challenges"], 1, "{stats}");
    assert_eq!(stats["bound_token_responses"], 2, "{stats}");
    // UserInfo was read with the bound token (and its proof).
    let (_, user) = alice.user().await;
    assert_eq!(user["claims"]["nickname"], "ally", "{user}");
    assert_eq!(negotiated_dpop(&app).await, "on");

    // A thief with the access token alone gets nothing from the provider.
    let userinfo = reqwest::Client::new()
        .get(format!("{}/me", app.provider.issuer))
        .bearer_auth(&first.tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        userinfo.status(),
        StatusCode::UNAUTHORIZED,
        "stolen token as Bearer"
    );

    // The refresh proves possession of the same key: the new token is bound to it again.
    alice.wait_past_access_token_expiry().await;
    assert_eq!(
        alice.api_get("/api/bound/after-expiry").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let refreshed = record_of(&app, &alice).await;
    assert_ne!(refreshed.tokens.access_token, first.tokens.access_token);
    assert!(refreshed.tokens.dpop_bound);
    assert_eq!(
        thumbprint_of(&refreshed),
        key,
        "the same key across refreshes"
    );
    let seen = app
        .provider
        .introspect(&refreshed.tokens.access_token)
        .await;
    assert_eq!(seen["cnf"]["jkt"], key, "{seen}");
    assert_eq!(dpop_stats(&app).await["bound_token_responses"], 3);
    // The API got the refreshed token as DPoP, with a proof of the session's key.
    let call = api.calls().pop().expect("the API was called");
    assert_eq!(call.scheme.as_deref(), Some("DPoP"));
    assert_eq!(
        call.token.as_deref(),
        Some(refreshed.tokens.access_token.as_str())
    );
    assert_eq!(call.verdict.expect("a valid proof").thumbprint, key);

    // Logout revokes the (bound) tokens as before: RFC 7009 asks for no proof.
    let (status, _) = alice.logout().await;
    assert_eq!(status, StatusCode::OK);
    let stats = app.provider.stats_once_revoked(1).await;
    assert_eq!(stats["revocation_errors"], 0, "{stats}");
}

#[tokio::test]
async fn off_by_default_tokens_are_bearer_tokens_exactly_as_before() {
    // oidc-provider offers DPoP out of the box: Vestibule must not use it unasked.
    let app = app_with(None, "1").start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let record = record_of(&app, &alice).await;
    assert!(record.tokens.dpop_key.is_none() && !record.tokens.dpop_bound);
    assert_eq!(authorization_jkts(&app).await, [Value::Null], "no dpop_jkt");
    let seen = app.provider.introspect(&record.tokens.access_token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["token_type"], "Bearer", "{seen}");
    assert!(seen.get("cnf").is_none(), "{seen}");
    assert_eq!(dpop_stats(&app).await["bound_token_responses"], 0);
    assert_eq!(negotiated_dpop(&app).await, "off");
}

#[tokio::test]
async fn under_auto_a_provider_without_dpop_gets_bearer_logins_that_work() {
    let app = app_with(Some("auto"), "0").start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let record = record_of(&app, &alice).await;
    assert!(record.tokens.dpop_key.is_none() && !record.tokens.dpop_bound);
    assert_eq!(authorization_jkts(&app).await, [Value::Null]);
    assert_eq!(
        alice.api_get("/api/orders/bearer").await.status(),
        StatusCode::OK
    );
    assert!(app.upstream.seen()[0].token_active);
    assert_eq!(negotiated_dpop(&app).await, "off");
}

#[tokio::test]
async fn under_required_a_provider_without_dpop_fails_the_login_with_a_page_saying_so() {
    let app = app_with(Some("required"), "0").start().await;
    let browser = app.browser();
    let response = browser.get("/api/auth/login").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(page.contains("Login failed"), "{page}");
    assert!(page.contains("(DPoP)"), "{page}");
    assert!(page.contains("dpop_unsupported"), "{page}");
    assert!(
        authorization_jkts(&app).await.is_empty(),
        "the browser was never sent to the provider"
    );
    assert!(app.redis().session_keys().await.is_empty());
    assert_eq!(negotiated_dpop(&app).await, "not_offered");
}

#[tokio::test]
async fn under_required_a_provider_requiring_dpop_bound_tokens_logs_in_bound() {
    let app = app_with(Some("required"), "required").start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let record = record_of(&app, &alice).await;
    assert!(record.tokens.dpop_bound);
    let seen = app.provider.introspect(&record.tokens.access_token).await;
    assert_eq!(seen["cnf"]["jkt"], thumbprint_of(&record), "{seen}");
    assert_eq!(negotiated_dpop(&app).await, "on");
}
