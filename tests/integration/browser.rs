//! The built-in demo SPA in a real browser: Chromium (the OS package) driven by
//! `tests/e2e/demo-login.mjs` (playwright-core, pinned in tests/e2e). Login at the provider,
//! claims, an API call, a transparent refresh after the access token expired, no token reachable
//! from the page, logout through the provider.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{Browser, TestApp};

fn e2e_dir() -> PathBuf {
    crate::harness::node_project("e2e")
}

/// Installs tests/e2e's Node packages from the lockfile once, if they are missing.
/// (playwright-core never downloads a browser; Chromium comes from the OS.)
pub fn ensure_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        for package in ["playwright-core", "typescript"] {
            crate::harness::npm_ci_unless_installed("e2e", package);
        }
    });
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "no Chromium at {}: install it with `apt-get install -y chromium chromium-driver` \
         (or point CHROMIUM_PATH at a Chromium binary)",
        path.display()
    );
    path
}

/// `<target>/e2e`, next to the `tmp` directory Cargo gives integration tests.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `tests/e2e/<script>` against `app` in Chromium; returns its standard output.
async fn run_script(app: &TestApp, script: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    run_script_at(&app.url, script, env).await
}

/// Runs `tests/e2e/<script>` in Chromium against the Vestibule at `url` (as `alice` unless
/// `env` sets `E2E_USER`); returns its standard output.
pub async fn run_script_at(url: &str, script: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    ensure_installed();
    let chromium = chromium();
    let mut command = tokio::process::Command::new("node");
    command
        .arg(e2e_dir().join(script))
        .current_dir(e2e_dir())
        .env("VESTIBULE_URL", url)
        .env("E2E_USER", "alice")
        .env("CHROMIUM_PATH", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    // Async, so the in-process Vestibule and upstream keep serving while the browser runs.
    let result = tokio::time::timeout(Duration::from_secs(150), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 150 s"))
        .expect("node must be installed to run the browser test");
    let stderr = String::from_utf8_lossy(&result.stderr);
    eprintln!("--- {script} ---\n{stderr}");
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(
        result.status.success(),
        "{script} failed ({}):\n{stderr}{stdout}",
        result.status
    );
    stdout
}

#[tokio::test]
async fn logging_in_again_ends_the_previous_session_across_sites_in_chromium() {
    let app = TestApp::builder().provider_on_another_site().start().await;
    assert!(app.provider.issuer.starts_with("http://localhost:"));
    let stdout = run_script(&app, "relogin.mjs", &[]).await;
    let cookies: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let first = cookies["first"].as_str().unwrap();

    let stale = app.browser();
    stale.set_cookie("vestibule", first);
    assert_eq!(
        stale.user().await.0,
        reqwest::StatusCode::UNAUTHORIZED,
        "the first session ended"
    );
    assert_eq!(
        app.redis().session_keys().await.len(),
        1,
        "only the second session is stored"
    );
    // The same user's new login shares the provider's grant with the first session: its
    // refresh token is not revoked (RFC 7009 §2.1 would revoke the new tokens with it), and the
    // second session's token works.
    let second = Browser::with_session(&app.url, cookies["second"].as_str().unwrap());
    assert_eq!(
        second.api_get("/api/orders/1").await.status(),
        reqwest::StatusCode::OK,
        "the second session's access token is alive"
    );
    assert_eq!(
        app.provider.stats().await["revocations"].as_u64().unwrap(),
        0
    );
}

#[tokio::test]
async fn demo_spa_login_api_refresh_and_logout_in_chromium() {
    // Access tokens live 4 s, so the script sees one expire and Vestibule refresh it.
    let app = TestApp::builder()
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let output = output_dir();
    for stale in ["logged-in.png", "browser-state.json"] {
        let _ = std::fs::remove_file(output.join(stale));
    }
    eprintln!(
        "browser test output (screenshot, page state): {}",
        output.display()
    );

    run_script(
        &app,
        "demo-login.mjs",
        &[("E2E_OUTPUT_DIR", output.as_os_str())],
    )
    .await;

    let screenshot = output.join("logged-in.png");
    let size = std::fs::metadata(&screenshot)
        .unwrap_or_else(|error| panic!("no screenshot at {}: {error}", screenshot.display()))
        .len();
    assert!(
        size > 10 * 1024,
        "the screenshot {} is only {size} bytes",
        screenshot.display()
    );

    // The upstream saw real bearer tokens, two different ones (the second call came after a
    // refresh), and none of them ever reached anything the page can read.
    let bearers: Vec<String> = app
        .upstream
        .seen()
        .into_iter()
        .filter(|seen| seen.token_active)
        .filter_map(|seen| seen.bearer)
        .collect();
    assert!(
        bearers.len() >= 2,
        "the upstream saw {} authorised calls",
        bearers.len()
    );
    assert_ne!(
        bearers.first(),
        bearers.last(),
        "the call after expiry used a new access token"
    );
    assert!(
        app.provider.refresh_grants().await >= 1,
        "Vestibule refreshed"
    );
    let state = std::fs::read_to_string(output.join("browser-state.json"))
        .expect("demo-login.mjs saved the page's state");
    for token in &bearers {
        assert!(
            !state.contains(token.as_str()),
            "an access token is reachable from the page (DOM, storage or cookies)"
        );
    }
}

#[tokio::test]
async fn the_demo_page_lists_your_sessions_and_ends_the_others_in_chromium() {
    let app = TestApp::start().await;
    let laptop = crate::harness::Browser::with_user_agent(
        &app.url,
        "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    );
    laptop.login("alice").await;
    run_script(
        &app,
        "my-sessions.mjs",
        &[("E2E_OTHER_DEVICE", std::ffi::OsStr::new("Firefox on Linux"))],
    )
    .await;
    assert_eq!(
        laptop.user().await.0,
        reqwest::StatusCode::UNAUTHORIZED,
        "the laptop's session was ended from the page"
    );
}
