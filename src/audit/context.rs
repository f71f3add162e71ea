//! What the audit trail knows about the request an event happens in: its id and the client's
//! network, set once per request by the HTTP layer and carried along with the request's
//! future (and into the tasks it spawns with [`carry`]), so deeper layers (the refresher)
//! need not pass them around.

use std::future::Future;

use axum::http::HeaderValue;
use ipnet::IpNet;

tokio::task_local! {
    static CURRENT: Option<RequestContext>;
}

/// The request an event belongs to.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (`X-Request-Id`).
    pub request_id: HeaderValue,
    /// The client's network (IPv4 /24, IPv6 /48), never its address.
    pub client_network: IpNet,
}

impl RequestContext {
    /// Runs `handling` with this context current.
    pub fn scope<F: Future>(self, handling: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(Some(self), handling)
    }

    /// The context of the request being handled, if any.
    pub fn current() -> Option<RequestContext> {
        CURRENT.try_with(Clone::clone).ok().flatten()
    }

    /// The request id as text (always ASCII).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }
}

/// `task` with the current request's context, for a task spawned on its behalf (task-local
/// values do not cross `tokio::spawn` by themselves).
pub fn carry<F: Future>(task: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(RequestContext::current(), task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_context_is_current_inside_its_scope_and_carried_into_spawned_tasks() {
        assert!(RequestContext::current().is_none());
        let context = RequestContext {
            request_id: HeaderValue::from_static("r-1"),
            client_network: "203.0.113.0/24".parse().unwrap(),
        };
        let seen = context
            .scope(async {
                let here = RequestContext::current().map(|c| c.request_id().to_owned());
                let spawned = tokio::spawn(carry(async {
                    RequestContext::current().map(|c| c.client_network.to_string())
                }))
                .await
                .unwrap();
                let bare = tokio::spawn(async { RequestContext::current().is_some() })
                    .await
                    .unwrap();
                (here, spawned, bare)
            })
            .await;
        assert_eq!(
            seen,
            (
                Some("r-1".to_owned()),
                Some("203.0.113.0/24".to_owned()),
                false
            )
        );
    }
}
