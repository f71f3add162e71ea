//! Vestibule: an OAuth2 / OpenID Connect backend-for-frontend.
//!
//! The browser holds only an opaque, HttpOnly session cookie. Tokens live server-side,
//! sealed with AES-256-GCM, and are attached to proxied API calls as bearer tokens.
//!
//! Layers: [`config`] → [`app`] wires [`http`] (thin handlers) onto [`session`] (storage and
//! crypto), [`oidc`] (protocol) and [`refresh`] (keeping access tokens fresh); [`error`] maps failures to
//! responses in one place.

#![forbid(unsafe_code)]

pub mod app;
pub mod assertion;
pub mod audit;
pub mod authz;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod operator;
pub mod random;
pub mod redact;
pub mod refresh;
pub mod return_to;
pub mod routes;
pub mod session;
pub mod traces;
pub mod workflows;
