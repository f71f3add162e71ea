//! Rotating the encryption key without logouts: two real Vestibule processes on one Redis,
//! rolled one after the other through [k1] → [k1 seals, k2 opens] → [k2 seals, k1 opens] →
//! [k2]. A session in use never notices; one left idle under the removed key ends with a
//! 401, never a 500. And the single `encryption_key` moves into a ring without a logout.

use reqwest::{StatusCode, Url};
use vestibule::session::SessionCookie;

use crate::harness::binary::VestibuleProcess;
use crate::harness::browser::location;
use crate::harness::{Browser, ENCRYPTION_KEY, TestApp, free_port, spawn_vestibule};

/// The first byte of a record labelled with its key id (see `session::crypto`).
const LABEL_MARKER: u8 = 0xA5;
pub(crate) const K1: &str = "c2l4dGVlbiBieXRlcyBvZiBrMXNpeHRlZW4gYnl0ZXM=";
pub(crate) const K2: &str = "azIgaXMgdGhlIG5ldyBrZXksIDMyIGJ5dGVzIGxvbmc=";

/// `session.encryption_keys` for `(id, key)` entries, the first sealing.
pub(crate) fn ring(entries: &[(&str, &str)]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(id, key)| format!("{{ id = \"{id}\", key = \"{key}\" }}"))
        .collect();
    format!("encryption_keys = [{}]", entries.join(", "))
}

/// `app`'s configuration on `port` with the single key replaced by `keys`.
pub(crate) fn config(app: &TestApp, port: u16, keys: &str) -> String {
    let single = format!("encryption_key = \"{ENCRYPTION_KEY}\"");
    let config = app.config_listening_on(port);
    assert!(config.contains(&single));
    config.replacen(&single, keys, 1)
}

/// `url` sent to `instance` instead (the load balancer's choice, made by the test).
pub(crate) fn on_instance(url: &Url, instance: &str) -> Url {
    let mut moved = url.clone();
    moved
        .set_port(Url::parse(instance).unwrap().port())
        .unwrap();
    moved
}

/// Starts a login on `instance` and approves it at the provider; returns the browser (with
/// its login cookie) and the callback URL, not yet visited. `public` is the balancer's URL.
async fn start_login(instance: &str, public: &str, user: &str) -> (Browser, Url) {
    let browser = Browser::new(public);
    let start = Url::parse(&format!("{instance}/api/auth/login")).unwrap();
    let response = browser.get(start.as_str()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let callback = browser
        .authorize_at_provider(location(&response, &start), user)
        .await;
    (browser, on_instance(&callback, instance))
}

/// Logs `user` in entirely on `instance`; returns the session cookie.
pub(crate) async fn login_on(instance: &str, public: &str, user: &str) -> String {
    let (browser, callback) = start_login(instance, public, user).await;
    let response = browser.get(callback.as_str()).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "callback on {instance}"
    );
    browser.cookie("vestibule").expect("a session cookie")
}

/// Asserts that `session` calls the API through `instance` (the upstream introspects the
/// token), and reads the user there.
pub(crate) async fn works_on(instance: &str, session: &str, what: &str) {
    let browser = Browser::with_session(instance, session);
    let response = browser.api_get("/api/orders/rotation").await;
    assert_eq!(response.status(), StatusCode::OK, "{what} on {instance}");
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK, "{what} on {instance}");
    assert_eq!(user["sub"], "alice");
}

/// Asserts that `session` has ended on `instance`: 401 with the JSON an SPA expects.
pub(crate) async fn ended_on(instance: &str, session: &str, what: &str) {
    let response = Browser::with_session(instance, session)
        .api_get("/api/orders/rotation")
        .await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{what} on {instance}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated", "{what}: {body}");
    assert!(body["login_url"].is_string(), "{what}: {body}");
}

/// The key id `session`'s stored record is labelled with (`None`: not labelled with an id
/// of this test). Reads Redis directly; the record itself is never printed.
async fn label(app: &TestApp, session: &str) -> Option<String> {
    let key = SessionCookie::parse(session).unwrap().storage_key();
    let mut redis = app.redis().connection().await;
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    // With the refresh token in escrow: `0xE6 ‖ u16 length ‖ escrowed part ‖ record`, both
    // parts sealed under the same key.
    if let Some((&ESCROW_MARKER, rest)) = value.split_first()
        && let Some(length) = rest.get(..2)
    {
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if let (Some(escrowed), Some(record)) = (rest.get(2..2 + length), rest.get(2 + length..)) {
            let label = label_of(record);
            assert_eq!(label_of(escrowed), label, "both parts under one key");
            return label;
        }
    }
    label_of(&value)
}

