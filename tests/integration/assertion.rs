//! Identity assertions (issue 31, `kind = "assertion"`): what the upstream receives, checked
//! the way an upstream would check it, by an independent verifier (`tests/op/verify-assertion.mjs`,
//! the `jose` library) against Vestibule's own `/.well-known/jwks.json`; a browser's forgery
//! never reaching an upstream; and a key rotation across two real instances on one Redis.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::upstream::SeenRequest;
use crate::harness::{Browser, TestApp, free_port, spawn_vestibule};
use crate::key_rotation::{K1, K2, config, login_on, ring};

/// Assertion routes beside the harness's `/api/orders` (a `session` route): one with the
/// default audience (the upstream's origin) and header, one that also sends the bearer token
/// under another audience, one for an optional session.
const ROUTES: &str = r#"
[[routes]]
prefix = "/api/identity"
upstream = "{upstream}"
[routes.credential]
kind = "assertion"
claims = ["email", "roles"]

[[routes]]
prefix = "/api/both"
upstream = "{upstream}"
[routes.credential]
kind = "assertion"
audience = "https://billing.internal"
header = "X-Service-Identity"
also_bearer = true

[[routes]]
prefix = "/api/maybe"
upstream = "{upstream}"
access = "optional"
[routes.credential]
kind = "assertion"
"#;

/// The upstream's origin: the default audience of an assertion route.
fn upstream_origin(app: &TestApp) -> String {
    let url = reqwest::Url::parse(&app.upstream.base_url).unwrap();
    url.origin().ascii_serialization()
}

/// The last request the upstream saw under `path`.
fn last_seen(app: &TestApp, path: &str) -> SeenRequest {
    app.upstream
        .seen()
        .into_iter()
        .rev()
        .find(|seen| seen.path_and_query.starts_with(path))
        .unwrap_or_else(|| panic!("the upstream saw nothing under {path}"))
}

/// The value of `header` the upstream received, if any.
pub(crate) fn header(seen: &SeenRequest, header: &str) -> Option<String> {
    let values: Vec<String> = seen
        .headers
        .get_all(header)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert!(values.len() <= 1, "one {header} at most: {values:?}");
    values.into_iter().next()
}

/// A GET with the anti-forgery header and a forged assertion under `forged_header`.
async fn get_forging(browser: &Browser, path: &str, forged_header: &str) -> StatusCode {
    browser
        .http()
        .get(browser.url(path))
        .header("x-csrf", "1")
        .header(forged_header, "forged.by.the-browser")
        .send()
        .await
        .unwrap()
        .status()
}

/// Verifies `assertion` as an upstream would, with `jose` against the key set at `jwks_base`:
/// the payload and header, or the verifier's error code.
pub(crate) async fn verify(
    jwks_base: &str,
    issuer: &str,
    audience: &str,
    assertion: &str,
) -> Result<Value, String> {
    let dir = crate::harness::node_project("op");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(dir.join("verify-assertion.mjs"))
            .current_dir(&dir)
            .env("JWKS_URL", format!("{jwks_base}/.well-known/jwks.json"))
            .env("ISSUER", issuer)
            .env("AUDIENCE", audience)
            .env("ASSERTION", assertion)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the verifier finished within 60 s")
    .expect("node must be installed");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "verifier output: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    match answer.get("error") {
        Some(error) => Err(error.as_str().unwrap_or_default().to_owned()),
        None => Ok(answer),
    }
}

