//! Session watches across two instances on one real Redis: a watch held on instance A (as a
//! WebSocket or SSE relay holds it) resolves within 2 s of its session ending on instance B,
//! however it ends, with the per-instance record cache on or off; a Redis outage does not
//! end it; and an idle watch costs Redis nothing between its safety polls.

use std::time::{Duration, Instant};

use vestibule::clock::unix_now;
use vestibule::session::store::redis::cache::CacheSettings;
use vestibule::session::store::{RedisTls, RedisTopology, SentinelAuth};
use vestibule::session::{
    MasterKey, SessionCookie, SessionEnd, SessionOrigin, SessionRecord, SessionWatch, Sessions,
    Store, Timeout, TokenSet,
};

use crate::harness::redis_topologies::{RedisCluster, SENTINEL_PASSWORD, SentinelGroup};
use crate::harness::{RedisServer, wait_for};

/// How soon a watch must report an end made on another instance.
const PROMPTLY: Duration = Duration::from_secs(2);

/// Whether an instance keeps the tracked record cache.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cache {
    On,
    Off,
}

/// One instance's session layer on `topology`.
pub(crate) async fn instance(topology: &RedisTopology, cache: Cache, idle: Duration) -> Sessions {
    let settings = match cache {
        Cache::On => CacheSettings::new(100, idle),
        Cache::Off => None,
    };
    let store = Store::redis(topology, &RedisTls::default(), settings).unwrap();
    if let Some(cache) = store.cache() {
        wait_for("the cache to serve", Duration::from_secs(10), || async {
            cache.is_serving().then_some(())
        })
        .await;
    }
    Sessions::new(
        store,
        MasterKey::new([42; 32]),
        idle,
        Duration::from_secs(3600),
    )
}

/// Two instances on `redis`, both with the cache as `cache` says.
async fn two_instances(redis: &RedisServer, cache: Cache, idle: Duration) -> (Sessions, Sessions) {
    (
        instance(&redis.topology(), cache, idle).await,
        instance(&redis.topology(), cache, idle).await,
    )
}

pub(crate) fn record(expires_at: u64) -> SessionRecord {
    SessionRecord {
        sub: "alice".into(),
        tokens: TokenSet {
            access_token: "at".into(),
            access_expires_at: None,
            obtained_at: unix_now(),
            refresh_token: None,
            id_token: "id".into(),
            expiry_assumed: false,
            from_forced_refresh: false,
            userinfo: None,
            principal: None,
            dpop_key: None,
            dpop_bound: false,
        },
        created_at: unix_now(),
        expires_at,
        logout_sid: "sid".into(),
        handle: vestibule::random::url_safe_id(),
        origin_network: String::new(),
        origin_browser: String::new(),
        provider: None,
    }
}

/// Logs alice in through `sessions`; her cookie and her record's handle.
async fn log_in(sessions: &Sessions, expires_at: u64) -> (SessionCookie, String) {
    log_in_as(sessions, record(expires_at), &SessionOrigin::default()).await
}

pub(crate) async fn log_in_as(
    sessions: &Sessions,
    record: SessionRecord,
    origin: &SessionOrigin,
) -> (SessionCookie, String) {
    let cookie = sessions.create(&record, origin).await.unwrap();
    (cookie, record.handle)
}

/// A watch on `sessions` (instance A) of the session `cookie`, as a relay would open it.
async fn watch(sessions: &Sessions, cookie: &SessionCookie) -> SessionWatch {
    let active = sessions.load(cookie).await.unwrap().unwrap();
    let mut watch = sessions.watch(&active);
    assert!(still_open(&mut watch, Duration::from_millis(300)).await);
    watch
}

async fn still_open(watch: &mut SessionWatch, long: Duration) -> bool {
    tokio::time::timeout(long, watch.ended()).await.is_err()
}

/// Waits for the watch to report an end; how long it took since `since`.
async fn ended_within(
    watch: &mut SessionWatch,
    since: Instant,
    bound: Duration,
) -> (SessionEnd, Duration) {
    let end = tokio::time::timeout(bound.saturating_sub(since.elapsed()), watch.ended())
        .await
        .unwrap_or_else(|_| panic!("the watch did not report the end within {bound:?}"));
    (end, since.elapsed())
}

