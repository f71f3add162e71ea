//! A per-instance cache of sealed session records that Redis keeps exact: its state machine.
//!
//! Redis's server-assisted client-side caching (RESP3 `CLIENT TRACKING ON BCAST`) tells this
//! instance about every change to every session key: a logout or refresh on any instance, a
//! touch, an expiry, a `FLUSHALL`. This file decides what those messages mean (lookups,
//! confirmations, invalidations) and does no I/O; the connection that delivers them and the
//! probe writes live in `tracking.rs`. A proxied call usually needs no Redis round trip
//! while a logout anywhere ends the session everywhere at the next request.
//!
//! The cache fails closed:
//! - **It serves, and keeps records, only while the invalidation path is proven end to end.**
//!   Every 250 ms the instance writes a new probe key (its own name, a sequence number)
//!   through the same connection that reads sessions; only the invalidation of the probe
//!   written last, arriving within a second of its write, confirms the path (not the expiry
//!   of an old probe, not another instance's). The cache serves hits and stores reads only
//!   until one second after the last confirmed probe was written, and empties itself as soon
//!   as it finds the confirmation lapsed. A dead or half-open tracking connection, tracking
//!   switched off, or the two connections reaching different servers after a failover all
//!   stop the confirmations, so a change that is never reported can be missed for at most
//!   that second.
//! - **A read that overlapped an invalidation of its key is not stored**, because its value
//!   may predate a change whose message has already been handled (each miss leaves a pending
//!   marker that an invalidation removes).
//! - **It holds sealed records, and beside each the record the session layer opened from it**
//!   (an [`Opened`] value it attaches after a read, see `docs/security-model.md`, "Per-instance
//!   cache"): the opened record lives exactly as long as its sealed value here and goes with
//!   it at an invalidation, an eviction or the cache emptying itself.
//!
//! Sessions still expire after being idle: a hit does not touch Redis, so at most once per
//! touch interval a read goes to Redis with `GETEX` to push the idle deadline back, and the
//! interval leaves room for a slow reply before the deadline.
//!
//! Over 450 lines because half of it is the unit tests pinning down each rule above, kept
//! beside the state they exercise.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use redis::{PushInfo, PushKind, Value};

/// The prefix of the session records the cache holds and Redis reports on.
pub const SESSION_KEY_PREFIX: &str = "vestibule:session:";
/// The prefix of the tokens sessions hold for APIs (cached and reported on too).
pub const HELD_TOKEN_KEY_PREFIX: &str = "vestibule:credential:";
/// The prefix of the client's own tokens (cached and reported on too).
pub const CLIENT_TOKEN_KEY_PREFIX: &str = "vestibule:client-token:";
/// Every prefix of the keys the cache may hold: Redis reports changes to exactly these.
pub const CACHED_KEY_PREFIXES: [&str; 3] = [
    SESSION_KEY_PREFIX,
    HELD_TOKEN_KEY_PREFIX,
    CLIENT_TOKEN_KEY_PREFIX,
];
/// The prefix of each instance's probe key (tracked too, apart from the sessions).
pub(super) const PROBE_KEY_PREFIX: &str = "vestibule:cache-probe:";

/// How long one confirmed probe lets the cache serve, counted from the probe's write; also
/// the latest its invalidation may arrive to count.
const CONFIRMATION_LIFETIME: Duration = Duration::from_secs(1);
/// Redis replies can take this long (the store's response timeout); touches leave room for it.
const SLOWEST_REPLY: Duration = Duration::from_secs(1);
/// Below this touch interval the cache would save nothing: it stays off.
const SHORTEST_TOUCH_INTERVAL: Duration = Duration::from_millis(250);

/// How big the cache is and how often a cached session's idle expiry is pushed back.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Records kept at most (least recently used go first).
    pub capacity: NonZeroUsize,
    /// The longest a session in use goes without its idle expiry being reset.
    pub touch_interval: Duration,
}

