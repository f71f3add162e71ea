//! What the examples share: their command line, and the sessions they file (a Firefox on Linux
//! in 203.0.113.0/24, created now, for eight hours).

use vestibule::session::{SessionOrigin, SessionRecord, TokenSet};

/// The value after `name` on the command line.
pub fn argument(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|arg| arg != name);
    args.next()?;
    args.next()
}

/// A session of `sub` holding `tokens`, created at `now` (unix seconds).
pub fn record(sub: String, tokens: TokenSet, now: u64) -> SessionRecord {
    SessionRecord {
        sub,
        tokens,
        created_at: now,
        expires_at: now + 28_800,
        logout_sid: vestibule::random::url_safe_secret(),
        handle: vestibule::random::url_safe_id(),
        origin_network: "203.0.113.0/24".into(),
        origin_browser: "Firefox".into(),
        provider: None,
    }
}

/// Where a session comes from, as a login files it in the user's index.
pub fn origin(provider_session: Option<String>) -> SessionOrigin {
    SessionOrigin {
        device: "Firefox on Linux".into(),
        network: "203.0.113.0/24".into(),
        browser_family: "Firefox".into(),
        provider_session,
    }
}
