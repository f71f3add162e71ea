//! Issuer shapes other than one exact issuer, and token responses other providers send: a
//! multi-tenant provider (Entra ID discovered through `/organizations`: its discovery names the
//! issuer template `…/{tenantid}/v2.0`, its ID tokens their `tid` and that tenant's issuer),
//! issuer aliases (Google's `accounts.google.com` beside `https://accounts.google.com`), and
//! `expires_in` as a JSON string (Entra ID v1, B2C). The provider is oidc-provider made to
//! answer so (`OP_TENANT`, `OP_ID_TOKEN_ISS`, `OP_EXPIRES_IN_AS_STRING`,
//! `/__test/token-response`): simulations of documented behaviour, not live tenants.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backchannel_logout::{alive, post_logout_token};
use crate::harness::{
    TestApp, TestAppBuilder, free_port, logs, unix_now, wait_for, wait_for_the_next_second,
};
use crate::userinfo::audit_event_of;

/// The tenant the provider's ID tokens name.
const TENANT: &str = "tenant-a";

/// A stack whose provider acts as a multi-tenant one (tenant [`TENANT`]), discovered through
/// `<issuer>/organizations/v2.0`, accepting the tenants `allowed`.
fn multi_tenant(allowed: &[&str]) -> TestAppBuilder {
    TestApp::builder()
        .provider_options(|options| options.tenant = Some(TENANT))
        .issuer_path("/organizations/v2.0")
        .oidc_toml(&format!("allowed_tenants = {}\n", json!(allowed)))
}

/// The issuer of `tenant` under the provider's template.
fn tenant_issuer(app: &TestApp, tenant: &str) -> String {
    format!("{}/{tenant}/v2.0", app.provider.issuer)
}

/// A login refused as a bad answer from the provider: `502`, the page saying so, the audit
/// trail's `login_failed` with reason `id_token_invalid`, no session, nothing stored.
async fn assert_login_refused(app: &TestApp, what: &str) {
    // The trail keeps one failed login a second per network and reason: in a second of its own,
    // this one is recorded.
    wait_for_the_next_second().await;
    let from = logs::position();
    let browser = app.browser();
    let outcome = browser.login_as("alice", None).await;
    let status = outcome.response.status();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{what}");
    let audit = audit_event_of(from, &outcome.response, "login_failed").await;
    let body = outcome.response.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{what}: {body}");
    assert!(body.contains("could not be verified"), "{what}: {body}");
    assert_eq!(audit["reason"], "id_token_invalid", "{what}: {audit}");
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED, "{what}");
    assert!(
        app.redis().session_keys().await.is_empty(),
        "{what}: nothing stored"
    );
}

/// An allowed tenant logs in, and its session refreshes: the ID tokens name the tenant's own
/// issuer (the template with their `tid`), not the configured `/organizations` one.
#[tokio::test]
async fn an_allowed_tenant_logs_in_and_refreshes() {
    let app = multi_tenant(&["tenant-b", TENANT])
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["claims"]["tid"], TENANT, "{user}");
    assert_eq!(user["claims"]["iss"], tenant_issuer(&app, TENANT), "{user}");
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/after").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "the session lives on: {user}");
    assert_eq!(user["claims"]["tid"], TENANT, "{user}");
}

/// A tenant not in `oidc.allowed_tenants`, a token without `tid`, and a token whose `iss` is
/// another (allowed) tenant's issuer than its own `tid`'s are each refused like any invalid ID
/// token; the same provider logs the allowed tenant in.
#[tokio::test]
async fn a_tenant_not_allowed_or_an_iss_not_its_own_is_refused() {
    let app = multi_tenant(&["tenant-b"]).start().await;
    assert_login_refused(&app, "tenant-a is not allowed").await;
    app.provider
        .set_id_token_claims(json!({ "tid": "tenant-b" }))
        .await;
    assert_login_refused(&app, "iss of tenant-a with the tid tenant-b").await;
    app.provider
        .set_id_token_claims(json!({ "tid": null, "iss": tenant_issuer(&app, "tenant-b") }))
        .await;
    assert_login_refused(&app, "no tid").await;
    app.provider
        .set_id_token_claims(json!({ "tid": "tenant-b", "iss": tenant_issuer(&app, "tenant-b") }))
        .await;
    app.browser().login("alice").await;
}

