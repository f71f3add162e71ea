//! The one place where failures become HTTP responses.
//!
//! Every layer's error converts into [`AppError`], which decides the status code, the JSON
//! body for API calls, the HTML page for browser navigations ([`PageError`]) and what is
//! logged. Causes are logged, never sent; no message may contain a token or cookie.

use askama::Template;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::oidc::{LogoutCheckError, LogoutTokenError, OidcError};
use crate::session::StoreError;

mod login_failure;
mod messages;

pub use login_failure::LoginFailure;

/// Where the browser should go to log in.
pub const LOGIN_URL: &str = "/api/auth/login";

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No valid session (missing, unknown, expired, tampered cookie, or ended by the provider).
    #[error("no valid session")]
    Unauthenticated,
    /// The anti-forgery check failed.
    #[error("request refused by the anti-forgery check: {0}")]
    Forbidden(&'static str),
    /// The client sent something we cannot serve.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A login named a provider id that is not configured (`?provider=ID`).
    #[error("the login names an unknown provider")]
    UnknownProvider,
    /// No such endpoint or route.
    #[error("not found")]
    NotFound,
    /// The login callback could not be completed.
    #[error("login failed: {0}")]
    Login(LoginFailure),
    /// The session store is unreachable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity provider is unreachable or misbehaved.
    #[error(transparent)]
    Provider(#[from] OidcError),
    /// The upstream API is unreachable.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream API did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// This client started too many logins; it may retry after the given time.
    #[error("too many login starts from this client")]
    TooManyRequests(std::time::Duration),
    /// The session holds `server.max_websockets_per_session` WebSockets already.
    #[error("too many WebSockets for one session")]
    TooManyWebSockets,
    /// The request body is larger than this endpoint accepts.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The endpoint exists but not for this method; the value lists the allowed ones.
    #[error("method not allowed")]
    MethodNotAllowed(std::borrow::Cow<'static, str>),
    /// The session's user does not satisfy the claim rules of the route (its prefix). The
    /// answer names the route, never the user's claims.
    #[error("the claims of the session do not satisfy the rules of {route}")]
    InsufficientPermissions {
        /// The route's prefix.
        route: String,
    },
    /// The token a route's credential needs could not be had (the provider refused it, or could
    /// not be asked): that route fails, the session stays. Names the route, never the cause.
    #[error("no credential for {route}: {error}")]
    Credential {
        /// The route's prefix.
        route: String,
        /// The provider's failure.
        error: OidcError,
    },
    /// The session's authentication is too old or too weak for the route: the browser must
    /// log in again through `login_url` (which asks the provider for what the route needs).
    #[error("step-up authentication required")]
    StepUpRequired {
        /// `/api/auth/login?acr_values=…&max_age=…`.
        login_url: String,
    },
    /// A back-channel logout token failed validation (or was replayed).
    #[error("logout token refused: {0}")]
    LogoutTokenRejected(LogoutTokenError),
    /// The session named in the path is not one of the caller's.
    #[error("no such session")]
    NoSuchSession,
    /// The provider's redirect after RP-initiated logout does not carry the `state` this
    /// browser's logout cookie holds (another state, no state, or no cookie).
    #[error("post-logout redirect with an unexpected or missing state")]
    LogoutNotConfirmed,
}

impl From<LogoutCheckError> for AppError {
    fn from(error: LogoutCheckError) -> Self {
        match error {
            LogoutCheckError::Invalid(reason) => AppError::LogoutTokenRejected(reason),
            LogoutCheckError::Provider(error) => AppError::Provider(error),
        }
    }
}

impl From<crate::refresh::AccessError> for AppError {
    fn from(error: crate::refresh::AccessError) -> Self {
        use crate::refresh::AccessError;
        match error {
            AccessError::SessionEnded => AppError::Unauthenticated,
            AccessError::Store(error) => AppError::Store(error),
            AccessError::Provider(error) => AppError::Provider(error),
            AccessError::Credential(error) => AppError::Credential {
                route: String::new(),
                error,
            },
        }
    }
}

impl AppError {
    /// Why a login callback failed, as a word of a small vocabulary (audit reasons and metric
    /// labels): never the provider's own text.
    pub fn login_failure_reason(&self) -> &'static str {
        match self {
            AppError::Login(LoginFailure::ProviderError(code)) if code == "access_denied" => {
                "user_cancelled"
            }
            AppError::Login(LoginFailure::ProviderError(_)) => "provider_error",
            AppError::Login(LoginFailure::UnknownState) => "state_mismatch",
            AppError::Login(LoginFailure::OtherBrowser) => "other_browser",
            AppError::Login(LoginFailure::MissingParameters) => "missing_parameters",
            AppError::Login(LoginFailure::CodeRejected) => "code_rejected",
            AppError::Login(LoginFailure::IssuerMismatch) => "issuer_mismatch",
            AppError::Login(LoginFailure::NotAuthenticatedAsRequested(_)) => {
                "step_up_not_satisfied"
            }
            AppError::Login(LoginFailure::DpopUnsupported) => "dpop_unsupported",
            AppError::Provider(
                OidcError::Invalid(_)
                | OidcError::SubjectChanged
                | OidcError::RefreshedIdTokenInvalid(_),
            ) => "id_token_invalid",
            AppError::Provider(OidcError::UserInfo(error)) => error.reason(),
            AppError::Provider(OidcError::Unavailable(_) | OidcError::Deferred(_)) => {
                "provider_unavailable"
            }
            AppError::Provider(OidcError::PushRefused(_)) => "authorization_request_refused",
            AppError::Provider(_) => "provider_refused",
            AppError::Store(StoreError::Conflict(_)) => "session_ended_while_created",
            AppError::Store(_) => "store_unavailable",
            _ => "other",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::InsufficientPermissions { .. } => {
                StatusCode::FORBIDDEN
            }
            AppError::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
            AppError::Credential {
                error: OidcError::Rejected(_) | OidcError::Refused(_),
                ..
            } => StatusCode::FORBIDDEN,
            AppError::Credential { .. } => StatusCode::BAD_GATEWAY,
            AppError::BadRequest(_)
            | AppError::UnknownProvider
            | AppError::Login(_)
            | AppError::LogoutTokenRejected(_)
            | AppError::LogoutNotConfirmed => StatusCode::BAD_REQUEST,
            AppError::NotFound | AppError::NoSuchSession => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            AppError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Provider(OidcError::Unavailable(_) | OidcError::Deferred(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Provider(_) => StatusCode::BAD_GATEWAY,
            AppError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            AppError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            AppError::TooManyRequests(_) | AppError::TooManyWebSockets => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The stable machine-readable code in JSON bodies.
    fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated => "unauthenticated",
            AppError::Forbidden(_) => "forbidden",
            AppError::InsufficientPermissions { .. } => "insufficient_permissions",
            AppError::StepUpRequired { .. } => "step_up_required",
            AppError::Credential {
                error: OidcError::Rejected(_) | OidcError::Refused(_),
                ..
            } => "credential_refused",
            AppError::Credential { .. } => "credential_unavailable",
            AppError::BadRequest(_) => "bad_request",
            AppError::UnknownProvider => "unknown_provider",
            AppError::NotFound => "not_found",
            AppError::Login(_) => "login_failed",
            AppError::Store(StoreError::Conflict(_)) => "conflict",
            AppError::Store(_) => "session_store_unavailable",
            AppError::Provider(OidcError::Unavailable(_) | OidcError::Deferred(_)) => {
                "identity_provider_unavailable"
            }
            AppError::Provider(OidcError::PushRefused(_)) => "authorization_request_refused",
            AppError::Provider(_) => "identity_provider_error",
            AppError::UpstreamUnavailable(_) => "upstream_unavailable",
            AppError::UpstreamTimeout => "upstream_timeout",
            AppError::TooManyRequests(_) => "too_many_requests",
            AppError::TooManyWebSockets => "too_many_websockets",
            AppError::PayloadTooLarge => "payload_too_large",
            AppError::MethodNotAllowed(_) => "method_not_allowed",
            // The error code Back-Channel Logout 1.0 §2.8 names.
            AppError::LogoutTokenRejected(_) => "invalid_request",
            AppError::NoSuchSession => "no_such_session",
            AppError::LogoutNotConfirmed => "logout_not_confirmed",
        }
    }

    fn log(&self) {
        let status = self.status();
        if matches!(self, AppError::TooManyRequests(_)) {
            // A flood is refused by the thousand: one line each would be the flood's echo.
            tracing::debug!(status = status.as_u16(), cause = %self, "request refused");
        } else if matches!(self, AppError::Provider(OidcError::Deferred(_))) {
            // The discovery attempt that failed was logged as an error once; the requests
            // answered while it backs off (strangers' logout tokens among them) are not news.
            tracing::info!(status = status.as_u16(), cause = %self, "request refused");
        } else if status.is_server_error() {
            tracing::error!(status = status.as_u16(), cause = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), cause = %self, "request refused");
        }
    }

    fn with_retry_after(&self, mut response: Response) -> Response {
        if let AppError::MethodNotAllowed(allowed) = self
            && let Ok(allowed) = HeaderValue::try_from(allowed.as_ref())
        {
            response.headers_mut().insert(header::ALLOW, allowed);
        }
        if let AppError::TooManyRequests(wait) | AppError::Provider(OidcError::Deferred(wait)) =
            self
        {
            // Whole seconds, rounded up, so a client that waits this long is let in.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        } else if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// API calls get JSON.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let mut body = json!({ "error": self.code(), "message": self.public_message() });
        match &self {
            AppError::Unauthenticated => body["login_url"] = json!(LOGIN_URL),
            AppError::StepUpRequired { login_url } => body["login_url"] = json!(login_url),
            AppError::InsufficientPermissions { route } | AppError::Credential { route, .. } => {
                body["route"] = json!(route)
            }
            _ => {}
        }
        let response = (self.status(), Json(body)).into_response();
        self.with_retry_after(response)
    }
}

/// An [`AppError`] on a browser navigation: rendered as an HTML page from `templates/`.
#[derive(Debug)]
pub struct PageError(pub AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(error: E) -> Self {
        PageError(error.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
    code: Option<String>,
    retry_url: &'a str,
    retry_label: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let error = self.0;
        error.log();
        let (title, retry_label, retry_url) = match &error {
            AppError::Store(StoreError::Conflict(_)) => ("Login failed", "Log in again", LOGIN_URL),
            AppError::Store(_)
            | AppError::Provider(OidcError::Unavailable(_) | OidcError::Deferred(_)) => {
                ("Temporarily unavailable", "Try again", LOGIN_URL)
            }
            AppError::TooManyRequests(_) => ("Too many attempts", "Try again", LOGIN_URL),
            AppError::Login(_) | AppError::Provider(_) => {
                ("Login failed", "Try logging in again", LOGIN_URL)
            }
            AppError::Unauthenticated => ("Not logged in", "Log in", LOGIN_URL),
            AppError::UnknownProvider => {
                ("Unknown sign-in provider", "Choose a provider", LOGIN_URL)
            }
            AppError::LogoutNotConfirmed => ("Logout not confirmed", "Log in", LOGIN_URL),
            _ => ("Something went wrong", "Log in", LOGIN_URL),
        };
        let code = match &error {
            // The provider's error code is a fixed vocabulary word (validated by the handler).
            AppError::Login(LoginFailure::ProviderError(code)) => Some(code.clone()),
            AppError::Login(LoginFailure::NotAuthenticatedAsRequested(_)) => {
                Some("step_up_not_satisfied".to_owned())
            }
            AppError::Login(LoginFailure::DpopUnsupported) => Some("dpop_unsupported".to_owned()),
            _ => Some(error.code().to_owned()),
        };
        let page = ErrorPage {
            title,
            message: error.public_message(),
            code,
            retry_url,
            retry_label,
        };
        let html = page.render().unwrap_or_else(|_| {
            "<!doctype html><title>Error</title><p>Something went wrong.</p>".into()
        });
        let mut response = (error.status(), Html(html)).into_response();
        let headers = response.headers_mut();
        // The callback URL carries a code: never leak it through Referer; no scripts on this page.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        error.with_retry_after(response)
    }
}

/// The answer when a handler panics: a bug costs one request a JSON 500, never the
/// connection or the process.
pub fn panic_response() -> Response {
    let body = r#"{"error":"internal_error","message":"Internal error."}"#;
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
