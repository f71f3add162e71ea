//! Each provider profile end to end against the test provider behaving as that provider
//! documents: login, transparent refresh (twice, so a rotated refresh token must have been
//! kept), back-channel logout where the provider offers it, and logout by the profile's own
//! strategy with the refresh token revoked. These are the "tested (simulated)" cells of the
//! provider matrix (`tests/provider_matrix.toml`); they are simulations of documented
//! behaviour, not live tenants. The providers that offer DPoP and PAR (Okta, Auth0) have a
//! second journey each with both switched on as their consoles do and Vestibule configured as
//! their pages say: only the pushed request's reference in the browser, tokens bound to the
//! session's key as an API that checks proofs and introspects sees them, a stolen token useless.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

use crate::harness::dpop_upstream::DpopUpstream;
use crate::harness::provider_grants::{ORDERS, jwt_payload};
use crate::harness::{ProviderOptions, TestApp, wait_for};

/// A route whose token is exchanged for `orders-api` (RFC 8693: Okta, Zitadel, authentik).
const EXCHANGE_ROUTE: &str = r#"
[[routes]]
prefix = "/api/per-api"
upstream = "{upstream}"
[routes.credential]
kind = "exchange"
audience = "orders-api"
scope = "orders:read"
"#;

/// A route whose token comes from the refresh token for one resource (Entra ID's "one resource
/// per token"; the test provider names the API as an RFC 8707 resource where Entra ID takes
/// it from the scope, `api://…/.default`).
const REFRESH_ROUTE: &str = r#"
[[routes]]
prefix = "/api/per-api"
upstream = "{upstream}"
[routes.credential]
kind = "refresh"
resource = "https://orders.example/"
scope = "orders:read"
"#;

