//! Keycloak 26.4's standard token exchange (RFC 8693), by direct HTTP and without Vestibule:
//! what issue 31's `kind = "exchange"` route relies on. A real user logs in on Keycloak's page
//! (authorization code with PKCE, for a client set up by `harness/keycloak/exchange.rs`), and
//! the client exchanges that login's access token at the token endpoint. Proven through
//! Keycloak's own answers: the tokens' claims, its events and its introspection.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Digest;

use crate::harness::keycloak::exchange::{
    API_CLIENT_ID, API_PATH, API_SCOPE, UNMAPPED_API_CLIENT_ID,
};
use crate::harness::keycloak::{ACCESS_TOKEN_LIFESPAN_SECS, Keycloak};
use crate::harness::{Browser, free_port};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A client allowed to exchange (as Vestibule's would be) and one login of `username` with it.
struct Login {
    client_id: String,
    client_secret: String,
    /// The token endpoint's answer to the authorization code.
    tokens: Value,
}

impl Login {
    fn access_token(&self) -> &str {
        self.tokens["access_token"].as_str().expect("access token")
    }

    /// The login's Keycloak SSO session.
    fn sid(&self) -> String {
        claims(self.access_token())["sid"]
            .as_str()
            .expect("Keycloak's access token names its session")
            .to_owned()
    }
}

/// Registers an exchange client for a (never started) Vestibule on a free port and logs
/// `username` in with it on Keycloak's page: the code flow a Vestibule would run, by hand.
async fn log_in(keycloak: &Keycloak, username: &str) -> Login {
    let public_url = format!("http://localhost:{}", free_port());
    let (client_id, client_secret) = keycloak.register_exchange_client(&public_url).await;
    let redirect_uri = format!("{public_url}/api/auth/callback");
    let verifier = "exchange-test-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut authorization = url::Url::parse(&format!(
        "{}/protocol/openid-connect/auth",
        keycloak.issuer()
    ))
    .unwrap();
    authorization
        .query_pairs_mut()
        .append_pair("client_id", &client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid profile email")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("state", "exchange-state")
        .append_pair("nonce", "exchange-nonce")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let browser = Browser::new(&public_url);
    let turn = keycloak.login_turn().await;
    let callback = browser
        .authorize_with_password(authorization, username, &keycloak.password_of(username))
        .await;
    drop(turn);
    let code = callback
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("Keycloak redirected back with a code: {callback}"));
    let (status, tokens) = token_request(
        keycloak,
        (&client_id, &client_secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "code to token: {tokens}");
    Login {
        client_id,
        client_secret,
        tokens,
    }
}

