//! DPoP toward upstream APIs (issue 33): a route whose credential is a DPoP-bound token sends
//! it as `Authorization: DPoP` with a fresh proof per request, which a resource server that
//! checks proofs like a real one accepts ([`DpopUpstream`]); forged and replayed proofs are
//! refused there; an upstream's nonce challenge is answered with one retry and the nonce is
//! sent up front afterwards; a `dpop = false` route gets an unbound token of its own by token
//! exchange, never the session's bound token as `Bearer`.
//!
//! Until logins bind tokens at the test provider, a session is bound here as the login will
//! bind it: a key of its own sealed in its record and its access token marked bound, written
//! through the session layer with the deployment's key ([`bind_session`]).

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use vestibule::oidc::dpop::DpopKey;
use vestibule::session::dpop_key::StoredDpopKey;
use vestibule::session::store::RedisTls;
use vestibule::session::{MasterKey, SessionCookie, Sessions, Store};

use crate::harness::dpop_upstream::{
    DpopUpstream, DpopUpstreamOptions, challenge_of, verify_proof,
};
use crate::harness::{Browser, ENCRYPTION_KEY, TestApp, unix_now, wait_for};

/// The route to the DPoP resource server (`{dpop}` is its base URL).
const BOUND_ROUTE: &str = r#"
[[routes]]
prefix = "/api/bound"
upstream = "{dpop}"
timeout_secs = 5
"#;

/// A TestApp with `/api/bound` on `upstream` and `extra` routes.
async fn app_with(upstream: &DpopUpstream, extra: &str) -> TestApp {
    TestApp::builder()
        .extra_toml(&format!(
            "{}{extra}",
            BOUND_ROUTE.replace("{dpop}", &upstream.base_url)
        ))
        .start()
        .await
}

