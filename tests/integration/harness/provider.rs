//! The real OpenID Provider (`oidc-provider`, pinned in tests/op) run by Node. Its client and
//! defaults come from the stack description (`dev/stack.json`, read by server.js itself); this
//! starter passes only a test's overrides as `OP_*` variables.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::stack::STACK;

/// Options that differ between test providers.
#[derive(Clone)]
pub struct ProviderOptions {
    /// Access-token lifetime in seconds.
    pub access_token_ttl: u64,
    /// `client_secret_basic` or `client_secret_post`.
    pub auth_method: &'static str,
    /// ID-token signing algorithm.
    pub id_token_alg: &'static str,
    /// Port to listen on (0 = free).
    pub port: u16,
    /// Keys file so a restarted provider keeps its keys.
    pub keys_file: Option<PathBuf>,
    /// Host name in the issuer URL (default `127.0.0.1`); `localhost` puts the provider on
    /// another site than a Vestibule at `127.0.0.1`, as in production.
    pub issuer_host: &'static str,
    /// More algorithms the provider lists as supported (comma-separated; empty: none), with a
    /// key in its JWKS for each asymmetric one; the vestibule client's stay `id_token_alg`.
    pub extra_id_token_algs: &'static str,
    /// The whole issuer URL, for a provider behind a front that terminates TLS (the provider
    /// then trusts `X-Forwarded-Proto`); `None`: `http://<issuer_host>:<port>`.
    pub issuer_behind_front: Option<String>,
    /// UserInfo: `"signed"` answers a signed JWT (`userinfo_signed_response_alg` RS256),
    /// `"absent"` leaves the endpoint out of discovery; empty: plain JSON.
    pub userinfo: &'static str,
    /// Lifetime of access tokens for a resource server (a login or refresh naming a
    /// `resource`), in seconds; `None`: `access_token_ttl`.
    pub resource_token_ttl: Option<u64>,
    /// Lifetime of client-credentials tokens, in seconds; `None`: `access_token_ttl`.
    pub client_credentials_ttl: Option<u64>,
    /// Lifetime of tokens from the token exchange (RFC 8693), in seconds; `None`:
    /// `access_token_ttl`.
    pub exchanged_token_ttl: Option<u64>,
    /// Whether a refresh grant consumes its refresh token and answers a new one (the default,
    /// with reuse detection); `false`: it answers the same one, which stays valid.
    pub rotate_refresh_tokens: bool,
    /// Leave `end_session_endpoint` out of discovery (Google; an Auth0 tenant without
    /// RP-initiated logout).
    pub hide_end_session: bool,
    /// Serve the providers' own logout endpoints: Auth0's `/v2/logout?client_id&returnTo`
    /// and Cognito's `/logout?client_id&logout_uri` (see [`TestProvider::legacy_logouts`]).
    pub legacy_logout: bool,
    /// Put Entra ID's optional `login_hint` claim (`hint-for-<user>`) in ID tokens.
    pub login_hint_claim: bool,
    /// Issue a refresh token from every code grant, `offline_access` or not (as Google does
    /// for `access_type=offline`); `false`: stock oidc-provider, only with `offline_access`.
    pub always_issue_refresh_token: bool,
    /// A tenant id: the provider acts as a multi-tenant one (Entra ID's `/organizations`):
    /// discovery names the issuer template `<issuer>/{tenantid}/v2.0` and ID tokens carry this
    /// `tid` and its issuer (`OP_TENANT`). `None`: a provider with one issuer.
    pub tenant: Option<&'static str>,
    /// Whether every token-endpoint answer sends `expires_in` as a JSON string (`"600"`), as
    /// Entra ID's v1 and B2C endpoints do (`OP_EXPIRES_IN_AS_STRING`).
    pub expires_in_as_string: bool,
    /// Another spelling of the issuer that every ID token from the token endpoint names as
    /// `iss` (`OP_ID_TOKEN_ISS`; `"schemeless"`: the issuer without `http://`, the shape of
    /// Google's `accounts.google.com`). `None`: the provider's own issuer.
    pub id_token_iss: Option<&'static str>,
    /// Pushed authorization requests (`OP_PAR`): `"0"` off (not in discovery), `"1"` on,
    /// `"required"` on and required.
    pub par: &'static str,
    /// DPoP (`OP_DPOP`): `"0"` off, `"1"` oidc-provider's stock DPoP, `"nonce"` with server
    /// nonces required, `"required"` also with the vestibule client's tokens always bound.
    /// `None`: stock (`"1"`).
    pub dpop: Option<&'static str>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            access_token_ttl: 600,
            auth_method: STACK.provider.token_auth_method.as_str(),
            id_token_alg: STACK.provider.id_token_alg.as_str(),
            port: 0,
            keys_file: None,
            issuer_host: "127.0.0.1",
            extra_id_token_algs: "",
            issuer_behind_front: None,
            userinfo: "",
            resource_token_ttl: None,
            client_credentials_ttl: None,
            exchanged_token_ttl: None,
            rotate_refresh_tokens: true,
            hide_end_session: false,
            legacy_logout: false,
            login_hint_claim: false,
            always_issue_refresh_token: false,
            tenant: None,
            expires_in_as_string: false,
            id_token_iss: None,
            par: "0",
            dpop: None,
        }
    }
}