/// The key id a sealed part starts with, if it is labelled with one of this test's ids.
fn label_of(sealed: &[u8]) -> Option<String> {
    let (&marker, rest) = sealed.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let id = String::from_utf8(rest.get(..usize::from(len))?.to_vec()).ok()?;
    // A random unlabelled nonce starts with the marker once in 256 records, but does not go
    // on to spell one of this test's ids.
    (marker == LABEL_MARKER && ["k1", "k2"].contains(&id.as_str())).then_some(id)
}

/// First byte of a stored value with an escrowed refresh token (session/escrow.rs).
const ESCROW_MARKER: u8 = 0xE6;

/// Restarts `instance` with `config`: SIGTERM, drained exit, start, ready.
async fn redeploy(instance: &mut VestibuleProcess, config: &str) {
    instance.terminate();
    let exit = instance
        .wait_for_exit(std::time::Duration::from_secs(20))
        .await;
    assert!(exit.success(), "{exit}");
    instance.set_config(config);
    instance.start();
    instance.wait_until_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_rolled_over_two_instances_ends_only_sessions_left_on_the_removed_key() {
    let public_port = free_port();
    let public = format!("http://127.0.0.1:{public_port}");
    let app = TestApp::builder().public_port(public_port).start().await;
    let steps = [
        ring(&[("k1", K1)]),
        ring(&[("k1", K1), ("k2", K2)]),
        ring(&[("k2", K2), ("k1", K1)]),
        ring(&[("k2", K2)]),
    ];
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = VestibuleProcess::spawn(
        &config(&app, port_a, &steps[0]),
        port_a,
        app.redis().dir(),
        0,
    );
    let mut b = VestibuleProcess::spawn(
        &config(&app, port_b, &steps[0]),
        port_b,
        app.redis().dir(),
        0,
    );
    a.wait_until_ready().await;
    b.wait_until_ready().await;
    let (url_a, url_b) = (a.base.clone(), b.base.clone());

    // Step 1, [k1]: one session used throughout, one left idle, one login left half done.
    let steady = login_on(&url_a, &public, "alice").await;
    let idle = login_on(&url_b, &public, "alice").await;
    let (pending_browser, pending_callback) = start_login(&url_a, &public, "alice").await;
    assert_eq!(label(&app, &steady).await.as_deref(), Some("k1"));
    works_on(&url_b, &steady, "steady").await;

    // Step 2, [k1 seals, k2 opens]: A first, then B.
    redeploy(&mut a, &config(&app, port_a, &steps[1])).await;
    let from_step_two = login_on(&url_b, &public, "alice").await;
    for url in [&url_a, &url_b] {
        works_on(url, &steady, "steady, step 2 mid-roll").await;
        works_on(url, &from_step_two, "made on B under k1").await;
    }
    redeploy(&mut b, &config(&app, port_b, &steps[1])).await;
    works_on(&url_b, &steady, "steady, step 2").await;
    assert_eq!(
        label(&app, &steady).await.as_deref(),
        Some("k1"),
        "k1 still seals"
    );

    // Step 3, [k2 seals, k1 opens]: while B still seals with k1, A seals with k2, and each
    // instance opens what the other wrote (that is what step 2 was for).
    redeploy(&mut a, &config(&app, port_a, &steps[2])).await;
    works_on(&url_a, &steady, "steady, step 3 on A").await;
    assert_eq!(
        label(&app, &steady).await.as_deref(),
        Some("k2"),
        "re-sealed by A"
    );
    works_on(&url_b, &steady, "steady under k2, on B").await;
    let from_a = login_on(&url_a, &public, "alice").await;
    assert_eq!(label(&app, &from_a).await.as_deref(), Some("k2"));
    works_on(&url_b, &from_a, "made on A under k2").await;
    redeploy(&mut b, &config(&app, port_b, &steps[2])).await;
    for session in [&steady, &from_step_two, &from_a] {
        for url in [&url_b, &url_a] {
            works_on(url, session, "step 3").await;
        }
        assert_eq!(label(&app, session).await.as_deref(), Some("k2"));
    }

    // Step 4, [k2]: k1 is gone. Only the idle session (never re-sealed) ends.
    redeploy(&mut a, &config(&app, port_a, &steps[3])).await;
    works_on(&url_a, &steady, "steady, step 4 mid-roll").await;
    redeploy(&mut b, &config(&app, port_b, &steps[3])).await;
    for url in [&url_a, &url_b] {
        works_on(url, &steady, "steady, step 4").await;
        works_on(url, &from_step_two, "made in step 2, step 4").await;
        ended_on(url, &idle, "idle under the removed k1").await;
    }
    let (status, _) = Browser::with_session(&url_b, &idle).user().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The login started under k1 ends on the login-expired page, not a server error.
    let response = pending_browser.get(pending_callback.as_str()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("unknown, expired or was already used"),
        "{page}"
    );
}

#[tokio::test]
async fn a_session_from_the_single_key_is_served_and_resealed_by_a_ring_of_the_same_key() {
    let app = TestApp::start().await;
    let session = login_on(&app.url, &app.url, "alice").await;
    assert_eq!(
        label(&app, &session).await,
        None,
        "the single key writes unlabelled"
    );

    let port = free_port();
    let same_bytes = ring(&[("k1", ENCRYPTION_KEY)]);
    let _ring = spawn_vestibule(&config(&app, port, &same_bytes)).await;
    let ring_instance = format!("http://127.0.0.1:{port}");
    works_on(&ring_instance, &session, "single-key session in the ring").await;
    assert_eq!(label(&app, &session).await.as_deref(), Some("k1"));
    // An instance still on the single key (mid-roll, or rolled back) reads it too.
    works_on(&app.url, &session, "labelled session on the single key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_used_under_the_new_ring_survives_the_removal_of_the_old_key() {
    // Access tokens of 90 s refreshed 30 s before they expire (the default skew): no refresh
    // falls due in the first minute, so only re-sealing on read can move a session to k2.
    let public_port = free_port();
    let public = format!("http://127.0.0.1:{public_port}");
    let app = TestApp::builder()
        .public_port(public_port)
        .access_token_ttl(90)
        .refresh_skew(30)
        .start()
        .await;
    let steps = [
        ring(&[("k1", K1)]),
        ring(&[("k2", K2), ("k1", K1)]),
        ring(&[("k2", K2)]),
    ];
    // One instance with the record cache (the default), one without: each rolled on its own
    // through the steps, each with a session of its own.
    let caches = ["", "\nlocal_cache_entries = 0"];
    let ports = [free_port(), free_port()];
    let configure =
        |at: usize, step: &str| config(&app, ports[at], &format!("{step}{}", caches[at]));
    let mut instances: Vec<VestibuleProcess> = (0..2)
        .map(|at| {
            VestibuleProcess::spawn(&configure(at, &steps[0]), ports[at], app.redis().dir(), 0)
        })
        .collect();
    let mut sessions = Vec::new();
    for instance in &instances {
        instance.wait_until_ready().await;
        let session = login_on(&instance.base, &public, "alice").await;
        assert_eq!(label(&app, &session).await.as_deref(), Some("k1"));
        sessions.push(session);
    }

    // [k2, k1]: the session is used (the user, a proxied call) and is stored under k2.
    for (at, instance) in instances.iter_mut().enumerate() {
        redeploy(instance, &configure(at, &steps[1])).await;
        works_on(&instance.base, &sessions[at], "used under [k2, k1]").await;
        assert_eq!(
            label(&app, &sessions[at]).await.as_deref(),
            Some("k2"),
            "re-sealed by the read ({})",
            if caches[at].is_empty() {
                "cache on"
            } else {
                "cache off"
            }
        );
    }

    // [k2]: k1 is gone, and the session used since it became second still works.
    for (at, instance) in instances.iter_mut().enumerate() {
        redeploy(instance, &configure(at, &steps[2])).await;
        works_on(&instance.base, &sessions[at], "after k1 was removed").await;
    }
    assert_eq!(
        app.provider.refresh_grants().await,
        0,
        "no refresh did the re-sealing"
    );
}
