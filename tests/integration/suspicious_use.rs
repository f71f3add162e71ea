//! Suspicious use, through the real binary and its JSON log: a session used from another
//! network with another browser family is reported (once) and, with
//! `session.suspicious_use = "end"`, ended everywhere with its refresh token revoked; another
//! network alone, or another browser alone, is not suspicious; a refresh token the provider
//! reports reused ends the session with its own event.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::binary::VestibuleProcess;
use crate::harness::{Browser, TestApp, free_port, wait_for};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

/// An app whose instances believe `X-Forwarded-For` from loopback (a balancer in front), so a
/// test can speak from any network; plus the real binary on the same Redis, logging JSON.
async fn stack(
    session_toml: &str,
    access_token_ttl: u64,
) -> (TestApp, VestibuleProcess, std::path::PathBuf) {
    let app = TestApp::builder()
        .session_toml(session_toml)
        .extra_toml("\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n")
        .access_token_ttl(access_token_ttl)
        .start()
        .await;
    let dir = std::env::temp_dir().join(format!("vestibule-suspicious-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let binary = VestibuleProcess::spawn_logging(&app.config_listening_on(port), port, &dir);
    binary.wait_until_ready().await;
    (app, binary, dir)
}

/// `GET /api/orders/x` at `base` with this browser's session, from `address` with `agent`.
async fn call_from(browser: &Browser, base: &str, address: &str, agent: &str) -> StatusCode {
    browser
        .http()
        .get(format!("{base}/api/orders/x"))
        .header("x-csrf", "1")
        .header("x-forwarded-for", address)
        .header("user-agent", agent)
        .send()
        .await
        .unwrap()
        .status()
}

/// The suspicious-use events of the binary's audit trail.
fn security_events(binary: &VestibuleProcess) -> Vec<Value> {
    binary
        .log_events()
        .into_iter()
        .filter(|event| event["target"] == "vestibule::audit" && event["event"] == "suspicious_use")
        .collect()
}

/// Waits until the binary has logged a security event; all of them so far.
async fn logged_security_events(binary: &VestibuleProcess) -> Vec<Value> {
    wait_for(
        "a security event",
        std::time::Duration::from_secs(5),
        || async {
            let events = security_events(binary);
            (!events.is_empty()).then_some(events)
        },
    )
    .await
}

/// This browser's session id in "my sessions".
async fn own_session_id(browser: &Browser) -> String {
    let listed: Value = browser
        .api_get("/api/auth/sessions")
        .await
        .json()
        .await
        .unwrap();
    listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|session| session["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn another_network_with_another_browser_is_reported_once_and_the_session_stays() {
    let (app, binary, dir) = stack("", 600).await;
    let alice = Browser::with_user_agent(&app.url, FIREFOX);
    alice.login("alice").await;
    let handle = own_session_id(&alice).await;
    let base = binary.base.clone();
    // Not suspicious: the same browser elsewhere (a train's Wi-Fi), another browser at home.
    assert_eq!(
        call_from(&alice, &base, "198.51.100.7", FIREFOX).await,
        StatusCode::OK
    );
    assert_eq!(
        call_from(&alice, &base, "127.0.0.9", CHROME).await,
        StatusCode::OK
    );
    assert!(
        security_events(&binary).is_empty(),
        "{:?}",
        security_events(&binary)
    );
    // Suspicious: both at once. Reported, and (by default) only reported.
    for _ in 0..3 {
        assert_eq!(
            call_from(&alice, &base, "198.51.100.7", CHROME).await,
            StatusCode::OK
        );
    }
    let events = logged_security_events(&binary).await;
    assert_eq!(
        events.len(),
        1,
        "reported once, not per request: {events:?}"
    );
    let event = &events[0];
    assert_eq!(event["event"], "suspicious_use");
    assert_eq!(event["reason"], "network_and_browser_changed");
    assert_eq!(event["outcome"], "logged");
    assert_eq!(event["session"], handle.as_str());
    assert_eq!(event["created_network"], "127.0.0.0/24");
    assert_eq!(event["client_network"], "198.51.100.0/24");
    assert!(
        event["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32),
        "{event}"
    );
    assert_eq!(
        (event["created_browser"].as_str(), event["browser"].as_str()),
        (Some("Firefox"), Some("Chrome"))
    );
    assert_eq!(alice.user().await.0, StatusCode::OK);
    let cookie = alice.cookie("vestibule").unwrap();
    let log = binary.log_text();
    assert!(
        !log.contains(&cookie[..20]) && !log.contains("alice"),
        "no cookie, no subject in the log"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn with_end_the_session_ends_everywhere_and_its_refresh_token_is_revoked() {
    let (app, binary, dir) = stack("suspicious_use = \"end\"\n", 600).await;
    let alice = Browser::with_user_agent(&app.url, FIREFOX);
    alice.login("alice").await;
    let handle = own_session_id(&alice).await;
    assert_eq!(app.provider.stored("RefreshToken").await, 1);
    assert_eq!(
        call_from(&alice, &binary.base, "198.51.100.7", CHROME).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        alice.user().await.0,
        StatusCode::UNAUTHORIZED,
        "gone on the other instance too"
    );
    wait_for(
        "the refresh token to be revoked",
        std::time::Duration::from_secs(5),
        || async { (app.provider.stored("RefreshToken").await == 0).then_some(()) },
    )
    .await;
    let events = logged_security_events(&binary).await;
    assert_eq!(events[0]["outcome"], "session_ended");
    assert_eq!(events[0]["session"], handle.as_str());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_refresh_token_the_provider_reports_reused_ends_the_session_with_a_security_event() {
    let (app, binary, dir) = stack("", 3).await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let handle = own_session_id(&alice).await;
    let at_binary = Browser::with_session(&binary.base, &alice.cookie("vestibule").unwrap());
    // The next refresh is refused in Keycloak's words for a reused refresh token.
    app.provider
        .fail_next_refresh(
            "invalid_grant",
            "Maximum allowed refresh token reuse exceeded",
        )
        .await;
    at_binary.wait_past_access_token_expiry().await;
    assert_eq!(
        at_binary.api_get("/api/orders/x").await.status(),
        StatusCode::UNAUTHORIZED,
        "the refresh was refused: the session ends"
    );
    assert_eq!(alice.user().await.0, StatusCode::UNAUTHORIZED);
    let events = logged_security_events(&binary).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "refresh_token_reused");
    assert_eq!(events[0]["outcome"], "session_ended");
    assert_eq!(events[0]["session"], handle.as_str());
    let _ = std::fs::remove_dir_all(dir);
}
