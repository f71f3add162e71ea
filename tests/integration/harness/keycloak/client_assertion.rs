//! A Keycloak client that authenticates with `private_key_jwt` (issue 33), set up through the
//! admin REST API as an operator would in the admin console: Credentials → Client
//! Authenticator "Signed JWT", signature algorithm ES256, Keys → "Use JWKS URL" with Vestibule's
//! client key set. The realm file stays as shipped.

use serde_json::Value;

use super::Keycloak;

impl Keycloak {
    /// Registers a client of its own for one Vestibule at `public_url` (a copy of the realm
    /// file's client) that authenticates with a client assertion verified against
    /// `jwks_url`, and has no secret; returns its id.
    pub async fn register_private_key_jwt_client(
        &self,
        public_url: &str,
        jwks_url: &str,
    ) -> String {
        let (client_id, client) = self.private_key_jwt_client(public_url, jwks_url, "pkjwt");
        self.admin_send(reqwest::Method::POST, "clients", Some(&client))
            .await;
        client_id
    }

    /// The representation (and id, ending in `suffix`) of the client
    /// [`Keycloak::register_private_key_jwt_client`] registers, for a caller that asks more of it.
    pub(super) fn private_key_jwt_client(
        &self,
        public_url: &str,
        jwks_url: &str,
        suffix: &str,
    ) -> (String, Value) {
        let (client_id, _, mut client) = self.client_copy_for(public_url, suffix);
        if let Some(fields) = client.as_object_mut() {
            fields.remove("secret");
        }
        client["clientAuthenticatorType"] = Value::String("client-jwt".into());
        let attributes = &mut client["attributes"];
        attributes["use.jwks.url"] = Value::String("true".into());
        attributes["jwks.url"] = Value::String(jwks_url.to_owned());
        attributes["token.endpoint.auth.signing.alg"] = Value::String("ES256".into());
        (client_id, client)
    }
}
