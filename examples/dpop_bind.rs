//! Binds one logged-in session to a DPoP key of its own, as a login under `oidc.dpop` does
//! (the key sealed in its record, its access token marked bound), for the benchmark's DPoP
//! cost (a bound call against a bearer one) while the benchmark's provider issues Bearer
//! tokens. The proxy's work per call is the same either way: read the key, sign a proof.
//!
//! `cargo run --example dpop_bind -- --redis redis://127.0.0.1:6379 --key <base64> --cookie <value>`
//! rewrites the session of that cookie value through the real session store and prints
//! `{"thumbprint": "..."}`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use vestibule::oidc::dpop::DpopKey;
use vestibule::session::dpop_key::StoredDpopKey;
use vestibule::session::{MasterKey, SessionCookie, Sessions, Store};

/// The value after `name` on the command line.
fn argument(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|arg| arg != name);
    args.next()?;
    args.next()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = argument("--redis").ok_or_else(|| anyhow::anyhow!("--redis URL is required"))?;
    let key: [u8; 32] = STANDARD
        .decode(argument("--key").ok_or_else(|| anyhow::anyhow!("--key is required"))?)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("--key must be 32 bytes, base64"))?;
    let cookie = argument("--cookie")
        .and_then(|value| SessionCookie::parse(&value))
        .ok_or_else(|| anyhow::anyhow!("--cookie must be a session cookie's value"))?;
    // The deployment's defaults: the rewritten record keeps the lifetimes a login gave it.
    let sessions = Sessions::new(
        Store::redis(
            &vestibule::session::store::RedisTopology::parse(&redis)?,
            &vestibule::session::store::RedisTls::default(),
            None,
        )?,
        MasterKey::new(key),
        Duration::from_secs(1800),
        Duration::from_secs(28_800),
    );
    let current = sessions
        .load_fresh(&cookie)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no session for that cookie"))?;
    let dpop = DpopKey::generate()?;
    let mut record = current.record.clone();
    record.tokens.dpop_key = Some(StoredDpopKey::new(&dpop));
    record.tokens.dpop_bound = true;
    let replacement = sessions.prepare_replacement(&current, &record)?;
    anyhow::ensure!(
        sessions.replace(&replacement).await?,
        "the session changed meanwhile"
    );
    println!("{}", serde_json::json!({ "thumbprint": dpop.thumbprint() }));
    Ok(())
}
