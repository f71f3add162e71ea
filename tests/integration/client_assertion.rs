//! `private_key_jwt` (issue 33) against the real oidc-provider, which registers the vestibule
//! client with no secret and Vestibule's `/.well-known/client-jwks.json` as its `jwks_uri`:
//! login, refresh, logout with revocation and a token exchange work with no `client_secret`
//! configured; a key the provider was never shown fails the login with an error page; the
//! signing key rotates through a two-key ring with the provider left alone; the key set holds
//! public halves only, apart from the assertion keys.

use reqwest::StatusCode;
use serde_json::Value;

use crate::doctor::doctor;
use crate::harness::{Browser, TestApp, free_port, logs, spawn_vestibule};
use crate::key_rotation::on_instance;

/// Test-only P-256 keys (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
pub(crate) const KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZyfKjhXPVLHn5Hi6
1TDQ0fa8RKnR2jQIpM+HeMHzRyGhRANCAAQ3p40AvVFnRsoWQX359CvmtoCASqVe
HpEoBJmiLwprRM7FfnpKbc+YER4RQ1f7DfyWXFe6/b+K8SQ2kUnWr8h0
-----END PRIVATE KEY-----";
const KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghTnjoG+2GLzmPnAB
J1uDbrFuKVa20GQct0yvD5+h3O6hRANCAATe3sxsVNTSrF837pmKIefO+cYNbQ0V
fHhlRnqylk37JoM3tK2B+Z6A8mANFJ6Oy6ykBAcl990qFEKsOj1A93ra
-----END PRIVATE KEY-----";
const KEY_C: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaRwHXdetCu9axeBx
Gy5mDtejHEzx3qBSyWBfQwK4ozChRANCAATqyh1mVYpyLa5PBCyjufjVc5svFcHR
6dUcaRF+fl92oOB3MLNpkxIzfmQNSKED30j8HBiEUF+7B4uyesUC9ljs
-----END PRIVATE KEY-----";

/// A test-only RSA key (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`).
const RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDB57dqJj+vEZNu
hRQziw4W/SjGBp7NjPsk8FSdtNdWADbwXrLbWVMY+VFdAc+aQUJyAssyZIDtDA1B
yr3bKbVKponXCbZ1QnDm+YPRmix257fPxswk/rTzcRqlcXvPleOgq39vbt4T9lJZ
GO/72CqYSTjR1muww1iIPtnreqawGXEyiizjGeD5lW2dhWU21lppIDb9fXhGl8TP
kG1F/w4JceKTTxzvy6tyzGqdVKk0J/CQd+HfQOxuDhiTzuXoRSt9KT4J4zv75Vw1
JbwKBW4j3XHxY56sh3MnMccDNRSjXBpaUyyJyKD/UwMlIfHE5/QVJ1zrfUtgrpKN
bcmxHzvBAgMBAAECggEAS+6xpJ/V0HjRgzYZ8xVBLz9z+Bgfl97delmiyR9INCVh
Xj+3Sq5wHBeGBSXwZjeoDX2KlPFGi41so5cBQhHTLKiK0eq7yK98Bvcu56W4Q9f5
4yO2TcZwleR0ytTl5ySLPx/ph3mi/a44ESvyzmyYQYpq9cFB6raUtMXoEI63N74Q
Pt/BnzGe3awbKQu1SyTU60IHRTw0QnzomVP/At2bY/jMQID/oKfPzGCqGtttuGu9
ar9FufoP5SGNIwObeeCrZVa5D5UXtJxc+Y56rQDGqj+v9EuldcslhQPDv4FP1P+y
G5elkf3E/4YHpPDQFAQeyXkPvvcCOZpUtZlLBImxAQKBgQDmL5Lymxzrg412x/ZD
eMoUW7jOijLZnkgxuI2BW9bUx+Kn6GB015VOvragHWIpJNo1wCAnEkDMnWCyGJy+
MdVklhPiR1tdwKVLItT2nhITMT6f5R4Xpc0Bfw3UO89SpU9vhDc6bPWlh0lpOVqx
GTHYuzO6x+KoPaowkNeOSnrxbwKBgQDXpo6GQwIV3ftEgi3KsQTubjZiodw9ohMi
gkwYX/n07l2XTZfVFeda5/Npgc6p/xbtqW7d+ve5/20O+W7RjZ4CNtzgKnMMGYir
WL6xrRz5eyzsV6WrZqR3PcDoiCUgQO1QjJhsRVRZV15v/wF0+MG60RhowyM+bCYT
Tdf7Q1KtzwKBgQCHjciZuiLDxsrOAl/RyBYo+wLQDq53XTDipu4eGblfwP6HJt92
r2Yr4z+k9ujRlfQy5xuIJsWmOZ+yAbB8iNhDzeWTwbXadhJhNvf264t1ZfCdNM4N
2wPpN6srKrWi09r9rvzfGT9n5U2j+7SeylmCamvCOOgPb5ED3Kg0EURpXQKBgDSI
eX3RgweKrPQydi9DUj03Ef6TCZDmE507eogRkVWOX7RFDbC2BkcJ7C0OlyaoYpCA
zuY6hfCEfa/BKbLYud42OTZOgPo4mieLleC4mC9aR0ZHz67icTwvCfhbehfSWT1f
Ep6FgRfGhdXonBU/qAn3d+fFaaeCNwBK3UtzSgfXAoGAMIgTHwflzGO3pujNPinA
dESVprZL7e8jL8ac3xpMFdS4RQUlwyIJXe/NE8ETO/tHF5t6SQQq42Gqm+uHGgNP
VsPSQ43GYuZdz+9kVWy9jTIxpliTALk0g4y2n6U7XUN2vLtaLHlhRFOF96cZWAdj
FAjckdnygwv7BxOkthklFQo=
-----END PRIVATE KEY-----";

