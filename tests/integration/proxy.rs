//! The reverse proxy: anti-forgery, header and cookie rules, streaming, errors.

use reqwest::StatusCode;

use crate::harness::{Browser, TestApp};

#[tokio::test]
async fn missing_or_cross_site_anti_forgery_is_refused_and_nothing_is_forwarded() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let http = browser.http();

    let plain = http.get(browser.url("/api/orders/1")).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        plain.json::<serde_json::Value>().await.unwrap()["error"],
        "forbidden"
    );
    let wrong_value = http
        .get(browser.url("/api/orders/1"))
        .header("x-csrf", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_value.status(), StatusCode::FORBIDDEN);
    let post = http
        .post(browser.url("/api/orders/1"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    let cross_origin = http
        .get(browser.url("/api/orders/1"))
        .header("x-csrf", "1")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_origin.status(), StatusCode::FORBIDDEN);
    let cross_site = http
        .get(browser.url("/api/orders/1"))
        .header("x-csrf", "1")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let user = http
        .get(browser.url("/api/auth/user"))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), StatusCode::FORBIDDEN);
    let logout = http
        .post(browser.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        browser.user().await.0,
        StatusCode::OK,
        "a forged logout changes nothing"
    );

    assert!(app.upstream.seen().is_empty(), "the upstream saw nothing");

    let same_origin = http
        .get(browser.url("/api/orders/1"))
        .header("x-csrf", "1")
        .header("origin", app.url.as_str())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), StatusCode::OK);
}

#[tokio::test]
async fn request_and_response_pass_through_without_vestibule_secrets() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    browser.set_cookie("app_pref", "dark");
    let session_cookie = browser.cookie("vestibule").unwrap();

    // A 3 MiB body, streamed in chunks from the client.
    let chunk = vec![b'x'; 64 * 1024];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..48).map(|_| Ok(chunk.clone())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = browser
        .http()
        .put(browser.url("/api/orders/items/7/teapot?a=1&b=%20x"))
        .header("x-csrf", "1")
        .header("x-request-id", "abc")
        .header("authorization", "Basic forged")
        .header("x-forwarded-for", "6.6.6.6")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::IM_A_TEAPOT,
        "upstream status passes back"
    );
    assert_eq!(
        response.headers()["x-upstream"],
        "yes",
        "upstream headers pass back"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["body_len"], 48 * 64 * 1024);
    assert_eq!(echoed["method"], "PUT");

    let seen = app.upstream.seen();
    let request = seen.last().unwrap();
    assert_eq!(request.path_and_query, "/v1/items/7/teapot?a=1&b=%20x");
    assert_eq!(request.method, "PUT");
    assert_eq!(request.body.len(), 48 * 64 * 1024, "the body arrives whole");
    assert!(request.body.iter().all(|b| *b == b'x'));
    assert_eq!(
        request.headers["x-request-id"].to_str().unwrap(),
        request_id,
        "the request's own id, not the one the browser chose"
    );
    assert_ne!(request_id, "abc");
    assert_eq!(
        request.headers["x-forwarded-for"], "127.0.0.1",
        "a forged client address is replaced"
    );
    assert_eq!(request.headers["via"], "1.1 vestibule");
    assert!(request.token_active);
    assert!(
        request.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    assert!(request.headers.get("x-csrf").is_none(), "X-CSRF is removed");
    let cookies = request
        .headers
        .get("cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        cookies.contains("app_pref=dark"),
        "other cookies pass: {cookies}"
    );
    assert!(
        !cookies.contains("vestibule"),
        "Vestibule's cookies never reach the upstream"
    );
    for value in request.headers.values() {
        assert!(!value.to_str().unwrap_or("").contains(&session_cookie));
    }
}

#[tokio::test]
async fn upstream_cannot_set_vestibule_cookies() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let response = browser.api_get("/api/orders/set-cookie").await;
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookies: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(set_cookies, vec!["upstream_pref=dark; Path=/".to_owned()]);
    assert_eq!(browser.user().await.0, StatusCode::OK);
}

