//! Keycloak's standard token exchange (RFC 8693, "Standard token exchange" V2, supported since
//! 26.2), set up through the admin REST API as an operator would in the admin console. The
//! realm file stays as shipped.
//!
//! What Keycloak 26.4 asks for, read from `StandardTokenExchangeProvider`:
//! - the requesting client is confidential and has the client attribute
//!   `standard.token.exchange.enabled` = `true` (admin console: Capability config → Standard
//!   Token Exchange);
//! - the subject token is an access token of the same realm; if it was issued to another client
//!   (`azp`), the requesting client must be in its `aud` (Vestibule exchanges its own tokens,
//!   so that check never applies to it);
//! - every requested `audience` is a client of the realm (otherwise `invalid_client`,
//!   "Audience not found") and is in the `aud` of the token Keycloak would issue to the
//!   requesting client with the requested `scope` (otherwise `invalid_request`, "Requested
//!   audience not available: …"). Here an optional client scope [`API_SCOPE`] with an audience
//!   mapper puts [`API_CLIENT_ID`] there: only an exchange that asks for that scope gets it, so
//!   the login's own token never carries the API's audience.

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::Keycloak;

/// The API client the exchanged tokens are for (confidential, no browser flows): it checks
/// them and introspects them with its own secret.
pub const API_CLIENT_ID: &str = "orders-api";

/// The demo API's paths that take only tokens whose `aud` names [`API_CLIENT_ID`], checked
/// with Keycloak's JWKS (its `AUDIENCE_PATHS`): a route to `<demo API>/orders` with
/// `kind = "exchange"` passes, one with the login's own token gets `401`.
pub const API_PATH: &str = "/orders";

/// [`API_CLIENT_ID`]'s secret.
pub const API_CLIENT_SECRET: &str = "secret-of-orders-api";

/// The optional client scope whose audience mapper adds [`API_CLIENT_ID`] to `aud`: an
/// exchange asks for it with `scope`.
pub const API_SCOPE: &str = "orders:read";

/// An API client of the realm that no scope of the requesting client maps into `aud`: an
/// exchange for it is refused.
pub const UNMAPPED_API_CLIENT_ID: &str = "billing-api";

/// The attribute that switches standard token exchange on for a client.
const STANDARD_TOKEN_EXCHANGE: &str = "standard.token.exchange.enabled";

/// The API clients and the scope exist once per realm, whichever test asks first.
static API_CLIENTS: OnceCell<()> = OnceCell::const_new();

impl Keycloak {
    /// Lets `client_id` (a client Vestibule logs in with) exchange its users' access tokens for
    /// [`API_CLIENT_ID`] tokens: creates the API clients and [`API_SCOPE`] (once per realm),
    /// switches standard token exchange on for the client and gives it [`API_SCOPE`] as an
    /// optional client scope.
    pub async fn enable_token_exchange(&self, client_id: &str) {
        API_CLIENTS.get_or_init(|| self.create_api_clients()).await;
        self.update_named_client(client_id, |client| {
            client["attributes"][STANDARD_TOKEN_EXCHANGE] = Value::String("true".into());
        })
        .await;
        let id = self.client_uuid(client_id).await;
        let scope = self.client_scope_id(API_SCOPE).await;
        self.admin_send(
            reqwest::Method::PUT,
            &format!("clients/{id}/optional-client-scopes/{scope}"),
            None,
        )
        .await;
    }

    /// Registers a client of its own for one Vestibule at `public_url` (a copy of the realm
    /// file's client, with its mappers and default scopes) that may exchange tokens as
    /// [`Keycloak::enable_token_exchange`] describes; returns its id and secret.
    pub async fn register_exchange_client(&self, public_url: &str) -> (String, String) {
        let (client_id, secret, client) = self.client_copy_for(public_url, "exchange");
        self.admin_send(reqwest::Method::POST, "clients", Some(&client))
            .await;
        self.enable_token_exchange(&client_id).await;
        (client_id, secret)
    }

    /// The realm's successful token exchanges for one SSO session (`sid`), oldest first.
    pub async fn token_exchange_events(&self, session_id: &str) -> Vec<Value> {
        self.events(session_id, "TOKEN_EXCHANGE").await
    }

    /// Keycloak's introspection of `token` (RFC 7662), asked as [`API_CLIENT_ID`] would.
    pub async fn introspect_as_api(&self, token: &str) -> Value {
        let response = super::admin::http()
            .post(format!(
                "{}/realms/{}/protocol/openid-connect/token/introspect",
                self.back_url, self.realm
            ))
            .basic_auth(API_CLIENT_ID, Some(API_CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "introspection: {status} {body}");
        body
    }

    /// The API clients (confidential, no browser flow, no service account) and the optional
    /// client scope [`API_SCOPE`] with an audience mapper for [`API_CLIENT_ID`].
    async fn create_api_clients(&self) {
        for (client_id, secret) in [
            (API_CLIENT_ID, API_CLIENT_SECRET),
            (UNMAPPED_API_CLIENT_ID, "secret-of-billing-api"),
        ] {
            self.admin_send(
                reqwest::Method::POST,
                "clients",
                Some(&json!({
                    "clientId": client_id,
                    "name": format!("{client_id} (Vestibule's tests)"),
                    "protocol": "openid-connect",
                    "publicClient": false,
                    "clientAuthenticatorType": "client-secret",
                    "secret": secret,
                    "standardFlowEnabled": false,
                    "implicitFlowEnabled": false,
                    "directAccessGrantsEnabled": false,
                    "serviceAccountsEnabled": false,
                })),
            )
            .await;
        }
        self.admin_send(
            reqwest::Method::POST,
            "client-scopes",
            Some(&json!({
                "name": API_SCOPE,
                "description": format!("Tokens for {API_CLIENT_ID}"),
                "protocol": "openid-connect",
                "attributes": {
                    "include.in.token.scope": "true",
                    "display.on.consent.screen": "false",
                },
                "protocolMappers": [{
                    "name": format!("{API_CLIENT_ID} audience"),
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {
                        "included.client.audience": API_CLIENT_ID,
                        "access.token.claim": "true",
                        "id.token.claim": "false",
                        "introspection.token.claim": "true",
                    },
                }],
            })),
        )
        .await;
    }

    /// The id (UUID) of the client scope `name`.
    async fn client_scope_id(&self, name: &str) -> String {
        let scopes = self.admin_get("client-scopes").await;
        scopes
            .as_array()
            .expect("client scopes")
            .iter()
            .find(|scope| scope["name"] == name)
            .and_then(|scope| scope["id"].as_str())
            .unwrap_or_else(|| panic!("no client scope {name}: {scopes}"))
            .to_owned()
    }
}
