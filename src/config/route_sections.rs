//! The schema of `[[routes]]` (part of [`super::file`]): a route, its claim rules, its step-up
//! and its credential, exactly as an operator writes them.

use serde::Deserialize;
use url::Url;

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Path prefix handled by this route.
    pub prefix: String,
    /// Upstream base URL.
    pub upstream: Url,
    /// Seconds to wait for the upstream's response headers.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
    /// Who may call: `user` (default), `optional`, `anonymous`.
    #[serde(default)]
    pub access: Option<String>,
    /// The methods the route serves (default: every method).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Claim rules, all of which must hold (`[[routes.require]]`).
    #[serde(default)]
    pub require: Vec<ClaimRuleSection>,
    /// A fresh or stronger authentication the route demands (`[routes.step_up]`).
    #[serde(default)]
    pub step_up: Option<StepUpSection>,
    /// Whether `GET` upgrades to WebSocket pass (after the route's policy).
    #[serde(default)]
    pub websocket: bool,
    /// What the upstream receives (`[routes.credential]`).
    #[serde(default)]
    pub credential: Option<CredentialSection>,
}

/// A route's `[routes.credential]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    /// `session`, `exchange`, `refresh`, `client`, `assertion` or `none`.
    pub kind: String,
    /// The API's audience (token requests), or the assertion's `aud`.
    #[serde(default)]
    pub audience: Option<String>,
    /// The scope asked for (token requests), space-separated.
    #[serde(default)]
    pub scope: Option<String>,
    /// The RFC 8707 resource asked for (token requests).
    #[serde(default)]
    pub resource: Option<String>,
    /// The header an assertion is sent in (default `X-Vestibule-Assertion`).
    #[serde(default)]
    pub header: Option<String>,
    /// The user's claims an assertion carries (dotted paths).
    #[serde(default)]
    pub claims: Vec<String>,
    /// Whether an assertion route also gets the session's access token as a bearer token.
    #[serde(default)]
    pub also_bearer: bool,
    /// `false`: the token for this API is asked for without a DPoP proof (an upstream that
    /// only knows `Bearer`); `exchange`, `refresh` and `client` only.
    #[serde(default)]
    pub dpop: Option<bool>,
}

/// One `[[routes.require]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleSection {
    /// A dotted path into the user's claims.
    pub claim: String,
    /// At least one of these values must be there.
    #[serde(default)]
    pub any_of: Option<Vec<String>>,
    /// Every one of these values must be there.
    #[serde(default)]
    pub all_of: Option<Vec<String>>,
}

/// A route's `[routes.step_up]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpSection {
    /// The ID token's `acr` must be one of these.
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// The authentication (`auth_time`) must be at most this old.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
}

fn default_upstream_timeout() -> u64 {
    30
}
