//! The binary's command line: `--check-config`, environment overrides, one-line errors.

use std::process::Command;

const KEY: &str = crate::harness::ENCRYPTION_KEY;

fn config_file(contents: &str) -> tempfile_path::TempFile {
    tempfile_path::TempFile::new(contents)
}

fn valid_config() -> String {
    format!(
        r#"
listen = "127.0.0.1:8080"
public_url = "http://localhost:8080"
[oidc]
issuer = "http://localhost:8081/realms/vestibule"
client_id = "vestibule"
client_secret = "file-secret"
[session]
encryption_key = "{KEY}"
[[routes]]
prefix = "/api/orders"
upstream = "http://127.0.0.1:9000/v1"
"#
    )
}

fn vestibule() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vestibule"));
    for (name, _) in std::env::vars() {
        if name.starts_with("VESTIBULE_") {
            command.env_remove(name);
        }
    }
    command
}

/// `vestibule --config <file> --check-config`.
fn check_with_flag(file: &tempfile_path::TempFile) -> std::process::Output {
    vestibule()
        .arg("--config")
        .arg(&file.path)
        .arg("--check-config")
        .output()
        .unwrap()
}

/// `vestibule --check-config` with `VESTIBULE_CONFIG` pointing at `file` plus `env`.
fn check_with_env(file: &tempfile_path::TempFile, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = vestibule();
    command
        .env("VESTIBULE_CONFIG", &file.path)
        .arg("--check-config");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// Asserts the binary exited successfully (showing its standard error if not).
fn assert_succeeded(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The summary a successful `--check-config` printed, asserted to show every one of `shown`
/// and none of `hidden`.
fn summary_showing(output: &std::process::Output, shown: &[&str], hidden: &[&str]) -> String {
    assert_succeeded(output);
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    for expected in shown {
        assert!(
            summary.contains(expected),
            "{expected:?} missing from:\n{summary}"
        );
    }
    for secret in hidden {
        assert!(!summary.contains(secret), "{secret:?} shown in:\n{summary}");
    }
    summary
}

#[test]
fn check_config_accepts_a_valid_file() {
    let output = check_with_flag(&config_file(&valid_config()));
    assert_succeeded(&output);
}

#[test]
fn check_config_summarises_what_the_file_and_environment_produced_without_a_secret() {
    let file = config_file(&valid_config().replace(
        "[session]\n",
        "[session]\nredis_url = \"redis://vestibule:redis-pa55word@redis.internal:6380/2\"\nmax_per_user = 3\n",
    ));
    let output = check_with_env(
        &file,
        &[
            ("VESTIBULE_OIDC__CLIENT_SECRET", "env-secret-value"),
            (
                "VESTIBULE_ROUTES",
                "[{prefix=\"/api/billing\", upstream=\"http://svc:s3cr3t@billing.internal:8000/v2\"}]",
            ),
        ],
    );
    let summary = summary_showing(
        &output,
        &[
            "configuration is valid",
            "127.0.0.1:8080",
            "http://localhost:8081/realms/vestibule",
            "vestibule (secret set",
            "Redis, server redis.internal:6380",
            "one key (session.encryption_key)",
            "max_per_user 3",
            "keys derived from the session keys, valid 60 s",
            "/api/billing -> http://billing.internal:8000/v2",
            "the built-in demo page",
        ],
        &[
            "env-secret-value",
            "file-secret",
            "redis-pa55word",
            "s3cr3t",
            KEY,
        ],
    );
    assert!(
        !summary.contains("/api/orders"),
        "the environment replaced the routes"
    );
}

#[test]
fn check_config_shows_no_credentials_nor_query_values_of_any_url() {
    let file = config_file(
        &(valid_config()
            .replace(
                "client_secret = \"file-secret\"\n",
                "client_secret = \"file-secret\"\n\
                 discovery_url = \"https://d1sc0-us3r:d1sc0-pa55@idp.internal/.well-known/openid-configuration?tenant=t3nant-id\"\n\
                 id_token_signed_response_alg = \"ES256\"\n",
            )
            + "[traces]\notlp_endpoint = \"https://collector.example.com:4318/?api_key=k3y-in-query&region=eu\"\n"),
    );
    let output = check_with_flag(&file);
    summary_showing(
        &output,
        &[
            "OTLP/HTTP to https://collector.example.com:4318/?api_key=***&region=***",
            "https://idp.internal/.well-known/openid-configuration?tenant=***",
            "ID and logout tokens signed with ES256 (oidc.id_token_signed_response_alg)",
        ],
        &["k3y-in-query", "d1sc0-pa55", "d1sc0-us3r", "t3nant-id"],
    );
    let unset = check_with_flag(&config_file(&valid_config()));
    assert!(
        String::from_utf8_lossy(&unset.stdout)
            .contains("logout tokens under the algorithms of verified ID tokens, never HS*"),
        "{}",
        String::from_utf8_lossy(&unset.stdout)
    );
}

#[test]
fn check_config_shows_each_routes_access_methods_rules_and_step_up() {
    let routes = r#"
[[routes]]
prefix = "/api/admin"
upstream = "http://127.0.0.1:9001"
methods = ["GET", "POST"]
websocket = true
[[routes.require]]
claim = "realm_access.roles"
any_of = ["admin"]
[routes.step_up]
acr_values = ["mfa"]
max_age_secs = 300

[[routes]]
prefix = "/api/catalogue"
upstream = "http://127.0.0.1:9002"
access = "anonymous"

[[routes]]
prefix = "/api/exchanged"
upstream = "http://127.0.0.1:9003"
[routes.credential]
kind = "exchange"
audience = "orders-api"
scope = "orders:read"
"#;
    let output = check_with_flag(&config_file(&format!("{}{routes}", valid_config())));
    summary_showing(
        &output,
        &[
            "access user; methods GET, HEAD, POST; require realm_access.roles any_of [admin]; \
             step-up acr [mfa], auth at most 300 s old; websocket; credential session",
            "/api/catalogue -> http://127.0.0.1:9002/ (timeout 30 s; access anonymous; methods every method; credential none)",
            "/api/exchanged -> http://127.0.0.1:9003/ (timeout 30 s; access user; methods every method; credential exchange (audience orders-api, scope orders:read))",
        ],
        &[],
    );
    // A policy that cannot mean what it says stops start-up, naming the key.
    for (from, to, key) in [
        (
            "access = \"anonymous\"",
            "access = \"everyone\"",
            "routes[2].access",
        ),
        (
            "methods = [\"GET\", \"POST\"]",
            "methods = [\"get\"]",
            "routes[1].methods",
        ),
        (
            "any_of = [\"admin\"]",
            "any_of = []",
            "routes[1].require[0].any_of",
        ),
        (
            "any_of = [\"admin\"]",
            "all_of = [\"\"]",
            "routes[1].require[0].all_of",
        ),
        (
            "max_age_secs = 300",
            "max_age_secs = 0",
            "routes[1].step_up",
        ),
        // Claim rules on a route anyone may call would mean nothing.
        (
            "websocket = true",
            "websocket = true\naccess = \"optional\"",
            "routes[1].access",
        ),
    ] {
        let contents = format!("{}{}", valid_config(), routes.replace(from, to));
        let output = check_with_flag(&config_file(&contents));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{to}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{key} named in: {stderr}");
    }
}

#[test]
fn check_config_refuses_dpop_false_on_the_sessions_own_token_naming_the_route() {
    let route = "[[routes]]\nprefix = \"/api/legacy\"\nupstream = \"http://127.0.0.1:9001\"\n\
                 [routes.credential]\nkind = \"session\"\ndpop = false\n";
    let with_dpop = |mode: &str| {
        format!(
            "{}{route}",
            valid_config().replace(
                "client_secret = \"file-secret\"",
                &format!("client_secret = \"file-secret\"\ndpop = \"{mode}\"")
            )
        )
    };
    for mode in ["auto", "required"] {
        let output = check_with_flag(&config_file(&with_dpop(mode)));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{mode}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("routes[1].credential.dpop") && stderr.contains("/api/legacy"),
            "the key and the route named: {stderr}"
        );
    }
    // With DPoP off the session's tokens are Bearer tokens: nothing to refuse.
    assert_succeeded(&check_with_flag(&config_file(&with_dpop("off"))));
}

#[test]
fn bad_settings_stop_start_up_with_one_line_naming_the_key_and_exit_code_2() {
    let cases = [
        (
            valid_config().replace("client_secret = \"file-secret\"", ""),
            "oidc.client_secret",
        ),
        (
            valid_config().replace(KEY, "c2hvcnQ="),
            "session.encryption_key",
        ),
        (
            valid_config().replace("\"/api/orders\"", "\"orders\""),
            "routes[0].prefix",
        ),
        (
            valid_config().replace("127.0.0.1:8080", "not-an-address"),
            "listen",
        ),
        ("this is not toml".to_owned(), ""),
    ];
    for (contents, key) in cases {
        let output = check_with_flag(&config_file(&contents));
        assert_eq!(output.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
        assert!(lines[0].contains(key), "{key} named in: {stderr}");
        assert!(!stderr.contains("panicked"));
        assert!(!stderr.contains("file-secret"), "secrets are never echoed");
    }
    let missing = vestibule()
        .args(["--config", "/nonexistent/vestibule.toml", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn environment_overrides_the_file_and_can_supply_missing_keys() {
    let file = config_file(&valid_config().replace("client_secret = \"file-secret\"", ""));
    let output = check_with_env(&file, &[("VESTIBULE_OIDC__CLIENT_SECRET", "from-env")]);
    assert_succeeded(&output);

    // A secret that looks like a number or a boolean is still a string.
    for secret in ["123456", "true", "1.50"] {
        let output = check_with_env(&file, &[("VESTIBULE_OIDC__CLIENT_SECRET", secret)]);
        assert!(
            output.status.success(),
            "{secret}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    for (name, value, key) in [
        (
            "VESTIBULE_SESSION__IDLE_TIMEOUT_SECS",
            "soon",
            "session.idle_timeout_secs",
        ),
        (
            "VESTIBULE_SESSION__REDIS_URL",
            "not a url",
            "session.redis_url",
        ),
    ] {
        let output = check_with_env(
            &file,
            &[("VESTIBULE_OIDC__CLIENT_SECRET", "from-env"), (name, value)],
        );
        assert_eq!(output.status.code(), Some(2), "{name}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(key),
            "{name}"
        );
    }
}

/// Exactly what Kubernetes injects into every pod of a namespace with a Service named
/// `vestibule` (ClusterIP 10.96.0.12, one port 8080 named `http`).
const KUBERNETES_SERVICE_LINKS: [(&str, &str); 8] = [
    ("VESTIBULE_SERVICE_HOST", "10.96.0.12"),
    ("VESTIBULE_SERVICE_PORT", "8080"),
    ("VESTIBULE_SERVICE_PORT_HTTP", "8080"),
    ("VESTIBULE_PORT", "tcp://10.96.0.12:8080"),
    ("VESTIBULE_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
    ("VESTIBULE_PORT_8080_TCP_PROTO", "tcp"),
    ("VESTIBULE_PORT_8080_TCP_PORT", "8080"),
    ("VESTIBULE_PORT_8080_TCP_ADDR", "10.96.0.12"),
];

#[test]
fn secrets_can_come_from_files_named_in_the_environment_but_never_twice() {
    let file = config_file(
        &valid_config()
            .replace("client_secret = \"file-secret\"", "")
            .replace(&format!("encryption_key = \"{KEY}\""), ""),
    );
    // As Kubernetes mounts a Secret: one file per value, often with a trailing newline.
    let client_secret = config_file("mounted-client-secret\n");
    let encryption_key = config_file(&format!("{KEY}\n"));
    let client_secret_path = client_secret.path.to_str().unwrap();
    let encryption_key_path = encryption_key.path.to_str().unwrap();
    let from_files = [
        ("VESTIBULE_OIDC__CLIENT_SECRET_FILE", client_secret_path),
        (
            "VESTIBULE_SESSION__ENCRYPTION_KEY_FILE",
            encryption_key_path,
        ),
    ];
    let output = check_with_env(&file, &from_files);
    assert_succeeded(&output);

    let mut both = from_files.to_vec();
    both.push(("VESTIBULE_OIDC__CLIENT_SECRET", "also-a-value"));
    let output = check_with_env(&file, &both);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("oidc.client_secret_file"), "{stderr}");

    let bad_key = config_file("not-a-key-at-all\n");
    let output = check_with_env(
        &file,
        &[
            ("VESTIBULE_OIDC__CLIENT_SECRET_FILE", client_secret_path),
            (
                "VESTIBULE_SESSION__ENCRYPTION_KEY_FILE",
                bad_key.path.to_str().unwrap(),
            ),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("session.encryption_key"), "{stderr}");
    for secret in ["not-a-key-at-all", "mounted-client-secret"] {
        assert!(!stderr.contains(secret), "a secret was echoed: {stderr}");
    }

    let output = check_with_env(
        &file,
        &[
            ("VESTIBULE_OIDC__CLIENT_SECRET_FILE", "/nonexistent/secret"),
            (
                "VESTIBULE_SESSION__ENCRYPTION_KEY_FILE",
                encryption_key_path,
            ),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("oidc.client_secret_file") && stderr.contains("/nonexistent/secret"),
        "{stderr}"
    );
}

#[test]
fn kubernetes_service_variables_do_not_stop_start_up_or_warn() {
    let mut env = KUBERNETES_SERVICE_LINKS.to_vec();
    // Other tools' variables, nested ones included.
    env.push(("VESTIBULE_TOOL__SETTING", "1"));
    env.push(("VESTIBULE_A__B__C", "x"));
    let output = check_with_env(&config_file(&valid_config()), &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("VESTIBULE_"),
        "platform variables are not reported as typos: {stderr}"
    );
}

#[test]
fn a_misspelt_variable_is_ignored_with_one_warning_naming_it_never_its_value() {
    let file = config_file(&valid_config());
    let output = check_with_env(
        &file,
        &[
            (
                "VESTIBULE_OIDC__CLIENT_SECRT",
                "value-that-must-not-be-logged",
            ),
            ("VESTIBULE_PORT", "tcp://10.96.0.12:8080"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning: {stderr}");
    assert!(
        warnings[0].contains("VESTIBULE_OIDC__CLIENT_SECRT"),
        "{stderr}"
    );
    assert!(
        warnings[0].contains("VESTIBULE_OIDC__CLIENT_SECRET"),
        "suggests the real key: {stderr}"
    );
    assert!(
        !stderr.contains("value-that-must-not-be-logged"),
        "{stderr}"
    );

    // When the misspelt variable was meant to supply a required key, the error says so.
    let without_secret =
        config_file(&valid_config().replace("client_secret = \"file-secret\"", ""));
    let output = check_with_env(
        &without_secret,
        &[(
            "VESTIBULE_OIDC__CLIENT_SECRT",
            "value-that-must-not-be-logged",
        )],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("oidc.client_secret") && stderr.contains("VESTIBULE_OIDC__CLIENT_SECRT"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("value-that-must-not-be-logged"),
        "{stderr}"
    );
}

#[test]
fn unknown_keys_in_the_file_stay_fatal() {
    let file = config_file(&valid_config().replace("[session]", "[session]\nport = 8080"));
    let output = check_with_env(&file, &KUBERNETES_SERVICE_LINKS);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("session.port"), "{stderr}");
}

/// Starts the binary with `env` and returns its standard error up to the "listening" line
/// (written to a pipe, as under a process supervisor or a container runtime).
fn stderr_until_listening(env: &[(&str, &str)]) -> String {
    use std::io::{BufRead, BufReader};
    let port = crate::harness::free_port();
    // No Redis and an unreachable provider: start-up logs warnings, then listens.
    let config =
        config_file(&valid_config().replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")));
    let mut command = vestibule();
    command
        .arg("--config")
        .arg(&config.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        let done = line.contains("vestibule listening");
        line.clear();
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("vestibule listening"),
        "the binary did not start: {seen}"
    );
    seen
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let stderr = stderr_until_listening(&[]);
    assert!(stderr.lines().count() >= 2, "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape in piped logs: {stderr:?}"
    );
}

#[test]
fn json_log_format_gives_one_object_per_line() {
    let stderr = stderr_until_listening(&[("VESTIBULE_LOG_FORMAT", "json")]);
    assert!(stderr.lines().count() >= 2, "{stderr}");
    for line in stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not one JSON object per line ({error}): {line:?}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
}

/// A config file in the temp dir, removed on drop.
mod tempfile_path {
    pub struct TempFile {
        pub path: std::path::PathBuf,
    }

    impl TempFile {
        pub fn new(contents: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "vestibule-cli-{}-{}.toml",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::write(&path, contents).unwrap();
            Self { path }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
