//! A TCP relay on loopback that forwards every connection to one target and remembers the
//! request line (and the bearer token, if any) of every HTTP/1.1 request it carries: the
//! "published port" of the compose setup, and the witness of who called which endpoint through
//! which host name, and with which token. What it remembers stays in the test's memory.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay; it lives as long as the runtime that started it.
#[derive(Clone)]
pub struct Relay {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One request the relay carried.
struct Seen {
    /// `METHOD path HTTP/1.1`.
    line: String,
    /// The token of its `Authorization: Bearer` header.
    bearer: Option<String>,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lines = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, target_port, lines.clone()));
            }
        });
        Self { port, seen }
    }

    /// Every request line (`METHOD path HTTP/1.1`) so far, in arrival order per connection.
    pub fn request_lines(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|seen| seen.line.clone()).collect()
    }

    /// The bearer token of every request so far whose path starts with `path_prefix` (`None`:
    /// the request had none), in arrival order per connection.
    pub fn bearer_tokens_to(&self, path_prefix: &str) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|seen| {
                seen.line
                    .split(' ')
                    .nth(1)
                    .is_some_and(|path| path.starts_with(path_prefix))
            })
            .map(|seen| seen.bearer.clone())
            .collect()
    }

    /// How many requests had a path starting with `path_prefix`.
    pub fn requests_to(&self, path_prefix: &str) -> usize {
        self.request_lines()
            .iter()
            .filter(|line| {
                line.split(' ')
                    .nth(1)
                    .is_some_and(|path| path.starts_with(path_prefix))
            })
            .count()
    }
}

async fn forward(client: TcpStream, target_port: u16, lines: Arc<Mutex<Vec<Seen>>>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let requests = async move {
        let _ = relay_requests(&mut client_read, &mut upstream_write, &lines).await;
        let _ = upstream_write.shutdown().await;
    };
    let responses = async move {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, responses);
}

/// Passes requests on one by one, noting each request line: the head up to the blank line,
/// then `Content-Length` bytes of body. A chunked body ends the noting (the rest is copied).
async fn relay_requests(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    lines: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut buffered: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return to.write_all(&buffered).await;
            }
            buffered.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
        let raw_header = |name: &str| {
            head.lines().skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let header = |name: &str| raw_header(name).map(|value| value.to_ascii_lowercase());
        let bearer = raw_header("authorization").and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
        lines.lock().unwrap().push(Seen {
            line: head.lines().next().unwrap_or("").to_owned(),
            bearer,
        });
        if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
            to.write_all(&buffered).await?;
            tokio::io::copy(from, to).await?;
            return Ok(());
        }
        let mut body_left: usize = header("content-length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        to.write_all(&buffered[..head_end]).await?;
        buffered.drain(..head_end);
        let from_buffer = body_left.min(buffered.len());
        to.write_all(&buffered[..from_buffer]).await?;
        buffered.drain(..from_buffer);
        body_left -= from_buffer;
        while body_left > 0 {
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            let take = n.min(body_left);
            to.write_all(&chunk[..take]).await?;
            buffered.extend_from_slice(&chunk[take..n]);
            body_left -= take;
        }
    }
}
