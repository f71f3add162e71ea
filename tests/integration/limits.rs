//! What one client may cost: login starts per address, logins in progress per browser and
//! in total (the oldest are displaced, never more are stored).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;

use crate::harness::browser::location;
use crate::harness::{Browser, TestApp, logs};
use vestibule::http::login_limit::NETWORK_FACTOR;

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
    app.redis().keys("vestibule:login:*").await.len()
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
    let browser_indexes = app.redis().keys("vestibule:login-browser:*").await;
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

/// The defaults' campus NAT: this many browsers start their logins through one address.
const BROWSERS_BEHIND_ONE_NAT: usize = 1_000;

// Two worker threads: the in-process Vestibule must not wait behind a thousand browsers'
// page parsing on the test's one thread (its 1 s Redis reply limit counts that wait). On a
// loaded runner one login in a thousand got a 503, most likely that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_browsers_behind_one_nat_all_log_in_within_a_minute_at_the_defaults() {
    // The [login] defaults, and every browser comes from one address: the loopback peer.
    let app = TestApp::builder().login_settings("").start().await;
    let log_from = logs::position();
    let browsers: Vec<Browser> = (0..BROWSERS_BEHIND_ONE_NAT)
        .map(|_| app.browser())
        .collect();
    // The hardest shape for a rate limit: every start as fast as the machine allows (a NAT's
    // users after an outage, every tab redirected at once), before any login completes.
    let started_at = std::time::Instant::now();
    let authorizations: Vec<reqwest::Response> = stream::iter(&browsers)
        .map(|browser| browser.get("/api/auth/login"))
        .buffered(32)
        .collect()
        .await;
    let starting = started_at.elapsed();
    assert!(
        starting < Duration::from_secs(60),
        "the starts took {starting:?}: not a minute's worth"
    );
    let refused = authorizations
        .iter()
        .filter(|response| response.status() != StatusCode::SEE_OTHER)
        .count();
    assert_eq!(
        refused, 0,
        "{refused} of {BROWSERS_BEHIND_ONE_NAT} login starts from one address were refused"
    );
    let logins = browsers
        .iter()
        .zip(&authorizations)
        .enumerate()
        .map(|(i, (browser, started))| {
            let authorization = location(started, &browser.url("/api/auth/login"));
            let login = async move {
                let user = format!("nat-user-{i}");
                let finish = |authorization| async {
                    let callback = browser.authorize_at_provider(authorization, &user).await;
                    browser.get(callback.as_str()).await.status()
                };
                let mut finished = finish(authorization).await;
                // A 503 is the answer to a store reply slower than its limit (a starved CI
                // runner): the user logs in again, as a person would, and must get in.
                let again = finished == StatusCode::SERVICE_UNAVAILABLE;
                if again {
                    let restarted = browser.get("/api/auth/login").await;
                    finished = finish(location(&restarted, &browser.url("/api/auth/login"))).await;
                }
                (finished, browser.user().await.0, again)
            };
            // A login that fails inside the harness is reported with the others, by its
            // message, rather than ending the test at the first one.
            std::panic::AssertUnwindSafe(login)
                .catch_unwind()
                .map(|outcome| outcome.map_err(|panic| panic_message(&panic)))
        });
    let outcomes: Vec<Result<(StatusCode, StatusCode, bool), String>> =
        stream::iter(logins).buffer_unordered(16).collect().await;
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|outcome| !matches!(outcome, Ok((StatusCode::SEE_OTHER, StatusCode::OK, _))))
        .collect();
    let logged_in_again = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Ok((_, _, true))))
        .count();
    assert!(
        logged_in_again <= BROWSERS_BEHIND_ONE_NAT / 100,
        "{logged_in_again} of {BROWSERS_BEHIND_ONE_NAT} logins had to start again after a 503; \
         warnings meanwhile:\n{}",
        warnings_since(log_from)
    );
    assert!(
        failed.is_empty(),
        "{} of {BROWSERS_BEHIND_ONE_NAT} logins failed: {:?}; warnings meanwhile:\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        warnings_since(log_from)
    );
}

