//! The Prometheus endpoint, through the real binary: on `metrics.listen` only, its values
//! move exactly as a real scenario (Redis, the provider, an upstream) makes them, and its
//! listener has limits of its own that keep it from costing the public one anything.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use vestibule::http::endpoints::scrape::LIMITS;

use crate::harness::binary::{VestibuleProcess, binary_in_front};
use crate::harness::raw_http::{self, read_until_closed};
use crate::harness::{Browser, TestApp, TestAppBuilder, free_port, wait_for};

/// A scrape: series (name with labels, as written) to value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// The value of `series` (0 when absent: a counter not yet incremented).
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape(metrics: &str) -> Scrape {
    let response = reqwest::get(format!("{metrics}/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    Scrape(
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// Waits until the instance behind `metrics` reports its session cache serving hits.
async fn cache_serving(metrics: &str) {
    wait_for(
        "the session cache to serve",
        Duration::from_secs(10),
        || async {
            (scrape(metrics).await.get("vestibule_session_cache_serving") == 1.0).then_some(())
        },
    )
    .await;
}

/// Every series whose value differs between two scrapes, with the change.
fn changes(before: &Scrape, after: &Scrape, prefix: &str) -> Vec<(String, f64)> {
    let mut moved: Vec<(String, f64)> = after
        .0
        .keys()
        .chain(before.0.keys())
        .filter(|series| series.starts_with(prefix))
        .map(|series| (series.clone(), after.get(series) - before.get(series)))
        .filter(|(_, change)| *change != 0.0)
        .collect();
    moved.sort_by(|a, b| a.0.cmp(&b.0));
    moved.dedup();
    moved
}

/// The binary in front of `builder`'s deployment with `[metrics]` on: the binary's metrics
/// listener (a port other than the in-process instance's); returns its base URL too.
async fn with_metrics(
    builder: TestAppBuilder,
) -> (TestApp, VestibuleProcess, std::path::PathBuf, String) {
    let (in_process_metrics, metrics_port) = (free_port(), free_port());
    let builder = builder.extra_toml(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{in_process_metrics}\"\n"
    ));
    let (app, binary, dir) = binary_in_front(builder, |config| {
        config.replace(
            &format!("127.0.0.1:{in_process_metrics}"),
            &format!("127.0.0.1:{metrics_port}"),
        )
    })
    .await;
    (app, binary, dir, format!("http://127.0.0.1:{metrics_port}"))
}

#[tokio::test]
async fn the_figures_move_exactly_as_the_scenario_does() {
    let down = free_port();
    let builder = TestApp::builder().access_token_ttl(3).extra_toml(&format!(
        "\n[[routes]]\nprefix = \"/api/down\"\nupstream = \"http://127.0.0.1:{down}\"\n"
    ));
    let (app, binary, dir, metrics) = with_metrics(builder).await;

    // Never on the public listener.
    let public_page = reqwest::get(format!("{}/metrics", binary.base))
        .await
        .unwrap();
    assert!(
        !public_page
            .text()
            .await
            .unwrap()
            .contains("vestibule_logins_started_total")
    );

    // A forged callback: exactly one failure counter moves, with its reason.
    let before = scrape(&metrics).await;
    let alice = Browser::new(&binary.base);
    let forged = alice.forged_callback().await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let after = scrape(&metrics).await;
    assert_eq!(
        changes(&before, &after, "vestibule_log"),
        vec![(
            "vestibule_logins_failed_total{reason=\"state_mismatch\"}".to_owned(),
            1.0
        )]
    );

    // A login, a proxied call.
    let before = after;
    alice.login("alice").await;
    assert_eq!(
        alice.api_get("/api/orders/x").await.status(),
        StatusCode::OK
    );
    let after = scrape(&metrics).await;
    assert_eq!(
        after.get("vestibule_logins_started_total") - before.get("vestibule_logins_started_total"),
        1.0
    );
    assert_eq!(
        after.get("vestibule_logins_completed_total")
            - before.get("vestibule_logins_completed_total"),
        1.0
    );
    assert_eq!(
        after.get("vestibule_sessions_created_total")
            - before.get("vestibule_sessions_created_total"),
        1.0
    );
    assert_eq!(
        after.get("vestibule_live_sessions"),
        1.0,
        "one session in Redis"
    );
    let ok_calls =
        "vestibule_proxy_requests_total{route=\"/api/orders\",method=\"GET\",status=\"2xx\"}";
    assert_eq!(after.get(ok_calls) - before.get(ok_calls), 1.0);
    let latency = "vestibule_proxy_request_duration_seconds_count{route=\"/api/orders\"}";
    assert_eq!(after.get(latency) - before.get(latency), 1.0);
    let code_exchanges =
        "vestibule_provider_requests_total{endpoint=\"code_exchange\",outcome=\"ok\"}";
    assert_eq!(after.get(code_exchanges) - before.get(code_exchanges), 1.0);
    let userinfo_calls = "vestibule_provider_requests_total{endpoint=\"userinfo\",outcome=\"ok\"}";
    assert_eq!(after.get(userinfo_calls) - before.get(userinfo_calls), 1.0);
    assert!(
        after.get("vestibule_redis_command_duration_seconds_count")
            > before.get("vestibule_redis_command_duration_seconds_count")
    );
    assert_eq!(after.get("vestibule_redis_errors_total"), 0.0);

    // A transparent refresh.
    let before = after;
    alice.wait_past_access_token_expiry().await;
    assert_eq!(
        alice.api_get("/api/orders/x").await.status(),
        StatusCode::OK
    );
    let after = scrape(&metrics).await;
    for (series, change) in [
        ("vestibule_refresh_attempts_total", 1.0),
        ("vestibule_refresh_successes_total", 1.0),
        ("vestibule_refresh_duration_seconds_count", 1.0),
        (
            "vestibule_provider_requests_total{endpoint=\"refresh\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "vestibule_provider_requests_total{endpoint=\"userinfo\",outcome=\"ok\"}",
            1.0,
        ),
    ] {
        assert_eq!(after.get(series) - before.get(series), change, "{series}");
    }
    assert!(
        changes(&before, &after, "vestibule_refresh_failures").is_empty(),
        "no failure"
    );

    // The provider refuses the next refresh: the session ends for that reason.
    let before = after;
    app.provider
        .fail_next_refresh("invalid_grant", "grant revoked")
        .await;
    alice.wait_past_access_token_expiry().await;
    assert_eq!(
        alice.api_get("/api/orders/x").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let after = scrape(&metrics).await;
    let refused = "vestibule_refresh_failures_total{reason=\"refresh_rejected\"}";
    assert_eq!(after.get(refused) - before.get(refused), 1.0);
    let ended = "vestibule_sessions_ended_total{reason=\"refresh_rejected\"}";
    assert_eq!(after.get(ended) - before.get(ended), 1.0);
    assert_eq!(after.get("vestibule_live_sessions"), 0.0);

    // Logout, and an upstream that is down.
    alice.login("alice").await;
    let before = scrape(&metrics).await;
    assert_eq!(
        alice.api_get("/api/down/x").await.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(alice.logout().await.0, StatusCode::OK);
    let after = scrape(&metrics).await;
    let down_errors = "vestibule_upstream_errors_total{route=\"/api/down\",kind=\"connect\"}";
    assert_eq!(after.get(down_errors) - before.get(down_errors), 1.0);
    let down_calls =
        "vestibule_proxy_requests_total{route=\"/api/down\",method=\"GET\",status=\"5xx\"}";
    assert_eq!(after.get(down_calls) - before.get(down_calls), 1.0);
    let logouts = "vestibule_sessions_ended_total{reason=\"logout\"}";
    assert_eq!(after.get(logouts) - before.get(logouts), 1.0);
    cache_serving(&metrics).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sessions_that_time_out_are_counted_by_the_timeout_that_ended_them() {
    // Idle timeout = absolute lifetime: the session's deadline is its absolute end.
    let builder = TestApp::builder().idle_timeout(2).absolute_timeout(2);
    let (_app, binary, dir, metrics) = with_metrics(builder).await;
    let alice = Browser::new(&binary.base);
    alice.login("alice").await;
    assert_eq!(scrape(&metrics).await.get("vestibule_live_sessions"), 1.0);
    // A scrape after the deadline (and the filing delay, 1 s here) prunes the session from the
    // live set and counts it, by the timeout that ended it.
    let absolute = "vestibule_sessions_ended_total{reason=\"absolute_timeout\"}";
    let after = wait_for(
        "the session's timeout to be counted",
        Duration::from_secs(10),
        || async {
            let scraped = scrape(&metrics).await;
            (scraped.get(absolute) == 1.0).then_some(scraped)
        },
    )
    .await;
    assert_eq!(after.get("vestibule_live_sessions"), 0.0);
    assert_eq!(
        after.get("vestibule_sessions_ended_total{reason=\"idle_timeout\"}"),
        0.0
    );
    assert_eq!(alice.user().await.0, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn half_sent_requests_to_the_metrics_port_are_closed_after_its_header_timeout() {
    let (_app, _binary, dir, metrics) = with_metrics(TestApp::builder()).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..LIMITS.max_connections {
        held.push(raw_http::half_sent_request(&metrics, "/metrics").await);
    }
    let header_timeout = LIMITS.connection.header_read_timeout;
    for stream in &mut held {
        read_until_closed(stream, header_timeout + Duration::from_secs(15)).await;
    }
    assert!(
        started.elapsed() >= header_timeout,
        "closed after {:?}, before the header timeout",
        started.elapsed()
    );
    // The listener serves scrapers again.
    scrape(&metrics).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn past_the_metrics_cap_connections_wait_and_the_public_listener_still_serves() {
    let (_app, binary, dir, metrics) = with_metrics(TestApp::builder()).await;
    // Scrapers (or anyone) hold every slot with kept-alive connections.
    let mut held = Vec::new();
    for _ in 0..LIMITS.max_connections {
        let mut stream = raw_http::connect(&metrics).await;
        let status = raw_http::exchange(&mut stream, "/metrics").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        held.push(stream);
    }
    // One more waits in the accept queue...
    let mut next = raw_http::connect(&metrics).await;
    next.write_all(b"GET /metrics HTTP/1.1\r\nHost: vestibule\r\n\r\n")
        .await
        .unwrap();
    let early = raw_http::first_byte_within(&mut next, Duration::from_millis(700)).await;
    assert!(
        early.is_none(),
        "served beyond the metrics listener's cap of {}",
        LIMITS.max_connections
    );
    // ...while the public listener serves as ever.
    let health = reqwest::get(format!("{}/healthz", binary.base))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // A slot frees up: the waiting scrape is served.
    drop(held.pop());
    assert_eq!(
        raw_http::first_byte_within(&mut next, Duration::from_secs(5)).await,
        Some(b'H'),
        "served once a connection closed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn calls_on_a_cached_session_open_its_record_once_unless_switched_off() {
    const OPENED: &str = "vestibule_session_records_opened_total";
    for keep in [true, false] {
        let builder = TestApp::builder().session_toml(&format!("local_cache_opened = {keep}\n"));
        let (_app, binary, dir, metrics) = with_metrics(builder).await;
        cache_serving(&metrics).await;
        let alice = Browser::new(&binary.base);
        alice.login("alice").await;
        // The first calls read Redis (and keep what they opened once the cache serves them).
        for _ in 0..3 {
            assert_eq!(alice.api_get("/api/orders").await.status(), StatusCode::OK);
        }
        let before = scrape(&metrics).await.get(OPENED);
        for _ in 0..20 {
            assert_eq!(alice.api_get("/api/orders").await.status(), StatusCode::OK);
        }
        let opened = scrape(&metrics).await.get(OPENED) - before;
        if keep {
            assert!(opened <= 1.0, "{opened} records opened for 20 calls");
        } else {
            assert!(opened >= 20.0, "{opened} records opened for 20 calls");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
