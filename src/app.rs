//! Building and running the application: settings in, a listening server out.

use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::http::client_address::TrustedProxies;
use crate::http::connection::ConnectionLimits;
use crate::http::frontend::FrontendService;
use crate::http::headers::ForwardingHeaders;
use crate::http::login_limit::LoginRateLimit;
use crate::http::server::ServeLimits;
use crate::http::{self, AppState, Components, cookies::CookiePolicy};
use crate::oidc::{Provider, ProviderSettings};
use crate::refresh::Refresher;
use crate::routes::RouteTable;
use crate::session::store::CacheSettings;
use crate::session::{PendingLimits, Sessions, Store};

/// A bound, ready-to-serve Vestibule.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    limits: ServeLimits,
}

impl Application {
    /// Builds every component and binds the listener. Discovery is attempted but a provider
    /// that is down at start-up is retried on first use rather than preventing start-up.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = match &settings.session.redis_url {
            Some(url) => {
                let cache = CacheSettings::new(
                    settings.session.local_cache_entries,
                    std::time::Duration::from_secs(settings.session.idle_timeout_secs),
                );
                let store = Store::redis(url.expose_secret(), cache)?;
                if let Err(error) = store.ping().await {
                    tracing::warn!(error = %error, "Redis is not reachable yet; sessions answer 503 until it is");
                }
                store
            }
            None => {
                tracing::warn!(
                    "session.redis_url is not set: using the IN-MEMORY session store. Sessions are lost on restart \
                     and are not shared between instances. Do not run more than one instance like this."
                );
                Store::memory()
            }
        };
        let sessions = Sessions::new(
            store,
            settings.master_key()?,
            std::time::Duration::from_secs(settings.session.idle_timeout_secs),
            std::time::Duration::from_secs(settings.session.absolute_timeout_secs),
        );
        let sessions = Arc::new(sessions);
        let provider = Arc::new(Provider::new(ProviderSettings::from_settings(&settings))?);
        if let Err(error) = provider.discover().await {
            tracing::warn!(error = %error, "provider discovery failed; retrying on first login");
        }
        let routes = RouteTable::new(settings.route_table());
        let frontend = FrontendService::new(
            settings.frontend()?,
            settings.routes.first().map(|route| route.prefix.as_str()),
        );
        let state = AppState::new(Components {
            forwarded: ForwardingHeaders::new(&settings.public_url),
            public_url: settings.public_url.clone(),
            origin: settings.public_url.origin().ascii_serialization(),
            refresher: Arc::new(Refresher::new(
                sessions.clone(),
                provider.clone(),
                settings.oidc.refresh_skew_secs,
            )),
            sessions,
            provider,
            routes: Arc::new(routes),
            cookies: CookiePolicy::new(settings.is_https()),
            upstream: http::proxy::upstream_client(),
            frontend,
            trusted_proxies: TrustedProxies::new(settings.server.trusted_proxy_ranges()?),
            login_limit: LoginRateLimit::new(
                settings.login.rate_limit_per_minute,
                settings.login.rate_limit_burst,
            ),
            pending_limits: PendingLimits {
                per_browser: settings.login.max_pending_per_browser,
                total: settings.login.max_pending_total,
            },
            max_body_bytes: settings.server.max_body_bytes,
        });
        let router = http::router(state.clone())
            // Defence in depth: a bug must cost one request a 500, never the connection.
            .layer(CatchPanicLayer::custom(|_| crate::error::panic_response()))
            // Failures are logged once, with their cause, where they become responses.
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(http::server::request_span)
                    .on_failure(()),
            );
        let listener = TcpListener::bind(settings.listen).await?;
        let limits = ServeLimits {
            connection: ConnectionLimits::from_settings(&settings.server),
            max_connections: settings.server.max_connections,
        };
        warn_if_descriptors_run_out(limits.max_connections);
        Ok(Self {
            listener,
            router,
            state,
            limits,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until Ctrl-C / SIGTERM, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, "vestibule listening");
        http::server::serve(
            self.listener,
            self.state,
            self.router,
            self.limits,
            shutdown_signal(),
        )
        .await;
        Ok(())
    }
}

/// Each connection needs a file descriptor, and so does its upstream call: warn when
/// `server.max_connections` cannot be reached before the process's limit (`ulimit -n`).
fn warn_if_descriptors_run_out(max_connections: usize) {
    let Some(limit) = open_file_limit() else {
        return;
    };
    // A client connection, an upstream connection, plus Redis, the provider and the runtime.
    let needed = max_connections.saturating_mul(2).saturating_add(64);
    if needed as u64 > limit {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "server.max_connections needs more file descriptors than the process may open; \
             raise the limit (ulimit -n) or lower server.max_connections"
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
