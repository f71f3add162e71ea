//! The probes: `/healthz` (alive) and `/readyz` (Redis answers, the provider is discovered,
//! not stopping), answered without a session, never cached, never a way around
//! authentication.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{TestApp, wait_for};

async fn probe(app: &TestApp, path: &str) -> (StatusCode, Value) {
    probe_at(&app.url, path).await
}

async fn probe_at(base_url: &str, path: &str) -> (StatusCode, Value) {
    let response = crate::harness::Browser::new(base_url).get(path).await;
    let status = response.status();
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "{path}: a probe answer is never cached"
    );
    assert!(
        response.headers().get("set-cookie").is_none(),
        "{path}: a probe sets no cookie"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_probes_answer_without_a_session() {
    let app = TestApp::start().await;
    let (status, body) = probe(&app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "alive");

    let (status, body) = probe(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["store"], "ok");
    assert_eq!(body["checks"]["provider"], "ok");
    assert_eq!(body["checks"]["lifecycle"], "serving");

    let http = app.browser().http().clone();
    let head = http
        .head(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK, "HEAD works as GET");
    let post = http
        .post(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let body: Value = post.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn readiness_follows_a_redis_outage_while_liveness_stays() {
    let mut app = TestApp::start().await;
    app.redis.as_mut().unwrap().stop().await;
    let body = wait_for("readiness to drop", Duration::from_secs(10), || async {
        let (status, body) = probe(&app, "/readyz").await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["store"], "unreachable");
    assert_eq!(body["checks"]["provider"], "ok");
    let (status, _) = probe(&app, "/healthz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an outage elsewhere is no reason to restart"
    );

    app.redis.as_mut().unwrap().restart().await;
    wait_for(
        "readiness to come back",
        Duration::from_secs(15),
        || async {
            let (status, _) = probe(&app, "/readyz").await;
            (status == StatusCode::OK).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_instance_started_while_the_provider_is_down_becomes_ready_when_it_is_back() {
    let mut app = TestApp::start().await;
    app.provider.stop();
    let late = app.start_another_instance().await;
    let (status, body) = probe_at(&late, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["provider"], "not_discovered");
    assert_eq!(body["checks"]["store"], "ok");
    let (status, _) = probe_at(&late, "/healthz").await;
    assert_eq!(status, StatusCode::OK);

    // The probe itself retries discovery: no login is needed to get the instance ready.
    app.provider.restart_with_new_keys();
    wait_for(
        "readiness after discovery",
        Duration::from_secs(15),
        || async {
            let (status, _) = probe_at(&late, "/readyz").await;
            (status == StatusCode::OK).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_probe_never_lets_another_request_skip_authentication() {
    let app = TestApp::start().await;
    let browser = app.browser();
    // What load balancers send, and the headers some proxies use to name the original path.
    for user_agent in [
        "kube-probe/1.31",
        "GoogleHC/1.0",
        "ELB-HealthChecker/2.0",
        "Consul Health Check",
    ] {
        let response = browser
            .http()
            .get(format!("{}/api/orders/1", app.url))
            .header("x-csrf", "1")
            .header("user-agent", user_agent)
            .header("x-original-uri", "/healthz")
            .header("x-forwarded-uri", "/readyz")
            .header("x-rewrite-url", "/healthz")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{user_agent}: no session, no access"
        );
    }
    // Paths that merely mention a probe.
    assert_eq!(
        browser.raw_api_get("/healthz/../api/orders/1").await,
        404,
        "a path through a probe is neither a probe nor a route's (nothing is normalised)"
    );
    assert_eq!(
        browser.api_get("/api/orders/healthz").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = probe(&app, "/healthz?next=/api/orders/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "alive");
    assert!(
        app.upstream.seen().is_empty(),
        "nothing reached the upstream: {:?}",
        app.upstream
            .seen()
            .iter()
            .map(|seen| &seen.path_and_query)
            .collect::<Vec<_>>()
    );
}

/// Issue 29 measured 99 `/readyz` probes in 20 s cost a failing provider 101 discovery
/// requests. Probes are solicited discoveries, paced like every other: while discovery fails,
/// a stream of probes (counted at a real failing front) costs the provider a handful of
/// requests, the probes still answer at once, and readiness follows the provider back.
#[tokio::test]
async fn readiness_probes_while_discovery_fails_cost_the_provider_a_bounded_number_of_requests() {
    use crate::harness::provider_front::{Mode, ProviderFront};
    let app = TestApp::start().await;
    let front = ProviderFront::start(app.provider.port, Mode::Failing).await;
    let port = crate::harness::free_port();
    let config = app.config_listening_on(port).replacen(
        "[oidc]\n",
        &format!(
            "[oidc]\ndiscovery_url = \"http://127.0.0.1:{}/.well-known/openid-configuration\"\n",
            front.port
        ),
        1,
    );
    let _instance = crate::harness::spawn_vestibule(&config).await;
    let base = format!("http://127.0.0.1:{port}");

    // Probes back to back for six seconds (a busy orchestrator, several probers).
    let started = std::time::Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(6) || probes < 99 {
        let (status, body) = probe_at(&base, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["checks"]["provider"], "not_discovered");
        probes += 1;
    }
    // Attempts at the start and after back-offs of 1, 2 and 4 s (doubling, capped at 10 s).
    let asked = front.requests();
    assert!(
        asked <= 5,
        "{probes} probes in {:?} cost the failing provider {asked} discovery requests",
        started.elapsed()
    );

    front.set(Mode::Up);
    wait_for(
        "readiness once the provider is back",
        Duration::from_secs(15),
        || async {
            let (status, _) = probe_at(&base, "/readyz").await;
            (status == StatusCode::OK).then_some(())
        },
    )
    .await;
}
