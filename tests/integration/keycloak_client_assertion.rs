//! `private_key_jwt` (issue 33) against the real Keycloak 26.4.7: a client whose authenticator
//! is "Signed JWT" with Vestibule's `/.well-known/client-jwks.json` as its JWKS URL and no
//! secret. Keycloak accepts an assertion whose `aud` is its issuer (one string) on the code
//! exchange, the refresh and the revocation at logout, each proven through Keycloak's events.

use reqwest::StatusCode;

use crate::client_assertion::{KEY_A, ring};
use crate::harness::keycloak::{ACCESS_TOKEN_LIFESPAN_SECS, Keycloak};
use crate::harness::keycloak_app::demo_routes;
use crate::harness::{KeycloakApp, free_port, unix_now, wait_for};

#[tokio::test]
async fn keycloak_accepts_the_client_assertion_for_login_refresh_and_logout() {
    let keycloak = Keycloak::shared();
    let port = free_port();
    let client_id = keycloak
        .register_private_key_jwt_client(
            &format!("http://localhost:{port}"),
            &format!("http://127.0.0.1:{port}/.well-known/client-jwks.json"),
        )
        .await;
    let credential = format!(
        "client_auth_method = \"private_key_jwt\"\n{}",
        ring(&[("kc-a", KEY_A)])
    );
    let app = KeycloakApp::start_with_credential(
        port,
        &client_id,
        &credential,
        2,
        &demo_routes(&keycloak.demo_api_url),
    )
    .await;
    let browser = app.browser();
    let turn = keycloak.login_turn().await;
    browser
        .login_with_password("alice", &keycloak.password_of("alice"))
        .await;
    drop(turn);
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    let sid = user["claims"]["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        browser.api_get("/api/demo/whoami").await.status(),
        StatusCode::OK
    );
    let expires_at = user["session"]["access_token_expires_at"].as_u64().unwrap();
    wait_for(
        "the access token to be due for refresh",
        std::time::Duration::from_secs(ACCESS_TOKEN_LIFESPAN_SECS + 10),
        || async move { (unix_now() + 2 > expires_at).then_some(()) },
    )
    .await;
    assert_eq!(
        browser.api_get("/api/demo/whoami").await.status(),
        StatusCode::OK
    );
    let refreshes = keycloak.events(&sid, "REFRESH_TOKEN").await;
    assert!(
        !refreshes.is_empty(),
        "Keycloak refreshed with the assertion"
    );
    assert!(
        keycloak
            .events(&sid, "REFRESH_TOKEN_ERROR")
            .await
            .is_empty()
    );
    let (status, _) = browser.logout().await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        keycloak.events(&sid, "REVOKE_GRANT_ERROR").await.is_empty(),
        "the revocation authenticated"
    );
}
