//! Several providers in one deployment (`[[providers]]`): two oidc-provider instances with
//! their own issuers and keys, `staff` (first) and `partners`. A login goes where
//! `?provider=` says (a chooser page without it, a `400` for an unknown id); each session
//! refreshes and logs out at its own provider; a back-channel logout token ends sessions of
//! its issuer only; and a session from before `[[providers]]` is the first provider's.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

use crate::backchannel_logout::post_logout_token;
use crate::harness::browser::location;
use crate::harness::{
    Browser, ProviderOptions, TestApp, TestProvider, Upstream, free_port, spawn_vestibule,
    two_providers, wait_for,
};
use crate::logout::load_in_provider_iframe;

/// Two providers, access tokens living `ttl` seconds.
async fn two_provider_app(ttl: u64) -> TestApp {
    TestApp::builder()
        .access_token_ttl(ttl)
        .second_provider()
        .start()
        .await
}

/// Logs `browser` in as `user` at the provider `id`, asserting that it worked.
async fn login_at(browser: &Browser, id: &str, user: &str) {
    let response = browser
        .login_at(&format!("/api/auth/login?provider={id}"), user)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "callback redirects"
    );
    assert_eq!(browser.user().await.0, StatusCode::OK, "logged in at {id}");
}

/// A browser signed in as `staff_user` at staff and one as `partners_user` at partners.
async fn signed_in_at_each(
    app: &TestApp,
    staff_user: &str,
    partners_user: &str,
) -> (Browser, Browser) {
    let at_staff = app.browser();
    login_at(&at_staff, "staff", staff_user).await;
    let at_partners = app.browser();
    login_at(&at_partners, "partners", partners_user).await;
    (at_staff, at_partners)
}

/// The `iss` of the session's ID token.
async fn issuer_of(browser: &Browser) -> String {
    let (_, user) = browser.user().await;
    user["claims"]["iss"].as_str().unwrap().to_owned()
}

async fn alive(browser: &Browser) -> bool {
    browser.user().await.0 == StatusCode::OK
}

#[tokio::test]
async fn each_provider_logs_in_refreshes_and_logs_out_its_own_sessions() {
    let app = two_provider_app(4).await;
    let partners = app.second_provider.as_ref().unwrap();
    let (at_staff, at_partners) = signed_in_at_each(&app, "alice", "alice").await;
    assert_eq!(issuer_of(&at_staff).await, app.provider.issuer);
    assert_eq!(issuer_of(&at_partners).await, partners.issuer);

    // Each refresh goes to the provider that issued the refresh token, once.
    at_staff.wait_past_access_token_expiry().await;
    at_partners.wait_past_access_token_expiry().await;
    assert_eq!(
        at_staff.api_get("/api/orders/after").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        at_partners.api_get("/api/partners/after").await.status(),
        StatusCode::OK,
        "the partners' upstream accepts the token refreshed at partners"
    );
    assert_eq!(
        app.provider.refresh_grants().await,
        1,
        "staff refreshed once"
    );
    assert_eq!(
        partners.refresh_grants().await,
        1,
        "partners refreshed once"
    );
    assert_eq!(app.provider.stats().await["refresh_token_errors"], 0);
    assert_eq!(partners.stats().await["refresh_token_errors"], 0);
    let last = app.second_upstream.as_ref().unwrap().seen();
    assert!(last.last().unwrap().token_active, "{:?}", last.last());

    // Logout ends the provider session at the session's own provider.
    let (status, body) = at_partners.logout().await;
    assert_eq!(status, StatusCode::OK);
    // Compared by origin: the URL carries the ID token (as id_token_hint), never printed.
    let origin_of = |body: &Value| {
        let url = reqwest::Url::parse(body["end_session_url"].as_str().unwrap()).unwrap();
        url.origin().ascii_serialization()
    };
    assert_eq!(
        origin_of(&body),
        partners.issuer,
        "partners' end-session endpoint"
    );
    let (_, body) = at_staff.logout().await;
    assert_eq!(
        origin_of(&body),
        app.provider.issuer,
        "staff's end-session endpoint"
    );
}

