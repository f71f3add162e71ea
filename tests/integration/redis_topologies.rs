//! Sessions on the Redis deployments users run beyond one server, started by the test: a
//! Sentinel group whose master is killed under load (in plaintext, and TLS-only with a private
//! CA and client certificates), and a three-master Cluster whose slots move and whose nodes
//! restart. Never a logout, never a lost refresh token.

use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::load::CallLoop;
use crate::harness::redis_topologies::{RedisCluster, SENTINEL_PASSWORD, SentinelGroup};
use crate::harness::{Browser, RedisServer, TestApp, free_port, spawn_vestibule, wait_for};

/// Calls `path` until it answers 200 (within `limit`), asserting every other answer is a 503
/// (the store unavailable), never a 401 (a logout).
async fn until_served(browser: &Browser, path: &str, limit: Duration) {
    wait_for("a call to be served again", limit, || async {
        let status = browser.api_get(path).await.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {status}"
        );
        (status == StatusCode::OK).then_some(())
    })
    .await;
}

/// `GET` + `GETEX` commands `server` has served.
async fn session_reads(servers: &[&RedisServer]) -> u64 {
    let mut total = 0;
    for server in servers.iter().filter(|server| server.is_running()) {
        total += server.session_reads().await;
    }
    total
}

/// Once `browser`'s access token is past its expiry, the call to `path` is served and takes
/// exactly one refresh grant: the refresh token the record holds is the provider's current one
/// (the provider rotates refresh tokens and refuses a used one). Counted from the grants
/// already made, since calls under load before this one may have refreshed too.
async fn assert_refreshed(app: &TestApp, browser: &Browser, path: &str) {
    browser.wait_past_access_token_expiry().await;
    let grants = app.provider.refresh_grants().await;
    assert_eq!(browser.api_get(path).await.status(), StatusCode::OK);
    assert_eq!(app.provider.refresh_grants().await, grants + 1);
}

/// Waits until `replica` holds what `master` holds at `key` (replication caught up).
async fn wait_until_replicated(master: &RedisServer, replica: &RedisServer, key: &str, what: &str) {
    let held_by = |server: &RedisServer| {
        let client = server.client();
        async move {
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut connection)
                .await
                .ok()?
        }
    };
    let on_master = held_by(master).await.expect("the record on the master");
    wait_for(what, Duration::from_secs(10), || async {
        (held_by(replica).await.as_ref() == Some(&on_master)).then_some(())
    })
    .await;
}

