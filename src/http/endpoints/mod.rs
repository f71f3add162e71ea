//! Vestibule's own endpoints: `/api/auth/*` (login, callback, user, logout, the provider's
//! logout channels, the user's sessions, the client script), the probes, the assertion key set
//! (`/.well-known/jwks.json`), the metrics scrape and the single-page app. Each handler translates HTTP into a call on a workflow or a
//! layer below and back; none decides anything itself.

pub mod api;
pub mod auth;
pub mod backchannel;
pub mod frontchannel;
pub mod frontend;
pub mod health;
pub mod jwks;
pub mod login_chooser;
pub mod logout;
pub mod scrape;
pub mod sessions;

use axum::Router;
use axum::routing::{delete, get, post};

use super::AppState;

/// `response` with `Cache-Control: no-store`: nothing Vestibule answers about sessions may be
/// kept by a cache.
pub fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// Vestibule's own endpoints under `/api/auth`, the probes (`/healthz`, `/readyz`), the
/// assertion key set (`/.well-known/jwks.json`) and, as the
/// fallback, the single-page app. (Proxied API calls never reach the router: see [`super::server::dispatch`].)
pub fn router(state: AppState) -> Router {
    let auth = Router::new()
        .route("/login", get(auth::begin_login))
        .route("/callback", get(auth::finish_login))
        .route("/user", get(auth::current_user))
        .route("/logout", get(auth::logout_link).post(auth::logout))
        .route("/logout-callback", get(logout::logout_callback))
        .route(
            "/frontchannel-logout",
            get(frontchannel::frontchannel_logout),
        )
        .route(
            "/backchannel-logout",
            post(backchannel::backchannel_logout).fallback(backchannel::method_not_allowed),
        )
        .route(
            "/sessions",
            get(sessions::list_sessions)
                .delete(sessions::end_other_sessions)
                .fallback(sessions::sessions_method_not_allowed),
        )
        .route(
            "/sessions/{id}",
            delete(sessions::end_session).fallback(sessions::session_method_not_allowed),
        )
        .route("/client.js", get(frontend::client_js))
        .route("/client.d.ts", get(frontend::client_types))
        .fallback(auth::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::refuse_large_bodies,
        ));
    Router::new()
        .route(
            health::LIVENESS_PATH,
            get(health::alive).fallback(health::method_not_allowed),
        )
        .route(
            health::READINESS_PATH,
            get(health::ready).fallback(health::method_not_allowed),
        )
        .route(
            jwks::JWKS_PATH,
            get(jwks::key_set).fallback(jwks::method_not_allowed),
        )
        .route(
            jwks::CLIENT_JWKS_PATH,
            get(jwks::client_key_set).fallback(jwks::method_not_allowed),
        )
        .nest("/api/auth", auth)
        .fallback(frontend::serve)
        .with_state(state)
}
