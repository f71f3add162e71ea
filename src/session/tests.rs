//! Sessions against the in-memory store: lifetimes, compare-and-set writes, re-sealing under
//! the current key of a key ring, and the refresh-token escrow's formats.

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
    SessionRecord::for_testing("alice", expires_at)
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
}

/// Takes `cookie`'s refresh lock as a refresh does; whether it was free.
async fn take_refresh_lock(store: &Store, cookie: &SessionCookie) -> bool {
    store
        .try_lock(
            &cookie.refresh_lock_key(),
            "refresh",
            Duration::from_secs(10),
        )
        .await
        .unwrap()
}

/// The refresh tokens an end handed back for revocation.
fn refresh_tokens(ended: &Ended) -> Vec<&str> {
    ended
        .refresh_tokens
        .iter()
        .map(|token| token.text())
        .collect()
}

/// A session of `record`, created by an instance with the key ring `entries` on `store`.
async fn created_under(
    store: &Store,
    entries: &[(&str, u8)],
    record: &SessionRecord,
) -> SessionCookie {
    ring_sessions(store, entries)
        .create(record, &SessionOrigin::default())
        .await
        .unwrap()
}

/// The key id the stored record for `cookie` is labelled with (`None`: unlabelled); with an
/// escrowed refresh token, the id of the browser-sealed part after it.
async fn stored_label(store: &Store, cookie: &SessionCookie) -> Option<String> {
    let sealed = store.get(&cookie.storage_key()).await.unwrap().unwrap();
    // An unlabelled value starts with its random nonce, which may look like a marker (about 3
    // values in 256): read as production does, never panicking on such a value, and take a
    // label only where the bytes make one of this file's key ids.
    let label = |value: &[u8]| -> Option<String> {
        let (&marker, rest) = value.split_first()?;
        let len = usize::from(*rest.first()?);
        let id = rest.get(1..1 + len)?;
        (marker == 0xA5 && !id.is_empty())
            .then(|| String::from_utf8(id.to_vec()).ok())
            .flatten()
            // The ids these tests give their keys: `k` and a digit.
            .filter(|id| id.len() == 2 && id.starts_with('k') && id.as_bytes()[1].is_ascii_digit())
    };
    let escrowed = match sealed.as_slice() {
        [0xE5 | 0xE6, high, low, rest @ ..] => {
            rest.get(usize::from(u16::from_be_bytes([*high, *low]))..)
        }
        _ => None,
    };
    escrowed.and_then(label).or_else(|| label(&sealed))
}

