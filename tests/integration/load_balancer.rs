//! Three Vestibule instances behind a real nginx (round-robin, no stickiness) on one Redis:
//! a session logs in through the balancer, is refreshed by one instance and ended through
//! another; concurrent calls spread over all three at expiry cause exactly one refresh grant;
//! and a rolling restart of three real processes under load loses no request.

use reqwest::StatusCode;

use crate::harness::binary::VestibuleProcess;
use crate::harness::browser::call_concurrently;
use crate::harness::load::CallLoop;
use crate::harness::nginx::Nginx;
use crate::harness::{Browser, TestApp, free_port};

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_nginx_share_one_session_and_refresh_it_once() {
    let balancer_port = free_port();
    let mut app = TestApp::builder()
        .public_port(balancer_port)
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let first = app.url.clone();
    let second = app.start_another_instance().await;
    let third = app.start_another_instance().await;
    let _nginx = Nginx::start(
        balancer_port,
        &[port_of(&first), port_of(&second), port_of(&third)],
    )
    .await;
    let balancer = format!("http://127.0.0.1:{balancer_port}");

    // Log in through the balancer: the login's start and its callback may land anywhere.
    let browser = Browser::new(&balancer);
    browser.login("alice").await;
    let session = browser.cookie("vestibule").expect("a session cookie");
    for instance in [&first, &second, &third] {
        let (status, user) = Browser::with_session(instance, &session).user().await;
        assert_eq!(status, StatusCode::OK, "{instance} knows the session");
        assert_eq!(user["sub"], "alice");
    }

    // Refreshed by the second instance.
    let at_second = Browser::with_session(&second, &session);
    at_second.wait_past_access_token_expiry().await;
    assert_eq!(
        at_second
            .api_get("/api/orders/refreshed-here")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let (_, first_view) = Browser::with_session(&first, &session).user().await;
    let (_, second_view) = at_second.user().await;
    assert_eq!(
        first_view["session"]["access_token_expires_at"],
        second_view["session"]["access_token_expires_at"],
        "the first instance sees the second one's refresh"
    );

    // At the next expiry, 30 calls through the balancer reach all three: one grant.
    browser.wait_past_access_token_expiry().await;
    let statuses =
        call_concurrently(std::slice::from_ref(&browser), 30, "/api/orders/balanced").await;
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        app.provider.refresh_grants().await,
        2,
        "one refresh grant for 30 concurrent calls on three instances"
    );

    // Ended through the third instance: gone everywhere at once.
    let (status, _) = Browser::with_session(&third, &session).logout().await;
    assert_eq!(status, StatusCode::OK);
    for instance in [&first, &second, &third, &balancer] {
        let (status, _) = Browser::with_session(instance, &session).user().await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{instance} after logout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_request() {
    let balancer_port = free_port();
    let app = TestApp::builder().public_port(balancer_port).start().await;

    // Three real processes (they can be signalled), configured like the in-process instance.
    let mut instances: Vec<VestibuleProcess> = (0..3)
        .map(|_| {
            let port = free_port();
            let config = app.config_listening_on(port);
            VestibuleProcess::spawn(&config, port, app.redis().dir(), 1)
        })
        .collect();
    for instance in &instances {
        instance.wait_until_ready().await;
    }
    let ports: Vec<u16> = instances.iter().map(|i| port_of(&i.base)).collect();
    let _nginx = Nginx::start(balancer_port, &ports).await;
    let balancer = format!("http://127.0.0.1:{balancer_port}");
    let browser = Browser::new(&balancer);
    browser.login("alice").await;
    let session = browser.cookie("vestibule").expect("a session cookie");

    // Load: four clients calling through the balancer until told to stop.
    let load = CallLoop::start(
        &[Browser::with_session(&balancer, &session)],
        4,
        "/api/orders/rolling",
    );

    // Restart each instance in turn: SIGTERM, drained exit, start, ready again.
    for instance in &mut instances {
        instance.terminate();
        let exit = instance
            .wait_for_exit(std::time::Duration::from_secs(20))
            .await;
        assert!(exit.success(), "{exit}");
        instance.start();
        instance.wait_until_ready().await;
    }
    let statuses: Vec<StatusCode> = load.stop().await.concat();
    let failed: Vec<_> = statuses
        .iter()
        .filter(|status| **status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed during the rolling restart: {failed:?}",
        failed.len(),
        statuses.len()
    );
    assert!(
        statuses.len() >= 100,
        "the load ran through the restarts ({} calls)",
        statuses.len()
    );
}
