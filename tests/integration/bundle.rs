//! The bundled demo stack agrees with itself: the Keycloak realm export (`keycloak/*.json`), the
//! example configuration (`vestibule.example.toml`), `docker-compose.yml` and the README quick
//! start. No network and no containers: the files are read, and `docker-compose config -q`
//! validates the compose file.

use std::path::{Path, PathBuf};
use std::process::Command;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde_json::Value;

/// The demo users and their documented passwords: (username, password, has realm role `admin`).
const USERS: [(&str, &str, bool); 2] = [
    ("alice", "alice-password", true),
    ("bob", "bob-password", false),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

// ------------------------------------------------------------------ vestibule.example.toml

struct Example {
    public_url: String,
    issuer: String,
    client_id: String,
}

fn example() -> Example {
    let figment = Figment::from(Toml::file_exact(repo().join("vestibule.example.toml")));
    let string = |key: &str| {
        figment
            .extract_inner::<String>(key)
            .unwrap_or_else(|error| panic!("vestibule.example.toml: {key}: {error}"))
    };
    Example {
        public_url: string("public_url"),
        issuer: string("oidc.issuer"),
        client_id: string("oidc.client_id"),
    }
}

// ------------------------------------------------------------------ keycloak/*.json

/// Every realm export in `keycloak/`, with its file name.
fn realm_exports() -> Vec<(PathBuf, Value)> {
    let dir = repo().join("keycloak");
    let mut exports: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{} is not valid JSON: {error}", path.display()));
            (path, value)
        })
        .collect();
    exports.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!exports.is_empty(), "no realm export in {}", dir.display());
    exports
}

/// The realm that registers `client_id`, and that client.
fn realm_with_client(client_id: &str) -> (PathBuf, Value, Value) {
    let mut found = Vec::new();
    for (path, realm) in realm_exports() {
        let clients = realm["clients"].as_array().cloned().unwrap_or_default();
        for client in clients {
            if client["clientId"] == client_id {
                found.push((path.clone(), realm.clone(), client));
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "exactly one client {client_id:?} expected across keycloak/*.json"
    );
    found.pop().unwrap()
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} must be an array, found {value}"))
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("{what}: {item} is not a string"))
        })
        .map(str::to_owned)
        .collect()
}

fn attribute<'a>(client: &'a Value, name: &str) -> &'a str {
    client["attributes"][name]
        .as_str()
        .unwrap_or_else(|| panic!("client attribute {name:?} is missing"))
}

// ------------------------------------------------------------------ docker-compose.yml

use crate::harness::compose::{compose_env, compose_service, compose_vestibule_environment};

// ------------------------------------------------------------------ the tests

#[test]
fn the_realm_client_matches_the_public_url() {
    let example = example();
    let public_url = example.public_url.trim_end_matches('/');
    let (path, _, client) = realm_with_client(&example.client_id);
    let file = path.display();

    assert_eq!(
        strings(&client["redirectUris"], "redirectUris"),
        [format!("{public_url}/api/auth/callback")],
        "{file}: the redirect URI must be public_url + /api/auth/callback"
    );
    assert_eq!(
        attribute(&client, "post.logout.redirect.uris"),
        format!("{public_url}/api/auth/logout-callback"),
        "{file}: the post-logout redirect URI must be public_url + /api/auth/logout-callback"
    );
    assert_eq!(
        strings(&client["webOrigins"], "webOrigins"),
        [public_url.to_owned()],
        "{file}: web origins must be the public origin"
    );

    let compose_public_url = compose_env("vestibule", "VESTIBULE_PUBLIC_URL");
    assert_eq!(compose_public_url.trim_end_matches('/'), public_url);
    assert_eq!(
        compose_env("vestibule", "VESTIBULE_OIDC__CLIENT_ID"),
        example.client_id
    );
}