#[tokio::test]
async fn without_a_valid_session_api_calls_get_401_json_never_a_redirect() {
    let app = TestApp::start().await;
    let anonymous = app.browser();
    let response = anonymous.api_get("/api/orders/1").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["login_url"], "/api/auth/login");

    let browser = app.browser();
    browser.login("alice").await;
    let good = browser.cookie("vestibule").unwrap();
    let mut flipped = good.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let mut flipped_secret = good.clone().into_bytes();
    flipped_secret[80] = if flipped_secret[80] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let flipped_secret = String::from_utf8(flipped_secret).unwrap();
    for bad in [
        &good[..good.len() - 1],
        &good[..20],
        flipped.as_str(),
        flipped_secret.as_str(),
        "",
        "%%%",
    ] {
        let other = Browser::new(&app.url);
        other.set_cookie("vestibule", bad);
        assert_eq!(other.user().await.0, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(
            other.api_get("/api/orders/1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(app.upstream.seen().is_empty());
    assert_eq!(
        browser.user().await.0,
        StatusCode::OK,
        "the real cookie still works"
    );
}

#[tokio::test]
async fn paths_are_matched_by_whole_segments_and_traversal_is_refused() {
    let app = TestApp::builder()
        .extra_toml(
            "[[routes]]\nprefix = \"/api/orders/admin\"\nupstream = \"http://127.0.0.1:9/none\"\n",
        )
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/api/ordersX/1").await.status(),
        StatusCode::NOT_FOUND
    );
    for path in [
        "/api/orders/%2e%2e/admin",
        "/api/orders/%2E%2E/%2e%2e/etc",
        "/api/orders/a/..%2f..%2fadmin",
        "/api/orders/%252e%252e/x",
        "/api/orders/../admin",
        "/api/orders/%5c..%5cadmin",
        // Path parameters and encodings that Tomcat, Jetty, Spring, IIS or a C server fold
        // into a dot segment.
        "/api/orders/..;/admin",
        "/api/orders/%2e%2e%3b/admin",
        "/api/orders/.%2e;jsessionid=x/admin",
        "/api/orders/..%00/admin",
        "/api/orders/%c0%ae%c0%ae/admin",
        "/api/orders/%e0%80%ae%e0%80%ae/admin",
        "/api/orders/%u002e%u002e/admin",
        "/api/orders/%ef%bc%8e%ef%bc%8e/admin",
        "/api/orders/.../admin",
        "/api/orders/..%20/admin",
        "/api/orders/%2e%2e%09/admin",
        "/api/orders/x%0d%0aX-Injected:1",
        "/api/orders/%25%32%65%25%32%65/admin",
        "/api/orders/%zz",
    ] {
        assert_eq!(browser.raw_api_get(path).await, 400, "{path}");
    }
    assert!(app.upstream.seen().is_empty(), "nothing was forwarded");
    // Everything else is forwarded byte for byte.
    for path in [
        "/api/orders/a;b=c/d",
        "/api/orders/caf%C3%A9",
        "/api/orders/100%25",
        "/api/orders/..foo/.well-known",
    ] {
        assert_eq!(browser.raw_api_get(path).await, 200, "{path}");
        let seen = app.upstream.seen();
        let forwarded = &seen.last().unwrap().path_and_query;
        assert_eq!(forwarded, &path.replacen("/api/orders", "/v1", 1));
    }
    // The longest prefix wins: /api/orders/admin goes to its own (dead) upstream.
    let forwarded_before = app.upstream.seen().len();
    assert_eq!(
        browser.api_get("/api/orders/admin/x").await.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(app.upstream.seen().len(), forwarded_before);
}

#[tokio::test]
async fn a_route_covering_all_of_api_never_captures_vestibules_own_endpoints() {
    let app = TestApp::builder()
        .extra_toml("[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9/none\"\n")
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(browser.user().await.1["sub"], "alice");
    let unknown = browser.api_get("/api/auth/nope").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.json::<serde_json::Value>().await.unwrap()["error"],
        "not_found"
    );
    // Everything else under /api is the route's (a dead upstream here); /api/orders keeps its
    // own, longer prefix.
    assert_eq!(
        browser.api_get("/api/other").await.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    assert_eq!(browser.logout().await.0, StatusCode::OK);
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let dead_port = crate::harness::free_port();
    let app = TestApp::builder()
        .extra_toml(&format!(
            "[[routes]]\nprefix = \"/api/dead\"\nupstream = \"http://127.0.0.1:{dead_port}\"\n"
        ))
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let down = browser.api_get("/api/dead/x").await;
    assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        down.json::<serde_json::Value>().await.unwrap()["error"],
        "upstream_unavailable"
    );
    let slow = browser.api_get("/api/orders/slow").await;
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        slow.json::<serde_json::Value>().await.unwrap()["error"],
        "upstream_timeout"
    );
    assert_eq!(
        browser.user().await.0,
        StatusCode::OK,
        "the session is untouched"
    );
}

#[tokio::test]
async fn unknown_paths_are_404_json() {
    let app = TestApp::start().await;
    let response = app.browser().api_get("/api/auth/nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "not_found"
    );
}

/// Request headers that steer a server's routing or its idea of the client (issue 9 lists
/// them; `vestibule::http::proxy::headers::CLIENT_SUPPLIED_ROUTING` holds the full set).
const ROUTING_HEADERS: [&str; 14] = [
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-uri",
    "x-forwarded-server",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
];

#[tokio::test]
async fn headers_that_steer_an_upstreams_routing_never_pass_through() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let mut request = browser
        .http()
        .get(browser.url("/api/orders/public"))
        .header("x-csrf", "1")
        .header("x-forwarded-for", "6.6.6.6");
    let all = vestibule::http::proxy::headers::CLIENT_SUPPLIED_ROUTING;
    for name in ROUTING_HEADERS.iter().chain(all.iter()) {
        request = request.header(*name, "/admin");
    }
    assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
    let seen = app.upstream.seen();
    let headers = &seen.last().unwrap().headers;
    let port = app.url.rsplit(':').next().unwrap();
    // The ones Vestibule owns carry what it knows; every other one is gone.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        headers["x-forwarded-host"],
        app.url.trim_start_matches("http://")
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-port"], port);
    for name in ROUTING_HEADERS.iter().chain(all.iter()) {
        if let Some(value) = headers.get(*name) {
            assert_ne!(value, "/admin", "{name} passed through");
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_balancer_the_client_address_comes_from_its_header() {
    let app = TestApp::builder()
        .extra_toml("[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n")
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let response = browser
        .http()
        .get(browser.url("/api/orders/x"))
        .header("x-csrf", "1")
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.4")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = app.upstream.seen();
    assert_eq!(
        seen.last().unwrap().headers["x-forwarded-for"],
        "198.51.100.4",
        "the entry the balancer appended, not the one the client forged"
    );
}

/// A W3C trace context and baggage, as an instrumented browser or a front proxy sends them.
const TRACE_CONTEXT: [(&str, &str); 3] = [
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("tracestate", "vendor=chosen"),
    ("baggage", "user.tier=gold,tenant=other-customer"),
];

/// Calls `/api/orders/traced` with `browser`'s session and [`TRACE_CONTEXT`] from the loopback
/// address `from`; the trace-context headers the upstream received.
async fn trace_context_upstream_sees(
    app: &TestApp,
    browser: &Browser,
    from: &str,
) -> Vec<(String, String)> {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut request = client
        .get(browser.url("/api/orders/traced"))
        .header("x-csrf", "1")
        .header("cookie", browser.cookie_header());
    for (name, value) in TRACE_CONTEXT {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
    let seen = app.upstream.seen();
    let headers = &seen.last().unwrap().headers;
    TRACE_CONTEXT
        .iter()
        .filter_map(|(name, _)| {
            let value = headers.get(*name)?.to_str().unwrap().to_owned();
            Some(((*name).to_owned(), value))
        })
        .collect()
}

#[tokio::test]
async fn a_browsers_trace_context_and_baggage_never_reach_the_upstream() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let seen = trace_context_upstream_sees(&app, &browser, "127.0.0.1").await;
    assert_eq!(
        seen,
        Vec::new(),
        "nothing of the browser's context passes on"
    );
}

#[tokio::test]
async fn a_trace_context_and_baggage_pass_on_only_from_a_trusted_proxy() {
    let app = TestApp::builder()
        .extra_toml(
            "[server]\ntrusted_proxies = [\"127.0.0.2/32\"]\n[traces]\ntrust_traceparent = true\n",
        )
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    // The front proxy's context passes on as it came (spans are not exported here).
    let from_proxy = trace_context_upstream_sees(&app, &browser, "127.0.0.2").await;
    let sent: Vec<(String, String)> = TRACE_CONTEXT
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    assert_eq!(from_proxy, sent);
    // A browser reaching Vestibule directly is not the proxy, whatever it sends.
    let from_browser = trace_context_upstream_sees(&app, &browser, "127.0.0.1").await;
    assert_eq!(from_browser, Vec::new(), "the browser's context passed on");
}

// ---------------------------------------------------------------------------------------------
// An upstream rejects a token Vestibule believed valid: `401` with
// `WWW-Authenticate: Bearer error="invalid_token"` (the harness's upstream answers so under
// `/rfc6750/` when the provider's introspection says the token is no longer active).
// ---------------------------------------------------------------------------------------------

/// The calls the upstream saw at paths containing `fragment`.
fn seen_at(app: &TestApp, fragment: &str) -> Vec<crate::harness::upstream::SeenRequest> {
    app.upstream
        .seen()
        .into_iter()
        .filter(|seen| seen.path_and_query.contains(fragment))
        .collect()
}

#[tokio::test]
async fn a_get_whose_token_the_upstream_rejects_as_invalid_is_retried_once_after_one_refresh() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/api/orders/rfc6750/before").await.status(),
        StatusCode::OK
    );
    app.provider.revoke_access_tokens().await;

    let response = browser.api_get("/api/orders/rfc6750/after").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "retried with a new token"
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    let after = seen_at(&app, "/rfc6750/after");
    assert_eq!(after.len(), 2, "the rejected call and its one retry");
    assert!(!after[0].token_active && after[1].token_active);
    assert_ne!(after[0].bearer, after[1].bearer);
    // The new token is stored: later calls use it without another grant.
    assert_eq!(
        browser.api_get("/api/orders/rfc6750/later").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
}

#[tokio::test]
async fn concurrent_calls_rejected_as_invalid_on_two_instances_cause_one_refresh_grant() {
    let mut app = TestApp::start().await;
    let second = app.start_another_instance().await;
    let browser = app.browser();
    browser.login("alice").await;
    let other = Browser::with_session(&second, &browser.cookie("vestibule").unwrap());
    assert_eq!(
        other.api_get("/api/orders/rfc6750/warm").await.status(),
        StatusCode::OK
    );
    app.provider.revoke_access_tokens().await;

    let statuses = crate::harness::browser::call_concurrently(
        &[browser.clone(), other.clone()],
        20,
        "/api/orders/rfc6750/together",
    )
    .await;
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        app.provider.refresh_grants().await,
        1,
        "one refresh grant for every rejected call on both instances"
    );
    assert_eq!(app.provider.stats().await["refresh_token_errors"], 0);
}

/// A call that is not idempotent and bodiless is never sent again after an `invalid_token`
/// (RFC 9110 §9.2.2): not one with a body (streamed to the upstream and gone), not a POST
/// without one. The token is replaced all the same, and the SPA's own retry uses it at once.
#[tokio::test]
async fn a_post_rejected_as_invalid_is_passed_through_and_never_sent_again() {
    for (path, body) in [("create", "an order, sent once"), ("approve", "")] {
        // A session of its own each: a token from a forced refresh is never forced again.
        let app = TestApp::start().await;
        let browser = app.browser();
        browser.login("alice").await;
        app.provider.revoke_access_tokens().await;
        let response = browser
            .http()
            .post(browser.url(&format!("/api/orders/rfc6750/{path}")))
            .header("x-csrf", "1")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        let sent = seen_at(&app, &format!("/rfc6750/{path}"));
        assert_eq!(sent.len(), 1, "the POST reached the upstream once: {path}");
        assert_eq!(&sent[0].body[..], body.as_bytes());
        assert_eq!(
            app.provider.refresh_grants().await,
            1,
            "refreshed anyway: {path}"
        );
        // The SPA may send it again itself: with the new token, at once.
        assert_eq!(
            browser.api_get("/api/orders/rfc6750/next").await.status(),
            StatusCode::OK
        );
        assert_eq!(app.provider.refresh_grants().await, 1);
    }
}

#[tokio::test]
async fn an_upstream_that_rejects_every_token_costs_at_most_one_forced_refresh() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    for call in 0..5 {
        let response = browser
            .api_get(&format!("/api/orders/{call}/always-invalid-token"))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "call {call}");
        assert_eq!(
            app.provider.refresh_grants().await,
            1,
            "after call {call}: one forced refresh in all"
        );
    }
    // Only the first call was retried (with the replacement); the session is intact.
    assert_eq!(seen_at(&app, "/always-invalid-token").len(), 6);
    assert_eq!(browser.user().await.0, StatusCode::OK);
    assert_eq!(
        browser.api_get("/api/orders/fine").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_401_that_does_not_say_invalid_token_passes_through_without_a_refresh() {
    let app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let response = browser.api_get("/api/orders/insufficient-scope").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    // A revoked token at an upstream that says nothing but 401.
    app.provider.revoke_access_tokens().await;
    let bare = browser.api_get("/api/orders/plain").await;
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    assert!(bare.headers().get("www-authenticate").is_none());
    assert_eq!(app.provider.refresh_grants().await, 0);
    assert_eq!(seen_at(&app, "/insufficient-scope").len(), 1);
    assert_eq!(seen_at(&app, "/plain").len(), 1);
}

/// An upstream on a private CA (`server.upstream_ca_file`): a plain server behind nginx
/// terminating TLS with a certificate from a CA the test made. Trusted with the CA; without it
/// the same route is `502`, the certificate refused.
#[tokio::test]
async fn an_upstream_on_a_private_ca_is_reached_through_upstream_ca_file_and_not_without_it() {
    use crate::harness::nginx::Nginx;
    use crate::harness::tls::make_certificates;
    let dir = std::env::temp_dir().join(format!(
        "vestibule-upstream-ca-{}",
        crate::harness::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let files = make_certificates(&dir);
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "internal answer" });
        axum::serve(backend, app).await.unwrap();
    });
    let front_port = crate::harness::free_port();
    let _front = Nginx::tls_front(front_port, backend_port, &files.server.0, &files.server.1).await;
    let route = format!(
        "[[routes]]\nprefix = \"/api/internal\"\nupstream = \"https://localhost:{front_port}\"\n"
    );

    let trusting = TestApp::builder()
        .extra_toml(&format!(
            "{route}[server]\nupstream_ca_file = \"{}\"\n",
            files.ca.display()
        ))
        .start()
        .await;
    let browser = trusting.browser();
    browser.login("alice").await;
    let answer = browser.api_get("/api/internal/x").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "internal answer");

    let untrusting = TestApp::builder().extra_toml(&route).start().await;
    let browser = untrusting.browser();
    browser.login("alice").await;
    let refused = browser.api_get("/api/internal/x").await;
    assert_eq!(
        refused.status(),
        StatusCode::BAD_GATEWAY,
        "without server.upstream_ca_file the upstream's certificate is not trusted"
    );
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
