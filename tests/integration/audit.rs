//! The audit trail, through the real binary and its JSON log: every authentication event is a
//! line on the `vestibule::audit` target with the request's id, the client's network, a keyed
//! hash of the user (or the `sub` itself when the operator opts in) and a reason; never an
//! identity in clear by default, never a token (the harness checks every log for secrets).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::binary::{VestibuleProcess, binary_in_front};
use crate::harness::{Browser, TestApp, wait_for};

/// An app whose public URL is the real binary's (so browsers log in through the binary), with
/// `audit_toml` as its `[audit]` section and 3-second access tokens.
async fn stack(audit_toml: &str) -> (TestApp, VestibuleProcess, std::path::PathBuf) {
    let builder = TestApp::builder()
        .access_token_ttl(3)
        .extra_toml(&format!("\n[audit]\n{audit_toml}\n"));
    binary_in_front(builder, |config| config).await
}

/// The binary's audit events so far.
pub(crate) fn audit_events(binary: &VestibuleProcess) -> Vec<Value> {
    binary
        .log_events()
        .into_iter()
        .filter(|event| event["target"] == "vestibule::audit")
        .collect()
}

/// Waits for the `nth` (from 1) audit event named `name`.
async fn nth_event(binary: &VestibuleProcess, name: &str, nth: usize) -> Value {
    wait_for(
        &format!("audit event {name} #{nth}"),
        std::time::Duration::from_secs(10),
        || async {
            audit_events(binary)
                .into_iter()
                .filter(|event| event["event"] == name)
                .nth(nth - 1)
        },
    )
    .await
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_authentication_event_is_audited_with_its_request_network_and_a_keyed_subject() {
    let (app, binary, dir) =
        stack("subject_key = \"an audit key that is long enough: 0123456789\"").await;
    let alice = Browser::new(&binary.base);

    // A callback with a state nobody issued.
    let forged = alice.forged_callback().await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let failed = nth_event(&binary, "login_failed", 1).await;
    assert_eq!(failed["reason"], "state_mismatch");
    assert_eq!(failed["request_id"], request_id(&forged));
    assert_eq!(failed["client_network"], "127.0.0.0/24");
    assert!(failed["subject"].is_null(), "no user yet: {failed}");
    assert!(failed["timestamp"].is_string() && failed["level"] == "WARN");

    // The user cancels at the provider.
    let authorization = alice.begin_login(None).await;
    let state = authorization
        .query_pairs()
        .find(|(name, _)| name == "state")
        .unwrap()
        .1
        .into_owned();
    let cancelled = alice
        .get(format!(
            "{}/api/auth/callback?error=access_denied&state={state}",
            binary.base
        ))
        .await;
    assert_eq!(cancelled.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        nth_event(&binary, "login_failed", 2).await["reason"],
        "user_cancelled"
    );

    // Logins: the same user gets the same pseudonym, another user another one.
    alice.login("alice").await;
    let login = nth_event(&binary, "login_succeeded", 1).await;
    let alice_subject = login["subject"].as_str().unwrap().to_owned();
    assert_eq!(alice_subject.len(), 22, "128-bit base64url: {login}");
    assert!(
        login["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
    );
    assert!(login["session"].is_string());
    let bob = Browser::new(&binary.base);
    bob.login("bob").await;
    let bob_subject = nth_event(&binary, "login_succeeded", 2).await["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(bob_subject, alice_subject);

    // The provider refuses alice's next refresh: the session ends.
    app.provider
        .fail_next_refresh("invalid_grant", "grant revoked")
        .await;
    alice.wait_past_access_token_expiry().await;
    let call = alice.api_get("/api/orders/x").await;
    assert_eq!(call.status(), StatusCode::UNAUTHORIZED);
    let refresh = nth_event(&binary, "refresh_failed", 1).await;
    assert_eq!(
        (&refresh["reason"], &refresh["outcome"]),
        (&json!("refresh_rejected"), &json!("session_ended"))
    );
    assert_eq!(refresh["subject"], alice_subject.as_str());
    assert_eq!(
        refresh["request_id"],
        request_id(&call),
        "the triggering call's id"
    );

    // Alice again, on two browsers; she ends the other one, then logs out.
    alice.login("alice").await;
    let phone = Browser::new(&binary.base);
    phone.login("alice").await;
    let ended = alice.api_delete("/api/auth/sessions").await;
    assert_eq!(ended.status(), StatusCode::OK);
    let by_user = nth_event(&binary, "sessions_ended_by_user", 1).await;
    assert_eq!(
        (&by_user["reason"], &by_user["sessions_ended"]),
        (&json!("other_sessions"), &json!(1))
    );
    assert_eq!(by_user["subject"], alice_subject.as_str());
    assert_eq!(alice.logout().await.0, StatusCode::OK);
    let logout = nth_event(&binary, "logout", 1).await;
    assert_eq!(
        (&logout["reason"], &logout["subject"]),
        (&json!("logout"), &json!(alice_subject))
    );

    // The provider signs bob out through the back channel.
    let token = app.provider.logout_token_for_sub("bob", "audit-1").await;
    let posted = reqwest::Client::new()
        .post(format!("{}/api/auth/backchannel-logout", binary.base))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let backchannel = nth_event(&binary, "backchannel_logout", 1).await;
    assert_eq!(
        (&backchannel["subject"], &backchannel["sessions_ended"]),
        (&json!(bob_subject), &json!(1))
    );

    for event in audit_events(&binary) {
        let line = event.to_string();
        assert!(
            !line.contains("alice") && !line.contains("\"bob"),
            "no identity in clear: {line}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn subjects_are_in_clear_only_when_the_operator_opts_in() {
    let (_app, binary, dir) = stack("subject = \"clear\"").await;
    let alice = Browser::new(&binary.base);
    alice.login("alice").await;
    assert_eq!(
        nth_event(&binary, "login_succeeded", 1).await["subject"],
        "alice"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_log_check_knows_the_scenarios_secrets_and_catches_a_leak() {
    let app = TestApp::start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    assert_eq!(
        alice.api_get("/api/orders/x").await.status(),
        StatusCode::OK
    );
    let issued = app.provider.issued_secrets();
    let seen = app.upstream.seen()[0]
        .bearer
        .clone()
        .expect("the upstream saw a token");
    assert!(issued.contains(&seen), "the provider lists what it issued");
    assert!(
        issued.len() >= 3,
        "code, access and refresh token: {issued:?}"
    );
    // A leak, through Vestibule's own log layers, is caught.
    let leaked = crate::harness::logs::written_by_vestibules_layers(|| {
        tracing::info!(target: "vestibule::http", "oops {seen}");
    });
    let caught = std::panic::catch_unwind(|| {
        crate::harness::logs::assert_no_secrets(&leaked, &[], "this test");
    });
    assert!(caught.is_err(), "the leak was noticed: {leaked}");
}