/// The last warnings and errors logged since `from` (by any test of this process).
fn warnings_since(from: usize) -> String {
    let log = logs::since(from);
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

#[tokio::test]
async fn a_login_flood_from_one_address_is_throttled_at_the_defaults() {
    let app = TestApp::builder()
        .login_settings("")
        .extra_toml("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .start()
        .await;
    let defaults = vestibule::config::LoginSettings::default();
    let flood = 3 * defaults.rate_limit_burst as usize;
    // Thousands of cookie-less starts, as fast as they go (each a "new browser").
    let started_at = std::time::Instant::now();
    let statuses: Vec<StatusCode> = stream::iter(0..flood)
        .map(|_| {
            let browser = app.browser();
            async move {
                let response = start_login_from(&browser, "203.0.113.7").await;
                if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    assert!(
                        response.headers().contains_key("retry-after"),
                        "a refusal says when to come back"
                    );
                }
                response.status()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started_at.elapsed().as_secs_f64();
    let admitted = statuses
        .iter()
        .filter(|s| **s == StatusCode::SEE_OTHER)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(admitted + refused, flood, "only 303 or 429: {statuses:?}");
    // The burst, plus what the rate refills while the flood lasts (one more for rounding).
    let allowed = f64::from(defaults.rate_limit_burst)
        + f64::from(defaults.rate_limit_per_minute) * elapsed / 60.0
        + 1.0;
    assert!(
        admitted as f64 <= allowed,
        "{admitted} starts admitted in {elapsed:.1} s; the defaults allow {allowed:.0}"
    );
    assert!(
        refused > 0 && refused >= flood - allowed as usize,
        "{refused} of {flood} refused in {elapsed:.1} s"
    );
    assert_eq!(
        pending_logins(&app).await,
        admitted,
        "refused starts store nothing"
    );

    // One browser's logins in progress stay capped at the default, however many it starts.
    let browser = Browser::new(&app.url);
    let mut conn = app.redis().connection().await;
    let before = pending_logins(&app).await;
    let other_address = "198.51.100.77";
    for _ in 0..2 * defaults.max_pending_per_browser {
        let started = start_login_from(&browser, other_address).await;
        assert_eq!(started.status(), StatusCode::SEE_OTHER);
    }
    let mut largest = 0;
    for index in app.redis().keys("vestibule:login-browser:*").await {
        let size: usize = redis::cmd("ZCARD")
            .arg(&index)
            .query_async(&mut conn)
            .await
            .unwrap();
        largest = largest.max(size);
    }
    assert_eq!(largest, defaults.max_pending_per_browser);
    assert_eq!(
        pending_logins(&app).await,
        before + defaults.max_pending_per_browser
    );
}

#[tokio::test]
async fn refusals_behind_a_proxy_that_is_not_trusted_tell_the_operator_what_to_configure() {
    // A load balancer adds X-Forwarded-For, but server.trusted_proxies is left empty: every
    // user behind it shares the balancer's budget.
    let app = TestApp::builder()
        .login_settings("rate_limit_per_minute = 6\nrate_limit_burst = 1\n")
        .start()
        .await;
    let from = logs::position();
    let browser = app.browser();
    assert_eq!(
        start_login_from(&browser, "198.51.100.4").await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        start_login_from(&browser, "198.51.100.5").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the header is not believed: both users are the balancer"
    );
    start_login_from(&browser, "198.51.100.6").await;
    let log = logs::since(from);
    // Each event is captured in both formats; count the JSON lines.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with('{') && line.contains("server.trusted_proxies is empty"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning a minute: {log}");
    assert!(
        warnings[0].contains("\"network\":\"127.0.0.0/24\"") && !warnings[0].contains("198.51.100"),
        "the warning names the balancer's network, never an address: {}",
        warnings[0]
    );
}

#[tokio::test]
async fn a_flood_from_one_network_on_two_instances_never_displaces_a_login_in_progress() {
    let trusted = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n";
    let mut app = TestApp::builder()
        .login_settings("")
        .extra_toml(trusted)
        .start()
        .await;
    let instances = [app.url.clone(), app.start_another_instance().await];
    // A user on another network starts a login and takes their time (a password manager, a
    // second factor, a consent screen).
    let user = app.browser();
    let started = start_login_from(&user, "192.0.2.10").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let authorization = location(&started, &user.url("/api/auth/login"));

    // Meanwhile one /24 floods both instances from all its addresses, until each instance has
    // refused plenty: the network's whole budget is spent on both.
    let defaults = vestibule::config::LoginSettings::default();
    let flooder = |i: usize| {
        let base = instances[i % 2].clone();
        async move {
            let response = Browser::new(&base)
                .http()
                .get(format!("{base}/api/auth/login"))
                .header("x-forwarded-for", format!("198.51.100.{}", i % 250 + 1))
                .send()
                .await
                .unwrap();
            (i % 2, response.status())
        }
    };
    let started_at = std::time::Instant::now();
    let (mut admitted, mut refused, mut sent) = ([0usize; 2], [0usize; 2], 0);
    while refused.iter().any(|count| *count < 500) {
        let batch: Vec<(usize, StatusCode)> = stream::iter(sent..sent + 1000)
            .map(flooder)
            .buffer_unordered(64)
            .collect()
            .await;
        sent += batch.len();
        for (instance, status) in batch {
            match status {
                StatusCode::SEE_OTHER => admitted[instance] += 1,
                StatusCode::TOO_MANY_REQUESTS => refused[instance] += 1,
                other => panic!("a flooded start answered {other}"),
            }
        }
    }
    let elapsed = started_at.elapsed().as_secs_f64();
    let network_burst = f64::from(defaults.rate_limit_burst * NETWORK_FACTOR);
    let network_rate = f64::from(defaults.rate_limit_per_minute * NETWORK_FACTOR) / 60.0;
    for count in admitted {
        assert!(
            count as f64 <= network_burst + network_rate * elapsed + 1.0,
            "{count} starts of one /24 admitted by one instance in {elapsed:.1} s"
        );
    }
    // Well within the total cap: nothing was displaced, the user's login completes.
    assert!(
        admitted.iter().sum::<usize>() < defaults.max_pending_total,
        "{admitted:?} of {sent} flooded starts admitted"
    );
    let callback = user.authorize_at_provider(authorization, "slow-user").await;
    assert_eq!(
        user.get(callback.as_str()).await.status(),
        StatusCode::SEE_OTHER,
        "the login in progress survived the flood ({admitted:?} admitted, {refused:?} refused in {elapsed:.1} s)"
    );
}

/// The text a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
