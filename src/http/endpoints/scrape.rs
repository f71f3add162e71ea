//! `GET /metrics` on `metrics.listen`: a listener of its own, never the public one, so the
//! figures are reachable from the cluster's monitoring and not from browsers.
//!
//! It is served by the same accept loop as the public listener ([`super::server`]), with
//! [`LIMITS`] of its own: a few scrapers are all it serves, so whoever else reaches the port
//! (half-sent requests, held connections) gets a few slots and short timeouts, and can never
//! take the file descriptors the public listener needs.
//!
//! A scrape also reads the two gauges that are state rather than events: the live sessions
//! (one small script in Redis, one scrape at a time, bounded by a timeout) and whether the
//! session cache serves.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Mutex;

use crate::http::server::accept::ServeLimits;
use crate::http::server::connection::ConnectionLimits;
use crate::metrics::metrics;
use crate::session::Sessions;

/// The metrics listener's limits. Its clients are a handful of scrapers (a Prometheus pair, an
/// agent), each sending one small request per interval (15 to 60 s) on a kept-alive
/// connection and reading a few kilobytes: 16 connections leave room for all of them and
/// cost 16 file descriptors at most; a scraper sends its headers at once, so 5 s is
/// generous; 75 s of keep-alive outlasts a one-minute scrape interval, so a scraper reuses its
/// connection rather than racing its close.
pub const LIMITS: ServeLimits = ServeLimits {
    connection: ConnectionLimits {
        header_read_timeout: Duration::from_secs(5),
        keep_alive_timeout: Duration::from_secs(75),
        max_header_bytes: 8 * 1024,
        send_timeout: Duration::from_secs(10),
    },
    max_connections: 16,
};

/// How long a scrape waits for Redis to count the live sessions (the gauge keeps its last
/// value when it cannot).
const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a scrape needs: the sessions to count, and a lock so that concurrent scrapes count one
/// at a time (however many scrapers read the endpoint, one script runs in Redis at once).
struct Scraper {
    sessions: Arc<Sessions>,
    counting: Mutex<()>,
}

/// The OpenMetrics content type `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics listener's router: `GET /metrics`, and a `404` naming it for anything else.
pub fn router(sessions: Arc<Sessions>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "metrics are at /metrics\n") })
        .with_state(Arc::new(Scraper {
            sessions,
            counting: Mutex::new(()),
        }))
}

async fn scrape(State(scraper): State<Arc<Scraper>>) -> Response {
    let metrics = metrics();
    let sessions = &scraper.sessions;
    {
        let _one_at_a_time = scraper.counting.lock().await;
        if let Ok(Ok(live)) = tokio::time::timeout(COUNT_TIMEOUT, sessions.count_live()).await {
            metrics
                .live_sessions
                .set(i64::try_from(live).unwrap_or(i64::MAX));
        }
    }
    let serving = sessions
        .store()
        .cache()
        .is_some_and(|cache| cache.is_serving());
    metrics.cache_serving.set(i64::from(serving));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()).into_response()
}
