//! DPoP toward upstream APIs (issue 33), end to end: logins under `oidc.dpop = "auto"` at the
//! real oidc-provider (`OP_DPOP`) bind each session's tokens to its own key, and a route whose
//! credential is a DPoP-bound token sends it as `Authorization: DPoP` with a fresh proof per
//! request, which a resource server that checks proofs like a real one accepts
//! ([`DpopUpstream`], introspecting each token at the provider: active, `cnf.jkt` the proof's
//! key); forged and replayed proofs are refused there; an upstream's nonce challenge is
//! answered with one retry and the nonce is sent up front afterwards; an upstream's
//! `DPoP error="invalid_token"` costs one refresh (bound again) and one retry; an `exchange`
//! route gets a token the provider bound to the session's key, and a `dpop = false` one an
//! unbound token of its own, never the session's bound token as `Bearer`.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use vestibule::oidc::dpop::DpopKey;
use vestibule::session::store::RedisTls;
use vestibule::session::{MasterKey, SessionCookie, Sessions, Store};

use crate::harness::dpop_upstream::{
    DpopUpstream, DpopUpstreamOptions, challenge_of, verify_proof,
};
use crate::harness::provider_grants::jwt_payload;
use crate::harness::{Browser, ENCRYPTION_KEY, TestApp, unix_now};

/// The route to the DPoP resource server (`{dpop}` is its base URL).
const BOUND_ROUTE: &str = r#"
[[routes]]
prefix = "/api/bound"
upstream = "{dpop}"
timeout_secs = 5
"#;

/// A TestApp under `oidc.dpop = "auto"` at a provider with `OP_DPOP = op`, with `/api/bound`
/// on `upstream` and `extra` routes (`{dpop}` in them: `upstream`'s URL); `upstream`
/// introspects at that provider from now on.
async fn app_with(upstream: &DpopUpstream, op: &'static str, extra: &str) -> TestApp {
    let app = TestApp::builder()
        .provider_options(|options| options.dpop = Some(op))
        .oidc_toml("dpop = \"auto\"\n")
        .extra_toml(&format!("{BOUND_ROUTE}{extra}").replace("{dpop}", &upstream.base_url))
        .start()
        .await;
    upstream.introspect_at(&app.provider.issuer);
    app
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

/// What the login of `browser` stored: the thumbprint of its session's key and its access
/// token, which the provider bound to that key (read, never written).
async fn bound_session(app: &TestApp, browser: &Browser) -> (String, String) {
    let cookie = SessionCookie::parse(&browser.cookie("vestibule").unwrap()).unwrap();
    let record = sessions_of(app)
        .load_fresh(&cookie)
        .await
        .unwrap()
        .unwrap()
        .record;
    assert!(record.tokens.dpop_bound, "the login's token is bound");
    let key: DpopKey = record.tokens.dpop_key.as_ref().unwrap().key().unwrap();
    let thumbprint = key.thumbprint().to_owned();
    let seen = app.provider.introspect(&record.tokens.access_token).await;
    assert_eq!(seen["cnf"]["jkt"], thumbprint.as_str(), "{seen}");
    (thumbprint, record.tokens.access_token.clone())
}

/// An order (`{"item": item}`) POSTed through Vestibule as the SPA sends it.
async fn post_order(browser: &Browser, item: u32) -> reqwest::Response {
    browser
        .http()
        .post(browser.url("/api/bound/orders"))
        .header("x-csrf", "1")
        .body(format!("{{\"item\":{item}}}"))
        .send()
        .await
        .unwrap()
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
    let app = app_with(&upstream, "1", "").await;
    let browser = app.browser();
    browser.login("alice").await;
    let (thumbprint, token) = bound_session(&app, &browser).await;

    let first = passed(browser.api_get("/api/bound/orders/1?page=2").await).await;
    let second = passed(browser.api_get("/api/bound/orders/1?page=2").await).await;
    let posted = passed(post_order(&browser, 1).await).await;
    for answer in [&first, &second, &posted] {
        assert_eq!(answer["thumbprint"], thumbprint.as_str(), "{answer}");
    }
    // htu: the URL the upstream was called at, without the query.
    let origin = upstream.base_url.trim_end_matches("/v1");
    assert_eq!(first["htu"], format!("{origin}/v1/orders/1"));
    assert_eq!(posted["htu"], format!("{origin}/v1/orders"));
    assert_ne!(first["jti"], second["jti"], "a new proof for every call");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0].path_and_query, "/v1/orders/1?page=2");
    assert_eq!(calls[2].method, "POST");
    // Each as DPoP, the token the provider bound to the key of the proofs (introspected).
    for call in &calls {
        assert_eq!(call.scheme.as_deref(), Some("DPoP"), "{call:?}");
        assert_eq!(call.token.as_deref(), Some(token.as_str()));
        assert!(call.verdict.is_ok(), "{call:?}");
    }
}

#[tokio::test]
async fn a_forged_or_replayed_proof_is_refused_by_the_upstream() {
    let upstream = DpopUpstream::start().await;
    let app = app_with(&upstream, "1", "").await;
    let browser = app.browser();
    browser.login("alice").await;
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
    // The provider asks for nonces too: each origin's nonce is kept apart.
    let app = app_with(&upstream, "nonce", "").await;
    let browser = app.browser();
    browser.login("alice").await;
    bound_session(&app, &browser).await;
    // The first call learns the upstream's nonce (a challenge, one retry).
    passed(browser.api_get("/api/bound/probe").await).await;
    assert_eq!(upstream.calls().len(), 2, "{:?}", upstream.calls());
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
    let with_body = post_order(&browser, 2).await;
    assert_eq!(with_body.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.calls().len() - from, 1);
    let again = passed(post_order(&browser, 2).await).await;
    assert_eq!(again["nonce"], rotated.as_str());
    assert_eq!(upstream.calls().len() - from, 2);
}