/// The vestibule client's id at the test provider (from the stack description).
pub fn client_id() -> &'static str {
    &STACK.provider.client_id
}

/// The vestibule client's secret.
pub fn client_secret() -> &'static str {
    &STACK.provider.client_secret
}

/// The second relying party at the test provider ("another client" of the same provider
/// sessions): its id, and the redirect URI it registered (on Vestibule's origin, never served).
pub fn portal_client(vestibule_origin: &str) -> (&'static str, String) {
    ("portal", format!("{vestibule_origin}/portal/callback"))
}

/// The upstream API's introspection credentials.
pub fn upstream_client() -> (&'static str, &'static str) {
    (
        &STACK.provider.upstream_client_id,
        &STACK.provider.upstream_client_secret,
    )
}

/// What the introspection endpoint of the provider at `issuer` says of `token`, asked as the
/// upstream API (a resource server) asks it.
pub async fn introspect(http: &reqwest::Client, issuer: &str, token: &str) -> Value {
    let (id, secret) = upstream_client();
    http.post(format!("{issuer}/token/introspection"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A running test provider.
pub struct TestProvider {
    child: Child,
    redirect_uri: String,
    post_logout_uri: String,
    options: ProviderOptions,
    /// The issuer URL (no trailing slash).
    pub issuer: String,
    /// The port it listens on.
    pub port: u16,
}

fn op_dir() -> PathBuf {
    super::node_project("op")
}

/// Installs the provider's Node packages from the lockfile once, if they are missing.
fn ensure_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| super::npm_ci_unless_installed("op", "oidc-provider"));
}

impl TestProvider {
    /// What this provider's introspection says of `token`, asked as the upstream API.
    pub async fn introspect(&self, token: &str) -> Value {
        introspect(&reqwest::Client::new(), &self.issuer, token).await
    }

    /// Starts the provider for a Vestibule whose callback is `redirect_uri`.
    ///
    /// A start that stalls is retried once with a fresh process; the log of the stalled one is
    /// printed, and a second stall fails the test with both logs. (The stalls seen, about one
    /// start in a hundred, were Node deadlocking while exporting the new signing key; server.js
    /// now avoids that path, and the retry stays as a safety net.)
    pub fn start(redirect_uri: &str, post_logout_uri: &str, options: &ProviderOptions) -> Self {
        ensure_installed();
        let mut stalled_logs = String::new();
        for attempt in 1..=2 {
            match Self::try_start(redirect_uri, post_logout_uri, options) {
                Ok(provider) => return provider,
                Err(log) => {
                    eprintln!("test provider start {attempt} stalled; its log:\n{log}");
                    stalled_logs.push_str(&format!("--- attempt {attempt} ---\n{log}"));
                }
            }
        }
        panic!("the test provider did not start within 60 s, twice:\n{stalled_logs}");
    }

    /// One start; `Err` with the provider's log if it did not print its address in time.
    fn try_start(
        redirect_uri: &str,
        post_logout_uri: &str,
        options: &ProviderOptions,
    ) -> Result<Self, String> {
        // The provider's own log, kept to explain a provider that does not start.
        let log_path = std::env::temp_dir().join(format!(
            "vestibule-test-op-{}-{}.log",
            std::process::id(),
            super::free_port()
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new("node");
        command
            .arg("server.js")
            .current_dir(op_dir())
            .env("OP_PORT", options.port.to_string())
            .env("OP_REDIRECT_URIS", redirect_uri)
            .env("OP_POST_LOGOUT_REDIRECT_URIS", post_logout_uri)
            .env("OP_TOKEN_AUTH_METHOD", options.auth_method)
            .env("OP_ID_TOKEN_ALG", options.id_token_alg)
            .env("OP_EXTRA_ID_TOKEN_ALGS", options.extra_id_token_algs)
            .env("OP_ACCESS_TOKEN_TTL", options.access_token_ttl.to_string())
            .env(
                "OP_USERINFO_SIGNED",
                (options.userinfo == "signed").to_string(),
            )
            .env("OP_NO_USERINFO", (options.userinfo == "absent").to_string())
            .env(
                "OP_ROTATE_REFRESH_TOKEN",
                options.rotate_refresh_tokens.to_string(),
            )
            .env("OP_HIDE_END_SESSION", options.hide_end_session.to_string())
            .env("OP_LEGACY_LOGOUT", options.legacy_logout.to_string())
            .env("OP_LOGIN_HINT_CLAIM", options.login_hint_claim.to_string())
            .env("OP_PAR", options.par)
            // Stock oidc-provider behaviour unless asked: a refresh token only with
            // offline_access and prompt=consent.
            .env(
                "OP_ALWAYS_ISSUE_REFRESH_TOKEN",
                if options.always_issue_refresh_token {
                    "1"
                } else {
                    "0"
                },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone().unwrap()));
        for (name, ttl) in [
            ("OP_RESOURCE_TOKEN_TTL", options.resource_token_ttl),
            ("OP_CLIENT_CREDENTIALS_TTL", options.client_credentials_ttl),
            ("OP_EXCHANGED_TOKEN_TTL", options.exchanged_token_ttl),
        ] {
            if let Some(ttl) = ttl {
                command.env(name, ttl.to_string());
            }
        }
        if let Some(tenant) = options.tenant {
            command.env("OP_TENANT", tenant);
        }
        if options.expires_in_as_string {
            command.env("OP_EXPIRES_IN_AS_STRING", "1");
        }
        if let Some(iss) = options.id_token_iss {
            command.env("OP_ID_TOKEN_ISS", iss);
        }
        if let Some(dpop) = options.dpop {
            command.env("OP_DPOP", dpop);
        }
        if let Some(keys) = &options.keys_file {
            command.env("OP_KEYS_FILE", keys);
        }
        if let Some(issuer) = &options.issuer_behind_front {
            command.env("OP_ISSUER", issuer).env("OP_TRUST_PROXY", "1");
        } else if options.issuer_host != "127.0.0.1" {
            // The issuer names the port, so the port is chosen here.
            let port = if options.port == 0 {
                super::free_port()
            } else {
                options.port
            };
            command.env("OP_PORT", port.to_string()).env(
                "OP_ISSUER",
                format!("http://{}:{port}", options.issuer_host),
            );
        }
        let mut child = command
            .spawn()
            .expect("node must be installed to run the test provider");
        let stdout = child.stdout.take().expect("stdout is piped");
        // Read on a thread of its own, so a provider that never starts fails the test
        // instead of blocking it forever.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let Ok(line) = receiver.recv_timeout(std::time::Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Kept (as *.stalled) for whoever investigates, even when the retry succeeds.
            let _ = std::fs::rename(&log_path, log_path.with_extension("stalled"));
            return Err(log);
        };
        let _ = std::fs::remove_file(&log_path);
        let info: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|_| panic!("the test provider did not start: {line:?}"));
        Ok(Self {
            child,
            redirect_uri: redirect_uri.to_owned(),
            post_logout_uri: post_logout_uri.to_owned(),
            options: options.clone(),
            issuer: info["issuer"].as_str().unwrap().to_owned(),
            port: info["port"].as_u64().unwrap() as u16,
        })
    }

    /// Restarts the provider on the same port with freshly generated signing keys
    /// (a key rotation; stored grants are lost).
    pub fn restart_with_new_keys(&mut self) {
        self.stop();
        let options = ProviderOptions {
            port: self.port,
            keys_file: None,
            ..self.options.clone()
        };
        *self = Self::start(&self.redirect_uri, &self.post_logout_uri, &options);
    }

    /// The `kid` of the provider's current signing key.
    pub async fn signing_kid(&self) -> String {
        let jwks: Value = reqwest::get(format!("{}/jwks", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"][0]["kid"].as_str().unwrap().to_owned()
    }

    /// The provider's counters (`authorization_code`, `refresh_token`, …).
    pub async fn stats(&self) -> Value {
        reqwest::get(format!("{}/__test/stats", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The stats once the provider has had at least `count` revocations (a logout revokes
    /// after answering the browser).
    pub async fn stats_once_revoked(&self, count: u64) -> Value {
        super::wait_for(
            &format!("{count} revocation(s) at the provider"),
            std::time::Duration::from_secs(10),
            || async {
                let stats = self.stats().await;
                (stats["revocations"].as_u64().unwrap_or(0) >= count).then_some(stats)
            },
        )
        .await
    }

    /// How many tokens of `model` (`RefreshToken`, `AccessToken`, …) the provider holds.
    pub async fn stored(&self, model: &str) -> u64 {
        let counts: Value = reqwest::get(format!("{}/__test/store", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        counts[model]["stored"].as_u64().unwrap_or(0)
    }

    /// Every token value (access, refresh, code) the provider issued so far; callable where
    /// nothing can be awaited (a `Drop`). Empty if the provider no longer answers.
    pub fn issued_secrets(&self) -> Vec<String> {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return Vec::new();
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let request = format!(
            "GET /__test/secrets HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        );
        let mut answer = String::new();
        if stream.write_all(request.as_bytes()).is_err()
            || stream.read_to_string(&mut answer).is_err()
        {
            return Vec::new();
        }
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let secrets: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        secrets["issued"]
            .as_array()
            .map(|issued| {
                issued
                    .iter()
                    .filter_map(|value| value.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many refresh grants the provider served.
    pub async fn refresh_grants(&self) -> u64 {
        self.stats().await["refresh_token"].as_u64().unwrap()
    }

    /// Revokes every grant, so the next refresh answers `invalid_grant`.
    pub async fn revoke_all(&self) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/revoke-all", self.issuer))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Holds every later refresh grant for `delay` before answering (a slow provider).
    pub async fn delay_refresh_grants(&self, delay: std::time::Duration) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/__test/refresh-delay?ms={}",
                self.issuer,
                delay.as_millis()
            ))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// A logout token with `header` and `claims`, signed by the provider's own key
    /// (`"provider"`), a key it never published (`"unknown"`), or the vestibule client's
    /// secret (`"client-secret"`, for HS256).
    pub async fn logout_token(&self, header: Value, claims: Value, key: &str) -> String {
        let response: Value = reqwest::Client::new()
            .post(format!("{}/__test/logout-token", self.issuer))
            .json(&serde_json::json!({ "header": header, "claims": claims, "key": key }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["token"]
            .as_str()
            .unwrap_or_else(|| panic!("the provider minted no token: {response}"))
            .to_owned()
    }

    /// The claims of a valid logout token for the vestibule client with the id `jti`, naming
    /// the user `sub`, the provider session `sid`, or both.
    pub fn logout_claims(&self, sub: Option<&str>, sid: Option<&str>, jti: &str) -> Value {
        let now = super::unix_now();
        let mut claims = serde_json::json!({
            "iss": self.issuer, "aud": client_id(), "iat": now, "exp": now + 120, "jti": jti,
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        if let Some(sub) = sub {
            claims["sub"] = sub.into();
        }
        if let Some(sid) = sid {
            claims["sid"] = sid.into();
        }
        claims
    }

    /// A logout token with `claims`, under `alg` (typed `logout+jwt`), signed with `key` (see
    /// [`Self::logout_token`]).
    pub async fn logout_token_under(&self, alg: &str, key: &str, claims: Value) -> String {
        let header = serde_json::json!({ "alg": alg, "typ": "logout+jwt" });
        self.logout_token(header, claims, key).await
    }

    /// A valid logout token naming only `sub` (every session of that user ends), signed by the
    /// provider's own key, with the id `jti`.
    pub async fn logout_token_for_sub(&self, sub: &str, jti: &str) -> String {
        let claims = self.logout_claims(Some(sub), None, jti);
        self.logout_token_under("RS256", "provider", claims).await
    }

    /// A valid logout token naming only the provider session `sid` (the sessions created in
    /// it end), signed by the provider's own key, with the id `jti`.
    pub async fn logout_token_for_sid(&self, sid: &str, jti: &str) -> String {
        let claims = self.logout_claims(None, Some(sid), jti);
        self.logout_token_under("RS256", "provider", claims).await
    }

    /// Answers the next refresh grant with `error` and `description` (as another provider
    /// would word it), instead of oidc-provider's own answer.
    pub async fn fail_next_refresh(&self, error: &str, description: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/refresh-error", self.issuer))
            .json(&serde_json::json!({ "error": error, "error_description": description }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Ends every provider session of `sub`, as an administrator would: each client with a
    /// back-channel logout URI gets its logout token (and must accept it, or this panics).
    /// Returns how many sessions ended and how many logout tokens were delivered.
    pub async fn end_sessions_of(&self, sub: &str) -> (u64, u64) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/end-sessions?sub={sub}", self.issuer))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(
            status.is_success(),
            "ending {sub}'s provider sessions: {body}"
        );
        (
            body["ended"].as_u64().unwrap(),
            body["notified"].as_u64().unwrap(),
        )
    }

    /// The front-channel logout URLs (with `iss` and `sid`) the provider's logout page would
    /// load in iframes for each of `sub`'s provider sessions in which Vestibule signed in,
    /// oldest first.
    pub async fn frontchannel_logout_urls(&self, sub: &str) -> Vec<String> {
        let answer: Value = reqwest::get(format!(
            "{}/__test/frontchannel-logout-urls?sub={sub}",
            self.issuer
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        answer["urls"]
            .as_array()
            .unwrap_or_else(|| panic!("no front-channel logout URLs: {answer}"))
            .iter()
            .map(|url| url.as_str().unwrap().to_owned())
            .collect()
    }

    /// Sets what the userinfo endpoint answers from now on (see tests/op/README.md):
    /// `{"claims": {…}}`, `{"sub": "…"}`, `{"refuse": true}`; `{}` restores the defaults.
    pub async fn set_userinfo(&self, switches: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/userinfo", self.issuer))
            .json(&switches)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// The `traceparent` of each request to the userinfo endpoint so far (`None`: absent).
    pub async fn userinfo_traceparents(&self) -> Vec<Option<String>> {
        let answer: Value = reqwest::get(format!("{}/__test/userinfo", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["traceparents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_str().map(str::to_owned))
            .collect()
    }

    /// Makes UserInfo answer aggregated (`"aggregated"`) and distributed (`"distributed"`)
    /// claims from now on (see tests/op/README.md); `{}` restores the defaults.
    pub async fn set_claim_sources(&self, switches: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/claim-sources", self.issuer))
            .json(&switches)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// What the claim-source switches recorded: `claims_endpoint_requests` (`{method,
    /// bearer_ok}` each) and `userinfo_transports` (`{method, header, body, query}` each).
    pub async fn claim_source_record(&self) -> Value {
        reqwest::get(format!("{}/__test/claim-sources", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Requests to the userinfo endpoint so far (any outcome).
    pub async fn userinfo_calls(&self) -> u64 {
        self.stats().await["userinfo"].as_u64().unwrap()
    }

    /// Stops the provider (its port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Token responses as other providers (and the conformance suite) shape them.
impl TestProvider {
    /// Changes every later token-endpoint answer (code and refresh grants): the ID token loses
    /// `drop_id_token_claims` (signed again with the provider's own key), and `expires_in`
    /// goes when `omit_expires_in`. `(&[], false)` restores them.
    pub async fn change_token_responses(
        &self,
        drop_id_token_claims: &[&str],
        omit_expires_in: bool,
    ) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/token-response", self.issuer))
            .json(&serde_json::json!({
                "drop_id_token_claims": drop_id_token_claims,
                "omit_expires_in": omit_expires_in,
            }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// From now on, every ID token the token endpoint answers (code and refresh grants) gets
    /// `claims` set over its own, signed again with the provider's key (so only they are wrong).
    pub async fn set_id_token_claims(&self, claims: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/token-response", self.issuer))
            .json(&serde_json::json!({ "set_id_token_claims": claims }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Whether the users have a second factor: when not, a login asking for `acr_values=mfa`
    /// authenticates with the password alone and gets `acr` `1` (the default: they have one).
    pub async fn set_second_factor(&self, available: bool) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/acr", self.issuer))
            .json(&serde_json::json!({ "mfa": available }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Revokes every access token issued so far (the upstream's introspection then says
    /// inactive), keeping the refresh tokens.
    pub async fn revoke_access_tokens(&self) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/revoke-access-tokens", self.issuer))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
