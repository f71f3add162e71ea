//! The browser helper (`/api/auth/client.js`) and its TypeScript declarations
//! (`/api/auth/client.d.ts`): the declarations checked by the real TypeScript compiler
//! (`tests/e2e/client-types.mjs`), and the helper in Chromium (`tests/e2e/client-*.mjs`)
//! against the real Vestibule: how `vestibule.fetch` answers a step-up and a refusal, and
//! `vestibule.onExpiring` before the idle and the absolute end.

use std::process::Stdio;
use std::time::Duration;

use crate::browser::{ensure_installed, run_script_at};
use crate::harness::TestApp;

#[tokio::test]
async fn client_types_are_served_and_pass_the_typescript_compiler_in_strict_mode() {
    let app = TestApp::start().await;
    ensure_installed();
    let dir = crate::harness::node_project("e2e");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(dir.join("client-types.mjs"))
            .current_dir(&dir)
            .env("VESTIBULE_URL", &app.url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("client-types.mjs finished within 120 s")
    .expect("node must be installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- client-types.mjs ---\n{stderr}");
    assert!(
        output.status.success(),
        "client-types.mjs failed ({}):\n{stderr}",
        output.status
    );
}

#[tokio::test]
async fn fetch_follows_a_step_up_and_surfaces_a_refusal_without_navigating_in_chromium() {
    let app = TestApp::start().await;
    run_script_at(&app.url, "client-answers.mjs", &[]).await;
    let paths: Vec<String> = app
        .upstream
        .seen()
        .into_iter()
        .map(|seen| seen.path_and_query)
        .collect();
    for refused in ["/v1/step-up-required", "/v1/insufficient-permissions"] {
        assert!(
            paths.iter().any(|path| path == refused),
            "the upstream answered {refused}: {paths:?}"
        );
    }
}

#[tokio::test]
async fn on_expiring_warns_before_the_idle_and_the_absolute_end_in_chromium() {
    const IDLE: u64 = 10;
    const ABSOLUTE: u64 = 30;
    let app = TestApp::builder()
        .idle_timeout(IDLE)
        .absolute_timeout(ABSOLUTE)
        .start()
        .await;
    run_script_at(
        &app.url,
        "client-expiry.mjs",
        &[
            ("E2E_IDLE_SECS", IDLE.to_string().as_ref()),
            ("E2E_ABSOLUTE_SECS", ABSOLUTE.to_string().as_ref()),
            ("E2E_WARN_SECS", "4".as_ref()),
            ("E2E_TIMEOUT_SECS", "120".as_ref()),
        ],
    )
    .await;
}