/// `oidc.client_keys` for `(id, pem)` entries, the first signing. Each key's body is noted as
/// a secret: the app's log is checked for it (and for any JWT, so for an assertion) at the end.
pub(crate) fn ring(entries: &[(&str, &str)]) -> String {
    let entries: Vec<(&str, &str, &str)> =
        entries.iter().map(|(id, pem)| (*id, *pem, "")).collect();
    ring_with_algs(&entries)
}

/// [`ring`] for `(id, pem, alg)` entries; an empty `alg` leaves the key's default.
fn ring_with_algs(entries: &[(&str, &str, &str)]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(id, pem, alg)| {
            for line in pem.lines().filter(|line| !line.starts_with("-----")) {
                logs::note_secret(line);
            }
            let alg = if alg.is_empty() {
                String::new()
            } else {
                format!(", alg = \"{alg}\"")
            };
            format!("{{ id = \"{id}\", key = \"\"\"{pem}\"\"\"{alg} }}")
        })
        .collect();
    format!("client_keys = [{}]", entries.join(", "))
}

/// A route whose token the provider exchanges for `orders-api` (RFC 8693): a grant outside
/// openidconnect's flows, authenticated through `client_authenticated_post`.
const EXCHANGE_ROUTE: &str = r#"
[[routes]]
prefix = "/api/exchanged"
upstream = "{upstream}"
[routes.credential]
kind = "exchange"
audience = "orders-api"
"#;