async fn a_logout_on_b_ends_the_watch_on_a(cache: Cache) {
    let redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis, cache, Duration::from_secs(600)).await;
    let (cookie, _) = log_in(&a, unix_now() + 3600).await;
    let mut watch = watch(&a, &cookie).await;
    let ended_at = Instant::now();
    b.end(&cookie).await.unwrap().unwrap();
    let (end, took) = ended_within(&mut watch, ended_at, PROMPTLY).await;
    assert_eq!(end, SessionEnd::Ended);
    eprintln!("logout on B seen on A ({cache:?} cache) after {took:?}");
}

#[tokio::test]
async fn a_logout_on_another_instance_ends_the_watch_within_2_s_with_the_cache() {
    a_logout_on_b_ends_the_watch_on_a(Cache::On).await;
}

#[tokio::test]
async fn a_logout_on_another_instance_ends_the_watch_within_2_s_without_the_cache() {
    a_logout_on_b_ends_the_watch_on_a(Cache::Off).await;
}

#[tokio::test]
async fn ends_through_the_users_index_on_another_instance_end_the_watch_within_2_s() {
    for cache in [Cache::On, Cache::Off] {
        let redis = RedisServer::start().await;
        let (a, b) = two_instances(&redis, cache, Duration::from_secs(600)).await;
        // "My sessions" or the operator's revoke: one session by its handle.
        let (cookie, handle) = log_in(&a, unix_now() + 3600).await;
        let mut by_handle = watch(&a, &cookie).await;
        // A back-channel logout: every session of the provider session.
        let in_provider_session = SessionOrigin {
            provider_session: Some("sid".into()),
            ..SessionOrigin::default()
        };
        let (cookie, _) = log_in_as(&a, record(unix_now() + 3600), &in_provider_session).await;
        let mut by_provider = watch(&a, &cookie).await;

        let ended_at = Instant::now();
        assert_eq!(b.end_by_handle("alice", &handle).await.unwrap().count, 1);
        let (end, took) = ended_within(&mut by_handle, ended_at, PROMPTLY).await;
        assert_eq!(end, SessionEnd::Ended);
        assert!(still_open(&mut by_provider, Duration::from_millis(300)).await);
        eprintln!("end by handle on B seen on A ({cache:?} cache) after {took:?}");

        let ended_at = Instant::now();
        assert_eq!(b.end_provider_session("sid", None).await.unwrap().count, 1);
        let (end, took) = ended_within(&mut by_provider, ended_at, PROMPTLY).await;
        assert_eq!(end, SessionEnd::Ended);
        eprintln!("back-channel logout on B seen on A ({cache:?} cache) after {took:?}");
    }
}

#[tokio::test]
async fn an_eviction_beyond_max_per_user_on_another_instance_ends_the_watch_within_2_s() {
    let redis = RedisServer::start().await;
    let idle = Duration::from_secs(600);
    let a = instance(&redis.topology(), Cache::On, idle).await;
    let b = instance(&redis.topology(), Cache::Off, idle)
        .await
        .with_max_per_user(1);
    let (cookie, _) = log_in(&a, unix_now() + 3600).await;
    let mut watch = watch(&a, &cookie).await;
    let ended_at = Instant::now();
    let created = b
        .create_within_limit(&record(unix_now() + 3600), &SessionOrigin::default())
        .await
        .unwrap();
    assert_eq!(created.displaced.count, 1);
    let (end, _) = ended_within(&mut watch, ended_at, PROMPTLY).await;
    assert_eq!(end, SessionEnd::Ended);
}

#[tokio::test]
async fn the_idle_deadline_ends_the_watch_unless_another_instance_uses_the_session() {
    for cache in [Cache::On, Cache::Off] {
        let redis = RedisServer::start().await;
        let idle = Duration::from_secs(3);
        let (a, b) = two_instances(&redis, cache, idle).await;
        let (cookie, _) = log_in(&a, unix_now() + 3600).await;
        let mut watch = watch(&a, &cookie).await;
        // Used on B (fresh reads push the idle deadline back) past the deadline A read first.
        let used_until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < used_until {
            assert!(still_open(&mut watch, Duration::from_millis(500)).await);
            assert!(b.load_touched(&cookie).await.unwrap().is_some());
        }
        let last_use = Instant::now();
        let (end, took) = ended_within(&mut watch, last_use, idle + PROMPTLY).await;
        assert_eq!(end, SessionEnd::Expired(Timeout::Idle));
        assert!(took >= idle - Duration::from_millis(100), "{took:?}");
        eprintln!(
            "idle end ({cache:?} cache) seen {:?} after the deadline",
            took.saturating_sub(idle)
        );
    }
}