impl CacheSettings {
    /// `capacity` records, touching every tenth of the idle timeout (between 1 s and 60 s),
    /// and never so rarely that a slow reply could let a session in use reach its idle
    /// deadline. `None` (no cache) for a capacity of 0 or an idle timeout too short to cache.
    pub fn new(capacity: usize, idle_timeout: Duration) -> Option<Self> {
        let touch_interval = (idle_timeout / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
            .min(idle_timeout.saturating_sub(SLOWEST_REPLY) / 2);
        (touch_interval >= SHORTEST_TOUCH_INTERVAL).then_some(())?;
        Some(Self {
            capacity: NonZeroUsize::new(capacity)?,
            touch_interval,
        })
    }
}

/// What the session layer made of a cached sealed value (the record it opened), kept beside
/// it and dropped with it; the cache never looks inside.
pub type Opened = Arc<dyn Any + Send + Sync>;

/// A cached value: the sealed bytes as Redis holds them, and what was opened from them.
#[derive(Clone)]
pub struct Cached {
    /// The sealed value (shared: a hit copies no bytes).
    pub sealed: Arc<[u8]>,
    /// What [`RecordCache::attach`] put beside exactly these bytes, if anything.
    pub opened: Option<Opened>,
}

impl Cached {
    /// Sealed bytes with nothing opened beside them (as read from Redis, or held uncached).
    pub fn sealed_only(sealed: impl Into<Arc<[u8]>>) -> Self {
        Self {
            sealed: sealed.into(),
            opened: None,
        }
    }
}

/// What the cache says about a key.
pub enum Lookup {
    /// The sealed record, current as far as Redis has told us.
    Hit(Cached),
    /// Ask Redis, then report the answer with [`RecordCache::store`].
    Miss(PendingRead),
}

/// A read of one key that went to Redis.
#[derive(Debug, Clone, Copy)]
pub struct PendingRead {
    id: u64,
    started: Instant,
    /// Use `GETEX` (push the idle expiry back) rather than `GET`.
    pub touch: bool,
}

/// Sealed records by storage key, plus when this instance last touched each key.
pub struct RecordCache {
    state: Mutex<State>,
    touch_interval: Duration,
    /// This instance's probe keys: this prefix plus a sequence number.
    probe_prefix: String,
}

struct State {
    /// Tracking is on for the current connection.
    live: bool,
    /// A probe's invalidation arrived: hits may be served until then.
    confirmed_until: Option<Instant>,
    /// The probe written last (sequence number, when it was sent), until it is confirmed.
    outstanding_probe: Option<(u64, Instant)>,
    next_probe: u64,
    records: LruCache<String, Cached>,
    pending: LruCache<String, u64>,
    next_read: u64,
    touched: LruCache<String, Instant>,
    /// How many times everything kept was dropped at once.
    emptied: u64,
    /// How many probes confirmed the invalidation path.
    confirmations: u64,
}

impl State {
    /// Whether hits may be served and reads kept now. A confirmation found lapsed empties
    /// the cache: what it holds was kept while changes may have gone unreported.
    fn serving(&mut self, now: Instant) -> bool {
        self.end_lapsed_confirmation(now);
        self.live && self.confirmed_until.is_some()
    }

    /// Empties the cache if its confirmation has lapsed by `now`.
    fn end_lapsed_confirmation(&mut self, now: Instant) {
        if self.confirmed_until.is_some_and(|until| now >= until) {
            self.confirmed_until = None;
            self.drop_all();
        }
    }

    fn drop_key(&mut self, key: &str) {
        self.records.pop(key);
        self.pending.pop(key);
    }

