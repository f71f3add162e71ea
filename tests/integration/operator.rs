//! The operator's kill switch, through the real binary: `vestibule sessions count` and
//! `vestibule sessions revoke --sub …` with the deployment's configuration, against the Redis
//! two running instances share. Nothing of it listens: it is a command, not an endpoint.
//!
//! Each command runs with nothing in its environment but what the test gives it, as
//! `kubectl exec deploy/vestibule -- vestibule sessions revoke --sub …` runs with the
//! container's environment only.

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Browser, TestApp, free_port, wait_for};

/// How a command is given the deployment's configuration file.
#[derive(Clone, Copy, Debug)]
enum Config {
    /// `VESTIBULE_CONFIG`, as a Deployment sets it once for the server and `kubectl exec` alike:
    /// the command line is exactly `vestibule <args>`.
    FromEnvironment,
    /// `vestibule --config FILE <args>`.
    FlagFirst,
    /// `vestibule <args> --config FILE`.
    FlagLast,
    /// None at all (a Deployment that names the file only in the server's arguments).
    None,
}

/// Runs `vestibule <args>` with the app's configuration given as `config` says, and nothing
/// else in its environment.
fn vestibule(app: &TestApp, config: Config, args: &[&str]) -> Output {
    run(&app.config_listening_on(free_port()), config, args)
}

/// Runs `vestibule --config <a file holding config> <args>`, with nothing else in its
/// environment.
pub(crate) fn vestibule_configured(config: &str, args: &[&str]) -> Output {
    run(config, Config::FlagFirst, args)
}

/// Runs `vestibule <args>` with `config_text` in a file given as `config` says.
fn run(config_text: &str, config: Config, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("vestibule-operator-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vestibule.toml");
    std::fs::write(&file, config_text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_vestibule"));
    command.env_clear();
    match config {
        Config::FromEnvironment => {
            command.env("VESTIBULE_CONFIG", &file).args(args);
        }
        Config::FlagFirst => {
            command.arg("--config").arg(&file).args(args);
        }
        Config::FlagLast => {
            command.args(args).arg("--config").arg(&file);
        }
        Config::None => {
            command.args(args);
        }
    }
    let output = command.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    output
}

/// The JSON report of a command that succeeded.
pub(crate) fn report(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "the command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "stdout is one JSON report: {:?}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test]
async fn the_operator_counts_sessions_and_ends_every_session_of_a_subject_on_every_instance() {
    let mut app = TestApp::start().await;
    let other_instance = app.start_another_instance().await;
    let laptop = Browser::new(&app.url);
    laptop.login("alice").await;
    let phone = Browser::new(&other_instance);
    phone.login("alice").await;
    let bob = Browser::new(&app.url);
    bob.login("bob").await;
    // The phone's session is cached by the other instance.
    assert_eq!(phone.user().await.0, StatusCode::OK);

    let counted = report(&vestibule(&app, Config::FlagFirst, &["sessions", "count"]));
    assert_eq!(counted["live_sessions"], 3, "{counted}");
    let counted = report(&vestibule(
        &app,
        Config::FlagLast,
        &["sessions", "count", "--sub", "alice"],
    ));
    assert_eq!(
        (
            counted["live_sessions"].as_u64(),
            counted["sessions_of_sub"].as_u64()
        ),
        (Some(3), Some(2)),
        "{counted}"
    );

    // The README's invocation, as `kubectl exec` runs it in a pod whose Deployment sets
    // VESTIBULE_CONFIG.
    let revoking = vestibule(
        &app,
        Config::FromEnvironment,
        &["sessions", "revoke", "--sub", "alice"],
    );
    let revoked = report(&revoking);
    assert_eq!(revoked["ended"], 2, "{revoked}");
    // The audit trail has the operator's act, without the subject in clear.
    let stderr = String::from_utf8_lossy(&revoking.stderr);
    let audited: Value = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["target"] == "vestibule::audit")
        .unwrap_or_else(|| panic!("no audit event: {stderr}"));
    assert_eq!(audited["event"], "sessions_ended_by_operator");
    assert_eq!(audited["sessions_ended"], 2);
    assert!(
        audited["subject"].as_str().is_some_and(|s| s.len() == 22),
        "{audited}"
    );
    crate::harness::logs::assert_no_secrets(&stderr, &[], "the operator command's log");
    assert_eq!(revoked["refresh_tokens_revoked"], 2, "{revoked}");
    assert_eq!(revoked["refresh_tokens_not_revoked"], 0, "{revoked}");
    assert_eq!(laptop.user().await.0, StatusCode::UNAUTHORIZED);
    wait_for(
        "the other instance to drop alice's session",
        std::time::Duration::from_secs(2),
        || async { (phone.user().await.0 == StatusCode::UNAUTHORIZED).then_some(()) },
    )
    .await;
    assert_eq!(bob.user().await.0, StatusCode::OK, "bob's session stays");
    assert_eq!(
        app.provider.stored("RefreshToken").await,
        1,
        "only bob's grant is left"
    );
    let counted = report(&vestibule(
        &app,
        Config::FromEnvironment,
        &["sessions", "count", "--sub", "alice"],
    ));
    assert_eq!(
        (
            counted["live_sessions"].as_u64(),
            counted["sessions_of_sub"].as_u64()
        ),
        (Some(1), Some(0)),
        "{counted}"
    );
    // Again: nothing left to end, and that is not an error.
    let again = report(&vestibule(
        &app,
        Config::FlagLast,
        &["sessions", "revoke", "--sub", "alice"],
    ));
    assert_eq!(again["ended"], 0);
}

