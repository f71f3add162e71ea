//! What Redis holds, and what happens when it is away.

use reqwest::StatusCode;

use crate::harness::{Browser, TestApp};

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn redis_holds_no_plaintext_token_claim_email_or_cookie() {
    let app = TestApp::builder()
        .access_token_ttl(3)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (_, user) = browser.user().await;
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    let access_token = app.upstream.seen()[0].bearer.clone().unwrap();
    let cookie = browser.cookie("vestibule").unwrap();
    let logout_sid = user["logout_url"]
        .as_str()
        .unwrap()
        .split("sid=")
        .nth(1)
        .unwrap()
        .to_owned();
    // Also leave a pending login in the store.
    app.browser().begin_login(Some("/secret-path")).await;

    let dump = app.redis().dump().await;
    assert!(dump.len() >= 2, "a session and a pending login are stored");
    for (key, value) in &dump {
        for needle in [
            access_token.as_str(),
            "alice",
            "example.test",
            "\"sub\"",
            "access_token",
            "refresh_token",
            "eyJ",
            "secret-path",
            "code_verifier",
            logout_sid.as_str(),
            &cookie[..20],
            &cookie[43..63],
        ] {
            assert!(!contains(value, needle), "{key} reveals {needle:?}");
            assert!(!key.contains(needle), "{key} reveals {needle:?}");
        }
        assert!(app.redis().pttl(key).await > 0, "{key} carries a TTL");
    }
    assert!(
        dump.iter()
            .any(|(k, _)| k.starts_with("vestibule:session:"))
    );
    assert!(dump.iter().any(|(k, _)| k.starts_with("vestibule:login:")));
}

#[tokio::test]
async fn idle_timeout_slides_on_use() {
    // A 20 s idle timeout: a session in use has its deadline pushed back at least every 2 s
    // (a tenth of it), even when its calls are answered from the cache.
    let app = TestApp::builder().idle_timeout(20).start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let key = app.redis().session_keys().await.pop().unwrap();
    let mut conn = app.redis().connection().await;
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(5_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(app.redis().pttl(&key).await <= 5_000);
    let ttl = crate::harness::wait_for(
        "use to push the idle deadline back",
        std::time::Duration::from_secs(4),
        || {
            let (browser, app, key) = (browser.clone(), &app, key.clone());
            async move {
                assert_eq!(browser.user().await.0, StatusCode::OK);
                let ttl = app.redis().pttl(&key).await;
                (ttl > 15_000).then_some(ttl)
            }
        },
    )
    .await;
    assert!(ttl <= 20_000, "idle timeout reset to 20 s, got {ttl} ms");
}

#[tokio::test]
async fn sessions_in_use_are_served_from_the_tracked_cache_and_end_at_once_when_redis_drops_them() {
    let app = TestApp::start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let key = app.redis().session_keys().await.pop().unwrap();
    let warm_up = crate::harness::wait_for(
        "the session to be cached",
        std::time::Duration::from_secs(10),
        || {
            let (alice, app) = (alice.clone(), &app);
            async move {
                let before = app.redis().session_reads().await;
                assert_eq!(
                    alice.api_get("/api/orders/warm").await.status(),
                    StatusCode::OK
                );
                (app.redis().session_reads().await == before).then_some(())
            }
        },
    );
    warm_up.await;

    let before = app.redis().session_reads().await;
    for call in 0..50 {
        let response = alice.api_get(&format!("/api/orders/{call}")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let reads = app.redis().session_reads().await - before;
    assert!(reads <= 2, "50 proxied calls read Redis {reads} times");

    // An operator revokes the session in Redis: the very next call is refused.
    let mut conn = app.redis().connection().await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        alice.api_get("/api/orders/after-del").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A flush drops everything the cache holds.
    let bob = app.browser();
    bob.login("bob").await;
    for _ in 0..3 {
        assert_eq!(
            bob.api_get("/api/orders/bob").await.status(),
            StatusCode::OK
        );
    }
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(
        bob.api_get("/api/orders/after-flush").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_record_copied_under_another_sessions_key_does_not_open() {
    let app = TestApp::start().await;
    let alice = app.browser();
    alice.login("alice").await;
    let alice_key = app.redis().session_keys().await.pop().unwrap();
    let bob = app.browser();
    bob.login("bob").await;
    let bob_key = app
        .redis()
        .session_keys()
        .await
        .into_iter()
        .find(|k| *k != alice_key)
        .unwrap();
    let mut conn = app.redis().connection().await;
    let alice_record: Vec<u8> = redis::cmd("GET")
        .arg(&alice_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&bob_key)
        .arg(alice_record)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        bob.user().await.0,
        StatusCode::UNAUTHORIZED,
        "bob's cookie cannot open alice's record"
    );
    assert_eq!(alice.user().await.1["sub"], "alice");
}

#[tokio::test]
async fn redis_outage_is_503_and_the_same_session_works_after_restart() {
    let mut app = TestApp::start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.cookie("vestibule").unwrap();
    app.redis.as_mut().unwrap().stop().await;

    let response = browser.api_get("/api/auth/user").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        response.headers().get("set-cookie").is_none(),
        "the cookie is not cleared"
    );
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "session_store_unavailable"
    );
    let proxied = browser.api_get("/api/orders/1").await;
    assert_eq!(proxied.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(proxied.headers().get("set-cookie").is_none());
    let navigation = browser.get("/api/auth/login").await;
    assert_eq!(navigation.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        navigation.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let (status, _) = browser.logout().await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "logout cannot pretend to succeed"
    );
    assert!(app.upstream.seen().is_empty());

    app.redis.as_mut().unwrap().restart().await;
    let (status, user) = crate::harness::wait_for(
        "the session to work again",
        std::time::Duration::from_secs(10),
        || {
            let browser = browser.clone();
            async move {
                let (status, user) = browser.user().await;
                (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, user))
            }
        },
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["sub"], "alice");
    assert_eq!(browser.cookie("vestibule").unwrap(), cookie);
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn in_memory_store_runs_the_whole_flow() {
    let app = TestApp::builder()
        .in_memory()
        .access_token_ttl(3)
        .refresh_skew(1)
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK
    );
    browser.wait_past_access_token_expiry().await;
    assert_eq!(
        browser.api_get("/api/orders/2").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.provider.refresh_grants().await, 1);
    assert_eq!(browser.logout().await.0, StatusCode::OK);
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
    let stranger = Browser::new(&app.url);
    assert_eq!(stranger.user().await.0, StatusCode::UNAUTHORIZED);
}
