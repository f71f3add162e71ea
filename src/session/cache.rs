//! A per-instance cache of sealed session records that Redis keeps exact.
//!
//! Redis's server-assisted client-side caching (RESP3 `CLIENT TRACKING ON BCAST`) tells this
//! instance, on a connection of its own, about every change to every session key: a logout
//! or refresh on any instance, a touch, an expiry, a `FLUSHALL`. The key is dropped from the
//! cache as the message is read, so a proxied call usually needs no Redis round trip while a
//! logout anywhere still ends the session everywhere at once.
//!
//! The cache fails closed:
//! - it serves nothing unless the tracking connection is up and tracking was switched on
//!   after the last reconnect, and it empties itself when that connection drops or stops
//!   answering its heartbeat;
//! - a read that overlapped any invalidation (or a reconnect) is not stored, because the
//!   value may predate a change whose message has already been handled ([`Generation`]);
//! - it holds sealed records only: a memory dump yields no token without the browser's
//!   cookie, as in Redis.
//!
//! Sessions still expire after being idle: a hit does not touch Redis, so at most once per
//! touch interval a read goes to Redis with `GETEX` to push the idle deadline back.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;
use redis::{PushInfo, PushKind, Value};

/// The prefix of the keys the cache holds and Redis reports on.
pub const SESSION_KEY_PREFIX: &str = "vestibule:session:";

/// How often the tracking connection must prove it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause before reconnecting the tracking connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// A count of invalidations; a read may be cached only if none happened while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

/// How big the cache is and how often a cached session's idle expiry is pushed back.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Records kept at most (least recently used go first).
    pub capacity: NonZeroUsize,
    /// The longest a session goes without its idle expiry being reset while in use.
    pub touch_interval: Duration,
}

impl CacheSettings {
    /// `capacity` records (`None` if 0: no cache), touching every tenth of the idle timeout,
    /// between 1 s and 60 s but never more than half of it, so a session in use never comes
    /// close to its idle deadline.
    pub fn new(capacity: usize, idle_timeout: Duration) -> Option<Self> {
        Some(Self {
            capacity: NonZeroUsize::new(capacity)?,
            touch_interval: (idle_timeout / 10)
                .clamp(Duration::from_secs(1), Duration::from_secs(60))
                .min(idle_timeout / 2),
        })
    }
}

/// What the cache says about a key.
pub enum Lookup {
    /// The sealed record, current as far as Redis has told us.
    Hit(Vec<u8>),
    /// Ask Redis; `touch` says whether the idle deadline is due to be pushed back.
    Miss {
        /// Pass back to [`RecordCache::store`].
        generation: Generation,
        /// Use `GETEX` (reset the idle expiry) rather than `GET`.
        touch: bool,
    },
}

/// Hits, misses and invalidations since start-up (for the benchmark and operators).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to Redis.
    pub misses: u64,
    /// Keys dropped because Redis reported a change (or the whole cache, counted once).
    pub invalidations: u64,
}

/// Sealed records by storage key, plus when this instance last touched each key.
pub struct RecordCache {
    state: Mutex<State>,
    touch_interval: Duration,
}

struct State {
    live: bool,
    generation: u64,
    records: LruCache<String, Vec<u8>>,
    touched: LruCache<String, Instant>,
    stats: CacheStats,
}