/// The session layer over the app's Redis with the deployment's key, as another instance.
fn sessions_of(app: &TestApp) -> Sessions {
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(ENCRYPTION_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    Sessions::new(
        Store::redis(&app.redis().topology(), &RedisTls::default(), None).unwrap(),
        MasterKey::new(key),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
}

/// Binds the session of `browser` to a new key of its own, as a DPoP login does (the key
/// sealed in its record, the access token marked bound), and waits until Vestibule uses the
/// bound record (its cache drops the copy it held). The key's thumbprint and the token.
async fn bind_session(app: &TestApp, browser: &Browser) -> (String, String) {
    let sessions = sessions_of(app);
    let cookie = SessionCookie::parse(&browser.cookie("vestibule").unwrap()).unwrap();
    let current = sessions.load_fresh(&cookie).await.unwrap().unwrap();
    let key = DpopKey::generate().unwrap();
    let mut record = current.record.clone();
    record.tokens.dpop_key = Some(StoredDpopKey::new(&key));
    record.tokens.dpop_bound = true;
    let replacement = sessions.prepare_replacement(&current, &record).unwrap();
    assert!(sessions.replace(&replacement).await.unwrap());
    wait_for(
        "Vestibule to read the bound record",
        Duration::from_secs(10),
        || async {
            let response = browser.api_get("/api/bound/probe").await;
            (response.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
    (
        key.thumbprint().to_owned(),
        record.tokens.access_token.clone(),
    )
}

/// The JSON answer of a call that passed.
async fn passed(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_bound_session_token_reaches_the_upstream_as_dpop_with_a_fresh_proof_per_call() {
    let upstream = DpopUpstream::start().await;
    let app = app_with(&upstream, "").await;
    let browser = app.browser();
    browser.login("alice").await;
    let (thumbprint, token) = bind_session(&app, &browser).await;
    let from = upstream.calls().len();

    let first = passed(browser.api_get("/api/bound/orders/1?page=2").await).await;
    let second = passed(browser.api_get("/api/bound/orders/1?page=2").await).await;
    let posted = passed(
        browser
            .http()
            .post(browser.url("/api/bound/orders"))
            .header("x-csrf", "1")
            .body("{\"item\":1}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    for answer in [&first, &second, &posted] {
        assert_eq!(answer["thumbprint"], thumbprint.as_str(), "{answer}");
    }
    // htu: the URL the upstream was called at, without the query.
    let origin = upstream.base_url.trim_end_matches("/v1");
    assert_eq!(first["htu"], format!("{origin}/v1/orders/1"));
    assert_eq!(posted["htu"], format!("{origin}/v1/orders"));
    assert_ne!(first["jti"], second["jti"], "a new proof for every call");
    let calls = &upstream.calls()[from..];
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0].path_and_query, "/v1/orders/1?page=2");
    assert_eq!(calls[2].method, "POST");
    for call in calls {
        assert_eq!(call.scheme.as_deref(), Some("DPoP"), "{call:?}");
        assert_eq!(call.token.as_deref(), Some(token.as_str()));
        assert!(call.verdict.is_ok(), "{call:?}");
    }
    // Never as Bearer, from the moment the session is bound.
    assert!(
        upstream
            .calls()
            .iter()
            .skip(from)
            .all(|call| call.scheme.as_deref() != Some("Bearer"))
    );
}

#[tokio::test]
async fn a_forged_or_replayed_proof_is_refused_by_the_upstream() {
    let upstream = DpopUpstream::start().await;
    let app = app_with(&upstream, "").await;
    let browser = app.browser();
    browser.login("alice").await;
    bind_session(&app, &browser).await;
    passed(browser.api_get("/api/bound/orders/7").await).await;
    let call = upstream.calls().last().cloned().unwrap();
    let (token, proof) = (call.token.unwrap(), call.proof.unwrap());
    let url = format!("{}/orders/7", upstream.base_url);
    let send = |proof: String| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            reqwest::Client::new()
                .get(url)
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .send()
                .await
                .unwrap()
        }
    };

    // Replayed: the very proof Vestibule sent.
    let replayed = send(proof.clone()).await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge_of(replayed.headers())
            .unwrap()
            .contains("invalid_dpop_proof")
    );
    assert!(
        upstream
            .calls()
            .last()
            .unwrap()
            .verdict
            .as_ref()
            .unwrap_err()
            .contains("replayed"),
        "{:?}",
        upstream.calls().last()
    );

    // Altered htu: the claims no longer match the signature.
    let segments: Vec<&str> = proof.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(segments[1]).unwrap()).unwrap();
    claims["htu"] = Value::from(format!("{}/orders/8", upstream.base_url));
    claims["jti"] = Value::from("fresh-jti-1");
    let altered = format!(
        "{}.{}.{}",
        segments[0],
        engine.encode(serde_json::to_vec(&claims).unwrap()),
        segments[2]
    );
    let refused = send(altered).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        upstream
            .calls()
            .last()
            .unwrap()
            .verdict
            .as_ref()
            .unwrap_err()
            .contains("signature"),
        "{:?}",
        upstream.calls().last()
    );

    // Another key signing under the session key's header: the signature does not verify.
    let thief = DpopKey::generate().unwrap();
    let stolen = thief
        .proof("GET", &url, Some(&token), None, unix_now())
        .unwrap();
    let thief_segments: Vec<&str> = stolen.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        segments[0], thief_segments[1], thief_segments[2]
    );
    let refused = send(forged).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        upstream
            .calls()
            .last()
            .unwrap()
            .verdict
            .as_ref()
            .unwrap_err()
            .contains("signature")
    );

    // A proof for another URL, honestly signed, is refused for its htu.
    let elsewhere = thief
        .proof(
            "GET",
            &format!("{}/admin", upstream.base_url),
            Some(&token),
            None,
            unix_now(),
        )
        .unwrap();
    assert!(
        verify_proof(&elsewhere, "GET", &url, &token, unix_now())
            .unwrap_err()
            .contains("htu")
    );
    // And a proof for another token (ath), or a stale one (iat).
    let stale = thief
        .proof("GET", &url, Some(&token), None, unix_now() - 3600)
        .unwrap();
    assert!(
        verify_proof(&stale, "GET", &url, &token, unix_now())
            .unwrap_err()
            .contains("iat")
    );
    assert!(
        verify_proof(&stolen, "GET", &url, "another-token", unix_now())
            .unwrap_err()
            .contains("ath")
    );
    // Without a proof at all, or as Bearer, the token is refused.
    let bare = reqwest::Client::new()
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_upstream_nonce_challenge_is_answered_with_one_retry_and_then_sent_up_front() {
    let upstream = DpopUpstream::start_with(DpopUpstreamOptions {
        require_nonce: true,
        ..DpopUpstreamOptions::default()
    })
    .await;
    let app = app_with(&upstream, "").await;
    let browser = app.browser();
    browser.login("alice").await;
    // Binding waits for a first call to pass: that one learnt the nonce already.
    bind_session(&app, &browser).await;
    let nonce = upstream.rotate_nonce();
    let from = upstream.calls().len();

    let answer = passed(browser.api_get("/api/bound/orders/1").await).await;
    assert_eq!(answer["nonce"], nonce.as_str());
    assert_eq!(upstream.nonce(), nonce);
    let calls = &upstream.calls()[from..];
    assert_eq!(calls.len(), 2, "a challenge, then one retry: {calls:?}");
    assert!(
        calls[0]
            .verdict
            .as_ref()
            .unwrap_err()
            .starts_with("use_dpop_nonce")
    );
    assert!(calls[1].verdict.is_ok());

    // The nonce is now sent up front: one call each, even a POST.
    let from = upstream.calls().len();
    passed(browser.api_get("/api/bound/orders/2").await).await;
    passed(
        browser
            .api_call(reqwest::Method::POST, "/api/bound/orders")
            .await,
    )
    .await;
    assert_eq!(
        upstream.calls().len() - from,
        2,
        "{:?}",
        &upstream.calls()[from..]
    );

    // A bodiless POST is retried too (the upstream refused the proof, it did not act) ...
    upstream.rotate_nonce();
    let from = upstream.calls().len();
    passed(
        browser
            .api_call(reqwest::Method::POST, "/api/bound/orders")
            .await,
    )
    .await;
    assert_eq!(upstream.calls().len() - from, 2);

    // ... a call with a body is not (it streamed): the challenge reaches the browser, and the
    // nonce it carried is used for the next call.
    let rotated = upstream.rotate_nonce();
    let from = upstream.calls().len();
    let with_body = browser
        .http()
        .post(browser.url("/api/bound/orders"))
        .header("x-csrf", "1")
        .body("{\"item\":2}")
        .send()
        .await
        .unwrap();
    assert_eq!(with_body.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.calls().len() - from, 1);
    let again = passed(
        browser
            .http()
            .post(browser.url("/api/bound/orders"))
            .header("x-csrf", "1")
            .body("{\"item\":2}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["nonce"], rotated.as_str());
    assert_eq!(upstream.calls().len() - from, 2);
}

/// A route whose upstream only knows Bearer: an exchanged token of its own, unbound.
const LEGACY_ROUTE: &str = r#"
[[routes]]
prefix = "/api/legacy"
upstream = "{upstream}"
[routes.credential]
kind = "exchange"
audience = "orders-api"
dpop = false
"#;

#[tokio::test]
async fn a_dpop_false_route_gets_an_unbound_token_by_exchange_never_the_bound_one_as_bearer() {
    let upstream = DpopUpstream::start().await;
    let app = app_with(&upstream, LEGACY_ROUTE).await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, bound_token) = bind_session(&app, &browser).await;

    for call in 0..2 {
        let response = browser
            .api_get(&format!("/api/legacy/any-token/{call}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "call {call}");
    }
    let seen: Vec<_> = app
        .upstream
        .seen()
        .into_iter()
        .filter(|seen| seen.path_and_query.starts_with("/v1/any-token/"))
        .collect();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        let bearer = request.bearer.as_deref().expect("a Bearer token");
        assert_ne!(bearer, bound_token, "the session's bound token as Bearer");
        assert!(request.headers.get("dpop").is_none());
        // A token the provider issued for that API by exchange (the upstream's introspection
        // client is not its audience, so it reads the claims).
        let claims = crate::harness::provider_grants::jwt_payload(bearer);
        assert_eq!(claims["aud"], "orders-api", "{claims}");
        assert_eq!(claims["sub"], "alice");
    }
    assert!(
        app.upstream
            .seen()
            .iter()
            .all(|request| request.bearer.as_deref() != Some(bound_token.as_str())),
        "the bound token never reached the Bearer upstream"
    );
    // The session's own route still goes as DPoP.
    passed(browser.api_get("/api/bound/orders/1").await).await;
    assert_eq!(
        upstream.calls().last().unwrap().scheme.as_deref(),
        Some("DPoP")
    );
}

#[tokio::test]
async fn the_resource_server_reading_cnf_from_a_jwt_refuses_a_proof_by_another_key() {
    // The resource server the Keycloak suite uses: Keycloak's access tokens are JWTs that name
    // their key in cnf.jkt, so a thief's own valid proof for a stolen token must not pass.
    let upstream = DpopUpstream::start_with(DpopUpstreamOptions {
        cnf_in_jwt: true,
        ..DpopUpstreamOptions::default()
    })
    .await;
    let (holder, thief) = (DpopKey::generate().unwrap(), DpopKey::generate().unwrap());
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.signature-not-checked-here",
        engine.encode(br#"{"alg":"ES256","typ":"JWT"}"#),
        engine.encode(format!(r#"{{"cnf":{{"jkt":"{}"}}}}"#, holder.thumbprint()))
    );
    let url = format!("{}/accounts", upstream.base_url);
    let call = |key: &DpopKey| {
        let proof = key
            .proof("GET", &url, Some(&token), None, unix_now())
            .unwrap();
        reqwest::Client::new()
            .get(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
    };
    assert_eq!(call(&holder).await.unwrap().status(), StatusCode::OK);
    let stolen = call(&thief).await.unwrap();
    assert_eq!(stolen.status(), StatusCode::UNAUTHORIZED);
    let verdict = upstream.calls().last().unwrap().verdict.clone();
    assert!(
        verdict.as_ref().unwrap_err().contains("cnf.jkt"),
        "{verdict:?}"
    );
}
