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

#[test]
fn check_config_accepts_a_valid_file() {
    let output = check_with_flag(&config_file(&valid_config()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

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
