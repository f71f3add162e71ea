//! Building and running the application: settings in, a listening server out.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::net::TcpListener;

use secrecy::ExposeSecret;

use crate::assertion::{AssertionSettings, Assertions, KeySource};
use crate::audit::{AuditTrail, SUBJECT_KEY_PURPOSE};
use crate::config::{AuditSettings, AuditSubject, OidcSettings, SessionSettings, Settings};
use crate::http::endpoints::frontend::FrontendService;
use crate::http::endpoints::health::Lifecycle;
use crate::http::endpoints::scrape;
use crate::http::login_limit::LoginRateLimit;
use crate::http::proxy::Forwarder;
use crate::http::proxy::client::upstream_client;
use crate::http::proxy::headers::ForwardingHeaders;
use crate::http::server::accept::ServeLimits;
use crate::http::server::client_address::TrustedProxies;
use crate::http::server::connection::ConnectionLimits;
use crate::http::server::dispatch::{CallerTrust, Dispatcher};
use crate::http::server::request_id::RequestIds;
use crate::http::server::trace_context::TraceContextTrust;
use crate::http::suspicious_use::SuspiciousUsePolicy;
use crate::http::websocket_limit::WebSocketLimit;
use crate::http::{self, AppState, Components, cookies::CookiePolicy};
use crate::oidc::{Provider, Providers};
use crate::refresh::Refresher;
use crate::routes::RouteTable;
use crate::session::crypto::purpose_key;
use crate::session::store::CacheSettings;
use crate::session::{KeyRing, PendingLimits, Sessions, Store, StoreError};
use crate::workflows::ending::SessionEnding;
use crate::workflows::login::Logins;

/// The session store `session` describes (with the per-instance cache when `with_cache`).
/// An unreachable Redis is only a warning (sessions answer 503 until it is back); refused
/// credentials are an error, as they will not fix themselves.
pub async fn open_store(session: &SessionSettings, with_cache: bool) -> anyhow::Result<Store> {
    let Some(topology) = &session.redis else {
        tracing::warn!(
            "session.redis_url is not set: using the IN-MEMORY session store. Sessions are lost on restart \
             and are not shared between instances. Do not run more than one instance like this."
        );
        return Ok(Store::memory());
    };
    tracing::info!(redis = %topology.describe(), "session store: Redis");
    let cache = with_cache
        .then(|| CacheSettings::new(session.local_cache_entries, session.idle_timeout))
        .flatten();
    let store = Store::redis(topology, &session.redis_tls, cache)?;
    match store.ping().await {
        Ok(()) => {}
        Err(error @ StoreError::CredentialsRefused(_)) => {
            anyhow::bail!(
                "{error} (check the user and password in session.redis_url or \
                 session.redis_password_file)"
            )
        }
        Err(error) => tracing::warn!(
            error = %error,
            "Redis is not reachable yet; sessions answer 503 until it is"
        ),
    }
    Ok(store)
}

/// The sessions in `store`, as `session` configures them.
pub fn sessions_in(store: Store, session: SessionSettings) -> Sessions {
    Sessions::new(
        store,
        session.keys,
        session.idle_timeout,
        session.absolute_timeout,
    )
    .with_refresh_token_escrow(session.refresh_token_escrow)
    .with_opened_records_kept(session.local_cache_opened)
    .with_max_per_user(session.max_per_user)
}