impl RecordCache {
    /// A cache of up to `capacity` records, touching each key at most once per
    /// `touch_interval`. It serves nothing until [`RecordCache::set_live`] says tracking is on.
    pub fn new(capacity: NonZeroUsize, touch_interval: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                live: false,
                generation: 0,
                records: LruCache::new(capacity),
                touched: LruCache::new(capacity),
                stats: CacheStats::default(),
            }),
            touch_interval,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than the panic itself; keep serving rather than poisoning every request.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks `key` up.
    pub fn lookup(&self, key: &str) -> Lookup {
        let now = Instant::now();
        let mut state = self.state();
        let touch = state
            .touched
            .peek(key)
            .is_none_or(|at| now.duration_since(*at) >= self.touch_interval);
        if state.live
            && !touch
            && let Some(sealed) = state.records.get(key)
        {
            let sealed = sealed.clone();
            state.stats.hits += 1;
            return Lookup::Hit(sealed);
        }
        state.stats.misses += 1;
        Lookup::Miss {
            generation: Generation(state.generation),
            touch,
        }
    }

    /// Records what Redis answered for a miss. The value is kept only if tracking is on and
    /// nothing was invalidated since the lookup; a touch is remembered either way.
    pub fn store(&self, key: &str, sealed: Option<&[u8]>, generation: Generation, touched: bool) {
        let mut state = self.state();
        if touched {
            state.touched.put(key.to_owned(), Instant::now());
        }
        match sealed {
            Some(sealed) if state.live && Generation(state.generation) == generation => {
                state.records.put(key.to_owned(), sealed.to_vec());
            }
            _ => {}
        }
    }

    /// The current generation, for a read that bypasses [`RecordCache::lookup`].
    pub fn generation(&self) -> Generation {
        Generation(self.state().generation)
    }

    /// Drops `key` after this instance changed or deleted it.
    pub fn forget(&self, key: &str) {
        let mut state = self.state();
        state.generation += 1;
        state.records.pop(key);
    }

    /// Drops `key` and its touch time (the session is gone).
    pub fn forget_entirely(&self, key: &str) {
        let mut state = self.state();
        state.generation += 1;
        state.records.pop(key);
        state.touched.pop(key);
    }

    /// Switches serving on (tracking confirmed) or off (connection lost); both empty the
    /// cache, since messages may have been missed in between.
    pub fn set_live(&self, live: bool) {
        let mut state = self.state();
        state.live = live;
        state.generation += 1;
        state.records.clear();
        state.stats.invalidations += 1;
    }

    /// The longest a cached session goes without its idle expiry being reset.
    pub fn touch_interval(&self) -> Duration {
        self.touch_interval
    }

    /// Whether the cache is serving.
    pub fn is_live(&self) -> bool {
        self.state().live
    }

    /// Counters since start-up.
    pub fn stats(&self) -> CacheStats {
        self.state().stats
    }

    /// Applies a push message from the tracking connection.
    pub fn handle_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => self.invalidate(&push.data),
            PushKind::Disconnection => self.set_live(false),
            _ => {}
        }
    }

    /// `invalidate` carries an array of keys, or null when everything was flushed. Anything
    /// unexpected empties the cache.
    fn invalidate(&self, data: &[Value]) {
        let mut state = self.state();
        state.generation += 1;
        let keys = match data {
            [Value::Array(keys)] => keys,
            _ => {
                state.records.clear();
                state.stats.invalidations += 1;
                return;
            }
        };
        for key in keys {
            match key {
                Value::BulkString(key) => {
                    if let Ok(key) = std::str::from_utf8(key) {
                        state.records.pop(key);
                        state.stats.invalidations += 1;
                    }
                }
                _ => {
                    state.records.clear();
                    state.stats.invalidations += 1;
                    return;
                }
            }
        }
    }
}

/// Keeps a tracking connection to Redis open for `cache` for as long as the cache exists:
/// connects, switches `BCAST` tracking on for session keys, proves the connection alive
/// every second, and turns the cache off (and empty) whenever any of that fails.
///
/// It runs on a thread of its own, so an invalidation is applied as soon as it arrives,
/// however busy the request workers are: the next request after a logout elsewhere takes
/// at least a network round trip to arrive, and by then the key is gone.
pub fn spawn_tracker(client: redis::Client, cache: &Arc<RecordCache>) {
    let cache = Arc::downgrade(cache);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let spawned = runtime.map(|runtime| {
        std::thread::Builder::new()
            .name("vestibule-cache-tracker".into())
            .spawn(move || runtime.block_on(keep_tracking(client, cache)))
    });
    if let Err(error) | Ok(Err(error)) = spawned {
        tracing::error!(error = %error, "session cache off: cannot start its tracking thread");
    }
}