/// A refreshed ID token of another tenant (allowed, properly signed) ends the session unused:
/// a refresh must keep the login's tenant (OIDC Core §12.2).
#[tokio::test]
async fn a_refreshed_id_token_of_another_tenant_ends_the_session() {
    let app = multi_tenant(&[TENANT, "tenant-b"])
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/api/orders/first").await.status(),
        StatusCode::OK
    );
    app.provider
        .set_id_token_claims(json!({ "tid": "tenant-b", "iss": tenant_issuer(&app, "tenant-b") }))
        .await;
    crate::refresh::assert_the_refresh_ends_the_session_unused(&app, &browser).await;
}

/// With `oidc.allowed_tenants` empty (single-tenant), a discovery document naming a tenant
/// template is refused with an error that names the key: the instance never becomes ready and
/// logs no one in.
#[tokio::test]
async fn a_tenant_template_without_allowed_tenants_is_refused_at_start_up() {
    let from = logs::position();
    let app = multi_tenant(&[]).start().await;
    let (status, body) = probe_ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["provider"], "not_discovered", "{body}");
    let log = logs::since(from);
    assert!(
        log.lines()
            .any(|line| line.contains("multi-tenant template")
                && line.contains("oidc.allowed_tenants")),
        "start-up names the key: {log}"
    );
    let login = app
        .browser()
        .get(format!("{}/api/auth/login", app.url))
        .await;
    assert_eq!(
        login.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no login begins"
    );
}

async fn probe_ready(app: &TestApp) -> (StatusCode, Value) {
    let response = reqwest::get(format!("{}/readyz", app.url)).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An ID token naming another spelling of the issuer (the provider signs them so) is refused
/// unless `oidc.issuer_aliases` lists that spelling, exactly.
#[tokio::test]
async fn an_issuer_alias_in_id_tokens_is_accepted_only_when_configured() {
    const SPELLING: &str = "https://accounts.example";
    let other_spelling = |builder: TestAppBuilder| {
        builder.provider_options(|options| options.id_token_iss = Some(SPELLING))
    };
    let plain = other_spelling(TestApp::builder()).start().await;
    assert_login_refused(&plain, "an alias not configured").await;
    drop(plain);

    let near_miss = other_spelling(TestApp::builder())
        .oidc_toml("issuer_aliases = [\"https://accounts.example/\", \"accounts.example\"]\n")
        .start()
        .await;
    assert_login_refused(&near_miss, "only exact spellings count").await;
    drop(near_miss);

    let app = other_spelling(TestApp::builder())
        .oidc_toml(&format!("issuer_aliases = [\"{SPELLING}\"]\n"))
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["claims"]["iss"], SPELLING, "{user}");
}

