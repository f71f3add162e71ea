//! The one HTTP client Vestibule uses towards the servers behind it: upstream APIs and the
//! frontend's development server. Built once at start-up; it never follows redirects and
//! never sees a cookie of ours (callers strip them first, see [`super::headers`]).

use std::time::Duration;

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

/// The HTTP client for upstreams (HTTP/1.1, keep-alive pool, http and https).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Builds the pooled upstream client with bounded connect and idle times, trusting the
/// public roots and `extra_roots` (`server.upstream_ca_file`, already checked to parse).
pub fn upstream_client(extra_roots: &[CertificateDer<'static>]) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.set_nodelay(true);
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots.add_parsable_certificates(extra_roots.iter().cloned());
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(https)
}

/// The error chain of a client failure, without the URL's query (it is the user's data).
pub fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