#[test]
fn the_issuer_is_the_browser_facing_keycloak_url_everywhere() {
    let example = example();
    let (_, realm, _) = realm_with_client(&example.client_id);
    let realm_name = realm["realm"].as_str().unwrap();

    let keycloak_hostname = compose_env("keycloak", "KC_HOSTNAME");
    let issuer = format!(
        "{}/realms/{realm_name}",
        keycloak_hostname.trim_end_matches('/')
    );
    assert_eq!(
        example.issuer, issuer,
        "vestibule.example.toml: oidc.issuer"
    );
    assert_eq!(
        compose_env("vestibule", "VESTIBULE_OIDC__ISSUER"),
        issuer,
        "docker-compose.yml: VESTIBULE_OIDC__ISSUER"
    );
    assert_eq!(
        compose_env("keycloak", "KC_HOSTNAME_BACKCHANNEL_DYNAMIC"),
        "true",
        "containers must get back-channel URLs on the host they used"
    );
    // The browser reaches Keycloak on the host port that KC_HOSTNAME names.
    let port = url::Url::parse(&keycloak_hostname)
        .unwrap()
        .port_or_known_default()
        .unwrap();
    let compose = read("docker-compose.yml");
    let keycloak = compose_service(&compose, "keycloak");
    assert!(
        keycloak.contains(&format!("\"{port}:8080\"")),
        "docker-compose.yml: keycloak must publish host port {port} (KC_HOSTNAME) on 8080"
    );
    // Containers fetch discovery from the service name, in the same realm.
    assert_eq!(
        compose_env("vestibule", "VESTIBULE_OIDC__DISCOVERY_URL"),
        format!("http://keycloak:8080/realms/{realm_name}/.well-known/openid-configuration")
    );
    assert_eq!(
        compose_env("demo-api", "OIDC_DISCOVERY_URL"),
        format!("http://keycloak:8080/realms/{realm_name}/.well-known/openid-configuration")
    );
}

#[test]
fn the_client_secret_and_the_realm_file_are_wired_into_compose() {
    let (path, _, client) = realm_with_client(&example().client_id);
    assert_eq!(
        client["secret"].as_str(),
        Some(compose_env("vestibule", "VESTIBULE_OIDC__CLIENT_SECRET").as_str()),
        "the realm's client secret and VESTIBULE_OIDC__CLIENT_SECRET differ"
    );
    let file_name = path.file_name().unwrap().to_str().unwrap();
    let compose = read("docker-compose.yml");
    let keycloak = compose_service(&compose, "keycloak");
    assert!(
        keycloak.contains(&format!(
            "./keycloak/{file_name}:/opt/keycloak/data/import/"
        )),
        "docker-compose.yml must mount keycloak/{file_name} into /opt/keycloak/data/import"
    );
    assert!(keycloak.contains("--import-realm"));
}

#[test]
fn the_client_is_a_confidential_code_flow_client_with_pkce_s256() {
    let (_, _, client) = realm_with_client(&example().client_id);
    assert_eq!(client["publicClient"], false);
    assert_eq!(client["standardFlowEnabled"], true);
    assert_eq!(client["implicitFlowEnabled"], false);
    assert_eq!(client["directAccessGrantsEnabled"], false);
    assert_eq!(client["frontchannelLogout"], false);
    assert_eq!(attribute(&client, "pkce.code.challenge.method"), "S256");
    assert_eq!(
        attribute(&client, "backchannel.logout.session.required"),
        "true"
    );
    // Keycloak (in its container) posts logout tokens to Vestibule by its service name.
    let listen = compose_env("vestibule", "VESTIBULE_LISTEN");
    let port = listen.rsplit(':').next().unwrap();
    assert_eq!(
        attribute(&client, "backchannel.logout.url"),
        format!("http://vestibule:{port}/api/auth/backchannel-logout")
    );

    let defaults = strings(&client["defaultClientScopes"], "defaultClientScopes");
    // `basic` carries `sub` since Keycloak 25; listing the scopes replaces the defaults.
    for scope in ["basic", "profile", "email", "roles"] {
        assert!(
            defaults.iter().any(|s| s == scope),
            "default scope {scope} missing"
        );
    }
    let optional = strings(&client["optionalClientScopes"], "optionalClientScopes");
    assert!(optional.iter().any(|s| s == "offline_access"));

    // Realm roles reach userinfo (the demo API reads them from there).
    let mappers = client["protocolMappers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        mappers.iter().any(|mapper| {
            mapper["protocolMapper"] == "oidc-usermodel-realm-role-mapper"
                && mapper["config"]["claim.name"] == "realm_access.roles"
                && mapper["config"]["userinfo.token.claim"] == "true"
        }),
        "a realm-role mapper adding realm_access.roles to userinfo is missing"
    );
}

