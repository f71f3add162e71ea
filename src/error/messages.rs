//! What each failure says to the user: a fixed phrase per kind, never a cause from another
//! system, a token or a cookie.

use super::{AppError, LoginFailure};
use crate::oidc::OidcError;
use crate::session::StoreError;

impl AppError {
    /// A message safe to show a user: it never includes a cause from another system.
    pub(super) fn public_message(&self) -> String {
        match self {
            AppError::Unauthenticated => "You are not logged in, or your session has ended.".into(),
            AppError::Forbidden(reason) => format!("Request refused: {reason}."),
            AppError::InsufficientPermissions { route } => {
                format!("Your account is not permitted to use {route}.")
            }
            AppError::StepUpRequired { .. } => {
                "This action needs a fresh or stronger sign-in. Please log in again.".into()
            }
            AppError::Credential {
                route,
                error: OidcError::Rejected(_) | OidcError::Refused(_),
            } => format!(
                "The identity provider would not issue a token for {route} to this session; \
                 your other services are not affected."
            ),
            AppError::Credential { route, .. } => format!(
                "A token for {route} could not be obtained from the identity provider. Please \
                 retry shortly; your other services are not affected."
            ),
            AppError::BadRequest(reason) => format!("Bad request: {reason}."),
            AppError::UnknownProvider => {
                "This sign-in link names a provider that is not configured here.".into()
            }
            AppError::NotFound => "There is nothing at this address.".into(),
            AppError::Login(LoginFailure::ProviderError(_)) => {
                "The identity provider did not complete the login.".into()
            }
            AppError::Login(LoginFailure::UnknownState) => {
                "This login link is unknown, expired or was already used.".into()
            }
            AppError::Login(LoginFailure::OtherBrowser) => {
                "This login was started in another browser or the login cookie is missing.".into()
            }
            AppError::Login(LoginFailure::MissingParameters) => {
                "The identity provider's answer is incomplete.".into()
            }
            AppError::Login(LoginFailure::CodeRejected) => {
                "The login took too long or was already completed. Please log in again.".into()
            }
            AppError::Login(LoginFailure::IssuerMismatch) => {
                "The login answer came from an unexpected identity provider.".into()
            }
            AppError::Login(LoginFailure::NotAuthenticatedAsRequested(shortfall)) => format!(
                "The identity provider did not authenticate you as required: this login asked \
                 for a stronger or more recent sign-in than the provider performed ({shortfall}). \
                 You were not signed in."
            ),
            AppError::Login(LoginFailure::DpopUnsupported) => {
                "The identity provider does not bind its tokens to this application's key \
                 (DPoP), which this application requires. You were not signed in; the \
                 administrator must enable DPoP for this application at the provider."
                    .into()
            }
            AppError::Store(StoreError::Conflict(_)) => {
                "Your session was ended while it was being created (signed out elsewhere, or \
                 more sign-ins at once than your account allows). Please log in again."
                    .into()
            }
            AppError::Store(_) => {
                "The session store is temporarily unavailable. Please retry shortly.".into()
            }
            AppError::Provider(OidcError::Unavailable(_) | OidcError::Deferred(_)) => {
                "The identity provider is temporarily unavailable. Please retry shortly.".into()
            }
            // The provider's error code is checked to be a printable word (never its description).
            AppError::Provider(OidcError::PushRefused(code)) => format!(
                "The identity provider refused this application's sign-in request (a pushed \
                 authorization request, error {code}). You were not signed in; retrying will \
                 not help until the application's registration at the provider is fixed."
            ),
            AppError::Provider(_) => "The identity provider's answer could not be verified.".into(),
            AppError::UpstreamUnavailable(_) => "The API behind this route is unavailable.".into(),
            AppError::UpstreamTimeout => "The API behind this route did not answer in time.".into(),
            AppError::TooManyRequests(_) => {
                "Too many login attempts from your network. Please wait a moment and retry.".into()
            }
            AppError::PayloadTooLarge => "The request body is too large.".into(),
            AppError::TooManyWebSockets => {
                "This session has too many live connections open. Close one and retry.".into()
            }
            AppError::MethodNotAllowed(allowed) => {
                format!("This endpoint answers {allowed} only.")
            }
            // Each reason is a fixed phrase about the sender's own token.
            AppError::LogoutTokenRejected(reason) => format!("{reason}."),
            AppError::NoSuchSession => "You have no session with this id.".into(),
            AppError::LogoutNotConfirmed => {
                "You are logged out of this application, but the identity provider's answer does \
                 not belong to a logout started in this browser (or it came too late), so it was \
                 not accepted."
                    .into()
            }
        }
    }
}