#[tokio::test]
async fn reading_a_session_under_an_older_key_reseals_it_under_the_current_one() {
    let store = Store::memory();
    let cookie = created_under(&store, &[("k1", 1)], &record(unix_now() + 600)).await;
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
async fn a_session_whose_access_token_is_due_soon_is_resealed_too() {
    let store = Store::memory();
    let mut due_soon = record(unix_now() + 600);
    due_soon.tokens.access_expires_at = Some(unix_now() + 20);
    let cookie = created_under(&store, &[("k1", 1)], &due_soon).await;
    let rotated = ring_sessions(&store, &[("k2", 2), ("k1", 1)]);
    assert!(rotated.load(&cookie).await.unwrap().is_some());
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k2"));
    // The re-seal released the lock it took: a refresh can take it at once.
    assert!(take_refresh_lock(&store, &cookie).await);
}

#[tokio::test]
async fn no_reseal_lands_between_a_running_refreshs_read_and_its_write() {
    let store = Store::memory();
    let refresh_token = with_refresh_token(record(unix_now() + 600), "rt-1");
    let cookie = created_under(&store, &[("k1", 1)], &refresh_token).await;
    let rotated = ring_sessions(&store, &[("k2", 2), ("k1", 1)]);
    // A refresh (another instance) holds the session's lock and has read the record...
    assert!(take_refresh_lock(&store, &cookie).await);
    let refreshing = rotated.load_fresh(&cookie).await.unwrap().unwrap();
    // ...while requests read the session under the new ring: none re-seals it.
    for _ in 0..3 {
        assert!(rotated.load(&cookie).await.unwrap().is_some());
    }
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k1"));
    // The refresh's compare-and-set lands, under the current key.
    let refreshed = with_refresh_token(record(unix_now() + 600), "rt-2");
    let replacement = rotated
        .prepare_replacement(&refreshing, &refreshed)
        .unwrap();
    assert!(rotated.replace(&replacement).await.unwrap());
    store
        .unlock(&cookie.refresh_lock_key(), "refresh")
        .await
        .unwrap();
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k2"));
    let loaded = rotated.load(&cookie).await.unwrap().unwrap();
    assert_eq!(
        loaded
            .record
            .tokens
            .refresh_token
            .as_ref()
            .map(|token| token.text()),
        Some("rt-2".to_owned())
    );
}

#[tokio::test]
async fn a_reseal_never_overwrites_a_concurrent_write() {
    let store = Store::memory();
    let cookie = created_under(&store, &[("k1", 1)], &record(unix_now() + 600)).await;
    let old = ring_sessions(&store, &[("k1", 1)]);
    let rotated = ring_sessions(&store, &[("k2", 2), ("k1", 1)]);
    // What a request read under k1, before another write (here, a logout) changed it.
    let read = old.load_fresh(&cookie).await.unwrap().unwrap();
    let (record, sealed) = (read.record.clone(), read.sealed.clone());
    assert!(old.end(&cookie).await.unwrap().is_some());
    let held = rotated.reseal(&cookie, &record, sealed).await;
    assert!(
        store.get(&cookie.storage_key()).await.unwrap().is_none(),
        "an ended session is not resurrected by a re-seal ({} bytes held)",
        held.len()
    );
}

#[tokio::test]
async fn a_removed_key_ends_only_its_sessions() {
    let store = Store::memory();
    let old = created_under(&store, &[("k1", 1)], &record(unix_now() + 600)).await;
    let new = created_under(&store, &[("k2", 2), ("k1", 1)], &record(unix_now() + 600)).await;
    let retired = ring_sessions(&store, &[("k2", 2)]);
    assert!(retired.load(&old).await.unwrap().is_none());
    assert!(retired.end(&old).await.unwrap().is_none());
    assert!(retired.load(&new).await.unwrap().is_some());
}

fn with_refresh_token(mut record: SessionRecord, token: &str) -> SessionRecord {
    record.tokens.refresh_token = Some(token.into());
    record
}

#[tokio::test]
async fn a_login_beyond_the_limit_ends_the_least_recently_used_and_hands_back_its_refresh_token() {
    let sessions = sessions(60, 600).with_max_per_user(2);
    let origin = SessionOrigin::default();
    // Creates a session with this refresh token: its cookie and the sessions it displaced.
    let login = |refresh_token: &'static str| {
        let sessions = &sessions;
        let origin = &origin;
        async move {
            let record = with_refresh_token(record(unix_now() + 600), refresh_token);
            let created = sessions.create_within_limit(&record, origin).await.unwrap();
            (record, created.cookie.unwrap(), created.displaced)
        }
    };
    let (first, first_cookie, none) = login("rt-first").await;
    assert_eq!(none.count, 0);
    let (_, second_cookie, none) = login("rt-second").await;
    assert_eq!(none.count, 0, "two sessions are within the limit");
    // The first is used later than the second was: the second is the least recently used.
    sessions
        .store
        .touch_indexed_session(
            &sessions
                .index_names
                .current(index_names::Filed::User, "alice"),
            &first.handle,
            unix_now() + 5,
            crate::session::store::user_index::Deadline::of(unix_now() + 5, 60, u64::MAX),
        )
        .await
        .unwrap();
    let (_, third_cookie, ended) = login("rt-third").await;
    assert_eq!(ended.count, 1);
    let revoked = refresh_tokens(&ended);
    assert_eq!(revoked, ["rt-second"]);
    assert!(sessions.load(&second_cookie).await.unwrap().is_none());
    for kept in [&first_cookie, &third_cookie] {
        assert!(sessions.load(kept).await.unwrap().is_some());
    }
    let current = sessions.load(&third_cookie).await.unwrap().unwrap();
    assert_eq!(sessions.list_for(&current).await.unwrap().sessions.len(), 2);
}