#[test]
fn the_realm_rotates_refresh_tokens_and_issues_short_access_tokens() {
    let (_, realm, _) = realm_with_client(&example().client_id);
    assert_eq!(realm["enabled"], true);
    assert_eq!(realm["revokeRefreshToken"], true);
    assert_eq!(realm["refreshTokenMaxReuse"], 0);
    assert_eq!(realm["accessTokenLifespan"], 60);
    // Declaring any `clientScopes` would suppress all of Keycloak's built-in scopes on import,
    // `basic` (which carries `sub`) among them (keycloak#31082).
    assert!(
        realm.get("clientScopes").is_none(),
        "declaring clientScopes replaces all of Keycloak's built-in scopes"
    );
}

#[test]
fn the_demo_users_have_the_documented_passwords_and_roles() {
    let (_, realm, _) = realm_with_client(&example().client_id);
    let realm_roles = realm["roles"]["realm"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        realm_roles.iter().any(|role| role["name"] == "admin"),
        "the realm role admin must be defined"
    );
    let users = realm["users"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        users.len(),
        USERS.len(),
        "exactly the documented demo users"
    );
    for (username, password, admin) in USERS {
        let user = users
            .iter()
            .find(|user| user["username"] == username)
            .unwrap_or_else(|| panic!("user {username} missing"));
        assert_eq!(user["enabled"], true, "{username}");
        assert_eq!(user["emailVerified"], true, "{username}");
        for field in ["firstName", "lastName", "email"] {
            assert!(user[field].is_string(), "{username}: {field} missing");
        }
        let credentials = user["credentials"].as_array().cloned().unwrap_or_default();
        assert!(
            credentials
                .iter()
                .any(|credential| credential["type"] == "password"
                    && credential["value"] == password
                    && credential["temporary"] == false),
            "{username}: a non-temporary password {password:?} is expected"
        );
        let roles = user["realmRoles"]
            .as_array()
            .map(|roles| strings(&Value::Array(roles.clone()), "realmRoles"))
            .unwrap_or_default();
        assert_eq!(
            roles.iter().any(|role| role == "admin"),
            admin,
            "{username}: admin role"
        );
    }
    let admins = users
        .iter()
        .filter(|user| {
            user["realmRoles"]
                .as_array()
                .is_some_and(|roles| roles.iter().any(|role| role == "admin"))
        })
        .count();
    assert_eq!(admins, 1, "exactly one demo user is an admin");
}

#[test]
fn the_readme_quick_start_documents_the_demo_users_and_url() {
    let readme = read("README.md");
    let public_url = example().public_url;
    let mut expected = vec![public_url.trim_end_matches('/').to_owned()];
    for (username, password, _) in USERS {
        expected.push(username.to_owned());
        expected.push(password.to_owned());
    }
    for text in expected {
        assert!(readme.contains(&text), "README.md must mention {text:?}");
    }
}

#[test]
fn the_compose_environment_is_a_valid_vestibule_configuration() {
    let environment = compose_vestibule_environment();
    assert!(environment.iter().any(|(key, _)| key == "VESTIBULE_ROUTES"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_vestibule"));
    for (name, _) in std::env::vars() {
        if name.starts_with("VESTIBULE_") {
            command.env_remove(name);
        }
    }
    let output = command
        .envs(environment)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the compose environment is not a valid configuration: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn docker_compose_config_accepts_the_compose_file() {
    let root: &Path = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = match Command::new("docker-compose")
        .args(["config", "-q"])
        .current_dir(root)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "docker-compose is not installed; it validates docker-compose.yml \
             (Debian/Ubuntu: apt-get install docker-compose)"
        ),
        Err(error) => panic!("cannot run docker-compose: {error}"),
    };
    assert!(
        output.status.success(),
        "docker-compose config -q rejected docker-compose.yml:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
