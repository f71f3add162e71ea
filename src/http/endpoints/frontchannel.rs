//! `GET /api/auth/frontchannel-logout?[iss=…&]sid=…`: the provider tells us, through the
//! browser, that a provider session ended (OpenID Connect Front-Channel Logout 1.0).
//!
//! The provider's logout page loads this URL in an iframe, where the `SameSite` session cookie
//! is not sent: the sessions are found by the provider session id (`sid`) through the same
//! index back-channel logout uses, never by a cookie. Nothing authenticates the request (the
//! specification has no signature): `sid` must be given, and `iss`, when given (Entra ID sends
//! `sid` alone), must name our issuer. What limits the damage is in the security model: it
//! only ends sessions that exist and leaves no mark behind, so it can never keep a user out.
//!
//! `200` with a small page only the issuer's origin may frame (also for an unknown `sid`: the
//! outcome the provider asked for holds); `400` page with another issuer or without `sid`;
//! `503` page when Redis cannot be reached (the sessions are not ended, and the provider's
//! page should not say they were).

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::no_store;
use crate::audit::{AuditEvent, Details};
use crate::error::{AppError, PageError};
use crate::http::{AppState, QueryParams};
use crate::oidc::Provider;
use crate::session::scoped_identifier;

/// Longest `sid` looked up (providers use UUIDs or similar; anything longer is not one).
const MAX_SID_LEN: usize = 512;

#[derive(Template)]
#[template(path = "frontchannel_logout.html")]
struct SignedOutPage {
    ended: usize,
}

/// `GET /api/auth/frontchannel-logout` with `iss` and `sid` in the query.
pub async fn frontchannel_logout(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query = QueryParams::parse(query.as_deref());
    // `iss` may be left out (Entra ID sends `sid` alone): then the `sid` is looked up at every
    // provider (each files its own). One that is given must be one of ours, and names the
    // provider whose sessions are meant.
    let providers: Vec<&Arc<Provider>> = match query.get("iss") {
        None => state.providers.iter().collect(),
        Some(iss) => vec![state.providers.by_issuer(iss).ok_or(AppError::BadRequest(
            "the front-channel logout names another issuer",
        ))?],
    };
    let sid = query
        .get("sid")
        .filter(|sid| !sid.is_empty() && sid.len() <= MAX_SID_LEN)
        .ok_or(AppError::BadRequest("the front-channel logout has no sid"))?;
    let mut ended = 0;
    for provider in &providers {
        let key = state.providers.key_of(provider);
        let ended_here = state
            .sessions
            .end_indexed_provider_session(&scoped_identifier(key.as_deref(), sid), None)
            .await?;
        // As for back-channel logout: the provider session is over, so are our refresh tokens.
        ended += state.ending.revoke_ended(ended_here, key.as_deref());
    }
    crate::metrics::metrics().sessions_ended("frontchannel", ended);
    state.audit.record(
        AuditEvent::FrontchannelLogout,
        Details {
            reason: Some("provider_session_ended"),
            sessions_ended: Some(ended),
            ..Details::default()
        },
    );
    let html = SignedOutPage { ended }
        .render()
        .unwrap_or_else(|_| "<!doctype html><title>Signed out</title><p>Signed out.</p>".into());
    let mut response = (StatusCode::OK, Html(html)).into_response();
    // Only the provider(s) the request may come from may frame the page.
    let origins: Vec<String> = providers
        .iter()
        .filter_map(|provider| provider.logout_page_origin())
        .collect();
    let policy = format!(
        "default-src 'none'; frame-ancestors {}",
        if origins.is_empty() {
            "'none'".to_owned()
        } else {
            origins.join(" ")
        }
    );
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::try_from(policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(no_store(response))
}
