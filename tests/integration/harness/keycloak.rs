//! The bundled Keycloak, for real: Keycloak's own server distribution (`keycloak/dist` fetches
//! it from Maven Central), started once per test process with the realm file and the settings
//! of `docker-compose.yml`'s `keycloak` service, and the demo API (`dev/demo-api.mjs`) beside it.
//!
//! The compose split is reproduced with two relays in front of one Keycloak: the browser uses
//! `http://localhost:<front>` (the "published port", which `KC_HOSTNAME` names), Vestibule and
//! the demo API use `http://127.0.0.1:<back>` (the "service name"). Each relay records the first
//! request line of every connection, so a test can prove who called what through which name.
//! Test-only changes (token lifetimes, events, redirect URIs) go through the admin REST API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::compose::{compose_environment, compose_service, compose_value, read_compose_file};
use super::relay::Relay;
use super::{free_port, wait_for};

/// The access-token lifetime the tests set on the realm (the file says 60 s), so a token
/// expires within a test.
pub const ACCESS_TOKEN_LIFESPAN_SECS: u64 = 12;

/// How long Keycloak may take to start on a busy 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(300);

/// Keycloak events the tests read (refreshes, revocations, logouts, logins).
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
        let path = compose_keycloak().realm_file;
        let realm: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        realm["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["username"] == username)
            .and_then(|user| user["credentials"][0]["value"].as_str())
            .unwrap_or_else(|| panic!("{} has no password for {username}", path.display()))
            .to_owned()
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

    /// Adds a Vestibule at `public_url` to the realm's client (redirect URI, post-logout
    /// redirect URI, web origin), as an operator would register another deployment.
    pub async fn register_vestibule(&self, public_url: &str) {
        let _one_at_a_time = self.client_updates.lock().await;
        let path = format!("clients?clientId={}", self.client_id);
        let clients = self.admin_get(&path).await;
        let mut client = clients[0].clone();
        let id = client["id"].as_str().expect("client id").to_owned();
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
        attributes["post.logout.redirect.uris"] = Value::String(format!("{logout}##{public_url}/"));
        self.admin_send(
            reqwest::Method::PUT,
            &format!("clients/{id}"),
            Some(&client),
        )
        .await;
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
    async fn admin_send(
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

fn http() -> reqwest::Client {
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

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The compose file's `keycloak` service: its `KC_*` environment, its command line and the
/// realm file it mounts into `data/import/`.
struct ComposeKeycloak {
    environment: Vec<(String, String)>,
    command: Vec<String>,
    realm_file: PathBuf,
    realm_file_name: String,
}

fn compose_keycloak() -> ComposeKeycloak {
    let compose = read_compose_file();
    let block = compose_service(&compose, "keycloak");
    let environment = compose_environment("keycloak", "KC_");
    let command = compose_value(&block, "command").expect("the keycloak service has a command");
    let command: Vec<String> = serde_json::from_str(&command)
        .unwrap_or_else(|error| panic!("keycloak command {command:?}: {error}"));
    let volume = block
        .lines()
        .map(str::trim)
        .find_map(|line| {
            line.strip_prefix("- ./keycloak/")
                .filter(|rest| rest.contains(":/opt/keycloak/data/import/"))
        })
        .expect("the keycloak service mounts a realm file from ./keycloak into data/import");
    let (source, target) = volume.split_once(':').unwrap();
    let realm_file_name = target
        .trim_start_matches("/opt/keycloak/data/import/")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    ComposeKeycloak {
        environment,
        command,
        realm_file: repo().join("keycloak").join(source),
        realm_file_name,
    }
}

/// `keycloak/dist`: the unpacked distribution (fetched on first use).
fn distribution() -> PathBuf {
    let output = Command::new(repo().join("keycloak/dist"))
        .stderr(Stdio::inherit())
        .output()
        .expect("keycloak/dist runs (bash)");
    assert!(
        output.status.success(),
        "keycloak/dist failed: the Keycloak tests need Java 17+ and Maven (see README)"
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// A fresh copy of the distribution for this process (`start-dev` rewrites `lib/quarkus`),
/// after removing copies whose test process is gone.
fn fresh_home(distribution: &Path) -> PathBuf {
    let runs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keycloak");
    std::fs::create_dir_all(&runs).unwrap();
    for entry in std::fs::read_dir(&runs).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("run-")
            .map(|rest| rest.split('.').next().unwrap_or(rest))
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let home = runs.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let status = Command::new("cp")
        .arg("-a")
        .arg(distribution)
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success(), "copying the Keycloak distribution failed");
    home
}

/// A command for `program` that is killed (SIGTERM) when the thread that spawns it ends:
/// util-linux's `setpriv --pdeathsig` sets that up and then execs the program. Only the keeper
/// thread spawns these, and it ends only with the process, so nothing outlives the tests.
fn command_tied_to_this_thread(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "TERM", "--"]).arg(program);
    command
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

async fn start() -> Keycloak {
    let compose = compose_keycloak();
    let realm_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&compose.realm_file).unwrap()).unwrap();
    let realm = realm_json["realm"].as_str().unwrap().to_owned();
    let client = realm_json["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|client| client["clientId"] == "vestibule")
        .expect("the realm has the vestibule client")
        .clone();

    let home = fresh_home(&distribution());
    let import = home.join("data/import");
    std::fs::create_dir_all(&import).unwrap();
    // The realm file, unchanged, under the name compose mounts it as.
    std::fs::copy(&compose.realm_file, import.join(&compose.realm_file_name)).unwrap();

    let http_port = free_port();
    let management_port = free_port();
    let front = Relay::start(http_port).await;
    let back = Relay::start(http_port).await;

    let mut command = command_tied_to_this_thread(home.join("bin/kc.sh"));
    let mut admin = (String::new(), String::new());
    let mut front_url = None;
    for (key, value) in &compose.environment {
        let value = match key.as_str() {
            // The published port of compose is the front relay here; scheme and host stay.
            "KC_HOSTNAME" => {
                let mut url = url::Url::parse(value).expect("KC_HOSTNAME is a URL");
                assert_eq!(url.host_str(), Some("localhost"), "KC_HOSTNAME's host");
                url.set_port(Some(front.port)).unwrap();
                let url = url.as_str().trim_end_matches('/').to_owned();
                front_url = Some(url.clone());
                url
            }
            "KC_BOOTSTRAP_ADMIN_USERNAME" => {
                admin.0 = value.clone();
                value.clone()
            }
            "KC_BOOTSTRAP_ADMIN_PASSWORD" => {
                admin.1 = value.clone();
                value.clone()
            }
            _ => value.clone(),
        };
        command.env(key, value);
    }
    let front_url = front_url.expect("docker-compose.yml sets KC_HOSTNAME");
    assert!(
        !admin.0.is_empty() && !admin.1.is_empty(),
        "docker-compose.yml sets the bootstrap admin"
    );
    let log = home.with_extension("log");
    let log_file = std::fs::File::create(&log).unwrap();
    command
        .args(&compose.command)
        // Only what the machine needs beyond compose: loopback, free ports.
        .arg("--http-host=127.0.0.1")
        .arg(format!("--http-port={http_port}"))
        .env("KC_HTTP_MANAGEMENT_PORT", management_port.to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    let started = std::time::Instant::now();
    let mut child = command
        .spawn()
        .expect("setpriv (util-linux) runs bin/kc.sh");

    let back_url = format!("http://127.0.0.1:{}", back.port);
    let discovery = format!("{back_url}/realms/{realm}/.well-known/openid-configuration");
    let issuer = format!("{front_url}/realms/{realm}");
    let deadline = std::time::Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "Keycloak exited during start-up ({status}); log {}:\n{}",
                log.display(),
                log_tail(&log)
            );
        }
        let ready = async {
            let health = http()
                .get(format!("http://127.0.0.1:{management_port}/health/ready"))
                .send()
                .await
                .ok()?;
            if !health.status().is_success() {
                return None;
            }
            let metadata: Value = http()
                .get(&discovery)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some(metadata)
        };
        if let Some(metadata) = ready.await {
            assert_eq!(
                metadata["issuer"], issuer,
                "Keycloak's issuer must be the browser-facing URL whatever host discovery used"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Keycloak was not ready within {START_LIMIT:?}; log {}:\n{}",
            log.display(),
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The realm imports cleanly: a warning or error during start-up fails every Keycloak test.
    let start_up_log = std::fs::read_to_string(&log).unwrap_or_default();
    let complaints: Vec<&str> = start_up_log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(
        complaints.is_empty(),
        "Keycloak warned while starting with the realm file (log {}):\n{}",
        log.display(),
        complaints.join("\n")
    );
    eprintln!(
        "[keycloak] ready in {:.1} s: browser {front_url}, back channel {back_url} (log {})",
        started.elapsed().as_secs_f64(),
        log.display()
    );
    let (demo_api_url, demo_api) =
        start_demo_api(&discovery, &home.with_extension("demo-api.log")).await;
    let keycloak = Keycloak {
        front_url,
        back_url,
        http_port,
        realm,
        client_id: client["clientId"].as_str().unwrap().to_owned(),
        client_secret: client["secret"].as_str().unwrap().to_owned(),
        demo_api_url,
        front,
        _processes: vec![child, demo_api],
        admin_username: admin.0,
        admin_password: admin.1,
        client_updates: tokio::sync::Mutex::new(()),
    };
    // Test-only realm settings, through the admin API (the realm file stays as shipped).
    keycloak
        .admin_send(
            reqwest::Method::PUT,
            "",
            Some(&json!({ "accessTokenLifespan": ACCESS_TOKEN_LIFESPAN_SECS })),
        )
        .await;
    keycloak
        .admin_send(
            reqwest::Method::PUT,
            "events/config",
            Some(&json!({
                "eventsEnabled": true,
                "eventsExpiration": 3600,
                "enabledEventTypes": RECORDED_EVENTS,
            })),
        )
        .await;
    keycloak
}

/// `dev/demo-api.mjs` on a free port, validating tokens at Keycloak through the back channel.
async fn start_demo_api(discovery: &str, log: &Path) -> (String, Child) {
    let log = std::fs::File::create(log).unwrap();
    let port = free_port();
    let mut command = command_tied_to_this_thread("node");
    command
        .arg(repo().join("dev/demo-api.mjs"))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("OIDC_DISCOVERY_URL", discovery)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = command.spawn().expect("node runs dev/demo-api.mjs");
    wait_for("the demo API", Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (format!("http://127.0.0.1:{port}"), child)
}
