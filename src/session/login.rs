//! Pending logins: what the callback needs to finish a login started by this browser.
//!
//! A pending login is stored under a hash of its `state`, sealed with the secret of the
//! browser's login cookie, and taken with an atomic get-and-delete: it works once, only in the
//! browser that started it, and only until its TTL runs out. [`Sessions`]'s two pending-login
//! operations live here, beside the types they seal and open.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::crypto::OpenError;
use super::{Displaced, PENDING_LOGIN_TTL, PendingLimits, Sessions, StoreError};
use crate::oidc::AuthenticationRequest;

/// The login cookie's value: a random secret binding pending logins to one browser.
///
/// One value per browser is reused across parallel logins, so tabs do not pile up cookies.
#[derive(Clone)]
pub struct BrowserBinding([u8; 32]);

impl BrowserBinding {
    /// A new random binding.
    pub fn generate() -> Self {
        Self(crate::random::bytes())
    }

    /// Parses a login cookie value; malformed values are `None`.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The cookie value.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }

    /// The store key of this browser's index of pending logins (a hash: the store never
    /// holds the cookie).
    pub(crate) fn index_key(&self) -> String {
        super::store::storage_key("login-browser", &self.0)
    }
}

/// Everything the callback needs from the request that started the login.
#[derive(Serialize, Deserialize)]
pub struct PendingLogin {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub pkce_verifier: String,
    /// Where to send the browser afterwards (already validated).
    pub return_to: String,
    /// The session cookie this browser sent when it started the login (encoded), so the
    /// callback can end that session: the `SameSite=Strict` cookie itself does not come back
    /// on the provider's cross-site redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session: Option<String>,
    /// What the login asked of the authentication (`acr_values`, `max_age`, `prompt`), checked
    /// at the callback; absent in pending logins stored before it existed (nothing asked).
    #[serde(default)]
    pub authentication: AuthenticationRequest,
    /// The id of the provider the login was started at; `None` for the first provider (and in
    /// pending logins stored before several providers existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The login's DPoP key (`oidc.dpop`), whose thumbprint the authorization request named:
    /// the code exchange proves possession of it. Sealed like the PKCE verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<super::StoredDpopKey>,
}

impl PendingLogin {
    /// Constant-time comparison of the stored `state` with the one the callback received.
    pub fn state_matches(&self, received: &str) -> bool {
        self.state.as_bytes().ct_eq(received.as_bytes()).into()
    }
}

/// Why a callback's `state` does not lead to a pending login.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginLookupError {
    /// Unknown, already used or expired `state`.
    #[error("the login request is unknown, expired or was already used")]
    UnknownState,
    /// The pending login exists but this browser did not start it.
    #[error("the login was started in another browser")]
    OtherBrowser,
}

impl Sessions {
    /// Stores a pending login for `binding`'s browser under its `state`, within `limits`
    /// (displacing the oldest beyond them).
    pub async fn put_pending_login(
        &self,
        binding: &BrowserBinding,
        pending: &PendingLogin,
        limits: PendingLimits,
    ) -> Result<Displaced, StoreError> {
        let key = super::store::storage_key("login", pending.state.as_bytes());
        let plaintext = serde_json::to_vec(pending)
            .map_err(|error| StoreError::Unavailable(format!("cannot encode login: {error}")))?;
        let sealed = self.keys.seal(binding.secret(), key.as_bytes(), &plaintext);
        self.store
            .put_pending_login(
                &key,
                &sealed,
                PENDING_LOGIN_TTL,
                &binding.index_key(),
                limits,
            )
            .await
    }

