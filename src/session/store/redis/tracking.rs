//! What keeps the record cache exact: the RESP3 tracking connection and the probe writes.
//!
//! A thread of its own reads invalidations as they arrive, however busy the request workers
//! are, and hands them to the cache's state machine ([`super::cache`]); a task writes a probe
//! key every 250 ms through the data connection, whose invalidation proves the path end to
//! end. This file decides nothing about what the cache may serve: it only delivers messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::cache::{CACHED_KEY_PREFIXES, PROBE_KEY_PREFIX, RecordCache};
use super::connection::{RedisConnection, TrackingTarget};

/// How often a probe key is written.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Probe keys expire well after the confirmation window, so their expiry cannot confirm.
const PROBE_KEY_LIFETIME_MS: u64 = 5_000;
/// How often the tracking connection must answer a `PING` (and its timeout).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Pauses before reconnecting the tracking connection: doubling from the first to the last.
const RECONNECT_DELAY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Starts what keeps `cache` exact for as long as it exists: the tracking connection (on a
/// thread of its own, so invalidations are applied as they arrive however busy the request
/// workers are) and the probe written through `data` (the connection sessions are read on).
pub(super) fn start(cache: &Arc<RecordCache>, tracking: TrackingTarget, data: RedisConnection) {
    // The probe runs beside the requests; without a runtime the cache simply stays off.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!("session cache off: started outside a Tokio runtime");
        return;
    };
    runtime.spawn(probe(data, Arc::downgrade(cache)));
    let weak = Arc::downgrade(cache);
    let spawned = std::thread::Builder::new()
        .name("vestibule-cache-tracker".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(keep_tracking(tracking, weak)),
                Err(error) => {
                    tracing::error!(error = %error, "session cache off: no runtime for its tracking thread");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(error = %error, "session cache off: cannot start its tracking thread");
    }
}

/// Writes the probe key every [`PROBE_INTERVAL`]; its invalidation confirms the cache.
async fn probe(mut data: RedisConnection, cache: Weak<RecordCache>) {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(key) = cache.upgrade().map(|cache| cache.next_probe_key()) else {
            return;
        };
        let written: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("PX")
            .arg(PROBE_KEY_LIFETIME_MS)
            .query_async(&mut data)
            .await;
        if let Err(error) = written {
            tracing::debug!(error = %error, "session cache probe not written");
        }
    }
}

/// Reconnects the tracking connection whenever it is lost, backing off while Redis cannot
/// track (down, or without `CLIENT TRACKING`), and logs each change between on and off.
async fn keep_tracking(target: TrackingTarget, cache: Weak<RecordCache>) {
    let mut delay = RECONNECT_DELAY.0;
    let mut reported_off = false;
    while cache.strong_count() > 0 {
        let dead = Arc::new(AtomicBool::new(false));
        let outcome = track(&target, &cache, &dead).await;
        if let Some(cache) = cache.upgrade() {
            cache.go_dark();
        }
        match outcome {
            Ok(went_live) => {
                if went_live {
                    tracing::warn!("session cache off: tracking connection lost; reconnecting");
                    delay = RECONNECT_DELAY.0;
                }
            }
            Err(error) => {
                if !reported_off {
                    tracing::warn!(error = %error, "session cache off until Redis client tracking works; every call reads Redis");
                    reported_off = true;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_DELAY.1);
    }
}

/// One tracking connection; `Ok(true)` if it went live before it was lost, `Ok(false)` if
/// the cache is gone.
async fn track(
    target: &TrackingTarget,
    cache: &Weak<RecordCache>,
    dead: &Arc<AtomicBool>,
) -> redis::RedisResult<bool> {
    let pushes = cache.clone();
    let mut connection = target
        .connect_for_pushes(HEARTBEAT, dead, move |push| {
            if let Some(cache) = pushes.upgrade() {
                cache.handle_push(push);
            }
        })
        .await?;
    let mut tracking = redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in CACHED_KEY_PREFIXES.iter().chain([&PROBE_KEY_PREFIX]) {
        tracking.arg("PREFIX").arg(*prefix);
    }
    let () = tracking.query_async(&mut connection).await?;
    match cache.upgrade() {
        Some(cache) if cache.go_live(dead) => tracing::info!("session cache on"),
        Some(_) => return Ok(false),
        None => return Ok(false),
    }
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        if dead.load(Ordering::SeqCst) || cache.strong_count() == 0 {
            return Ok(true);
        }
    }
}