    fn drop_all(&mut self) {
        self.records.clear();
        self.pending.clear();
        self.emptied += 1;
    }
}

impl RecordCache {
    /// An empty cache; it serves nothing until tracking is on and a probe came back.
    pub fn new(settings: CacheSettings) -> Self {
        let capacity = settings.capacity;
        Self {
            state: Mutex::new(State {
                live: false,
                confirmed_until: None,
                outstanding_probe: None,
                next_probe: 0,
                records: LruCache::new(capacity),
                pending: LruCache::new(capacity),
                next_read: 0,
                touched: LruCache::new(capacity),
                emptied: 0,
                confirmations: 0,
            }),
            touch_interval: settings.touch_interval,
            probe_prefix: format!("{PROBE_KEY_PREFIX}{}:", crate::random::url_safe_secret()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing here can be left half-done by a panic; keep serving rather than poisoning.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks `key` up; a miss must be followed by [`RecordCache::store`].
    pub fn lookup(&self, key: &str) -> Lookup {
        self.lookup_with(key, true)
    }

    /// Looks up a value whose expiry is its own and is never pushed back (a token held for
    /// an API): served from the cache whenever it is there; a miss must be followed by
    /// [`RecordCache::store`].
    pub fn lookup_untouched(&self, key: &str) -> Lookup {
        self.lookup_with(key, false)
    }

    /// [`RecordCache::lookup`], touching when due only if `touches`.
    fn lookup_with(&self, key: &str, touches: bool) -> Lookup {
        let now = Instant::now();
        let mut state = self.state();
        let touch = touches && self.touch_due(&state, key, now);
        let metrics = crate::metrics::metrics();
        if !touch
            && state.serving(now)
            && let Some(cached) = state.records.get(key)
        {
            metrics.cache_hits.inc();
            return Lookup::Hit(cached.clone());
        }
        metrics.cache_misses.inc();
        Lookup::Miss(Self::begin(&mut state, key, now, touch))
    }

    /// Starts a read that must go to Redis whatever the cache holds; with `touch`, it also
    /// pushes the idle expiry back even if that is not due yet.
    pub fn begin_read(&self, key: &str, touch: bool) -> PendingRead {
        let now = Instant::now();
        let mut state = self.state();
        let touch = touch || self.touch_due(&state, key, now);
        Self::begin(&mut state, key, now, touch)
    }

    fn touch_due(&self, state: &State, key: &str, now: Instant) -> bool {
        state
            .touched
            .peek(key)
            .is_none_or(|at| now.duration_since(*at) >= self.touch_interval)
    }

    fn begin(state: &mut State, key: &str, now: Instant, touch: bool) -> PendingRead {
        state.next_read += 1;
        let id = state.next_read;
        state.pending.put(key.to_owned(), id);
        PendingRead {
            id,
            started: now,
            touch,
        }
    }

    /// Records what Redis answered for `read`. The value is kept only if no invalidation of
    /// the key (or of everything) was handled since the read began; a touch is remembered
    /// from when the read was sent, so the idle deadline is never overestimated.
    pub fn store(&self, key: &str, sealed: Option<&Arc<[u8]>>, read: PendingRead) {
        let mut state = self.state();
        let Some(sealed) = sealed else {
            state.drop_key(key);
            state.touched.pop(key);
            return;
        };
        if read.touch {
            state.touched.put(key.to_owned(), read.started);
        }
        if state.pending.peek(key) == Some(&read.id) {
            state.pending.pop(key);
            if state.serving(Instant::now()) {
                state
                    .records
                    .put(key.to_owned(), Cached::sealed_only(sealed.clone()));
            }
        }
    }

    /// Keeps `opened` beside the cached value of `key` if that is still exactly `sealed` (the
    /// very bytes a read returned, not equal ones read again): it is then dropped with them.
    /// Otherwise (changed, invalidated, evicted, not serving) nothing is kept.
    pub fn attach(&self, key: &str, sealed: &Arc<[u8]>, opened: Opened) {
        let mut state = self.state();
        if !state.serving(Instant::now()) {
            return;
        }
        if let Some(cached) = state.records.peek_mut(key)
            && Arc::ptr_eq(&cached.sealed, sealed)
        {
            cached.opened = Some(opened);
        }
    }

    /// Drops `key` after this instance changed it.
    pub fn forget(&self, key: &str) {
        self.state().drop_key(key);
    }

    /// Drops `key` and its touch time (the session is gone).
    pub fn forget_entirely(&self, key: &str) {
        let mut state = self.state();
        state.drop_key(key);
        state.touched.pop(key);
    }

    /// Whether hits are being served.
    pub fn is_serving(&self) -> bool {
        self.state().serving(Instant::now())
    }

    /// How many times the cache dropped everything it kept (a confirmation found lapsed, a
    /// tracking connection made or lost, a flush or an unreadable message): a read after
    /// such a moment opens its record again, rightly.
    pub fn times_emptied(&self) -> u64 {
        let mut state = self.state();
        state.end_lapsed_confirmation(Instant::now());
        state.emptied
    }

    /// How many probes have confirmed the invalidation path. Redis reports changes in the
    /// order it made them, so two confirmations after a moment mean that every change made
    /// before it (this instance's own writes too) has been reported and handled.
    pub fn times_confirmed(&self) -> u64 {
        self.state().confirmations
    }

    /// The key of the next probe to write; only its invalidation will confirm the cache.
    pub(super) fn next_probe_key(&self) -> String {
        let mut state = self.state();
        state.next_probe += 1;
        let sequence = state.next_probe;
        state.outstanding_probe = Some((sequence, Instant::now()));
        format!("{}{sequence}", self.probe_prefix)
    }

    /// A probe key's invalidation: confirms the cache if it is the outstanding probe's and
    /// arrived within the confirmation window of its write.
    fn probe_reported(&self, state: &mut State, key: &str, now: Instant) {
        let Some(sequence) = key
            .strip_prefix(self.probe_prefix.as_str())
            .and_then(|sequence| sequence.parse::<u64>().ok())
        else {
            return; // another instance's probe
        };
        // A confirmation that lapsed before this one arrived empties the cache first: what
        // it kept in the gap may have missed a change.
        state.end_lapsed_confirmation(now);
        if let Some((outstanding, sent)) = state.outstanding_probe
            && outstanding == sequence
            && now.duration_since(sent) < CONFIRMATION_LIFETIME
        {
            state.outstanding_probe = None;
            state.confirmed_until = Some(sent + CONFIRMATION_LIFETIME);
            state.confirmations += 1;
        }
    }

    /// Tracking is confirmed on a new connection, unless that connection already died.
    /// Hits wait for the first probe to come back.
    pub(super) fn go_live(&self, connection_dead: &AtomicBool) -> bool {
        let mut state = self.state();
        state.drop_all();
        state.confirmed_until = None;
        state.outstanding_probe = None;
        state.live = !connection_dead.load(Ordering::SeqCst);
        state.live
    }

    /// The tracking connection is gone: serve nothing, keep nothing.
    pub(super) fn go_dark(&self) {
        let mut state = self.state();
        state.live = false;
        state.confirmed_until = None;
        state.drop_all();
    }

    /// Applies a push message from the tracking connection.
    pub fn handle_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => self.invalidate(&push.data),
            PushKind::Disconnection => self.go_dark(),
            _ => {}
        }
    }

    /// `invalidate` carries an array of keys, or null when everything was flushed. Anything
    /// unexpected empties the cache.
    fn invalidate(&self, data: &[Value]) {
        let now = Instant::now();
        let mut state = self.state();
        let [Value::Array(keys)] = data else {
            state.drop_all();
            return;
        };
        for key in keys {
            let Value::BulkString(key) = key else {
                state.drop_all();
                return;
            };
            let Ok(key) = std::str::from_utf8(key) else {
                state.drop_all();
                return;
            };
            if key.starts_with(PROBE_KEY_PREFIX) {
                self.probe_reported(&mut state, key, now);
            } else {
                state.drop_key(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(touch_interval: Duration) -> CacheSettings {
        CacheSettings {
            capacity: NonZeroUsize::new(4).unwrap(),
            touch_interval,
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

    /// Writes a probe (as the probe task does) and delivers its invalidation.
    fn confirm(cache: &RecordCache) {
        let key = cache.next_probe_key();
        cache.handle_push(&invalidate(&[&key]));
    }

    /// Moves the cache's clock readings `by` into the past (its confirmation and probe).
    fn backdate(cache: &RecordCache, by: Duration) {
        let mut state = cache.state();
        state.confirmed_until = state.confirmed_until.map(|until| until - by);
        state.outstanding_probe = state.outstanding_probe.map(|(seq, sent)| (seq, sent - by));
    }

    /// A cache whose tracking is on and whose probe has just come back.
    fn serving_cache(touch_interval: Duration) -> RecordCache {
        let cache = RecordCache::new(settings(touch_interval));
        assert!(cache.go_live(&AtomicBool::new(false)));
        confirm(&cache);
        assert!(cache.is_serving());
        cache
    }

    fn bytes(value: &[u8]) -> Arc<[u8]> {
        Arc::from(value)
    }

    fn miss(lookup: Lookup) -> PendingRead {
        match lookup {
            Lookup::Miss(read) => read,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    fn warm(cache: &RecordCache, key: &str) {
        let read = miss(cache.lookup(key));
        cache.store(key, Some(&bytes(b"sealed")), read);
        assert!(matches!(cache.lookup(key), Lookup::Hit(v) if &*v.sealed == b"sealed"));
    }

    #[test]
    fn a_stored_read_is_served_until_redis_reports_a_change() {
        let cache = serving_cache(Duration::from_secs(60));
        let read = miss(cache.lookup("k"));
        assert!(read.touch, "the first read touches the idle deadline");
        cache.store("k", Some(&bytes(b"sealed")), read);
        assert!(matches!(cache.lookup("k"), Lookup::Hit(v) if &*v.sealed == b"sealed"));
        cache.handle_push(&invalidate(&["k"]));
        let read = miss(cache.lookup("k"));
        assert!(!read.touch, "touched a moment ago: a plain GET is enough");
    }

    #[test]
    fn a_read_that_raced_an_invalidation_of_its_key_is_not_stored() {
        let cache = serving_cache(Duration::from_secs(60));
        let read = miss(cache.lookup("k"));
        cache.handle_push(&invalidate(&["k"]));
        cache.store("k", Some(&bytes(b"maybe stale")), read);
        assert!(matches!(cache.lookup("k"), Lookup::Miss(_)));
        // Changes to other keys do not stop a read from being stored.
        let read = miss(cache.lookup("k"));
        cache.handle_push(&invalidate(&["other"]));
        cache.store("k", Some(&bytes(b"current")), read);
        assert!(matches!(cache.lookup("k"), Lookup::Hit(_)));
    }

    #[test]
    fn nothing_is_kept_or_served_before_a_probe_confirms_or_after_a_disconnection() {
        let cache = RecordCache::new(settings(Duration::from_secs(60)));
        assert!(cache.go_live(&AtomicBool::new(false)));
        let read = miss(cache.lookup("k"));
        cache.store("k", Some(&bytes(b"v")), read);
        confirm(&cache);
        assert!(
            matches!(cache.lookup("k"), Lookup::Miss(_)),
            "a read stored while unproven is not kept"
        );
        warm(&cache, "k");
        cache.handle_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert!(!cache.is_serving());
        assert!(matches!(cache.lookup("k"), Lookup::Miss(_)));
    }

    #[test]
    fn a_lapsed_confirmation_empties_the_cache() {
        let cache = serving_cache(Duration::from_secs(60));
        warm(&cache, "k");
        backdate(&cache, CONFIRMATION_LIFETIME);
        assert!(!cache.is_serving());
        confirm(&cache);
        assert!(
            matches!(cache.lookup("k"), Lookup::Miss(_)),
            "records kept before the lapse are gone"
        );
    }

    #[test]
    fn a_lapse_that_no_lookup_saw_still_empties_the_cache_at_the_next_confirmation() {
        let cache = serving_cache(Duration::from_secs(60));
        warm(&cache, "k");
        let emptied = cache.times_emptied();
        backdate(&cache, CONFIRMATION_LIFETIME);
        confirm(&cache);
        assert!(cache.is_serving());
        assert_eq!(cache.times_emptied(), emptied + 1);
        assert!(
            matches!(cache.lookup("k"), Lookup::Miss(_)),
            "records kept before the lapse are gone"
        );
        // A confirmation in time keeps what is there.
        warm(&cache, "k");
        confirm(&cache);
        assert!(matches!(cache.lookup("k"), Lookup::Hit(_)));
        assert_eq!(cache.times_emptied(), emptied + 1);
    }

    #[test]
    fn only_the_last_probes_own_prompt_invalidation_confirms() {
        let cache = RecordCache::new(settings(Duration::from_secs(60)));
        assert!(cache.go_live(&AtomicBool::new(false)));
        // An older probe's invalidation (say, its key expiring) does not count.
        let old = cache.next_probe_key();
        let _latest = cache.next_probe_key();
        cache.handle_push(&invalidate(&[&old]));
        assert!(!cache.is_serving());
        // Nor does the latest probe's invalidation arriving after the window (its expiry,
        // when the write itself was never reported).
        let late = cache.next_probe_key();
        backdate(&cache, CONFIRMATION_LIFETIME);
        cache.handle_push(&invalidate(&[&late]));
        assert!(!cache.is_serving());
        // A confirmed probe confirms once: a second invalidation of it after the
        // confirmation lapsed does not bring the cache back.
        let probe = cache.next_probe_key();
        cache.handle_push(&invalidate(&[&probe]));
        assert!(cache.is_serving());
        backdate(&cache, CONFIRMATION_LIFETIME);
        cache.handle_push(&invalidate(&[&probe]));
        assert!(!cache.is_serving());
    }

    #[test]
    fn a_connection_that_died_before_going_live_stays_dark() {
        let cache = RecordCache::new(settings(Duration::from_secs(60)));
        assert!(!cache.go_live(&AtomicBool::new(true)));
        confirm(&cache);
        assert!(!cache.is_serving());
    }

    #[test]
    fn other_instances_probes_do_not_count() {
        let cache = RecordCache::new(settings(Duration::from_secs(60)));
        assert!(cache.go_live(&AtomicBool::new(false)));
        cache.next_probe_key();
        cache.handle_push(&invalidate(&["vestibule:cache-probe:someone-else:1"]));
        assert!(!cache.is_serving());
    }

    #[test]
    fn a_flush_or_an_unexpected_message_empties_the_cache() {
        let cache = serving_cache(Duration::from_secs(60));
        for data in [
            vec![Value::Nil],
            vec![Value::Array(vec![Value::Int(1)])],
            vec![],
        ] {
            warm(&cache, "k");
            cache.handle_push(&PushInfo {
                kind: PushKind::Invalidate,
                data,
            });
            assert!(matches!(cache.lookup("k"), Lookup::Miss(_)));
        }
    }

    #[test]
    fn the_idle_deadline_is_touched_again_after_the_interval() {
        let cache = serving_cache(Duration::ZERO);
        let read = miss(cache.lookup("k"));
        cache.store("k", Some(&bytes(b"v")), read);
        assert!(
            miss(cache.lookup("k")).touch,
            "a zero interval touches on every read"
        );
    }

    #[test]
    fn a_missing_record_forgets_the_key() {
        let cache = serving_cache(Duration::from_secs(60));
        warm(&cache, "k");
        let read = cache.begin_read("k", false);
        cache.store("k", None, read);
        assert!(miss(cache.lookup("k")).touch);
    }

    #[test]
    fn local_writes_drop_the_key() {
        let cache = serving_cache(Duration::from_secs(60));
        warm(&cache, "k");
        cache.forget("k");
        assert!(!miss(cache.lookup("k")).touch);
        cache.forget_entirely("k");
        assert!(miss(cache.lookup("k")).touch);
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
        assert_eq!(interval(2), Duration::from_millis(500));
        assert!(
            CacheSettings::new(1, Duration::from_secs(1)).is_none(),
            "too short to cache"
        );
        assert!(CacheSettings::new(0, Duration::from_secs(60)).is_none());
    }
}
