//! `vestibule doctor`, the real binary against real components: a healthy deployment passes
//! with exit 0 (and `--json` parses), and each planted misconfiguration is found with its
//! remedy: a wrong issuer, an unreachable JWKS, a bad client secret, a Redis ACL user missing
//! a command or a key pattern, an expired Redis certificate, an http `public_url` in
//! production (each exit 1, the JSON naming the failed check and its remedy), warnings alone
//! (exit 3), and a configuration that cannot be read (exit 2).

use std::path::Path;

use serde_json::Value;

use crate::harness::tls::make_expired_server_certificate;
use crate::harness::{
    ENCRYPTION_KEY, ProviderOptions, RedisServer, TestProvider, free_port, provider,
};

/// A deployment's settings, written as the TOML `doctor --config` reads.
struct Deployment {
    public_url: String,
    issuer: String,
    discovery_url: Option<String>,
    client_secret: String,
    redis: Option<String>,
}

impl Deployment {
    fn new(provider: &TestProvider) -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".to_owned(),
            issuer: provider.issuer.clone(),
            discovery_url: None,
            client_secret: provider::client_secret().to_owned(),
            redis: None,
        }
    }

    fn toml(&self) -> String {
        let discovery = self
            .discovery_url
            .as_ref()
            .map(|url| format!("discovery_url = \"{url}\"\n"))
            .unwrap_or_default();
        let redis = self.redis.clone().unwrap_or_default();
        format!(
            "listen = \"127.0.0.1:8080\"\npublic_url = \"{public_url}\"\n\n\
             [oidc]\nissuer = \"{issuer}\"\n{discovery}client_id = \"{client_id}\"\n\
             client_secret = \"{secret}\"\n\n\
             [session]\nencryption_key = \"{ENCRYPTION_KEY}\"\n{redis}",
            public_url = self.public_url,
            issuer = self.issuer,
            client_id = provider::client_id(),
            secret = self.client_secret,
        )
    }
}

/// What one run printed and returned.
pub(crate) struct Diagnosis {
    pub(crate) code: i32,
    pub(crate) stdout: String,
}

impl Diagnosis {
    /// The line of check `id` with `status`, asserted to exist, and its remedy line.
    pub(crate) fn line(&self, status: &str, id: &str) -> (String, String) {
        let lines: Vec<&str> = self.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(status) && words.next() == Some(id)
            })
            .unwrap_or_else(|| panic!("no `{status} {id}` line in:\n{}", self.stdout));
        let remedy = lines
            .get(at + 1)
            .filter(|next| next.trim_start().starts_with("remedy:"))
            .map(|next| next.trim().to_owned())
            .unwrap_or_default();
        (lines[at].to_owned(), remedy)
    }
}