/// Where the profile's logout sends the browser.
#[derive(Debug, Clone, Copy)]
enum Logout {
    /// The discovered `end_session_endpoint`, with a `state` that comes back.
    RpInitiated,
    /// The discovered `end_session_endpoint` with this `logout_hint` (Entra ID). The round trip
    /// is not taken: oidc-provider checks `id_token_hint` against its one issuer, and a
    /// tenant's ID token names the tenant's issuer (Entra ID itself accepts it).
    RpInitiatedWithHint(&'static str),
    /// The provider's own logout URL at this path, without a `state`.
    Template(&'static str),
    /// Nowhere: the session ends at Vestibule only.
    Local,
}

/// One provider as its profile meets it.
struct Simulation {
    profile: &'static str,
    /// How the test provider is told to behave like this one.
    provider: fn(&mut ProviderOptions),
    /// More `[oidc]` lines than `provider = "<profile>"`.
    oidc: &'static str,
    /// The path the test provider is discovered at (multi-tenant: `/organizations/v2.0`).
    issuer_path: &'static str,
    logout: Logout,
    /// A route of `/api/per-api` with its own credential, and the audience its token names.
    per_api: Option<(&'static str, &'static str)>,
    /// Whether the provider offers back-channel logout (Entra ID, Google, Cognito and Okta do
    /// not: their sessions end with the idle or absolute timeout, or by front-channel logout).
    back_channel: bool,
}

/// The token the upstream saw on the last call of the per-API route (`…/any-token/own`).
fn own_token(app: &TestApp) -> String {
    app.upstream
        .seen()
        .into_iter()
        .rev()
        .find(|seen| seen.path_and_query.ends_with("/any-token/own"))
        .and_then(|seen| seen.bearer)
        .expect("the per-API call carried a token")
}

/// Runs `simulation`'s journey: login, two refreshes, back-channel logout where offered, then
/// the profile's logout with revocation.
async fn journey(simulation: Simulation) {
    let profile = simulation.profile;
    let mut builder = TestApp::builder()
        .access_token_ttl(4)
        .refresh_skew(1)
        .provider_options(simulation.provider)
        .oidc_toml(&format!("provider = \"{profile}\"\n{}", simulation.oidc));
    if let Some((route, _)) = simulation.per_api {
        builder = builder.extra_toml(route);
    }
    if !simulation.issuer_path.is_empty() {
        builder = builder.issuer_path(simulation.issuer_path);
    }
    let app = builder.start().await;

    // Login, and the first call carries the login's token.
    let browser = app.browser();
    browser.login("alice").await;
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{profile}: {user}");
    assert_eq!(user["claims"]["sub"], "alice", "{profile}: {user}");
    assert_eq!(
        browser.api_get("/api/orders/first").await.status(),
        StatusCode::OK,
        "{profile}"
    );

    // An API of its own gets a token of its own.
    if let Some((_, audience)) = simulation.per_api {
        let response = browser.api_get("/api/per-api/any-token/own").await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{profile}: per-API route"
        );
        let own = own_token(&app);
        assert_eq!(jwt_payload(&own)["aud"], audience, "{profile}");
    }

    // Two expiries, two refresh grants: the second works only when the refresh token the
    // first answered (rotated, where the provider rotates) was kept.
    for round in 1..=2u64 {
        browser.wait_past_access_token_expiry().await;
        assert_eq!(
            browser.api_get("/api/orders/after").await.status(),
            StatusCode::OK,
            "{profile}: the call after expiry {round}"
        );
        assert_eq!(app.provider.refresh_grants().await, round, "{profile}");
    }
    let stats = app.provider.stats().await;
    assert_eq!(stats["refresh_token_errors"], 0, "{profile}: {stats}");
    let seen = app.upstream.seen();
    assert!(
        seen.iter()
            .filter(|request| !request.path_and_query.contains("/any-token/"))
            .all(|request| request.token_active),
        "{profile}: the upstream accepted every token"
    );

    // A provider-side end of bob's session reaches Vestibule over the back channel.
    if simulation.back_channel {
        let bob = app.browser();
        bob.login("bob").await;
        let (_, notified) = app.provider.end_sessions_of("bob").await;
        assert!(notified >= 1, "{profile}: a logout token was delivered");
        wait_for(
            "bob's session to end by back-channel logout",
            Duration::from_secs(5),
            || async { (bob.user().await.0 == StatusCode::UNAUTHORIZED).then_some(()) },
        )
        .await;
    }

    // Logout by the profile's strategy; the refresh token is revoked either way.
    let revoked_before = app.provider.stats().await["revocations"].as_u64().unwrap();
    let (status, body) = browser.logout().await;
    assert_eq!(status, StatusCode::OK, "{profile}: {body}");
    let logout_url = body["end_session_url"]
        .as_str()
        .map(|url| Url::parse(url).unwrap());
    let callback = format!("{}/api/auth/logout-callback", app.url);
    match (simulation.logout, logout_url) {
        (Logout::Local, url) => assert_eq!(url, None, "{profile}: a local logout"),
        (Logout::RpInitiated, Some(url)) => {
            let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            assert_eq!(query["post_logout_redirect_uri"], callback, "{profile}");
            assert!(query.contains_key("state"), "{profile}: {url}");
            let back = browser.end_session_at_provider(url.as_str()).await;
            assert_eq!(back.path(), "/api/auth/logout-callback", "{profile}");
            let landing = browser.get(back.as_str()).await;
            assert_eq!(landing.status(), StatusCode::SEE_OTHER, "{profile}");
            assert_eq!(
                app.provider.stats().await["end_session_success"],
                1,
                "{profile}"
            );
        }
        (Logout::RpInitiatedWithHint(hint), Some(url)) => {
            let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            assert_eq!(url.path(), "/session/end", "{profile}: {url}");
            assert_eq!(query["post_logout_redirect_uri"], callback, "{profile}");
            assert!(query.contains_key("state"), "{profile}: {url}");
            assert!(query.contains_key("id_token_hint"), "{profile}: {url}");
            assert_eq!(query["logout_hint"], hint, "{profile}");
        }
        (Logout::Template(path), Some(url)) => {
            assert_eq!(url.path(), path, "{profile}: {url}");
            assert!(!url.query_pairs().any(|(name, _)| name == "state"), "{url}");
            let back = browser.end_session_at_provider(url.as_str()).await;
            assert_eq!(back.as_str(), callback, "{profile}");
            assert_eq!(app.provider.legacy_logouts().await.len(), 1, "{profile}");
            let landing = browser.get(back.as_str()).await;
            assert_eq!(landing.status(), StatusCode::SEE_OTHER, "{profile}");
        }
        (expected, url) => panic!("{profile}: expected {expected:?}, got {url:?}"),
    }
    assert_eq!(
        browser.user().await.0,
        StatusCode::UNAUTHORIZED,
        "{profile}"
    );
    wait_for(
        "the refresh token's revocation",
        Duration::from_secs(5),
        || async {
            let revoked = app.provider.stats().await["revocations"].as_u64().unwrap();
            (revoked > revoked_before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn entra_simulation_multi_tenant_string_expires_in_logout_hint() {
    journey(Simulation {
        profile: "entra",
        provider: |options| {
            options.tenant = Some("tenant-a");
            options.expires_in_as_string = true;
            options.login_hint_claim = true;
        },
        oidc: "allowed_tenants = [\"tenant-a\"]\n",
        issuer_path: "/organizations/v2.0",
        logout: Logout::RpInitiatedWithHint("hint-for-alice"),
        per_api: None,
        back_channel: false,
    })
    .await;
}

#[tokio::test]
async fn auth0_simulation_without_end_session_logs_out_at_v2_logout() {
    journey(Simulation {
        profile: "auth0",
        provider: |options| {
            options.hide_end_session = true;
            options.legacy_logout = true;
        },
        oidc: "",
        issuer_path: "",
        logout: Logout::Template("/v2/logout"),
        per_api: None,
        back_channel: true,
    })
    .await;
}

#[tokio::test]
async fn google_simulation_refreshes_without_rotation_and_logs_out_locally() {
    journey(Simulation {
        profile: "google",
        provider: |options| {
            options.hide_end_session = true;
            options.always_issue_refresh_token = true;
            options.rotate_refresh_tokens = false;
        },
        oidc: "",
        issuer_path: "",
        logout: Logout::Local,
        per_api: None,
        back_channel: false,
    })
    .await;
}

#[tokio::test]
async fn cognito_simulation_with_rotation_logs_out_at_its_logout_endpoint() {
    journey(Simulation {
        profile: "cognito",
        provider: |options| {
            options.legacy_logout = true;
            // Cognito's refresh tokens come without offline_access.
            options.always_issue_refresh_token = true;
        },
        oidc: "",
        issuer_path: "",
        logout: Logout::Template("/logout"),
        per_api: None,
        back_channel: false,
    })
    .await;
}

#[tokio::test]
async fn okta_simulation_custom_server_rotation_rp_initiated_logout() {
    journey(Simulation {
        profile: "okta",
        provider: |_| {},
        oidc: "",
        issuer_path: "",
        logout: Logout::RpInitiated,
        per_api: Some((EXCHANGE_ROUTE, "orders-api")),
        back_channel: false,
    })
    .await;
}

#[tokio::test]
async fn zitadel_simulation_rotation_back_channel_and_rp_initiated_logout() {
    journey(Simulation {
        profile: "zitadel",
        provider: |_| {},
        oidc: "",
        issuer_path: "",
        logout: Logout::RpInitiated,
        per_api: Some((EXCHANGE_ROUTE, "orders-api")),
        back_channel: true,
    })
    .await;
}

#[tokio::test]
async fn authentik_simulation_rotation_back_channel_and_rp_initiated_logout() {
    journey(Simulation {
        profile: "authentik",
        provider: |_| {},
        oidc: "",
        issuer_path: "",
        logout: Logout::RpInitiated,
        per_api: Some((EXCHANGE_ROUTE, "orders-api")),
        back_channel: true,
    })
    .await;
}

/// Entra ID's "one resource per token": a route's own token from the session's refresh token,
/// under the multi-tenant simulation (the login asks for the resource, as Entra ID's consent
/// covers the API's scope).
#[tokio::test]
async fn entra_simulation_gets_a_token_per_api_from_the_refresh_token() {
    let app = TestApp::builder()
        .provider_options(|options| {
            options.tenant = Some("tenant-a");
            options.expires_in_as_string = true;
        })
        .issuer_path("/organizations/v2.0")
        .oidc_toml(&format!(
            "provider = \"entra\"\nallowed_tenants = [\"tenant-a\"]\n\
             scopes = [\"openid\", \"profile\", \"email\", \"offline_access\", \"orders:read\"]\n\
             resource = [\"{ORDERS}\"]\naudience = \"orders-api\"\n"
        ))
        .extra_toml(REFRESH_ROUTE)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let response = browser.api_get("/api/per-api/any-token/own").await;
    assert_eq!(response.status(), StatusCode::OK);
    let own = own_token(&app);
    assert_eq!(jwt_payload(&own)["aud"], ORDERS);
    assert_eq!(app.provider.refresh_grants_for(ORDERS).await, 1);
}

/// A provider that offers DPoP and PAR, switched on as its console does, with Vestibule
/// configured as its page in `docs/providers/` says.
struct SenderConstrained {
    profile: &'static str,
    /// How the test provider is told to behave like this one (its `par` and `dpop` included).
    provider: fn(&mut ProviderOptions),
    /// The `[oidc]` lines the provider's page asks for besides `provider = "<profile>"`.
    oidc: &'static str,
    /// Whether the provider asks for DPoP server nonces at its token endpoint (Okta always
    /// does; Auth0 asks none of a confidential client).
    nonces: bool,
}

/// The provider's DPoP counters (`nonce_challenges`, `bound_token_responses`).
async fn dpop_counters(app: &TestApp) -> Value {
    reqwest::get(format!("{}/__test/dpop", app.provider.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Runs `simulation`'s sender-constrained journey: a pushed login, a call through an API that
/// checks DPoP proofs and introspects the token, a stolen token refused, a refresh bound to
/// the same key, and logout.
async fn sender_constrained_journey(simulation: SenderConstrained) {
    let profile = simulation.profile;
    // An API that accepts only DPoP-bound tokens with a valid proof of the key the provider's
    // introspection names (`cnf.jkt`), as a resource server of that provider does.
    let api = DpopUpstream::start().await;
    let app = TestApp::builder()
        .access_token_ttl(4)
        .refresh_skew(1)
        .provider_options(simulation.provider)
        .oidc_toml(&format!("provider = \"{profile}\"\n{}", simulation.oidc))
        .extra_toml(&format!(
            "[[routes]]\nprefix = \"/api/bound\"\nupstream = \"{}\"\n",
            api.base_url
        ))
        .start()
        .await;
    api.introspect_at(&app.provider.issuer);

    // PAR: the browser carries the pushed request's reference and nothing else.
    let browser = app.browser();
    let authorization = browser.begin_login_at("/api/auth/login").await;
    let names: BTreeSet<String> = authorization
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["client_id".to_owned(), "request_uri".to_owned()]),
        "{profile}: only the pushed request's reference in the browser: {authorization}"
    );
    let pushes = app.provider.stats().await["par_requests"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(pushes, 1, "{profile}: the request was pushed");
    let callback = browser.authorize_at_provider(authorization, "alice").await;
    assert_eq!(
        browser.get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER,
        "{profile}: the callback redirects"
    );
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{profile}: {user}");

    // DPoP: the API gets the token as DPoP with a proof of the key the token is bound to.
    let response = browser.api_get("/api/bound/orders/1").await;
    let call = api.calls().pop().expect("the API was called");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{profile}: the API accepts the call ({:?}, {:?})",
        call.scheme,
        call.verdict
    );
    assert_eq!(call.scheme.as_deref(), Some("DPoP"), "{profile}");
    let key = call
        .verdict
        .expect("a valid proof of the token's key")
        .thumbprint;
    let token = call.token.expect("a token");
    let counters = dpop_counters(&app).await;
    assert_eq!(
        counters["bound_token_responses"], 1,
        "{profile}: {counters}"
    );
    let challenged = counters["nonce_challenges"].as_u64().unwrap() >= 1;
    assert_eq!(
        challenged, simulation.nonces,
        "{profile}: nonce challenges answered: {counters}"
    );
    let readiness: Value = app.browser().get("/readyz").await.json().await.unwrap();
    let negotiated = &readiness["negotiated"]["default"];
    assert_eq!(negotiated["par"], "on", "{profile}: {readiness}");
    assert_eq!(negotiated["dpop"], "on", "{profile}: {readiness}");

    // A thief holding the token alone gets nothing, at the API or at the provider.
    let http = reqwest::Client::new();
    let as_bearer = http
        .get(format!("{}/orders/1", api.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        as_bearer.status(),
        StatusCode::UNAUTHORIZED,
        "{profile}: the token without a proof at the API"
    );
    let userinfo = http
        .get(format!("{}/me", app.provider.issuer))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        userinfo.status(),
        StatusCode::UNAUTHORIZED,
        "{profile}: the token without a proof at the provider"
    );

    // The refresh proves possession of the same key, and the new token is bound to it.
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/bound/orders/after").await.status(),
        StatusCode::OK,
        "{profile}: the call after expiry"
    );
    assert_eq!(app.provider.refresh_grants().await, 1, "{profile}");
    let refreshed = api.calls().pop().unwrap();
    assert_ne!(
        refreshed.token.as_deref(),
        Some(token.as_str()),
        "{profile}"
    );
    assert_eq!(
        refreshed
            .verdict
            .expect("a valid proof after the refresh")
            .thumbprint,
        key,
        "{profile}: the same key across the refresh"
    );

    // Logout revokes the bound refresh token (RFC 7009 asks for no proof).
    let revoked_before = app.provider.stats().await["revocations"].as_u64().unwrap();
    let (status, body) = browser.logout().await;
    assert_eq!(status, StatusCode::OK, "{profile}: {body}");
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
    wait_for(
        "the refresh token's revocation",
        Duration::from_secs(5),
        || async {
            let stats = app.provider.stats().await;
            (stats["revocations"].as_u64().unwrap() > revoked_before).then_some(())
        },
    )
    .await;
    assert_eq!(
        app.provider.stats().await["revocation_errors"],
        0,
        "{profile}"
    );
}

/// Okta with "Require Pushed Authorization Request" and "Require Demonstrating Proof of
/// Possession (DPoP) header in token requests" on the app: every authorization request must
/// be pushed, every token request must carry a proof, and Okta always asks for a server nonce.
#[tokio::test]
async fn okta_simulation_with_par_and_dpop_required_binds_tokens_answering_nonces() {
    sender_constrained_journey(SenderConstrained {
        profile: "okta",
        provider: |options| {
            options.par = "required";
            options.dpop = Some("required");
        },
        oidc: "par = \"required\"\ndpop = \"required\"\n",
        nonces: true,
    })
    .await;
}

/// Auth0 with "Allow Pushed Authorization Requests (PAR)" on the tenant (discovery lists the
/// endpoint; PAR's default `auto` uses it) and "Require Sender Constraining" (DPoP) on the
/// application; Auth0 asks a confidential client for no DPoP nonce. Its logout stays the
/// `/v2/logout` of the first journey.
#[tokio::test]
async fn auth0_simulation_with_par_and_dpop_binds_tokens_and_pushes_the_login() {
    sender_constrained_journey(SenderConstrained {
        profile: "auth0",
        provider: |options| {
            options.hide_end_session = true;
            options.legacy_logout = true;
            options.par = "1";
            options.dpop = Some("1");
        },
        oidc: "dpop = \"required\"\n",
        nonces: false,
    })
    .await;
}
