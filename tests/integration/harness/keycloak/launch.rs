//! Starting Keycloak the way compose does, without Docker: the distribution from
//! `keycloak/dist`, a fresh copy per test process, the `keycloak` service's environment, command
//! and realm file from `docker-compose.yml`, the relays, readiness, and the demo API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::admin::http;
use super::exchange::{API_CLIENT_ID, API_PATH};
use super::{Keycloak, START_LIMIT};
use crate::harness::compose::{
    compose_environment, compose_service, compose_value, read_compose_file,
};
use crate::harness::relay::Relay;
use crate::harness::{free_port, wait_for};

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
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

/// The environment compose gives Keycloak, with `KC_HOSTNAME` moved to the front relay's port
/// (scheme and host stay), plus the bootstrap administrator's credentials it names.
struct KeycloakEnvironment {
    variables: Vec<(String, String)>,
    front_url: String,
    admin: (String, String),
}

fn keycloak_environment(compose: &ComposeKeycloak, front_port: u16) -> KeycloakEnvironment {
    let value_of = |key: &str| {
        compose
            .environment
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("docker-compose.yml sets no {key} for keycloak"))
    };
    let mut front = url::Url::parse(&value_of("KC_HOSTNAME")).expect("KC_HOSTNAME is a URL");
    assert_eq!(front.host_str(), Some("localhost"), "KC_HOSTNAME's host");
    front.set_port(Some(front_port)).unwrap();
    let front_url = front.as_str().trim_end_matches('/').to_owned();
    let variables = compose
        .environment
        .iter()
        .map(|(key, value)| match key.as_str() {
            "KC_HOSTNAME" => (key.clone(), front_url.clone()),
            _ => (key.clone(), value.clone()),
        })
        .collect();
    KeycloakEnvironment {
        variables,
        front_url,
        admin: (
            value_of("KC_BOOTSTRAP_ADMIN_USERNAME"),
            value_of("KC_BOOTSTRAP_ADMIN_PASSWORD"),
        ),
    }
}

/// Polls until the management interface says ready and discovery (through the back channel)
/// names the browser-facing issuer; panics with the log's tail if Keycloak exits or is late.
async fn wait_until_ready(
    child: &mut Child,
    management_port: u16,
    discovery: &str,
    issuer: &str,
    log: &Path,
) {
    let deadline = std::time::Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "Keycloak exited during start-up ({status}); log {}:\n{}",
                log.display(),
                log_tail(log)
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
            let response = http().get(discovery).send().await.ok()?;
            response.json::<Value>().await.ok()
        };
        if let Some(metadata) = ready.await {
            assert_eq!(
                metadata["issuer"], issuer,
                "Keycloak's issuer must be the browser-facing URL whatever host discovery used"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Keycloak was not ready within {START_LIMIT:?}; log {}:\n{}",
            log.display(),
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The realm imports cleanly: a warning or error while starting fails every Keycloak test.
fn assert_clean_start(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complaints: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(
        complaints.is_empty(),
        "Keycloak warned while starting with the realm file (log {}):\n{}",
        log.display(),
        complaints.join("\n")
    );
}

/// Starts Keycloak, its relays and the demo API, and applies the tests' realm settings.
pub(super) async fn start() -> Keycloak {
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
    let environment = keycloak_environment(&compose, front.port);

    let log = home.with_extension("log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut command = command_tied_to_this_thread(home.join("bin/kc.sh"));
    command
        .envs(environment.variables.iter().map(|(k, v)| (k, v)))
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

    let front_url = environment.front_url;
    let back_url = format!("http://127.0.0.1:{}", back.port);
    let discovery = format!("{back_url}/realms/{realm}/.well-known/openid-configuration");
    let issuer = format!("{front_url}/realms/{realm}");
    wait_until_ready(&mut child, management_port, &discovery, &issuer, &log).await;
    assert_clean_start(&log);
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
        realm_json,
        client_id: client["clientId"].as_str().unwrap().to_owned(),
        client_secret: client["secret"].as_str().unwrap().to_owned(),
        demo_api_url,
        front,
        _processes: vec![child, demo_api],
        admin_username: environment.admin.0,
        admin_password: environment.admin.1,
        client_updates: tokio::sync::Mutex::new(()),
        logins: tokio::sync::Mutex::new(()),
    };
    keycloak.configure_for_tests().await;
    keycloak
}

/// `dev/demo-api.mjs` on a free port, validating tokens at Keycloak through the back channel:
/// at UserInfo, and under [`API_PATH`] locally against Keycloak's JWKS, for [`API_CLIENT_ID`].
async fn start_demo_api(discovery: &str, log: &Path) -> (String, Child) {
    let log = std::fs::File::create(log).unwrap();
    let port = free_port();
    let mut command = command_tied_to_this_thread("node");
    command
        .arg(repo().join("dev/demo-api.mjs"))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("OIDC_DISCOVERY_URL", discovery)
        .env("AUDIENCE_PATHS", format!("{API_PATH}={API_CLIENT_ID}"))
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