/// The client assertions of the token requests so far (header and claims, as the provider
/// recorded them), oldest first.
async fn assertions_seen(app: &TestApp) -> Vec<Value> {
    app.provider.stats().await["token_requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|request| request["client_assertion"].clone())
        .collect()
}

/// `app`'s configuration on a new port with its ring replaced by `ring`: another instance of
/// the same deployment (same provider, Redis and public URL) holding other keys.
async fn instance_with(app: &TestApp, from: &str, to: &str) -> String {
    let port = free_port();
    let config = app.config_listening_on(port);
    assert!(config.contains(from), "the config has no {from:?}");
    spawn_vestibule(&config.replacen(from, to, 1)).await;
    format!("http://127.0.0.1:{port}")
}

/// Logs `user` in entirely through `instance` (the callback too, which the provider sends to
/// the public URL); the callback's response.
async fn login_through(instance: &str, public: &str, user: &str) -> (Browser, reqwest::Response) {
    let browser = Browser::new(public);
    let authorization = browser
        .begin_login_at(&format!("{instance}/api/auth/login"))
        .await;
    let callback = browser.authorize_at_provider(authorization, user).await;
    let callback = on_instance(&callback, instance);
    let response = browser.get(callback.as_str()).await;
    (browser, response)
}

#[tokio::test]
async fn login_refresh_exchange_and_logout_authenticate_with_an_assertion_and_no_secret() {
    let app = TestApp::builder()
        .private_key_jwt(&ring(&[("a", KEY_A)]))
        .access_token_ttl(3)
        .extra_toml(EXCHANGE_ROUTE)
        .start()
        .await;
    assert!(
        !app.config_listening_on(0).contains("client_secret"),
        "no secret configured"
    );
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/api/orders/first").await.status(),
        StatusCode::OK
    );
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/refreshed").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1, "refreshed once");
    // Logout revokes the session's tokens at the revocation endpoint, authenticated likewise.
    let bob = app.browser();
    bob.login("bob").await;
    let (status, _) = bob.logout().await;
    assert_eq!(status, StatusCode::OK);
    let stats = app.provider.stats_once_revoked(1).await;
    assert_eq!(
        stats["revocation_errors"], 0,
        "the revocation authenticated: {stats}"
    );
    // A grant outside openidconnect's flows: the token exchange (`any-token`: the test upstream
    // takes the exchanged token without introspecting it).
    assert_eq!(
        browser.api_get("/api/exchanged/any-token/x").await.status(),
        StatusCode::OK,
        "the token exchange authenticated"
    );
    assert_eq!(app.provider.exchange_grants().await, 1);

    // Every token request carried an assertion for this provider alone.
    let assertions = assertions_seen(&app).await;
    assert_eq!(
        assertions.len(),
        4,
        "alice's code and refresh, bob's code, the exchange: {assertions:?}"
    );
    for assertion in &assertions {
        assert_eq!(
            assertion["type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert_eq!(assertion["header"]["alg"], "ES256");
        assert_eq!(assertion["header"]["kid"], "a");
        assert_eq!(assertion["header"]["typ"], "JWT");
        let claims = &assertion["claims"];
        assert_eq!(claims["iss"], "vestibule");
        assert_eq!(claims["sub"], "vestibule");
        assert_eq!(
            claims["aud"],
            Value::String(app.provider.issuer.clone()),
            "the issuer, one string"
        );
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert!(lifetime <= 60, "{claims}");
    }
    let jtis: std::collections::HashSet<&Value> =
        assertions.iter().map(|a| &a["claims"]["jti"]).collect();
    assert_eq!(jtis.len(), 4, "a fresh jti each time");
    assert_eq!(app.provider.stats().await["refresh_token_errors"], 0);
}

#[tokio::test]
async fn a_key_the_provider_does_not_know_fails_the_login_with_an_error_page() {
    let app = TestApp::builder()
        .private_key_jwt(&ring(&[("a", KEY_A)]))
        .start()
        .await;
    // The provider trusts the key set at the public URL (this instance's: key a); an instance
    // signing with a key that was never published there is refused.
    let stranger = instance_with(&app, &ring(&[("a", KEY_A)]), &ring(&[("c", KEY_C)])).await;
    let (browser, response) = login_through(&stranger, &app.url, "alice").await;
    let status = response.status();
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let page = response.text().await.unwrap();
    assert!(
        status.is_client_error() || status == StatusCode::BAD_GATEWAY,
        "an error page, not a 500: {status} {page}"
    );
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains("identity provider"), "{page}");
    let (status, _) = browser.user().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no session");
    assert_eq!(
        app.provider.stats().await["authorization_code_errors"],
        1,
        "the provider refused the assertion"
    );
}

#[tokio::test]
async fn the_signing_key_rotates_through_a_two_key_ring_with_the_provider_left_alone() {
    // Step 1 (done before): b is added to the ring, published, not signing. The provider
    // fetches the key set (a and b) at the first login.
    let ab = ring(&[("a", KEY_A), ("b", KEY_B)]);
    let app = TestApp::builder()
        .private_key_jwt(&ab)
        .access_token_ttl(3)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let session = browser.cookie("vestibule").unwrap();
    // Step 2: b signs (a stays published by the instances still signing with it).
    let ba = ring(&[("b", KEY_B), ("a", KEY_A)]);
    let switched = instance_with(&app, &ab, &ba).await;
    let (_, response) = login_through(&switched, &app.url, "bob").await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "b signs the login at once: the provider already holds it"
    );
    // A session from before refreshes on the switched instance.
    let on_switched = Browser::with_session(&switched, &session);
    on_switched.wait_past_access_token_expiry().await;
    assert_eq!(
        on_switched.api_get("/api/orders/after").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    // Step 3: a is removed.
    let retired = instance_with(&app, &ab, &ring(&[("b", KEY_B)])).await;
    let (_, response) = login_through(&retired, &app.url, "carol").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "b alone");
    let kids: Vec<Value> = assertions_seen(&app)
        .await
        .iter()
        .map(|assertion| assertion["header"]["kid"].clone())
        .collect();
    assert_eq!(
        kids,
        ["a", "b", "b", "b"],
        "login a, login b, refresh b, login b"
    );
    assert_eq!(app.provider.stats().await["authorization_code_errors"], 0);
}

