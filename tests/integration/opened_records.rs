//! The tracked cache keeps each record opened beside its sealed bytes
//! (`session.local_cache_opened`), against a real Redis: a call on a cached session gets the
//! record opened at its first read, only with its own browser secret, and no longer than the
//! sealed bytes stay cached; switched off, every call opens its record again.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vestibule::clock::unix_now;
use vestibule::session::{
    Freshness, HeldToken, SessionCookie, SessionOrigin, SessionRecord, Sessions,
};

use crate::harness::{RedisServer, wait_for};
use crate::session_watch::{Cache, instance, log_in_as, record};

/// The record `sessions` hands a call on `cookie` (the session must exist).
async fn loaded(sessions: &Sessions, cookie: &SessionCookie) -> Arc<SessionRecord> {
    sessions.load(cookie).await.unwrap().unwrap().record
}

/// Waits until every change made to Redis so far (this instance's own writes and touches
/// too, whose invalidations arrive after their replies) has been reported to `sessions`'
/// cache: two probes confirmed from now on, the second one written after this moment.
async fn changes_so_far_reported(sessions: &Sessions) {
    let cache = sessions.store().cache().unwrap();
    let confirmed = cache.times_confirmed();
    wait_for(
        "two more probes confirmed",
        Duration::from_secs(10),
        || async { (cache.times_confirmed() >= confirmed + 2).then_some(()) },
    )
    .await;
}

/// Reads with `read` until two reads in a row hand over the very same value, kept in
/// `sessions`' cache. The first read goes to Redis and may write (a session's touch), so its
/// report is waited for before; the cache serves only once a probe confirmed the path.
async fn kept_by_cache<T, F, Fut>(sessions: &Sessions, mut read: F) -> Arc<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<T>>,
{
    read().await;
    changes_so_far_reported(sessions).await;
    wait_for(
        "two reads served by the cache",
        Duration::from_secs(10),
        || {
            let (first, second) = (read(), read());
            async move {
                let (first, second) = (first.await, second.await);
                Arc::ptr_eq(&first, &second).then_some(second)
            }
        },
    )
    .await
}

/// The record `sessions` keeps opened for `cookie` once its cache serves it.
async fn cached(sessions: &Sessions, cookie: &SessionCookie) -> Arc<SessionRecord> {
    kept_by_cache(sessions, || loaded(sessions, cookie)).await
}

/// How many times `sessions`' cache dropped everything it kept.
fn times_emptied(sessions: &Sessions) -> u64 {
    sessions.store().cache().unwrap().times_emptied()
}

/// Runs `reads` until one run saw the cache keep what it held throughout. On a starved CPU
/// a probe can come back late and the cache rightly empties itself (fails closed); the
/// record is then opened again, which is not what the caller is checking.
async fn while_the_cache_keeps<T, F, Fut>(sessions: &Sessions, mut reads: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    for _ in 0..5 {
        let before = times_emptied(sessions);
        let value = reads().await;
        if times_emptied(sessions) == before {
            return value;
        }
    }
    panic!("the cache emptied itself during each of 5 tries");
}

/// `cookie` with the same session id and another browser secret.
fn with_other_secret(cookie: &SessionCookie) -> SessionCookie {
    let mut bytes = URL_SAFE_NO_PAD.decode(cookie.encode()).unwrap();
    bytes[63] ^= 1;
    SessionCookie::parse(&URL_SAFE_NO_PAD.encode(bytes)).unwrap()
}

