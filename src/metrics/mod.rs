//! Prometheus metrics: what an SRE's dashboard needs to see of logins, sessions, refreshes, the
//! provider, Redis, the per-instance cache and the proxy.
//!
//! One process-wide set (every layer records into [`metrics()`] without it being passed
//! around), exposed in the Prometheus text format by [`Metrics::encode`], which the HTTP layer
//! serves on `metrics.listen` only, never on the public listener. Labels are bounded: reasons
//! and outcomes are words of fixed vocabularies, routes are the configured prefixes, never raw
//! paths or user ids. Recording costs a few atomic operations (and a label lookup), whether or
//! not anything scrapes.
//!
//! Built on `prometheus-client` (the Prometheus project's own Rust client): typed label sets
//! keep cardinality bounded by construction, and there is no global recorder to install.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set of one reason (`reason="state_mismatch"`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason, a word of a fixed vocabulary.
    pub reason: &'static str,
}

/// A provider endpoint and the outcome of one request to it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// `discovery` (with the signing keys), `code_exchange`, `userinfo`, `refresh` or
    /// `revocation`.
    pub endpoint: &'static str,
    /// `ok`, `rejected` (the provider said no) or `error` (unreachable, invalid answer).
    pub outcome: &'static str,
}

/// A provider endpoint.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// As in [`ProviderLabels::endpoint`].
    pub endpoint: &'static str,
}

