//! Why a login callback failed ([`LoginFailure`]), in words a user can act on; [`super::AppError`]
//! turns it into the error page and the audit and metric reason.

use super::AppError;
use crate::session::LoginLookupError;

/// Why a login callback failed, in words a user can act on.
#[derive(Debug)]
pub enum LoginFailure {
    /// The provider redirected back with `error=…`.
    ProviderError(String),
    /// `state` is unknown, replayed or expired.
    UnknownState,
    /// The login was started in another browser.
    OtherBrowser,
    /// `state` or `code` is missing.
    MissingParameters,
    /// The provider refused the code (expired, reused, or PKCE mismatch).
    CodeRejected,
    /// The response names another issuer (RFC 9207 mix-up defence).
    IssuerMismatch,
    /// The ID token does not show the authentication the login asked for (`acr` not one of
    /// the `acr_values`, `auth_time` missing or older than `max_age`): a session with it would
    /// only be sent to log in again.
    NotAuthenticatedAsRequested(crate::oidc::Shortfall),
    /// `oidc.dpop = "required"`, and the provider does not bind tokens to the session's key
    /// (its discovery offers no ES256 proofs, or it answered a Bearer token).
    DpopUnsupported,
}

impl std::fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginFailure::ProviderError(code) => write!(f, "provider returned error {code}"),
            LoginFailure::UnknownState => f.write_str("unknown, replayed or expired state"),
            LoginFailure::OtherBrowser => f.write_str("login started in another browser"),
            LoginFailure::MissingParameters => f.write_str("state or code missing"),
            LoginFailure::CodeRejected => {
                f.write_str("the provider rejected the authorization code")
            }
            LoginFailure::IssuerMismatch => {
                f.write_str("authorization response from another issuer")
            }
            LoginFailure::NotAuthenticatedAsRequested(shortfall) => shortfall.fmt(f),
            LoginFailure::DpopUnsupported => {
                f.write_str("the provider does not bind tokens with DPoP (oidc.dpop = required)")
            }
        }
    }
}

impl From<LoginLookupError> for AppError {
    fn from(error: LoginLookupError) -> Self {
        AppError::Login(match error {
            LoginLookupError::UnknownState => LoginFailure::UnknownState,
            LoginLookupError::OtherBrowser => LoginFailure::OtherBrowser,
        })
    }
}
