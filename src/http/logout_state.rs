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

/// Marks, in the cookie, a logout whose provider was not sent the state (Cognito's and
/// Auth0's legacy logout endpoints): its way back comes without one. Not base64url.
const UNSENT_MARK: &str = "unsent.";

/// The `state` of one logout at the provider: 256 random bits, base64url; and whether the
/// provider was sent it (and so must send it back).
pub struct LogoutState {
    value: String,
    sent: bool,
}

impl LogoutState {
    /// A fresh random state, to be sent to the provider.
    pub fn generate() -> Self {
        Self {
            value: crate::random::url_safe_secret(),
            sent: true,
        }
    }

    /// This state, marked as not sent: the provider's logout URL does not carry it.
    pub fn unsent(self) -> Self {
        Self {
            sent: false,
            ..self
        }
    }

    /// Parses a logout cookie's value; anything but 32 bytes in base64url (after the mark of
    /// an unsent state) is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let (state, sent) = match value.strip_prefix(UNSENT_MARK) {
            Some(state) => (state, false),
            None => (value, true),
        };
        if state.len() != 43 || URL_SAFE_NO_PAD.decode(state).ok()?.len() != 32 {
            return None;
        }
        Some(Self {
            value: state.to_owned(),
            sent,
        })
    }

    /// The value sent to the provider.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The logout cookie's value: the state, marked when it was not sent.
    pub fn cookie_value(&self) -> String {
        if self.sent {
            self.value.clone()
        } else {
            format!("{UNSENT_MARK}{}", self.value)
        }
    }

    /// Whether the way back is this logout's: the state sent, returned exactly (compared in
    /// constant time); for a state never sent, no state at all (the cookie alone shows this
    /// browser left for the provider's logout from here, minutes ago).
    pub fn confirms(&self, received: Option<&str>) -> bool {
        match (self.sent, received) {
            (true, Some(received)) => self.matches(received),
            (false, None) => true,
            _ => false,
        }
    }

    /// Whether the provider sent back exactly this state (compared in constant time).
    pub fn matches(&self, received: &str) -> bool {
        self.value.as_bytes().ct_eq(received.as_bytes()).into()
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

    #[test]
    fn a_state_sent_must_come_back_and_one_never_sent_must_not() {
        let sent = LogoutState::generate();
        let value = sent.as_str().to_owned();
        let sent = LogoutState::parse(&sent.cookie_value()).unwrap();
        assert!(sent.confirms(Some(&value)));
        assert!(
            !sent.confirms(None),
            "the provider must return the state it was sent"
        );
        assert!(!sent.confirms(Some("other")));
        let unsent = LogoutState::generate().unsent();
        assert!(unsent.cookie_value().starts_with("unsent."));
        let unsent = LogoutState::parse(&unsent.cookie_value()).unwrap();
        assert!(unsent.confirms(None));
        assert!(
            !unsent.confirms(Some(unsent.as_str())),
            "nobody was sent it"
        );
        assert!(LogoutState::parse(&format!("unsent.{}", "*".repeat(43))).is_none());
    }
}
