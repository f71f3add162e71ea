//! A connection to whichever server the Sentinels name as master, following failovers.
//!
//! The master is asked of the Sentinels (and confirmed with `ROLE` by the `redis` crate) when
//! there is no connection; a command that fails because the connection broke, timed out, or
//! reached a server that is no longer master (`READONLY`) drops it, so the next command asks
//! the Sentinels again. The failing command itself answers an error (a 503 upstream), except
//! a write refused with `READONLY`, which never ran and is sent once more to the new master.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, ProtocolVersion, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, TlsMode, Value,
};

use super::tls::RedisTls;
use super::topology::SentinelGroup;

/// The longest a Sentinel query plus the connection to the master it names may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A shared connection to the current master of a Sentinel group.
#[derive(Clone)]
pub(in crate::session::store) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    /// Asks the Sentinels; one question at a time.
    resolver: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the master last named, with a number telling connections apart.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    config: AsyncConnectionConfig,
}

impl SentinelConnection {
    /// A connection that asks `group`'s Sentinels for the master on first use; `protocol`
    /// RESP3 for a tracking connection. `config` bounds each connection and reply.
    pub(super) fn new(
        group: &SentinelGroup,
        tls: &RedisTls,
        protocol: ProtocolVersion,
        config: AsyncConnectionConfig,
    ) -> RedisResult<Self> {
        Ok(Self {
            shared: Arc::new(Shared {
                resolver: tokio::sync::Mutex::new(resolver(group, tls, protocol)?),
                current: Mutex::new(None),
                config,
            }),
        })
    }

    /// A fresh connection to the master the Sentinels name now, with `config` (not shared,
    /// not kept: for the tracking connection).
    pub(super) async fn connect_new(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        ask_sentinels(&mut *self.shared.resolver.lock().await, config).await
    }

    /// The current master connection, asking the Sentinels if there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current().clone() {
            return Ok(current);
        }
        let mut resolver = self.shared.resolver.lock().await;
        // Another command may have connected while this one waited for the resolver.
        if let Some(current) = self.current().clone() {
            return Ok(current);
        }
        let connection = ask_sentinels(&mut resolver, &self.shared.config).await?;
        let mut current = self.current();
        let generation = current.as_ref().map_or(0, |(generation, _)| generation + 1);
        *current = Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    fn current(&self) -> MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops connection `generation` after `error` if it says the master is gone or changed.
    fn after_error(&self, generation: u64, error: &RedisError) {
        if master_lost(error) {
            let mut current = self.current();
            if current
                .as_ref()
                .is_some_and(|(held, _)| *held == generation)
            {
                *current = None;
            }
        }
    }

    /// Runs `send` on the master, once more on the next master if the first refused to write.
    async fn run<'a, T>(
        &self,
        send: impl Fn(MultiplexedConnection) -> RedisFuture<'a, T>,
    ) -> RedisResult<T> {
        let (generation, connection) = self.connection().await?;
        match send(connection).await {
            Err(error) if refused_as_replica(&error) => {
                self.after_error(generation, &error);
                let (generation, connection) = self.connection().await?;
                let outcome = send(connection).await;
                if let Err(error) = &outcome {
                    self.after_error(generation, error);
                }
                outcome
            }
            Err(error) => {
                self.after_error(generation, &error);
                Err(error)
            }
            Ok(value) => Ok(value),
        }
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.run(move |mut connection| {
            Box::pin(async move { connection.req_packed_command(cmd).await })
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.run(move |mut connection| {
            Box::pin(async move {
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            })
        }))
    }

    fn get_db(&self) -> i64 {
        self.current()
            .as_ref()
            .map_or(0, |(_, connection)| connection.get_db())
    }
}

/// A connection to the master the Sentinels name now, within [`RESOLVE_TIMEOUT`].
async fn ask_sentinels(
    resolver: &mut SentinelClient,
    config: &AsyncConnectionConfig,
) -> RedisResult<MultiplexedConnection> {
    let connect = resolver.get_async_connection_with_config(config);
    tokio::time::timeout(RESOLVE_TIMEOUT, connect)
        .await
        .map_err(|_| {
            RedisError::from((ErrorKind::Io, "no master named by the Sentinels in time"))
        })?
}

/// The write was refused because the server is a replica now: it never ran.
fn refused_as_replica(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// The connection can no longer be trusted to reach the master.
fn master_lost(error: &RedisError) -> bool {
    refused_as_replica(error)
        || error.kind() == ErrorKind::Server(ServerErrorKind::MasterDown)
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

/// The `redis` crate's Sentinel client for `group`: master lookups confirmed with `ROLE`.
fn resolver(
    group: &SentinelGroup,
    tls: &RedisTls,
    protocol: ProtocolVersion,
) -> RedisResult<SentinelClient> {
    let node = &group.node;
    let mut builder = SentinelClientBuilder::new(
        group.sentinels.clone(),
        &group.master_name,
        SentinelServerType::Master,
    )?
    .set_client_to_redis_db(node.db())
    .set_client_to_redis_protocol(protocol);
    if let Some(username) = node.username() {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = node.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(auth) = &group.sentinel_auth {
        if let Some(username) = &auth.username {
            builder = builder.set_client_to_sentinel_username(username);
        }
        builder = builder.set_client_to_sentinel_password(&auth.password);
    }
    if group.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certificates) = tls.certificates() {
            builder = builder
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_certificates(certificates);
        }
    }
    builder.build()
}
