//! What one client may cost: login starts per address, logins in progress per browser and
//! in total (the oldest are displaced, never more are stored).

use reqwest::StatusCode;

use crate::harness::{Browser, TestApp};

/// Starts a login as a navigation from `client` (an address a trusted balancer reports).
async fn start_login_from(browser: &Browser, client: &str) -> reqwest::Response {
    browser
        .http()
        .get(browser.url("/api/auth/login"))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
}

async fn pending_logins(app: &TestApp) -> usize {
    let mut conn = app.redis().connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("vestibule:login:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test]
async fn login_starts_past_the_rate_limit_get_429_with_retry_after_and_store_nothing() {
    let app = TestApp::builder()
        .login_settings("rate_limit_per_minute = 6\nrate_limit_burst = 3\n")
        .extra_toml("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .start()
        .await;
    let browser = app.browser();
    for _ in 0..3 {
        let started = start_login_from(&browser, "198.51.100.4").await;
        assert_eq!(started.status(), StatusCode::SEE_OTHER);
    }
    let refused = start_login_from(&browser, "198.51.100.4").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=10).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let content_type = refused.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/html"),
        "a page for a navigation"
    );
    assert!(refused.text().await.unwrap().contains("/api/auth/login"));
    assert_eq!(
        pending_logins(&app).await,
        3,
        "the refused start stored nothing"
    );

    // Another client behind the same balancer is not affected.
    let other = start_login_from(&browser, "198.51.100.5").await;
    assert_eq!(other.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn one_browser_keeps_only_its_newest_pending_logins() {
    let app = TestApp::builder()
        .login_settings("rate_limit_burst = 100\nmax_pending_per_browser = 3\n")
        .start()
        .await;
    let browser = app.browser();
    let mut started = Vec::new();
    for tab in 0..5 {
        started.push(browser.begin_login(Some(&format!("/tab{tab}"))).await);
    }
    assert_eq!(pending_logins(&app).await, 3);
    // The oldest two were dropped: their callbacks fail; the newest complete.
    let oldest = started.remove(0);
    let callback = browser.authorize_at_provider(oldest, "alice").await;
    assert_eq!(
        browser.get(callback.as_str()).await.status(),
        StatusCode::BAD_REQUEST
    );
    let newest = started.pop().unwrap();
    let callback = browser.authorize_at_provider(newest, "alice").await;
    let done = browser.get(callback.as_str()).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()["location"], "/tab4");
}

#[tokio::test]
async fn logins_in_progress_are_capped_in_total_by_displacing_the_oldest() {
    let app = TestApp::builder()
        .login_settings("rate_limit_burst = 100\nmax_pending_total = 3\n")
        .start()
        .await;
    let browsers: Vec<Browser> = (0..5).map(|_| app.browser()).collect();
    let mut started = Vec::new();
    for browser in &browsers {
        started.push(browser.begin_login(None).await);
    }
    assert_eq!(pending_logins(&app).await, 3, "never more than the cap");
    let mut conn = app.redis().connection().await;
    let indexed: usize = redis::cmd("ZCARD")
        .arg("vestibule:pending-logins")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(indexed, 3);
    let browser_indexes: Vec<String> = redis::cmd("KEYS")
        .arg("vestibule:login-browser:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        browser_indexes.len(),
        3,
        "a displaced login leaves its browser's index too (no index per flooded start)"
    );

    // The two oldest were displaced; the newest complete.
    let callback = browsers[0]
        .authorize_at_provider(started.remove(0), "alice")
        .await;
    assert_eq!(
        browsers[0].get(callback.as_str()).await.status(),
        StatusCode::BAD_REQUEST
    );
    let callback = browsers[4]
        .authorize_at_provider(started.pop().unwrap(), "bob")
        .await;
    assert_eq!(
        browsers[4].get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        pending_logins(&app).await,
        2,
        "a finished login frees its place"
    );
}

#[tokio::test]
async fn concurrent_starts_never_leave_more_pending_logins_than_the_cap() {
    let app = TestApp::builder()
        .login_settings("rate_limit_burst = 1000\nmax_pending_total = 20\n")
        .start()
        .await;
    let starts = (0..120).map(|_| {
        let browser = app.browser();
        async move { browser.get("/api/auth/login").await.status() }
    });
    let statuses = futures_util::future::join_all(starts).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::SEE_OTHER),
        "{statuses:?}"
    );
    assert_eq!(pending_logins(&app).await, 20);
}

#[tokio::test]
async fn the_in_memory_store_caps_pending_logins_too() {
    let app = TestApp::builder()
        .in_memory()
        .login_settings("rate_limit_burst = 100\nmax_pending_total = 2\n")
        .start()
        .await;
    let first = app.browser();
    let oldest = first.begin_login(None).await;
    app.browser().begin_login(None).await;
    app.browser().begin_login(None).await;
    let callback = first.authorize_at_provider(oldest, "alice").await;
    assert_eq!(
        first.get(callback.as_str()).await.status(),
        StatusCode::BAD_REQUEST,
        "displaced by the newer two"
    );
}