/// A request to Keycloak's token endpoint (back channel) as `client` (client_secret_basic).
async fn token_request(
    keycloak: &Keycloak,
    (client_id, client_secret): (&str, &str),
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/realms/{}/protocol/openid-connect/token",
            keycloak.back_url, keycloak.realm
        ))
        .basic_auth(client_id, Some(client_secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// RFC 8693: the login's access token exchanged by its client for `audience` (and `scope`).
async fn exchange(
    keycloak: &Keycloak,
    login: &Login,
    audience: &str,
    scope: Option<&str>,
) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", login.access_token()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("audience", audience),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    token_request(keycloak, (&login.client_id, &login.client_secret), &form).await
}

/// A GET at the demo API with `token` as the bearer token: (status, JSON answer).
async fn demo_api_get(keycloak: &Keycloak, path: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", keycloak.demo_api_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A JWT's claims (its payload, not verified: Keycloak's introspection is the check here).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("a JSON payload")
}

/// A JWT's `aud` as a list (a single audience is a string).
fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .map(|aud| aud.as_str().unwrap().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_exchanges_a_login_token_for_an_orders_api_token_once_per_event_and_refuses_other_audiences()
 {
    let keycloak = Keycloak::shared();
    let login = log_in(keycloak, "alice").await;
    let sid = login.sid();
    let session_token = claims(login.access_token());
    assert!(
        !audiences(&session_token).contains(&API_CLIENT_ID.to_owned()),
        "the login's own token is not for {API_CLIENT_ID}: {session_token}"
    );
    let before = keycloak.token_exchange_events(&sid).await.len();

    // The audience alone is not enough: the scope that maps it is optional.
    let (status, refused) = exchange(keycloak, &login, API_CLIENT_ID, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "invalid_request", "{refused}");
    assert_eq!(
        refused["error_description"],
        format!("Requested audience not available: {API_CLIENT_ID}"),
        "{refused}"
    );

    let (status, exchanged) = exchange(keycloak, &login, API_CLIENT_ID, Some(API_SCOPE)).await;
    assert_eq!(status, StatusCode::OK, "{}", without_tokens(&exchanged));
    assert_eq!(
        exchanged["issued_token_type"],
        ACCESS_TOKEN_TYPE,
        "{}",
        without_tokens(&exchanged)
    );
    assert!(
        exchanged["refresh_token"].is_null(),
        "no refresh token unless requested_token_type asks for one: {}",
        without_tokens(&exchanged)
    );
    let token = exchanged["access_token"].as_str().expect("an access token");
    let orders = claims(token);
    // The realm's access-token lifetime: exactly in the token, and in `expires_in` as Keycloak
    // counts it at the answer (a second boundary may have passed since `iat`).
    let lifetime = orders["exp"].as_u64().expect("exp") - orders["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, ACCESS_TOKEN_LIFESPAN_SECS, "exp - iat");
    let expires_in = exchanged["expires_in"].as_u64().expect("expires_in");
    assert!(
        (ACCESS_TOKEN_LIFESPAN_SECS - 2..=ACCESS_TOKEN_LIFESPAN_SECS).contains(&expires_in),
        "expires_in {expires_in}, for a lifetime of {ACCESS_TOKEN_LIFESPAN_SECS} s"
    );
    assert!(
        audiences(&orders).contains(&API_CLIENT_ID.to_owned()),
        "the exchanged token is for {API_CLIENT_ID}: {orders}"
    );
    assert_eq!(orders["sub"], session_token["sub"], "{orders}");
    assert_eq!(orders["azp"], login.client_id.as_str(), "{orders}");
    assert_eq!(
        orders["sid"],
        sid.as_str(),
        "the same SSO session: {orders}"
    );
    assert_eq!(
        exchanged["refresh_expires_in"],
        0,
        "{}",
        without_tokens(&exchanged)
    );
    assert_eq!(
        exchanged["scope"]
            .as_str()
            .map(|scope| scope.contains(API_SCOPE)),
        Some(true),
        "{}",
        without_tokens(&exchanged)
    );

    // The demo API checks tokens under /orders with Keycloak's JWKS: the exchanged one is for
    // it, the login's own is not.
    let (status, answer) = demo_api_get(keycloak, &format!("{API_PATH}/1"), token).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["token"]["aud"], API_CLIENT_ID, "{answer}");
    assert_eq!(answer["caller"]["preferred_username"], "alice", "{answer}");
    let (status, answer) =
        demo_api_get(keycloak, &format!("{API_PATH}/1"), login.access_token()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["error_description"]
            .as_str()
            .is_some_and(|reason| reason.ends_with(&format!("does not name {API_CLIENT_ID}"))),
        "the login's own token is refused for its audience: {answer}"
    );
    let userinfo = reqwest::Client::new()
        .get(format!(
            "{}/realms/{}/protocol/openid-connect/userinfo",
            keycloak.back_url, keycloak.realm
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    // Keycloak's UserInfo wants the openid scope, which the exchange did not ask for: the
    // demo API's other paths, which ask UserInfo, refuse such a token.
    assert_eq!(userinfo.status(), StatusCode::FORBIDDEN);
    let challenge = userinfo.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains("Missing openid scope"),
        "{challenge}"
    );

    let events = keycloak.token_exchange_events(&sid).await;
    assert_eq!(
        events.len(),
        before + 1,
        "one TOKEN_EXCHANGE event (the refused one is a TOKEN_EXCHANGE_ERROR): {events:?}"
    );
    let event = &events[events.len() - 1];
    assert_eq!(event["details"]["audience"], API_CLIENT_ID, "{event}");
    assert_eq!(event["clientId"], login.client_id.as_str(), "{event}");

    // An API client no scope of this client maps is refused, as is a client that does not exist.
    let (status, refused) =
        exchange(keycloak, &login, UNMAPPED_API_CLIENT_ID, Some(API_SCOPE)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "invalid_request", "{refused}");
    assert_eq!(
        refused["error_description"],
        format!("Requested audience not available: {UNMAPPED_API_CLIENT_ID}"),
        "{refused}"
    );
    let (status, refused) = exchange(keycloak, &login, "no-such-api", Some(API_SCOPE)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "invalid_client", "{refused}");
    assert_eq!(
        refused["error_description"], "Audience not found",
        "{refused}"
    );
    assert_eq!(
        keycloak.token_exchange_events(&sid).await.len(),
        before + 1,
        "refusals are no TOKEN_EXCHANGE events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_token_is_active_at_introspection_until_the_users_keycloak_session_ends() {
    let keycloak = Keycloak::shared();
    let login = log_in(keycloak, "bob").await;
    let (status, exchanged) = exchange(keycloak, &login, API_CLIENT_ID, Some(API_SCOPE)).await;
    assert_eq!(status, StatusCode::OK, "{}", without_tokens(&exchanged));
    let token = exchanged["access_token"].as_str().expect("an access token");

    let seen = keycloak.introspect_as_api(token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert!(
        audiences(&seen).contains(&API_CLIENT_ID.to_owned()),
        "introspection names the audience: {seen}"
    );

    // The user logs out (the client's back-channel logout with its refresh token).
    let refresh_token = login.tokens["refresh_token"]
        .as_str()
        .expect("a refresh token");
    let response = reqwest::Client::new()
        .post(format!(
            "{}/realms/{}/protocol/openid-connect/logout",
            keycloak.back_url, keycloak.realm
        ))
        .basic_auth(&login.client_id, Some(&login.client_secret))
        .form(&[("refresh_token", refresh_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "logout");
    assert!(
        !keycloak.session_ids("bob").await.contains(&login.sid()),
        "the SSO session is gone"
    );

    let seen = keycloak.introspect_as_api(token).await;
    assert_eq!(
        seen["active"], false,
        "the exchanged token ended with the session it came from: {seen}"
    );
    let (status, refused) = exchange(keycloak, &login, API_CLIENT_ID, Some(API_SCOPE)).await;
    // And the login's token can no longer be exchanged.
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "invalid_request", "{refused}");
    assert_eq!(refused["error_description"], "Invalid token", "{refused}");
}

/// A token response as a failure message may show it: without its tokens.
fn without_tokens(response: &Value) -> Value {
    let mut shown = response.clone();
    if let Some(fields) = shown.as_object_mut() {
        for name in ["access_token", "refresh_token", "id_token"] {
            if fields.contains_key(name) {
                fields.insert(name.to_owned(), Value::String("(not shown)".into()));
            }
        }
    }
    shown
}
