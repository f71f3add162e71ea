//! The single-page app: built-in demo page, JS helper, static directory, development server.

use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::HeaderMap;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;

use crate::harness::TestApp;

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn demo_page_is_served_at_root_with_a_strict_csp() {
    let app = TestApp::start().await;
    let browser = app.browser();
    let response = browser.get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("text/html"));
    let csp = header(&response, "content-security-policy");
    let body = response.text().await.unwrap();
    for id in [
        "status",
        "login",
        "logout",
        "claims",
        "call-api",
        "api-result",
        "access-countdown",
        "session-countdown",
    ] {
        assert!(
            body.contains(&format!("id=\"{id}\"")),
            "#{id} is on the page"
        );
    }
    assert!(
        body.contains("data-path=\"/api/orders/hello\""),
        "the button calls the first route"
    );
    assert!(body.contains("src=\"/api/auth/client.js\""));
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(
        body.contains(&format!("nonce=\"{nonce}\"")),
        "inline script carries the CSP nonce"
    );
    assert!(!csp.contains("unsafe-inline'; img") || csp.contains("script-src 'self' 'nonce-"));
    assert!(!csp.contains("script-src 'self' 'unsafe-inline'"));
    let again = browser.get("/").await;
    assert!(
        !header(&again, "content-security-policy").contains(nonce),
        "a fresh nonce per page"
    );

    assert_eq!(
        browser.get("/not-the-demo").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_demo_page_shows_a_section_for_each_kind_of_route_it_finds() {
    // The harness's one route has no claim rule, no step-up, no WebSocket: no such sections.
    let plain = TestApp::start().await;
    let body = plain.browser().get("/").await.text().await.unwrap();
    for id in [
        "admin",
        "step-up",
        "live",
        "call-admin",
        "call-step-up",
        "ws-status",
    ] {
        assert!(
            !body.contains(&format!("id=\"{id}\"")),
            "#{id} without its route"
        );
    }

    let app = TestApp::builder()
        .extra_toml(
            r#"
[[routes]]
prefix = "/api/admin"
upstream = "{upstream}"
[[routes.require]]
claim = "roles"
any_of = ["admin"]

[[routes]]
prefix = "/api/recent"
upstream = "{upstream}"
[routes.step_up]
max_age_secs = 60

[[routes]]
prefix = "/api/live"
upstream = "{upstream}"
websocket = true
"#,
        )
        .start()
        .await;
    let response = app.browser().get("/").await;
    let csp = header(&response, "content-security-policy");
    let body = response.text().await.unwrap();
    for expected in [
        "data-path=\"/api/orders/hello\"",
        "id=\"call-admin\" data-path=\"/api/admin/report\"",
        "id=\"call-step-up\" data-path=\"/api/recent/confirm\"",
        "id=\"live\" class=\"wide\" data-path=\"/api/live\"",
        "id=\"ws-status\"",
        "id=\"sse-status\"",
    ] {
        assert!(body.contains(expected), "the page has {expected}");
    }
    // The live feed's WebSocket is admitted by 'self' alone (CSP Level 3); no ws: scheme
    // source that would admit any host (the browser test proves Chromium connects).
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert!(!csp.contains("ws:") && !csp.contains("wss:"), "{csp}");
}

#[tokio::test]
async fn client_helper_is_served_as_javascript() {
    let app = TestApp::start().await;
    let response = app.browser().get("/api/auth/client.js").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("text/javascript"));
    let js = response.text().await.unwrap();
    for api in [
        "X-CSRF",
        "login_url",
        "returnTo",
        "/api/auth/user",
        "/api/auth/logout",
        "global.vestibule",
    ] {
        assert!(js.contains(api), "client.js mentions {api}");
    }
}

