//! A real `redis-server` on a free loopback port, stoppable and restartable on that port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

/// A `redis-server` owned by one test.
pub struct RedisServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free port and waits until it answers. Writes are persisted
    /// (append-only, fsync always) so a restart keeps the sessions, as in production.
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "vestibule-test-redis-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart().await;
        server
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

    /// The `redis://` URL for this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}); install it: apt-get install -y redis-server")
            });
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "redis to answer PING",
            Duration::from_secs(10),
            || async move {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            },
        )
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
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every key with its raw value (strings) or members (sorted sets), as an attacker with a
    /// dump would see it.
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
                "zset" => {
                    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
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
        let mut conn = self.connection().await;
        redis::cmd("KEYS")
            .arg("vestibule:session:*")
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
