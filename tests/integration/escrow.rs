//! The refresh-token escrow's formats in a real Redis: each session's escrowed refresh token
//! is sealed under a key derived for its record, and a session stored by an earlier release
//! (its token under the key every record shared) still works and, ended without its cookie,
//! still has its refresh token revoked.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use hkdf::Hkdf;
use reqwest::StatusCode;
use sha2::Sha256;
use vestibule::session::SessionCookie;

use crate::harness::{Browser, ENCRYPTION_KEY, TestApp, wait_for};

/// First byte of a value whose refresh token is escrowed under a key of its record's.
const PER_RECORD: u8 = 0xE6;
/// First byte of a value whose refresh token is escrowed under the key every record shared.
const SHARED: u8 = 0xE5;

/// An AES-256-GCM cipher under HKDF-SHA256 of the test's encryption key, spelt out with the
/// crates directly (the single `encryption_key` writes unlabelled records: HKDF info v1).
fn cipher(salt: &[u8], info: &[&[u8]]) -> Aes256Gcm {
    let server_key = base64::engine::general_purpose::STANDARD
        .decode(ENCRYPTION_KEY)
        .unwrap();
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), &server_key)
        .expand_multi_info(info, &mut okm)
        .unwrap();
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(okm))
}

/// The storage key of `browser`'s session and the value Redis holds there.
async fn stored(app: &TestApp, browser: &Browser) -> (String, Vec<u8>) {
    let cookie = browser.cookie("vestibule").expect("a session cookie");
    let key = SessionCookie::parse(&cookie).unwrap().storage_key();
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut app.redis().connection().await)
        .await
        .unwrap();
    (key, value)
}

/// The escrowed part and the browser-sealed part of a stored value.
fn split(value: &[u8]) -> (&[u8], &[u8]) {
    let length = usize::from(u16::from_be_bytes([value[1], value[2]]));
    value[3..].split_at(length)
}

#[tokio::test]
async fn a_session_stored_with_the_shared_escrow_key_still_works_and_its_refresh_token_is_revoked()
{
    let app = TestApp::start().await;
    let laptop = app.browser();
    laptop.login("alice").await;
    let phone = app.browser();
    phone.login("alice").await;
    assert_eq!(app.provider.stored("RefreshToken").await, 2);

    // The laptop's refresh token as stored now: under a key derived for its record alone.
    let (key, value) = stored(&app, &laptop).await;
    assert_eq!(value[0], PER_RECORD);
    let (escrowed, browser_part) = split(&value);
    let (nonce, ciphertext) = escrowed.split_at(12);
    let per_record = cipher(
        b"vestibule server-only record key v2",
        &[b"vestibule record key v1", b"\0", key.as_bytes()],
    );
    let open = |cipher: &Aes256Gcm, nonce: &[u8], ciphertext: &[u8]| {
        cipher.decrypt(
            &Nonce::from(<[u8; 12]>::try_from(nonce).unwrap()),
            Payload {
                msg: ciphertext,
                aad: key.as_bytes(),
            },
        )
    };
    let token = open(&per_record, nonce, ciphertext).expect("the per-record key opens it");
    let shared = cipher(
        b"vestibule refresh-token escrow v1",
        &[b"vestibule record key v1"],
    );
    assert!(
        open(&shared, nonce, ciphertext).is_err(),
        "the shared key does not"
    );

    // Stored again the way earlier releases stored it: under the key every record shared.
    let nonce = [0x5Au8; 12];
    let sealed = shared
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &token,
                aad: key.as_bytes(),
            },
        )
        .unwrap();
    let escrowed = [nonce.as_slice(), &sealed].concat();
    let old = [
        [SHARED].as_slice(),
        &u16::try_from(escrowed.len()).unwrap().to_be_bytes(),
        &escrowed,
        browser_part,
    ]
    .concat();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(&old)
        .arg("KEEPTTL")
        .query_async(&mut app.redis().connection().await)
        .await
        .unwrap();

    // The laptop goes on working...
    let (status, user) = laptop.user().await;
    assert_eq!(
        (status, user["sub"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    assert_eq!(
        laptop.api_get("/api/orders/old-escrow").await.status(),
        StatusCode::OK
    );

    // ...until the phone ends every other session: the laptop's refresh token, opened from
    // the old escrow, is revoked at the provider, which holds only the phone's now.
    let response = phone.api_delete("/api/auth/sessions").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ended"], 1);
    assert_eq!(laptop.user().await.0, StatusCode::UNAUTHORIZED);
    let stats = wait_for(
        "the laptop's refresh token to be revoked",
        std::time::Duration::from_secs(5),
        || async {
            let stats = app.provider.stats().await;
            (stats["revocations"].as_u64() == Some(1)).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["revocation_errors"], 0, "{stats}");
    assert_eq!(
        app.provider.stored("RefreshToken").await,
        1,
        "the provider no longer holds the laptop's refresh token"
    );
    assert_eq!(phone.user().await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_session_escrows_its_refresh_token_under_a_key_of_its_own() {
    let app = TestApp::start().await;
    let browsers = [app.browser(), app.browser()];
    let mut parts = Vec::new();
    for browser in &browsers {
        browser.login("alice").await;
        let (key, value) = stored(&app, browser).await;
        assert_eq!(value[0], PER_RECORD);
        parts.push((key, split(&value).0.to_vec()));
    }
    // The first session's escrowed token does not open under the second one's key, even
    // with the first one's storage key as associated data: the keys differ.
    let (first_key, first_part) = &parts[0];
    let (second_key, _) = &parts[1];
    let under = |key: &str| {
        cipher(
            b"vestibule server-only record key v2",
            &[b"vestibule record key v1", b"\0", key.as_bytes()],
        )
    };
    let (nonce, ciphertext) = first_part.split_at(12);
    let nonce = Nonce::from(<[u8; 12]>::try_from(nonce).unwrap());
    let payload = || Payload {
        msg: ciphertext,
        aad: first_key.as_bytes(),
    };
    assert!(under(first_key).decrypt(&nonce, payload()).is_ok());
    assert!(under(second_key).decrypt(&nonce, payload()).is_err());
}