#[tokio::test]
async fn static_directory_serves_files_with_spa_fallback_and_caching() {
    let dir = std::env::temp_dir().join(format!("vestibule-spa-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>my spa</title>",
    )
    .unwrap();
    std::fs::write(
        dir.join("assets/index-BxHVVlQ1.js"),
        "console.log('hashed')",
    )
    .unwrap();
    std::fs::write(dir.join("assets/style.css"), "body{}").unwrap();
    let app = TestApp::builder()
        .extra_toml(&format!("[frontend]\ndir = \"{}\"\n", dir.display()))
        .start()
        .await;
    let browser = app.browser();

    for path in ["/", "/orders/42", "/deep/client/route"] {
        let response = browser.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            header(&response, "content-type").starts_with("text/html"),
            "{path}"
        );
        assert_eq!(
            header(&response, "cache-control"),
            "no-cache",
            "{path}: index.html is revalidated"
        );
        assert!(response.text().await.unwrap().contains("my spa"));
    }
    let hashed = browser.get("/assets/index-BxHVVlQ1.js").await;
    assert_eq!(hashed.status(), StatusCode::OK);
    assert!(header(&hashed, "content-type").contains("javascript"));
    assert_eq!(
        header(&hashed, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    let css = browser.get("/assets/style.css").await;
    assert!(header(&css, "content-type").starts_with("text/css"));
    assert_eq!(header(&css, "cache-control"), "no-cache");
    assert_eq!(
        browser.get("/assets/missing.js").await.status(),
        StatusCode::NOT_FOUND
    );
    // Traversal never leaves the directory: at most the SPA's index.html comes back.
    for path in [
        "/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2f..%2fetc%2fpasswd",
        "/..%5c..%5cetc%5cpasswd",
    ] {
        let (status, body) = browser.raw_get(path).await;
        assert!(status == 200 || status == 404, "{path}: {status}");
        assert!(!body.contains("root:"), "{path} escaped the directory");
    }
    assert_eq!(
        browser
            .http()
            .post(browser.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    // API paths are never swallowed by the SPA fallback.
    let api = browser.api_get("/api/unknown").await;
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert!(header(&api, "content-type").starts_with("application/json"));
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A development server with a WebSocket echo, recording the headers it receives.
async fn start_dev_server() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ws",
            axum::routing::get(|upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(|mut socket| async move {
                    while let Some(Ok(message)) = socket.recv().await {
                        if let Message::Text(text) = message {
                            let _ = socket
                                .send(Message::Text(format!("echo: {text}").into()))
                                .await;
                        }
                    }
                })
            }),
        )
        .fallback(move |headers: HeaderMap, uri: axum::http::Uri| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(headers);
                // An SSR server trying (or tricked into trying) to set Vestibule's cookies.
                (
                    axum::response::AppendHeaders([
                        ("set-cookie", "vestibule=fixated; Path=/"),
                        ("set-cookie", "%76estibule=fixated; Path=/"),
                        ("set-cookie", "theme=light; Path=/"),
                    ]),
                    format!("dev server page for {}", uri.path()),
                )
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn development_server_is_proxied_with_websockets_and_without_credentials() {
    let (dev_url, seen) = start_dev_server().await;
    let app = TestApp::builder()
        .extra_toml(&format!("[frontend]\nupstream = \"{dev_url}\"\n"))
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    browser.set_cookie("theme", "dark");

    let page = browser
        .http()
        .get(browser.url("/src/main.ts?t=1"))
        .header("x-original-url", "/admin")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let set_cookies: Vec<_> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        set_cookies,
        ["theme=light; Path=/"],
        "only the app's own cookie"
    );
    // The frontend relay's answers have never named Vestibule in `Via` (API answers do).
    assert!(page.headers().get("via").is_none());
    assert_eq!(
        page.text().await.unwrap(),
        "dev server page for /src/main.ts"
    );
    let headers = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        headers.get("authorization").is_none(),
        "no token reaches the frontend"
    );
    assert!(headers.get("x-original-url").is_none());
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    let cookies = headers
        .get("cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(cookies.contains("theme=dark"), "{cookies}");
    assert!(
        !cookies.contains("vestibule"),
        "no session cookie reaches the frontend: {cookies}"
    );

    // Hot reload: a WebSocket through Vestibule to the dev server.
    let ws_url = format!("{}/ws", app.url.replacen("http", "ws", 1));
    let (mut socket, response) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo: ping");
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn development_server_down_is_a_502() {
    let port = crate::harness::free_port();
    let app = TestApp::builder()
        .extra_toml(&format!(
            "[frontend]\nupstream = \"http://127.0.0.1:{port}\"\n"
        ))
        .start()
        .await;
    let response = app.browser().get("/").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}