    /// Takes (at most once) the pending login for `state`, if this browser started it.
    ///
    /// The binding is checked before the record is consumed, so a stranger who learns a
    /// `state` cannot cancel someone else's login; the consuming `GETDEL` keeps it single use.
    pub async fn take_pending_login(
        &self,
        binding: Option<&BrowserBinding>,
        state: &str,
    ) -> Result<Result<PendingLogin, LoginLookupError>, StoreError> {
        let key = super::store::storage_key("login", state.as_bytes());
        let Some(sealed) = self.store.get(&key).await? else {
            return Ok(Err(LoginLookupError::UnknownState));
        };
        let Some(binding) = binding else {
            return Ok(Err(LoginLookupError::OtherBrowser));
        };
        // Any key of the ring opens it; a pending login lives minutes, so it is never
        // re-sealed. One sealed under a key since removed has expired as far as anyone can
        // tell; one that does not open otherwise was sealed for another browser.
        let pending = match self.keys.open(binding.secret(), key.as_bytes(), &sealed) {
            Ok(opened) => serde_json::from_slice::<PendingLogin>(&opened.plaintext).ok(),
            Err(OpenError::RemovedKey) => {
                tracing::info!("a pending login is sealed under a removed key; it has expired");
                return Ok(Err(LoginLookupError::UnknownState));
            }
            Err(OpenError::DoesNotOpen) => None,
        };
        let Some(pending) = pending.filter(|pending| pending.state_matches(state)) else {
            return Ok(Err(LoginLookupError::OtherBrowser));
        };
        let taken = self.store.take(&key).await?;
        self.store
            .forget_pending_login(&key, &binding.index_key())
            .await?;
        match taken {
            Some(taken) if taken == sealed => Ok(Ok(pending)),
            _ => Ok(Err(LoginLookupError::UnknownState)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{KeyRing, MasterKey, Store};
    use std::time::Duration;

    const LIMITS: PendingLimits = PendingLimits {
        per_browser: 5,
        total: 100,
    };

    fn pending(state: &str) -> PendingLogin {
        PendingLogin {
            state: state.into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/x".into(),
            previous_session: None,
            authentication: AuthenticationRequest::default(),
            provider: None,
            dpop_key: None,
        }
    }

    #[test]
    fn binding_round_trips_and_rejects_garbage() {
        let b = BrowserBinding::generate();
        assert_eq!(BrowserBinding::parse(&b.encode()).unwrap().0, b.0);
        assert!(BrowserBinding::parse("short").is_none());
        assert!(BrowserBinding::parse(&"*".repeat(43)).is_none());
    }

    #[test]
    fn a_pending_logins_dpop_key_is_the_same_key_when_taken() {
        let key = crate::oidc::dpop::DpopKey::generate().unwrap();
        let mut login = pending("s");
        login.dpop_key = Some(super::super::StoredDpopKey::new(&key));
        let read: PendingLogin =
            serde_json::from_slice(&serde_json::to_vec(&login).unwrap()).unwrap();
        let restored = read.dpop_key.unwrap().key().unwrap();
        assert_eq!(restored.thumbprint(), key.thumbprint());
        let without = serde_json::to_string(&pending("s")).unwrap();
        assert!(
            !without.contains("dpop_key"),
            "logins without DPoP are as before"
        );
    }

    #[test]
    fn state_comparison_is_exact() {
        let p = PendingLogin {
            state: "abc".into(),
            nonce: String::new(),
            pkce_verifier: String::new(),
            return_to: "/".into(),
            previous_session: None,
            authentication: AuthenticationRequest::default(),
            provider: None,
            dpop_key: None,
        };
        assert!(p.state_matches("abc"));
        assert!(!p.state_matches("abd"));
        assert!(!p.state_matches("ab"));
        assert!(!p.state_matches(""));
    }

    #[tokio::test]
    async fn pending_login_is_single_use_and_bound_to_its_browser() {
        let sessions = Sessions::new(
            Store::memory(),
            MasterKey::new([7; 32]),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let mine = BrowserBinding::generate();
        sessions
            .put_pending_login(&mine, &pending("s1"), LIMITS)
            .await
            .unwrap();
        let taken = sessions
            .take_pending_login(Some(&mine), "s1")
            .await
            .unwrap();
        assert_eq!(taken.unwrap().return_to, "/x");
        let replay = sessions
            .take_pending_login(Some(&mine), "s1")
            .await
            .unwrap();
        assert_eq!(replay.err(), Some(LoginLookupError::UnknownState));

        sessions
            .put_pending_login(&mine, &pending("s2"), LIMITS)
            .await
            .unwrap();
        let other = BrowserBinding::generate();
        let stolen = sessions
            .take_pending_login(Some(&other), "s2")
            .await
            .unwrap();
        assert_eq!(stolen.err(), Some(LoginLookupError::OtherBrowser));

        sessions
            .put_pending_login(&mine, &pending("s3"), LIMITS)
            .await
            .unwrap();
        let no_cookie = sessions.take_pending_login(None, "s3").await.unwrap();
        assert_eq!(no_cookie.err(), Some(LoginLookupError::OtherBrowser));
    }

    #[tokio::test]
    async fn a_pending_login_opens_under_any_ring_key_and_expires_with_its_key() {
        let store = Store::memory();
        let ring = |entries: &[(&str, u8)]| {
            Sessions::new(
                store.clone(),
                KeyRing::for_testing(entries),
                Duration::from_secs(60),
                Duration::from_secs(600),
            )
        };
        let browser = BrowserBinding::generate();
        let before = ring(&[("k1", 1)]);
        for state in ["s1", "s2"] {
            before
                .put_pending_login(&browser, &pending(state), LIMITS)
                .await
                .unwrap();
        }
        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        let taken = rotated.take_pending_login(Some(&browser), "s1").await;
        assert_eq!(taken.unwrap().unwrap().return_to, "/x");
        let retired = ring(&[("k2", 2)]);
        let taken = retired.take_pending_login(Some(&browser), "s2").await;
        assert_eq!(taken.unwrap().err(), Some(LoginLookupError::UnknownState));
    }
}