/// After a failover to `master`, alice's session in `browser` (cookie `session`) is whole:
/// its rotated refresh token survived (the next refresh is granted: the provider rotates
/// refresh tokens and refuses a used one); the record cache follows the new master, serving
/// again without reading Redis, and is exact: a logout through `other_instance` ends the
/// session here at once.
async fn assert_session_followed_the_failover(
    app: &TestApp,
    browser: &Browser,
    master: &RedisServer,
    other_instance: &str,
    session: &str,
) {
    assert_refreshed(app, browser, "/api/orders/refreshed").await;
    let (status, user) = browser.user().await;
    assert_eq!(
        (status, user["sub"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    wait_for(
        "the cache to serve from the new master",
        Duration::from_secs(60),
        || async {
            let before = session_reads(&[master]).await;
            for n in 0..5 {
                browser.api_get(&format!("/api/orders/cached-{n}")).await;
            }
            (session_reads(&[master]).await == before).then_some(())
        },
    )
    .await;
    let (status, _) = Browser::with_session(other_instance, session)
        .logout()
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(browser.user().await.0, StatusCode::UNAUTHORIZED);
}

/// Every answer is a 200 or a 503, and once a worker was served after the outage it is never
/// refused again.
fn assert_outage_answers(answers: &[Vec<StatusCode>]) {
    for worker in answers {
        assert!(
            worker
                .iter()
                .all(|status| *status == StatusCode::OK
                    || *status == StatusCode::SERVICE_UNAVAILABLE),
            "only 200 or 503, never a logout: {worker:?}"
        );
        if let Some(first_refusal) = worker.iter().position(|s| *s != StatusCode::OK) {
            let recovered = worker[first_refusal..]
                .iter()
                .position(|status| *status == StatusCode::OK)
                .map(|offset| first_refusal + offset);
            if let Some(recovered) = recovered {
                assert!(
                    worker[recovered..].iter().all(|s| *s == StatusCode::OK),
                    "served again, then refused again: {worker:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_every_session_and_its_refresh_token() {
    let mut group = SentinelGroup::start().await;
    // The Sentinels' own password comes from a file, the Kubernetes way.
    let password_file = group.servers[0].dir().join("sentinel-password");
    std::fs::write(&password_file, format!("{SENTINEL_PASSWORD}\n")).unwrap();
    let mut app = TestApp::builder()
        .external_redis(&group.url())
        .session_toml(&format!(
            "redis_sentinel_password_file = \"{}\"\n",
            password_file.display()
        ))
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let other_instance = app.start_another_instance().await;
    let browser = app.browser();
    browser.login("alice").await;
    let session = browser.cookie("vestibule").expect("a session cookie");

    // A refresh before the failover: the rotated refresh token is on the master and its replica.
    assert_refreshed(&app, &browser, "/api/orders/before").await;

    // Bob's record is in the instance's cache, and the replica is made to lack it (as if the
    // master had died before replicating his last write).
    let old_master_port = group.master_port().await.expect("a master");
    let alice_keys = group.server(old_master_port).session_keys().await;
    let bob = app.browser();
    bob.login("bob").await;
    let bob_key = group
        .server(old_master_port)
        .session_keys()
        .await
        .into_iter()
        .find(|key| !alice_keys.contains(key))
        .expect("bob's session key");
    let old_master_server = group.server(old_master_port);
    wait_for(
        "bob's record to be cached",
        Duration::from_secs(30),
        || async {
            let before = session_reads(&[old_master_server]).await;
            for n in 0..5 {
                assert_eq!(
                    bob.api_get(&format!("/api/orders/bob-{n}")).await.status(),
                    StatusCode::OK
                );
            }
            (session_reads(&[old_master_server]).await == before).then_some(())
        },
    )
    .await;
    let replica = group
        .servers
        .iter()
        .find(|server| server.port() != old_master_port)
        .unwrap();
    wait_until_replicated(
        old_master_server,
        replica,
        &bob_key,
        "bob's record on the replica",
    )
    .await;
    let mut on_replica = replica.connection().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-read-only")
        .arg("no")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&bob_key)
        .query_async(&mut on_replica)
        .await
        .unwrap();

    // The master dies under load; the Sentinels promote the replica.
    let load = CallLoop::start(std::slice::from_ref(&browser), 3, "/api/orders/failover");
    let killed_at = std::time::Instant::now();
    let old_master = group.kill_master().await;
    let new_master = group.wait_for_failover(old_master).await;
    let failed_over = killed_at.elapsed();
    assert_ne!(new_master, old_master);
    until_served(&browser, "/api/orders/after", Duration::from_secs(30)).await;
    eprintln!(
        "failover: the Sentinels named the new master after {failed_over:?}, served after {:?}",
        killed_at.elapsed()
    );
    let answers = load.stop().await;
    assert_outage_answers(&answers);
    // The cache did not outlive the old master: bob's record, which the new master lacks, is
    // not served from it.
    let (status, _) = bob.user().await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a record the new master lacks is gone"
    );
    let refused = answers
        .concat()
        .iter()
        .filter(|s| **s != StatusCode::OK)
        .count();
    eprintln!(
        "failover: {refused} of {} calls answered 503",
        answers.concat().len()
    );

    let master = group.server(new_master);
    assert_session_followed_the_failover(&app, &browser, master, &other_instance, &session).await;
    assert_eq!(
        browser.api_get("/api/orders/ended").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Whether anything on `port` answers a plaintext `PING` (after `AUTH` with `password`, if
/// given) in RESP: a TLS-only port takes the bytes for a bad TLS handshake and never replies
/// with `+` or `-`. The port must be open (connecting is asserted).
async fn speaks_plaintext(port: u16, password: Option<&str>) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|error| panic!("port {port} is open: {error}"));
    let auth = password.map_or_else(String::new, |password| format!("AUTH {password}\r\n"));
    stream
        .write_all(format!("{auth}PING\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    matches!(reply.first(), Some(b'+' | b'-'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_sentinel_group_serves_sessions_through_a_failover() {
    let mut group = SentinelGroup::start_tls().await;
    let files = group.tls.clone().expect("a TLS group");

    // TLS only: no Sentinel and no data server answers plaintext (each answers TLS: the
    // group's own readiness checks above went through it).
    for port in group.sentinel_ports() {
        assert!(
            !speaks_plaintext(port, Some(SENTINEL_PASSWORD)).await,
            "Sentinel {port}"
        );
    }
    for server in &group.servers {
        assert!(
            !speaks_plaintext(server.port(), None).await,
            "server {}",
            server.port()
        );
    }

    let password_file = files.ca.with_file_name("sentinel-password");
    std::fs::write(&password_file, format!("{SENTINEL_PASSWORD}\n")).unwrap();
    let certificates = format!(
        "redis_ca_file = \"{}\"\nredis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"\n",
        files.ca.display(),
        files.client.0.display(),
        files.client.1.display()
    );
    let mut app = TestApp::builder()
        .external_redis(&group.url())
        .session_toml(&format!(
            "redis_sentinel_password_file = \"{}\"\n{certificates}",
            password_file.display(),
        ))
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    // The same deployment named without TLS (`redis+sentinel://`) reaches nothing.
    let port = free_port();
    let plaintext = app
        .config_listening_on(port)
        .replacen("rediss+sentinel://", "redis+sentinel://", 1)
        .replacen(&certificates, "", 1);
    let _plaintext_instance = spawn_vestibule(&plaintext).await;
    let readiness = app
        .browser()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .status();
    assert_eq!(readiness, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app.browser().user().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the TLS instance serves");

    let other_instance = app.start_another_instance().await;
    let browser = app.browser();
    browser.login("alice").await;
    let session = browser.cookie("vestibule").expect("a session cookie");
    assert_eq!(
        browser.api_get("/api/orders/over-tls").await.status(),
        StatusCode::OK
    );
    // A refresh before the failover, its rotated refresh token replicated (over TLS).
    assert_refreshed(&app, &browser, "/api/orders/before").await;
    let old_master = group.master_port().await.expect("a master");
    let key = group.server(old_master).session_keys().await[0].clone();
    let replica = group
        .servers
        .iter()
        .find(|server| server.port() != old_master)
        .unwrap();
    wait_until_replicated(
        group.server(old_master),
        replica,
        &key,
        "the refreshed record on the replica",
    )
    .await;

    // The master dies under load; the Sentinels promote the replica; Vestibule follows.
    let load = CallLoop::start(std::slice::from_ref(&browser), 3, "/api/orders/failover");
    let old_master = group.kill_master().await;
    let new_master = group.wait_for_failover(old_master).await;
    until_served(&browser, "/api/orders/after", Duration::from_secs(30)).await;
    assert_outage_answers(&load.stop().await);

    // The record cache's tracking connection (RESP3, TLS) follows the new master too.
    let master = group.server(new_master);
    assert_session_followed_the_failover(&app, &browser, master, &other_instance, &session).await;
    assert!(master.session_keys().await.is_empty());
}

/// Every session key in the cluster (each node holds its own slots).
async fn cluster_session_keys(cluster: &RedisCluster) -> Vec<String> {
    let mut keys = Vec::new();
    for node in cluster.nodes.iter().filter(|node| node.is_running()) {
        keys.extend(node.session_keys().await);
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_sessions_through_slot_migration_and_a_node_restart() {
    let mut cluster = RedisCluster::start().await;
    let mut app = TestApp::builder()
        .external_redis(&cluster.url())
        .access_token_ttl(4)
        .refresh_skew(1)
        .start()
        .await;
    let second = app.start_another_instance().await;

    // Logins work (pending-login indexes and records live in different slots).
    let browser = app.browser();
    browser.login("alice").await;
    let session = browser.cookie("vestibule").expect("a session cookie");
    let keys = cluster_session_keys(&cluster).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0].clone();
    for user in ["bob", "alice", "bob"] {
        app.browser().login(user).await;
    }
    assert_eq!(cluster_session_keys(&cluster).await.len(), 4);

    // The cache is off on a Cluster: every call reads the session from Redis.
    let nodes: Vec<&RedisServer> = cluster.nodes.iter().collect();
    let before = session_reads(&nodes).await;
    for n in 0..5 {
        assert_eq!(
            browser
                .api_get(&format!("/api/orders/read-{n}"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    // (At least one read each; a refresh falling due meanwhile reads more.)
    let reads = session_reads(&nodes).await - before;
    assert!(reads >= 5, "{reads} reads for 5 calls");

    // The refresh lock works across slots: 20 calls on two instances at expiry, one grant.
    browser.wait_past_access_token_expiry().await;
    let doors = [browser.clone(), Browser::with_session(&second, &session)];
    let statuses =
        crate::harness::browser::call_concurrently(&doors, 20, "/api/orders/expiry").await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(app.provider.refresh_grants().await, 1);

    // The session's slot moves to another node under load: no call notices.
    let from = cluster.owner_of(&key).await;
    let to = (from + 1) % cluster.nodes.len();
    let load = CallLoop::start(&doors, 4, "/api/orders/migrating");
    cluster.migrate_slot_of(&key, to).await;
    until_served(&browser, "/api/orders/migrated", Duration::from_secs(10)).await;
    let answers = load.stop().await;
    let all: Vec<StatusCode> = answers.concat();
    assert!(
        all.iter().all(|s| *s == StatusCode::OK),
        "a slot migration is invisible: {all:?}"
    );
    assert!(
        all.len() >= 10,
        "the load ran through the migration ({})",
        all.len()
    );
    assert_eq!(cluster.owner_of(&key).await, to);
    let moved: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut cluster.nodes[to].connection().await)
        .await
        .unwrap();
    assert!(moved.is_some(), "the record moved with its slot");

    // The node holding the session restarts: 503 while it is down, never a logout, and the
    // session (persisted by the node) is served again once it is back.
    cluster.nodes[to].stop().await;
    let status = browser.api_get("/api/orders/node-down").await.status();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The other masters answer: the instance stays in rotation for the sessions they hold.
    let readiness = browser.get(format!("{}/readyz", app.url)).await.status();
    assert_eq!(readiness, StatusCode::OK);
    cluster.nodes[to].restart().await;
    until_served(&browser, "/api/orders/node-back", Duration::from_secs(30)).await;
    let (status, user) = browser.user().await;
    assert_eq!(
        (status, user["sub"].as_str()),
        (StatusCode::OK, Some("alice"))
    );

    // A refresh after all that still finds the rotated refresh token (the provider refuses
    // a used one).
    assert_refreshed(&app, &browser, "/api/orders/refreshed").await;

    // Logout through the second instance ends it on both.
    let (status, _) = Browser::with_session(&second, &session).logout().await;
    assert_eq!(status, StatusCode::OK);
    for door in &doors {
        assert_eq!(door.user().await.0, StatusCode::UNAUTHORIZED);
    }
    assert!(!cluster_session_keys(&cluster).await.contains(&key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_with_an_acl_user_serves_sessions() {
    let cluster = RedisCluster::start_tls().await;
    let files = cluster.tls.clone().expect("a TLS cluster");
    // ACLs are per node: the user exists on every one, its password in a file.
    for node in &cluster.nodes {
        node.add_acl_user("vestibule", "cluster-pw").await;
    }
    let password_file = files.ca.with_file_name("vestibule.password");
    std::fs::write(&password_file, "cluster-pw\n").unwrap();
    let url = cluster.url().replacen("://", "://vestibule@", 1);
    let app = TestApp::builder()
        .external_redis(&url)
        .session_toml(&format!(
            "redis_password_file = \"{}\"\nredis_ca_file = \"{}\"\n\
             redis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"\n",
            password_file.display(),
            files.ca.display(),
            files.client.0.display(),
            files.client.1.display()
        ))
        .start()
        .await;
    let browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/api/orders/over-tls").await.status(),
        StatusCode::OK
    );
    assert_eq!(cluster_session_keys(&cluster).await.len(), 1);
    // Vestibule's connections are the ACL user's, on the node holding the session.
    let mut users = Vec::new();
    for node in &cluster.nodes {
        users.extend(node.client_users().await);
    }
    assert!(users.iter().any(|user| user == "vestibule"), "{users:?}");
    let (status, _) = browser.logout().await;
    assert_eq!(status, StatusCode::OK);
    assert!(cluster_session_keys(&cluster).await.is_empty());
}
