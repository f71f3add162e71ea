//! Keycloak's admin REST API, as the bootstrap administrator of compose: what the tests change
//! (token lifetime, events, each deployment's redirect URIs) and what they read as proof
//! (users, SSO sessions, events).

use std::time::Duration;

use serde_json::{Value, json};

use super::{ACCESS_TOKEN_LIFESPAN_SECS, Keycloak, RECORDED_EVENTS};

impl Keycloak {
    /// Test-only realm settings (the realm file stays as shipped): a short access token, and
    /// events recorded so the tests can count grants.
    pub(super) async fn configure_for_tests(&self) {
        self.admin_send(
            reqwest::Method::PUT,
            "",
            Some(&json!({ "accessTokenLifespan": ACCESS_TOKEN_LIFESPAN_SECS })),
        )
        .await;
        // The realm's client posts back-channel logout tokens to compose's `vestibule` service,
        // which does not exist here: the deployments of these tests share that client, so it
        // posts none (the back-channel test registers a client of its own).
        self.update_client(|client| {
            client["attributes"]["backchannel.logout.url"] = Value::String(String::new());
        })
        .await;
        self.admin_send(
            reqwest::Method::PUT,
            "events/config",
            Some(&json!({
                "eventsEnabled": true,
                "eventsExpiration": 3600,
                "enabledEventTypes": RECORDED_EVENTS,
            })),
        )
        .await;
    }

    /// Changes the realm's Vestibule client with `change` (one change at a time).
    async fn update_client(&self, change: impl FnOnce(&mut Value)) {
        self.update_named_client(&self.client_id, change).await;
    }