#[tokio::test]
async fn without_escrow_a_remote_end_still_ends_but_has_no_token_to_revoke() {
    let escrowed = sessions(60, 600);
    let unescrowed = sessions(60, 600).with_refresh_token_escrow(false);
    for (sessions, expected) in [(escrowed, vec!["rt-1"]), (unescrowed, vec![])] {
        let origin = SessionOrigin::default();
        let cookie = sessions
            .create(
                &with_refresh_token(record(unix_now() + 600), "rt-1"),
                &origin,
            )
            .await
            .unwrap();
        let ended = sessions.end_all_of("alice").await.unwrap();
        assert_eq!(ended.count, 1);
        let tokens = refresh_tokens(&ended);
        assert_eq!(tokens, expected);
        assert!(sessions.load(&cookie).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_logout_takes_the_session_out_of_every_index_and_escrow() {
    let sessions = sessions(60, 600);
    let origin = SessionOrigin {
        provider_session: Some("op-1".into()),
        ..SessionOrigin::default()
    };
    let cookie = sessions
        .create(
            &with_refresh_token(record(unix_now() + 600), "rt-1"),
            &origin,
        )
        .await
        .unwrap();
    assert_eq!(sessions.count_live().await.unwrap(), 1);
    assert!(sessions.end(&cookie).await.unwrap().is_some());
    assert_eq!(sessions.count_live().await.unwrap(), 0);
    assert_eq!(
        sessions
            .end_provider_session("op-1", None)
            .await
            .unwrap()
            .count,
        0
    );
    assert_eq!(sessions.end_all_of("alice").await.unwrap().count, 0);
}

#[tokio::test]
async fn a_login_overtaken_by_an_end_of_its_user_or_provider_session_does_not_start() {
    let sessions = sessions(60, 600);
    // Every session of alice ends now; a login whose ID token is from before (or this very
    // second) was on its way when that happened: it must not start. A later one starts.
    sessions.end_all_of("alice").await.unwrap();
    let overtaken = record(unix_now() + 600);
    let created = sessions
        .create_within_limit(&overtaken, &SessionOrigin::default())
        .await
        .unwrap();
    assert!(created.cookie.is_none(), "ended while being created");
    let mut later = record(unix_now() + 600);
    later.created_at = unix_now() + 5;
    let created = sessions
        .create_within_limit(&later, &SessionOrigin::default())
        .await
        .unwrap();
    assert!(created.cookie.is_some(), "a login after the end starts");

    // The provider ended session op-1 by back-channel logout: no login in it starts.
    sessions.end_provider_session("op-1", None).await.unwrap();
    let bob_starts_in = |sid: &str| {
        let origin = SessionOrigin {
            provider_session: Some(sid.into()),
            ..SessionOrigin::default()
        };
        let sessions = &sessions;
        async move {
            let bob = SessionRecord::for_testing("bob", unix_now() + 600);
            let created = sessions.create_within_limit(&bob, &origin).await.unwrap();
            created.cookie.is_some()
        }
    };
    assert!(!bob_starts_in("op-1").await, "the ended provider session");
    assert!(bob_starts_in("op-2").await, "another provider session");
    // Nothing of the refused logins is left in the store.
    assert_eq!(sessions.count_live().await.unwrap(), 2);
}

/// The value stored for `cookie`, with its escrowed refresh token sealed the way earlier
/// releases sealed it (under the key every record shared, marker `0xE5`) instead.
async fn with_shared_key_escrow(sessions: &Sessions, cookie: &SessionCookie, token: &str) {
    let key = cookie.storage_key();
    let value = sessions.store.get(&key).await.unwrap().unwrap();
    assert_eq!(value[0], 0xE6, "escrowed under a key of its record's");
    let length = usize::from(u16::from_be_bytes([value[1], value[2]]));
    let browser_part = &value[3 + length..];
    let shared = sessions
        .keys
        .seal_for_server_shared(key.as_bytes(), StoredToken::new(token).as_bytes());
    let old = [
        [0xE5].as_slice(),
        &u16::try_from(shared.len()).unwrap().to_be_bytes(),
        &shared,
        browser_part,
    ]
    .concat();
    sessions
        .store
        .put(&key, &old, Duration::from_secs(60))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_whose_escrow_was_sealed_under_the_shared_key_opens_and_ends_with_its_token() {
    for ring in [false, true] {
        let sessions = if ring {
            ring_sessions(&Store::memory(), &[("k1", 1)])
        } else {
            sessions(60, 600)
        };
        let create = || async {
            let record = with_refresh_token(record(unix_now() + 600), "rt-old");
            sessions
                .create(&record, &SessionOrigin::default())
                .await
                .unwrap()
        };
        // Read with its cookie: the refresh token is back in the record, nothing to re-seal.
        let cookie = create().await;
        with_shared_key_escrow(&sessions, &cookie, "rt-old").await;
        let stored = sessions.store.get(&cookie.storage_key()).await.unwrap();
        let loaded = sessions.load(&cookie).await.unwrap().unwrap();
        assert_eq!(
            loaded
                .record
                .tokens
                .refresh_token
                .as_ref()
                .map(|token| token.text()),
            Some("rt-old".to_owned())
        );
        assert_eq!(
            sessions.store.get(&cookie.storage_key()).await.unwrap(),
            stored,
            "a read alone does not rewrite it"
        );
        // Ended with its cookie (a logout).
        let ended = sessions.end(&cookie).await.unwrap().unwrap();
        assert_eq!(
            ended.tokens.refresh_token.map(|token| token.text()),
            Some("rt-old".to_owned())
        );
        // Ended without it: the token comes back from escrow, to be revoked.
        let cookie = create().await;
        with_shared_key_escrow(&sessions, &cookie, "rt-old").await;
        let ended = sessions.end_all_of("alice").await.unwrap();
        let tokens = refresh_tokens(&ended);
        assert_eq!(tokens, ["rt-old"]);
    }
}

#[tokio::test]
async fn a_refresh_token_escrowed_for_one_record_does_not_open_in_another() {
    let sessions = sessions(60, 600);
    let record = with_refresh_token(record(unix_now() + 600), "rt-1");
    let first = sessions
        .create(&record, &SessionOrigin::default())
        .await
        .unwrap();
    let second = sessions
        .create(&record, &SessionOrigin::default())
        .await
        .unwrap();
    // The first record's escrowed part, spliced in front of the second's browser-sealed part.
    let value = |cookie: &SessionCookie| {
        let sessions = &sessions;
        let key = cookie.storage_key();
        async move { sessions.store.get(&key).await.unwrap().unwrap() }
    };
    let (from, into) = (value(&first).await, value(&second).await);
    let part = |value: &[u8]| 3 + usize::from(u16::from_be_bytes([value[1], value[2]]));
    let spliced = [&from[..part(&from)], &into[part(&into)..]].concat();
    let key = second.storage_key();
    assert!(sessions.escrowed_token(&key, &spliced).is_none());
    assert!(
        sessions
            .open_value(second.secret(), &key, &spliced)
            .is_none()
    );
    assert!(sessions.escrowed_token(&key, &into).is_some());
}

#[tokio::test]
async fn logins_in_the_same_second_never_evict_the_newest() {
    // Every login here lands in the same second or the next, so last-use seconds tie: the
    // sessions admitted last must survive, round after round, never the older one left.
    let sessions = sessions(60, 600).with_max_per_user(2);
    let mut cookies = Vec::new();
    for round in 0..40 {
        let created = sessions
            .create_within_limit(&record(unix_now() + 600), &SessionOrigin::default())
            .await
            .unwrap();
        cookies.push(created.cookie.expect("the login being admitted survives"));
        assert_eq!(created.displaced.count, usize::from(round >= 2));
        for (at, cookie) in cookies.iter().enumerate() {
            let newest_two = at + 2 >= cookies.len();
            assert_eq!(
                sessions.load(cookie).await.unwrap().is_some(),
                newest_two,
                "round {round}: session {at} of {}",
                cookies.len()
            );
        }
    }
}

/// A record of alice's created in the provider session `sid` (its ID token names it).
fn record_in(sid: &str) -> SessionRecord {
    use base64::Engine;
    let mut record = record(unix_now() + 600);
    let claims = serde_json::json!({ "sub": "alice", "sid": sid });
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    record.tokens.id_token = format!("h.{payload}.s").as_str().into();
    record
}

fn in_provider_session(sid: &str) -> SessionOrigin {
    SessionOrigin {
        provider_session: Some(sid.into()),
        ..SessionOrigin::default()
    }
}

/// How many sessions "my sessions" shows the user of `cookie`.
async fn listed(sessions: &Sessions, cookie: &SessionCookie) -> usize {
    let current = sessions.load(cookie).await.unwrap().unwrap();
    sessions.list_for(&current).await.unwrap().sessions.len()
}

#[tokio::test]
async fn a_users_sessions_stay_listed_and_endable_through_a_key_rotation() {
    let store = Store::memory();
    let steps = [
        ring_sessions(&store, &[("k1", 1)]).with_max_per_user(3),
        ring_sessions(&store, &[("k1", 1), ("k2", 2)]).with_max_per_user(3),
        ring_sessions(&store, &[("k2", 2), ("k1", 1)]).with_max_per_user(3),
        ring_sessions(&store, &[("k2", 2)]).with_max_per_user(3),
    ];
    // [k1]: filed under k1's names.
    let first = steps[0]
        .create(&record_in("op-1"), &in_provider_session("op-1"))
        .await
        .unwrap();
    let second = steps[0]
        .create(&record_in("op-2"), &in_provider_session("op-2"))
        .await
        .unwrap();
    // [k1, k2], then [k2, k1]: new sessions are filed under k2's names; both are used, so
    // they are re-sealed under k2 and filed under k2's names too.
    let third = steps[1]
        .create(&record_in("op-3"), &in_provider_session("op-3"))
        .await
        .unwrap();
    assert_eq!(listed(&steps[2], &first).await, 3);
    let fourth = steps[2]
        .create(&record_in("op-4"), &in_provider_session("op-4"))
        .await
        .unwrap();
    // The limit (3) counts the sessions filed under k1's names: the least recently used
    // ends, the one not used since k2 began to seal (the first was used just now).
    assert!(steps[2].load(&second).await.unwrap().is_none());
    for cookie in [&first, &third] {
        assert!(steps[2].load(cookie).await.unwrap().is_some());
    }
    // [k2]: k1 is gone; every session still listed, ended by `sid`, by handle, by `sub`.
    let last = &steps[3];
    assert_eq!(listed(last, &fourth).await, 3);
    assert_eq!(
        last.end_provider_session("op-1", None).await.unwrap().count,
        1
    );
    assert!(last.load(&first).await.unwrap().is_none());
    let third_id = last
        .load(&third)
        .await
        .unwrap()
        .unwrap()
        .record
        .handle
        .clone();
    assert_eq!(
        last.end_by_handle("alice", &third_id).await.unwrap().count,
        1
    );
    assert_eq!(last.count_of("alice").await.unwrap(), 1);
    assert_eq!(last.end_all_of("alice").await.unwrap().count, 1);
    assert!(last.load(&fourth).await.unwrap().is_none());
}

/// Creates a session of alice's in provider session `sid` and files it as an earlier release
/// filed it: under SHA-256 of `sub` and `sid` instead of the keyed names. Its cookie and handle.
async fn create_as_an_earlier_release(sessions: &Sessions, sid: &str) -> (SessionCookie, String) {
    use crate::session::store::compact_storage_key;
    use crate::session::store::user_index::member;
    let keyed = sessions
        .index_names
        .current(index_names::Filed::User, "alice");
    let legacy = compact_storage_key("user", b"alice");
    let record = record_in(sid);
    let cookie = sessions
        .create(&record, &in_provider_session(sid))
        .await
        .unwrap();
    let (filed, _) = sessions.store.indexed_sessions(&keyed, None).await.unwrap();
    let filed: Vec<_> = filed
        .into_iter()
        .filter(|stored| stored.handle == record.handle)
        .map(|stored| (stored, cookie.storage_key()))
        .collect();
    sessions
        .store
        .merge_indexed_sessions(&legacy, &filed, 600)
        .await
        .unwrap();
    sessions
        .store
        .add_to_provider_session(
            &compact_storage_key("sid", sid.as_bytes()),
            &member(&legacy, &record.handle),
            600,
        )
        .await
        .unwrap();
    sessions
        .store
        .unindex_sessions(
            std::slice::from_ref(&keyed),
            &[record.handle.as_str()],
            &[sessions
                .index_names
                .current(index_names::Filed::ProviderSession, sid)],
        )
        .await
        .unwrap();
    (cookie, record.handle)
}

#[tokio::test]
async fn sessions_filed_under_the_unkeyed_names_of_earlier_releases_are_still_found() {
    let sessions = sessions(60, 600).with_max_per_user(2);
    // Two sessions filed as an earlier release filed them: under SHA-256 of sub and sid.
    let mut earlier = Vec::new();
    for sid in ["op-1", "op-2"] {
        earlier.push(create_as_an_earlier_release(&sessions, sid).await);
    }
    assert_eq!(sessions.count_of("alice").await.unwrap(), 2, "found");
    // A new login counts them against the limit (2): the least recent one ends.
    let new = sessions
        .create(&record_in("op-3"), &in_provider_session("op-3"))
        .await
        .unwrap();
    assert!(sessions.load(&earlier[0].0).await.unwrap().is_none());
    assert_eq!(listed(&sessions, &new).await, 2);
    // Ended by its provider session, found through the unkeyed provider-session index.
    assert_eq!(
        sessions
            .end_provider_session("op-2", None)
            .await
            .unwrap()
            .count,
        1
    );
    assert!(sessions.load(&earlier[1].0).await.unwrap().is_none());
    assert_eq!(listed(&sessions, &new).await, 1);
}

#[tokio::test]
async fn a_refile_that_failed_is_tried_again_before_the_session_is_resealed() {
    let store = Store::memory();
    let old = ring_sessions(&store, &[("k1", 1)]);
    let rolled = ring_sessions(&store, &[("k2", 2), ("k1", 1)]);
    let cookie = old
        .create(&record_in("op-1"), &in_provider_session("op-1"))
        .await
        .unwrap();
    // Under [k2, k1], the first read's re-file meets a store failure: that read fails...
    let Store::Memory(memory) = &store else {
        unreachable!("an in-memory store")
    };
    memory
        .failing_merges
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert!(rolled.load(&cookie).await.is_err());
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k1"));
    // ...and the next read files it under k2's names before re-sealing it under k2.
    assert!(rolled.load(&cookie).await.unwrap().is_some());
    assert_eq!(stored_label(&store, &cookie).await.as_deref(), Some("k2"));
    // With k1 gone, the session is still found by every path that ends sessions.
    let last = ring_sessions(&store, &[("k2", 2)]);
    assert_eq!(listed(&last, &cookie).await, 1);
    assert_eq!(
        last.end_provider_session("op-1", None).await.unwrap().count,
        1
    );
    assert!(last.load(&cookie).await.unwrap().is_none());
}

#[tokio::test]
async fn the_count_across_older_names_never_ends_a_login_admitted_after_the_one_it_admits() {
    // max_per_user = 1, and alice has a session an earlier release filed. Two logins at once:
    // A is admitted, then B (whose own admission marks A beyond the limit), and only then does
    // A's count across the older names run: it may end the earlier release's session, never B.
    let store = Store::memory();
    let roomy = ring_sessions(&store, &[("k1", 1)]).with_max_per_user(10);
    let (earlier, _) = create_as_an_earlier_release(&roomy, "op-0").await;
    let a = roomy
        .create(&record_in("op-a"), &in_provider_session("op-a"))
        .await
        .unwrap();
    let b = roomy
        .create(&record_in("op-b"), &in_provider_session("op-b"))
        .await
        .unwrap();
    let handle = |cookie: &SessionCookie| {
        let roomy = &roomy;
        let cookie = cookie.clone();
        async move {
            roomy
                .load(&cookie)
                .await
                .unwrap()
                .unwrap()
                .record
                .handle
                .clone()
        }
    };
    let (earlier_handle, a_handle, b_handle) =
        (handle(&earlier).await, handle(&a).await, handle(&b).await);
    let tight = ring_sessions(&store, &[("k1", 1)]).with_max_per_user(1);
    let ended = tight.count_across_older_names("alice", &a_handle).await;
    assert_eq!(
        ended,
        [earlier_handle],
        "never B ({b_handle}), admitted after A"
    );
}