/// Two routes whose tokens the provider issues by exchange for the same API (`orders-api`):
/// one to the DPoP resource server with the default `dpop = true` (asked with a proof of the
/// session's key, so bound to it), one whose upstream only knows Bearer (`dpop = false`:
/// asked without a proof, so unbound).
const EXCHANGE_ROUTES: &str = r#"
[[routes]]
prefix = "/api/exchanged"
upstream = "{dpop}"
timeout_secs = 5
[routes.credential]
kind = "exchange"
audience = "orders-api"

[[routes]]
prefix = "/api/legacy"
upstream = "{upstream}"
[routes.credential]
kind = "exchange"
audience = "orders-api"
dpop = false
"#;

#[tokio::test]
async fn exchange_routes_get_a_bound_token_as_dpop_and_with_dpop_false_an_unbound_one_as_bearer() {
    let upstream = DpopUpstream::start().await;
    let app = app_with(&upstream, "nonce", EXCHANGE_ROUTES).await;
    let browser = app.browser();
    browser.login("alice").await;
    let (thumbprint, session_token) = bound_session(&app, &browser).await;

    // dpop = true (the default): the exchanged token is bound to the session's key by the
    // provider and reaches the upstream as DPoP with a proof of that key, which checks both
    // (the proof, and cnf.jkt at introspection).
    for call in 0..2 {
        let answer = passed(
            browser
                .api_get(&format!("/api/exchanged/orders/{call}"))
                .await,
        )
        .await;
        assert_eq!(answer["thumbprint"], thumbprint.as_str(), "{answer}");
    }
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let exchanged = calls[0].token.clone().unwrap();
    assert_ne!(exchanged, session_token);
    for call in &calls {
        assert_eq!(call.scheme.as_deref(), Some("DPoP"), "{call:?}");
        assert_eq!(call.token.as_deref(), Some(exchanged.as_str()), "held");
        assert!(call.verdict.is_ok(), "{call:?}");
    }
    let claims = jwt_payload(&exchanged);
    assert_eq!(claims["aud"], "orders-api", "{claims}");
    assert_eq!(claims["sub"], "alice");
    let seen = app.provider.introspect(&exchanged).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["token_type"], "DPoP", "{seen}");
    assert_eq!(seen["cnf"]["jkt"], thumbprint.as_str(), "{seen}");

    // dpop = false: a token of its own for the same API, unbound, sent as Bearer.
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
    let unbound = seen[0].bearer.clone().expect("a Bearer token");
    for request in &seen {
        assert_eq!(request.bearer.as_deref(), Some(unbound.as_str()), "held");
        assert!(request.headers.get("dpop").is_none());
        assert!(request.token_active, "the provider vouches for it");
    }
    assert_ne!(unbound, exchanged);
    assert_eq!(jwt_payload(&unbound)["aud"], "orders-api");
    assert!(jwt_payload(&unbound).get("cnf").is_none());
    let introspected = app.provider.introspect(&unbound).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["token_type"], "Bearer", "{introspected}");
    assert!(introspected.get("cnf").is_none(), "{introspected}");
    assert_eq!(app.provider.exchange_grants().await, 2, "one per route");

    // The session's own route still goes as DPoP.
    passed(browser.api_get("/api/bound/orders/1").await).await;
    // No bound token (the session's, the exchanged one) ever left as Bearer, anywhere.
    let bound = [session_token.as_str(), exchanged.as_str()];
    for call in upstream.calls() {
        assert_eq!(call.scheme.as_deref(), Some("DPoP"), "{call:?}");
    }
    for request in app.upstream.seen() {
        let bearer = request.bearer.as_deref();
        assert!(
            bearer.is_none_or(|token| !bound.contains(&token)),
            "a bound token as Bearer at {}",
            request.path_and_query
        );
    }
}

#[tokio::test]
async fn an_upstreams_dpop_invalid_token_costs_one_refresh_bound_again_and_one_retry() {
    let upstream = DpopUpstream::start().await;
    let app = app_with(&upstream, "nonce", "").await;
    let browser = app.browser();
    browser.login("alice").await;
    let (thumbprint, first) = bound_session(&app, &browser).await;
    passed(browser.api_get("/api/bound/before").await).await;
    // The provider forgets the token: the upstream's introspection finds it inactive.
    app.provider.revoke_access_tokens().await;

    let answer = passed(browser.api_get("/api/bound/after").await).await;
    assert_eq!(answer["thumbprint"], thumbprint.as_str(), "{answer}");
    assert_eq!(app.provider.refresh_grants().await, 1);
    let after: Vec<_> = upstream
        .calls()
        .into_iter()
        .filter(|call| call.path_and_query == "/v1/after")
        .collect();
    assert_eq!(
        after.len(),
        2,
        "the rejected call and its one retry: {after:?}"
    );
    let refused = after[0].verdict.as_ref().unwrap_err();
    assert!(refused.starts_with("invalid_token"), "{refused}");
    assert_eq!(after[0].token.as_deref(), Some(first.as_str()));
    let renewed = after[1].token.clone().unwrap();
    assert_ne!(renewed, first);
    assert!(after[1].verdict.is_ok(), "{:?}", after[1]);
    for call in &after {
        assert_eq!(call.scheme.as_deref(), Some("DPoP"), "{call:?}");
    }
    // The refresh proved the same key: the new token is bound to it, and stored.
    assert_eq!(bound_session(&app, &browser).await, (thumbprint, renewed));
    passed(browser.api_get("/api/bound/later").await).await;
    assert_eq!(app.provider.refresh_grants().await, 1);
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
