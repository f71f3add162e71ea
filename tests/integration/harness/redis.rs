//! A real `redis-server` on a free loopback port, stoppable and restartable on that port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vestibule::session::store::RedisTopology;

pub use super::tls::{TlsFiles, make_certificates};
use super::{free_port, wait_for};

/// A `redis-server` owned by one test.
pub struct RedisServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
    tls: Option<TlsFiles>,
    /// More `redis-server` arguments (a replica's `--replicaof`, a cluster node's settings).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts Redis on a free port and waits until it answers. Writes are persisted
    /// (append-only, fsync always) so a restart keeps the sessions, as in production.
    pub async fn start() -> Self {
        Self::start_with(None, Vec::new()).await
    }

    /// [`RedisServer::start`] with more `redis-server` arguments; `args` may name the port
    /// as `{port}`, and ask for another free port as `{free_port}`.
    pub async fn start_with_args(args: &[&str]) -> Self {
        Self::start_with(None, args.iter().map(|arg| (*arg).to_owned()).collect()).await
    }

    /// [`RedisServer::start_with_args`], TLS only with the certificates `files` (shared by
    /// the servers of one deployment).
    pub async fn start_tls_with_args(files: &TlsFiles, args: &[&str]) -> Self {
        let args = args.iter().map(|arg| (*arg).to_owned()).collect();
        Self::start_with(Some(Some(files.clone())), args).await
    }

    /// [`RedisServer::start`], TLS only (`rediss://`), with a CA made by the test and client
    /// certificates required.
    pub async fn start_tls() -> Self {
        Self::start_with(Some(None), Vec::new()).await
    }

    /// `tls`: `None` plain, `Some(None)` TLS with certificates of its own, `Some(Some(files))`
    /// TLS with those.
    async fn start_with(tls: Option<Option<TlsFiles>>, args: Vec<String>) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "vestibule-test-redis-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = tls.map(|files| files.unwrap_or_else(|| make_certificates(&dir)));
        let mut server = Self {
            port,
            dir,
            child: None,
            tls,
            args: args
                .into_iter()
                .map(|arg| {
                    // `{free_port}`: another port of its own (a Cluster node's bus port, which
                    // would otherwise be port + 10000 and may be taken).
                    let arg = arg.replace("{port}", &port.to_string());
                    if arg.contains("{free_port}") {
                        arg.replace("{free_port}", &free_port().to_string())
                    } else {
                        arg
                    }
                })
                .collect(),
        };
        server.restart().await;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it runs (not stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The certificates of a TLS server.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The folder holding this server's data (and files a test puts beside it).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Adds an ACL user with every permission (the default user stays, for the harness).
    pub async fn add_acl_user(&self, user: &str, password: &str) {
        let mut connection = self.connection().await;
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(format!(">{password}"))
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query_async(&mut connection)
            .await
            .unwrap();
    }

    /// The ACL user names of the connected clients (`CLIENT LIST`).
    pub async fn client_users(&self) -> Vec<String> {
        let mut connection = self.connection().await;
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut connection)
            .await
            .unwrap();
        list.lines()
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|field| field.strip_prefix("user="))
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The `redis://` (or, with TLS, `rediss://`) URL for this server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// This server as Vestibule's Redis deployment.
    pub fn topology(&self) -> RedisTopology {
        RedisTopology::parse(&self.url()).unwrap()
    }

    /// A client for this server (with the test's certificates when it speaks TLS).
    pub fn client(&self) -> redis::Client {
        let info = redis::IntoConnectionInfo::into_connection_info(self.url()).unwrap();
        match &self.tls {
            Some(files) => files.redis_tls().client(info).unwrap(),
            None => redis::Client::open(info).unwrap(),
        }
    }

    /// (Re)starts the server on its port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(files) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&files.server.0)
                .arg("--tls-key-file")
                .arg(&files.server.1)
                .arg("--tls-ca-cert-file")
                .arg(&files.ca)
                .args(["--tls-auth-clients", "yes"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}); install it: apt-get install -y redis-server")
            });
        self.child = Some(child);
        let client = self.client();
        wait_for("redis to answer PING", Duration::from_secs(10), || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        })
        .await;
    }

    /// Stops the server and waits until its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        wait_for(
            "redis port to close",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .err()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// A fresh async connection for inspecting the data.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every key with its raw value (strings), members (sets, sorted sets) or fields and
    /// values (hashes), as an attacker with a dump would see it.
    pub async fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let value: Option<Vec<u8>> = match kind.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                "zset" | "set" | "hash" => {
                    let mut read = match kind.as_str() {
                        "zset" => redis::cmd("ZRANGE"),
                        "set" => redis::cmd("SMEMBERS"),
                        _ => redis::cmd("HGETALL"),
                    };
                    read.arg(&key);
                    if kind == "zset" {
                        read.arg(0).arg(-1);
                    }
                    let members: Vec<Vec<u8>> = read.query_async(&mut conn).await.unwrap();
                    Some(members.join(&b'\n'))
                }
                "none" => None,
                other => panic!("unexpected Redis type {other} at {key}"),
            };
            if let Some(value) = value {
                out.push((key, value));
            }
        }
        out
    }

    /// Keys that hold sessions.
    pub async fn session_keys(&self) -> Vec<String> {
        self.keys("vestibule:session:*").await
    }

    /// Every key matching `pattern` (`KEYS`: a test's small Redis only).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.connection().await;
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// How many session reads (`GET` + `GETEX`) Redis has served, from `INFO commandstats`.
    pub async fn session_reads(&self) -> u64 {
        let mut conn = self.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .filter(|line| line.starts_with("cmdstat_get:") || line.starts_with("cmdstat_getex:"))
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Remaining TTL of `key` in milliseconds (-1 no TTL, -2 missing).
    pub async fn pttl(&self, key: &str) -> i64 {
        let mut conn = self.connection().await;
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
