//! The one connection every Redis command goes through, whatever the topology: a reconnecting
//! connection to one server, a connection that follows a Sentinel group's master, or the
//! `redis` crate's Cluster connection (slot routing, `MOVED`/`ASK`, reconnects). Every kind
//! is connected lazily and bounded by the same timeouts, so an unreachable Redis is a quick
//! per-call error (a 503), never a hang and never a failed start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, ProtocolVersion, PushInfo, PushKind, RedisFuture,
    RedisResult, Value,
};

use super::sentinel::SentinelConnection;
use super::tls::RedisTls;
use super::topology::RedisTopology;

/// Bounds on every Redis call: an outage must turn into a quick 503, not a hung request.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const RECONNECT_RETRIES: usize = 2;
/// A Cluster request, with its redirects and retries, ends within this.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_millis(2000);
const CLUSTER_RETRIES: u32 = 5;

/// A cloneable handle on the connection to the deployment (clones share it).
#[derive(Clone)]
pub(in crate::session::store) enum RedisConnection {
    /// One server, reconnected by the `redis` crate's connection manager.
    Server(ConnectionManager),
    /// The current master of a Sentinel group.
    Sentinel(SentinelConnection),
    /// A Cluster, connected on first use.
    Cluster(LazyCluster),
}

impl RedisConnection {
    /// The connection to `topology`, made on first use.
    pub(super) fn open(topology: &RedisTopology, tls: &RedisTls) -> RedisResult<Self> {
        Ok(match topology {
            RedisTopology::Server(info) => {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(RECONNECT_RETRIES)
                    .set_max_delay(Duration::from_millis(500));
                let client = tls.client(info.clone())?;
                RedisConnection::Server(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            RedisTopology::Sentinel(group) => RedisConnection::Sentinel(SentinelConnection::new(
                group,
                tls,
                ProtocolVersion::RESP2,
                bounded(AsyncConnectionConfig::new()),
            )?),
            RedisTopology::Cluster(nodes) => {
                // Redirects during a resharding (`ASK`, `MOVED`, the slot map rebuilt) are
                // retried within one overall bound.
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
                    .retries(CLUSTER_RETRIES)
                    .max_retry_wait(200);
                if let Some(certificates) = tls.certificates() {
                    builder = builder.certs(certificates);
                }
                RedisConnection::Cluster(LazyCluster {
                    shared: Arc::new((builder.build()?, tokio::sync::OnceCell::new())),
                })
            }
        })
    }
}

impl RedisConnection {
    /// Whether the deployment answers: `PING` on one server or the current master; on a
    /// Cluster, any master answering is enough (a node down makes only its slots answer 503,
    /// so taking every instance out of rotation for it would turn a partial outage into a
    /// total one).
    pub(super) async fn ping(&self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            RedisConnection::Cluster(cluster) => {
                let any_master = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::OneSucceeded),
                ));
                cluster
                    .connection()
                    .await?
                    .route_command(ping, any_master)
                    .await?;
            }
            _ => {
                let _: String = ping.query_async(&mut self.clone()).await?;
            }
        }
        Ok(())
    }
}

/// `config` with this module's connection and response timeouts.
pub(super) fn bounded(config: AsyncConnectionConfig) -> AsyncConnectionConfig {
    config
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Records one Redis round trip in the metrics; a script not yet loaded (`NOSCRIPT`, retried at
/// once with the script) is not a failure.
fn observe(started: std::time::Instant, error: Option<&redis::RedisError>) {
    let metrics = crate::metrics::metrics();
    metrics
        .redis_duration
        .observe(started.elapsed().as_secs_f64());
    if error.is_some_and(|error| error.code() != Some("NOSCRIPT")) {
        metrics.redis_errors.inc();
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let reply = match self {
                RedisConnection::Server(connection) => connection.req_packed_command(cmd).await,
                RedisConnection::Sentinel(connection) => connection.req_packed_command(cmd).await,
                RedisConnection::Cluster(cluster) => match cluster.connection().await {
                    Ok(mut connection) => connection.req_packed_command(cmd).await,
                    Err(error) => Err(error),
                },
            };
            observe(started, reply.as_ref().err());
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let replies = match self {
                RedisConnection::Server(connection) => {
                    connection
                        .req_packed_commands(pipeline, offset, count)
                        .await
                }
                RedisConnection::Sentinel(connection) => {
                    connection
                        .req_packed_commands(pipeline, offset, count)
                        .await
                }
                RedisConnection::Cluster(cluster) => match cluster.connection().await {
                    Ok(mut connection) => {
                        connection
                            .req_packed_commands(pipeline, offset, count)
                            .await
                    }
                    Err(error) => Err(error),
                },
            };
            observe(started, replies.as_ref().err());
            replies
        })
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Server(connection) => connection.get_db(),
            RedisConnection::Sentinel(connection) => connection.get_db(),
            RedisConnection::Cluster(_) => 0,
        }
    }
}

/// The `redis` crate's Cluster connection, made on first use (it fails outright when no seed
/// node answers, where the other kinds connect lazily).
#[derive(Clone)]
pub(in crate::session::store) struct LazyCluster {
    shared: Arc<(
        redis::cluster::ClusterClient,
        tokio::sync::OnceCell<ClusterConnection>,
    )>,
}

impl LazyCluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        let (client, connection) = &*self.shared;
        connection
            .get_or_try_init(|| client.get_async_connection())
            .await
            .cloned()
    }
}

/// Where the cache's tracking connection goes: the server itself, or the master the
/// Sentinels name at each (re)connection. A Cluster has none (see `RedisStore::connect`).
pub(super) enum TrackingTarget {
    /// A RESP3 client for the one server.
    Server(Box<redis::Client>),
    /// A RESP3 connection to the Sentinel group's master of the moment.
    Sentinel(SentinelConnection),
}

impl TrackingTarget {
    /// The tracking target for `topology`; `None` for a Cluster.
    pub(super) fn for_topology(
        topology: &RedisTopology,
        tls: &RedisTls,
    ) -> RedisResult<Option<Self>> {
        Ok(match topology {
            RedisTopology::Server(info) => {
                // Invalidation messages need RESP3 on the tracking connection.
                let resp3 = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let client = tls.client(info.clone().set_redis_settings(resp3))?;
                Some(TrackingTarget::Server(Box::new(client)))
            }
            RedisTopology::Sentinel(group) => {
                Some(TrackingTarget::Sentinel(SentinelConnection::new(
                    group,
                    tls,
                    ProtocolVersion::RESP3,
                    bounded(AsyncConnectionConfig::new()),
                )?))
            }
            RedisTopology::Cluster(_) => None,
        })
    }

    /// A new connection for tracking, bounded by `timeout`: every push it receives goes to
    /// `on_push`, and `dead` turns true when it is lost (its holder then reconnects).
    pub(super) async fn connect_for_pushes(
        &self,
        timeout: Duration,
        dead: &Arc<AtomicBool>,
        on_push: impl Fn(&PushInfo) + Send + Sync + 'static,
    ) -> RedisResult<MultiplexedConnection> {
        let connection_dead = dead.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    connection_dead.store(true, Ordering::SeqCst);
                }
                on_push(&push);
                Ok::<(), std::convert::Infallible>(())
            });
        match self {
            TrackingTarget::Server(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
            TrackingTarget::Sentinel(sentinel) => sentinel.connect_new(&config).await,
        }
    }
}
