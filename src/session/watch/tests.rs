//! Session watches against the in-memory store (one instance): every way a session ends
//! resolves the watch at once, and nothing else does.

use std::time::{Duration, Instant};

use super::*;
use crate::session::{MasterKey, SessionCookie, SessionOrigin, SessionRecord, Store};

/// How soon a watch must report an end.
const PROMPTLY: Duration = Duration::from_secs(2);

fn sessions(idle: u64, absolute: u64) -> Sessions {
    Sessions::new(
        Store::memory(),
        MasterKey::new([7; 32]),
        Duration::from_secs(idle),
        Duration::from_secs(absolute),
    )
}

async fn logged_in(sessions: &Sessions, expires_at: u64) -> (SessionCookie, SessionWatch) {
    let record = SessionRecord::for_testing("alice", expires_at);
    let cookie = sessions
        .create(&record, &SessionOrigin::default())
        .await
        .unwrap();
    let active = sessions.load(&cookie).await.unwrap().unwrap();
    (cookie, sessions.watch(&active))
}

/// Whether the watch stays open for `long`.
async fn still_open(watch: &mut SessionWatch, long: Duration) -> bool {
    tokio::time::timeout(long, watch.ended()).await.is_err()
}

async fn ends_promptly(watch: &mut SessionWatch) -> SessionEnd {
    tokio::time::timeout(PROMPTLY, watch.ended())
        .await
        .expect("the watch reports the end within 2 s")
}

#[tokio::test]
async fn a_logout_ends_the_watch_at_once() {
    let sessions = sessions(60, 600);
    let (cookie, mut watch) = logged_in(&sessions, unix_now() + 600).await;
    assert!(still_open(&mut watch, Duration::from_millis(200)).await);
    sessions.end(&cookie).await.unwrap().unwrap();
    assert_eq!(ends_promptly(&mut watch).await, SessionEnd::Ended);
}

#[tokio::test]
async fn an_end_through_the_users_index_ends_the_watch_at_once() {
    // "My sessions", the operator's revoke and a back-channel logout end by the user's index.
    let sessions = sessions(60, 600);
    let (cookie, mut watch) = logged_in(&sessions, unix_now() + 600).await;
    let handle = sessions
        .load(&cookie)
        .await
        .unwrap()
        .unwrap()
        .record
        .handle
        .clone();
    assert!(still_open(&mut watch, Duration::from_millis(200)).await);
    assert_eq!(
        sessions
            .end_by_handle("alice", &handle)
            .await
            .unwrap()
            .count,
        1
    );
    assert_eq!(ends_promptly(&mut watch).await, SessionEnd::Ended);
}

#[tokio::test]
async fn an_eviction_beyond_max_per_user_ends_the_watch_at_once() {
    let sessions = sessions(60, 600).with_max_per_user(1);
    let (_, mut watch) = logged_in(&sessions, unix_now() + 600).await;
    assert!(still_open(&mut watch, Duration::from_millis(200)).await);
    let newer = SessionRecord::for_testing("alice", unix_now() + 600);
    let created = sessions
        .create_within_limit(&newer, &SessionOrigin::default())
        .await
        .unwrap();
    assert_eq!(created.displaced.count, 1);
    assert_eq!(ends_promptly(&mut watch).await, SessionEnd::Ended);
}

#[tokio::test]
async fn an_unused_session_ends_the_watch_at_its_idle_deadline_which_watching_does_not_extend() {
    let sessions = sessions(2, 600);
    let (_, mut watch) = logged_in(&sessions, unix_now() + 600).await;
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(2) + PROMPTLY, watch.ended())
        .await
        .expect("the idle deadline ends the watch");
    assert_eq!(end, SessionEnd::Expired(Timeout::Idle));
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_session_in_use_keeps_its_watch_open_past_the_first_idle_deadline() {
    let sessions = sessions(2, 600);
    let (cookie, mut watch) = logged_in(&sessions, unix_now() + 600).await;
    // Used every 300 ms for 3.5 s: the idle deadline the watch read first passes meanwhile.
    let used_until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < used_until {
        assert!(still_open(&mut watch, Duration::from_millis(300)).await);
        assert!(sessions.load(&cookie).await.unwrap().is_some());
    }
    let end = tokio::time::timeout(Duration::from_secs(2) + PROMPTLY, watch.ended())
        .await
        .expect("once unused, the idle deadline ends the watch");
    assert_eq!(end, SessionEnd::Expired(Timeout::Idle));
}

#[tokio::test]
async fn the_absolute_deadline_ends_the_watch_even_in_use() {
    let sessions = sessions(60, 600);
    let (cookie, mut watch) = logged_in(&sessions, unix_now() + 2).await;
    let deadline = Instant::now() + Duration::from_secs(2) + PROMPTLY;
    let end = loop {
        assert!(
            Instant::now() < deadline,
            "the absolute deadline ends the watch"
        );
        if let Ok(end) = tokio::time::timeout(Duration::from_millis(300), watch.ended()).await {
            break end;
        }
        let _ = sessions.load(&cookie).await.unwrap();
    };
    assert_eq!(end, SessionEnd::Expired(Timeout::Absolute));
}

#[tokio::test]
async fn a_watch_abandoned_in_a_select_loop_still_sees_the_end() {
    let sessions = sessions(60, 600);
    let (cookie, mut watch) = logged_in(&sessions, unix_now() + 600).await;
    for _ in 0..5 {
        assert!(still_open(&mut watch, Duration::from_millis(10)).await);
    }
    // Ended while nobody waits on the watch.
    sessions.end(&cookie).await.unwrap().unwrap();
    assert_eq!(ends_promptly(&mut watch).await, SessionEnd::Ended);
}

#[tokio::test]
async fn a_watch_of_a_session_that_already_ended_resolves_at_once() {
    let sessions = sessions(60, 600);
    let (cookie, watch) = logged_in(&sessions, unix_now() + 600).await;
    drop(watch);
    let active = sessions.load(&cookie).await.unwrap().unwrap();
    sessions.end(&cookie).await.unwrap().unwrap();
    let mut watch = sessions.watch(&active);
    assert_eq!(ends_promptly(&mut watch).await, SessionEnd::Ended);
}

#[test]
fn jitter_stays_within_its_range() {
    for _ in 0..1000 {
        let chosen = jittered(SAFETY_POLL);
        assert!(
            (SAFETY_POLL.0..=SAFETY_POLL.1).contains(&chosen),
            "{chosen:?}"
        );
    }
}

#[tokio::test]
async fn a_watch_can_be_held_by_a_spawned_task() {
    let sessions = sessions(60, 600);
    let (cookie, mut watch) = logged_in(&sessions, unix_now() + 600).await;
    let relay = tokio::spawn(async move { watch.ended().await });
    sessions.end(&cookie).await.unwrap().unwrap();
    let end = tokio::time::timeout(PROMPTLY, relay)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, SessionEnd::Ended);
}