/// Runs `vestibule doctor --config <file>` (with `--json` if asked) on `toml`.
pub(crate) async fn doctor(toml: &str, json: bool) -> Diagnosis {
    let path = std::env::temp_dir().join(format!(
        "vestibule-doctor-{}-{}.toml",
        std::process::id(),
        free_port()
    ));
    std::fs::write(&path, toml).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vestibule"));
    for (name, _) in std::env::vars() {
        if name.starts_with("VESTIBULE_") {
            command.env_remove(name);
        }
    }
    command.arg("doctor").arg("--config").arg(&path);
    if json {
        command.arg("--json");
    }
    let output = command.output().await.unwrap();
    let _ = std::fs::remove_file(&path);
    Diagnosis {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

fn start_provider() -> TestProvider {
    TestProvider::start(
        "http://127.0.0.1:8080/api/auth/callback",
        "http://127.0.0.1:8080/",
        &ProviderOptions::default(),
    )
}

#[tokio::test]
async fn a_healthy_deployment_passes_with_exit_0_and_its_json_parses() {
    let provider = start_provider();
    let redis = RedisServer::start().await;
    let mut deployment = Deployment::new(&provider);
    deployment.redis = Some(format!("redis_url = \"{}\"\n", redis.url()));
    let text = doctor(&deployment.toml(), false).await;
    assert_eq!(text.code, 0, "{}", text.stdout);
    for id in [
        "provider.discovery",
        "provider.issuer",
        "provider.jwks",
        "provider.client_auth",
        "provider.clock",
        "redis.reachable",
        "redis.acl_commands",
        "redis.acl_keys",
        "deployment.public_url",
    ] {
        text.line("ok", id);
    }
    let json = doctor(&deployment.toml(), true).await;
    assert_eq!(json.code, 0);
    let document: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(document["status"], "ok", "{document:#}");
    assert_eq!(document["exit_code"], 0);
    let checks = document["checks"].as_array().unwrap();
    assert!(checks.len() >= 12, "{document:#}");
    assert!(
        checks
            .iter()
            .all(|check| check["status"] == "ok" || check["status"] == "skip"),
        "{document:#}"
    );
}

#[tokio::test]
async fn an_issuer_with_a_trailing_slash_fails_naming_the_difference_and_the_exact_value() {
    let provider = start_provider();
    let mut deployment = Deployment::new(&provider);
    deployment.issuer = format!("{}/", provider.issuer);
    let diagnosis = doctor(&deployment.toml(), false).await;
    assert_eq!(diagnosis.code, 1, "{}", diagnosis.stdout);
    let (line, remedy) = diagnosis.line("fail", "provider.issuer");
    assert!(line.contains("trailing slash"), "{line}");
    assert_eq!(
        remedy,
        format!("remedy: set oidc.issuer = \"{}\" exactly", provider.issuer)
    );
    // The secret is not sent to the token endpoint of a document that is not this issuer's.
    let (line, _) = diagnosis.line("skip", "provider.client_auth");
    assert!(line.contains("not probed"), "{line}");
    assert_eq!(provider_token_requests(&provider).await, 0);
}

/// How many requests the provider's token endpoint has answered.
async fn provider_token_requests(provider: &TestProvider) -> u64 {
    let stats = provider.stats().await;
    stats["token_requests"]
        .as_array()
        .unwrap_or_else(|| panic!("no token_requests in {stats}"))
        .len() as u64
}

/// Serves `document` as the discovery document at `/.well-known/openid-configuration`.
async fn serve_discovery(document: Value) -> String {
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let document = document.clone();
            async move { axum::Json(document) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/.well-known/openid-configuration")
}

#[tokio::test]
async fn a_jwks_uri_nobody_answers_fails_with_its_remedy() {
    let provider = start_provider();
    let discovery_url = format!("{}/.well-known/openid-configuration", provider.issuer);
    let mut document: Value = reqwest::get(&discovery_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = format!("http://127.0.0.1:{}/jwks", free_port());
    document["jwks_uri"] = Value::String(dead.clone());
    let mut deployment = Deployment::new(&provider);
    deployment.discovery_url = Some(serve_discovery(document).await);
    let diagnosis = doctor(&deployment.toml(), false).await;
    assert_eq!(diagnosis.code, 1, "{}", diagnosis.stdout);
    let (line, remedy) = diagnosis.line("fail", "provider.jwks");
    assert!(
        line.contains(&dead) && line.contains("unreachable"),
        "{line}"
    );
    assert!(remedy.contains("jwks_uri"), "{remedy}");
    // Everything else about the provider is fine.
    diagnosis.line("ok", "provider.issuer");
    diagnosis.line("ok", "provider.client_auth");
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_by_the_provider_and_never_printed() {
    let provider = start_provider();
    let mut deployment = Deployment::new(&provider);
    deployment.client_secret = "not-the-registered-secret".to_owned();
    let diagnosis = doctor(&deployment.toml(), false).await;
    assert_eq!(diagnosis.code, 1, "{}", diagnosis.stdout);
    let (line, remedy) = diagnosis.line("fail", "provider.client_auth");
    assert!(line.contains("invalid_client"), "{line}");
    assert!(remedy.contains("oidc.client_secret"), "{remedy}");
    assert!(!diagnosis.stdout.contains("not-the-registered-secret"));
    diagnosis.line("ok", "provider.jwks");

    let json = doctor(&deployment.toml(), true).await;
    assert_eq!(json.code, 1, "{}", json.stdout);
    let document: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(document["status"], "fail", "{document:#}");
    assert_eq!(document["exit_code"], 1);
    let check = document["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["id"] == "provider.client_auth")
        .unwrap();
    assert_eq!(check["status"], "fail", "{check:#}");
    assert!(
        check["summary"]
            .as_str()
            .unwrap()
            .contains("invalid_client")
    );
    assert!(
        check["remedy"]
            .as_str()
            .unwrap()
            .contains("oidc.client_secret"),
        "{check:#}"
    );
    assert!(!json.stdout.contains("not-the-registered-secret"));
}

#[tokio::test]
async fn warnings_alone_exit_3_so_ci_can_tell_them_from_failures() {
    let provider = start_provider();
    let mut deployment = Deployment::new(&provider);
    // https in front (a load balancer terminates TLS) but no trusted proxies: works, but
    // every user shares the balancer's login rate limit.
    deployment.public_url = "https://app.example.test".to_owned();
    let diagnosis = doctor(&deployment.toml(), false).await;
    assert_eq!(diagnosis.code, 3, "{}", diagnosis.stdout);
    let (line, remedy) = diagnosis.line("warn", "deployment.trusted_proxies");
    assert!(line.contains("rate limit"), "{line}");
    assert!(remedy.contains("server.trusted_proxies"), "{remedy}");
    diagnosis.line("ok", "deployment.public_url");
    assert!(
        !diagnosis
            .stdout
            .lines()
            .any(|line| line.starts_with("fail")),
        "{}",
        diagnosis.stdout
    );
}

/// Adds ACL user `user` (password `secret-pw`) with `rules` (as `ACL SETUSER` takes them).
async fn add_acl_user(redis: &RedisServer, user: &str, rules: &[&str]) {
    let mut command = redis::cmd("ACL");
    command.arg("SETUSER").arg(user).arg("on").arg(">secret-pw");
    for rule in rules {
        command.arg(*rule);
    }
    let () = command
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
}

/// A deployment on `redis` as `user`, with no provider: the Redis checks stand on their own.
fn on_redis_as(redis: &RedisServer, user: &str) -> Deployment {
    Deployment {
        public_url: "http://127.0.0.1:8080".to_owned(),
        issuer: format!("http://127.0.0.1:{}", free_port()),
        discovery_url: None,
        client_secret: "x".to_owned(),
        redis: Some(format!(
            "redis_url = \"redis://{user}:secret-pw@127.0.0.1:{}\"\n",
            redis.port()
        )),
    }
}

#[tokio::test]
async fn a_redis_user_missing_a_command_or_a_key_pattern_fails_naming_it() {
    let redis = RedisServer::start().await;
    add_acl_user(&redis, "noscripts", &["~*", "&*", "+@all", "-evalsha"]).await;
    add_acl_user(&redis, "otherkeys", &["~app:*", "&*", "+@all"]).await;
    let no_scripts = doctor(&on_redis_as(&redis, "noscripts").toml(), false).await;
    assert_eq!(no_scripts.code, 1, "{}", no_scripts.stdout);
    let (line, remedy) = no_scripts.line("fail", "redis.acl_commands");
    assert!(line.ends_with("may not run: EVALSHA"), "{line}");
    assert!(
        remedy.contains("ACL SETUSER noscripts +evalsha"),
        "{remedy}"
    );
    no_scripts.line("ok", "redis.acl_keys");
    assert!(!no_scripts.stdout.contains("secret-pw"));

    let other_keys = doctor(&on_redis_as(&redis, "otherkeys").toml(), false).await;
    let (line, remedy) = other_keys.line("fail", "redis.acl_keys");
    assert!(line.contains("vestibule:session:*"), "{line}");
    assert!(
        remedy.contains("ACL SETUSER otherkeys ~vestibule:*"),
        "{remedy}"
    );
    // The doctor left no key behind.
    assert!(redis.keys("vestibule:doctor-probe:*").await.is_empty());
}

#[tokio::test]
async fn the_least_privileged_acl_user_in_the_deployment_docs_passes_the_acl_checks() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploying.md"))
            .unwrap();
    let documented = docs
        .lines()
        .find_map(|line| line.strip_prefix("ACL SETUSER vestibule on >PASSWORD "))
        .expect("docs/deploying.md shows the ACL user");
    let rules: Vec<&str> = documented.split_whitespace().collect();
    let redis = RedisServer::start().await;
    add_acl_user(&redis, "vestibule", &rules).await;
    let diagnosis = doctor(&on_redis_as(&redis, "vestibule").toml(), false).await;
    diagnosis.line("ok", "redis.reachable");
    diagnosis.line("ok", "redis.acl_commands");
    diagnosis.line("ok", "redis.acl_keys");
}

#[tokio::test]
async fn an_expired_redis_certificate_fails_with_its_date() {
    let redis = RedisServer::start_tls().await;
    let files = redis.tls_files().unwrap().clone();
    let (certificate, key) = make_expired_server_certificate(redis.dir(), &files);
    let mut connection = redis.connection().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tls-cert-file")
        .arg(certificate.to_str().unwrap())
        .arg("tls-key-file")
        .arg(key.to_str().unwrap())
        .query_async(&mut connection)
        .await
        .unwrap();
    let path = |path: &Path| path.display().to_string();
    let deployment = Deployment {
        public_url: "http://127.0.0.1:8080".to_owned(),
        issuer: format!("http://127.0.0.1:{}", free_port()),
        discovery_url: None,
        client_secret: "x".to_owned(),
        redis: Some(format!(
            "redis_url = \"{}\"\nredis_ca_file = \"{}\"\nredis_client_cert_file = \"{}\"\n\
             redis_client_key_file = \"{}\"\n",
            redis.url(),
            path(&files.ca),
            path(&files.client.0),
            path(&files.client.1)
        )),
    };
    let diagnosis = doctor(&deployment.toml(), false).await;
    assert_eq!(diagnosis.code, 1, "{}", diagnosis.stdout);
    let (line, remedy) = diagnosis.line("fail", "redis.tls");
    assert!(
        line.contains("expired on 2024-02-01 00:00:00 UTC"),
        "{line}"
    );
    assert!(remedy.contains("renew the certificate"), "{remedy}");
    let (reachable, _) = diagnosis.line("fail", "redis.reachable");
    assert!(reachable.to_lowercase().contains("expired"), "{reachable}");
}

#[tokio::test]
async fn plain_http_public_url_off_loopback_fails_and_an_unreadable_config_exits_2() {
    let deployment = Deployment {
        public_url: "http://app.example.test".to_owned(),
        issuer: format!("http://127.0.0.1:{}", free_port()),
        discovery_url: None,
        client_secret: "x".to_owned(),
        redis: None,
    };
    let diagnosis = doctor(&deployment.toml(), false).await;
    assert_eq!(diagnosis.code, 1, "{}", diagnosis.stdout);
    let (line, remedy) = diagnosis.line("fail", "deployment.public_url");
    assert!(line.contains("http://app.example.test"), "{line}");
    assert!(remedy.contains("https"), "{remedy}");

    let unreadable = doctor(
        &deployment.toml().replace("client_id", "client_identifier"),
        true,
    )
    .await;
    assert_eq!(unreadable.code, 2, "{}", unreadable.stdout);
    let document: Value = serde_json::from_str(&unreadable.stdout).unwrap();
    assert_eq!(document["checks"][0]["id"], "config.load");
    assert_eq!(document["checks"][0]["status"], "fail");
    assert!(
        document["checks"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("client_identifier"),
        "{document:#}"
    );
}

/// With `[[providers]]` every provider is checked, each line naming its provider: the one with a
/// wrong secret fails, the other passes.
#[tokio::test]
async fn every_provider_of_several_is_checked_and_named_in_its_lines() {
    let staff = start_provider();
    let partners = start_provider();
    let entry = |id: &str, provider: &TestProvider, secret: &str| {
        format!(
            "[[providers]]\nid = \"{id}\"\nissuer = \"{issuer}\"\nclient_id = \"{client_id}\"\n\
             client_secret = \"{secret}\"\n\n",
            issuer = provider.issuer,
            client_id = provider::client_id(),
        )
    };
    let config = format!(
        "listen = \"127.0.0.1:8080\"\npublic_url = \"http://127.0.0.1:8080\"\n\n{}{}\
         [session]\nencryption_key = \"{ENCRYPTION_KEY}\"\n",
        entry("staff", &staff, provider::client_secret()),
        entry("partners", &partners, "not-the-registered-secret"),
    );
    let diagnosis = doctor(&config, false).await;
    assert_eq!(diagnosis.code, 1, "{}", diagnosis.stdout);
    let line_of = |status: &str, label: &str| {
        diagnosis.stdout.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(status)
                && words.next() == Some("provider.client_auth")
                && words.next() == Some(label)
        })
    };
    assert!(line_of("fail", "[partners]"), "{}", diagnosis.stdout);
    assert!(line_of("ok", "[staff]"), "{}", diagnosis.stdout);
    assert!(!diagnosis.stdout.contains("not-the-registered-secret"));
}