/// A proxied call's route, method and status class.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    /// The route's configured prefix.
    pub route: &'static str,
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`, `OPTIONS` or `other`.
    pub method: &'static str,
    /// `2xx` … `5xx`.
    pub status: &'static str,
}

/// A route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route's configured prefix.
    pub route: &'static str,
}

/// A route and what went wrong reaching its upstream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// The route's configured prefix.
    pub route: &'static str,
    /// `connect` (unreachable, refused, reset) or `timeout`.
    pub kind: &'static str,
}

/// A kind of wait.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What was waited for.
    pub kind: &'static str,
}

/// A cache lookup's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `hit` or `miss`.
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets (seconds) for calls to the provider, Redis and upstreams: 0.5 ms to 10 s.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Every metric Vestibule records. The families with labels are recorded through the methods
/// below, which name the label values; the plain counters, gauges and histograms directly.
pub struct Metrics {
    registry: Registry,
    /// Logins started (`/api/auth/login` redirected to the provider).
    pub logins_started: Counter,
    /// Logins completed (a session was created).
    pub logins_completed: Counter,
    /// Login callbacks that failed, by reason.
    logins_failed: Family<ReasonLabel, Counter>,
    /// Sessions created.
    pub sessions_created: Counter,
    /// Sessions ended, by reason.
    sessions_ended: Family<ReasonLabel, Counter>,
    /// Live sessions in the store (set when scraped).
    pub live_sessions: Gauge,
    /// Refresh grants attempted.
    pub refresh_attempts: Counter,
    /// Refresh grants that succeeded.
    pub refresh_successes: Counter,
    /// Refreshes that failed, by reason.
    refresh_failures: Family<ReasonLabel, Counter>,
    /// Duration of refresh grants.
    pub refresh_duration: Histogram,
    /// Requests that waited for another request's refresh: `local` (on this instance) or
    /// `cluster` (for another instance's lock).
    refresh_waits: Family<KindLabel, Counter>,
    /// Access tokens upstreams rejected as invalid (`invalid_token`) while believed valid, by
    /// what was done: `refreshed`, `joined`, `declined`.
    refresh_replacements: Family<KindLabel, Counter>,
    /// Requests to the provider, by endpoint and outcome.
    provider_requests: Family<ProviderLabels, Counter>,
    /// Duration of requests to the provider, by endpoint.
    provider_duration: Histograms<EndpointLabel>,
    /// Duration of Redis commands.
    pub redis_duration: Histogram,
    /// Redis commands that failed (unreachable, timed out, refused).
    pub redis_errors: Counter,
    /// Lookups in this instance's session cache.
    cache_lookups: Family<OutcomeLabel, Counter>,
    /// Session cache hits (the `hit` member of the lookups, resolved once: the hot path).
    pub cache_hits: Counter,
    /// Session cache misses.
    pub cache_misses: Counter,
    /// Whether this instance's session cache serves hits (1) or every call reads Redis (0).
    pub cache_serving: Gauge,
    /// Session records decrypted (a call on a session the cache keeps opened needs none).
    pub records_opened: Counter,
    /// Proxied calls, by route, method and status class.
    proxy_requests: Family<ProxyLabels, Counter>,
    /// Duration of proxied calls until the upstream's response headers, by route.
    proxy_duration: Histograms<RouteLabel>,
    /// Upstream calls that failed, by route and kind.
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let cache_lookups = Family::<OutcomeLabel, Counter>::default();
        let outcome = |outcome| {
            cache_lookups
                .get_or_create(&OutcomeLabel { outcome })
                .clone()
        };
        let (cache_hits, cache_misses) = (outcome("hit"), outcome("miss"));
        let metrics = Self {
            registry: Registry::with_prefix("vestibule"),
            logins_started: Counter::default(),
            logins_completed: Counter::default(),
            logins_failed: Family::default(),
            sessions_created: Counter::default(),
            sessions_ended: Family::default(),
            live_sessions: Gauge::default(),
            refresh_attempts: Counter::default(),
            refresh_successes: Counter::default(),
            refresh_failures: Family::default(),
            refresh_duration: latency_histogram(),
            refresh_waits: Family::default(),
            refresh_replacements: Family::default(),
            provider_requests: Family::default(),
            provider_duration: Histograms::new_with_constructor(latency_histogram),
            redis_duration: latency_histogram(),
            redis_errors: Counter::default(),
            cache_lookups,
            cache_hits,
            cache_misses,
            cache_serving: Gauge::default(),
            records_opened: Counter::default(),
            proxy_requests: Family::default(),
            proxy_duration: Histograms::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
        };
        metrics.registered()
    }

    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "logins_started",
            "Logins started",
            self.logins_started.clone(),
        );
        r.register(
            "logins_completed",
            "Logins completed",
            self.logins_completed.clone(),
        );
        r.register(
            "logins_failed",
            "Login callbacks that failed, by reason",
            self.logins_failed.clone(),
        );
        r.register(
            "sessions_created",
            "Sessions created",
            self.sessions_created.clone(),
        );
        r.register(
            "sessions_ended",
            "Sessions ended, by reason",
            self.sessions_ended.clone(),
        );
        r.register(
            "live_sessions",
            "Live sessions in the store (at scrape time)",
            self.live_sessions.clone(),
        );
        r.register(
            "refresh_attempts",
            "Refresh grants attempted",
            self.refresh_attempts.clone(),
        );
        r.register(
            "refresh_successes",
            "Refresh grants that succeeded",
            self.refresh_successes.clone(),
        );
        r.register(
            "refresh_failures",
            "Refreshes that failed, by reason",
            self.refresh_failures.clone(),
        );
        r.register(
            "refresh_duration_seconds",
            "Duration of refresh grants",
            self.refresh_duration.clone(),
        );
        r.register("refresh_waits", "Requests that waited for another request's refresh (local) or another instance's lock (cluster)", self.refresh_waits.clone());
        r.register(
            "refresh_replacements",
            "Access tokens an upstream rejected as invalid_token while believed valid: refreshed, joined another request's refresh, or declined (already replaced once)",
            self.refresh_replacements.clone(),
        );
        r.register(
            "provider_requests",
            "Requests to the provider, by endpoint and outcome",
            self.provider_requests.clone(),
        );
        r.register(
            "provider_request_duration_seconds",
            "Duration of requests to the provider",
            self.provider_duration.clone(),
        );
        r.register(
            "redis_command_duration_seconds",
            "Duration of Redis commands",
            self.redis_duration.clone(),
        );
        r.register(
            "redis_errors",
            "Redis commands that failed",
            self.redis_errors.clone(),
        );
        r.register(
            "session_cache_lookups",
            "Lookups in this instance's session cache",
            self.cache_lookups.clone(),
        );
        r.register(
            "session_cache_serving",
            "Whether this instance's session cache serves hits",
            self.cache_serving.clone(),
        );
        r.register(
            "session_records_opened",
            "Session records decrypted (a call on a session the cache keeps opened needs none)",
            self.records_opened.clone(),
        );
        r.register(
            "proxy_requests",
            "Proxied calls, by route, method and status class",
            self.proxy_requests.clone(),
        );
        r.register(
            "proxy_request_duration_seconds",
            "Duration of proxied calls until the upstream's response headers",
            self.proxy_duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream calls that failed, by route and kind",
            self.upstream_errors.clone(),
        );
        self
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a failed login callback.
    pub fn login_failed(&self, reason: &'static str) {
        self.logins_failed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a refresh that failed for `reason`.
    pub fn refresh_failed(&self, reason: &'static str) {
        self.refresh_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a request that waited for a refresh instead of making one: `local` (another
    /// request of this instance's) or `cluster` (another instance's lock).
    pub fn refresh_waited(&self, kind: &'static str) {
        self.refresh_waits.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts an access token an upstream rejected as invalid while it was believed valid:
    /// `refreshed` (this request's grant replaced it), `joined` (another request's had) or
    /// `declined` (it came from such a refresh already, or there is nothing to refresh with).
    pub fn refresh_replaced(&self, kind: &'static str) {
        self.refresh_replacements
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Counts `count` sessions ended for `reason`.
    pub fn sessions_ended(&self, reason: &'static str, count: usize) {
        if count > 0 {
            self.sessions_ended
                .get_or_create(&ReasonLabel { reason })
                .inc_by(count as u64);
        }
    }

    /// Records one request to the provider's `endpoint`.
    pub fn provider_request(&self, endpoint: &'static str, outcome: &'static str, took: Duration) {
        self.provider_requests
            .get_or_create(&ProviderLabels { endpoint, outcome })
            .inc();
        self.provider_duration
            .get_or_create(&EndpointLabel { endpoint })
            .observe(took.as_secs_f64());
    }

    /// The metric handles of the route with `prefix`, made once per route at start-up and kept
    /// for the life of the process (routes are a handful, fixed by the configuration).
    pub fn route(&self, prefix: &str) -> &'static RouteMetrics {
        let label: &'static str = Box::leak(prefix.to_owned().into_boxed_str());
        let duration = self
            .proxy_duration
            .get_or_create(&RouteLabel { route: label })
            .clone();
        let requests = METHODS.map(|method| {
            STATUS_CLASSES.map(|status| {
                self.proxy_requests
                    .get_or_create(&ProxyLabels {
                        route: label,
                        method,
                        status,
                    })
                    .clone()
            })
        });
        Box::leak(Box::new(RouteMetrics {
            label,
            duration,
            requests,
        }))
    }

    /// Records one proxied call on `route` that was answered `status`.
    pub fn proxied(
        &self,
        route: &RouteMetrics,
        method: &axum::http::Method,
        status: u16,
        took: Duration,
    ) {
        route.requests[method_index(method)][status_index(status)].inc();
        route.duration.observe(took.as_secs_f64());
    }

    /// Counts an upstream call on `route` that failed (`connect` or `timeout`).
    pub fn upstream_error(&self, route: &'static str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels { route, kind })
            .inc();
    }
}

/// One route's metric handles (see [`Metrics::route`]).
#[derive(Debug)]
pub struct RouteMetrics {
    /// The route's label (its prefix).
    pub label: &'static str,
    duration: Histogram,
    /// Its call counters by method and status class (made up front, so recording one is an
    /// index, not a hash lookup, and every series starts at 0).
    requests: [[Counter; STATUS_CLASSES.len()]; METHODS.len()],
}

/// The methods counted by name; any other is `other`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// The status classes.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a method in [`METHODS`].
fn method_index(method: &axum::http::Method) -> usize {
    use axum::http::Method;
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The index of a status's class in [`STATUS_CLASSES`].
fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.login_failed("state_mismatch");
        let orders = metrics.route("/api/orders");
        metrics.proxied(
            orders,
            &axum::http::Method::PATCH,
            503,
            Duration::from_millis(3),
        );
        metrics.proxied(
            orders,
            &axum::http::Method::from_bytes(b"PURGE").unwrap(),
            204,
            Duration::ZERO,
        );
        let text = metrics.encode();
        assert!(
            text.contains("vestibule_logins_failed_total{reason=\"state_mismatch\"} 1"),
            "{text}"
        );
        assert!(text.contains("vestibule_proxy_requests_total{route=\"/api/orders\",method=\"PATCH\",status=\"5xx\"} 1"), "{text}");
        assert!(text.contains("method=\"other\",status=\"2xx\""), "{text}");
        assert!(text.contains("vestibule_proxy_request_duration_seconds_bucket{le=\"0.005\",route=\"/api/orders\"} 2") || text.contains("vestibule_proxy_request_duration_seconds_bucket{route=\"/api/orders\",le=\"0.005\"} 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
