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
    // The session's index entries were checked above like everything else: no token, no
    // claim, no sub in clear (the provider's sid is only ever hashed too).
    for index in [
        "vestibule:user:",
        "vestibule:sid:",
        "vestibule:live-sessions",
    ] {
        assert!(
            dump.iter().any(|(k, _)| k.starts_with(index)),
            "{index} is in the dump"
        );
    }
    let sid = user["claims"]["sid"].as_str().unwrap();
    assert!(
        dump.iter()
            .all(|(k, v)| !contains(v, sid) && !k.contains(sid))
    );
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

    // An operator revokes the session in Redis: refused as soon as the invalidation lands.
    let mut conn = app.redis().connection().await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    refused_within_the_cache_bound(&alice, "/api/orders/after-del").await;

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
    refused_within_the_cache_bound(&bob, "/api/orders/after-flush").await;
}

/// Calls `path` until it is refused, which must happen within the cache's documented bound
/// (one second: the invalidation usually lands before the next call, but it travels on
/// another connection than the call does), and stay so.
async fn refused_within_the_cache_bound(browser: &Browser, path: &str) {
    let started = std::time::Instant::now();
    loop {
        match browser.api_get(path).await.status() {
            StatusCode::UNAUTHORIZED => break,
            StatusCode::OK => assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "still served from the cache after {:?}",
                started.elapsed()
            ),
            other => panic!("unexpected {other}"),
        }
    }
    for _ in 0..3 {
        assert_eq!(
            browser.api_get(path).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
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

/// Unix time in milliseconds.
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn the_reported_idle_deadline_is_the_one_redis_enforces_and_never_moves_back() {
    // A 20 s idle timeout: with the cache on, Redis is touched at most every 2 s.
    let app = TestApp::builder().idle_timeout(20).start().await;
    let browser = app.browser();
    browser.login("alice").await;
    let key = app.redis().session_keys().await.pop().unwrap();
    let mut previous = 0;
    // A SPA polling its countdown across two touch intervals, with API calls in between
    // (answered from the cache).
    for _ in 0..12 {
        assert_eq!(
            browser.api_get("/api/orders/x").await.status(),
            StatusCode::OK
        );
        let (status, user) = browser.user().await;
        assert_eq!(status, StatusCode::OK);
        let reported = user["session"]["idle_expires_at"].as_u64().unwrap();
        assert!(
            reported >= previous,
            "the deadline moved back: {previous} -> {reported}"
        );
        let enforced = unix_millis() + app.redis().pttl(&key).await as u64;
        assert!(
            reported * 1000 <= enforced + 100 && enforced <= reported * 1000 + 1500,
            "reported {reported} s, Redis enforces {enforced} ms"
        );
        previous = reported;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The app's Redis password file swapped for a wrong one: Vestibule refuses to start, with a
/// message naming the keys to check and never the password. (The harness writes the ACL
/// user's password to `<redis dir>/vestibule.password`.)
async fn assert_a_wrong_redis_password_stops_start_up(app: &TestApp) {
    let wrong = app.redis().dir().join("wrong.password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let password_file = app.redis().dir().join("vestibule.password");
    let error = match app
        .build_with(
            &password_file.display().to_string(),
            &wrong.display().to_string(),
        )
        .await
    {
        Ok(_) => panic!("Vestibule started with a wrong Redis password"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("refused the credentials") && error.contains("redis_password_file"),
        "{error}"
    );
    assert!(
        !error.contains("not the password"),
        "the password is never echoed: {error}"
    );
}

#[tokio::test]
async fn an_acl_user_with_its_password_in_a_file_works_and_a_wrong_password_stops_start_up() {
    let app = TestApp::builder()
        .redis_acl_user("vestibule", "acl password: from a file")
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    let (status, _) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !app.redis().session_keys().await.is_empty(),
        "the session was stored through the ACL user"
    );
    let users = app.redis().client_users().await;
    assert!(
        users.iter().any(|user| user == "vestibule"),
        "Vestibule is connected as the ACL user: {users:?}"
    );

    assert_a_wrong_redis_password_stops_start_up(&app).await;
}

#[tokio::test]
async fn sessions_work_over_tls_with_a_private_ca_a_client_certificate_and_an_acl_user() {
    // Redis listens for TLS only and requires a client certificate signed by the test's CA;
    // Vestibule logs in as an ACL user whose password comes from a file.
    let app = TestApp::builder()
        .redis_tls()
        .redis_acl_user("vestibule", "over tls")
        .start()
        .await;
    assert!(app.redis().url().starts_with("rediss://"));
    let browser = app.browser();
    browser.login("alice").await;
    let (status, _) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        browser.api_get("/api/orders/1").await.status(),
        StatusCode::OK,
        "a proxied call reads the session over TLS"
    );
    assert!(!app.redis().session_keys().await.is_empty());
    let ready = app.browser().get("/readyz").await;
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "readiness pings Redis over TLS"
    );
    assert!(
        app.redis()
            .client_users()
            .await
            .iter()
            .any(|user| user == "vestibule"),
        "connected over TLS as the ACL user"
    );

    // A wrong password over TLS is still a clear start-up error.
    assert_a_wrong_redis_password_stops_start_up(&app).await;

    // The client certificate is really presented: without it Redis refuses the handshake, and
    // the store reports it as unavailable (a 503), not as a missing session.
    use vestibule::session::Store;
    use vestibule::session::store::RedisTls;
    let files = app.redis().tls_files().unwrap();
    let full = files.redis_tls();
    let ca_only = RedisTls {
        client_pem: None,
        ..full.clone()
    };
    let topology = app.redis().topology();
    let store = Store::redis(&topology, &full, None).unwrap();
    assert!(store.ping().await.is_ok());
    let store = Store::redis(&topology, &ca_only, None).unwrap();
    let error = store
        .ping()
        .await
        .expect_err("Redis requires a client certificate");
    assert!(
        matches!(error, vestibule::session::StoreError::Unavailable(_)),
        "{error}"
    );
}

/// Files `count` sessions into the user index `index` as logins would have (used now, live
/// for an hour; their records do not exist), `batch` at a time.
async fn fill_user_index(app: &TestApp, index: &str, count: usize) {
    use base64::Engine;
    let mut redis = app.redis().connection().await;
    let now = crate::harness::unix_now();
    let all: Vec<usize> = (0..count).collect();
    for chunk in all.chunks(1_000) {
        let mut command = redis::cmd("HSET");
        command.arg(index);
        for at in chunk {
            let handle = format!("filled{at:08}");
            let record_key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("{at:032}").as_bytes());
            let entry = serde_json::json!({
                "k": record_key, "c": now, "d": "Firefox on Linux", "n": "203.0.113.0/24",
            });
            command
                .arg(format!("m:{handle}"))
                .arg(entry.to_string())
                .arg(format!("s:{handle}"))
                .arg(now)
                .arg(format!("x:{handle}"))
                .arg(now + 3600);
        }
        let _: () = command.query_async(&mut redis).await.unwrap();
    }
}

/// The only user index in the app's Redis.
async fn only_user_index(app: &TestApp) -> String {
    let names = app.redis().keys("vestibule:user:*").await;
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

/// Alice logged in (her browser), and `count` more sessions filed in her index (its name).
async fn alice_with_sessions_filed_beside(app: &TestApp, count: usize) -> (Browser, String) {
    let browser = Browser::new(&app.url);
    browser.login("alice").await;
    let index = only_user_index(app).await;
    fill_user_index(app, &index, count).await;
    (browser, index)
}

/// How many sessions the user index `index` holds that are not being ended.
async fn filed_sessions(app: &TestApp, index: &str) -> usize {
    let mut redis = app.redis().connection().await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(index)
        .query_async(&mut redis)
        .await
        .unwrap();
    let ending = fields
        .iter()
        .filter(|field| field.starts_with("e:"))
        .count();
    fields
        .iter()
        .filter(|field| field.starts_with("m:"))
        .count()
        - ending
}

#[tokio::test]
async fn without_configuration_a_user_has_at_most_a_hundred_sessions() {
    let app = TestApp::start().await;
    let (_, index) = alice_with_sessions_filed_beside(&app, 150).await;
    assert_eq!(filed_sessions(&app, &index).await, 151);
    let next = Browser::new(&app.url);
    next.login("alice").await;
    assert_eq!(
        filed_sessions(&app, &index).await,
        100,
        "session.max_per_user defaults to 100: the least recently used ended"
    );
    assert_eq!(next.user().await.0, StatusCode::OK, "the new login stays");
}

#[tokio::test]
async fn a_user_index_far_beyond_the_limit_never_makes_a_login_or_the_list_block_redis() {
    let app = TestApp::start().await;
    // 100,000 sessions filed (as under a limit since lowered, or by hand): reading them whole
    // would hold Redis, single-threaded, for most of a second at every login of alice.
    let (first, index) = alice_with_sessions_filed_beside(&app, 100_000).await;
    let mut redis = app.redis().connection().await;
    for (name, value) in [
        ("slowlog-log-slower-than", "50000"),
        ("slowlog-max-len", "128"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut redis)
        .await
        .unwrap();

    let next = Browser::new(&app.url);
    next.login("alice").await;
    let response = first.api_get("/api/auth/sessions").await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed: serde_json::Value = response.json().await.unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert!(sessions.len() <= 100, "{}", sessions.len());
    assert!(
        sessions.iter().any(|session| session["current"] == true),
        "the caller's own session is always listed"
    );
    assert_eq!(listed["truncated"], true);
    // Nothing Redis ran for them took 50 ms (a whole read of this index takes far longer).
    let slow: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(128)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(slow.is_empty(), "commands of 50 ms or more: {slow:?}");
    // The login trimmed a page of it, and did not make the index grow.
    let left: usize = redis::cmd("HLEN")
        .arg(&index)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(left < 300_000, "{left}");
}

mod sessions_in_redis {
    //! The session layer against a real Redis, as two instances would use it.

    use std::time::Duration;

    use vestibule::clock::unix_now;
    use vestibule::session::store::redis::cache::{CacheSettings, Lookup};
    use vestibule::session::{
        MasterKey, SessionCookie, SessionOrigin, SessionRecord, Sessions, Store, StoredToken,
        TokenSet,
    };

    use crate::harness::{RedisServer, wait_for};

    const IDLE: Duration = Duration::from_secs(600);

    fn sessions(store: &Store) -> Sessions {
        Sessions::new(
            store.clone(),
            MasterKey::new([42; 32]),
            IDLE,
            Duration::from_secs(3600),
        )
    }

    fn record(refresh_token: &str) -> SessionRecord {
        SessionRecord {
            sub: "alice".into(),
            tokens: TokenSet {
                access_token: "at".into(),
                access_expires_at: None,
                obtained_at: unix_now(),
                refresh_token: Some(StoredToken::new(refresh_token)),
                id_token: "id".into(),
                expiry_assumed: false,
                from_forced_refresh: false,
                userinfo: None,
                principal: None,
                dpop_key: None,
                dpop_bound: false,
            },
            created_at: unix_now(),
            expires_at: unix_now() + 3600,
            logout_sid: "sid".into(),
            handle: vestibule::random::url_safe_id(),
            origin_network: String::new(),
            origin_browser: String::new(),
            provider: None,
        }
    }

    /// A store on `redis` without the per-instance cache.
    fn uncached_store(redis: &RedisServer) -> Store {
        Store::redis(
            &redis.topology(),
            &vestibule::session::store::RedisTls::default(),
            None,
        )
        .unwrap()
    }

    fn refresh_token(record: &SessionRecord) -> String {
        record.tokens.refresh_token.as_ref().unwrap().text()
    }

    #[tokio::test]
    async fn ending_a_session_revokes_what_redis_holds_not_this_instances_cached_copy() {
        let redis = RedisServer::start().await;
        let here = Store::redis(
            &redis.topology(),
            &vestibule::session::store::RedisTls::default(),
            CacheSettings::new(100, IDLE),
        )
        .unwrap();
        let cache = here.cache().unwrap();
        wait_for("the cache to serve", Duration::from_secs(10), || async {
            cache.is_serving().then_some(())
        })
        .await;
        let this_instance = sessions(&here);
        let other_instance = sessions(
            &Store::redis(
                &redis.topology(),
                &vestibule::session::store::RedisTls::default(),
                None,
            )
            .unwrap(),
        );
        let token = this_instance
            .create(&record("rt-1"), &SessionOrigin::default())
            .await
            .unwrap();
        let key = token.storage_key();
        let mut conn = redis.connection().await;
        let before_rotation: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();

        // Another instance refreshes: the provider rotated the refresh token.
        let current = other_instance.load_fresh(&token).await.unwrap().unwrap();
        let rotated = other_instance
            .prepare_replacement(&current, &record("rt-2"))
            .unwrap();
        assert!(other_instance.replace(&rotated).await.unwrap());

        // Every invalidation of those writes has reached this instance once that of a write
        // made after them has (Redis reports them in order on the one tracking connection).
        let barrier = format!(
            "vestibule:session:barrier-{}",
            vestibule::random::url_safe_id()
        );
        let Lookup::Miss(read) = cache.lookup(&barrier) else {
            panic!("a new key is not cached");
        };
        cache.store(&barrier, Some(&std::sync::Arc::from(&b"x"[..])), read);
        let _: () = redis::cmd("SET")
            .arg(&barrier)
            .arg("y")
            .query_async(&mut conn)
            .await
            .unwrap();
        wait_for(
            "the barrier's invalidation",
            Duration::from_secs(5),
            || async { matches!(cache.lookup(&barrier), Lookup::Miss(_)).then_some(()) },
        )
        .await;
        // This instance has not heard of the rotation yet (the window before an invalidation
        // arrives): its cache still holds the record from before it.
        wait_for(
            "the stale copy to be served",
            Duration::from_secs(5),
            || async {
                if let Lookup::Miss(read) = cache.lookup(&key) {
                    // Kept only while the cache serves (its probes confirm it every 250 ms).
                    cache.store(&key, Some(&before_rotation.clone().into()), read);
                }
                matches!(cache.lookup(&key), Lookup::Hit(_)).then_some(())
            },
        )
        .await;
        let cached = this_instance.load(&token).await.unwrap().unwrap();
        assert_eq!(
            refresh_token(&cached.record),
            "rt-1",
            "the cached copy is stale"
        );

        // A logout here ends the session as Redis holds it: the live token is the one revoked.
        let ended = this_instance.end(&token).await.unwrap().unwrap();
        assert_eq!(refresh_token(&ended), "rt-2");
        assert!(this_instance.load(&token).await.unwrap().is_none());
        assert!(other_instance.load(&token).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cookie_whose_secret_does_not_open_the_record_ends_nothing() {
        let redis = RedisServer::start().await;
        let store = uncached_store(&redis);
        let sessions = sessions(&store);
        let token = sessions
            .create(&record("rt-1"), &SessionOrigin::default())
            .await
            .unwrap();
        // The same id (first half of the cookie value) with another secret.
        let other = SessionCookie::generate().encode();
        let forged = SessionCookie::parse(&format!("{}{}", &token.encode()[..43], &other[43..]));
        let forged = forged.unwrap();
        assert_eq!(forged.storage_key(), token.storage_key());
        assert!(sessions.end(&forged).await.unwrap().is_none());
        assert!(
            sessions.load_fresh(&token).await.unwrap().is_some(),
            "still there"
        );
    }

    #[tokio::test]
    async fn a_refresh_that_lost_its_lock_cannot_overwrite_the_next_holders_tokens() {
        let redis = RedisServer::start().await;
        let store = uncached_store(&redis);
        let (slow, fast) = (sessions(&store), sessions(&store));
        let token = slow
            .create(&record("rt-1"), &SessionOrigin::default())
            .await
            .unwrap();
        // Both read the same record (the slow holder's lease lapsed meanwhile)...
        let read_by_slow = slow.load_fresh(&token).await.unwrap().unwrap();
        let read_by_fast = fast.load_fresh(&token).await.unwrap().unwrap();
        // ...the next holder stores its refresh first; the late write is refused, and so is a
        // late "the provider refused my refresh, end the session".
        let fresh = fast
            .prepare_replacement(&read_by_fast, &record("rt-fast"))
            .unwrap();
        assert!(fast.replace(&fresh).await.unwrap());
        let late = slow
            .prepare_replacement(&read_by_slow, &record("rt-slow"))
            .unwrap();
        assert!(!slow.replace(&late).await.unwrap());
        assert!(!slow.delete_if_unchanged(&read_by_slow).await.unwrap());
        let stored = fast.load_fresh(&token).await.unwrap().unwrap();
        assert_eq!(refresh_token(&stored.record), "rt-fast");
        // A retry of a write whose reply was lost counts as done, not as a lost race.
        assert!(fast.replace(&fresh).await.unwrap());
        // And nothing resurrects an ended session.
        fast.end(&token).await.unwrap();
        let resurrection = fast
            .prepare_replacement(&stored, &record("rt-late"))
            .unwrap();
        assert!(!fast.replace(&resurrection).await.unwrap());
        assert!(fast.load_fresh(&token).await.unwrap().is_none());
    }

    /// Sessions that end by themselves leave the user's index as the user logs in again,
    /// so neither it nor the live count grows without bound.
    #[tokio::test]
    async fn idle_expired_sessions_leave_the_users_index_and_the_live_count() {
        let redis = RedisServer::start().await;
        let store = uncached_store(&redis);
        // A 1 s idle timeout: unused for 2 s (idle plus the filing interval), a session is over.
        let sessions = Sessions::new(
            store,
            MasterKey::new([9; 32]),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        for _ in 0..3 {
            sessions
                .create(&record("rt"), &SessionOrigin::default())
                .await
                .unwrap();
        }
        let mut conn = redis.connection().await;
        let index_fields = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            let redis = &redis;
            async move {
                let mut fields = 0;
                for key in redis.keys("vestibule:user:*").await {
                    let length: u64 = redis::cmd("HLEN")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    fields += length;
                }
                fields
            }
        };
        assert_eq!(
            index_fields(&mut conn).await,
            13,
            "three sessions, four fields each, and the admission counter"
        );
        let started = unix_now();
        wait_for(
            "the three sessions to be over",
            Duration::from_secs(10),
            || async { (unix_now() > started + 3).then_some(()) },
        )
        .await;
        sessions
            .create(&record("rt"), &SessionOrigin::default())
            .await
            .unwrap();
        assert_eq!(
            index_fields(&mut conn).await,
            5,
            "only the new session is left (and the counter)"
        );
        assert_eq!(sessions.count_live().await.unwrap(), 1);
        let members: u64 = redis::cmd("ZCARD")
            .arg("vestibule:live-sessions")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(members <= 4, "{members}");
    }
}
