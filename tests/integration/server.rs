//! The listener's limits: slow headers, idle keep-alive, the connection cap, header and body
//! sizes. Each test talks raw TCP, as a misbehaving client would.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestApp;
use crate::harness::raw_http::{self, read_until_closed};

async fn connect(app: &TestApp) -> TcpStream {
    raw_http::connect(&app.url).await
}

/// A complete request that Vestibule answers itself (a JSON 404), without a session.
const GET_MISSING_PAGE: &[u8] = b"GET /missing.txt HTTP/1.1\r\nHost: vestibule\r\n\r\n";

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_read_timeout() {
    let app = TestApp::builder()
        .extra_toml("[server]\nheader_read_timeout_secs = 1\nkeep_alive_timeout_secs = 60\n")
        .start()
        .await;
    let mut stream = raw_http::half_sent_request(&app.url, "/api/auth/user").await;
    let started = Instant::now();
    let received = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
        "{received:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "closed by the header timeout, not by the keep-alive one"
    );

    // A connection that never sends a byte is held no longer.
    let mut silent = connect(&app).await;
    read_until_closed(&mut silent, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_then_closes() {
    let app = TestApp::builder()
        .extra_toml("[server]\nheader_read_timeout_secs = 1\nkeep_alive_timeout_secs = 3\n")
        .start()
        .await;
    let mut stream = connect(&app).await;
    let status = raw_http::exchange(&mut stream, "/missing.txt").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // Idle for longer than the header timeout (a load balancer holding a pooled connection):
    // the connection is still usable.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let status = raw_http::exchange(&mut stream, "/missing.txt").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // Then idle past the keep-alive timeout: closed.
    let idle_since = Instant::now();
    read_until_closed(&mut stream, Duration::from_secs(15)).await;
    assert!(
        idle_since.elapsed() >= Duration::from_millis(2500),
        "closed after {:?}, before the keep-alive timeout",
        idle_since.elapsed()
    );
}

#[tokio::test]
async fn past_max_connections_new_clients_wait_until_one_closes() {
    let app = TestApp::builder()
        .extra_toml("[server]\nmax_connections = 2\nheader_read_timeout_secs = 30\n")
        .start()
        .await;
    // Two clients hold both slots with half-sent requests.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    // A third client's complete request waits in the accept queue...
    let mut third = connect(&app).await;
    third.write_all(GET_MISSING_PAGE).await.unwrap();
    let early = raw_http::first_byte_within(&mut third, Duration::from_millis(700)).await;
    assert!(early.is_none(), "served beyond max_connections");
    // ...and is served as soon as a slot frees up.
    drop(held.pop());
    assert_eq!(
        raw_http::first_byte_within(&mut third, Duration::from_secs(5)).await,
        Some(b'H'),
        "served once a connection closed"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_oversized_bodies_on_auth_endpoints_get_413() {
    let app = TestApp::builder()
        .extra_toml("[server]\nmax_header_bytes = 4096\nmax_body_bytes = 1024\n")
        .start()
        .await;
    let http = reqwest::Client::new();
    let big_header = "x".repeat(8 * 1024);
    let response = http
        .get(format!("{}/", app.url))
        .header("x-big", big_header)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        reqwest::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    let response = http
        .post(format!("{}/api/auth/logout", app.url))
        .header("x-csrf", "1")
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_dropped_after_the_send_timeout() {
    // A 16 MB static file, far more than the socket buffers hold.
    let dir = std::env::temp_dir().join(format!("vestibule-slow-reader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
    const SIZE: usize = 16 * 1024 * 1024;
    std::fs::write(dir.join("big.bin"), vec![b'x'; SIZE]).unwrap();
    let app = TestApp::builder()
        .extra_toml(&format!(
            "[server]\nsend_timeout_secs = 1\n[frontend]\ndir = \"{}\"\n",
            dir.display()
        ))
        .start()
        .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: vestibule\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing for a while (a zero window, as a slow-reader attack keeps it)...
    tokio::time::sleep(Duration::from_secs(3)).await;
    // ...then finds the response cut short: the connection was dropped.
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection");
    assert!(
        received.len() < SIZE,
        "the whole {SIZE}-byte response arrived: the stalled connection was kept"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
