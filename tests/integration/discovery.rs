//! Discovery while the provider fails or stalls, through a front the test switches (the real
//! binary, for a log of its own): attempts are paced however many requests want one (counted
//! at the provider), no request waits for an attempt a stranger started, logins work again as
//! soon as the provider is back, and the credentials in `oidc.discovery_url` are used but
//! never logged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::binary::VestibuleProcess;
use crate::harness::provider_front::{Mode, ProviderFront};
use crate::harness::{Browser, TestApp, free_port, wait_for};

/// The user name and password in the discovery URL.
const USER: &str = "front-user";
const PASSWORD: &str = "fr0nt-pa55word";

/// How long a request may take when it must not wait for discovery.
const PROMPTLY: Duration = Duration::from_secs(3);

/// A binary instance of `app`'s deployment whose discovery goes through `front`, with
/// credentials in the URL; it logs JSON into a directory of its own.
fn binary_behind(app: &TestApp, front: &ProviderFront) -> (VestibuleProcess, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vestibule-discovery-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let discovery = front.discovery_url(&format!("{USER}:{PASSWORD}"));
    let config = app.config_listening_on(port).replacen(
        "[oidc]\n",
        &format!("[oidc]\ndiscovery_url = \"{discovery}\"\n"),
        1,
    );
    (VestibuleProcess::spawn_logging(&config, port, &dir), dir)
}

/// The binary's log lines at level ERROR.
fn errors(binary: &VestibuleProcess) -> Vec<Value> {
    binary
        .log_events()
        .into_iter()
        .filter(|event| event["level"] == "ERROR")
        .collect()
}

/// The log names the discovery URL without its credentials, and the front got them as
/// Basic authentication.
fn assert_credentials_used_but_never_logged(binary: &VestibuleProcess, front: &ProviderFront) {
    let log = binary.log_text();
    for secret in [USER, PASSWORD] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let basic = {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        format!("Basic {encoded}")
    };
    let authorizations = front.authorizations();
    assert!(!authorizations.is_empty());
    assert!(
        authorizations
            .iter()
            .all(|header| header.as_deref() == Some(basic.as_str())),
        "{authorizations:?}"
    );
}

