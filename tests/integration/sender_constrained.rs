//! The three mechanisms of issue 33 at once, against the real oidc-provider configured to
//! require each: pushed authorization requests (`OP_PAR=required`), DPoP-bound tokens with
//! server nonces (`OP_DPOP=required`) and `private_key_jwt` with no client secret at all
//! (`OP_TOKEN_AUTH_METHOD=private_key_jwt`), and Vestibule with `oidc.par`, `oidc.dpop` and
//! `oidc.client_auth_method` to match. The browser carries only `client_id` and `request_uri`;
//! the provider's nonce challenge is answered; every request that authenticates the client
//! carries an assertion; an API that checks proofs as a resource server does accepts the
//! session's calls and refuses the token without a proof, with a forged proof and with a
//! replayed one; the refresh and the logout keep working.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::client_assertion::ring;
use crate::harness::dpop_upstream::{DpopUpstream, DpopUpstreamOptions};
use crate::harness::{Browser, TestApp};

/// A P-256 key for the client's key ring (made with `openssl genpkey`; test-only).
const CLIENT_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghTnjoG+2GLzmPnAB
J1uDbrFuKVa20GQct0yvD5+h3O6hRANCAATe3sxsVNTSrF837pmKIefO+cYNbQ0V
fHhlRnqylk37JoM3tK2B+Z6A8mANFJ6Oy6ykBAcl990qFEKsOj1A93ra
-----END PRIVATE KEY-----";

/// Signs `user` in, checking that the browser's authorization URL is a reference only.
async fn sign_in(browser: &Browser, user: &str) {
    let authorization = browser.begin_login_at("/api/auth/login").await;
    let names: BTreeSet<String> = authorization
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["client_id".to_owned(), "request_uri".to_owned()]),
        "only the pushed request's reference in the browser: {authorization}"
    );
    let callback = browser.authorize_at_provider(authorization, user).await;
    assert_eq!(
        browser.get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER,
        "callback redirects"
    );
}

#[tokio::test]
async fn par_dpop_and_private_key_jwt_all_required_work_together_and_a_stolen_token_is_useless() {
    let api = DpopUpstream::start_with(DpopUpstreamOptions {
        require_nonce: true,
        ..DpopUpstreamOptions::default()
    })
    .await;
    let app = TestApp::builder()
        .private_key_jwt(&ring(&[("k1", CLIENT_KEY)]))
        .provider_options(|options| {
            options.par = "required";
            options.dpop = Some("required");
        })
        .oidc_toml("par = \"required\"\ndpop = \"required\"\n")
        .access_token_ttl(3)
        .refresh_skew(1)
        .extra_toml(&format!(
            "[[routes]]\nprefix = \"/api/bound\"\nupstream = \"{}\"\n",
            api.base_url
        ))
        .start()
        .await;

    let alice = app.browser();
    sign_in(&alice, "alice").await;
    let bob = app.browser();
    sign_in(&bob, "bob").await;

    // Readiness says what was negotiated.
    let readiness: Value = app.browser().get("/readyz").await.json().await.unwrap();
    let negotiated = &readiness["negotiated"]["default"];
    assert_eq!(negotiated["client_authentication"], "private_key_jwt");
    assert_eq!(negotiated["par"], "on");
    assert_eq!(negotiated["dpop"], "on");

    // Each session's calls carry proofs of its own key, which the token is bound to.
    let response = alice.api_get("/api/bound/orders/1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = bob.api_get("/api/bound/orders/2").await;
    assert_eq!(response.status(), StatusCode::OK);
    let calls: Vec<_> = api
        .calls()
        .into_iter()
        .filter(|call| call.verdict.is_ok())
        .collect();
    assert_eq!(calls.len(), 2, "one accepted call per session");
    let mut keys = BTreeSet::new();
    for call in &calls {
        assert_eq!(call.scheme.as_deref(), Some("DPoP"));
        let facts = call.verdict.as_ref().unwrap();
        assert!(facts.nonce.is_some(), "the API's nonce is in the proof");
        let token = call.token.as_deref().unwrap();
        let seen = app.provider.introspect(token).await;
        assert_eq!(seen["active"], true, "{seen}");
        assert_eq!(seen["cnf"]["jkt"], facts.thumbprint.as_str(), "{seen}");
        keys.insert(facts.thumbprint.clone());
    }
    assert_eq!(keys.len(), 2, "two sessions, two keys");

    // The provider's nonce challenge was answered; every token request carried an assertion
    // signed with the ring's key and no secret; the pushes were authenticated the same way.
    let dpop: Value = reqwest::get(format!("{}/__test/dpop", app.provider.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        dpop["nonce_challenges"].as_u64().unwrap() >= 1,
        "the provider asked for a nonce: {dpop}"
    );
    assert_eq!(dpop["bound_token_responses"], 2, "{dpop}");
    let stats = app.provider.stats().await;
    let token_requests = stats["token_requests"].as_array().unwrap();
    assert!(!token_requests.is_empty(), "{stats}");
    for request in token_requests {
        assert_eq!(
            request["client_assertion"]["header"]["kid"], "k1",
            "{request}"
        );
        assert_eq!(
            request["client_assertion"]["claims"]["aud"],
            app.provider.issuer.as_str(),
            "{request}"
        );
    }
    assert_eq!(
        stats["par_requests"].as_array().unwrap().len(),
        2,
        "{stats}"
    );

    // A thief holding alice's token and one of her proofs gets nothing: the token alone as
    // Bearer, the token with the proof replayed, and the token with a proof for another URL.
    let stolen = calls[0].clone();
    let token = stolen.token.clone().unwrap();
    let proof = stolen.proof.clone().unwrap();
    let target = format!("{}/orders/1", api.base_url);
    let http = reqwest::Client::new();
    let as_bearer = http.get(&target).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        as_bearer.status(),
        StatusCode::UNAUTHORIZED,
        "token without proof"
    );
    // Each refusal is for the reason named: the verdict the API recorded for the last call.
    for (target, reason) in [
        (target.clone(), "replayed"),
        (format!("{}/orders/other", api.base_url), "htu"),
    ] {
        let presented = http
            .get(&target)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", &proof)
            .send()
            .await
            .unwrap();
        assert_eq!(presented.status(), StatusCode::UNAUTHORIZED, "{reason}");
        let why = api.calls().pop().unwrap().verdict.unwrap_err();
        assert!(why.contains(reason), "{why}");
    }
    let userinfo = http
        .get(format!("{}/me", app.provider.issuer))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        userinfo.status(),
        StatusCode::UNAUTHORIZED,
        "the provider too"
    );

    // The refresh proves possession of the same key; the logout ends only alice's session.
    alice.wait_past_access_token_expiry().await;
    assert_eq!(
        alice.api_get("/api/bound/after-expiry").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let refreshed = api.calls().pop().unwrap();
    assert_ne!(
        refreshed.token.as_deref(),
        Some(token.as_str()),
        "a new token"
    );
    let facts = refreshed.verdict.expect("a valid proof after the refresh");
    assert_eq!(
        facts.thumbprint,
        stolen.verdict.as_ref().unwrap().thumbprint,
        "the same key across the refresh"
    );
    let (status, _) = alice.logout().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alice.user().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bob.api_get("/api/bound/still").await.status(),
        StatusCode::OK
    );
}
