//! The operator's kill switch, through the real binary: `vestibule sessions count` and
//! `vestibule sessions revoke --sub …` with the deployment's configuration, against the Redis
//! two running instances share. Nothing of it listens: it is a command, not an endpoint.

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Browser, TestApp, free_port, wait_for};

/// Runs `vestibule --config <app's config> <args>`, with no `VESTIBULE_*` from the test's
/// own environment.
fn vestibule(app: &TestApp, args: &[&str]) -> Output {
    vestibule_configured(&app.config_listening_on(free_port()), args)
}

/// Runs `vestibule --config <a file holding config> <args>`, with no `VESTIBULE_*` from the
/// test's own environment.
pub(crate) fn vestibule_configured(config: &str, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("vestibule-operator-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vestibule.toml");
    std::fs::write(&file, config).unwrap();
    let config = file;
    let mut command = Command::new(env!("CARGO_BIN_EXE_vestibule"));
    for (name, _) in std::env::vars() {
        if name.starts_with("VESTIBULE_") {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .unwrap();
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

    let counted = report(&vestibule(&app, &["sessions", "count"]));
    assert_eq!(counted["live_sessions"], 3, "{counted}");
    let counted = report(&vestibule(&app, &["sessions", "count", "--sub", "alice"]));
    assert_eq!(
        (
            counted["live_sessions"].as_u64(),
            counted["sessions_of_sub"].as_u64()
        ),
        (Some(3), Some(2)),
        "{counted}"
    );

    let revoking = vestibule(&app, &["sessions", "revoke", "--sub", "alice"]);
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
    let counted = report(&vestibule(&app, &["sessions", "count", "--sub", "alice"]));
    assert_eq!(
        (
            counted["live_sessions"].as_u64(),
            counted["sessions_of_sub"].as_u64()
        ),
        (Some(1), Some(0)),
        "{counted}"
    );
    // Again: nothing left to end, and that is not an error.
    let again = report(&vestibule(&app, &["sessions", "revoke", "--sub", "alice"]));
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
    let output = vestibule(&app, &["sessions", "count"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("session.redis_url"), "{stderr}");
    let output = vestibule(&app, &["sessions", "revoke"]);
    assert_eq!(output.status.code(), Some(2), "clap: --sub is required");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--sub"));
}

#[tokio::test]
async fn the_kill_switch_ends_sessions_an_earlier_release_filed_under_unkeyed_names() {
    let app = TestApp::start().await;
    let earlier = [Browser::new(&app.url), Browser::new(&app.url)];
    for browser in &earlier {
        browser.login("alice").await;
    }
    crate::my_sessions::file_as_an_earlier_release(&app, "alice", &[&earlier[0], &earlier[1]])
        .await;
    let since = Browser::new(&app.url);
    since.login("alice").await;
    let counted = report(&vestibule(&app, &["sessions", "count", "--sub", "alice"]));
    assert_eq!(counted["sessions_of_sub"], 3, "{counted}");
    let revoked = report(&vestibule(&app, &["sessions", "revoke", "--sub", "alice"]));
    assert_eq!(revoked["ended"], 3, "{revoked}");
    assert_eq!(revoked["refresh_tokens_revoked"], 3, "{revoked}");
    for browser in earlier.iter().chain([&since]) {
        assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
    }
}
