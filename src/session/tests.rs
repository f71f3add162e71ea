//! Sessions against the in-memory store: lifetimes, compare-and-set writes, and re-sealing
//! under the current key of a key ring.

use super::*;

fn sessions(idle: u64, absolute: u64) -> Sessions {
    Sessions::new(
        Store::memory(),
        MasterKey::new([7; 32]),
        Duration::from_secs(idle),
        Duration::from_secs(absolute),
    )
}

fn record(expires_at: u64) -> SessionRecord {
    SessionRecord {
        sub: "alice".into(),
        tokens: TokenSet {
            access_token: "at".into(),
            access_expires_at: None,
            obtained_at: 0,
            refresh_token: None,
            id_token: "id".into(),
        },
        created_at: unix_now(),
        expires_at,
        logout_sid: "sid".into(),
        handle: crate::random::url_safe_id(),
    }
}

#[tokio::test]
async fn created_session_loads_with_its_token_only() {
    let sessions = sessions(60, 600);
    let cookie = sessions
        .create(&record(unix_now() + 600), &SessionOrigin::default())
        .await
        .unwrap();
    let loaded = sessions.load(&cookie).await.unwrap().unwrap();
    assert_eq!(loaded.record.sub, "alice");
    assert!(loaded.idle_expires_at.unwrap() <= unix_now() + 60);
    assert!(
        sessions
            .load(&SessionCookie::generate())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn session_past_absolute_expiry_is_gone() {
    let sessions = sessions(60, 600);
    let cookie = sessions
        .create(&record(unix_now() + 600), &SessionOrigin::default())
        .await
        .unwrap();
    let mut expired = record(unix_now().saturating_sub(1));
    expired.sub = "bob".into();
    // Write directly with a long TTL to prove the absolute check does not rely on the TTL.
    let key = cookie.storage_key();
    let sealed = sessions
        .keys
        .seal(cookie.secret(), key.as_bytes(), &expired.encode().unwrap());
    sessions
        .store
        .put(&key, &sealed, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(sessions.load(&cookie).await.unwrap().is_none());
    assert!(
        sessions.store.take(&key).await.unwrap().is_none(),
        "deleted"
    );
}

#[tokio::test]
async fn idle_expiry_is_capped_by_the_absolute_end() {
    let sessions = sessions(600, 600);
    let end = unix_now() + 10;
    let cookie = sessions
        .create(&record(end), &SessionOrigin::default())
        .await
        .unwrap();
    assert_eq!(
        sessions
            .load(&cookie)
            .await
            .unwrap()
            .unwrap()
            .idle_expires_at,
        Some(end)
    );
}

#[tokio::test]
async fn replace_writes_only_over_the_record_it_read() {
    let sessions = sessions(60, 600);
    let cookie = sessions
        .create(&record(unix_now() + 600), &SessionOrigin::default())
        .await
        .unwrap();
    let first = sessions.load_fresh(&cookie).await.unwrap().unwrap();
    let second = sessions.load_fresh(&cookie).await.unwrap().unwrap();
    let mut refreshed = record(unix_now() + 600);
    refreshed.sub = "alice-2".into();
    let replacement = sessions.prepare_replacement(&first, &refreshed).unwrap();
    assert!(sessions.replace(&replacement).await.unwrap());
    assert!(
        sessions.replace(&replacement).await.unwrap(),
        "a retry of a write that landed counts as done"
    );
    let stale = sessions
        .prepare_replacement(&second, &record(unix_now() + 600))
        .unwrap();
    assert!(
        !sessions.replace(&stale).await.unwrap(),
        "a writer holding an older read cannot overwrite the newer record"
    );
    assert!(
        !sessions.delete_if_unchanged(&second).await.unwrap(),
        "nor delete it"
    );
    let current = sessions.load(&cookie).await.unwrap().unwrap();
    assert_eq!(current.record.sub, "alice-2");
    let ended = sessions.end(&cookie).await.unwrap().unwrap();
    assert_eq!(ended.sub, "alice-2", "ending returns the record it ended");
    let late = sessions
        .prepare_replacement(&current, &record(unix_now() + 600))
        .unwrap();
    assert!(
        !sessions.replace(&late).await.unwrap(),
        "an ended session is not resurrected"
    );
    assert!(sessions.load(&cookie).await.unwrap().is_none());
    assert!(sessions.end(&cookie).await.unwrap().is_none());
}

/// Sessions on `store` sealing with a ring of `(id, key byte)` entries, the first sealing.
fn ring_sessions(store: &Store, entries: &[(&str, u8)]) -> Sessions {
    Sessions::new(
        store.clone(),
        KeyRing::for_testing(entries),
        Duration::from_secs(60),
        Duration::from_secs(600),
    )
    .with_refresh_skew(Duration::from_secs(30))
}

/// The key id the stored record for `cookie` is labelled with (`None`: unlabelled).
async fn stored_label(store: &Store, cookie: &SessionCookie) -> Option<String> {
    let sealed = store.get(&cookie.storage_key()).await.unwrap().unwrap();
    let len = usize::from(sealed[1]);
    (sealed[0] == 0xA5).then(|| String::from_utf8(sealed[2..2 + len].to_vec()).unwrap())
}

#[tokio::test]
async fn reading_a_session_under_an_older_key_reseals_it_under_the_current_one() {
    let store = Store::memory();
    let cookie = ring_sessions(&store, &[("k1", 1)])
        .create(&record(unix_now() + 600), &SessionOrigin::default())
        .await
        .unwrap();
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k1"));
    let rotated = ring_sessions(&store, &[("k2", 2), ("k1", 1)]);
    let loaded = rotated.load(&cookie).await.unwrap().unwrap();
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k2"));
    // The session read carries the re-sealed bytes, so its later writes still apply.
    assert!(rotated.delete_if_unchanged(&loaded).await.unwrap());
}

#[tokio::test]
async fn a_session_from_the_single_key_is_resealed_into_the_ring() {
    let store = Store::memory();
    let single = Sessions::new(
        store.clone(),
        MasterKey::new([1; 32]),
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    let cookie = single
        .create(&record(unix_now() + 600), &SessionOrigin::default())
        .await
        .unwrap();
    assert_eq!(stored_label(&store, &cookie).await, None);
    let ring = ring_sessions(&store, &[("k1", 1)]);
    assert_eq!(
        ring.load(&cookie).await.unwrap().unwrap().record.sub,
        "alice"
    );
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k1"));
    // And a single-key instance of this release still reads it (a rollback logs nobody out).
    assert!(single.load(&cookie).await.unwrap().is_some());
}

#[tokio::test]
async fn no_reseal_while_a_refresh_may_be_running() {
    let store = Store::memory();
    let mut due_soon = record(unix_now() + 600);
    // Not yet due at a 30 s skew, but within the re-seal margin.
    due_soon.tokens.access_expires_at = Some(unix_now() + 60);
    let cookie = ring_sessions(&store, &[("k1", 1)])
        .create(&due_soon, &SessionOrigin::default())
        .await
        .unwrap();
    let rotated = ring_sessions(&store, &[("k2", 2), ("k1", 1)]);
    assert!(rotated.load(&cookie).await.unwrap().is_some());
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k1"));
}

#[tokio::test]
async fn a_removed_key_ends_only_its_sessions() {
    let store = Store::memory();
    let old = ring_sessions(&store, &[("k1", 1)])
        .create(&record(unix_now() + 600), &SessionOrigin::default())
        .await
        .unwrap();
    let new = ring_sessions(&store, &[("k2", 2), ("k1", 1)])
        .create(&record(unix_now() + 600), &SessionOrigin::default())
        .await
        .unwrap();
    let retired = ring_sessions(&store, &[("k2", 2)]);
    assert!(retired.load(&old).await.unwrap().is_none());
    assert!(retired.end(&old).await.unwrap().is_none());
    assert!(retired.load(&new).await.unwrap().is_some());
}
