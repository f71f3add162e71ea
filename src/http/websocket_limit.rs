//! The limits on WebSocket relays: how many one session holds open at once on this instance
//! (`server.max_websockets_per_session`), so a stolen or runaway tab cannot hold the
//! instance's connections for one session, and how long a relay may stay silent
//! (`server.websocket_idle_timeout_secs`). Counted by the session's handle, never its cookie.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The WebSockets open per session, and the cap.
#[derive(Clone)]
pub struct WebSocketLimit {
    open: Arc<Mutex<HashMap<String, usize>>>,
    per_session: usize,
    idle_timeout: Duration,
}

/// One open WebSocket of a session; dropping it (the relay's end) frees its place.
pub struct WebSocketPermit {
    open: Arc<Mutex<HashMap<String, usize>>>,
    handle: String,
}

impl WebSocketLimit {
    /// At most `per_session` WebSockets per session, each closed after `idle_timeout` of
    /// silence.
    pub fn new(per_session: usize, idle_timeout: Duration) -> Self {
        Self {
            open: Arc::default(),
            per_session,
            idle_timeout,
        }
    }

    /// How long a relay may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// A place for one more WebSocket of the session `handle`, unless it holds the cap.
    pub fn admit(&self, handle: &str) -> Option<WebSocketPermit> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(handle.to_owned()).or_default();
        if *count >= self.per_session {
            return None;
        }
        *count += 1;
        Some(WebSocketPermit {
            open: self.open.clone(),
            handle: handle.to_owned(),
        })
    }
}

impl Drop for WebSocketPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.handle) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.handle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_at_most_the_cap_and_a_closed_socket_frees_its_place() {
        let limit = WebSocketLimit::new(2, Duration::from_secs(1));
        let first = limit.admit("a").unwrap();
        let _second = limit.admit("a").unwrap();
        assert!(limit.admit("a").is_none(), "the third is refused");
        assert!(
            limit.admit("b").is_some(),
            "other sessions are not affected"
        );
        drop(first);
        assert!(
            limit.admit("a").is_some(),
            "a closed socket frees its place"
        );
        assert!(
            limit.open.lock().unwrap().get("b").is_none(),
            "no entry outlives its sockets"
        );
    }
}