/// The `(alg, kid)` of every client assertion the provider has seen, oldest first.
async fn algs_and_kids_seen(app: &TestApp) -> Vec<(String, String)> {
    assertions_seen(app)
        .await
        .iter()
        .map(|assertion| {
            let header = &assertion["header"];
            (
                header["alg"].as_str().unwrap_or_default().to_owned(),
                header["kid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_rsa_key_authenticates_login_and_refresh_with_rs256_or_ps256_and_no_secret() {
    for alg in ["", "PS256"] {
        let app = TestApp::builder()
            .private_key_jwt(&ring_with_algs(&[("r", RSA_KEY, alg)]))
            .access_token_ttl(3)
            .start()
            .await;
        assert!(!app.config_listening_on(0).contains("client_secret"));
        let browser = app.browser();
        browser.login("alice").await;
        browser.wait_past_access_token_expiry().await;
        assert_eq!(
            browser.api_get("/api/orders/refreshed").await.status(),
            StatusCode::OK,
            "{alg}"
        );
        assert_eq!(app.provider.refresh_grants().await, 1, "{alg}");
        let expected = if alg.is_empty() { "RS256" } else { alg };
        assert_eq!(
            algs_and_kids_seen(&app).await,
            vec![(expected.to_owned(), "r".to_owned()); 2],
            "the code exchange and the refresh"
        );
        let stats = app.provider.stats().await;
        assert_eq!(stats["authorization_code_errors"], 0, "{stats}");
        assert_eq!(stats["refresh_token_errors"], 0, "{stats}");
        let set: Value = reqwest::get(format!("{}/.well-known/client-jwks.json", app.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let jwk = &set["keys"][0];
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], expected);
        let mut members: Vec<&String> = jwk.as_object().unwrap().keys().collect();
        members.sort_unstable();
        assert_eq!(
            members,
            ["alg", "e", "kid", "kty", "n", "use"],
            "public parts only: {jwk}"
        );
    }
}

#[tokio::test]
async fn an_ec_ring_rotates_to_an_rsa_key_with_the_provider_left_alone() {
    // Step 1: the RSA key is published beside the signing EC key.
    let published = ring(&[("a", KEY_A), ("r", RSA_KEY)]);
    let app = TestApp::builder()
        .private_key_jwt(&published)
        .access_token_ttl(3)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let session = browser.cookie("vestibule").unwrap();
    // Step 2: the RSA key signs; the EC key stays published.
    let switched = instance_with(&app, &published, &ring(&[("r", RSA_KEY), ("a", KEY_A)])).await;
    let (_, response) = login_through(&switched, &app.url, "bob").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "RS256 at once");
    let on_switched = Browser::with_session(&switched, &session);
    on_switched.wait_past_access_token_expiry().await;
    assert_eq!(
        on_switched.api_get("/api/orders/after").await.status(),
        StatusCode::OK,
        "a session from before refreshes with the RSA key"
    );
    assert_eq!(
        algs_and_kids_seen(&app).await,
        [
            ("ES256".to_owned(), "a".to_owned()),
            ("RS256".to_owned(), "r".to_owned()),
            ("RS256".to_owned(), "r".to_owned()),
        ],
        "login a, login r, refresh r"
    );
    let stats = app.provider.stats().await;
    assert_eq!(stats["authorization_code_errors"], 0, "{stats}");
    assert_eq!(stats["refresh_token_errors"], 0, "{stats}");
}

#[tokio::test]
async fn the_client_key_set_publishes_every_public_half_and_nothing_of_the_assertion_keys() {
    let app = TestApp::builder()
        .private_key_jwt(&ring(&[("a", KEY_A), ("b", KEY_B)]))
        .start()
        .await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/.well-known/client-jwks.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "application/jwk-set+json"
    );
    assert_eq!(
        response.headers()[reqwest::header::CACHE_CONTROL],
        "public, max-age=300"
    );
    let set: Value = response.json().await.unwrap();
    let keys = set["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys
        .iter()
        .map(|jwk| jwk["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["a", "b"], "the whole ring, the signing key first");
    for jwk in keys {
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["alg"], "ES256");
        assert!(jwk.get("d").is_none(), "no private half: {jwk}");
    }
    // One purpose per key set: the identity assertions' set holds none of them.
    let assertion_keys: Value = http
        .get(format!("{}/.well-known/jwks.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for jwk in assertion_keys["keys"].as_array().unwrap() {
        assert!(!["a", "b"].contains(&jwk["kid"].as_str().unwrap()), "{jwk}");
    }
    // Readiness says which method is in use.
    let readiness: Value = http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        readiness["negotiated"]["default"]["client_authentication"], "private_key_jwt",
        "{readiness}"
    );
}

#[tokio::test]
async fn doctor_and_check_config_work_with_a_client_assertion() {
    let app = TestApp::builder()
        .private_key_jwt(&ring(&[("a", KEY_A)]))
        .start()
        .await;
    // The provider fetches the client key set from the running instance.
    let config = app.config_listening_on(free_port());
    let healthy = doctor(&config, false).await;
    let (line, _) = healthy.line("ok", "provider.client_auth");
    assert!(line.contains("private_key_jwt"), "{line}");
    assert!(line.contains("invalid_grant"), "{line}");

    let stranger = config.replacen(&ring(&[("a", KEY_A)]), &ring(&[("c", KEY_C)]), 1);
    let refused = doctor(&stranger, false).await;
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    let (line, remedy) = refused.line("fail", "provider.client_auth");
    assert!(line.contains("client assertion"), "{line}");
    assert!(remedy.contains("/.well-known/client-jwks.json"), "{remedy}");

    let file = std::env::temp_dir().join(format!("vestibule-pkjwt-{}.toml", free_port()));
    std::fs::write(&file, &config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vestibule"))
        .arg("--config")
        .arg(&file)
        .arg("--check-config")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{summary}");
    assert!(
        summary.contains("no secret; authentication private_key_jwt signed with key a"),
        "{summary}"
    );
    assert!(!summary.contains("MIGH"), "never a key: {summary}");
}
