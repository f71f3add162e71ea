//! RP-initiated logout's way back (the `state` Vestibule sends with the end-session URL and
//! checks at `/api/auth/logout-callback`), against the real provider's logout.

use reqwest::StatusCode;
use url::Url;

use crate::harness::{Browser, TestApp};

/// The logout cookie's name over http.
const LOGOUT_COOKIE: &str = "vestibule-logout";

/// The `Set-Cookie` values of `response` that set `name`.
fn set_cookies_named(response: &reqwest::Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .filter(|value| value.starts_with(&format!("{name}=")))
        .collect()
}

/// Logs `browser` in as `user`, logs out through `POST /api/auth/logout` and confirms the
/// logout at the provider: the provider's redirect back (not yet visited) and the `state`
/// Vestibule sent.
async fn logged_out_at_provider(browser: &Browser, user: &str) -> (Url, String) {
    browser.login(user).await;
    let (status, body) = browser.logout().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let end_session = body["end_session_url"]
        .as_str()
        .expect("an end-session URL");
    let sent_state = Url::parse(end_session)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .expect("the end-session URL carries a state");
    let back = browser.end_session_at_provider(end_session).await;
    (back, sent_state)
}

async fn assert_refused_page(response: reqwest::Response, what: &str) {
    let status = response.status();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
    let cleared = set_cookies_named(&response, LOGOUT_COOKIE);
    assert!(
        cleared.iter().any(|cookie| cookie.contains("Max-Age=0")),
        "{what}: the logout cookie is cleared: {cleared:?}"
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/html"),
        "{what}: {content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("logout_not_confirmed"), "{what}: {body}");
}

#[tokio::test]
async fn rp_initiated_logout_sends_a_state_and_the_round_trip_through_the_provider_lands_home() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let response = browser
        .http()
        .post(browser.url("/api/auth/logout"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = set_cookies_named(&response, LOGOUT_COOKIE);
    assert_eq!(cookie.len(), 1, "one logout cookie: {cookie:?}");
    let cookie = &cookie[0];
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/api/auth/logout-callback",
        "Max-Age=600",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let body: serde_json::Value = response.json().await.unwrap();
    let end_session = Url::parse(body["end_session_url"].as_str().unwrap()).unwrap();
    let params: std::collections::HashMap<_, _> = end_session.query_pairs().into_owned().collect();
    assert_eq!(
        params["post_logout_redirect_uri"],
        format!("{}/api/auth/logout-callback", app.url)
    );
    let sent_state = params["state"].clone();
    assert!(sent_state.len() >= 22, "at least 128 bits: {sent_state}");
    // The state is only in the HttpOnly cookie, on the callback's path: nothing the page's
    // scripts could read (a document at `/` is not sent it either).
    assert_eq!(browser.cookie(LOGOUT_COOKIE), None, "not sent to /");

    let back = browser.end_session_at_provider(end_session.as_str()).await;
    assert_eq!(back.path(), "/api/auth/logout-callback");
    let returned: Vec<_> = back.query_pairs().filter(|(n, _)| n == "state").collect();
    assert_eq!(returned.len(), 1);
    assert_eq!(
        returned[0].1, sent_state,
        "the provider passed the state through"
    );
    assert_eq!(
        app.provider.stats().await["end_session_success"],
        1,
        "the provider ended its session"
    );

    let landing = browser.get(back.as_str()).await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(landing.headers()["location"], "/");
    assert_eq!(landing.headers()["cache-control"], "no-store");
    let cleared = set_cookies_named(&landing, LOGOUT_COOKIE);
    assert!(
        cleared.iter().any(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    // Used once: the same answer again is refused.
    assert_refused_page(browser.get(back.as_str()).await, "a replayed answer").await;
}

#[tokio::test]
async fn the_logout_link_sends_a_state_too_and_its_answer_leads_home() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    let response = browser.get(user["logout_url"].as_str().unwrap()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(set_cookies_named(&response, LOGOUT_COOKIE).len(), 1);
    let end_session = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(end_session.contains("state="), "{end_session}");
    let back = browser.end_session_at_provider(&end_session).await;
    let landing = browser.get(back.as_str()).await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(landing.headers()["location"], "/");
}

#[tokio::test]
async fn a_tampered_or_missing_state_or_a_missing_cookie_gets_an_error_page() {
    let app = TestApp::start().await;

    // Another state than the one this browser's logout sent (the suite's "other-state").
    let alice = app.browser();
    let (back, _) = logged_out_at_provider(&alice, "alice").await;
    let mut tampered = back.clone();
    let pairs: Vec<(String, String)> = back.query_pairs().into_owned().collect();
    tampered
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().map(|(n, v)| {
            if n == "state" {
                (n.clone(), format!("{v}_INVALID"))
            } else {
                (n.clone(), v.clone())
            }
        }));
    assert_refused_page(alice.get(tampered.as_str()).await, "a tampered state").await;

    // The genuine answer in a browser that did not start this logout (no logout cookie).
    let bob = app.browser();
    let (back, _) = logged_out_at_provider(&bob, "bob").await;
    let stranger = app.browser();
    assert_refused_page(stranger.get(back.as_str()).await, "no logout cookie").await;
    // ... which leaves bob's own way back intact.
    let landing = bob.get(back.as_str()).await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(landing.headers()["location"], "/");

    // No state at all (the suite's "no-state"): the provider must return the one it was sent.
    let carol = app.browser();
    let (back, _) = logged_out_at_provider(&carol, "carol").await;
    let mut stateless = back.clone();
    stateless.set_query(None);
    assert_refused_page(carol.get(stateless.as_str()).await, "no state").await;
}

/// Loads `url` as the provider's iframe would: no cookie of Vestibule's (a third-party frame
/// gets no `SameSite` cookie), no redirects followed.
pub(crate) async fn load_in_provider_iframe(url: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn front_channel_logout_ends_that_provider_sessions_session_without_its_cookie() {
    let app = TestApp::start().await;
    let laptop = app.browser();
    laptop.login("alice").await;
    let phone = app.browser();
    phone.login("alice").await;
    let bob = app.browser();
    bob.login("bob").await;
    let urls = app.provider.frontchannel_logout_urls("alice").await;
    assert_eq!(urls.len(), 2, "alice has two provider sessions: {urls:?}");
    assert!(
        urls[0].starts_with(&format!("{}/api/auth/frontchannel-logout?", app.url)),
        "{urls:?}"
    );

    let response = load_in_provider_iframe(&urls[0]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(
        headers["content-security-policy"],
        format!(
            "default-src 'none'; frame-ancestors {}",
            app.provider.issuer
        )
        .as_str(),
        "only the provider may frame the page"
    );
    assert!(!headers.contains_key("x-frame-options"), "{headers:?}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // Exactly the session created in that provider session ended; bob's is untouched.
    let statuses = [laptop.user().await.0, phone.user().await.0];
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == StatusCode::UNAUTHORIZED)
            .count(),
        1,
        "one of alice's two sessions ended: {statuses:?}"
    );
    assert_eq!(bob.user().await.0, StatusCode::OK, "bob's session survives");

    let response = load_in_provider_iframe(&urls[1]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(laptop.user().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(phone.user().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(bob.user().await.0, StatusCode::OK, "bob's session survives");
    // The provider may load it again (or for a session that is long gone): still 200.
    assert_eq!(
        load_in_provider_iframe(&urls[1]).await.status(),
        StatusCode::OK
    );
    // Each ended session's refresh token is revoked, as for back-channel logout.
    crate::harness::wait_for(
        "the refresh tokens' revocation",
        std::time::Duration::from_secs(5),
        || async {
            (app.provider.stats().await["revocations"].as_u64().unwrap() == 2).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn front_channel_logout_refuses_a_foreign_issuer_and_a_missing_sid() {
    let mut app = TestApp::start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let urls = app.provider.frontchannel_logout_urls("alice").await;
    let genuine = Url::parse(&urls[0]).unwrap();
    let with = |pairs: &[(&str, &str)]| {
        let mut url = genuine.clone();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        url.to_string()
    };
    let sid = genuine
        .query_pairs()
        .find(|(name, _)| name == "sid")
        .unwrap()
        .1
        .into_owned();
    let issuer = app.provider.issuer.clone();
    for (what, url) in [
        (
            "another issuer",
            with(&[("iss", "https://evil.example"), ("sid", &sid)]),
        ),
        (
            "the issuer with a trailing slash",
            with(&[("iss", &format!("{issuer}/")), ("sid", &sid)]),
        ),
        ("no sid", with(&[("iss", &issuer)])),
        ("an empty sid", with(&[("iss", &issuer), ("sid", "")])),
    ] {
        let response = load_in_provider_iframe(&url).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{what}"
        );
        assert_eq!(alice.user().await.0, StatusCode::OK, "{what} ends nothing");
    }

    // Redis down: the sessions cannot be ended, and the provider's page is not told they were.
    app.redis.as_mut().unwrap().stop().await;
    let response = load_in_provider_iframe(&urls[0]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// Entra ID calls the front-channel URI with `sid` alone: with one provider configured, a
/// missing `iss` is no reason to refuse. And an unauthenticated front-channel call leaves no
/// mark behind: a later login in the same provider session (single sign-on, same `sid`)
/// works, or whoever learnt a `sid` could keep its user out; a `sid` nobody has writes nothing
/// to Redis.
#[tokio::test]
async fn front_channel_logout_by_sid_alone_ends_the_session_and_blocks_no_later_login() {
    let app = TestApp::start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let urls = app.provider.frontchannel_logout_urls("alice").await;
    let genuine = Url::parse(&urls[0]).unwrap();
    let sid = genuine
        .query_pairs()
        .find(|(name, _)| name == "sid")
        .unwrap()
        .1
        .into_owned();
    let mut sid_alone = genuine.clone();
    sid_alone.query_pairs_mut().clear().append_pair("sid", &sid);

    // The record cache's own liveness probes come and go on their own; every other key counts.
    let keys = || async {
        let mut keys = app.redis().keys("*").await;
        keys.retain(|key| !key.starts_with("vestibule:cache-probe:"));
        keys.sort();
        keys
    };
    let keys_before = keys().await;
    let mut unknown = genuine.clone();
    unknown
        .query_pairs_mut()
        .clear()
        .append_pair("sid", "a-sid-nobody-has");
    assert_eq!(
        load_in_provider_iframe(unknown.as_str()).await.status(),
        StatusCode::OK
    );
    assert_eq!(keys().await, keys_before, "an unknown sid writes nothing");

    let response = load_in_provider_iframe(sid_alone.as_str()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(alice.user().await.0, StatusCode::UNAUTHORIZED, "ended");

    // Logging in again in the same provider session is not refused by the front-channel call.
    alice.login("alice").await;
    assert_eq!(alice.user().await.0, StatusCode::OK);
    let again = app.provider.frontchannel_logout_urls("alice").await;
    assert!(
        again.iter().any(|url| url.contains(&format!("sid={sid}"))
            || Url::parse(url)
                .unwrap()
                .query_pairs()
                .any(|(name, value)| name == "sid" && value == sid.as_str())),
        "the new login is in the same provider session: {again:?}"
    );
}
