//! Fills a Redis with sessions through the real session store, for the benchmark's
//! "scale of the store" figures (bytes per session, latency with many sessions).
//!
//! `cargo run --release --example store_fill -- --redis redis://127.0.0.1:6379 --count 100000 --key <base64>`
//! prints `{"created": N, "plaintext_bytes": B, "credentials": C, "held_token_bytes": T,
//! "held_token_plaintext_bytes": H}` (T: a held token as issued, H: its stored form, compacted).
//! Tokens are Keycloak-sized: a ~1.5 KB access token, a ~1 KB refresh token and a ~1.5 KB ID
//! token. `--credentials C` (default 0) then keeps, for each session, C more API tokens (~1.4 KB
//! exchanged-token JWTs) under C credential ids, through `Sessions::keep_held_token`, as a
//! route's `exchange` or `refresh` credential does on first use. `--first I` numbers the
//! sessions from I (default 0), so a second fill adds other users, not more of the same.
//! `--escrow off` stores them as `session.refresh_token_escrow = false` does (the reply says
//! `"escrow": false`).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use vestibule::clock::unix_now;
use vestibule::session::{
    HeldToken, MasterKey, SessionOrigin, SessionRecord, Sessions, Store, StoredToken, TokenSet,
};

mod common;
use common::argument;

/// A JWT-shaped string of about `size` bytes with the given payload claims.
fn jwt(claims: &Value, size: usize) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let mut payload_claims = claims.clone();
    let base = URL_SAFE_NO_PAD.encode(payload_claims.to_string()).len() + header.len() + 344;
    if size > base {
        // Pad with a claim, as Keycloak tokens carry realm_access, resource_access, scope, …
        payload_claims["pad"] = json!("r".repeat((size - base) * 3 / 4));
    }
    let payload = URL_SAFE_NO_PAD.encode(payload_claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(vestibule::random::bytes::<256>());
    format!("{header}.{payload}.{signature}")
}

fn record(index: usize) -> SessionRecord {
    let now = unix_now();
    let id_claims = json!({
        "exp": now + 300, "iat": now, "auth_time": now, "jti": format!("{index:08x}-1b2c-4d5e-8f90-a1b2c3d4e5f6"),
        "iss": "http://localhost:8081/realms/vestibule", "aud": "vestibule",
        "sub": format!("{index:08x}-6f4a-4b8e-9c1d-2e3f4a5b6c7d"), "typ": "ID", "azp": "vestibule",
        "nonce": "LapxEPcjwnVlSTYQr14Lv3rPMyAiqRwNfSXaLq4acw", "sid": format!("{index:08x}-8f1e-4b7d-9a3c-5d2e1f0a9b8c"),
        "at_hash": "x3Jm9Q0sV7bL2kP8rT5wNg", "acr": "1", "email_verified": true,
        "name": "Alice Example", "preferred_username": format!("user{index}"),
        "given_name": "Alice", "family_name": "Example", "email": format!("user{index}@example.com"),
    });
    let id_token = jwt(&id_claims, 1536);
    let sub = id_claims["sub"].as_str().unwrap_or_default().to_owned();
    common::record(
        sub,
        TokenSet {
            access_token: jwt(
                &json!({ "exp": now + 300, "scope": "openid profile email" }),
                1536,
            ),
            access_expires_at: Some(now + 300),
            obtained_at: now,
            refresh_token: Some(StoredToken::new(&jwt(&json!({ "typ": "Refresh" }), 1024))),
            id_token: StoredToken::new(&id_token),
            expiry_assumed: false,
            from_forced_refresh: false,
            userinfo: None,
            principal: None,
            dpop_key: None,
            dpop_bound: false,
        },
        now,
    )
}

/// The ids of `count` credentials, shaped as `Credential::id` makes them (16 hex characters).
fn credential_ids(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("{index:016x}")).collect()
}

/// The token credential `credential` of session `index` holds: a Keycloak-sized exchanged
/// access token (~1.4 KB) for one API, valid five minutes.
fn held_token(index: usize, credential: usize) -> HeldToken {
    let now = unix_now();
    let claims = json!({
        "exp": now + 300, "iat": now, "jti": format!("{index:08x}-{credential:04x}-4d5e-8f90-a1b2c3d4e5f6"),
        "iss": "http://localhost:8081/realms/vestibule", "aud": format!("api-{credential}"),
        "sub": format!("{index:08x}-6f4a-4b8e-9c1d-2e3f4a5b6c7d"), "typ": "Bearer",
        "azp": "vestibule", "scope": format!("api-{credential}:read"),
    });
    HeldToken {
        access_token: StoredToken::new(&jwt(&claims, 1400)),
        expires_at: now + 300,
        obtained_at: now,
        forced: false,
        dpop_bound: false,
    }
}

/// Where each session comes from: a provider session of its own.
fn origin(index: usize) -> SessionOrigin {
    common::origin(Some(format!("{index:08x}-8f1e-4b7d-9a3c-5d2e1f0a9b8c")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = argument("--redis").ok_or_else(|| anyhow::anyhow!("--redis URL is required"))?;
    let count: usize = argument("--count")
        .unwrap_or_else(|| "1000".into())
        .parse()?;
    let key = match argument("--key") {
        Some(encoded) => STANDARD.decode(encoded)?,
        None => vestibule::random::bytes::<32>().to_vec(),
    };
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| anyhow::anyhow!("--key must be 32 bytes, base64"))?;
    let escrow = argument("--escrow").is_none_or(|value| value != "off");
    let sessions = Sessions::new(
        Store::redis(
            &vestibule::session::store::RedisTopology::parse(&redis)?,
            &vestibule::session::store::RedisTls::default(),
            None,
        )?,
        MasterKey::new(key),
        Duration::from_secs(1800),
        Duration::from_secs(28_800),
    )
    .with_refresh_token_escrow(escrow);
    let credentials = credential_ids(
        argument("--credentials")
            .unwrap_or_else(|| "0".into())
            .parse()?,
    );
    let plaintext_bytes = record(0).encode()?.len();
    let sample = held_token(0, 0);
    let held_token_bytes = sample.access_token.text().len();
    let held_token_plaintext_bytes = rmp_serde::to_vec_named(&sample)?.len();
    // `--first I`: the sessions are the I-th and on (distinct users from an earlier fill's).
    let first: usize = argument("--first").unwrap_or_else(|| "0".into()).parse()?;
    let created = stream::iter(first..first + count)
        .map(|index| {
            let (sessions, credentials) = (&sessions, &credentials);
            async move {
                let record = record(index);
                let Ok(cookie) = sessions.create(&record, &origin(index)).await else {
                    return false;
                };
                for (number, credential) in credentials.iter().enumerate() {
                    let token = held_token(index, number);
                    if sessions
                        .keep_held_token(&cookie, credential, &token, record.expires_at)
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                true
            }
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    println!(
        "{}",
        json!({
            "created": created,
            "plaintext_bytes": plaintext_bytes,
            "credentials": credentials.len(),
            "escrow": escrow,
            "held_token_bytes": held_token_bytes,
            "held_token_plaintext_bytes": held_token_plaintext_bytes,
        })
    );
    if created != count {
        anyhow::bail!("only {created} of {count} sessions (with their held tokens) were stored");
    }
    Ok(())
}