#[tokio::test]
async fn the_absolute_deadline_ends_the_watch_even_while_the_session_is_used() {
    let redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis, Cache::On, Duration::from_secs(600)).await;
    let (cookie, _) = log_in(&a, unix_now() + 3).await;
    let mut watch = watch(&a, &cookie).await;
    let bound = Instant::now() + Duration::from_secs(3) + PROMPTLY;
    let end = loop {
        assert!(
            Instant::now() < bound,
            "the absolute deadline ends the watch within 2 s"
        );
        if let Ok(end) = tokio::time::timeout(Duration::from_millis(300), watch.ended()).await {
            break end;
        }
        let _ = b.load_touched(&cookie).await.unwrap();
    };
    assert_eq!(end, SessionEnd::Expired(Timeout::Absolute));
}

#[tokio::test]
async fn a_redis_outage_does_not_end_the_watch_and_it_goes_on_after_the_restart() {
    for cache in [Cache::On, Cache::Off] {
        let mut redis = RedisServer::start().await;
        let (a, b) = two_instances(&redis, cache, Duration::from_secs(600)).await;
        let (cookie, _) = log_in(&a, unix_now() + 3600).await;
        let mut watching = watch(&a, &cookie).await;
        // A relay that loaded its session just before the outage and watches during it:
        // its reads fail.
        let loaded = a.load(&cookie).await.unwrap().unwrap();
        redis.stop().await;
        let mut opened_during = a.watch(&loaded);
        let (before, during) = tokio::join!(
            still_open(&mut watching, Duration::from_secs(4)),
            still_open(&mut opened_during, Duration::from_secs(4)),
        );
        assert!(
            before && during,
            "an outage is not an end ({cache:?} cache)"
        );
        redis.restart().await;
        assert!(
            b.load_fresh(&cookie).await.unwrap().is_some(),
            "kept by Redis"
        );
        let (before, during) = tokio::join!(
            still_open(&mut watching, Duration::from_secs(3)),
            still_open(&mut opened_during, Duration::from_secs(3)),
        );
        assert!(before && during, "the session is still there");
        // Watching again after the reconnection: an end on B is pushed as before.
        let ended_at = Instant::now();
        b.end(&cookie).await.unwrap().unwrap();
        for watch in [&mut watching, &mut opened_during] {
            let (end, took) = ended_within(watch, ended_at, PROMPTLY).await;
            assert_eq!(end, SessionEnd::Ended);
            eprintln!("after the restart ({cache:?} cache), an end on B seen on A after {took:?}");
        }
    }
}

#[tokio::test]
async fn a_session_ended_during_an_outage_ends_the_watch_once_redis_is_back() {
    let mut redis = RedisServer::start().await;
    let (a, _) = two_instances(&redis, Cache::Off, Duration::from_secs(600)).await;
    let (cookie, _) = log_in(&a, unix_now() + 3600).await;
    let mut watch = watch(&a, &cookie).await;
    redis.stop().await;
    // The record is gone when Redis comes back (as if ended by an instance that reached it).
    std::fs::remove_dir_all(redis.dir().join("appendonlydir")).unwrap();
    redis.restart().await;
    let back = Instant::now();
    let (end, took) = ended_within(&mut watch, back, PROMPTLY + Duration::from_secs(2)).await;
    assert_eq!(end, SessionEnd::Ended);
    eprintln!("a session gone across an outage seen {took:?} after Redis came back");
}

/// `calls` of each command in `INFO commandstats`.
async fn command_calls(redis: &RedisServer) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

fn calls_of(stats: &[(String, u64)], name: &str) -> u64 {
    stats
        .iter()
        .find(|(command, _)| command == name)
        .map_or(0, |(_, calls)| *calls)
}

