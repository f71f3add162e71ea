//! A Keycloak client as FAPI 2.0 wants one, set up through the admin REST API as an operator
//! would in the admin console (the realm file keeps its simple demo client). The attribute
//! names are Keycloak 26.4's own (`OIDCConfigAttributes`, `ParConfig`, `JWTClientAuthenticator`):
//! - Advanced → "OAuth 2.0 DPoP Bound Access Tokens Enabled": `dpop.bound.access.tokens`;
//! - Advanced → "Pushed authorization request required": `require.pushed.authorization.requests`;
//! - Credentials → Client Authenticator "Signed JWT" with Keys → "Use JWKS URL", as
//!   `client_assertion.rs` sets it up.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::Keycloak;

impl Keycloak {
    /// Registers a client of its own for one Vestibule at `public_url` (a copy of the realm
    /// file's client, with its mappers and default scopes) that requires DPoP-bound tokens and
    /// pushed authorization requests and authenticates with an ES256 client assertion whose
    /// key Keycloak fetches from `jwks_url`; returns its id. It has no secret.
    pub async fn register_sender_constrained_client(
        &self,
        public_url: &str,
        jwks_url: &str,
    ) -> String {
        let (client_id, mut client) = self.private_key_jwt_client(public_url, jwks_url, "fapi");
        let attributes = &mut client["attributes"];
        attributes["dpop.bound.access.tokens"] = json!("true");
        attributes["require.pushed.authorization.requests"] = json!("true");
        self.admin_send(reqwest::Method::POST, "clients", Some(&client))
            .await;
        client_id
    }

    /// What Keycloak's userinfo endpoint answers to `access_token` sent as a plain bearer token
    /// (no proof), as a thief holding a copied token would send it.
    pub async fn userinfo_with_bearer(&self, access_token: &str) -> (StatusCode, String, Value) {
        let response = super::admin::http()
            .get(format!(
                "{}/realms/{}/protocol/openid-connect/userinfo",
                self.back_url, self.realm
            ))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            status,
            challenge,
            response.json().await.unwrap_or(Value::Null),
        )
    }
}
