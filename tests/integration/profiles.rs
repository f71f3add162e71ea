//! Provider profiles (`oidc.provider`) against the test provider behaving like each provider:
//! what the authorization request asks for, and where a logout sends the browser
//! (RP-initiated, Auth0's legacy `/v2/logout`, Cognito's `/logout`, Google's local logout
//! with revocation, Entra ID's `logout_hint`). Simulations of the providers' documented
//! behaviour, not live tenants.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use crate::harness::binary::VestibuleProcess;
use crate::harness::{Browser, TestApp, free_port, provider, spawn_vestibule, wait_for};

/// The query of `url` as a map (the last value of each name).
fn query_of(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Starts one more Vestibule of `app`'s deployment with `from` replaced by `to` in its
/// configuration; its base URL.
async fn instance_with(
    app: &TestApp,
    from: &str,
    to: &str,
) -> (String, tokio::task::JoinHandle<()>) {
    let port = free_port();
    let config = app.config_listening_on(port);
    assert!(config.contains(from), "the config has no {from:?}");
    let task = spawn_vestibule(&config.replacen(from, to, 1)).await;
    (format!("http://127.0.0.1:{port}"), task)
}

/// Logs `browser` out through `POST /api/auth/logout`: the logout URL it is handed, if any.
async fn logout_url(browser: &Browser) -> Option<Url> {
    let (status, body) = browser.logout().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["end_session_url"]
        .as_str()
        .map(|url| Url::parse(url).unwrap())
}

/// `vestibule --check-config` on `app`'s configuration with its issuer replaced by `issuer`
/// and `oidc_lines` added to `[oidc]`: the `oidc.provider` line of the summary.
fn checked_profile(app: &TestApp, issuer: &str, oidc_lines: &str) -> String {
    let dir = std::env::temp_dir().join(format!("vestibule-profiles-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vestibule.toml");
    let config = app
        .config_listening_on(free_port())
        .replacen(
            &format!("issuer = \"{}\"", app.provider.issuer),
            &format!("issuer = \"{issuer}\""),
            1,
        )
        .replacen("[oidc]\n", &format!("[oidc]\n{oidc_lines}\n"), 1);
    std::fs::write(&path, config).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vestibule"));
    for (name, _) in std::env::vars() {
        if name.starts_with("VESTIBULE_") {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    summary
        .lines()
        .find_map(|line| line.strip_prefix("oidc.provider"))
        .unwrap_or_else(|| panic!("no oidc.provider line in:\n{summary}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_profile_detected_from_the_issuer_is_said_at_start_up_and_by_check_config() {
    let app = TestApp::builder().in_memory().start().await;
    for (issuer, lines, said) in [
        (
            "https://accounts.google.com",
            "",
            "google (detected from the issuer; sets oidc.scopes = openid profile email, \
             oidc.prompt = consent, oidc.extra_auth_params = access_type=offline, oidc.logout = local)",
        ),
        (
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123",
            "",
            "cognito (detected from the issuer; sets oidc.scopes = openid profile email, \
             oidc.logout = url_template, oidc.logout_url = {authorization_origin}/logout?\
             client_id={client_id}&logout_uri={post_logout_redirect_uri})",
        ),
        (
            "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
            "",
            "entra (detected from the issuer; sets oidc.logout_hint_claim = login_hint)",
        ),
        (
            "https://authentik.example.com/application/o/vestibule/",
            "",
            "authentik (detected from the issuer; no default differs from generic's)",
        ),
        (
            "https://login.example.com",
            "",
            "generic (default; no provider detected from the issuer; no default differs from generic's)",
        ),
        (
            "https://accounts.google.com",
            "provider = \"generic\"",
            "generic (oidc.provider; no default differs from generic's)",
        ),
        (
            "https://login.example.com",
            "provider = \"keycloak\"\nscopes = [\"openid\"]",
            "keycloak (oidc.provider; no default differs from generic's)",
        ),
    ] {
        assert_eq!(
            checked_profile(&app, issuer, lines),
            said,
            "{issuer} {lines}"
        );
    }

    // At start-up, in the log: a Keycloak realm's issuer (nobody answers there; the profile
    // is said before discovery).
    let dir = std::env::temp_dir().join(format!("vestibule-profiles-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let issuer = format!("{}/realms/staff", app.provider.issuer.trim_end_matches('/'));
    let config = app.config_listening_on(port).replacen(
        &format!("issuer = \"{}\"", app.provider.issuer),
        &format!("issuer = \"{issuer}\""),
        1,
    );
    let binary = VestibuleProcess::spawn_logging(&config, port, &dir);
    let event = wait_for(
        "the start-up log to name the profile",
        Duration::from_secs(10),
        || async {
            binary
                .log_events()
                .into_iter()
                .find(|event| event["profile"].is_string())
        },
    )
    .await;
    assert_eq!(event["profile"], "keycloak", "{event}");
    assert_eq!(
        event["message"],
        "provider profile keycloak (detected from the issuer; sets oidc.scopes = openid profile email)",
        "{event}"
    );
    drop(binary);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn each_profile_asks_for_its_scopes_and_parameters_and_an_explicit_key_wins() {
    let app = TestApp::builder()
        .in_memory()
        .oidc_toml("provider = \"google\"\n")
        .start()
        .await;
    // Google's profile through the provider: no offline_access, access_type=offline and
    // prompt=consent on the request the provider received.
    app.browser().login("alice").await;
    let received = app.provider.authorization_requests().await;
    let params = &received.last().expect("an authorization request")["params"];
    assert_eq!(params["scope"], "openid profile email", "{params}");
    assert_eq!(params["access_type"], "offline", "{params}");
    assert_eq!(params["prompt"], "consent", "{params}");

    // Every profile's request, as each instance of the deployment sends it.
    let expected: [(&str, &str, Option<&str>, Option<&str>); 9] = [
        (
            "generic",
            "openid profile email offline_access",
            Some("consent"),
            None,
        ),
        ("keycloak", "openid profile email", None, None),
        (
            "entra",
            "openid profile email offline_access",
            Some("consent"),
            None,
        ),
        (
            "auth0",
            "openid profile email offline_access",
            Some("consent"),
            None,
        ),
        (
            "google",
            "openid profile email",
            Some("consent"),
            Some("offline"),
        ),
        ("cognito", "openid profile email", None, None),
        (
            "okta",
            "openid profile email offline_access",
            Some("consent"),
            None,
        ),
        (
            "zitadel",
            "openid profile email offline_access",
            Some("consent"),
            None,
        ),
        (
            "authentik",
            "openid profile email offline_access",
            Some("consent"),
            None,
        ),
    ];
    let mut tasks = Vec::new();
    for (profile, scope, prompt, access_type) in expected {
        let (url, task) = instance_with(
            &app,
            "provider = \"google\"",
            &format!("provider = \"{profile}\""),
        )
        .await;
        tasks.push(task);
        let request = query_of(&Browser::new(&url).begin_login(None).await);
        assert_eq!(request["scope"], scope, "{profile}");
        assert_eq!(
            request.get("prompt").map(String::as_str),
            prompt,
            "{profile}"
        );
        assert_eq!(
            request.get("access_type").map(String::as_str),
            access_type,
            "{profile}"
        );
    }

    // Explicit keys win over Google's profile: scopes, prompt and the parameters table.
    let (url, task) = instance_with(
        &app,
        "provider = \"google\"",
        "provider = \"google\"\nscopes = [\"openid\", \"email\"]\nprompt = \"select_account\"\n\
         extra_auth_params = { hd = \"example.com\" }",
    )
    .await;
    tasks.push(task);
    let request = query_of(&Browser::new(&url).begin_login(None).await);
    assert_eq!(request["scope"], "openid email");
    assert_eq!(request["prompt"], "select_account");
    assert_eq!(request["hd"], "example.com");
    assert!(!request.contains_key("access_type"), "{request:?}");
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn auth0_without_rp_initiated_logout_falls_back_to_v2_logout_and_generic_ends_here() {
    let app = TestApp::builder()
        .provider_options(|options| {
            options.hide_end_session = true;
            options.legacy_logout = true;
        })
        .oidc_toml("provider = \"auth0\"\n")
        .start()
        .await;
    let callback = format!("{}/api/auth/logout-callback", app.url);
    let browser = app.browser();
    browser.login("alice").await;
    let logout = logout_url(&browser).await.expect("the /v2/logout fallback");
    assert_eq!(logout.path(), "/v2/logout", "{logout}");
    assert!(
        logout.as_str().starts_with(&app.provider.issuer),
        "{logout}"
    );
    let query = query_of(&logout);
    assert_eq!(query["client_id"], provider::client_id());
    assert_eq!(query["returnTo"], callback);
    assert!(!query.contains_key("state"), "{logout}");

    // The provider sends the browser back without a state: the logout cookie alone leads home.
    let back = browser.end_session_at_provider(logout.as_str()).await;
    assert_eq!(back.as_str(), callback, "no state comes back");
    let recorded = app.provider.legacy_logouts().await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["query"]["returnTo"], callback.as_str());
    let landing = browser.get(back.as_str()).await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(landing.headers()["location"], "/");
    // Without the cookie (another browser, or the same answer again): the error page.
    let replayed = browser.get(back.as_str()).await;
    assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);
    let stranger = Browser::new(&app.url).get(back.as_str()).await;
    assert_eq!(stranger.status(), StatusCode::BAD_REQUEST);

    // The same provider with the generic profile: no end-session endpoint, no template, so
    // the session ends here only, as before profiles.
    let (generic, task) =
        instance_with(&app, "provider = \"auth0\"", "provider = \"generic\"").await;
    let carol = app.browser();
    carol.login("carol").await;
    let at_generic = Browser::with_session(&generic, &carol.cookie("vestibule").unwrap());
    assert_eq!(logout_url(&at_generic).await, None);
    task.abort();
}

#[tokio::test]
async fn cognito_always_logs_out_at_its_own_logout_endpoint_with_logout_uri() {
    let app = TestApp::builder()
        .provider_options(|options| options.legacy_logout = true)
        .oidc_toml("provider = \"cognito\"\n")
        .start()
        .await;
    let callback = format!("{}/api/auth/logout-callback", app.url);
    let browser = app.browser();
    browser.login("alice").await;
    // Discovery names an end_session_endpoint, but url_template always uses the template.
    let logout = logout_url(&browser).await.expect("Cognito's /logout");
    assert_eq!(logout.path(), "/logout", "{logout}");
    let query = query_of(&logout);
    assert_eq!(query["client_id"], provider::client_id());
    assert_eq!(query["logout_uri"], callback);
    assert_eq!(query.len(), 2, "{logout}");
    let back = browser.end_session_at_provider(logout.as_str()).await;
    let landing = browser.get(back.as_str()).await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(landing.headers()["location"], "/");
    let stats = app.provider.stats().await;
    assert_eq!(stats["legacy_logouts"][0]["path"], "/logout", "{stats}");
    assert_eq!(stats["end_sessions"], 0, "not RP-initiated logout");
}

#[tokio::test]
async fn google_logs_out_locally_and_revokes_the_refresh_token() {
    let app = TestApp::builder()
        .provider_options(|options| options.always_issue_refresh_token = true)
        .oidc_toml("provider = \"google\"\n")
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    // The provider advertises an end_session_endpoint; Google's profile does not use it.
    assert_eq!(logout_url(&browser).await, None);
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
    let stats = wait_for(
        "the refresh token to be revoked",
        Duration::from_secs(5),
        || async {
            let stats = app.provider.stats().await;
            (stats["revocations"].as_u64() == Some(1)).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["revocation_errors"], 0, "{stats}");
    assert_eq!(stats["end_sessions"], 0, "{stats}");
    assert_eq!(app.provider.stored("RefreshToken").await, 0);
}

#[tokio::test]
async fn entra_sends_the_login_hint_claim_as_logout_hint_and_generic_does_not() {
    let app = TestApp::builder()
        .provider_options(|options| options.login_hint_claim = true)
        .oidc_toml("provider = \"entra\"\n")
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let logout = logout_url(&browser).await.expect("RP-initiated logout");
    let query = query_of(&logout);
    assert_eq!(query["logout_hint"], "hint-for-alice", "{logout}");
    assert!(query.contains_key("state") && query.contains_key("id_token_hint"));
    // The provider accepts it and sends the state back, as for any RP-initiated logout.
    let back = browser.end_session_at_provider(logout.as_str()).await;
    assert!(query_of(&back).contains_key("state"), "{back}");
    let landing = browser.get(back.as_str()).await;
    assert_eq!(landing.status(), StatusCode::SEE_OTHER);
    assert_eq!(landing.headers()["location"], "/");

    // The generic profile sends no hint, the claim present or not.
    let (generic, task) =
        instance_with(&app, "provider = \"entra\"", "provider = \"generic\"").await;
    let bob = app.browser();
    bob.login("bob").await;
    let at_generic = Browser::with_session(&generic, &bob.cookie("vestibule").unwrap());
    let logout = logout_url(&at_generic).await.expect("RP-initiated logout");
    assert!(!query_of(&logout).contains_key("logout_hint"), "{logout}");
    task.abort();
}