/// The credentials whose tokens sessions hold (a route's `exchange` or `refresh`), each once.
fn held_credentials(routes: &[crate::routes::Route]) -> Vec<String> {
    let mut ids: Vec<String> = routes
        .iter()
        .filter(|route| route.credential.held_token().is_some() && route.credential.needs_session())
        .map(|route| route.credential.id())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The audit trail `audit` configures; the subject key, unless given, is derived from `keys`.
pub fn audit_trail(audit: AuditSettings, keys: &KeyRing) -> AuditTrail {
    match (audit.subject, audit.subject_key) {
        (AuditSubject::Clear, _) => AuditTrail::clear(),
        (AuditSubject::Hashed, Some(key)) => AuditTrail::hashed(purpose_key(
            key.expose_secret().as_bytes(),
            SUBJECT_KEY_PURPOSE,
        )),
        (AuditSubject::Hashed, None) => {
            if keys.len() > 1 {
                tracing::warn!(
                    "audit subjects are hashed under a key derived from the sealing key, so they \
                     change when it rotates (and differ between instances during a rollout); set \
                     audit.subject_key to keep them stable"
                );
            }
            AuditTrail::hashed(keys.derive_purpose_key(SUBJECT_KEY_PURPOSE))
        }
    }
}

/// The signer of identity assertions, issuing as `public_url`'s origin; says at start-up
/// which key signs and where it comes from.
fn assertion_signer(
    public_url: &url::Url,
    settings: AssertionSettings,
    keys: &KeyRing,
    routes: &[crate::routes::Route],
) -> Assertions {
    let signer = Assertions::new(
        public_url.origin().ascii_serialization(),
        settings,
        keys,
        routes,
    );
    match signer.source() {
        KeySource::Configured => {
            tracing::info!(
                kid = signer.signing_kid(),
                "identity assertions signed with assertion.signing_keys"
            )
        }
        KeySource::Derived => tracing::info!(
            kid = signer.signing_kid(),
            "identity assertions signed with a key derived from the session encryption keys \
             (set assertion.signing_keys to keep it apart from them)"
        ),
        KeySource::Unused => {}
    }
    signer
}

/// The provider client `oidc` describes (every provider is built here, `[oidc]` or one of
/// `[[providers]]`).
pub fn provider_for(oidc: OidcSettings, redirect_uri: url::Url) -> anyhow::Result<Provider> {
    tracing::info!(
        provider = oidc.id,
        profile = oidc.provider.profile.name,
        "provider profile {}",
        oidc.provider.describe()
    );
    if oidc.provider.profile.audience_needed && oidc.audience.is_none() {
        tracing::warn!(
            provider = oidc.id,
            "oidc.audience is not set: {} issues an access token that only its UserInfo accepts; \
             name your API's identifier in oidc.audience",
            oidc.provider.profile.name
        );
    }
    Ok(Provider::new(oidc.into_provider_settings(redirect_uri))?)
}

/// The registry of `first` and `others`, each built by [`provider_for`].
pub fn providers_for(
    first: OidcSettings,
    others: Vec<OidcSettings>,
    redirect_uri: &url::Url,
) -> anyhow::Result<Providers> {
    let first = provider_for(first, redirect_uri.clone())?;
    let others = others
        .into_iter()
        .map(|oidc| provider_for(oidc, redirect_uri.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Providers::new(first, others))
}

/// Discovers every provider at start-up; one that is down is retried when a request needs it.
async fn discover_each(providers: &Providers) {
    let attempts = providers.iter().map(|provider| async move {
        if let Err(error) = provider.discover().await {
            tracing::warn!(
                provider = provider.id(),
                error = %error,
                "provider discovery failed; retrying when a request needs it (backing off while it fails)"
            );
        }
    });
    futures_util::future::join_all(attempts).await;
}

/// A bound, ready-to-serve Vestibule.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    trust: Arc<CallerTrust>,
    limits: ServeLimits,
    shutdown_delay: std::time::Duration,
    metrics: Option<MetricsListener>,
}

/// The metrics listener (`metrics.listen`) and what it serves.
struct MetricsListener {
    listener: TcpListener,
    router: axum::Router,
}

impl Application {
    /// Builds every component and binds the listener. Discovery is attempted but a provider
    /// that is down at start-up is retried on first use rather than preventing start-up.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let https = settings.is_https();
        let redirect_uri = settings.redirect_uri();
        let Settings {
            listen,
            public_url,
            oidc,
            other_providers,
            session,
            routes,
            frontend,
            server,
            login,
            log_format: _,
            audit,
            metrics_listen,
            traces,
            assertion,
        } = settings;
        let store = open_store(&session, true).await?;
        let assertions = assertion_signer(&public_url, assertion, &session.keys, &routes);
        let audit = audit_trail(audit, &session.keys);
        let suspicious_use = SuspiciousUsePolicy::new(session.suspicious_use, audit.clone());
        let sessions = sessions_in(store, session).with_held_credentials(held_credentials(&routes));
        let sessions = Arc::new(sessions);
        let providers = Arc::new(providers_for(oidc, other_providers, &redirect_uri)?);
        discover_each(&providers).await;
        let frontend = FrontendService::new(frontend, &routes);
        // Whose forwarded client address, request id and trace context are believed.
        let trusted_proxies = TrustedProxies::new(server.trusted_proxies.clone());
        let ending = SessionEnding::new(sessions.clone(), providers.clone(), audit.clone());
        let logins = Logins::new(
            sessions.clone(),
            providers.clone(),
            ending.clone(),
            audit.clone(),
            PendingLimits {
                per_browser: login.max_pending_per_browser,
                total: login.max_pending_total,
            },
        );
        let state = AppState::new(Components {
            forwarder: Forwarder::new(
                upstream_client(&server.upstream_ca_certificates),
                ForwardingHeaders::new(&public_url),
            ),
            websockets: WebSocketLimit::new(
                server.max_websockets_per_session,
                server.websocket_idle_timeout,
            ),
            origin: public_url.origin().ascii_serialization(),
            public_url,
            refresher: Arc::new(Refresher::new(
                sessions.clone(),
                providers.clone(),
                audit.clone(),
            )),
            sessions,
            providers,
            routes: Arc::new(RouteTable::new(routes)),
            cookies: CookiePolicy::new(https),
            frontend,
            login_limit: LoginRateLimit::new(login.rate_limit_per_minute, login.rate_limit_burst)
                .trusting_proxies(!trusted_proxies.is_empty()),
            logins,
            ending,
            max_body_bytes: server.max_body_bytes,
            lifecycle: Arc::new(Lifecycle::default()),
            suspicious_use,
            audit,
            assertions,
        });
        let trust = Arc::new(CallerTrust {
            request_ids: RequestIds::new(server.trust_request_id, trusted_proxies.clone()),
            trace_context: TraceContextTrust::new(
                traces.trust_traceparent,
                trusted_proxies.clone(),
            ),
            trusted_proxies,
        });
        // The span and the panic guard every request gets are added by the dispatcher
        // (`http::server::scope`), around the router and the proxy alike.
        let router = http::endpoints::router(state.clone());
        let listener = TcpListener::bind(listen).await?;
        let metrics = match metrics_listen {
            Some(address) => Some(MetricsListener {
                listener: TcpListener::bind(address).await?,
                router: scrape::router(state.sessions.clone()),
            }),
            None => None,
        };
        let limits = ServeLimits {
            connection: ConnectionLimits {
                header_read_timeout: server.header_read_timeout,
                keep_alive_timeout: server.keep_alive_timeout,
                max_header_bytes: server.max_header_bytes,
                send_timeout: server.send_timeout,
            },
            max_connections: server.max_connections,
        };
        let metrics_connections = metrics
            .as_ref()
            .map_or(0, |_| scrape::LIMITS.max_connections);
        warn_if_descriptors_run_out(limits.max_connections, metrics_connections);
        Ok(Self {
            listener,
            router,
            state,
            trust,
            limits,
            shutdown_delay: server.shutdown_delay,
            metrics,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until Ctrl-C / SIGTERM; then readiness turns 503, connections are still accepted
    /// for `server.shutdown_delay_secs`, and in-flight requests finish. The metrics listener
    /// serves through the delay too, and stops with the public one.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, "vestibule listening");
        let stop = stopping(self.state.lifecycle.clone(), self.shutdown_delay).shared();
        let (state, trust, router) = (self.state, self.trust, self.router);
        let public = http::server::accept::serve(
            self.listener,
            self.limits,
            move |accepted| Dispatcher::new(state.clone(), trust.clone(), router.clone(), accepted),
            stop.clone(),
        );
        match self.metrics {
            None => public.await,
            Some(MetricsListener { listener, router }) => {
                tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
                let scrapes = http::server::accept::serve(
                    listener,
                    scrape::LIMITS,
                    move |_| router.clone(),
                    stop,
                );
                tokio::join!(public, scrapes);
            }
        }
        Ok(())
    }
}

/// Completes when the listeners should stop accepting: on Ctrl-C / SIGTERM readiness answers
/// 503 at once, and connections are still accepted for `delay` (or until a second signal), so
/// the load balancers see it before the listener closes.
async fn stopping(lifecycle: Arc<Lifecycle>, delay: std::time::Duration) {
    shutdown_signal().await;
    lifecycle.begin_shutdown();
    if !delay.is_zero() {
        tracing::info!(
            delay_secs = delay.as_secs(),
            "stop signal: readiness now answers 503; still serving for \
             server.shutdown_delay_secs (a second signal stops at once)"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown_signal() => {}
        }
    }
    tracing::info!("no longer accepting connections; finishing in-flight requests");
}

/// Each connection needs a file descriptor, and so does its upstream call: warn when
/// `server.max_connections` (beside the metrics listener's) cannot be reached before the
/// process's limit (`ulimit -n`).
fn warn_if_descriptors_run_out(max_connections: usize, metrics_connections: usize) {
    let Some(limit) = open_file_limit() else {
        return;
    };
    // A client connection, an upstream connection, plus the scrapers', Redis, the provider and
    // the runtime.
    let needed = max_connections
        .saturating_mul(2)
        .saturating_add(metrics_connections)
        .saturating_add(64);
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