#[tokio::test]
async fn idle_watches_cost_redis_nothing_between_safety_polls() {
    const WATCHES: usize = 200;
    const WINDOW: Duration = Duration::from_secs(20);
    let redis = RedisServer::start().await;
    let (a, _) = two_instances(&redis, Cache::Off, Duration::from_secs(600)).await;
    let mut watches = Vec::new();
    for user in 0..WATCHES {
        // Users of their own: none is evicted beyond `max_per_user`.
        let record = SessionRecord {
            sub: format!("user-{user}"),
            ..record(unix_now() + 3600)
        };
        let (cookie, _) = log_in_as(&a, record, &SessionOrigin::default()).await;
        let active = a.load(&cookie).await.unwrap().unwrap();
        watches.push(a.watch(&active));
    }
    let held = futures_util::future::join_all(
        watches
            .iter_mut()
            .map(|watch| still_open(watch, WINDOW + Duration::from_secs(15))),
    );
    let measured = async {
        // Every watch has made its first read once as many PTTLs are counted.
        wait_for(
            "every watch's first read",
            Duration::from_secs(10),
            || async {
                (calls_of(&command_calls(&redis).await, "pttl") >= WATCHES as u64).then_some(())
            },
        )
        .await;
        let before = command_calls(&redis).await;
        // A rate over a fixed window: the quantity measured, not a wait for a condition.
        tokio::time::sleep(WINDOW).await;
        let after = command_calls(&redis).await;
        let delta = |name| calls_of(&after, name) - calls_of(&before, name);
        let total: u64 = after.iter().map(|(_, calls)| calls).sum::<u64>()
            - before.iter().map(|(_, calls)| calls).sum::<u64>();
        (delta("pttl"), delta("ping"), total)
    };
    let (held, (pttl, ping, total)) = tokio::join!(held, measured);
    assert!(held.iter().all(|open| *open), "no watch ended");
    eprintln!(
        "{WATCHES} idle watches over {WINDOW:?}: {pttl} PTTL, {ping} PING, {total} commands in all \
         (INFO commandstats itself included)"
    );
    // The safety poll comes after 30 s at the earliest: no watch reads within the window.
    assert_eq!(pttl, 0, "idle watches read nothing between safety polls");
    // The tracking connection's heartbeat, per instance (not per watch), and the INFO calls.
    let per_second = total as f64 / WINDOW.as_secs_f64();
    assert!(per_second < 5.0, "{total} commands in {WINDOW:?}");
}

#[tokio::test]
async fn on_a_sentinel_group_an_end_reaches_the_watch_before_and_after_a_failover() {
    let mut group = SentinelGroup::start().await;
    let topology = RedisTopology::parse(&group.url())
        .unwrap()
        .with_sentinel_auth(SentinelAuth {
            username: None,
            password: SENTINEL_PASSWORD.into(),
        })
        .unwrap();
    let idle = Duration::from_secs(600);
    let a = instance(&topology, Cache::On, idle).await;
    let b = instance(&topology, Cache::Off, idle).await;
    let (first, _) = log_in(&a, unix_now() + 3600).await;
    let (second, _) = log_in(&a, unix_now() + 3600).await;
    let mut first_watch = watch(&a, &first).await;
    let mut second_watch = watch(&a, &second).await;

    let ended_at = Instant::now();
    b.end(&first).await.unwrap().unwrap();
    let (end, _) = ended_within(&mut first_watch, ended_at, PROMPTLY).await;
    assert_eq!(end, SessionEnd::Ended);

    let old = group.kill_master().await;
    group.wait_for_failover(old).await;
    wait_for(
        "the session on the new master",
        Duration::from_secs(20),
        || async { b.load_fresh(&second).await.ok().flatten().map(|_| ()) },
    )
    .await;
    // The failover is no end; meanwhile the watch's tracking connection follows the master.
    assert!(still_open(&mut second_watch, Duration::from_secs(5)).await);
    let ended_at = Instant::now();
    b.end(&second).await.unwrap().unwrap();
    let (end, _) = ended_within(&mut second_watch, ended_at, PROMPTLY).await;
    assert_eq!(end, SessionEnd::Ended);
}

#[tokio::test]
async fn on_a_cluster_where_nothing_is_pushed_the_watch_polls_and_sees_an_end_within_2_s() {
    let cluster = RedisCluster::start().await;
    let topology = RedisTopology::parse(&cluster.url()).unwrap();
    let idle = Duration::from_secs(600);
    let a = instance(&topology, Cache::On, idle).await;
    let b = instance(&topology, Cache::Off, idle).await;
    let (cookie, _) = log_in(&a, unix_now() + 3600).await;
    let mut watch = watch(&a, &cookie).await;
    assert!(still_open(&mut watch, Duration::from_secs(2)).await);
    let ended_at = Instant::now();
    b.end(&cookie).await.unwrap().unwrap();
    let (end, took) = ended_within(&mut watch, ended_at, PROMPTLY).await;
    assert_eq!(end, SessionEnd::Ended);
    eprintln!("on a Cluster, an end on B seen on A after {took:?}");
}
