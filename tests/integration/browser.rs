//! The built-in demo SPA in a real browser: Chromium (the OS package) driven by
//! `tests/e2e/demo-login.mjs` (playwright-core, pinned in tests/e2e). Login at the provider,
//! claims, an API call, a transparent refresh after the access token expired, no token reachable
//! from the page, logout through the provider.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::TestApp;

fn e2e_dir() -> PathBuf {
    crate::harness::node_project("e2e")
}

/// Installs tests/e2e's Node packages from the lockfile once, if they are missing.
/// (playwright-core never downloads a browser; Chromium comes from the OS.)
fn ensure_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| crate::harness::npm_ci_unless_installed("e2e", "playwright-core"));
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

#[tokio::test]
async fn demo_spa_login_api_refresh_and_logout_in_chromium() {
    ensure_installed();
    let chromium = chromium();
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

    // Async, so the in-process Vestibule and upstream keep serving while the browser runs.
    let run = tokio::process::Command::new("node")
        .arg(e2e_dir().join("demo-login.mjs"))
        .current_dir(e2e_dir())
        .env("VESTIBULE_URL", &app.url)
        .env("E2E_OUTPUT_DIR", &output)
        .env("E2E_USER", "alice")
        .env("CHROMIUM_PATH", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let result = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("demo-login.mjs did not finish within 150 s")
        .expect("node must be installed to run the browser test");
    let stderr = String::from_utf8_lossy(&result.stderr);
    eprintln!("--- demo-login.mjs ---\n{stderr}");
    assert!(
        result.status.success(),
        "demo-login.mjs failed ({}):\n{stderr}{}",
        result.status,
        String::from_utf8_lossy(&result.stdout)
    );

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
