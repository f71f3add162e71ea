//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when `[traces] otlp_endpoint` is
//! set; otherwise nothing is installed and nothing is spent: the spans below are at debug level,
//! which the log filter leaves out, and [`inject`] returns at once.
//!
//! The spans on the hot path (a proxied call, its session load, its upstream call) are made only
//! when exporting ([`span`], [`within`]): otherwise not even a disabled span or a wrapper.
//!
//! Spans: each request (`request`), login start (`login`), callback (`callback`), code exchange
//! (`code_exchange`), refresh (`refresh`, with the provider's `refresh_grant`), session load and
//! store (`session_load`, `session_store`) and each proxied call (`proxy`, with `upstream`). The
//! W3C `traceparent` is sent to upstreams and to every provider call; one that a request brings
//! is adopted as its parent only from a trusted front proxy with `trust_traceparent` (see
//! `http::trace_context`), so nobody outside chooses the trace ids of Vestibule's spans.
//!
//! The exporter runs in the SDK's own batch thread with a blocking client (`reqwest`'s, the
//! HTTP client Vestibule already has), so export never takes a request's time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::Either;
use tracing::Instrument;

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{
    Bytes, HeaderExtractor, HeaderInjector, HttpClient, HttpError, Request, Response,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use url::Url;

/// Whether spans are exported (set once, at start-up).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The W3C trace-context headers (Vestibule writes them on its own outgoing calls).
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The W3C baggage header (Vestibule never writes it; a trusted sender's passes on).
pub const BAGGAGE: &str = "baggage";

/// `[traces]`.
#[derive(Debug, Clone, Default)]
pub struct TraceSettings {
    /// Where spans go (the collector's OTLP/HTTP base URL, e.g. `http://collector:4318`);
    /// `None`: no export.
    pub otlp_endpoint: Option<Url>,
    /// Adopt the `traceparent` (and pass on the `baggage`) that a request from one of
    /// `server.trusted_proxies` brings.
    pub trust_traceparent: bool,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces sampled (0 to 1); a trusted parent's decision is kept.
    pub sample_ratio: f64,
}

/// The running exporter; dropping it exports what is still queued.
pub struct TraceExport(SdkTracerProvider);

impl Drop for TraceExport {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// A started export: what the global subscriber needs, and what must live as long as it.
pub struct Started<S> {
    /// Turns Vestibule's spans into OpenTelemetry spans; boxed, to stack beside the log's
    /// layers whichever are configured.
    pub layer: Box<dyn Layer<S> + Send + Sync>,
    /// The exporter the layer feeds; keep it until the process ends.
    pub export: TraceExport,
}

/// Starts exporting spans as `settings` say; `None` when they name no endpoint. Call before the
/// async runtime starts (the exporter's client is a blocking one).
pub fn start<S>(settings: &TraceSettings) -> anyhow::Result<Option<Started<S>>>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp(reqwest::blocking::Client::builder().build()?))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint).as_str())
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("vestibule");
    EXPORTING.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|metadata| {
            // Vestibule's spans at debug and above; warnings and errors as span events.
            if metadata.is_span() {
                metadata.target().starts_with("vestibule")
                    && *metadata.level() <= tracing::Level::DEBUG
            } else {
                // The audit trail stays in the log pipeline its operator chose.
                *metadata.level() <= tracing::Level::WARN
                    && metadata.target() != crate::audit::TARGET
            }
        }))
        .boxed();
    Ok(Some(Started {
        layer,
        export: TraceExport(provider),
    }))
}

/// The OTLP/HTTP traces URL for a collector's base URL (`…/v1/traces` appended unless there).
fn traces_url(endpoint: &Url) -> Url {
    if endpoint.path().ends_with("/v1/traces") {
        return endpoint.clone();
    }
    let mut url = endpoint.clone();
    let path = format!("{}/v1/traces", endpoint.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A span made by `make` when spans are exported; `None` (nothing made) otherwise. For the hot
/// path's spans, with [`within`].
pub fn span(make: impl FnOnce() -> tracing::Span) -> Option<tracing::Span> {
    exporting().then(make)
}

/// `future` inside `span`, or as it is without one: no wrapper, no span, when spans are not
/// exported.
pub fn within<F: Future>(
    span: Option<tracing::Span>,
    future: F,
) -> Either<tracing::instrument::Instrumented<F>, F> {
    match span {
        Some(span) => Either::Left(future.instrument(span)),
        None => Either::Right(future),
    }
}

/// Makes the trace context in `headers` the parent of `span` (for a trusted `traceparent`).
pub fn adopt_parent(span: &tracing::Span, headers: &HeaderMap) {
    if !exporting() || !headers.contains_key(TRACE_HEADERS[0]) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Writes the current span's `traceparent` (and `tracestate`) into `headers` for an outgoing
/// call; nothing when spans are not exported.
pub fn inject(headers: &mut HeaderMap) {
    if !exporting() {
        return;
    }
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// The trace-context headers for an outgoing call made now (empty when not exporting).
pub fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    headers
}

/// The exporter's HTTP client: `reqwest`'s blocking client, run in the SDK's batch thread.
#[derive(Debug)]
struct BlockingHttp(reqwest::blocking::Client);

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::blocking::Request::try_from(request.map(|body| body.to_vec()))?;
        let response = self.0.execute(request)?;
        let mut answer = Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            answer = answer.header(name.as_str(), value.as_bytes());
        }
        Ok(answer.body(response.bytes()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_to_a_base_url_once() {
        let url = |text: &str| traces_url(&Url::parse(text).unwrap()).to_string();
        assert_eq!(
            url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("http://collector:4318/otlp/"),
            "http://collector:4318/otlp/v1/traces"
        );
        assert_eq!(url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
