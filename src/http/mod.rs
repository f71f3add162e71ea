//! The HTTP surface: routes, shared state and the translation of requests into calls on the
//! session, OIDC and refresh layers. Handlers stay thin; decisions live in those layers.

pub mod cookies;
pub mod csrf;
pub mod device;
pub mod endpoints;
pub mod login_limit;
pub mod logout_state;
pub mod proxy;
pub mod server;
pub mod suspicious_use;
pub mod websocket_limit;

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use url::Url;

use crate::error::AppError;
use crate::oidc::Providers;
use crate::refresh::Refresher;
use crate::routes::RouteTable;
use crate::session::{ActiveSession, SessionCookie, Sessions};
use crate::workflows::ending::SessionEnding;
use crate::workflows::login::Logins;
use cookies::CookiePolicy;

/// Everything a handler needs, built once at start-up. Cloning it (axum does, per request)
/// is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Components>);

impl AppState {
    /// Shares the components between handlers.
    pub fn new(components: Components) -> Self {
        Self(Arc::new(components))
    }
}

impl std::ops::Deref for AppState {
    type Target = Components;

    fn deref(&self) -> &Components {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Components {
    /// The browser-facing origin (`public_url`).
    pub public_url: Url,
    /// `public_url`'s origin, serialised, for `Origin` checks.
    pub origin: String,
    /// Session storage.
    pub sessions: Arc<Sessions>,
    /// The OpenID Providers (`[oidc]`, or each of `[[providers]]`).
    pub providers: Arc<Providers>,
    /// Keeps access tokens fresh (the single-flight refresh).
    pub refresher: Arc<Refresher>,
    /// The API routes (`[[routes]]`).
    pub routes: Arc<RouteTable>,
    /// Cookie names and attributes.
    pub cookies: CookiePolicy,
    /// Sends requests to upstreams and the frontend's development server.
    pub forwarder: proxy::Forwarder,
    /// The limits on WebSocket relays.
    pub websockets: websocket_limit::WebSocketLimit,
    /// How the single-page app is served.
    pub frontend: endpoints::frontend::FrontendService,
    /// The rate limit on login starts per client address.
    pub login_limit: login_limit::LoginRateLimit,
    /// Logins: their start and their callback.
    pub logins: Logins,
    /// How sessions end, whoever ends them.
    pub ending: SessionEnding,
    /// Largest request body Vestibule's own endpoints accept.
    pub max_body_bytes: usize,
    /// Whether the process is shutting down (readiness).
    pub lifecycle: Arc<endpoints::health::Lifecycle>,
    /// What happens when a session is used suspiciously.
    pub suspicious_use: suspicious_use::SuspiciousUsePolicy,
    /// Where authentication events are recorded.
    pub audit: crate::audit::AuditTrail,
    /// Signs identity assertions and holds the key set upstreams verify them with.
    pub assertions: crate::assertion::Assertions,
}

impl Components {
    /// The valid session for this request from `client`, or `401` (`503` if the store is
    /// down); suspicious use is judged on the way (see [`Components::check_use`]).
    pub async fn require_session(
        &self,
        token: Option<SessionCookie>,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Result<ActiveSession, AppError> {
        let token = token.ok_or(AppError::Unauthenticated)?;
        let session = self
            .sessions
            .load(&token)
            .await?
            .ok_or(AppError::Unauthenticated)?;
        self.check_use(session, client, headers).await
    }

    /// The valid session for this request, if it has one: an unknown, expired or ended
    /// cookie (suspicious use included) is no session rather than a `401`; a store outage is
    /// still a `503`.
    pub async fn optional_session(
        &self,
        token: Option<SessionCookie>,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Option<ActiveSession>, AppError> {
        match self.require_session(token, client, headers).await {
            Ok(session) => Ok(Some(session)),
            Err(AppError::Unauthenticated) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Judges whether `session` is used suspiciously by this request (another network and
    /// another browser than it was created with): reports it, and with
    /// `session.suspicious_use = "end"` ends the session (`401`, refresh token revoked).
    pub async fn check_use(
        &self,
        session: ActiveSession,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Result<ActiveSession, AppError> {
        if self
            .providers
            .by_key(session.record.provider.as_deref())
            .is_none()
        {
            // Never served once its provider is gone (refresh and logout also check that the
            // provider still accepts the session's ID token: `Providers::of_session`).
            tracing::warn!("a session is refused: its provider is no longer configured");
            return Err(AppError::Unauthenticated);
        }
        let Some(finding) = suspicious_use::assess(&session.record, client, headers) else {
            return Ok(session);
        };
        self.suspicious_use.report(&session.record, &finding);
        if self.suspicious_use.action != suspicious_use::SuspiciousUseAction::End {
            return Ok(session);
        }
        if let Some(record) = self.sessions.end(&session.cookie).await? {
            crate::metrics::metrics().sessions_ended("suspicious_use", 1);
            self.ending.revoke_refresh_token_of(&record);
        }
        Err(AppError::Unauthenticated)
    }
}

/// Query parameters, parsed leniently: the first occurrence of a name wins and malformed
/// encodings are decoded lossily, so odd input leads to a clear page rather than a
/// framework rejection.
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Parses a raw query string (absent means empty).
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::QueryParams;

    #[test]
    fn query_params_take_the_first_value_and_survive_bad_encoding() {
        let query = QueryParams::parse(Some("returnTo=%2Fa&returnTo=%2Fb&x=%ZZ&flag"));
        assert_eq!(query.get("returnTo"), Some("/a"));
        assert_eq!(query.get("x"), Some("%ZZ"));
        assert_eq!(query.get("flag"), Some(""));
        assert_eq!(query.get("missing"), None);
        assert_eq!(QueryParams::parse(None).get("a"), None);
    }
}
