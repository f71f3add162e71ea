//! Three Vestibule instances behind a real nginx (round-robin, no stickiness) on one Redis:
//! a session logs in through the balancer, is refreshed by one instance and ended through
//! another; concurrent calls spread over all three at expiry cause exactly one refresh grant.

use reqwest::StatusCode;

use crate::harness::browser::call_concurrently;
use crate::harness::nginx::Nginx;
use crate::harness::{Browser, TestApp, free_port};

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A browser at `base` holding the session cookie `session` (one browser, another door).
fn with_session(base: &str, session: &str) -> Browser {
    let browser = Browser::new(base);
    browser.set_cookie("vestibule", session);
    browser
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
        let (status, user) = with_session(instance, &session).user().await;
        assert_eq!(status, StatusCode::OK, "{instance} knows the session");
        assert_eq!(user["sub"], "alice");
    }

    // Refreshed by the second instance.
    let at_second = with_session(&second, &session);
    at_second.wait_past_access_token_expiry().await;
    assert_eq!(
        at_second
            .api_get("/api/orders/refreshed-here")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let (_, first_view) = with_session(&first, &session).user().await;
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
    let (status, _) = with_session(&third, &session).logout().await;
    assert_eq!(status, StatusCode::OK);
    for instance in [&first, &second, &third, &balancer] {
        let (status, _) = with_session(instance, &session).user().await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{instance} after logout");
    }
}