/// The provider session `browser` is in (its ID token's `sid`).
async fn provider_session(browser: &Browser) -> String {
    let (_, user) = browser.user().await;
    user["claims"]["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_logout_token_ends_sessions_of_its_own_provider_only() {
    let app = two_provider_app(600).await;
    let partners = app.second_provider.as_ref().unwrap();
    let (at_staff, at_partners) = signed_in_at_each(&app, "alice", "alice").await;
    let staff_sid = provider_session(&at_staff).await;

    // Partners names alice, and even the sid of her staff session: same words, other provider.
    let claims = partners.logout_claims(Some("alice"), Some(&staff_sid), "p-1");
    let token = partners
        .logout_token_under("RS256", "provider", claims)
        .await;
    let (status, _, body) = post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        alive(&at_staff).await,
        "a partners token never ends a staff session"
    );
    assert!(
        alive(&at_partners).await,
        "no partners session had the staff sid"
    );

    // A token partners signed claiming to be staff's is verified with staff's keys: refused.
    let mut forged = partners.logout_claims(Some("alice"), None, "p-2");
    forged["iss"] = app.provider.issuer.clone().into();
    let token = partners
        .logout_token_under("RS256", "provider", forged)
        .await;
    let (status, _, body) = post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(alive(&at_staff).await, "the forged token ended nothing");

    // A token from an issuer that is none of ours is refused.
    let mut stranger = partners.logout_claims(Some("alice"), None, "p-3");
    stranger["iss"] = "https://stranger.example".into();
    let token = partners
        .logout_token_under("RS256", "provider", stranger)
        .await;
    assert_eq!(
        post_logout_token(&app.url, &token).await.0,
        StatusCode::BAD_REQUEST
    );

    // Partners' own token for alice ends her partners session, and only it.
    let token = partners.logout_token_for_sub("alice", "p-4").await;
    let (status, _, body) = post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(&at_partners).await, "ended by its own provider");
    assert!(alive(&at_staff).await, "staff's alice is another user");
    // And staff's token by sid ends the staff session.
    let token = app.provider.logout_token_for_sid(&staff_sid, "s-1").await;
    assert_eq!(post_logout_token(&app.url, &token).await.0, StatusCode::OK);
    assert!(!alive(&at_staff).await);
}

/// The chooser page's links (`href` values, HTML-unescaped).
fn links(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .map(|rest| {
            rest[..rest.find('"').unwrap()]
                .replace("&#38;", "&")
                .replace("&amp;", "&")
        })
        .collect()
}

