//! Protocol upgrades through the forwarder (RFC 9110 §7.8): a request that asks to switch
//! protocols (a WebSocket handshake, RFC 6455 §4) keeps its `Connection: upgrade` and
//! `Upgrade` fields on the way to the upstream; when the upstream answers `101 Switching
//! Protocols`, both connections are taken over and bytes are copied both ways until either
//! side closes. Whether a request may upgrade at all is the caller's decision, made before.

use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use super::Destination;
use super::headers::remove_own_set_cookies;

/// Whether `headers` ask to switch protocols: an `Upgrade` field and `upgrade` among the
/// `Connection` options.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The browser's side of an upgrade, taken from its request before the request is forwarded.
pub struct ClientUpgrade(OnUpgrade);

impl ClientUpgrade {
    /// The pending upgrade of `request`, when it asks for one.
    pub fn take(request: &mut Request) -> Option<Self> {
        wants_upgrade(request.headers()).then(|| Self(hyper::upgrade::on(request)))
    }

    /// The pending WebSocket handshake of `request` (`Upgrade: websocket`), when it is one.
    pub fn take_websocket(request: &mut Request) -> Option<Self> {
        let websocket = request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if websocket { Self::take(request) } else { None }
    }
}

/// Completes an upgrade the upstream accepted (`101`): runs `relay` on the two connections
/// (the browser's, the upstream's) in a task of its own, which keeps `hold` (the connection's
/// place under the cap on connections, and whatever else the caller counts) for as long as
/// the relay lives. Any other answer goes to the browser as an ordinary answer of
/// `destination`.
pub fn switch<R, F>(
    client: ClientUpgrade,
    mut response: Response<Incoming>,
    destination: Destination,
    hold: impl Send + 'static,
    relay: R,
) -> axum::response::Response
where
    R: FnOnce(TokioIo<Upgraded>, TokioIo<Upgraded>) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return super::into_browser_response(response, destination);
    }
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let _hold = hold;
        let (Ok(browser), Ok(upstream)) = tokio::join!(client.0, upstream) else {
            tracing::debug!("upgrade failed");
            return;
        };
        relay(TokioIo::new(browser), TokioIo::new(upstream)).await;
    });
    let (mut parts, _) = response.into_parts();
    remove_own_set_cookies(&mut parts.headers);
    axum::response::Response::from_parts(parts, Body::empty())
}

/// [`switch`] with a relay of bytes both ways until either side closes (the frontend's
/// development server: hot reload).
pub fn relay_bytes(
    client: ClientUpgrade,
    response: Response<Incoming>,
    hold: impl Send + 'static,
) -> axum::response::Response {
    switch(
        client,
        response,
        Destination::Frontend,
        hold,
        |mut browser, mut upstream| async move {
            let _ = tokio::io::copy_bidirectional(&mut browser, &mut upstream).await;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn an_upgrade_needs_both_the_upgrade_field_and_the_connection_option() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!wants_upgrade(&headers));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_upgrade(&headers));
        headers.remove(header::UPGRADE);
        assert!(!wants_upgrade(&headers));
    }
}