#[tokio::test]
async fn an_assertion_route_sends_a_verifiable_assertion_for_its_audience_only() {
    let app = TestApp::builder().extra_toml(ROUTES).start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let status = get_forging(
        &alice,
        "/api/identity/anonymous/whoami",
        "x-vestibule-assertion",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = last_seen(&app, "/v1/anonymous/whoami");
    assert_eq!(
        seen.bearer, None,
        "an assertion route sends no bearer token"
    );
    let assertion = header(&seen, "x-vestibule-assertion").expect("the upstream got an assertion");
    assert_ne!(assertion, "forged.by.the-browser");

    let audience = upstream_origin(&app);
    let verified = verify(&app.url, &app.url, &audience, &assertion)
        .await
        .unwrap_or_else(|error| panic!("the assertion does not verify: {error}"));
    let payload = &verified["payload"];
    assert_eq!(payload["iss"], app.url.as_str());
    assert_eq!(payload["aud"], audience.as_str());
    assert_eq!(payload["sub"], "alice");
    assert_eq!(
        payload.get("idp"),
        None,
        "one provider: the assertion is as before (idp only with several)"
    );
    assert_eq!(payload["email"], "alice@example.test");
    assert_eq!(payload["roles"], serde_json::json!(["admin", "user"]));
    let (iat, exp) = (
        payload["iat"].as_u64().unwrap(),
        payload["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 60, "iat {iat}, exp {exp}");
    assert!(
        payload["jti"].is_string() && payload["sid"].is_string(),
        "{payload}"
    );
    assert!(
        payload.get("name").is_none(),
        "only the listed claims: {payload}"
    );
    assert_eq!(verified["header"]["alg"], "ES256");
    assert_eq!(verified["header"]["typ"], "JWT");

    // A token for one service is useless at another.
    let elsewhere = verify(&app.url, &app.url, "https://billing.internal", &assertion).await;
    assert_eq!(elsewhere.unwrap_err(), "ERR_JWT_CLAIM_VALIDATION_FAILED");
    // And nobody else's keys sign one: a verifier trusting another issuer refuses it too.
    let other_issuer = verify(&app.url, "https://someone.else", &audience, &assertion).await;
    assert_eq!(other_issuer.unwrap_err(), "ERR_JWT_CLAIM_VALIDATION_FAILED");

    // The next call gets an assertion of its own.
    assert_eq!(
        alice
            .api_get("/api/identity/anonymous/again")
            .await
            .status(),
        StatusCode::OK
    );
    let again = header(
        &last_seen(&app, "/v1/anonymous/again"),
        "x-vestibule-assertion",
    )
    .unwrap();
    assert_ne!(again, assertion);
}

#[tokio::test]
async fn also_bearer_sends_both_and_a_browser_can_never_send_an_assertion() {
    let app = TestApp::builder().extra_toml(ROUTES).start().await;
    let alice = app.browser();
    alice.login("alice").await;

    // `also_bearer`, under the route's own header name and audience.
    assert_eq!(
        get_forging(&alice, "/api/both/personal", "x-service-identity").await,
        StatusCode::OK
    );
    let seen = last_seen(&app, "/v1/personal");
    assert!(
        seen.bearer.is_some() && seen.token_active,
        "the bearer token too"
    );
    let assertion = header(&seen, "x-service-identity").expect("an assertion");
    assert_ne!(assertion, "forged.by.the-browser");
    let verified = verify(&app.url, &app.url, "https://billing.internal", &assertion).await;
    assert_eq!(verified.unwrap()["payload"]["sub"], "alice");
    assert_eq!(header(&seen, "x-vestibule-assertion"), None);

    // A session route: whatever assertion header the browser sends is dropped.
    for forged in [
        "x-vestibule-assertion",
        "x-service-identity",
        "X_Vestibule_Assertion",
    ] {
        assert_eq!(
            get_forging(&alice, "/api/orders/forged", forged).await,
            StatusCode::OK
        );
        let seen = last_seen(&app, "/v1/forged");
        for name in [
            "x-vestibule-assertion",
            "x-service-identity",
            "x_vestibule_assertion",
        ] {
            assert_eq!(
                header(&seen, name),
                None,
                "{forged} reached the upstream as {name}"
            );
        }
    }

    // An optional assertion route without a session: no assertion at all, forged or not.
    let stranger = app.browser();
    let status = get_forging(
        &stranger,
        "/api/maybe/anonymous/news",
        "x-vestibule-assertion",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = last_seen(&app, "/v1/anonymous/news");
    assert_eq!(header(&seen, "x-vestibule-assertion"), None);
    assert_eq!(seen.bearer, None);
    // With one, it gets one.
    assert_eq!(
        alice.api_get("/api/maybe/anonymous/mine").await.status(),
        StatusCode::OK
    );
    let mine = header(
        &last_seen(&app, "/v1/anonymous/mine"),
        "x-vestibule-assertion",
    );
    let verified = verify(&app.url, &app.url, &upstream_origin(&app), &mine.unwrap()).await;
    assert_eq!(verified.unwrap()["payload"]["sub"], "alice");
}

#[tokio::test]
async fn the_key_set_is_served_beside_a_single_page_app_with_a_short_cache() {
    let dir = std::env::temp_dir().join(format!("vestibule-jwks-spa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>spa</title>").unwrap();
    let app = TestApp::builder()
        .extra_toml(&format!(
            "{ROUTES}\n[frontend]\ndir = \"{}\"\n",
            dir.display()
        ))
        .start()
        .await;
    let response = reqwest::get(format!("{}/.well-known/jwks.json", app.url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    assert_eq!(
        response.headers()["content-type"],
        "application/jwk-set+json"
    );
    let set: Value = response.json().await.unwrap();
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{set}");
    for member in ["kid", "kty", "crv", "x", "y", "alg", "use"] {
        assert!(keys[0][member].is_string(), "{member} in {set}");
    }
    assert!(keys[0].get("d").is_none(), "never the private key");
    // The SPA still has every other path.
    let page = reqwest::get(format!("{}/.well-known/other", app.url))
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("<title>spa</title>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ring_signs_with_its_new_key_while_the_old_keys_assertions_still_verify() {
    // Zero configuration: both instances derive their assertion keys from their session keys.
    let public_port = free_port();
    let public = format!("http://127.0.0.1:{public_port}");
    let app = TestApp::builder()
        .public_port(public_port)
        .extra_toml(ROUTES)
        .start()
        .await;
    let (a_port, b_port) = (free_port(), free_port());
    let _a = spawn_vestibule(&config(&app, a_port, &ring(&[("k1", K1)]))).await;
    let a = format!("http://127.0.0.1:{a_port}");
    let session = login_on(&a, &public, "alice").await;
    let audience = upstream_origin(&app);
    let assertion_via = |instance: String, path: &'static str| {
        let session = session.clone();
        let app = &app;
        async move {
            let browser = Browser::with_session(&instance, &session);
            assert_eq!(
                browser
                    .api_get(&format!("/api/identity/anonymous/{path}"))
                    .await
                    .status(),
                StatusCode::OK
            );
            header(
                &last_seen(app, &format!("/v1/anonymous/{path}")),
                "x-vestibule-assertion",
            )
            .unwrap()
        }
    };
    let from_a = assertion_via(a.clone(), "from-a").await;
    let k1 = verify(&a, &public, &audience, &from_a).await.unwrap()["header"]["kid"].clone();

    // B has rolled to [k2, k1]: it signs with k2's key, and still publishes k1's.
    let _b = spawn_vestibule(&config(&app, b_port, &ring(&[("k2", K2), ("k1", K1)]))).await;
    let b = format!("http://127.0.0.1:{b_port}");
    let from_b = assertion_via(b.clone(), "from-b").await;
    let verified = verify(&b, &public, &audience, &from_a).await;
    assert_eq!(
        verified.unwrap()["header"]["kid"],
        k1,
        "A's assertion verifies with B's key set"
    );
    let k2 = verify(&b, &public, &audience, &from_b).await.unwrap()["header"]["kid"].clone();
    assert_ne!(k2, k1, "B signs with the new key");
    assert_eq!(
        verify(&a, &public, &audience, &from_b).await.unwrap_err(),
        "ERR_JWKS_NO_MATCHING_KEY",
        "A, still on [k1], does not know k2"
    );
    let published: Value = reqwest::get(format!("{b}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<Value> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].clone())
        .collect();
    assert_eq!(
        kids,
        [k2, k1],
        "the signing key first, the old one still published"
    );
}