/// `POST /api/auth/backchannel-logout` at `base`; fails the test if no answer comes promptly.
async fn post_logout_token(base: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .timeout(PROMPTLY)
        .send()
        .await
        .unwrap_or_else(|error| panic!("no prompt answer to a logout token: {error}"));
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A logout token for alice signed by a key the provider never published (a forgery that
/// makes the instance wonder whether the provider's keys changed).
async fn forged_token(app: &TestApp, jti: &str) -> String {
    app.provider
        .logout_token(
            json!({ "alg": "RS256", "typ": "logout+jwt", "kid": "forged" }),
            app.provider.logout_claims(Some("alice"), None, jti),
            "unknown",
        )
        .await
}

#[tokio::test]
async fn forged_logout_tokens_cost_a_failing_provider_one_request_and_never_wait_for_it() {
    let app = TestApp::start().await;
    let front = ProviderFront::start(app.provider.port, Mode::Up).await;
    let (binary, dir) = binary_behind(&app, &front);
    binary.wait_until_ready().await;
    // A login (at the deployment's other instance) makes RS256 an accepted algorithm.
    Browser::new(&app.url).login("alice").await;

    // The provider stalls. Forged tokens ask for its keys again, but a stranger may cause that
    // only ten seconds after the last discovery: until then they are refused as they are.
    front.set(Mode::Hanging);
    let asked_before = front.requests();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut forged = 0;
    let hung = loop {
        forged += 1;
        let token = forged_token(&app, &format!("forged-{forged}")).await;
        let base = binary.base.clone();
        let post = tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/auth/backchannel-logout"))
                .form(&[("logout_token", token.as_str())])
                .send()
                .await
                .unwrap()
                .status()
        });
        let answered = wait_for(
            "a forged token's answer, or the provider asked",
            PROMPTLY,
            || {
                let (finished, asked) = (post.is_finished(), front.requests() > asked_before);
                async move { (finished || asked).then_some(asked) }
            },
        )
        .await;
        if answered {
            break post;
        }
        assert_eq!(post.await.unwrap(), StatusCode::BAD_REQUEST);
        assert!(
            Instant::now() < deadline,
            "the provider was never asked again"
        );
    };
    assert_eq!(front.requests(), asked_before + 1);

    // While that request hangs at the provider, other forged tokens are answered at once
    // (503: the keys cannot be checked now) without asking it again, and logins start at once.
    for more in 0..20 {
        let token = forged_token(&app, &format!("while-hanging-{more}")).await;
        let (status, body) = post_logout_token(&binary.base, &token).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "identity_provider_unavailable", "{body}");
    }
    let login = Browser::new(&binary.base)
        .http()
        .get(format!("{}/api/auth/login", binary.base))
        .timeout(PROMPTLY)
        .send()
        .await
        .expect("a login starts without waiting for the stalled discovery");
    assert!(login.status().is_redirection(), "{}", login.status());
    assert_eq!(front.requests(), asked_before + 1);

    // The provider now fails: the stalled attempt fails, and fifty more forged tokens cost it
    // nothing more, each answered at once; the one attempt is the one error in the log.
    front.set(Mode::Failing);
    assert_eq!(hung.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    for more in 0..50 {
        let token = forged_token(&app, &format!("while-failing-{more}")).await;
        let (status, body) = post_logout_token(&binary.base, &token).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    assert_eq!(
        front.requests(),
        asked_before + 1,
        "one request for 71 forged tokens"
    );
    let errors = errors(&binary);
    assert_eq!(errors.len(), 1, "one error line: {errors:#?}");
    assert_credentials_used_but_never_logged(&binary, &front);
    drop(binary);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn with_the_provider_down_from_the_start_logins_ask_it_rarely_and_work_as_soon_as_it_is_back()
{
    let app = TestApp::start().await;
    let front = ProviderFront::start(app.provider.port, Mode::Failing).await;
    let (binary, dir) = binary_behind(&app, &front);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROMPTLY)
        .build()
        .unwrap();
    let login_start = || {
        let request = http.get(format!("{}/api/auth/login", binary.base));
        async move { request.send().await.unwrap().status() }
    };
    wait_for("the binary to listen", Duration::from_secs(30), || async {
        let healthz = http.get(format!("{}/healthz", binary.base)).send().await;
        healthz.is_ok().then_some(())
    })
    .await;
    wait_for(
        "the start-up discovery",
        Duration::from_secs(10),
        || async { (front.requests() == 1).then_some(()) },
    )
    .await;

    // Thirty users try to log in at once: each is answered promptly, and the provider is asked
    // at most once for all of them.
    let statuses = futures_util::future::join_all((0..30).map(|_| login_start())).await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(front.requests() <= 2, "{} requests", front.requests());
    let errors_now = errors(&binary).len();
    assert!(
        errors_now <= 1,
        "one error line at most: {:#?}",
        errors(&binary)
    );
    let log = binary.log_text();
    assert!(
        log.contains(&format!(
            "127.0.0.1:{}/.well-known/openid-configuration",
            front.port
        )),
        "the discovery URL is named, redacted:\n{log}"
    );

    // The provider is back: logins work again within the longest back-off.
    front.set(Mode::Up);
    let back = Instant::now();
    wait_for(
        "a login to start again",
        Duration::from_secs(15),
        || async { login_start().await.is_redirection().then_some(()) },
    )
    .await;
    assert!(
        back.elapsed() <= Duration::from_secs(12),
        "{:?}",
        back.elapsed()
    );
    assert_credentials_used_but_never_logged(&binary, &front);
    drop(binary);
    let _ = std::fs::remove_dir_all(dir);
}
