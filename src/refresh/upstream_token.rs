//! The token a route's upstream receives together with what binds it: a `Bearer` token, or a
//! DPoP-bound one (RFC 9449) with the session key its proofs are signed with. The binding
//! travels with the token from the record that holds it, so the proxy never has to guess, and
//! a bound token can never leave as `Bearer` for want of its key.
//!
//! Owns no I/O; the key stays sealed-record bytes until the proxy signs a proof with it.

use super::{AccessError, Refresher};
use crate::oidc::OidcError;
use crate::session::dpop_key::StoredDpopKey;
use crate::session::{SessionCookie, TokenSet};

/// An access token for an upstream, with its DPoP key when it is bound.
pub struct UpstreamToken {
    /// The access token.
    pub token: String,
    /// The session's DPoP key when the token is bound to it (`Authorization: DPoP` and a
    /// proof); `None`: a `Bearer` token.
    pub dpop_key: Option<StoredDpopKey>,
}

impl UpstreamToken {
    /// `token`, bound to `key` when `dpop_bound`. A bound token without its key cannot be sent
    /// at all (never as `Bearer`): the route fails, its session goes on.
    pub fn new(
        token: String,
        dpop_bound: bool,
        key: Option<StoredDpopKey>,
    ) -> Result<Self, AccessError> {
        match (dpop_bound, key) {
            (false, _) => Ok(Self {
                token,
                dpop_key: None,
            }),
            (true, Some(key)) => Ok(Self {
                token,
                dpop_key: Some(key),
            }),
            (true, None) => Err(AccessError::Credential(OidcError::Refused(
                "the token is DPoP-bound but no key of this session signs for it".into(),
            ))),
        }
    }

    /// The session's access token as its record's `tokens` hold it.
    pub fn of_session(tokens: &TokenSet) -> Result<Self, AccessError> {
        Self::new(
            tokens.access_token.clone(),
            tokens.dpop_bound,
            tokens.dpop_key.clone(),
        )
    }
}

impl Refresher {
    /// `token`, the access token a refresh (or a wait for one) gave the session of `cookie`,
    /// with the binding its record names: read from this instance's copy when that holds it
    /// already, else from the store. Should yet another refresh have replaced it meanwhile,
    /// a session with a key treats it as bound: the wrong guess costs one refused call, the
    /// other would send a bound token as `Bearer`.
    pub(super) async fn as_stored(
        &self,
        cookie: &SessionCookie,
        token: String,
    ) -> Result<UpstreamToken, AccessError> {
        let tokens = match self.sessions.load(cookie).await? {
            Some(session) if session.record.tokens.access_token == token => {
                return UpstreamToken::of_session(&session.record.tokens);
            }
            _ => match self.sessions.load_fresh(cookie).await? {
                Some(session) => session.record,
                None => return Err(AccessError::SessionEnded),
            },
        };
        let tokens = &tokens.tokens;
        let dpop_bound = if tokens.access_token == token {
            tokens.dpop_bound
        } else {
            tokens.dpop_key.is_some()
        };
        UpstreamToken::new(token, dpop_bound, tokens.dpop_key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::dpop::DpopKey;

    #[test]
    fn a_bound_token_goes_with_its_key_or_not_at_all() {
        let key = StoredDpopKey::new(&DpopKey::generate().unwrap());
        let bearer = UpstreamToken::new("t".into(), false, Some(key.clone())).unwrap();
        assert!(
            bearer.dpop_key.is_none(),
            "an unbound token is a Bearer token"
        );
        let bound = UpstreamToken::new("t".into(), true, Some(key)).unwrap();
        assert!(bound.dpop_key.is_some());
        assert!(matches!(
            UpstreamToken::new("t".into(), true, None),
            Err(AccessError::Credential(_))
        ));
    }
}
