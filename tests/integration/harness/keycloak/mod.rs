//! The bundled Keycloak, for real: Keycloak's own server distribution (`keycloak/dist` fetches
//! it from Maven Central), started once per test process with the realm file and the settings
//! of `docker-compose.yml`'s `keycloak` service, and the demo API (`dev/demo-api.mjs`) beside it.
//!
//! The compose split is reproduced with two relays in front of one Keycloak: the browser uses
//! `http://localhost:<front>` (the "published port", which `KC_HOSTNAME` names), Vestibule and
//! the demo API use `http://127.0.0.1:<back>` (the "service name"). Each relay records every
//! request line, so a test can prove who called what through which name. Test-only changes
//! (token lifetimes, events, redirect URIs) go through the admin REST API (`admin.rs`, and
//! `step_up.rs` and `exchange.rs` for those features); the start-up is `launch.rs`.

mod admin;
pub mod client_assertion;
pub mod exchange;
pub mod fapi;
mod launch;
pub mod step_up;

use std::process::Child;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::relay::Relay;
use launch::{panic_message, start};

/// The access-token lifetime the tests set on the realm (the file says 60 s), so a token
/// expires within a test.
pub const ACCESS_TOKEN_LIFESPAN_SECS: u64 = 12;

/// How long Keycloak may take to start on a busy 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(300);

/// Keycloak events the tests read (refreshes, revocations, logouts, logins, token exchanges).
const RECORDED_EVENTS: &[&str] = &[
    "LOGIN",
    "LOGIN_ERROR",
    "CODE_TO_TOKEN",
    "CODE_TO_TOKEN_ERROR",
    "REFRESH_TOKEN",
    "REFRESH_TOKEN_ERROR",
    "REVOKE_GRANT",
    "REVOKE_GRANT_ERROR",
    "LOGOUT",
    "LOGOUT_ERROR",
    "TOKEN_EXCHANGE",
    "TOKEN_EXCHANGE_ERROR",
];

/// One running Keycloak (shared by every test of this process) and the demo API.
pub struct Keycloak {
    /// The browser-facing base URL, `KC_HOSTNAME`: `http://localhost:<front relay>`.
    pub front_url: String,
    /// The base URL the demo API and the admin client use: `http://127.0.0.1:<back relay>`
    /// (each Vestibule of a test gets a back-channel relay of its own: [`Keycloak::http_port`]).
    pub back_url: String,
    /// The port Keycloak itself listens on (127.0.0.1), behind the relays.
    pub http_port: u16,
    /// The realm's name (from the realm file).
    pub realm: String,
    /// The realm file as shipped (read once at start).
    realm_json: Value,
    /// The Vestibule client's id in the realm file.
    pub client_id: String,
    /// The Vestibule client's secret in the realm file.
    pub client_secret: String,
    /// The demo API, which validates tokens at Keycloak's userinfo endpoint.
    pub demo_api_url: String,
    /// The relay the browser goes through.
    pub front: Relay,
    /// Keycloak and the demo API: never waited for, they end with this process.
    _processes: Vec<Child>,
    admin_username: String,
    admin_password: String,
    client_updates: tokio::sync::Mutex<()>,
    logins: tokio::sync::Mutex<()>,
}

impl Keycloak {
    /// The shared instance, started on first use (tens of seconds) by a thread that keeps its
    /// relays running and takes Keycloak and the demo API down with the test process.
    pub fn shared() -> &'static Keycloak {
        static SHARED: OnceLock<Keycloak> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("keycloak-keeper".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        let started = std::panic::AssertUnwindSafe(start());
                        let result = futures_util::FutureExt::catch_unwind(started).await;
                        let failed = result.is_err();
                        let _ = sender.send(result.map_err(|panic| panic_message(&*panic)));
                        if !failed {
                            // Serve the relays for as long as the process lives.
                            std::future::pending::<()>().await;
                        }
                    });
                })
                .unwrap();
            match receiver.recv() {
                Ok(Ok(keycloak)) => keycloak,
                Ok(Err(message)) => panic!("the test Keycloak did not start: {message}"),
                Err(_) => panic!("the test Keycloak's thread died"),
            }
        })
    }

    /// The password the realm file gives `username` (the README documents the same).
    pub fn password_of(&self, username: &str) -> String {
        self.realm_json["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["username"] == username)
            .and_then(|user| user["credentials"][0]["value"].as_str())
            .unwrap_or_else(|| panic!("the realm file has no password for {username}"))
            .to_owned()
    }

    /// A turn to log in. The realm has brute-force protection on, and with it Keycloak 26
    /// refuses overlapping logins of one user (`user_temporarily_disabled`, "Invalid username
    /// or password"): the tests' browsers, unlike one person, would log in at the same moment.
    pub async fn login_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.logins.lock().await
    }

    /// The issuer, as the browser and the tokens name it.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{}", self.front_url, self.realm)
    }

    /// The discovery URL under a back-channel base URL (`http://127.0.0.1:<relay>`).
    pub fn discovery_url_via(&self, base_url: &str) -> String {
        format!(
            "{base_url}/realms/{}/.well-known/openid-configuration",
            self.realm
        )
    }

    /// Back-channel requests (token, revocation, JWKS, userinfo, discovery) that arrived on
    /// the browser's host name: in the compose setup, these would fail.
    pub fn back_channel_calls_on_the_front_name(&self) -> Vec<String> {
        let realm = format!("/realms/{}/", self.realm);
        self.front
            .request_lines()
            .into_iter()
            .filter(|line| {
                let path = line.split(' ').nth(1).unwrap_or("");
                path.starts_with(&realm)
                    && [
                        "/.well-known/",
                        "/protocol/openid-connect/token",
                        "/protocol/openid-connect/revoke",
                        "/protocol/openid-connect/certs",
                        "/protocol/openid-connect/userinfo",
                    ]
                    .iter()
                    .any(|endpoint| path[realm.len() - 1..].starts_with(endpoint))
            })
            .collect()
    }
}
