//! The sealing formats case by case: rotation through a ring, the single key's format, a
//! relabelled or tampered record, an unlabelled nonce that looks labelled, and what is sealed
//! under the server keys alone (per record now, shared by every record before).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

use super::label::LABEL_MARKER;
use super::master_key::{Derivation, LABELLED_INFO, NONCE_LEN, SealParts, TAG_LEN};
use super::*;

fn key(byte: u8) -> MasterKey {
    MasterKey::new([byte; 32])
}

fn single(byte: u8) -> KeyRing {
    KeyRing::single(key(byte))
}

fn ring(entries: &[(&str, u8)]) -> KeyRing {
    KeyRing::for_testing(entries)
}

fn open(ring: &KeyRing, sealed: &[u8]) -> Result<(Vec<u8>, bool), OpenError> {
    ring.open(b"secret", b"k1", sealed)
        .map(|opened| (opened.plaintext, opened.current))
}

#[test]
fn sealed_record_round_trips() {
    let sealed = single(1).seal(b"secret", b"k1", b"hello tokens");
    assert_eq!(
        open(&single(1), &sealed).unwrap(),
        (b"hello tokens".to_vec(), true)
    );
}

#[test]
fn ciphertext_does_not_contain_plaintext_and_nonce_is_fresh() {
    for keys in [single(1), ring(&[("k1", 1)])] {
        let a = keys.seal(b"secret", b"k1", b"access-token-value");
        let b = keys.seal(b"secret", b"k1", b"access-token-value");
        assert_ne!(a, b, "two writes must use different nonces");
        assert!(!a.windows(6).any(|w| w == b"access"));
    }
}

#[test]
fn wrong_master_key_fails() {
    let sealed = single(1).seal(b"secret", b"k1", b"x");
    assert_eq!(open(&single(2), &sealed), Err(OpenError::DoesNotOpen));
    let sealed = ring(&[("a", 1)]).seal(b"secret", b"k1", b"x");
    assert_eq!(
        open(&ring(&[("a", 2)]), &sealed),
        Err(OpenError::DoesNotOpen)
    );
}

#[test]
fn server_key_alone_without_browser_secret_fails() {
    for keys in [single(1), ring(&[("k1", 1)])] {
        let sealed = keys.seal(b"secret", b"k1", b"x");
        assert!(keys.open(b"other", b"k1", &sealed).is_err());
        assert!(keys.open(b"", b"k1", &sealed).is_err());
    }
}

#[test]
fn record_moved_to_another_storage_key_fails() {
    for keys in [single(1), ring(&[("k1", 1)])] {
        let sealed = keys.seal(b"secret", b"k1", b"x");
        assert!(keys.open(b"secret", b"k2", &sealed).is_err());
    }
}

#[test]
fn tampered_or_truncated_record_fails() {
    for keys in [single(1), ring(&[("k1", 1)])] {
        let mut sealed = keys.seal(b"secret", b"k1", b"some payload");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(open(&keys, &sealed).is_err());
        assert!(open(&keys, &sealed[..10]).is_err());
        assert!(open(&keys, &[]).is_err());
        assert!(open(&keys, &[LABEL_MARKER]).is_err());
    }
}

#[test]
fn labelled_records_carry_the_sealing_id_in_clear() {
    let sealed = ring(&[("2026-12", 1), ("old", 2)]).seal(b"secret", b"k1", b"x");
    assert_eq!(&sealed[..2], &[LABEL_MARKER, 7]);
    assert_eq!(&sealed[2..9], b"2026-12");
    assert_eq!(sealed.len(), 2 + 7 + NONCE_LEN + 1 + TAG_LEN);
}

#[test]
fn the_first_key_seals_and_every_key_opens() {
    let old = ring(&[("k1", 1)]).seal(b"secret", b"k1", b"old");
    let new = ring(&[("k2", 2), ("k1", 1)]);
    assert_eq!(open(&new, &old).unwrap(), (b"old".to_vec(), false));
    let sealed = new.seal(b"secret", b"k1", b"new");
    assert_eq!(open(&new, &sealed).unwrap(), (b"new".to_vec(), true));
    // An instance not yet rolled (k1 seals, k2 opens) reads the newer record.
    let rolling = ring(&[("k1", 1), ("k2", 2)]);
    assert_eq!(open(&rolling, &sealed).unwrap(), (b"new".to_vec(), false));
}

#[test]
fn a_removed_key_says_so_and_opens_nothing() {
    let sealed = ring(&[("k1", 1)]).seal(b"secret", b"k1", b"x");
    assert_eq!(
        open(&ring(&[("k2", 2)]), &sealed),
        Err(OpenError::RemovedKey)
    );
}

#[test]
fn the_id_is_bound_to_the_record() {
    // The same key bytes under two ids: relabelling a record must not open it.
    let keys = ring(&[("aa", 1), ("bb", 1)]);
    let mut sealed = keys.seal(b"secret", b"k1", b"x");
    sealed[2..4].copy_from_slice(b"bb");
    assert_eq!(open(&keys, &sealed), Err(OpenError::DoesNotOpen));
}

