//! What one user's session index costs as it grows: fills a user's index in Redis with N
//! entries (written directly, in the index's own layout), then times a login of that user
//! (filing its session: the admission script) and "my sessions" (the list), as wall time and
//! as the time Redis itself spent (from `INFO commandstats`: Redis is single-threaded, so that
//! is what every other user waits).
//!
//! `cargo run --example index_scale -- --redis redis://127.0.0.1:6379 [--entries 10000,100000]
//! [--max-per-user N]` prints one JSON line per size and place: the entries filed under the
//! user's current index name (`"filed": "current"`: an index grown past the bound, as one filed
//! under a larger limit), and under the unkeyed name an earlier release wrote (`"legacy"`).
//! Uses keys under `vestibule:`: give it a Redis of its own.

use std::time::{Duration, Instant};

use serde_json::json;
use vestibule::clock::unix_now;
use vestibule::session::{
    MasterKey, SessionOrigin, SessionRecord, Sessions, Store, StoredToken, TokenSet,
};

mod common;
use common::argument;

const KEY: [u8; 32] = [42; 32];

fn record(sub: &str) -> SessionRecord {
    let now = unix_now();
    let tokens = TokenSet {
        access_token: "access".into(),
        access_expires_at: Some(now + 300),
        obtained_at: now,
        refresh_token: Some(StoredToken::new("refresh")),
        id_token: StoredToken::new("id"),
        expiry_assumed: false,
        from_forced_refresh: false,
        userinfo: None,
        principal: None,
        dpop_key: None,
        dpop_bound: false,
    };
    common::record(sub.to_owned(), tokens, now)
}

fn origin() -> SessionOrigin {
    common::origin(None)
}

/// Microseconds Redis has spent running commands and scripts so far.
async fn redis_busy_usec(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| line.split_once("usec="))
        .filter_map(|(_, rest)| rest.split(',').next()?.parse::<u64>().ok())
        .sum())
}

/// The longest single command (or script) Redis ran since the slow log was reset, in ms:
/// what every other client waited at most.
async fn longest_command(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(100_000)
        .query_async(conn)
        .await?;
    let longest = entries
        .iter()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => match fields.get(2) {
                Some(redis::Value::Int(usec)) => Some(*usec),
                _ => None,
            },
            _ => None,
        })
        .max()
        .unwrap_or(0);
    Ok(longest as f64 / 1e3)
}

/// What one timed operation cost, in milliseconds.
struct Cost {
    /// Wall time.
    wall_ms: f64,
    /// Time Redis spent running commands and scripts meanwhile.
    redis_ms: f64,
    /// The longest single command (or script): what every other client waited at most.
    longest_command_ms: f64,
}

/// Runs `operation` and measures what it cost (the slow log must be recording every command).
async fn measured<T>(
    conn: &mut redis::aio::MultiplexedConnection,
    operation: impl std::future::Future<Output = T>,
) -> anyhow::Result<(T, Cost)> {
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(conn).await?;
    let busy = redis_busy_usec(conn).await?;
    let started = Instant::now();
    let outcome = operation.await;
    let wall = started.elapsed();
    let redis = redis_busy_usec(conn).await? - busy;
    let cost = Cost {
        wall_ms: wall.as_secs_f64() * 1e3,
        redis_ms: redis as f64 / 1e3,
        longest_command_ms: longest_command(conn).await?,
    };
    Ok((outcome, cost))
}

/// Adds `count` entries of live sessions (whose records do not exist: a list checks each)
/// to `index`, in the layout the index uses, all used within the last minute.
async fn fill(
    conn: &mut redis::aio::MultiplexedConnection,
    index: &str,
    count: usize,
) -> anyhow::Result<()> {
    let now = unix_now();
    let all: Vec<usize> = (0..count).collect();
    for chunk in all.chunks(1_000) {
        let mut command = redis::cmd("HSET");
        command.arg(index);
        for at in chunk {
            let handle = format!("bench{at:010}");
            let entry = json!({
                "k": "q0Qm8nq3p8P3W0o5rV8n1w8c3sZb2vQ5YtV2zXy7Q1k",
                "c": now - 60,
                "d": "Firefox on Linux",
                "n": "203.0.113.0/24",
            });
            command
                .arg(format!("m:{handle}"))
                .arg(entry.to_string())
                .arg(format!("s:{handle}"))
                .arg(now - (*at as u64 % 60))
                .arg(format!("x:{handle}"))
                .arg(now + 28_000);
        }
        let _: () = command.query_async(conn).await?;
    }
    Ok(())
}

/// The name of the one user index in this Redis (the store's naming is its own).
async fn only_user_index(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<String> {
    let names: Vec<String> = redis::cmd("KEYS")
        .arg("vestibule:user:*")
        .query_async(conn)
        .await?;
    match names.as_slice() {
        [name] => Ok(name.clone()),
        _ => anyhow::bail!("expected one user index, found {names:?}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = argument("--redis").ok_or_else(|| anyhow::anyhow!("--redis URL is required"))?;
    let sizes: Vec<usize> = argument("--entries")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let max_per_user = match argument("--max-per-user") {
        Some(max) => max.parse()?,
        None => vestibule::session::DEFAULT_MAX_PER_USER,
    };
    let client = redis::Client::open(url.as_str())?;
    // The timed commands may block Redis for seconds: wait for them.
    let mut conn = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(60))),
        )
        .await?;
    let store = Store::redis(
        &vestibule::session::store::RedisTopology::parse(&url)?,
        &vestibule::session::store::RedisTls::default(),
        None,
    )?;
    let sessions = Sessions::new(
        store,
        MasterKey::new(KEY),
        Duration::from_secs(1800),
        Duration::from_secs(28_800),
    )
    .with_max_per_user(max_per_user);
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    for (size, filed) in sizes
        .iter()
        .flat_map(|size| [(*size, "current"), (*size, "legacy")])
    {
        let sub = format!("bench-user-{size}-{filed}");
        // The session whose list is timed, made while the index is empty.
        let cookie = sessions.create(&record(&sub), &origin()).await?;
        let index = match filed {
            "current" => only_user_index(&mut conn).await?,
            _ => vestibule::session::store::compact_storage_key("user", sub.as_bytes()),
        };
        fill(&mut conn, &index, size).await?;

        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        let (login, login_cost) = measured(
            &mut conn,
            sessions.create_within_limit(&record(&sub), &origin()),
        )
        .await?;
        let (evicted, login_error) = match login {
            Ok(created) => (created.displaced.count, None),
            Err(error) => (0, Some(error.to_string())),
        };

        let current = sessions
            .load(&cookie)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the first session does not load"))?;
        let (listed, list_cost) = measured(&mut conn, sessions.list_for(&current)).await?;
        let (listed, list_error) = match listed {
            Ok(listed) => (listed.sessions.len(), None),
            Err(error) => (0, Some(error.to_string())),
        };
        let left: usize = redis::cmd("HLEN")
            .arg(&index)
            .query_async(&mut conn)
            .await?;
        println!(
            "{}",
            json!({
                "entries": size,
                "filed": filed,
                "max_per_user": max_per_user,
                "login_ms": login_cost.wall_ms,
                "login_redis_ms": login_cost.redis_ms,
                "login_longest_command_ms": login_cost.longest_command_ms,
                "login_error": login_error,
                "evicted": evicted,
                "list_ms": list_cost.wall_ms,
                "list_redis_ms": list_cost.redis_ms,
                "list_longest_command_ms": list_cost.longest_command_ms,
                "list_error": list_error,
                "listed": listed,
                "index_fields_after": left,
            })
        );
        let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    }
    Ok(())
}