#[tokio::test]
async fn without_a_provider_the_browser_chooses_and_an_unknown_one_is_refused() {
    let app = two_provider_app(600).await;
    let partners = app.second_provider.as_ref().unwrap();
    let browser = app.browser();

    let response = browser
        .get(browser.url("/api/auth/login?returnTo=%2Forders%3Fpage%3D2"))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the chooser, not a redirect"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page = response.text().await.unwrap();
    assert!(
        page.contains(">Staff<") && page.contains(">Partners<"),
        "{page}"
    );
    let links = links(&page);
    assert_eq!(links.len(), 2, "{links:?}");
    let to_partners = links
        .iter()
        .find(|link| link.contains("provider=partners"))
        .unwrap();
    assert!(
        to_partners.contains("returnTo=%2Forders%3Fpage%3D2"),
        "{to_partners}"
    );
    // Following it logs in at partners and comes back to the page asked for.
    let response = browser.login_at(to_partners, "bob").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response, &browser.url("/")).as_str(),
        browser.url("/orders?page=2").as_str()
    );
    assert_eq!(issuer_of(&browser).await, partners.issuer);

    // A foreign returnTo never reaches the page's links.
    let page = browser
        .get(browser.url("/api/auth/login?returnTo=https%3A%2F%2Fevil.example%2F"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("evil.example"), "{page}");

    // An unknown id: an error page for a navigation, JSON for a script asking for JSON.
    let response = browser
        .http()
        .get(browser.url("/api/auth/login?provider=nobody"))
        .header(ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("Unknown sign-in provider"), "{page}");
    let response = browser
        .http()
        .get(browser.url("/api/auth/login?provider=nobody"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unknown_provider", "{body}");
}

#[tokio::test]
async fn a_session_from_a_single_provider_deployment_stays_the_first_providers() {
    // Written by a deployment with `[oidc]` alone, as every session was before.
    let app = TestApp::builder().access_token_ttl(4).start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.cookie("vestibule").unwrap();

    // The same deployment, now listing a second provider after the first.
    let port = free_port();
    let partners = TestProvider::start(
        &format!("{}/api/auth/callback", app.url),
        &format!("{}/api/auth/logout-callback", app.url),
        &ProviderOptions::default(),
    );
    let partners_upstream = Upstream::start(&partners.issuer).await;
    let toml = two_providers(
        &app.config_listening_on(port),
        &partners,
        &partners_upstream,
    );
    let task = spawn_vestibule(&toml).await;
    let upgraded = Browser::with_session(&format!("http://127.0.0.1:{port}"), &cookie);
    assert!(alive(&upgraded).await, "the old session is served");

    // It refreshes at the first provider ...
    upgraded.wait_past_access_token_expiry().await;
    assert_eq!(
        upgraded.api_get("/api/orders/upgraded").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    assert_eq!(partners.refresh_grants().await, 0);
    // ... is not named by the second one's logout tokens, and is by the first's.
    let token = partners.logout_token_for_sub("alice", "p-1").await;
    assert_eq!(
        post_logout_token(&upgraded_base(port), &token).await.0,
        StatusCode::OK
    );
    assert!(alive(&upgraded).await);
    let token = app.provider.logout_token_for_sub("alice", "s-1").await;
    assert_eq!(
        post_logout_token(&upgraded_base(port), &token).await.0,
        StatusCode::OK
    );
    wait_for("the session to end", Duration::from_secs(2), || async {
        (!alive(&upgraded).await).then_some(())
    })
    .await;
    task.abort();
}

fn upgraded_base(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A step-up sends the browser back to the session's own provider, never to the chooser where
/// another provider could be picked.
#[tokio::test]
async fn a_step_up_logs_in_again_at_the_sessions_own_provider() {
    let app = TestApp::builder()
        .second_provider()
        .extra_toml(
            r#"
[[routes]]
prefix = "/api/payments"
upstream = "{upstream}"
[routes.step_up]
acr_values = ["mfa"]
"#,
        )
        .start()
        .await;
    for (id, user) in [("staff", "alice"), ("partners", "bob")] {
        let browser = app.browser();
        login_at(&browser, id, user).await;
        let login_url = crate::step_up::step_up_login_url(&browser, "/api/payments/pay").await;
        assert_eq!(
            login_url,
            format!("/api/auth/login?provider={id}&acr_values=mfa"),
            "{id}"
        );
    }
}

/// A front-channel logout request is routed by its `iss`: the same `sid` under the other
/// provider's issuer ends nothing, under its own it ends exactly that provider's session, and
/// only that provider may frame the page.
#[tokio::test]
async fn a_front_channel_logout_ends_sessions_of_the_provider_its_iss_names_only() {
    let app = two_provider_app(600).await;
    let partners = app.second_provider.as_ref().unwrap();
    let (at_staff, at_partners) = signed_in_at_each(&app, "alice", "alice").await;
    let urls = partners.frontchannel_logout_urls("alice").await;
    assert_eq!(urls.len(), 1, "{urls:?}");
    let own = reqwest::Url::parse(&urls[0]).unwrap();
    assert!(
        own.query_pairs()
            .any(|(name, value)| name == "iss" && value == partners.issuer.as_str()),
        "{own}"
    );

    // The partners session's sid under the staff issuer: no staff session has it.
    let mut forged = own.clone();
    let pairs: Vec<(String, String)> = own
        .query_pairs()
        .map(|(name, value)| {
            let value = if name == "iss" {
                app.provider.issuer.clone()
            } else {
                value.into_owned()
            };
            (name.into_owned(), value)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(
        load_in_provider_iframe(forged.as_str()).await.status(),
        StatusCode::OK
    );
    assert!(
        alive(&at_partners).await,
        "a staff-issuer request ends no partners session"
    );
    assert!(alive(&at_staff).await);

    let response = load_in_provider_iframe(&urls[0]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-security-policy"],
        format!("default-src 'none'; frame-ancestors {}", partners.issuer).as_str(),
        "only the partners provider may frame it"
    );
    assert!(
        !alive(&at_partners).await,
        "ended by its own provider's request"
    );
    assert!(
        alive(&at_staff).await,
        "the staff session is another provider's"
    );

    // Entra ID sends `sid` alone: it is looked up at every provider, and either may frame it.
    let carol = app.browser();
    login_at(&carol, "partners", "carol").await;
    let url = reqwest::Url::parse(&partners.frontchannel_logout_urls("carol").await[0]).unwrap();
    let mut without_iss = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != "iss")
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    without_iss.query_pairs_mut().clear().extend_pairs(pairs);
    let response = load_in_provider_iframe(without_iss.as_str()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-security-policy"],
        format!(
            "default-src 'none'; frame-ancestors {} {}",
            app.provider.issuer, partners.issuer
        )
        .as_str()
    );
    assert!(
        !alive(&carol).await,
        "a sid alone finds the second provider's session"
    );
    assert!(alive(&at_staff).await);
}

/// One provider down at start-up takes neither the instance out of the load balancer nor the
/// other provider's logins: `/readyz` is 200 and names the missing one, whose logins are `503`
/// until it is back.
#[tokio::test]
async fn one_provider_down_leaves_the_instance_ready_for_the_others() {
    let mut app = two_provider_app(600).await;
    app.second_provider.as_mut().unwrap().stop();
    let port = free_port();
    let task = spawn_vestibule(&app.config_listening_on(port)).await;
    let base = format!("http://127.0.0.1:{port}");
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["providers"]["staff"], "ok", "{body}");
    assert_eq!(
        body["checks"]["providers"]["partners"], "not_discovered",
        "{body}"
    );
    let browser = Browser::new(&base);
    let partners = browser.get("/api/auth/login?provider=partners").await;
    assert_eq!(partners.status(), StatusCode::SERVICE_UNAVAILABLE);
    login_at(&browser, "staff", "alice").await;
    task.abort();
}

/// `config` (two `[[providers]]`, staff then partners, then `[session]`) with its provider
/// entries replaced by what `arrange` makes of them.
fn with_providers_arranged(config: &str, arrange: impl Fn(&str, &str) -> String) -> String {
    let first = config.find("[[providers]]\n").unwrap();
    let second = first + 1 + config[first + 1..].find("[[providers]]\n").unwrap();
    let end = config.find("[session]").unwrap();
    format!(
        "{}{}{}",
        &config[..first],
        arrange(&config[first..second], &config[second..end]),
        &config[end..]
    )
}

/// A session's tokens never go to another provider: after `[[providers]]` is reordered, the
/// first provider's sessions (stored without a provider id) end at their next refresh instead of
/// being refreshed at the new first provider, while the moved provider's sessions keep working;
/// after a provider is removed, its sessions are refused at once.
#[tokio::test]
async fn a_session_whose_provider_was_moved_or_removed_is_refused_never_handed_to_another() {
    let app = two_provider_app(4).await;
    let partners_op = app.second_provider.as_ref().unwrap();
    let (at_staff, at_partners) = signed_in_at_each(&app, "alice", "bob").await;
    let staff_cookie = at_staff.cookie("vestibule").unwrap();
    let partners_cookie = at_partners.cookie("vestibule").unwrap();

    // Reordered: partners first.
    let port = free_port();
    let reordered = with_providers_arranged(&app.config_listening_on(port), |staff, partners| {
        format!("{partners}{staff}")
    });
    let task = spawn_vestibule(&reordered).await;
    let base = format!("http://127.0.0.1:{port}");
    let staff = Browser::with_session(&base, &staff_cookie);
    let partners = Browser::with_session(&base, &partners_cookie);
    assert_eq!(
        partners.user().await.0,
        StatusCode::OK,
        "reordered: partners"
    );
    let refresh_attempts = || async {
        let stats = partners_op.stats().await;
        (
            stats["refresh_token"].clone(),
            stats["refresh_token_errors"].clone(),
        )
    };
    let partners_grants = refresh_attempts().await;
    staff.wait_past_access_token_expiry().await;
    assert_eq!(
        staff.api_get("/api/orders/after").await.status(),
        StatusCode::UNAUTHORIZED,
        "reordered: the staff session ends rather than refresh at partners"
    );
    assert_eq!(
        refresh_attempts().await,
        partners_grants,
        "no staff refresh token reached partners, not even to be refused"
    );
    task.abort();

    // Removed: only staff.
    let port = free_port();
    let removed =
        with_providers_arranged(&app.config_listening_on(port), |staff, _| staff.to_owned());
    let task = spawn_vestibule(&removed).await;
    let base = format!("http://127.0.0.1:{port}");
    let partners = Browser::with_session(&base, &partners_cookie);
    assert_eq!(
        partners.user().await.0,
        StatusCode::UNAUTHORIZED,
        "removed: partners"
    );
    task.abort();
}

/// With several providers an identity assertion says whose `sub` it is: `idp`, the issuer of
/// the session's provider, since two providers may use one `sub` for two people.
#[tokio::test]
async fn assertions_name_the_provider_that_vouches_for_sub() {
    let app = TestApp::builder()
        .second_provider()
        .extra_toml(
            r#"
[[routes]]
prefix = "/api/identity"
upstream = "{upstream}"
[routes.credential]
kind = "assertion"
"#,
        )
        .start()
        .await;
    let partners = app.second_provider.as_ref().unwrap();
    let (at_staff, at_partners) = signed_in_at_each(&app, "alice", "alice").await;
    let audience = reqwest::Url::parse(&app.upstream.base_url)
        .unwrap()
        .origin()
        .ascii_serialization();
    for (caller, (browser, issuer)) in [
        (&at_staff, &app.provider.issuer),
        (&at_partners, &partners.issuer),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/api/identity/anonymous/caller-{caller}");
        assert_eq!(browser.api_get(&path).await.status(), StatusCode::OK);
        let seen = app
            .upstream
            .seen()
            .into_iter()
            .rev()
            .find(|seen| {
                seen.path_and_query
                    .ends_with(&format!("/anonymous/caller-{caller}"))
            })
            .expect("the upstream saw the call");
        let assertion = crate::assertion::header(&seen, "x-vestibule-assertion")
            .expect("an assertion was sent");
        let verified = crate::assertion::verify(&app.url, &app.url, &audience, &assertion)
            .await
            .unwrap_or_else(|error| panic!("the assertion does not verify: {error}"));
        assert_eq!(verified["payload"]["sub"], "alice");
        assert_eq!(verified["payload"]["idp"], issuer.as_str(), "whose alice");
    }
}
