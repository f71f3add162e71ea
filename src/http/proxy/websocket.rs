//! WebSocket relays on API routes (RFC 6455): once the upstream has accepted the handshake,
//! messages are relayed frame by frame in both directions, so that the relay can end *between*
//! frames with a close frame of its own. It ends when either side closes, when nothing has
//! crossed it for the idle limit, or when the caller's `until` resolves (the session ended):
//! the browser then gets a close frame with a code and reason it can act on ([`Close`]) and
//! the upstream a `1001 Going Away`. It never looks inside a message.

use std::future::Future;
use std::time::Duration;

use axum::http::Response;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::Destination;
use super::upgrade::{ClientUpgrade, switch};

/// Why Vestibule closed a relay, as the browser's close frame says it (codes in the private
/// range of RFC 6455 §7.4.2, documented in docs/routes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// `4401 session_ended`: the session was ended (logout, revoke, eviction, …). Log in again.
    SessionEnded,
    /// `4401 session_expired`: the session reached its idle or absolute timeout.
    SessionExpired,
    /// `4408 relay_idle`: nothing crossed the relay for the idle limit. Reconnect when needed.
    Idle,
}

impl Close {
    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            Close::SessionEnded | Close::SessionExpired => 4401,
            Close::Idle => 4408,
        }
    }

    /// The close reason.
    pub fn reason(self) -> &'static str {
        match self {
            Close::SessionEnded => "session_ended",
            Close::SessionExpired => "session_expired",
            Close::Idle => "relay_idle",
        }
    }
}

/// How much each side of a relay reads at once. tungstenite's default (128 KiB, zero-filled
/// before every read, so resident) made an idle relay cost 263 kB (`bench/run --only
/// websockets`); larger messages still get the room they need, a read at a time.
const READ_BUFFER_BYTES: usize = 4096;

/// The largest message relayed (either way); a larger one closes the relay (`1009`).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Completes a WebSocket handshake the upstream accepted (`101`) and relays messages (see
/// [`super::upgrade::switch`]: the relay keeps `hold`, the connection's place under the cap and
/// the session's WebSocket count). Any other answer goes to the browser as an ordinary
/// answer of the API `route`.
pub fn relay(
    client: ClientUpgrade,
    response: Response<Incoming>,
    route: Destination,
    idle_limit: Duration,
    until: impl Future<Output = Close> + Send + 'static,
    hold: impl Send + 'static,
) -> axum::response::Response {
    switch(
        client,
        response,
        route,
        hold,
        move |browser, upstream| async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER_BYTES)
                .max_message_size(Some(MAX_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_MESSAGE_BYTES));
            let browser =
                WebSocketStream::from_raw_socket(browser, Role::Server, Some(config)).await;
            let upstream =
                WebSocketStream::from_raw_socket(upstream, Role::Client, Some(config)).await;
            if let Some(close) = pump(browser, upstream, idle_limit, until).await {
                tracing::debug!(
                    reason = close.reason(),
                    "WebSocket relay closed by Vestibule"
                );
            }
        },
    )
}

/// Relays until one side closes (`None`) or Vestibule closes it (`Some`).
async fn pump<B, U>(
    mut browser: WebSocketStream<B>,
    mut upstream: WebSocketStream<U>,
    idle_limit: Duration,
    until: impl Future<Output = Close>,
) -> Option<Close>
where
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let until = std::pin::pin!(until);
    let mut until = until;
    let idle = tokio::time::sleep(idle_limit);
    let mut idle = std::pin::pin!(idle);
    let close = loop {
        tokio::select! {
            close = &mut until => break Some(close),
            () = &mut idle => break Some(Close::Idle),
            message = browser.next() => match message {
                Some(Ok(message)) => {
                    let closing = message.is_close();
                    if upstream.send(message).await.is_err() || closing {
                        break None;
                    }
                }
                _ => break None,
            },
            message = upstream.next() => match message {
                Some(Ok(message)) => {
                    let closing = message.is_close();
                    if browser.send(message).await.is_err() || closing {
                        break None;
                    }
                }
                _ => break None,
            },
        }
        idle.as_mut()
            .reset(tokio::time::Instant::now() + idle_limit);
    };
    match close {
        Some(close) => {
            let to_browser = CloseFrame {
                code: CloseCode::from(close.code()),
                reason: close.reason().into(),
            };
            let to_upstream = CloseFrame {
                code: CloseCode::Away,
                reason: close.reason().into(),
            };
            let _ = tokio::join!(
                browser.close(Some(to_browser)),
                upstream.close(Some(to_upstream))
            );
        }
        None => {
            let _ = tokio::join!(browser.close(None), upstream.close(None));
        }
    }
    close
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Message;

    async fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (
            WebSocketStream::from_raw_socket(a, Role::Client, None).await,
            WebSocketStream::from_raw_socket(b, Role::Server, None).await,
        )
    }

    #[tokio::test]
    async fn messages_cross_and_the_end_of_the_session_closes_both_sides_with_a_reason() {
        let (mut page, browser_side) = pair().await;
        let (upstream_side, mut api) = pair().await;
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(pump(
            browser_side,
            upstream_side,
            Duration::from_secs(60),
            async move {
                let _ = ended.await;
                Close::SessionEnded
            },
        ));
        page.send(Message::text("hi")).await.unwrap();
        assert_eq!(api.next().await.unwrap().unwrap(), Message::text("hi"));
        api.send(Message::text("yo")).await.unwrap();
        assert_eq!(page.next().await.unwrap().unwrap(), Message::text("yo"));

        end.send(()).unwrap();
        let Some(Ok(Message::Close(Some(frame)))) = page.next().await else {
            panic!("the page gets a close frame");
        };
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (4401, "session_ended")
        );
        let Some(Ok(Message::Close(Some(frame)))) = api.next().await else {
            panic!("the upstream gets a close frame");
        };
        assert_eq!(frame.code, CloseCode::Away);
        assert_eq!(relay.await.unwrap(), Some(Close::SessionEnded));
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_nothing_crosses_closes_at_the_idle_limit() {
        let (mut page, browser_side) = pair().await;
        let (upstream_side, _api) = pair().await;
        let relay = tokio::spawn(pump(
            browser_side,
            upstream_side,
            Duration::from_secs(30),
            std::future::pending(),
        ));
        let Some(Ok(Message::Close(Some(frame)))) = page.next().await else {
            panic!("the page gets a close frame");
        };
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (4408, "relay_idle")
        );
        assert_eq!(relay.await.unwrap(), Some(Close::Idle));
    }
}
