//! Real Redis deployments beyond one server, started by the test on loopback: a Sentinel group
//! (master, replica, three Sentinels; `redis-server --sentinel`, no separate package) and a
//! three-master Cluster (`redis-cli --cluster create`), each also TLS-only. Every process is a
//! `redis-server` owned (and killed on drop) by the test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis::{TlsFiles, make_certificates};
use super::{RedisServer, free_port, wait_for};

/// The master's name in the Sentinels' configuration.
pub const MASTER_NAME: &str = "vestibule";

/// The password the test's Sentinels require of their clients (and of each other).
pub const SENTINEL_PASSWORD: &str = "sentinels-own-secret";

/// A master, its replica and three Sentinels watching them.
pub struct SentinelGroup {
    /// The two data servers; which one is master changes at a failover.
    pub servers: Vec<RedisServer>,
    /// The certificates of a TLS-only group: Sentinels and data servers listen on TLS alone,
    /// require client certificates, and speak TLS to each other.
    pub tls: Option<TlsFiles>,
    sentinels: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl SentinelGroup {
    /// Starts the master, a replica in sync with it, and three Sentinels that know both and
    /// each other (so they can agree on a failover). The Sentinels require
    /// [`SENTINEL_PASSWORD`]; the data servers need none.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// [`SentinelGroup::start`], TLS only (no plaintext port anywhere: `port 0`), with one CA
    /// made by the test for every server and Sentinel, client certificates required, and
    /// replication and the Sentinels' own links over TLS too.
    pub async fn start_tls() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vestibule-test-sentinels-{}-{}",
            free_port(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = tls.then(|| make_certificates(&dir));
        let start = |args: Vec<String>| {
            let tls = tls.clone();
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match &tls {
                    Some(files) => {
                        let args = [args.as_slice(), &["--tls-replication", "yes"]].concat();
                        RedisServer::start_tls_with_args(files, &args).await
                    }
                    None => RedisServer::start_with_args(&args).await,
                }
            }
        };
        let master = start(Vec::new()).await;
        let replica = start(vec![
            "--replicaof".into(),
            format!("127.0.0.1 {}", master.port()),
            "--replica-read-only".into(),
            "yes".into(),
        ])
        .await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let listener = match &tls {
                None => format!("port {port}\n"),
                Some(files) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\n\
                     tls-ca-cert-file {ca}\ntls-auth-clients yes\ntls-replication yes\n",
                    cert = files.server.0.display(),
                    key = files.server.1.display(),
                    ca = files.ca.display(),
                ),
            };
            let config = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &config,
                format!(
                    "{listener}bind 127.0.0.1\ndir {dir}\n\
                     requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = dir.display(),
                    master = master.port(),
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs as a Sentinel");
            sentinels.push((port, child));
        }
        let group = Self {
            servers: vec![master, replica],
            tls,
            sentinels,
            dir,
        };
        group.wait_until_ready().await;
        group
    }

    /// Waits until the replica is in sync and every Sentinel knows the replica and the two
    /// other Sentinels.
    async fn wait_until_ready(&self) {
        let replica = &self.servers[1];
        wait_for("the replica to sync", Duration::from_secs(20), || async {
            let info = info(replica, "replication").await?;
            info.contains("master_link_status:up").then_some(())
        })
        .await;
        for (port, _) in &self.sentinels {
            wait_for(
                "a Sentinel to know the whole group",
                Duration::from_secs(30),
                || async {
                    let fields = self.sentinel_master(*port).await?;
                    let count = |name: &str| {
                        fields
                            .windows(2)
                            .find(|pair| pair[0] == name)
                            .and_then(|pair| pair[1].parse::<u32>().ok())
                    };
                    (count("num-slaves")? >= 1 && count("num-other-sentinels")? >= 2).then_some(())
                },
            )
            .await;
        }
    }

    /// `redis+sentinel://` (or `rediss+sentinel://`) naming the three Sentinels.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{MASTER_NAME}", sentinels.join(","))
    }

    /// The ports the Sentinels listen on.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(port, _)| *port).collect()
    }

    /// The port of the server the Sentinels name as master now.
    pub async fn master_port(&self) -> Option<u16> {
        for (port, _) in &self.sentinels {
            let Some(mut connection) = self.connect_sentinel(*port).await else {
                continue;
            };
            let address: Option<(String, String)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query_async(&mut connection)
                .await
                .ok()
                .flatten();
            if let Some((_, master)) = address {
                return master.parse().ok();
            }
        }
        None
    }

    /// The data server on `port`.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|server| server.port() == port)
            .expect("a server of this group")
    }

    /// Kills the current master (`SIGKILL`, no goodbye) and returns its port.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self
            .master_port()
            .await
            .expect("the Sentinels name a master");
        let master = self
            .servers
            .iter_mut()
            .find(|server| server.port() == port)
            .expect("the master is one of ours");
        master.stop().await;
        port
    }

    /// Waits until the Sentinels name another master than `old` and it accepts writes.
    pub async fn wait_for_failover(&self, old: u16) -> u16 {
        let new = wait_for(
            "the Sentinels to fail over",
            Duration::from_secs(60),
            || async { self.master_port().await.filter(|port| *port != old) },
        )
        .await;
        wait_for(
            "the new master to take writes",
            Duration::from_secs(20),
            || async {
                info(self.server(new), "replication")
                    .await?
                    .contains("role:master")
                    .then_some(())
            },
        )
        .await;
        new
    }

    /// A connection to the Sentinel on `port`, with its password (and, in a TLS group, the
    /// test's certificates).
    async fn connect_sentinel(&self, port: u16) -> Option<redis::aio::MultiplexedConnection> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let url = format!("{scheme}://:{SENTINEL_PASSWORD}@127.0.0.1:{port}");
        let info = redis::IntoConnectionInfo::into_connection_info(url).ok()?;
        let client = match &self.tls {
            Some(files) => files.redis_tls().client(info).ok()?,
            None => redis::Client::open(info).ok()?,
        };
        connect_within(&client).await
    }

    /// `SENTINEL MASTER` as a flat list of names and values.
    async fn sentinel_master(&self, port: u16) -> Option<Vec<String>> {
        let mut connection = self.connect_sentinel(port).await?;
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(MASTER_NAME)
            .query_async(&mut connection)
            .await
            .ok()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connection made by `client` within 2 s (none if nothing answers).
async fn connect_within(client: &redis::Client) -> Option<redis::aio::MultiplexedConnection> {
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

/// `INFO section` of `server`.
async fn info(server: &RedisServer, section: &str) -> Option<String> {
    let mut connection = connect_within(&server.client()).await?;
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut connection)
        .await
        .ok()
}

/// Three masters, no replicas, sharing the 16384 slots.
pub struct RedisCluster {
    /// The nodes, in the order they were created.
    pub nodes: Vec<RedisServer>,
    /// The certificates of a TLS-only cluster (client certificates required, the cluster
    /// bus over TLS too).
    pub tls: Option<TlsFiles>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them with `redis-cli --cluster create`.
    /// A node down leaves the others serving their slots (`cluster-require-full-coverage no`).
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// [`RedisCluster::start`], TLS only, with one CA made by the test for every node.
    pub async fn start_tls() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vestibule-test-cluster-{}-{}",
            free_port(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = tls.then(|| make_certificates(&dir));
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes-{port}.conf",
            "--cluster-node-timeout",
            "2000",
            "--cluster-require-full-coverage",
            "no",
            // The bus port is chosen free like the port itself (port + 10000 may be taken).
            "--cluster-port",
            "{free_port}",
            "--tls-cluster",
            "yes",
        ];
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(match &tls {
                Some(files) => RedisServer::start_tls_with_args(files, &args).await,
                None => RedisServer::start_with_args(&args[..args.len() - 2]).await,
            });
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(files) = &tls {
            create
                .arg("--tls")
                .arg("--cacert")
                .arg(&files.ca)
                .arg("--cert")
                .arg(&files.client.0)
                .arg("--key")
                .arg(&files.client.1);
        }
        let output = create
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes, tls, dir };
        for node in &cluster.nodes {
            wait_for("the cluster to be ok", Duration::from_secs(30), || async {
                cluster_state_ok(node).await.then_some(())
            })
            .await;
        }
        cluster
    }

    /// `redis+cluster://` (or `rediss+cluster://`) naming every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", nodes.join(","))
    }

    /// The index of the node that serves `key`'s slot (as the running nodes see it).
    pub async fn owner_of(&self, key: &str) -> usize {
        let slot = self.slot(key).await;
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            let slots: redis::Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut node.connection().await)
                .await
                .unwrap();
            if let Some(port) = owner_port(&slots, slot) {
                return self
                    .nodes
                    .iter()
                    .position(|node| node.port() == port)
                    .expect("the owner is one of ours");
            }
        }
        panic!("no node serves slot {slot}");
    }

    fn index_of(&self, node: &RedisServer) -> usize {
        self.nodes
            .iter()
            .position(|ours| ours.port() == node.port())
            .unwrap()
    }

    /// `CLUSTER KEYSLOT key`.
    pub async fn slot(&self, key: &str) -> u16 {
        let node = self.nodes.iter().find(|node| node.is_running()).unwrap();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut node.connection().await)
            .await
            .unwrap()
    }

    /// Moves `key`'s slot, with its keys, from its node to node `to`, the way
    /// `redis-cli --cluster reshard` does: `IMPORTING`/`MIGRATING`, `MIGRATE`, then the new
    /// owner announced to every node.
    pub async fn migrate_slot_of(&self, key: &str, to: usize) {
        let slot = self.slot(key).await;
        let from = self.owner_of(key).await;
        assert_ne!(from, to, "the slot is already there");
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let source_id = node_id(source).await;
        let target_id = node_id(target).await;
        set_slot(target, slot, "IMPORTING", &source_id).await;
        set_slot(source, slot, "MIGRATING", &target_id).await;
        let mut connection = source.connection().await;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut connection)
                .await
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(target.port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        // The new owner first, then the old one, then the rest, as redis-cli does.
        set_slot(target, slot, "NODE", &target_id).await;
        set_slot(source, slot, "NODE", &target_id).await;
        for node in self
            .nodes
            .iter()
            .filter(|node| ![from, to].contains(&self.index_of(node)))
        {
            set_slot(node, slot, "NODE", &target_id).await;
        }
    }
}

