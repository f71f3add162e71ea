//! Stopping the real binary as an orchestrator does (SIGTERM): readiness turns 503 at once,
//! new connections are still accepted for `server.shutdown_delay_secs`, a request in flight
//! finishes, and only then does the process exit and its port refuse connections.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::binary::VestibuleProcess;
use crate::harness::{Browser, TestApp, free_port, wait_for};

const DELAY_SECS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_keeps_accepting_for_the_delay_then_drains_and_exits() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let session = browser.cookie("vestibule").expect("a session cookie");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = app
        .config_listening_on(port)
        // The upstream's /slow answers after 5 s: let the route wait for it.
        .replacen("timeout_secs = 2", "timeout_secs = 15", 1);
    let mut process = VestibuleProcess::spawn(&config, port, app.redis().dir(), DELAY_SECS);
    process.wait_until_ready().await;

    // A call in flight (the same session, through the binary), reaching the upstream first.
    let in_flight = Browser::new(&base);
    in_flight.set_cookie("vestibule", &session);
    let call = tokio::spawn(async move { in_flight.api_get("/api/orders/slow").await.status() });
    wait_for(
        "the slow call to reach the upstream",
        Duration::from_secs(10),
        || async {
            app.upstream
                .seen()
                .iter()
                .any(|seen| seen.path_and_query.ends_with("/slow"))
                .then_some(())
        },
    )
    .await;

    let signalled = Instant::now();
    process.terminate();

    // Not ready at once, but still accepting new connections (each probe is one).
    let (_, body) = wait_for("readiness to turn 503", Duration::from_secs(5), || async {
        process
            .readiness()
            .await
            .filter(|(status, _)| *status == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert_eq!(body["checks"]["lifecycle"], "stopping");
    let healthz = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(
        healthz.status(),
        StatusCode::OK,
        "new connections still served"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(DELAY_SECS),
        "the checks above ran within the delay"
    );

    // The call in flight finishes; then the process exits and the port refuses.
    let outcome = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the in-flight call finished")
        .unwrap();
    assert_eq!(
        outcome,
        StatusCode::OK,
        "the in-flight call was drained, not cut"
    );
    let exit = process.wait_for_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "a clean exit: {exit}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(DELAY_SECS),
        "the listener stayed open for server.shutdown_delay_secs"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the port refuses connections after exit"
    );
}
