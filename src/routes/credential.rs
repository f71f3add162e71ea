//! What a route's upstream receives (`[routes.credential]`): the login's access token, a
//! token obtained for this API alone (token exchange, a refresh for a resource, the client's
//! own token), a short-lived assertion Vestibule signs, or nothing.
//!
//! Pure: this module describes credentials and names them ([`Credential::id`]); obtaining and
//! keeping their tokens is [`crate::refresh`]'s, signing assertions [`crate::assertion`]'s.

use axum::http::HeaderName;
use sha2::{Digest, Sha256};

use crate::authz::ClaimPath;

/// The header an assertion travels in unless the route names another.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-vestibule-assertion";

/// What the upstream of a route receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The session's own access token (the login's, refreshed as it expires).
    Session,
    /// RFC 8693 token exchange at the token endpoint, the session's access token as the
    /// subject token: one token per session for this API.
    Exchange(TokenParameters),
    /// A refresh grant with the session's refresh token asking for this API's token
    /// (`resource`, `scope`, `audience`): Entra ID's one-resource-per-token model.
    Refresh(TokenParameters),
    /// The client-credentials grant: Vestibule's own token, shared by every session.
    Client(TokenParameters),
    /// A short-lived JWT about the user, signed by Vestibule.
    Assertion(AssertionSpec),
    /// No credential at all.
    None,
}

/// What a token for one API is asked for with (each sent only when configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParameters {
    /// `audience` (RFC 8693 §2.1; Auth0's name for the API).
    pub audience: Option<String>,
    /// `scope`, space-separated.
    pub scope: Option<String>,
    /// `resource` (RFC 8707), an absolute URI.
    pub resource: Option<String>,
    /// `dpop` (default `true`): whether the token may be bound to the session's key when
    /// `oidc.dpop` is on. `false` (an upstream that only knows `Bearer`): the token request
    /// goes without a proof, so the provider issues an unbound token for this API alone.
    pub dpop: bool,
}

impl Default for TokenParameters {
    /// No parameters, and DPoP as `oidc.dpop` says.
    fn default() -> Self {
        Self {
            audience: None,
            scope: None,
            resource: None,
            dpop: true,
        }
    }
}

/// How a route's identity assertion is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionSpec {
    /// The `aud` claim: the one service the assertion is for.
    pub audience: String,
    /// The request header it is sent in.
    pub header: HeaderName,
    /// The user's claims copied into it, each at the same place as in the user's claims (a
    /// nested path such as `realm_access.roles` keeps its nesting).
    pub claims: Vec<ClaimPath>,
    /// Whether the session's access token is sent as well (`Authorization: Bearer`).
    pub also_bearer: bool,
}

impl Credential {
    /// The credential a route gets when it names none: the session's token, or nothing on an
    /// anonymous route.
    pub fn default_for(anonymous: bool) -> Self {
        if anonymous {
            Credential::None
        } else {
            Credential::Session
        }
    }

    /// Whether obtaining it needs a signed-in user's session.
    pub fn needs_session(&self) -> bool {
        !matches!(self, Credential::Client(_) | Credential::None)
    }

    /// Whether it is a token Vestibule obtains and keeps apart from the login's tokens.
    pub fn held_token(&self) -> Option<&TokenParameters> {
        match self {
            Credential::Exchange(parameters)
            | Credential::Refresh(parameters)
            | Credential::Client(parameters) => Some(parameters),
            _ => None,
        }
    }

    /// Whether its token may be DPoP-bound (`[routes.credential] dpop`, default `true`): the
    /// session's own token follows the session (`oidc.dpop`); a token obtained for one API is
    /// asked for without a proof when its route says `dpop = false`.
    pub fn dpop(&self) -> bool {
        self.held_token().is_none_or(|parameters| parameters.dpop)
    }

    /// The kind's configuration name.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Session => "session",
            Credential::Exchange(_) => "exchange",
            Credential::Refresh(_) => "refresh",
            Credential::Client(_) => "client",
            Credential::Assertion(_) => "assertion",
            Credential::None => "none",
        }
    }

    /// A short, stable name for the token this credential stands for: the same kind and
    /// parameters on two routes name one token (obtained once, shared by both); any change of
    /// them names another. Hex, 16 characters; it reveals nothing a config file does not.
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.kind().as_bytes());
        if let Some(parameters) = self.held_token() {
            for value in [
                &parameters.audience,
                &parameters.scope,
                &parameters.resource,
            ] {
                // Length-prefixed, so that no two parameter sets hash alike.
                let value = value.as_deref().unwrap_or("");
                hash.update((value.len() as u64).to_be_bytes());
                hash.update(value.as_bytes());
                hash.update([u8::from(value.is_empty())]);
            }
            // An unbound token is another token than a bound one for the same API; ids of
            // the default (bound when `oidc.dpop` says so) stay as they were.
            if !parameters.dpop {
                hash.update(b"dpop=false");
            }
        }
        hash.finalize()[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(audience: &str) -> Credential {
        Credential::Exchange(TokenParameters {
            audience: Some(audience.into()),
            ..TokenParameters::default()
        })
    }

    #[test]
    fn equal_credentials_share_an_id_and_any_change_makes_another() {
        assert_eq!(exchange("orders").id(), exchange("orders").id());
        assert_ne!(exchange("orders").id(), exchange("billing").id());
        let refresh = Credential::Refresh(TokenParameters {
            audience: Some("orders".into()),
            ..TokenParameters::default()
        });
        assert_ne!(exchange("orders").id(), refresh.id(), "the kind counts");
        let moved = Credential::Exchange(TokenParameters {
            scope: Some("orders".into()),
            ..TokenParameters::default()
        });
        assert_ne!(exchange("orders").id(), moved.id(), "the parameter counts");
        assert_eq!(exchange("orders").id().len(), 16);
        let unbound = Credential::Exchange(TokenParameters {
            audience: Some("orders".into()),
            dpop: false,
            ..TokenParameters::default()
        });
        assert_ne!(
            exchange("orders").id(),
            unbound.id(),
            "an unbound token is another"
        );
        // The id of a bound (default) token is what it was before `dpop` existed: held
        // tokens stored by an older version are still found.
        assert_eq!(exchange("orders").id(), "6a3a26dcd255dcb3");
    }

    #[test]
    fn only_a_token_for_one_api_can_be_asked_for_unbound() {
        assert!(Credential::Session.dpop());
        assert!(exchange("orders").dpop());
        assert!(
            !Credential::Refresh(TokenParameters {
                dpop: false,
                ..TokenParameters::default()
            })
            .dpop()
        );
    }

    #[test]
    fn only_the_client_token_and_none_do_without_a_session() {
        assert!(!Credential::None.needs_session());
        assert!(!Credential::Client(TokenParameters::default()).needs_session());
        assert!(Credential::Session.needs_session());
        assert!(exchange("orders").needs_session());
        assert_eq!(Credential::default_for(true), Credential::None);
        assert_eq!(Credential::default_for(false), Credential::Session);
    }
}