/// `CLUSTER SETSLOT slot state id` on `node`.
async fn set_slot(node: &RedisServer, slot: u16, state: &str, id: &str) {
    let () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(state)
        .arg(id)
        .query_async(&mut node.connection().await)
        .await
        .unwrap();
}

/// Whether `node` reports `cluster_state:ok`.
async fn cluster_state_ok(node: &RedisServer) -> bool {
    let mut connection = node.connection().await;
    let info: Option<String> = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut connection)
        .await
        .ok();
    info.is_some_and(|info| info.contains("cluster_state:ok"))
}

/// `CLUSTER MYID` of `node`.
async fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut node.connection().await)
        .await
        .unwrap()
}

/// The port of the master serving `slot` in a `CLUSTER SLOTS` reply.
fn owner_port(slots: &redis::Value, slot: u16) -> Option<u16> {
    let redis::Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(fields) = range else {
            return None;
        };
        let number = |value: &redis::Value| match value {
            redis::Value::Int(number) => Some(*number),
            _ => None,
        };
        let (start, end) = (number(fields.first()?)?, number(fields.get(1)?)?);
        if !(start..=end).contains(&i64::from(slot)) {
            return None;
        }
        let redis::Value::Array(master) = fields.get(2)? else {
            return None;
        };
        number(master.get(1)?).and_then(|port| u16::try_from(port).ok())
    })
}
