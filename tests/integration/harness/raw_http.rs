//! HTTP/1.1 over a raw TCP socket, as a misbehaving client speaks it: half-sent requests, held
//! connections, responses read byte by byte.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A new connection to `base` (`http://host:port`).
pub async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// A connection to `base` that has sent the start of a request and will send no more.
pub async fn half_sent_request(base: &str, path: &str) -> TcpStream {
    let mut stream = connect(base).await;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: vestibule\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    stream
}

/// Reads until the server closes the connection; panics if it does not within `limit`.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {limit:?}"))
        .ok();
    received
}

/// The first byte the server sends on `stream` within `limit`; `None` if it sends nothing by
/// then (as to a request still waiting in the accept queue). Panics if the server closes the
/// connection instead.
pub async fn first_byte_within(stream: &mut TcpStream, limit: Duration) -> Option<u8> {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(limit, stream.read(&mut byte))
        .await
        .ok()?;
    assert_eq!(read.unwrap(), 1, "the connection closed unanswered");
    Some(byte[0])
}

/// Reads one response head (up to the blank line) from a keep-alive connection.
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert_eq!(read, 1, "connection closed mid-response: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Sends `GET path` on a kept-alive connection and reads the whole response (its body has a
/// `Content-Length`); returns the status line.
pub async fn exchange(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: vestibule\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_response_head(stream).await;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head.lines().next().unwrap_or_default().to_owned()
}
