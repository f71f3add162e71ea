//! WebSockets and server-sent events on API routes (issue 30): a relay carries the route's
//! credential, proves its origin, and closes with a reason within two seconds of its session's
//! end on whichever instance the session ends; events stream unbuffered, past the route's
//! timeout, and end with the session too.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::{Browser, TestApp};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A live route (WebSockets allowed) and a plain one, beside the harness's `/api/orders`.
const LIVE: &str = r#"
[[routes]]
prefix = "/api/live"
upstream = "{upstream}"
websocket = true
"#;

/// Opens a WebSocket at `path` on `base` as a browser on `origin` holding `session` would.
async fn connect(
    base: &str,
    path: &str,
    session: Option<&str>,
    origin: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(session) = session {
        request
            .headers_mut()
            .insert("cookie", format!("vestibule={session}").parse().unwrap());
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next text message on `socket`.
async fn next_text(socket: &mut Socket) -> String {
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Waits (at most 2 s) for Vestibule's close frame on `socket`; answers its code and reason.
async fn closed_within_two_seconds(socket: &mut Socket) -> (u16, String) {
    let started = Instant::now();
    let frame = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no close frame within 2 s"));
    eprintln!("relay closed {:?} after the end", started.elapsed());
    (u16::from(frame.code), frame.reason.to_string())
}

/// A live app with alice signed in: the app and her session cookie.
async fn alice_on(builder: crate::harness::TestAppBuilder) -> (TestApp, Browser, String) {
    let app = builder.extra_toml(LIVE).start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let session = alice.cookie("vestibule").unwrap();
    (app, alice, session)
}

#[tokio::test]
async fn a_websocket_carries_the_session_token_and_closes_within_two_seconds_of_a_logout() {
    let (app, alice, session) = alice_on(TestApp::builder()).await;
    let mut socket = connect(&app.url, "/api/live/ws", Some(&session), Some(&app.url))
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, "hello alice");
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(next_text(&mut socket).await, "echo: ping");
    let seen = app
        .upstream
        .seen()
        .into_iter()
        .rfind(|seen| seen.path_and_query == "/v1/ws")
        .unwrap();
    assert!(seen.token_active, "the upgrade carried the session's token");
    let cookies = seen
        .headers
        .get("cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(!cookies.unwrap_or_default().contains("vestibule"));

    assert_eq!(alice.logout().await.0, StatusCode::OK);
    assert_eq!(
        closed_within_two_seconds(&mut socket).await,
        (4401, "session_ended".to_owned())
    );
}

#[tokio::test]
async fn a_websocket_on_one_instance_closes_when_the_session_ends_on_another() {
    let (mut app, _alice, session) = alice_on(TestApp::builder()).await;
    let other = app.start_another_instance().await;
    let mut socket = connect(&app.url, "/api/live/ws", Some(&session), Some(&app.url))
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, "hello alice");
    let (status, _) = Browser::with_session(&other, &session).logout().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        closed_within_two_seconds(&mut socket).await,
        (4401, "session_ended".to_owned())
    );
}

#[tokio::test]
async fn a_websocket_handshake_must_come_from_our_origin() {
    let (app, _alice, session) = alice_on(TestApp::builder()).await;
    for origin in [None, Some("http://evil.example")] {
        let refused = connect(&app.url, "/api/live/ws", Some(&session), origin).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
            }
            other => panic!("{origin:?}: expected a refused handshake, got {other:?}"),
        }
    }
    // Without a session, a user route refuses the handshake like any call.
    match connect(&app.url, "/api/live/ws", None, Some(&app.url)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    // A route without `websocket = true` does not upgrade.
    match connect(&app.url, "/api/orders/ws", Some(&session), Some(&app.url)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_ne!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        }
        other => panic!("expected no upgrade, got {other:?}"),
    }
}

#[tokio::test]
async fn a_session_holds_a_bounded_number_of_websockets_and_a_silent_one_closes() {
    let app = TestApp::builder()
        .extra_toml(&format!(
            "{LIVE}\n[server]\nmax_websockets_per_session = 1\nwebsocket_idle_timeout_secs = 3\n"
        ))
        .start()
        .await;
    let alice = app.browser();
    alice.login("alice").await;
    let session = alice.cookie("vestibule").unwrap();
    let mut first = connect(&app.url, "/api/live/ws", Some(&session), Some(&app.url))
        .await
        .unwrap();
    assert_eq!(next_text(&mut first).await, "hello alice");
    match connect(&app.url, "/api/live/ws", Some(&session), Some(&app.url)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    // Silent for the idle limit: closed with its own code, and its place is free again.
    let frame = tokio::time::timeout(Duration::from_secs(10), first.next())
        .await
        .unwrap();
    let Some(Ok(Message::Close(Some(frame)))) = frame else {
        panic!("expected a close frame, got {frame:?}");
    };
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::from(4408), "relay_idle")
    );
    crate::harness::wait_for(
        "the socket's place to be free",
        Duration::from_secs(5),
        || async {
            connect(&app.url, "/api/live/ws", Some(&session), Some(&app.url))
                .await
                .ok()
        },
    )
    .await;
}

#[tokio::test]
async fn events_stream_unbuffered_past_the_route_timeout_and_end_with_the_session() {
    let (app, alice, _session) = alice_on(TestApp::builder()).await;
    let response = alice.api_get("/api/live/events").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let started = Instant::now();
    let mut text = String::new();
    // The harness's routes time out after 2 s; events keep coming for longer.
    while !text.contains("data: 30\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("events arrive as they are sent")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if started.elapsed() < Duration::from_millis(50) {
            assert!(text.starts_with("data: 0"), "the first event comes at once");
        }
    }
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "not cut by timeout_secs"
    );

    let session = alice.cookie("vestibule").unwrap();
    let (status, _) = Browser::with_session(&app.url, &session).logout().await;
    assert_eq!(status, StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends within 2 s of the logout");
}