#[tokio::test]
async fn a_cached_session_is_opened_once_for_its_own_secret_until_it_changes() {
    let redis = RedisServer::start().await;
    let a = instance(&redis.topology(), Cache::On, Duration::from_secs(600)).await;
    let b = instance(&redis.topology(), Cache::On, Duration::from_secs(600)).await;
    let (cookie, _) = log_in_as(&a, record(unix_now() + 3600), &SessionOrigin::default()).await;
    let (kept, later) = while_the_cache_keeps(&a, || async {
        let kept = cached(&a, &cookie).await;
        let mut later = Vec::new();
        for _ in 0..20 {
            later.push(loaded(&a, &cookie).await);
        }
        // The session id alone (a cookie whose secret is not the record's) opens nothing,
        // kept record or not; the right cookie still gets it.
        assert!(a.load(&with_other_secret(&cookie)).await.unwrap().is_none());
        later.push(loaded(&a, &cookie).await);
        (kept, later)
    })
    .await;
    assert!(
        later.iter().all(|record| Arc::ptr_eq(&kept, record)),
        "every call gets the record opened once"
    );

    // A change made elsewhere drops the kept record with its sealed bytes: the next reads
    // open what Redis holds now.
    let on_b = b.load(&cookie).await.unwrap().unwrap();
    let mut changed = SessionRecord::clone(&on_b.record);
    changed.tokens.access_token = "rotated elsewhere".into();
    let replacement = b.prepare_replacement(&on_b, &changed).unwrap();
    assert!(b.replace(&replacement).await.unwrap());
    let after = wait_for(
        "instance A to see the change",
        Duration::from_secs(2),
        || async {
            let record = loaded(&a, &cookie).await;
            (record.tokens.access_token == "rotated elsewhere").then_some(record)
        },
    )
    .await;
    assert!(!Arc::ptr_eq(&kept, &after));

    // An end anywhere: refused at once, however long the record was kept.
    assert!(b.end(&cookie).await.unwrap().is_some());
    wait_for(
        "instance A to refuse the ended session",
        Duration::from_secs(2),
        || async { a.load(&cookie).await.unwrap().is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn switched_off_every_call_opens_its_record() {
    let redis = RedisServer::start().await;
    let sealed_only = instance(&redis.topology(), Cache::On, Duration::from_secs(600))
        .await
        .with_opened_records_kept(false);
    let (cookie, _) = log_in_as(
        &sealed_only,
        record(unix_now() + 3600),
        &SessionOrigin::default(),
    )
    .await;
    let cache = |sessions: &Sessions| {
        sessions
            .store()
            .cache()
            .map(|cache| cache.is_serving())
            .unwrap_or(false)
    };
    assert!(cache(&sealed_only), "the sealed records are still cached");
    let first = loaded(&sealed_only, &cookie).await;
    for _ in 0..5 {
        let next = loaded(&sealed_only, &cookie).await;
        assert!(!Arc::ptr_eq(&first, &next), "opened again");
        assert_eq!(next.handle, first.handle);
    }
}

#[tokio::test]
async fn a_token_held_for_an_api_is_opened_once_for_its_own_secret() {
    let redis = RedisServer::start().await;
    let a = instance(&redis.topology(), Cache::On, Duration::from_secs(600)).await;
    let (cookie, _) = log_in_as(&a, record(unix_now() + 3600), &SessionOrigin::default()).await;
    let token = HeldToken {
        access_token: "orders-api token".into(),
        expires_at: unix_now() + 600,
        obtained_at: unix_now(),
        forced: false,
        dpop_bound: false,
    };
    a.keep_held_token(&cookie, "orders", &token, unix_now() + 3600)
        .await
        .unwrap();
    let held = |cookie: SessionCookie| {
        let a = &a;
        async move {
            a.held_token(&cookie, "orders", Freshness::Recent)
                .await
                .unwrap()
        }
    };
    let (kept, again) = while_the_cache_keeps(&a, || async {
        let kept = kept_by_cache(&a, || async { held(cookie.clone()).await.unwrap() }).await;
        assert!(held(with_other_secret(&cookie)).await.is_none());
        (kept, held(cookie.clone()).await.unwrap())
    })
    .await;
    assert_eq!(kept.access_token.text(), "orders-api token");
    assert!(Arc::ptr_eq(&kept, &again));
}
