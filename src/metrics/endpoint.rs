//! `GET /metrics` on `metrics.listen`: a listener of its own, never the public one, so the
//! figures are reachable from the cluster's monitoring and not from browsers.
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
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::metrics;
use crate::session::Sessions;

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

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, sessions: Arc<Sessions>) {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "metrics are at /metrics\n") })
        .with_state(Arc::new(Scraper {
            sessions,
            counting: Mutex::new(()),
        }));
    if let Err(error) = axum::serve(listener, router).await {
        tracing::error!(error = %error, "the metrics listener stopped");
    }
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