    /// Changes the realm's client `client_id` with `change` (one change at a time).
    pub(super) async fn update_named_client(
        &self,
        client_id: &str,
        change: impl FnOnce(&mut Value),
    ) {
        let _one_at_a_time = self.client_updates.lock().await;
        let path = format!("clients?clientId={client_id}");
        let clients = self.admin_get(&path).await;
        let mut client = clients[0].clone();
        let id = client["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no client {client_id}: {clients}"))
            .to_owned();
        change(&mut client);
        self.admin_send(
            reqwest::Method::PUT,
            &format!("clients/{id}"),
            Some(&client),
        )
        .await;
    }

    /// The id (UUID) of the realm's client `client_id`.
    pub(super) async fn client_uuid(&self, client_id: &str) -> String {
        let clients = self
            .admin_get(&format!("clients?clientId={client_id}"))
            .await;
        clients[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no client {client_id}: {clients}"))
            .to_owned()
    }

    /// Registers a client of its own for one Vestibule at `public_url`, a copy of the realm
    /// file's client whose back-channel logout URL is `backchannel_logout_url`; returns its
    /// id and secret. (A client has one such URL, so deployments that share one cannot each
    /// be told.)
    pub async fn register_client_with_backchannel_logout(
        &self,
        public_url: &str,
        backchannel_logout_url: &str,
    ) -> (String, String) {
        let (client_id, secret, mut client) = self.client_copy_for(public_url, "backchannel");
        client["attributes"]["backchannel.logout.url"] =
            Value::String(backchannel_logout_url.to_owned());
        self.admin_send(reqwest::Method::POST, "clients", Some(&client))
            .await;
        (client_id, secret)
    }

    /// A copy of the realm file's client (its mappers and default scopes kept) for one
    /// Vestibule at `public_url`, named after `purpose`, with that Vestibule's redirect URIs and
    /// no back-channel logout URL: its id, secret and representation, not registered yet.
    pub(super) fn client_copy_for(
        &self,
        public_url: &str,
        purpose: &str,
    ) -> (String, String, Value) {
        let mut client = self.realm_json["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .find(|client| client["clientId"] == self.client_id.as_str())
            .expect("the realm file's client")
            .clone();
        let suffix = public_url.rsplit(':').next().unwrap_or("x");
        let client_id = format!("{}-{purpose}-{suffix}", self.client_id);
        let secret = format!("secret-of-{client_id}");
        if let Some(fields) = client.as_object_mut() {
            fields.remove("id");
        }
        client["clientId"] = Value::String(client_id.clone());
        client["secret"] = Value::String(secret.clone());
        client["rootUrl"] = Value::String(public_url.to_owned());
        client["redirectUris"] = json!([format!("{public_url}/api/auth/callback")]);
        client["webOrigins"] = json!([public_url]);
        client["attributes"]["post.logout.redirect.uris"] =
            Value::String(format!("{public_url}/api/auth/logout-callback"));
        client["attributes"]["backchannel.logout.url"] = Value::String(String::new());
        (client_id, secret, client)
    }

    /// Adds a Vestibule at `public_url` to the realm's client (redirect URI, post-logout
    /// redirect URI, web origin), as an operator would register another deployment.
    pub async fn register_vestibule(&self, public_url: &str) {
        self.update_client(|client| Self::add_deployment(client, public_url))
            .await;
    }

    fn add_deployment(client: &mut Value, public_url: &str) {
        let push = |list: &mut Value, item: String| {
            let items = list.as_array_mut().expect("an array");
            if !items.iter().any(|existing| existing == &item) {
                items.push(Value::String(item));
            }
        };
        push(
            &mut client["redirectUris"],
            format!("{public_url}/api/auth/callback"),
        );
        push(&mut client["webOrigins"], public_url.to_owned());
        let attributes = &mut client["attributes"];
        let logout = attributes["post.logout.redirect.uris"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        attributes["post.logout.redirect.uris"] =
            Value::String(format!("{logout}##{public_url}/api/auth/logout-callback"));
    }

    /// The realm's user id of `username`.
    pub async fn user_id(&self, username: &str) -> String {
        let users = self
            .admin_get(&format!("users?username={username}&exact=true"))
            .await;
        users[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no user {username} in the realm: {users}"))
            .to_owned()
    }

    /// The ids of the user's live SSO sessions.
    pub async fn session_ids(&self, username: &str) -> Vec<String> {
        let id = self.user_id(username).await;
        let sessions = self.admin_get(&format!("users/{id}/sessions")).await;
        sessions
            .as_array()
            .expect("sessions")
            .iter()
            .map(|session| session["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Ends one SSO session as an administrator would (admin console: Sessions → Sign out).
    pub async fn end_session(&self, session_id: &str) {
        self.admin_send(
            reqwest::Method::DELETE,
            &format!("sessions/{session_id}"),
            None,
        )
        .await;
    }

    /// The realm's events of `kind` for one SSO session, oldest first.
    pub async fn events(&self, session_id: &str, kind: &str) -> Vec<Value> {
        let events = self
            .admin_get(&format!("events?type={kind}&max=10000"))
            .await;
        let mut events: Vec<Value> = events
            .as_array()
            .expect("events")
            .iter()
            .filter(|event| event["sessionId"] == session_id)
            .cloned()
            .collect();
        events.reverse();
        events
    }

    /// The bootstrap administrator's user name and password (compose's), for a browser test
    /// that acts as the administrator itself.
    pub fn admin_credentials(&self) -> (&str, &str) {
        (&self.admin_username, &self.admin_password)
    }

    async fn admin_token(&self) -> String {
        admin_token(&self.back_url, &self.admin_username, &self.admin_password).await
    }

    /// GET `/admin/realms/<realm>/<path>` as the bootstrap administrator.
    pub async fn admin_get(&self, path: &str) -> Value {
        let response = self.admin_send(reqwest::Method::GET, path, None).await;
        response.json().await.unwrap()
    }

    /// Sends `method` to `/admin/realms/<realm>/<path>` (with a JSON body) as the bootstrap
    /// administrator; panics unless Keycloak answers with success.
    pub(super) async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let url = format!("{}/admin/realms/{}/{path}", self.back_url, self.realm);
        let mut request = http()
            .request(method.clone(), &url)
            .bearer_auth(self.admin_token().await);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            panic!("admin {method} {url}: {status} {text}");
        }
        response
    }
}

pub(super) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn admin_token(base: &str, username: &str, password: &str) -> String {
    let response = http()
        .post(format!(
            "{base}/realms/master/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("admin token: {status} {body}"))
        .to_owned()
}