#[test]
fn unlabelled_records_open_in_a_ring_and_are_marked_for_resealing() {
    let legacy = single(1).seal(b"secret", b"k1", b"legacy");
    let keys = ring(&[("k2", 2), ("k1", 1)]);
    assert_eq!(open(&keys, &legacy).unwrap(), (b"legacy".to_vec(), false));
    assert_eq!(
        open(&ring(&[("k2", 2)]), &legacy),
        Err(OpenError::DoesNotOpen)
    );
}

#[test]
fn the_single_key_opens_what_a_ring_sealed_with_its_bytes() {
    // A rollback from the ring to the single key logs nobody out.
    let sealed = ring(&[("k1", 1)]).seal(b"secret", b"k1", b"x");
    assert_eq!(open(&single(1), &sealed).unwrap(), (b"x".to_vec(), false));
    assert_eq!(open(&single(2), &sealed), Err(OpenError::DoesNotOpen));
}

#[test]
fn an_unlabelled_nonce_that_starts_with_the_marker_still_opens() {
    // One legacy record in 256 has a nonce starting with the marker; make some whose
    // nonce even parses as a label naming a key of the ring.
    let nonces: [[u8; NONCE_LEN]; 3] = [
        [LABEL_MARKER, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        [LABEL_MARKER, 2, b'k', b'1', 3, 4, 5, 6, 7, 8, 9, 10],
        [LABEL_MARKER, 2, b'z', b'z', 3, 4, 5, 6, 7, 8, 9, 10],
    ];
    let keys = ring(&[("k2", 2), ("k1", 1)]);
    for nonce in nonces {
        let parts = SealParts {
            derivation: Derivation::Browser(b"secret"),
            storage_key: b"k1",
            plaintext: b"legacy",
            nonce,
        };
        let legacy = single(1).seal_with_nonce(parts);
        assert_eq!(legacy[0], LABEL_MARKER);
        assert_eq!(open(&keys, &legacy).unwrap(), (b"legacy".to_vec(), false));
        assert_eq!(
            open(&single(1), &legacy).unwrap(),
            (b"legacy".to_vec(), true)
        );
    }
}

#[test]
fn key_ids_follow_the_rule() {
    for good in ["k1", "2026-12", "a", &"x".repeat(32), "key/2~!"] {
        assert!(KeyId::parse(good).is_some(), "{good}");
    }
    for bad in ["", "a b", "tab\t", &"x".repeat(33), "é", "new\n"] {
        assert!(KeyId::parse(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn debug_shows_ids_never_key_bytes() {
    let shown = format!("{:?}", ring(&[("current", 0xAB), ("old", 0xCD)]));
    assert_eq!(shown, "KeyRing([current, old])");
    assert_eq!(format!("{:?}", single(0xAB)), "KeyRing(single key)");
}

#[test]
fn the_single_key_writes_exactly_what_earlier_releases_write_and_read() {
    // The previous release's sealing, spelt out: instances of it run beside this one.
    let nonce = [9u8; NONCE_LEN];
    let hkdf = Hkdf::<Sha256>::new(Some(b"secret"), &[1u8; 32]);
    let mut okm = [0u8; 32];
    hkdf.expand(b"vestibule record key v1", &mut okm).unwrap();
    let payload = Payload {
        msg: b"tokens",
        aad: b"k1",
    };
    let ciphertext = Aes256Gcm::new(&Key::<Aes256Gcm>::from(okm))
        .encrypt(&Nonce::from(nonce), payload)
        .unwrap();
    let previous = [nonce.as_slice(), &ciphertext].concat();
    let parts = SealParts {
        derivation: Derivation::Browser(b"secret"),
        storage_key: b"k1",
        plaintext: b"tokens",
        nonce,
    };
    assert_eq!(single(1).seal_with_nonce(parts), previous);
    assert_eq!(
        open(&ring(&[("k1", 1)]), &previous).unwrap(),
        (b"tokens".to_vec(), false)
    );
}

/// AES-256-GCM of `plaintext` under HKDF-SHA256(`salt`, `key`, `info`) with `nonce` and `aad`,
/// spelt out with the crates directly: `nonce ‖ ciphertext ‖ tag`.
fn spelt_out(
    salt: &[u8],
    key: [u8; 32],
    info: &[u8],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
) -> Vec<u8> {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), &key)
        .expand(info, &mut okm)
        .unwrap();
    let payload = Payload {
        msg: b"refresh token",
        aad,
    };
    let ciphertext = Aes256Gcm::new(&Key::<Aes256Gcm>::from(okm))
        .encrypt(&Nonce::from(nonce), payload)
        .unwrap();
    [nonce.as_slice(), &ciphertext].concat()
}

fn server_parts<'a>(storage_key: &'a [u8], nonce: [u8; NONCE_LEN]) -> SealParts<'a> {
    SealParts {
        derivation: Derivation::ServerPerRecord,
        storage_key,
        plaintext: b"refresh token",
        nonce,
    }
}

#[test]
fn two_records_sealed_for_the_server_have_keys_of_their_own() {
    let key = key(1);
    let nonce = Nonce::from([3u8; NONCE_LEN]);
    let encrypt = |storage_key: &[u8]| {
        key.record_cipher(Derivation::ServerPerRecord, LABELLED_INFO, storage_key)
            .encrypt(&nonce, b"same plaintext".as_slice())
            .unwrap()
    };
    // Same key bytes, nonce, plaintext and (here) no associated data: only the derived keys
    // can tell the two apart.
    assert_ne!(
        encrypt(b"vestibule:session:aa"),
        encrypt(b"vestibule:session:bb")
    );
    assert_eq!(
        encrypt(b"vestibule:session:aa"),
        encrypt(b"vestibule:session:aa")
    );
    // And none of them is the key every record shared before.
    let shared = key
        .record_cipher(
            Derivation::ServerShared,
            LABELLED_INFO,
            b"vestibule:session:aa",
        )
        .encrypt(&nonce, b"same plaintext".as_slice())
        .unwrap();
    assert_ne!(encrypt(b"vestibule:session:aa"), shared);
}

#[test]
fn a_record_sealed_for_the_server_opens_only_under_its_own_storage_key() {
    for keys in [single(1), ring(&[("k2", 2), ("k1", 1)])] {
        let sealed = keys.seal_for_server(b"vestibule:session:aa", b"refresh token");
        let opened = keys
            .open_for_server(b"vestibule:session:aa", &sealed, ServerSealing::PerRecord)
            .unwrap();
        assert_eq!(
            (opened.plaintext.as_slice(), opened.current),
            (b"refresh token".as_slice(), true)
        );
        // Moved under another record's key, read as the shared format, or with a browser's
        // secret: nothing opens.
        assert!(
            keys.open_for_server(b"vestibule:session:bb", &sealed, ServerSealing::PerRecord)
                .is_err()
        );
        assert!(
            keys.open_for_server(b"vestibule:session:aa", &sealed, ServerSealing::Shared)
                .is_err()
        );
        assert!(
            keys.open(
                b"vestibule server-only record key v2",
                b"vestibule:session:aa",
                &sealed
            )
            .is_err()
        );
    }
}

#[test]
fn per_record_server_sealing_is_hkdf_of_the_server_key_with_the_storage_key_in_the_info() {
    let nonce = [5u8; NONCE_LEN];
    let storage_key = b"vestibule:session:aa";
    let info = [b"vestibule record key v1".as_slice(), b"\0", storage_key].concat();
    let expected = spelt_out(
        b"vestibule server-only record key v2",
        [1; 32],
        &info,
        nonce,
        storage_key,
    );
    assert_eq!(
        single(1).seal_with_nonce(server_parts(storage_key, nonce)),
        expected
    );
    // Labelled: the header in front, the labelled format's info, the header authenticated.
    let header = [LABEL_MARKER, 2, b'k', b'1'];
    let info = [b"vestibule record key v2".as_slice(), b"\0", storage_key].concat();
    let aad = [header.as_slice(), storage_key].concat();
    let expected = [
        header.as_slice(),
        &spelt_out(
            b"vestibule server-only record key v2",
            [1; 32],
            &info,
            nonce,
            &aad,
        ),
    ]
    .concat();
    assert_eq!(
        ring(&[("k1", 1)]).seal_with_nonce(server_parts(storage_key, nonce)),
        expected
    );
}

#[test]
fn escrow_sealed_under_the_shared_key_before_still_opens() {
    // What earlier releases wrote, spelt out: one key per server key for every record.
    let nonce = [7u8; NONCE_LEN];
    let storage_key = b"vestibule:session:aa";
    let salt = b"vestibule refresh-token escrow v1";
    let unlabelled = spelt_out(
        salt,
        [1; 32],
        b"vestibule record key v1",
        nonce,
        storage_key,
    );
    let header = [LABEL_MARKER, 2, b'k', b'1'];
    let aad = [header.as_slice(), storage_key].concat();
    let labelled = [
        header.as_slice(),
        &spelt_out(salt, [1; 32], b"vestibule record key v2", nonce, &aad),
    ]
    .concat();
    for (keys, sealed, current) in [
        (single(1), &unlabelled, true),
        (ring(&[("k1", 1)]), &labelled, true),
        (ring(&[("k2", 2), ("k1", 1)]), &labelled, false),
        (ring(&[("k2", 2), ("k1", 1)]), &unlabelled, false),
    ] {
        let opened = keys
            .open_for_server(storage_key, sealed, ServerSealing::Shared)
            .unwrap();
        assert_eq!(opened.plaintext, b"refresh token");
        assert_eq!(
            opened.current, current,
            "current means under the sealing key"
        );
        assert!(
            keys.open_for_server(storage_key, sealed, ServerSealing::PerRecord)
                .is_err()
        );
        assert!(
            keys.open_for_server(b"vestibule:session:bb", sealed, ServerSealing::Shared)
                .is_err()
        );
    }
}
