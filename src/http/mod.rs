//! The HTTP surface: routes, shared state and the translation of requests into calls on the
//! session, OIDC and token layers. Handlers stay thin; decisions live in those layers.

pub mod auth;
pub mod cookies;
pub mod csrf;
pub mod proxy;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use axum_extra::extract::cookie::CookieJar;
use url::Url;

use crate::error::AppError;
use crate::oidc::Provider;
use crate::routes::RouteTable;
use crate::session::{ActiveSession, Sessions};
use crate::tokens::TokenKeeper;
use cookies::CookiePolicy;

/// Everything a handler needs, built once at start-up.
#[derive(Clone)]
pub struct AppState {
    /// The browser-facing origin (`public_url`).
    pub public_url: Arc<Url>,
    /// `public_url`'s origin, serialised, for `Origin` checks.
    pub origin: Arc<str>,
    /// Session storage.
    pub sessions: Arc<Sessions>,
    /// The OpenID Provider client.
    pub provider: Arc<Provider>,
    /// Access-token refresh policy.
    pub tokens: Arc<TokenKeeper>,
    /// The API routes.
    pub routes: Arc<RouteTable>,
    /// Cookie names and attributes.
    pub cookies: CookiePolicy,
    /// The upstream HTTP client.
    pub upstream: proxy::UpstreamClient,
}

impl AppState {
    /// The valid session for this request, or `401` (`503` if the store is down).
    pub async fn require_session(&self, jar: &CookieJar) -> Result<ActiveSession, AppError> {
        let token = self
            .cookies
            .session_token(jar)
            .ok_or(AppError::Unauthenticated)?;
        self.sessions
            .load(&token)
            .await?
            .ok_or(AppError::Unauthenticated)
    }
}

/// All routes: `/api/auth/*` and, as the fallback, the reverse proxy.
pub fn router(state: AppState) -> Router {
    let auth = Router::new()
        .route("/login", get(auth::begin_login))
        .route("/callback", get(auth::finish_login))
        .route("/user", get(auth::current_user))
        .route("/logout", get(auth::logout_link).post(auth::logout))
        .fallback(auth::not_found);
    Router::new()
        .nest("/api/auth", auth)
        .fallback(proxy::forward)
        .with_state(state)
}
