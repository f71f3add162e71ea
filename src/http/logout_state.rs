//! The `state` of an RP-initiated logout (RP-Initiated Logout 1.0 §2–3) and where its way
//! back lands: what the logout cookie holds and the endpoint that checks it
//! ([`super::logout`]), kept apart so the cookie jar can name them without depending on the
//! logout workflow.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// The `post_logout_redirect_uri` Vestibule sends (on `public_url`); it must be registered.
pub const LOGOUT_CALLBACK_PATH: &str = "/api/auth/logout-callback";

/// How long the browser keeps the expected `state`: time enough to confirm the logout on the
/// provider's page, short enough that a forgotten one does not linger.
pub const LOGOUT_STATE_TTL: Duration = Duration::from_secs(600);

/// The `state` of one RP-initiated logout: 256 random bits, base64url.
pub struct LogoutState(String);

impl LogoutState {
    /// A fresh random state.
    pub fn generate() -> Self {
        Self(crate::random::url_safe_secret())
    }

    /// Parses a logout cookie's value; anything but 32 bytes in base64url is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != 43 || URL_SAFE_NO_PAD.decode(value).ok()?.len() != 32 {
            return None;
        }
        Some(Self(value.to_owned()))
    }

    /// The value sent to the provider and kept in the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the provider sent back exactly this state (compared in constant time).
    pub fn matches(&self, received: &str) -> bool {
        self.0.as_bytes().ct_eq(received.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::LogoutState;

    #[test]
    fn a_logout_state_is_256_random_bits_and_matches_only_itself() {
        let state = LogoutState::generate();
        assert_eq!(state.as_str().len(), 43);
        assert!(state.matches(state.as_str()));
        assert!(!state.matches(&format!("{}_INVALID", state.as_str())));
        assert!(!state.matches(""));
        assert_ne!(LogoutState::generate().as_str(), state.as_str());
        let parsed = LogoutState::parse(state.as_str()).expect("its own value parses");
        assert!(parsed.matches(state.as_str()));
        assert!(LogoutState::parse("short").is_none());
        assert!(LogoutState::parse(&"*".repeat(43)).is_none());
    }
}
