//! "My sessions": a user lists their sessions (never a cookie, never another user's), ends one
//! from another device or all but the current one, on two instances; the index stays right
//! under concurrent logins and logouts on both, survives a Redis restart, and works on the
//! in-memory store. Its Redis keys do not confirm a guessed user or provider session, and a
//! user's sessions stay listed and endable through a key rotation and after an upgrade from
//! the unkeyed names an earlier release wrote.

use reqwest::StatusCode;
use serde_json::Value;
use vestibule::session::store::{compact_storage_key, user_index};

use crate::harness::binary::binary_in_front;
use crate::harness::{
    Browser, TestApp, free_port, spawn_vestibule, unix_now, wait_for, wait_for_the_next_second,
};
use crate::key_rotation::{K1, K2, config, ended_on, login_on, on_instance, ring, works_on};

const LAPTOP: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// `GET /api/auth/sessions`: the list (panics unless 200).
pub(crate) async fn sessions_of(browser: &Browser) -> Vec<Value> {
    let response = browser.api_get("/api/auth/sessions").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

/// The id of the session marked current.
fn current_id(sessions: &[Value]) -> String {
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(
        current.len(),
        1,
        "exactly one current session: {sessions:?}"
    );
    current[0]["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn alive(browser: &Browser) -> bool {
    browser.user().await.0 == StatusCode::OK
}

/// `count` new browsers, at the two instances in turn.
fn browsers_on(count: usize, instances: [&str; 2]) -> Vec<Browser> {
    (0..count).map(|i| Browser::new(instances[i % 2])).collect()
}

/// Waits until the provider has answered `count` revocation requests, none refused.
async fn wait_for_revocations(app: &TestApp, count: u64) {
    let stats = wait_for(
        "the refresh tokens to be revoked",
        std::time::Duration::from_secs(5),
        || async {
            let stats = app.provider.stats().await;
            (stats["revocations"].as_u64() == Some(count)).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["revocation_errors"], 0, "{stats}");
}

#[tokio::test]
async fn a_user_sees_their_devices_and_ends_the_lost_laptop_from_the_phone_on_every_instance() {
    let mut app = TestApp::start().await;
    let other_instance = app.start_another_instance().await;
    let laptop = Browser::with_user_agent(&app.url, LAPTOP);
    laptop.login("alice").await;
    let phone = Browser::with_user_agent(&other_instance, PHONE);
    phone.login("alice").await;
    let bob = Browser::new(&app.url);
    bob.login("bob").await;

    let listed = sessions_of(&phone).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let phone_id = current_id(&listed);
    let laptop_entry = listed
        .iter()
        .find(|s| s["id"] != phone_id.as_str())
        .unwrap();
    assert_eq!(laptop_entry["device"], "Firefox on Linux");
    assert_eq!(
        laptop_entry["network"], "127.0.0.0/24",
        "truncated, never the address"
    );
    let phone_entry = listed
        .iter()
        .find(|s| s["id"] == phone_id.as_str())
        .unwrap();
    assert!(
        phone_entry["device"]
            .as_str()
            .unwrap()
            .starts_with("Safari on iPhone")
    );
    let now = unix_now();
    for session in &listed {
        let created = session["created_at"].as_u64().unwrap();
        let seen = session["last_seen_at"].as_u64().unwrap();
        assert!(
            created <= now && created + 60 > now && seen >= created,
            "{session}"
        );
        // The id is not the cookie, nor any part of it.
        let id = session["id"].as_str().unwrap();
        for browser in [&laptop, &phone] {
            assert!(!browser.cookie("vestibule").unwrap().contains(id));
        }
        assert_eq!(
            session.as_object().unwrap().len(),
            6,
            "exactly id, created_at, last_seen_at, device, network, current: {session}"
        );
    }
    // Both instances list the same sessions; the laptop sees itself as current.
    let from_laptop = sessions_of(&laptop).await;
    assert_eq!(from_laptop.len(), 2);
    let laptop_id = current_id(&from_laptop);
    assert_eq!(laptop_id, laptop_entry["id"].as_str().unwrap());

    // Bob sees only his own session and cannot end alice's.
    let bobs = sessions_of(&bob).await;
    assert_eq!(bobs.len(), 1);
    assert_ne!(bobs[0]["id"], laptop_id.as_str());
    let refused = bob
        .api_delete(&format!("/api/auth/sessions/{laptop_id}"))
        .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "no_such_session");
    assert!(alive(&laptop).await, "bob ended nothing of alice's");

    // Anti-forgery: no X-CSRF, no list and no delete.
    let forged = phone
        .http()
        .delete(phone.url(&format!("/api/auth/sessions/{laptop_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let forged = phone.get("/api/auth/sessions").await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(alive(&laptop).await);

    // The phone ends the laptop: gone on both instances at once.
    let laptop_elsewhere =
        Browser::with_session(&other_instance, &laptop.cookie("vestibule").unwrap());
    assert!(
        alive(&laptop_elsewhere).await,
        "cached by the other instance"
    );
    let ended = phone
        .api_delete(&format!("/api/auth/sessions/{laptop_id}"))
        .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert!(!alive(&laptop).await);
    wait_for(
        "the other instance to drop the laptop",
        std::time::Duration::from_secs(2),
        || async { (!alive(&laptop_elsewhere).await).then_some(()) },
    )
    .await;
    assert!(alive(&phone).await);
    assert_eq!(sessions_of(&phone).await.len(), 1);
    // The laptop's refresh token, kept in escrow, is revoked at the provider.
    wait_for_revocations(&app, 1).await;
    let again = phone
        .api_delete(&format!("/api/auth/sessions/{laptop_id}"))
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "already ended");

    // Without a session: 401.
    let stranger = Browser::new(&app.url);
    assert_eq!(
        stranger.api_get("/api/auth/sessions").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn ending_the_others_keeps_the_current_session_and_its_own_deletion_drops_the_cookie() {
    let app = TestApp::start().await;
    let browsers: Vec<Browser> = (0..3).map(|_| Browser::new(&app.url)).collect();
    for browser in &browsers {
        browser.login("alice").await;
    }
    let response = browsers[0].api_delete("/api/auth/sessions").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ended"], 2);
    assert!(alive(&browsers[0]).await);
    assert!(!alive(&browsers[1]).await && !alive(&browsers[2]).await);

    // Ending the current session by its id is a logout: the cookie goes too.
    let listed = sessions_of(&browsers[0]).await;
    let own = current_id(&listed);
    let response = browsers[0]
        .api_delete(&format!("/api/auth/sessions/{own}"))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("vestibule=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    assert!(!alive(&browsers[0]).await);
}

#[tokio::test]
async fn last_seen_follows_use_as_closely_as_the_touch_interval() {
    // Idle timeout 20 s: the index files a use at most every 2 s per instance.
    let app = TestApp::builder().idle_timeout(20).start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let created = sessions_of(&alice).await[0]["created_at"].as_u64().unwrap();
    let seen = wait_for(
        "a later use to be filed",
        std::time::Duration::from_secs(10),
        || async {
            assert_eq!(
                alice.api_get("/api/orders/x").await.status(),
                StatusCode::OK
            );
            let seen = sessions_of(&alice).await[0]["last_seen_at"]
                .as_u64()
                .unwrap();
            (seen >= created + 3).then_some(seen)
        },
    )
    .await;
    assert!(seen <= unix_now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_exact_under_concurrent_logins_and_logouts_on_two_instances_and_survives_a_redis_restart()
 {
    let mut app = TestApp::start().await;
    let other_instance = app.start_another_instance().await;
    let browsers = browsers_on(8, [&app.url, &other_instance]);
    futures_util::future::join_all(browsers.iter().map(|browser| browser.login("alice"))).await;
    let observer = Browser::new(&app.url);
    observer.login("alice").await;
    assert_eq!(sessions_of(&observer).await.len(), 9);

    // Half log out at once, on both instances.
    let results = futures_util::future::join_all(browsers[..4].iter().map(|b| b.logout())).await;
    assert!(results.iter().all(|(status, _)| *status == StatusCode::OK));
    assert_eq!(sessions_of(&observer).await.len(), 5);

    // Redis restarts (persisted, as in production): sessions and their index are still there.
    let redis = app.redis.as_mut().unwrap();
    redis.stop().await;
    assert_eq!(
        observer.api_get("/api/auth/sessions").await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a Redis outage is a 503, not an empty list"
    );
    redis.restart().await;
    let listed = wait_for(
        "Redis to be back",
        std::time::Duration::from_secs(10),
        || async {
            let response = observer.api_get("/api/auth/sessions").await;
            if response.status() != StatusCode::OK {
                return None;
            }
            let body: Value = response.json().await.unwrap();
            Some(body["sessions"].as_array().unwrap().len())
        },
    )
    .await;
    assert_eq!(listed, 5);
    for browser in &browsers[4..] {
        // Each instance reconnects on its own: a 503 may come first, never a 401.
        wait_for(
            "each session to answer again",
            std::time::Duration::from_secs(10),
            || async {
                let (status, _) = browser.user().await;
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "a Redis restart is not a logout"
                );
                (status == StatusCode::OK).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn my_sessions_work_on_the_in_memory_store() {
    let app = TestApp::builder().in_memory().start().await;
    let laptop = Browser::with_user_agent(&app.url, LAPTOP);
    laptop.login("alice").await;
    let phone = Browser::with_user_agent(&app.url, PHONE);
    phone.login("alice").await;
    let listed = sessions_of(&phone).await;
    assert_eq!(listed.len(), 2);
    let laptop_id = listed.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        phone
            .api_delete(&format!("/api/auth/sessions/{laptop_id}"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(!alive(&laptop).await);
    assert_eq!(sessions_of(&phone).await.len(), 1);
    assert_eq!(phone.logout().await.0, StatusCode::OK);
    let relogin = Browser::new(&app.url);
    relogin.login("alice").await;
    assert_eq!(
        sessions_of(&relogin).await.len(),
        1,
        "a logout leaves the index too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_beyond_max_per_user_ends_the_least_recently_used_and_revokes_its_refresh_token() {
    // Idle timeout 20 s: uses are filed every 2 s, so "least recently used" is observable.
    let mut app = TestApp::builder()
        .idle_timeout(20)
        .session_toml("max_per_user = 2\n")
        .start()
        .await;
    let other_instance = app.start_another_instance().await;
    let first = Browser::new(&app.url);
    first.login("alice").await;
    let second = Browser::new(&other_instance);
    second.login("alice").await;
    let second_seen = sessions_of(&second)
        .await
        .iter()
        .map(|s| s["last_seen_at"].as_u64().unwrap())
        .max()
        .unwrap();
    // The first is used after the second logged in: the second becomes the least recent.
    wait_for(
        "the first session's use to be filed",
        std::time::Duration::from_secs(10),
        || async {
            assert_eq!(
                first.api_get("/api/orders/x").await.status(),
                StatusCode::OK
            );
            let listed = sessions_of(&first).await;
            let own = listed.iter().find(|s| s["current"] == true).unwrap();
            (own["last_seen_at"].as_u64().unwrap() > second_seen).then_some(())
        },
    )
    .await;
    let third = Browser::new(&app.url);
    third.login("alice").await;
    assert!(
        !alive(&second).await,
        "the least recently used session ended"
    );
    assert!(alive(&first).await && alive(&third).await);
    wait_for_revocations(&app, 1).await;
    let bob = Browser::new(&app.url);
    bob.login("bob").await;
    assert!(
        alive(&first).await,
        "another user's login displaces nothing of alice's"
    );

    // Concurrent logins on both instances: the user ends at exactly the limit, never above.
    // A login that loses a same-second race to the limit is told so (409, log in again).
    let browsers = browsers_on(4, [&app.url, &other_instance]);
    let outcomes = futures_util::future::join_all(
        browsers
            .iter()
            .map(|browser| browser.login_as("alice", None)),
    )
    .await;
    for outcome in &outcomes {
        let status = outcome.response.status();
        assert!(
            status == StatusCode::SEE_OTHER || status == StatusCode::CONFLICT,
            "a login completes or is told it lost the race: {status}"
        );
    }
    let mut survivors = Vec::new();
    for browser in browsers.iter().chain([&first, &third]) {
        if alive(browser).await {
            survivors.push(browser);
        }
    }
    assert_eq!(survivors.len(), 2);
    assert_eq!(sessions_of(survivors[0]).await.len(), 2, "the index agrees");
    // Every ended session's refresh token was revoked (a revocation ends the provider's grant):
    // the provider holds exactly the two survivors' and bob's.
    wait_for(
        "every ended session's refresh token to be revoked",
        std::time::Duration::from_secs(5),
        || async { (app.provider.stored("RefreshToken").await == 3).then_some(()) },
    )
    .await;
    assert_eq!(app.provider.stats().await["revocation_errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_in_the_same_second_on_two_instances_never_evict_the_newest() {
    let mut app = TestApp::builder()
        .session_toml("max_per_user = 2\n")
        .start()
        .await;
    let other_instance = app.start_another_instance().await;
    let instances = [app.url.clone(), other_instance];
    for round in 0..20 {
        // Three logins of one user, approved at the provider first, then finished back to
        // back (within a second) on alternating instances: the two admitted last stay.
        let user = format!("same-second-{round}");
        let mut approved = Vec::new();
        for at in 0..3 {
            let browser = Browser::new(&app.url);
            let authorization = browser.begin_login(None).await;
            let callback = browser.authorize_at_provider(authorization, &user).await;
            approved.push((browser, on_instance(&callback, &instances[at % 2])));
        }
        for (browser, callback) in &approved {
            let response = browser.get(callback.as_str()).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "round {round}");
        }
        let survivors = [
            alive(&approved[0].0).await,
            alive(&approved[1].0).await,
            alive(&approved[2].0).await,
        ];
        assert_eq!(
            survivors,
            [false, true, true],
            "round {round}: the oldest login ends, the newest two stay"
        );
    }
}

#[tokio::test]
async fn ending_the_current_session_by_its_id_revokes_its_refresh_token_without_escrow() {
    let app = TestApp::builder()
        .session_toml("refresh_token_escrow = false\n")
        .start()
        .await;
    let laptop = Browser::new(&app.url);
    laptop.login("alice").await;
    let phone = Browser::new(&app.url);
    phone.login("alice").await;
    assert_eq!(app.provider.stored("RefreshToken").await, 2);
    let own = current_id(&sessions_of(&laptop).await);
    let response = laptop
        .api_delete(&format!("/api/auth/sessions/{own}"))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("vestibule=;")
    );
    assert!(!alive(&laptop).await);
    // As a logout: the refresh token the record held is revoked at the provider.
    wait_for_revocations(&app, 1).await;
    wait_for(
        "the provider to drop the laptop's grant",
        std::time::Duration::from_secs(5),
        || async { (app.provider.stored("RefreshToken").await == 1).then_some(()) },
    )
    .await;
    assert!(alive(&phone).await, "the phone's session and grant stay");
}

#[tokio::test]
async fn asking_again_and_again_to_end_sessions_that_are_not_there_is_audited_a_bounded_number_of_times()
 {
    let (_app, binary, _dir) = binary_in_front(TestApp::builder(), |config| config).await;
    let alice = Browser::new(&binary.base);
    alice.login("alice").await;
    let other = Browser::new(&binary.base);
    other.login("alice").await;
    let ended_by_user = || {
        crate::audit::audit_events(&binary)
            .into_iter()
            .filter(|event| event["event"] == "sessions_ended_by_user")
            .collect::<Vec<Value>>()
    };
    for call in 0..60 {
        let response = alice.api_delete("/api/auth/sessions").await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["ended"], usize::from(call == 0), "call {call}");
    }
    // A logout after them: once its event is in the log, theirs are too.
    assert_eq!(alice.logout().await.0, StatusCode::OK);
    wait_for(
        "the logout's audit event",
        std::time::Duration::from_secs(10),
        || async {
            crate::audit::audit_events(&binary)
                .iter()
                .any(|event| event["event"] == "logout")
                .then_some(())
        },
    )
    .await;
    let recorded = ended_by_user();
    let counts: Vec<&Value> = recorded
        .iter()
        .map(|event| &event["sessions_ended"])
        .collect();
    assert_eq!(
        counts,
        [1, 0],
        "every end that ended something, and one line for the 59 that ended nothing: {recorded:?}"
    );
}

/// The provider session (`sid`) of `browser`'s session.
pub(crate) async fn provider_session_of(browser: &Browser) -> String {
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    user["claims"]["sid"]
        .as_str()
        .expect("the ID token names its provider session")
        .to_owned()
}

#[tokio::test]
async fn the_index_keys_in_redis_do_not_confirm_a_guessed_user_or_provider_session() {
    let app = TestApp::start().await;
    let alice = Browser::new(&app.url);
    alice.login("alice").await;
    let sid = provider_session_of(&alice).await;
    let bob = Browser::new(&app.url);
    bob.login("bob").await;
    // The marks that ends leave: every session of bob, and alice's provider session.
    let token = app.provider.logout_token_for_sub("bob", "dump-1").await;
    let (status, _, _) = crate::backchannel_logout::post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK);
    let token = app.provider.logout_token_for_sid(&sid, "dump-2").await;
    let (status, _, _) = crate::backchannel_logout::post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK);
    let alice_again = Browser::new(&app.url);
    alice_again.login("alice").await;
    let again_sid = provider_session_of(&alice_again).await;

    let all = app.redis().keys("vestibule:*").await;
    // What anyone holding a dump could compute from a guess: none of it is there.
    for (kind, guess) in [
        ("user", "alice"),
        ("user", "bob"),
        ("user-ended", "bob"),
        ("sid", sid.as_str()),
        ("sid", again_sid.as_str()),
        ("sid-ended", sid.as_str()),
    ] {
        let unkeyed = compact_storage_key(kind, guess.as_bytes());
        assert!(
            !all.contains(&unkeyed),
            "{unkeyed} ({kind} {guess}) in {all:?}"
        );
        let hex = vestibule::session::store::storage_key(kind, guess.as_bytes());
        assert!(!all.contains(&hex), "{hex} in {all:?}");
    }
    // The keyed ones are: alice's index (bob's went with his last session), the three
    // provider sessions' (left to expire), and both marks.
    for (pattern, count) in [
        ("vestibule:user:*", 1),
        ("vestibule:sid:*", 3),
        ("vestibule:user-ended:*", 1),
        ("vestibule:sid-ended:*", 1),
    ] {
        assert_eq!(
            app.redis().keys(pattern).await.len(),
            count,
            "{pattern}: {all:?}"
        );
    }
    // And they work: alice's session is listed and ends by its provider session.
    assert_eq!(sessions_of(&alice_again).await.len(), 1);
    let token = app
        .provider
        .logout_token_for_sid(&again_sid, "dump-3")
        .await;
    let (status, _, _) = crate::backchannel_logout::post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!alive(&alice_again).await);
}

/// `count` sessions of `user`, each in a browser of its own, filed as an earlier release filed
/// them (see [`file_as_an_earlier_release`]).
async fn logged_in_under_an_earlier_release(
    app: &TestApp,
    user: &str,
    count: usize,
) -> Vec<Browser> {
    let browsers: Vec<Browser> = (0..count).map(|_| Browser::new(&app.url)).collect();
    for browser in &browsers {
        browser.login(user).await;
    }
    file_as_an_earlier_release(app, user, &browsers).await;
    browsers
}

/// Three sessions of `user` across an upgrade: two filed by an earlier release, then one
/// since, the last.
pub(crate) async fn sessions_across_an_upgrade(app: &TestApp, user: &str) -> Vec<Browser> {
    let mut browsers = logged_in_under_an_earlier_release(app, user, 2).await;
    let since = Browser::new(&app.url);
    since.login(user).await;
    browsers.push(since);
    browsers
}

/// Files the sessions of `user` (their browsers) as an earlier release filed them: under the
/// unkeyed SHA-256 names of `sub` and `sid`, without admission order.
async fn file_as_an_earlier_release(app: &TestApp, user: &str, browsers: &[Browser]) {
    let mut filed = Vec::new();
    for browser in browsers {
        let sid = provider_session_of(browser).await;
        filed.push((sid, current_id(&sessions_of(browser).await)));
    }
    let mut redis = app.redis().connection().await;
    let keyed = app.redis().keys("vestibule:user:*").await;
    assert_eq!(keyed.len(), 1, "only {user}'s index: {keyed:?}");
    let legacy_user = compact_storage_key("user", user.as_bytes());
    let _: () = redis::cmd("RENAME")
        .arg(&keyed[0])
        .arg(&legacy_user)
        .query_async(&mut redis)
        .await
        .unwrap();
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&legacy_user)
        .query_async(&mut redis)
        .await
        .unwrap();
    for field in fields
        .iter()
        .filter(|field| field.starts_with("o:") || field.starts_with('#'))
    {
        let _: () = redis::cmd("HDEL")
            .arg(&legacy_user)
            .arg(field)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    for key in app.redis().keys("vestibule:sid:*").await {
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    for (sid, handle) in filed {
        let legacy_sid = compact_storage_key("sid", sid.as_bytes());
        let _: () = redis::cmd("SADD")
            .arg(&legacy_sid)
            .arg(user_index::member(&legacy_user, &handle))
            .query_async(&mut redis)
            .await
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(&legacy_sid)
            .arg(3600)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    assert_eq!(app.redis().keys("vestibule:user:*").await, [legacy_user]);
}

#[tokio::test]
async fn sessions_filed_under_an_earlier_releases_unkeyed_names_are_listed_counted_and_ended() {
    let app = TestApp::builder()
        .session_toml("max_per_user = 3\n")
        .start()
        .await;
    let earlier = logged_in_under_an_earlier_release(&app, "alice", 3).await;
    assert_eq!(sessions_of(&earlier[0]).await.len(), 3, "listed");

    // A new login counts them against the limit: one of them ends.
    let new = Browser::new(&app.url);
    new.login("alice").await;
    let mut left = Vec::new();
    for browser in &earlier {
        if alive(browser).await {
            left.push(browser);
        }
    }
    assert_eq!(
        left.len(),
        2,
        "three sessions at most, the new one among them"
    );
    assert_eq!(sessions_of(&new).await.len(), 3);

    // Ended by its id, and by its provider session.
    let id = current_id(&sessions_of(left[0]).await);
    assert_eq!(
        new.api_delete(&format!("/api/auth/sessions/{id}"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(!alive(left[0]).await);
    let sid = provider_session_of(left[1]).await;
    let token = app.provider.logout_token_for_sid(&sid, "earlier-1").await;
    let (status, _, _) = crate::backchannel_logout::post_logout_token(&app.url, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!alive(left[1]).await);
    assert_eq!(sessions_of(&new).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sessions_stay_listed_counted_and_endable_through_a_key_rotation() {
    let public_port = free_port();
    let public = format!("http://127.0.0.1:{public_port}");
    let app = TestApp::builder()
        .public_port(public_port)
        .session_toml("max_per_user = 6\n")
        .start()
        .await;
    // Each step of the documented rotation on an instance of its own, on one Redis.
    let mut instances = Vec::new();
    let step = |keys: String| {
        let port = free_port();
        let config = config(&app, port, &keys);
        async move {
            let task = spawn_vestibule(&config).await;
            (format!("http://127.0.0.1:{port}"), task, config)
        }
    };
    let (k1, task, _) = step(ring(&[("k1", K1)])).await;
    instances.push(task);
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(login_on(&k1, &public, "alice").await);
    }
    let idle = login_on(&k1, &public, "alice").await;
    let (k1_k2, task, _) = step(ring(&[("k1", K1), ("k2", K2)])).await;
    instances.push(task);
    sessions.push(login_on(&k1_k2, &public, "alice").await);

    // [k2 seals, k1 opens]: every session in use moves to k2 (and so to k2's names).
    let (k2_k1, task, _) = step(ring(&[("k2", K2), ("k1", K1)])).await;
    instances.push(task);
    for session in &sessions {
        works_on(&k2_k1, session, "in use through step 3").await;
    }
    let listed = sessions_of(&Browser::with_session(&k2_k1, &sessions[0])).await;
    assert_eq!(listed.len(), 6, "five in use and the idle one: {listed:?}");
    // One more login: beyond the limit (6), counted across k1's and k2's names, the idle
    // session (not used since k2 began to seal) ends.
    sessions.push(login_on(&k2_k1, &public, "alice").await);
    ended_on(&k2_k1, &idle, "the least recently used, beyond the limit").await;
    for session in &sessions {
        works_on(&k2_k1, session, "within the limit").await;
    }

    // [k2]: k1 is gone. Every session is still listed and ends every way there is.
    let (k2, task, k2_config) = step(ring(&[("k2", K2)])).await;
    instances.push(task);
    let newest = Browser::with_session(&k2, sessions.last().unwrap());
    let listed = sessions_of(&newest).await;
    assert_eq!(listed.len(), 6, "{listed:?}");
    // By its id, from another of the user's sessions.
    let first = Browser::with_session(&k2, &sessions[0]);
    let first_id = current_id(&sessions_of(&first).await);
    assert_eq!(
        newest
            .api_delete(&format!("/api/auth/sessions/{first_id}"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    ended_on(&k2, &sessions[0], "ended by its id").await;
    // By back-channel logout, naming its provider session.
    let second_sid = provider_session_of(&Browser::with_session(&k2, &sessions[1])).await;
    let token = app
        .provider
        .logout_token_for_sid(&second_sid, "rotated-1")
        .await;
    let (status, _, _) = crate::backchannel_logout::post_logout_token(&k2, &token).await;
    assert_eq!(status, StatusCode::OK);
    ended_on(&k2, &sessions[1], "ended by its provider session").await;
    // By the operator's kill switch, with the deployment's [k2] configuration.
    let revoked = crate::operator::report(&crate::operator::vestibule_configured(
        &k2_config,
        &["sessions", "revoke", "--sub", "alice"],
    ));
    assert_eq!(revoked["ended"], 4, "{revoked}");
    for session in &sessions {
        ended_on(&k2, session, "ended by the operator").await;
    }
    // And by back-channel logout naming the user. (A login whose ID token is from the second
    // of the operator's end, or before, is refused as overtaken by it: the next one.)
    wait_for_the_next_second().await;
    let again = login_on(&k2, &public, "alice").await;
    let token = app
        .provider
        .logout_token_for_sub("alice", "rotated-2")
        .await;
    let (status, _, _) = crate::backchannel_logout::post_logout_token(&k2, &token).await;
    assert_eq!(status, StatusCode::OK);
    ended_on(&k2, &again, "ended by its user's logout at the provider").await;
    drop(instances);
}
