//! The tracking connection of watched keys: Redis tells this instance when a key a watch
//! read has changed, wherever the change was made.
//!
//! Unlike the record cache's connection (`tracking.rs`, broadcast mode: every session key),
//! this one uses `CLIENT TRACKING ON` in its default mode: Redis remembers the keys *this
//! connection* read and reports the next change of each, once. A watch reads its key here
//! (`PTTL`, which never touches the expiry), so each read both answers and re-arms the report;
//! only watched keys cost a message, whether the record cache is on or off. The connection is
//! made on the first watch and closed once none is left; on every (re)connection Redis remembers nothing, so every watcher
//! checks again. It delivers wake-ups and answers reads; it decides nothing about sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};

use super::super::StoreError;
use super::super::watchers::KeyWatchers;
use super::connection::TrackingTarget;

/// How often the connection must answer a `PING` (and its timeout): a dead connection is
/// replaced, and every watcher checks again, within about twice this.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Pauses before reconnecting: doubling from the first to the last (short, as every watch
/// learns of changes made during an outage only once it reconnects).
const RECONNECT_DELAY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(1));
/// How long the connection stays without a watch before it is closed (the next watch opens
/// it again), so an instance without relays costs Redis nothing.
const UNWATCHED_LINGER: Duration = Duration::from_secs(30);

/// The watched keys of one Redis deployment and the connection that reports their changes.
pub struct WatchTracker {
    target: TrackingTarget,
    watchers: KeyWatchers,
    /// The live tracking connection, if there is one.
    connection: Mutex<Option<MultiplexedConnection>>,
    started: AtomicBool,
}

impl WatchTracker {
    /// A tracker for `target`; it connects on the first [`WatchTracker::start`].
    pub(super) fn new(target: TrackingTarget) -> Self {
        Self {
            target,
            watchers: KeyWatchers::default(),
            connection: Mutex::new(None),
            started: AtomicBool::new(false),
        }
    }

    /// The watched keys.
    pub(in crate::session::store) fn watchers(&self) -> &KeyWatchers {
        &self.watchers
    }

    /// Starts keeping the tracking connection (once; later calls do nothing), for as long as
    /// the tracker exists.
    pub(in crate::session::store) fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(keep_tracking(Arc::downgrade(self)));
            }
            Err(_) => {
                // Watches then fail every read: they keep watching and never end by mistake.
                tracing::error!("session watches not pushed: started outside a Tokio runtime");
            }
        }
    }

    /// Marks the tracker stopped if no key is watched; `false` if it must go on after all.
    fn stop_if_unwatched(&self) -> bool {
        if !self.watchers.is_empty() {
            return false;
        }
        self.started.store(false, Ordering::SeqCst);
        // A watch added meanwhile may have found it still started: go on for it, unless
        // that watch started another already.
        self.watchers.is_empty() || self.started.swap(true, Ordering::SeqCst)
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `PTTL key` on the tracking connection: how long the key lives, `None` if it is gone;
    /// Redis reports its next change. Unavailable while the connection is down.
    pub(in crate::session::store) async fn remaining(
        &self,
        key: &str,
    ) -> Result<Option<Duration>, StoreError> {
        let Some(mut connection) = self.connection().clone() else {
            return Err(StoreError::Unavailable(
                "the watch tracking connection is down".into(),
            ));
        };
        let millis: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await?;
        Ok(remaining_from_pttl(millis))
    }

    /// Applies a push message: wakes the watchers of each key it names (all of them for a
    /// flush or anything unexpected).
    fn handle_push(&self, push: &PushInfo) {
        if push.kind != PushKind::Invalidate {
            return;
        }
        let [Value::Array(keys)] = push.data.as_slice() else {
            self.watchers.changed_all();
            return;
        };
        for key in keys {
            match key {
                Value::BulkString(key) => match std::str::from_utf8(key) {
                    Ok(key) => self.watchers.changed(key),
                    Err(_) => self.watchers.changed_all(),
                },
                _ => self.watchers.changed_all(),
            }
        }
    }
}

/// A `PTTL` reply as a lifetime: `-2` gone, `-1` no expiry (not a session's; lives on).
pub(super) fn remaining_from_pttl(millis: i64) -> Option<Duration> {
    match millis {
        -2 => None,
        millis => Some(Duration::from_millis(
            u64::try_from(millis).unwrap_or(u64::MAX),
        )),
    }
}

/// Reconnects the tracking connection whenever it is lost, for as long as the tracker exists.
async fn keep_tracking(tracker: Weak<WatchTracker>) {
    let mut delay = RECONNECT_DELAY.0;
    let mut reported_down = false;
    loop {
        let Some(current) = tracker.upgrade() else {
            return;
        };
        let dead = Arc::new(AtomicBool::new(false));
        let connected = connect(&current, &dead).await;
        drop(current);
        match connected {
            Ok(connection) => {
                if reported_down {
                    tracing::info!("session watches pushed again");
                    reported_down = false;
                }
                delay = RECONNECT_DELAY.0;
                heartbeat(&tracker, connection, &dead).await;
            }
            Err(error) if !reported_down => {
                tracing::warn!(error = %error, "session watches cannot be pushed until Redis client tracking works; they keep watching");
                reported_down = true;
            }
            Err(_) => {}
        }
        match tracker.upgrade() {
            Some(current) => {
                *current.connection() = None;
                if current.stop_if_unwatched() {
                    return;
                }
            }
            None => return,
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_DELAY.1);
    }
}

/// A new tracking connection, made current; every watcher then checks again (Redis tracks
/// nothing for a new connection, and changes made while there was none went unreported).
async fn connect(
    tracker: &Arc<WatchTracker>,
    dead: &Arc<AtomicBool>,
) -> redis::RedisResult<MultiplexedConnection> {
    let pushes = Arc::downgrade(tracker);
    let mut connection = tracker
        .target
        .connect_for_pushes(HEARTBEAT, dead, move |push| {
            if let Some(tracker) = pushes.upgrade() {
                tracker.handle_push(push);
            }
        })
        .await?;
    let () = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .query_async(&mut connection)
        .await?;
    *tracker.connection() = Some(connection.clone());
    tracker.watchers.changed_all();
    Ok(connection)
}

/// Pings until the connection dies, the tracker is gone, or no key has been watched for
/// [`UNWATCHED_LINGER`].
async fn heartbeat(
    tracker: &Weak<WatchTracker>,
    mut connection: MultiplexedConnection,
    dead: &AtomicBool,
) {
    let mut last_watched = tokio::time::Instant::now();
    loop {
        match tracker.upgrade() {
            Some(tracker) if !tracker.watchers.is_empty() => {
                last_watched = tokio::time::Instant::now();
            }
            Some(_) if last_watched.elapsed() >= UNWATCHED_LINGER => return,
            Some(_) => {}
            None => return,
        }
        tokio::time::sleep(HEARTBEAT).await;
        let pinged: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut connection).await;
        if let Err(error) = pinged {
            tracing::warn!(error = %error, "session watch tracking connection lost; reconnecting");
            return;
        }
        if dead.load(Ordering::SeqCst) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_gone_and_a_key_without_expiry_lives_on() {
        assert_eq!(remaining_from_pttl(-2), None);
        assert_eq!(remaining_from_pttl(1500), Some(Duration::from_millis(1500)));
        assert!(remaining_from_pttl(-1).is_some());
    }
}