#[tokio::test]
async fn nothing_on_the_public_listener_ends_another_users_sessions() {
    let app = TestApp::start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let bob = Browser::new(&app.url);
    bob.login("bob").await;
    // Bob, with his own valid session and the anti-forgery header, tries what an admin
    // endpoint would look like: none exists, and alice's session stays.
    for (method, path) in [
        (reqwest::Method::POST, "/api/auth/sessions/revoke?sub=alice"),
        (reqwest::Method::DELETE, "/api/auth/sessions?sub=alice"),
        (reqwest::Method::DELETE, "/api/auth/admin/sessions/alice"),
        (reqwest::Method::POST, "/api/auth/admin/sessions/revoke"),
        (reqwest::Method::GET, "/api/auth/admin/sessions/count"),
    ] {
        let response = bob
            .http()
            .request(method.clone(), bob.url(path))
            .header("x-csrf", "1")
            .form(&[("sub", "alice")])
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error() || response.status() == StatusCode::OK,
            "{method} {path}: {}",
            response.status()
        );
        assert_eq!(
            alice.user().await.0,
            StatusCode::OK,
            "{method} {path} ended nothing of alice's"
        );
    }
    // Bob's own "end all others" ended only his own (none).
    assert_eq!(bob.user().await.0, StatusCode::OK);
}

#[tokio::test]
async fn session_commands_explain_what_they_need() {
    let app = TestApp::builder().in_memory().start().await;
    let output = vestibule(&app, Config::FlagFirst, &["sessions", "count"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("session.redis_url"), "{stderr}");
    let output = vestibule(&app, Config::FlagFirst, &["sessions", "revoke"]);
    assert_eq!(output.status.code(), Some(2), "clap: --sub is required");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--sub"));
    // No configuration at all (the file named only in the server's arguments): one line
    // saying how to give it.
    let output = vestibule(
        &app,
        Config::None,
        &["sessions", "revoke", "--sub", "alice"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--config FILE or VESTIBULE_CONFIG"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_configuration_file_is_found_wherever_the_operator_names_it() {
    let app = TestApp::start().await;
    Browser::new(&app.url).login("alice").await;
    for config in [Config::FromEnvironment, Config::FlagFirst, Config::FlagLast] {
        for args in [
            &["sessions", "count", "--sub", "alice"][..],
            &["sessions", "count"][..],
        ] {
            let counted = report(&vestibule(&app, config, args));
            assert_eq!(
                counted["live_sessions"], 1,
                "{config:?} {args:?}: {counted}"
            );
        }
    }
}

#[tokio::test]
async fn the_kill_switch_ends_sessions_an_earlier_release_filed_under_unkeyed_names() {
    let app = TestApp::start().await;
    let browsers = crate::my_sessions::sessions_across_an_upgrade(&app, "alice").await;
    let counted = report(&vestibule(
        &app,
        Config::FromEnvironment,
        &["sessions", "count", "--sub", "alice"],
    ));
    assert_eq!(counted["sessions_of_sub"], 3, "{counted}");
    let revoked = report(&vestibule(
        &app,
        Config::FromEnvironment,
        &["sessions", "revoke", "--sub", "alice"],
    ));
    assert_eq!(revoked["ended"], 3, "{revoked}");
    assert_eq!(revoked["refresh_tokens_revoked"], 3, "{revoked}");
    for browser in &browsers {
        assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
    }
}
