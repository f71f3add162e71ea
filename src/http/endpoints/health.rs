//! Probes for load balancers and orchestrators: `GET /healthz` (the process serves) and
//! `GET /readyz` (it can do its job: the session store answers, the provider's metadata is
//! loaded, and it is not shutting down; it also says what was negotiated with each discovered
//! provider, such as DPoP).
//!
//! They sit outside `/api/auth` and outside every route, read no cookie and no header, and
//! answer only about themselves: nothing about a probe (path, user agent, headers) can make
//! another request skip authentication, as a forged health-check once did in oauth2-proxy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::AppState;

/// The liveness path.
pub const LIVENESS_PATH: &str = "/healthz";
/// The readiness path.
pub const READINESS_PATH: &str = "/readyz";

/// How long one readiness check may take; a probe must answer well within its own timeout.
const CHECK_LIMIT: Duration = Duration::from_secs(2);

/// Whether the process is on its way out (set when the stop signal arrives).
#[derive(Debug, Default)]
pub struct Lifecycle {
    stopping: AtomicBool,
}

impl Lifecycle {
    /// Marks the process as stopping: readiness answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether [`Lifecycle::begin_shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Whether `path` is one of the probes (never proxied, never a route's).
pub fn is_probe(path: &str) -> bool {
    path == LIVENESS_PATH || path == READINESS_PATH
}

/// The outcome of the readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The session store answered.
    pub store: bool,
    /// A provider's metadata and keys are loaded: the only one's, or with several at least
    /// one's (one provider's outage must not take every instance, and so every other
    /// provider's users and every proxied call, out of the load balancer; its logins answer
    /// `503` until it is back, and `providers` says which).
    pub provider: bool,
    /// With several providers, each one's id and whether it is discovered (reported apart);
    /// empty with one.
    pub providers: Vec<(String, bool)>,
    /// What each discovered provider negotiated, by id (an operator's check that a setting
    /// took effect; it never makes an instance unready).
    pub negotiated: Vec<(String, Negotiated)>,
    /// The process is shutting down.
    pub stopping: bool,
}

/// What one discovered provider and Vestibule settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The client-authentication method in use (configured, or settled from discovery):
    /// what an operator checks after switching to `private_key_jwt`.
    pub client_authentication: &'static str,
    /// Authorization requests are pushed (RFC 9126, `oidc.par`).
    pub par: bool,
    /// Whether tokens are DPoP-bound (`oidc.dpop` as negotiated: `on`, `off`, `not_offered`).
    /// Informational: a provider that does not offer DPoP under `required` fails its logins
    /// with a page saying so, not the whole instance.
    pub dpop: &'static str,
}

impl Negotiated {
    fn to_json(&self) -> serde_json::Value {
        let on = |on: bool| if on { "on" } else { "off" };
        json!({
            "client_authentication": self.client_authentication,
            "par": on(self.par),
            "dpop": self.dpop,
        })
    }
}

impl Readiness {
    /// Ready when every check passes.
    pub fn is_ready(&self) -> bool {
        self.store && self.provider && !self.stopping
    }
}

impl IntoResponse for Readiness {
    fn into_response(self) -> Response {
        let status = if self.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let word = |ok: bool, bad: &'static str| if ok { "ok" } else { bad };
        let mut body = json!({
            "status": if self.is_ready() { "ready" } else { "not_ready" },
            "checks": {
                "store": word(self.store, "unreachable"),
                "provider": word(self.provider, "not_discovered"),
                "lifecycle": if self.stopping { "stopping" } else { "serving" },
            },
        });
        if !self.providers.is_empty() {
            let each: serde_json::Map<String, serde_json::Value> = self
                .providers
                .iter()
                .map(|(id, ok)| (id.clone(), word(*ok, "not_discovered").into()))
                .collect();
            body["checks"]["providers"] = each.into();
        }
        let negotiated: serde_json::Map<String, serde_json::Value> = self
            .negotiated
            .iter()
            .map(|(id, negotiated)| (id.clone(), negotiated.to_json()))
            .collect();
        body["negotiated"] = negotiated.into();
        probe_response(status, body)
    }
}

/// `GET /healthz`: the process is alive and serving requests. Checks nothing else, so an
/// outage of Redis or the provider never gets healthy instances restarted.
pub async fn alive() -> Response {
    probe_response(StatusCode::OK, json!({ "status": "alive" }))
}

/// `GET /readyz`: 200 when this instance can serve sessions, else 503 with the failing checks.
/// A provider that was down at start-up is discovered here, so readiness recovers by itself.
pub async fn ready(State(state): State<AppState>) -> Response {
    let store = async {
        let ping = tokio::time::timeout(CHECK_LIMIT, state.sessions.store().ping()).await;
        matches!(ping, Ok(Ok(())))
    };
    let providers = futures_util::future::join_all(state.providers.iter().map(|provider| async {
        if provider.is_discovered() {
            return (provider.id().to_owned(), true);
        }
        let discovery = tokio::time::timeout(CHECK_LIMIT, provider.discover()).await;
        (provider.id().to_owned(), matches!(discovery, Ok(Ok(()))))
    }));
    let (store, providers) = tokio::join!(store, providers);
    let negotiated = state
        .providers
        .iter()
        .filter_map(|provider| {
            let par = provider.pushes_authorization_requests()?;
            let dpop = provider.dpop_negotiated()?.name();
            let client_authentication = provider.client_auth_method()?.name();
            Some((
                provider.id().to_owned(),
                Negotiated {
                    client_authentication,
                    par,
                    dpop,
                },
            ))
        })
        .collect();
    Readiness {
        store,
        provider: providers.iter().any(|(_, ok)| *ok),
        providers: if state.providers.is_several() {
            providers
        } else {
            Vec::new()
        },
        negotiated,
        stopping: state.lifecycle.is_stopping(),
    }
    .into_response()
}

/// Probes accept GET and HEAD only.
pub async fn method_not_allowed() -> Response {
    let mut response = probe_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({ "error": "method_not_allowed", "message": "probes answer GET and HEAD" }),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn probe_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_GOOD: Readiness = Readiness {
        store: true,
        provider: true,
        providers: Vec::new(),
        negotiated: Vec::new(),
        stopping: false,
    };

    #[test]
    fn ready_only_when_every_check_passes() {
        assert!(ALL_GOOD.is_ready());
        for not_ready in [
            Readiness {
                store: false,
                ..ALL_GOOD
            },
            Readiness {
                provider: false,
                ..ALL_GOOD
            },
            Readiness {
                stopping: true,
                ..ALL_GOOD
            },
        ] {
            assert!(!not_ready.is_ready(), "{not_ready:?}");
            assert_eq!(
                not_ready.into_response().status(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        assert_eq!(ALL_GOOD.into_response().status(), StatusCode::OK);
    }

    #[test]
    fn shutting_down_makes_the_instance_unready() {
        let lifecycle = Lifecycle::default();
        assert!(!lifecycle.is_stopping());
        lifecycle.begin_shutdown();
        assert!(lifecycle.is_stopping());
        let readiness = Readiness {
            stopping: lifecycle.is_stopping(),
            ..ALL_GOOD
        };
        assert_eq!(
            readiness.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn only_the_two_exact_paths_are_probes() {
        assert!(is_probe("/healthz"));
        assert!(is_probe("/readyz"));
        for path in [
            "/healthz/",
            "/healthz/../api/orders",
            "/api/healthz",
            "/readyz.json",
            "/HEALTHZ",
        ] {
            assert!(!is_probe(path), "{path}");
        }
    }
}