async fn keep_tracking(client: redis::Client, cache: Weak<RecordCache>) {
    let mut warned = false;
    while cache.strong_count() > 0 {
        match track(&client, &cache).await {
            Ok(()) => {}
            Err(error) if !warned => {
                tracing::warn!(error = %error, "session cache off until Redis client tracking works; every call reads Redis");
                warned = true;
            }
            Err(error) => tracing::debug!(error = %error, "session cache tracking failed"),
        }
        if let Some(cache) = cache.upgrade() {
            cache.set_live(false);
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// One tracking session; returns when the connection is lost or the cache is gone.
async fn track(client: &redis::Client, cache: &Weak<RecordCache>) -> redis::RedisResult<()> {
    let pushes = cache.clone();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(HEARTBEAT))
        .set_response_timeout(Some(HEARTBEAT))
        .set_push_sender(move |push: PushInfo| {
            if let Some(cache) = pushes.upgrade() {
                cache.handle_push(&push);
            }
            Ok::<(), std::convert::Infallible>(())
        });
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let () = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(SESSION_KEY_PREFIX)
        .query_async(&mut connection)
        .await?;
    match cache.upgrade() {
        Some(cache) => cache.set_live(true),
        None => return Ok(()),
    }
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        match cache.upgrade() {
            Some(cache) if cache.is_live() => {}
            // Gone, or a disconnection was reported between heartbeats: stop or start over.
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> RecordCache {
        let cache = RecordCache::new(NonZeroUsize::new(4).unwrap(), Duration::from_secs(60));
        cache.set_live(true);
        cache
    }

    fn miss(lookup: Lookup) -> (Generation, bool) {
        match lookup {
            Lookup::Miss { generation, touch } => (generation, touch),
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    fn invalidate(keys: &[&str]) -> PushInfo {
        let keys = keys
            .iter()
            .map(|key| Value::BulkString(key.as_bytes().to_vec()))
            .collect();
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(keys)],
        }
    }

    #[test]
    fn a_stored_read_is_served_until_redis_reports_a_change() {
        let cache = cache();
        let (generation, touch) = miss(cache.lookup("k"));
        assert!(touch, "the first read touches the idle deadline");
        cache.store("k", Some(b"sealed"), generation, true);
        assert!(matches!(cache.lookup("k"), Lookup::Hit(v) if v == b"sealed"));
        cache.handle_push(&invalidate(&["k"]));
        let (_, touch) = miss(cache.lookup("k"));
        assert!(!touch, "touched a moment ago: a plain GET is enough");
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_stored() {
        let cache = cache();
        let (generation, _) = miss(cache.lookup("k"));
        cache.handle_push(&invalidate(&["other"]));
        cache.store("k", Some(b"maybe stale"), generation, true);
        assert!(matches!(cache.lookup("k"), Lookup::Miss { .. }));
    }

    #[test]
    fn nothing_is_served_or_stored_while_tracking_is_down() {
        let cache = cache();
        let (generation, _) = miss(cache.lookup("k"));
        cache.store("k", Some(b"v"), generation, true);
        cache.handle_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert!(matches!(cache.lookup("k"), Lookup::Miss { .. }));
        let (generation, _) = miss(cache.lookup("k"));
        cache.store("k", Some(b"v"), generation, false);
        assert!(matches!(cache.lookup("k"), Lookup::Miss { .. }));
        // Back on: reads that started before do not count.
        cache.set_live(true);
        cache.store("k", Some(b"v"), generation, false);
        assert!(matches!(cache.lookup("k"), Lookup::Miss { .. }));
    }

    #[test]
    fn a_flush_or_an_unexpected_message_empties_the_cache() {
        let cache = cache();
        for push in [
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            },
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Array(vec![Value::Int(1)])],
            },
        ] {
            let (generation, _) = miss(cache.lookup("k"));
            cache.store("k", Some(b"v"), generation, true);
            assert!(matches!(cache.lookup("k"), Lookup::Hit(_)));
            cache.handle_push(&push);
            assert!(matches!(cache.lookup("k"), Lookup::Miss { .. }));
        }
    }

    #[test]
    fn the_idle_deadline_is_touched_again_after_the_interval() {
        let cache = RecordCache::new(NonZeroUsize::new(4).unwrap(), Duration::ZERO);
        cache.set_live(true);
        let (generation, _) = miss(cache.lookup("k"));
        cache.store("k", Some(b"v"), generation, true);
        let (_, touch) = miss(cache.lookup("k"));
        assert!(touch, "a zero interval touches on every read");
    }

    #[test]
    fn sessions_in_use_are_touched_well_before_their_idle_deadline() {
        let interval = |idle| {
            CacheSettings::new(1, Duration::from_secs(idle))
                .unwrap()
                .touch_interval
        };
        assert_eq!(interval(1800), Duration::from_secs(60));
        assert_eq!(interval(300), Duration::from_secs(30));
        assert_eq!(interval(5), Duration::from_secs(1));
        assert_eq!(interval(1), Duration::from_millis(500));
        assert!(CacheSettings::new(0, Duration::from_secs(60)).is_none());
    }

    #[test]
    fn local_writes_drop_the_key() {
        let cache = cache();
        let (generation, _) = miss(cache.lookup("k"));
        cache.store("k", Some(b"v"), generation, true);
        cache.forget("k");
        let (_, touch) = miss(cache.lookup("k"));
        assert!(!touch);
        cache.forget_entirely("k");
        let (_, touch) = miss(cache.lookup("k"));
        assert!(touch);
    }
}
