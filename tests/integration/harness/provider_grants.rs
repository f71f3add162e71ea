//! The test provider's side of issue 31's credential kinds: resource servers (RFC 8707), client
//! credentials and the token exchange (RFC 8693), their counters, switches and records, and a
//! reader of a JWT access token's claims. What the provider does is in tests/op/README.md
//! ("Resources, client credentials and token exchange"); this module only asks it.

use base64::Engine as _;
use serde_json::Value;

use super::provider::{TestProvider, client_id, client_secret};

/// RFC 8693's grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 8693's token type of an access token (the only `subject_token_type` accepted).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A resource server of the test provider (scopes `orders:read orders:write`). Every
/// `https://<name>.example/…` is one, with scopes `<name>:read <name>:write`.
pub const ORDERS: &str = "https://orders.example/";

/// Another resource server (scopes `billing:read billing:write`).
pub const BILLING: &str = "https://billing.example/";

/// The resource server the provider refuses (`invalid_target`), at every grant.
pub const REFUSED_RESOURCE: &str = "https://refused.example/";

/// The exchange audience the provider refuses (`invalid_target`).
pub const REFUSED_AUDIENCE: &str = "refused-api";

/// The claims of a JWT (its payload, not verified): for assertions on `aud`, `sub`, `scope`,
/// `exp` of the access tokens the provider issues for a resource, by client credentials or
/// by the token exchange. Panics on anything that is not a JWT.
pub fn jwt_payload(token: &str) -> Value {
    jwt_part(token, 1)
}

/// The header of a JWT (`alg`, `kid`, `typ`), not verified.
pub fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

fn jwt_part(token: &str, index: usize) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {} parts", parts.len());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[index])
        .unwrap_or_else(|err| panic!("JWT part {index} is not base64url: {err}"));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| panic!("JWT part {index} is not JSON: {err}"))
}

fn count(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("the provider's stats have no {name}: {stats}"))
}

/// Counters and records.
impl TestProvider {
    /// How many token exchanges (RFC 8693) the provider served.
    pub async fn exchange_grants(&self) -> u64 {
        count(&self.stats().await, "token_exchange")
    }

    /// How many token exchanges failed (refused, or answered by [`Self::fail_next_grants`]).
    pub async fn exchange_errors(&self) -> u64 {
        count(&self.stats().await, "token_exchange_errors")
    }

    /// How many token exchanges the provider served for `target`: the `audience` and the
    /// `resource` asked for, joined by a space when both were (the client id when neither).
    pub async fn exchange_grants_for(&self, target: &str) -> u64 {
        self.stats().await["token_exchange_by_target"][target]
            .as_u64()
            .unwrap_or(0)
    }

    /// How many client-credentials grants the provider served.
    pub async fn client_credentials_grants(&self) -> u64 {
        count(&self.stats().await, "client_credentials")
    }

    /// How many client-credentials grants the provider served for `resource` (`""`: none).
    pub async fn client_credentials_grants_for(&self, resource: &str) -> u64 {
        self.stats().await["client_credentials_by_target"][resource]
            .as_u64()
            .unwrap_or(0)
    }

    /// How many refresh grants naming a `resource` (or an `audience` standing for one) the
    /// provider served; [`Self::refresh_grants`] counts them too.
    pub async fn refresh_grants_with_resource(&self) -> u64 {
        count(&self.stats().await, "refresh_token_with_resource")
    }

    /// How many refresh grants the provider served for `resource` (`""`: naming none).
    pub async fn refresh_grants_for(&self, resource: &str) -> u64 {
        self.stats().await["refresh_token_by_resource"][resource]
            .as_u64()
            .unwrap_or(0)
    }

    /// Every token request so far, oldest first (the last 1000), without its secrets: each
    /// `{client_id, grant_type, scope, requested_token_type, subject_token_type, resource: [],
    /// audience: [], has_subject_token}` as sent (before an `audience` stood for a resource).
    pub async fn token_requests(&self) -> Vec<Value> {
        self.stats().await["token_requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every authorization request so far, oldest first (the last 1000): each `{resource: [],
    /// audience: [], scope, prompt, params: {name: value}}` as sent.
    pub async fn authorization_requests(&self) -> Vec<Value> {
        self.stats().await["authorization_requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every request to the providers' own logout endpoints (`legacy_logout`), oldest first:
    /// each `{path, query: {name: value}}`.
    pub async fn legacy_logouts(&self) -> Vec<Value> {
        self.stats().await["legacy_logouts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Switches.
impl TestProvider {
    /// Answers the next `count` grants of `grant_type` (e.g. [`TOKEN_EXCHANGE`],
    /// `client_credentials`, `refresh_token`) with `status` and `{"error", "error_description"}`
    /// instead of oidc-provider's answer; `count` 0 clears the switch.
    pub async fn fail_next_grants(
        &self,
        grant_type: &str,
        count: u32,
        status: u16,
        error: &str,
        description: &str,
    ) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/grant-error", self.issuer))
            .json(&serde_json::json!({
                "grant_type": grant_type, "count": count, "status": status,
                "error": error, "error_description": description,
            }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }

    /// Answers the next `count` token exchanges with `status` and `error`.
    pub async fn fail_next_exchanges(&self, count: u32, status: u16, error: &str) {
        self.fail_next_grants(
            TOKEN_EXCHANGE,
            count,
            status,
            error,
            "test-op: refused by switch",
        )
        .await;
    }

    /// Holds every later grant of `grant_type` for `delay` before answering (a slow provider).
    pub async fn delay_grants(&self, grant_type: &str, delay: std::time::Duration) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/grant-delay", self.issuer))
            .query(&[
                ("grant_type", grant_type),
                ("ms", &delay.as_millis().to_string()),
            ])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

/// The token endpoint called directly as the vestibule client (for tests of the provider
/// itself; Vestibule makes these calls in the others).
impl TestProvider {
    /// A token request with `params` (repeat a name for a repeated parameter), authenticated as
    /// the vestibule client with HTTP Basic: the status and the JSON answer.
    pub async fn token_request(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id(), Some(client_secret()))
            .form(params)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}
