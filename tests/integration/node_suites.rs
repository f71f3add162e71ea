//! The Node test suite of a part of the test bed itself (the demo API's token and assertion
//! checks), run as part of `cargo test` so it cannot rot unnoticed. (The test provider's own
//! self-test is heavier and runs before the suite in `.ci/run`, not beside it.)

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Runs `node args…` in `dir` and fails with its output unless it exits 0 within `limit`.
async fn node(dir: &Path, args: &[&str], limit: Duration) {
    let mut command = tokio::process::Command::new("node");
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("node {args:?} did not finish within {limit:?}"))
        .expect("node must be installed");
    assert!(
        output.status.success(),
        "node {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_demo_apis_token_and_assertion_checks_pass_their_own_tests() {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("dev");
    node(
        &dev,
        &["--test", "demo-api.test.mjs"],
        Duration::from_secs(120),
    )
    .await;
}
