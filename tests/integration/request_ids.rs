//! Request ids: every answer carries `X-Request-Id`, the upstream sees the same id, a browser
//! cannot choose it, a trusted front proxy's id is kept end to end (when configured), and the
//! log lines of a request carry it (through the real binary's JSON log).

use reqwest::StatusCode;

use crate::harness::binary::VestibuleProcess;
use crate::harness::{Browser, TestApp, free_port};

/// The `X-Request-Id` of a response.
fn id_of(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_answer_has_an_id_of_its_own_and_the_upstream_sees_it() {
    let app = TestApp::start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let first = alice.api_get("/api/orders/1").await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = alice.api_get("/api/orders/2").await;
    let (first_id, second_id) = (id_of(&first), id_of(&second));
    assert_ne!(first_id, second_id);
    assert!(first_id.len() == 32 && first_id.bytes().all(|b| b.is_ascii_hexdigit()));
    let seen = app.upstream.seen();
    let sent: Vec<&str> = seen
        .iter()
        .map(|request| request.headers["x-request-id"].to_str().unwrap())
        .collect();
    assert_eq!(sent, [first_id.as_str(), second_id.as_str()]);

    // A browser cannot choose the id: its header is replaced, towards the upstream too.
    let chosen = alice
        .http()
        .get(alice.url("/api/orders/3"))
        .header("x-csrf", "1")
        .header("x-request-id", "chosen-by-the-browser")
        .send()
        .await
        .unwrap();
    assert_ne!(id_of(&chosen), "chosen-by-the-browser");
    let last = app.upstream.seen().pop().unwrap();
    assert_eq!(
        last.headers["x-request-id"].to_str().unwrap(),
        id_of(&chosen)
    );

    // Errors, probes and Vestibule's own endpoints carry one too.
    for path in ["/api/auth/user", "/healthz", "/api/nowhere", "/"] {
        let response = Browser::new(&app.url).api_get(path).await;
        assert!(!id_of(&response).is_empty(), "{path}");
    }
}

#[tokio::test]
async fn a_trusted_front_proxys_id_follows_the_request_into_the_upstream_and_the_logs() {
    let app = TestApp::builder()
        .extra_toml("\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\ntrust_request_id = true\n")
        .start()
        .await;
    let dir = std::env::temp_dir().join(format!("vestibule-request-ids-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let binary = VestibuleProcess::spawn_logging(&app.config_listening_on(port), port, &dir);
    binary.wait_until_ready().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let at_binary = Browser::with_session(&binary.base, &alice.cookie("vestibule").unwrap());

    let call = |id: &'static str, path: &'static str| {
        let browser = at_binary.clone();
        async move {
            browser
                .http()
                .get(browser.url(path))
                .header("x-csrf", "1")
                .header("x-request-id", id)
                .send()
                .await
                .unwrap()
        }
    };
    let response = call("edge-7f3a", "/api/orders/traced").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(id_of(&response), "edge-7f3a", "kept from the trusted proxy");
    let upstream = app.upstream.seen().pop().unwrap();
    assert_eq!(upstream.headers["x-request-id"], "edge-7f3a");
    // Not a plain token: replaced even from a trusted proxy.
    let response = call("two words", "/api/orders/x").await;
    assert_ne!(id_of(&response), "two words");

    // A refused request logs a line; it carries the request's id.
    let refused = Browser::new(&binary.base)
        .http()
        .get(format!("{}/api/orders/unauthenticated", binary.base))
        .header("x-csrf", "1")
        .header("x-request-id", "edge-refused-1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let line = crate::harness::wait_for(
        "the refusal's log line",
        std::time::Duration::from_secs(5),
        || async {
            binary
                .log_events()
                .into_iter()
                .find(|event| event["message"] == "request refused")
        },
    )
    .await;
    assert_eq!(line["span"]["request_id"], "edge-refused-1", "{line}");
    let _ = std::fs::remove_dir_all(dir);
}
