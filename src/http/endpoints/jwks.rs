//! `GET /.well-known/jwks.json`: the public keys of Vestibule's identity assertions (RFC 7517
//! key set), for upstreams to verify them with; `GET /.well-known/client-jwks.json`: the public
//! keys of its `private_key_jwt` client authentication, for providers (one purpose per key
//! set). Served whatever the frontend and the routes (the dispatcher never proxies these
//! paths); never a private key, never anything per user.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::http::AppState;

pub use crate::assertion::JWKS_PATH;
pub use crate::oidc::CLIENT_JWKS_PATH;

/// Verifiers may keep the key set five minutes: a new `kid` makes ordinary JWT libraries
/// fetch again at once, and a retired key stays published far longer than that.
pub const CACHE_CONTROL: &str = "public, max-age=300";

/// The key set: every key that signs or has signed an assertion still in use (`{"keys":[]}`
/// when no route sends assertions and none are configured).
pub async fn key_set(State(state): State<AppState>) -> Response {
    key_set_response(state.assertions.key_set().to_owned())
}

/// The client key set: every key of every provider's `oidc.client_keys` ring (the signing one
/// and those published ahead of, or after, their turn), so a provider that caches it knows
/// the next key before it signs.
pub async fn client_key_set(State(state): State<AppState>) -> Response {
    key_set_response(state.providers.client_key_set().to_owned())
}

/// A key set answer, cacheable for [`CACHE_CONTROL`].
fn key_set_response(key_set: String) -> Response {
    let mut response = key_set.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}

/// The key set answers `GET` and `HEAD` only.
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed("GET, HEAD".into())
}