/// Google's shape: the issuer without its scheme (`accounts.google.com`), here
/// `127.0.0.1:<port>`. As an alias it is this provider's `iss` in a back-channel logout token
/// (and only when configured); an ID token naming it cannot be read by the OpenID Connect
/// library (its `iss` must be a URL), so such a login fails as an invalid ID token, visibly,
/// never as a session (docs/configuration.md, `oidc.issuer_aliases`).
#[tokio::test]
async fn a_schemeless_issuer_alias_counts_in_logout_tokens_and_fails_an_id_token_clearly() {
    let port = free_port();
    let schemeless = format!("127.0.0.1:{port}");
    let app = TestApp::builder()
        .provider_options(|options| options.port = port)
        .oidc_toml(&format!("issuer_aliases = [\"{schemeless}\"]\n"))
        .start()
        .await;
    assert_eq!(app.provider.issuer, format!("http://{schemeless}"));
    let alice = app.browser();
    alice.login("alice").await;
    let not_an_alias = logout_token(
        &app,
        json!({ "iss": format!("localhost:{port}") }),
        "not-an-alias-1",
    )
    .await;
    let (status, _, body) = post_logout_token(&app.url, &not_an_alias).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        alive(&alice).await,
        "a spelling not configured ends nothing"
    );
    let alias = logout_token(&app, json!({ "iss": schemeless }), "alias-1").await;
    let (status, _, body) = post_logout_token(&app.url, &alias).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(&alice).await, "the alias is the provider's");
    drop(app);

    let app = TestApp::builder()
        .provider_options(|options| options.id_token_iss = Some("schemeless"))
        .oidc_toml(&format!("issuer_aliases = [\"{schemeless}\"]\n"))
        .start()
        .await;
    assert_login_refused(&app, "an ID token naming a scheme-less iss").await;
}

/// A logout token for alice, signed by the provider, with `claims` over the valid ones.
async fn logout_token(app: &TestApp, claims: Value, jti: &str) -> String {
    let mut token = app.provider.logout_claims(Some("alice"), None, jti);
    for (name, value) in claims.as_object().unwrap() {
        token[name] = value.clone();
    }
    app.provider
        .logout_token_under("RS256", "provider", token)
        .await
}

/// A logout token from a multi-tenant provider counts only for an allowed tenant, naming the
/// template filled with its own `tid`.
#[tokio::test]
async fn a_logout_token_counts_only_for_an_allowed_tenant_under_its_own_issuer() {
    let app = multi_tenant(&[TENANT]).start().await;
    let alice = app.browser();
    alice.login("alice").await;
    for (token, what) in [
        (
            logout_token(
                &app,
                json!({ "tid": "tenant-b", "iss": tenant_issuer(&app, "tenant-b") }),
                "other-tenant-1",
            )
            .await,
            "a tenant not allowed",
        ),
        (
            logout_token(
                &app,
                json!({ "tid": TENANT, "iss": tenant_issuer(&app, "tenant-b") }),
                "borrowed-iss-1",
            )
            .await,
            "another tenant's issuer",
        ),
    ] {
        let (status, _, body) = post_logout_token(&app.url, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(alive(&alice).await, "{what} ends nothing");
    }
    let own = logout_token(
        &app,
        json!({ "tid": TENANT, "iss": tenant_issuer(&app, TENANT) }),
        "own-tenant-1",
    )
    .await;
    let (status, _, body) = post_logout_token(&app.url, &own).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(&alice).await);
}

/// `expires_in` as a JSON string (Entra ID v1, B2C) is the token's lifetime at login and after
/// each refresh: the session refreshes when the provider's 4 s are over, not after the assumed
/// hour, and the login does not fail.
#[tokio::test]
async fn a_string_expires_in_is_the_lifetime_at_login_and_refresh() {
    let app = TestApp::builder()
        .access_token_ttl(4)
        .refresh_skew(1)
        .provider_options(|options| options.expires_in_as_string = true)
        .oidc_toml("assumed_token_lifetime_secs = 3600\n")
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let expiry = |user: &Value| {
        user["session"]["access_token_expires_at"]
            .as_u64()
            .unwrap_or_else(|| panic!("an expiry: {user}"))
    };
    let (_, user) = browser.user().await;
    assert!(
        expiry(&user) <= unix_now() + 4,
        "the provider's 4 s: {user}"
    );
    wait_for(
        "a refresh after the string expires_in",
        Duration::from_secs(15),
        || async {
            assert_eq!(
                browser.api_get("/api/orders/poll").await.status(),
                StatusCode::OK
            );
            (app.provider.refresh_grants().await >= 1).then_some(())
        },
    )
    .await;
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert!(
        expiry(&user) <= unix_now() + 4,
        "the refreshed token's 4 s, not the assumed hour: {user}"
    );
}
