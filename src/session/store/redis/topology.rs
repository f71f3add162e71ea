//! Which Redis deployment `session.redis_url` names: one server (`redis://`, `rediss://`), a
//! Sentinel group (`redis+sentinel://`, `rediss+sentinel://`) or a Cluster (`redis+cluster://`,
//! `rediss+cluster://`). Pure parsing, no I/O; every node's address goes through the `redis`
//! crate's own URL parser, so user names and passwords are percent-decoded the same way.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// The port Sentinels listen on unless the URL says otherwise.
const SENTINEL_PORT: u16 = 26379;
/// The port Redis servers listen on unless the URL says otherwise.
const REDIS_PORT: u16 = 6379;

/// A Redis deployment and how to authenticate to its data nodes.
#[derive(Clone)]
pub enum RedisTopology {
    /// One server.
    Server(ConnectionInfo),
    /// A master and its replicas watched by Sentinels, which name the current master.
    Sentinel(SentinelGroup),
    /// A Redis Cluster, reached through any of its seed nodes.
    Cluster(Vec<ConnectionInfo>),
}

/// The Sentinels of one master and the credentials of each side.
#[derive(Clone)]
pub struct SentinelGroup {
    /// The Sentinels' addresses.
    pub sentinels: Vec<ConnectionAddr>,
    /// The master's name in the Sentinels' configuration.
    pub master_name: String,
    /// TLS towards the Sentinels and the data nodes.
    pub tls: bool,
    /// User, password and database on the master (from the URL).
    pub node: RedisConnectionInfo,
    /// User and password on the Sentinels themselves, if they require any.
    pub sentinel_auth: Option<SentinelAuth>,
}

/// Credentials the Sentinels require (their own, distinct from the master's).
#[derive(Clone)]
pub struct SentinelAuth {
    /// ACL user; `None` for the default user.
    pub username: Option<String>,
    /// The password.
    pub password: String,
}

/// Why a `session.redis_url` was refused (never echoes the URL, which may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopologyError(pub &'static str);

impl RedisTopology {
    /// Parses `session.redis_url`.
    pub fn parse(url: &str) -> Result<Self, TopologyError> {
        let (scheme, rest) = url.split_once("://").ok_or(TopologyError(USAGE))?;
        match scheme {
            "redis" | "rediss" => {
                redis::parse_redis_url(url).ok_or(TopologyError(USAGE))?;
                let info = url
                    .into_connection_info()
                    .map_err(|_| TopologyError(USAGE))?;
                Ok(RedisTopology::Server(info))
            }
            "redis+sentinel" | "rediss+sentinel" => sentinel(scheme == "rediss+sentinel", rest),
            "redis+cluster" | "rediss+cluster" => cluster(scheme == "rediss+cluster", rest),
            _ => Err(TopologyError(USAGE)),
        }
    }

    /// Whether connections use TLS (`rediss…` schemes).
    pub fn uses_tls(&self) -> bool {
        match self {
            RedisTopology::Server(info) => matches!(info.addr(), ConnectionAddr::TcpTls { .. }),
            RedisTopology::Sentinel(group) => group.tls,
            RedisTopology::Cluster(nodes) => nodes
                .iter()
                .any(|node| matches!(node.addr(), ConnectionAddr::TcpTls { .. })),
        }
    }

    /// Sets the data nodes' password (from `session.redis_password_file`); an error if the URL
    /// already holds one.
    pub fn with_password(self, password: &str) -> Result<Self, TopologyError> {
        const TWICE: &str = "holds a password and session.redis_password_file is set; set only one";
        let set = |info: &RedisConnectionInfo| match info.password() {
            Some(_) => Err(TopologyError(TWICE)),
            None => Ok(info.clone().set_password(password)),
        };
        Ok(match self {
            RedisTopology::Server(info) => {
                let settings = set(info.redis_settings())?;
                RedisTopology::Server(info.set_redis_settings(settings))
            }
            RedisTopology::Sentinel(mut group) => {
                group.node = set(&group.node)?;
                RedisTopology::Sentinel(group)
            }
            RedisTopology::Cluster(nodes) => RedisTopology::Cluster(
                nodes
                    .into_iter()
                    .map(|node| {
                        let settings = set(node.redis_settings())?;
                        Ok(node.set_redis_settings(settings))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Adds the Sentinels' own credentials; an error for any other topology.
    pub fn with_sentinel_auth(self, auth: SentinelAuth) -> Result<Self, TopologyError> {
        match self {
            RedisTopology::Sentinel(mut group) => {
                group.sentinel_auth = Some(auth);
                Ok(RedisTopology::Sentinel(group))
            }
            _ => Err(TopologyError(
                "Sentinel credentials need a redis+sentinel:// or rediss+sentinel:// URL",
            )),
        }
    }

    /// A name for logs: the topology and its addresses, never a credential.
    pub fn describe(&self) -> String {
        match self {
            RedisTopology::Server(info) => format!("server {}", info.addr()),
            RedisTopology::Sentinel(group) => format!(
                "master \"{}\" via Sentinels {}",
                group.master_name,
                join(group.sentinels.iter())
            ),
            RedisTopology::Cluster(nodes) => {
                format!(
                    "cluster seeds {}",
                    join(nodes.iter().map(ConnectionInfo::addr))
                )
            }
        }
    }
}

impl std::fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

const USAGE: &str = "must be redis://[user:password@]host[:port][/db], rediss://… (TLS), \
     redis+sentinel://[user:password@]host[:port][,host[:port]…]/master_name[/db], or \
     redis+cluster://[user:password@]host[:port][,host[:port]…] (rediss+… for TLS)";

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `[userinfo@]host[,host…]` and the path after it.
fn split_authority(rest: &str) -> Result<(Option<&str>, Vec<&str>, &str), TopologyError> {
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|host| host.is_empty()) || rest.contains(['?', '#']) {
        return Err(TopologyError(USAGE));
    }
    Ok((userinfo, hosts, path))
}

/// Whether `host` ends in `:port` (an IPv6 literal is bracketed).
fn has_port(host: &str) -> bool {
    host.rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'))
}

/// Each host as a one-server URL through the `redis` crate's parser.
fn nodes(
    tls: bool,
    userinfo: Option<&str>,
    hosts: &[&str],
    default_port: u16,
    db: &str,
) -> Result<Vec<ConnectionInfo>, TopologyError> {
    let scheme = if tls { "rediss" } else { "redis" };
    let userinfo = userinfo.map(|user| format!("{user}@")).unwrap_or_default();
    hosts
        .iter()
        .map(|host| {
            let port = if has_port(host) {
                String::new()
            } else {
                format!(":{default_port}")
            };
            let url = format!("{scheme}://{userinfo}{host}{port}/{db}");
            redis::parse_redis_url(&url).ok_or(TopologyError(USAGE))?;
            url.as_str()
                .into_connection_info()
                .map_err(|_| TopologyError(USAGE))
        })
        .collect()
}

fn sentinel(tls: bool, rest: &str) -> Result<RedisTopology, TopologyError> {
    let (userinfo, hosts, path) = split_authority(rest)?;
    let mut segments = path.trim_start_matches('/').split('/');
    let master_name = segments.next().unwrap_or_default();
    let db = segments.next().unwrap_or("0");
    if master_name.is_empty() || segments.next().is_some() || db.parse::<i64>().is_err() {
        return Err(TopologyError(
            "a Sentinel URL ends with /master_name or /master_name/db",
        ));
    }
    // The Sentinels' addresses, with the master's credentials carried aside.
    let parsed = nodes(tls, userinfo, &hosts, SENTINEL_PORT, db)?;
    let node = parsed
        .first()
        .map(|info| info.redis_settings().clone())
        .unwrap_or_default();
    Ok(RedisTopology::Sentinel(SentinelGroup {
        sentinels: parsed.into_iter().map(|info| info.addr().clone()).collect(),
        master_name: master_name.to_owned(),
        tls,
        node,
        sentinel_auth: None,
    }))
}

fn cluster(tls: bool, rest: &str) -> Result<RedisTopology, TopologyError> {
    let (userinfo, hosts, path) = split_authority(rest)?;
    if !matches!(path, "" | "/" | "/0") {
        return Err(TopologyError(
            "a Cluster has only database 0: the URL takes no path",
        ));
    }
    Ok(RedisTopology::Cluster(nodes(
        tls, userinfo, &hosts, REDIS_PORT, "0",
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(info: &ConnectionAddr) -> (String, u16) {
        match info {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            other => panic!("unexpected address {other}"),
        }
    }

    #[test]
    fn a_plain_url_is_one_server() {
        let RedisTopology::Server(info) =
            RedisTopology::parse("redis://u:p%40ss@h:7000/2").unwrap()
        else {
            panic!("not a server");
        };
        assert_eq!(tcp(info.addr()), ("h".into(), 7000));
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().password(), Some("p@ss"));
        assert_eq!(info.redis_settings().db(), 2);
        assert!(!RedisTopology::parse("redis://h").unwrap().uses_tls());
        assert!(RedisTopology::parse("rediss://h").unwrap().uses_tls());
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_master_and_its_credentials() {
        let topology =
            RedisTopology::parse("redis+sentinel://app:s3cr%2Ft@a:1,b,[::1]:3/main/4").unwrap();
        let RedisTopology::Sentinel(group) = &topology else {
            panic!("not sentinel");
        };
        let addresses: Vec<_> = group.sentinels.iter().map(tcp).collect();
        assert_eq!(
            addresses,
            [
                ("a".into(), 1),
                ("b".into(), SENTINEL_PORT),
                ("::1".into(), 3)
            ]
        );
        assert_eq!(group.master_name, "main");
        assert_eq!(group.node.username(), Some("app"));
        assert_eq!(group.node.password(), Some("s3cr/t"));
        assert_eq!(group.node.db(), 4);
        assert!(!topology.uses_tls());
        assert!(
            RedisTopology::parse("rediss+sentinel://a/main")
                .unwrap()
                .uses_tls()
        );
        assert!(!topology.describe().contains("s3cr"));
        assert!(!format!("{topology:?}").contains("s3cr"));
    }

    #[test]
    fn a_cluster_url_lists_seed_nodes() {
        let topology = RedisTopology::parse("rediss+cluster://:pw@a:7000,b:7001,c").unwrap();
        let RedisTopology::Cluster(nodes) = &topology else {
            panic!("not a cluster");
        };
        let addresses: Vec<_> = nodes.iter().map(|node| tcp(node.addr())).collect();
        assert_eq!(
            addresses,
            [
                ("a".into(), 7000),
                ("b".into(), 7001),
                ("c".into(), REDIS_PORT)
            ]
        );
        assert!(
            nodes
                .iter()
                .all(|node| node.redis_settings().password() == Some("pw"))
        );
        assert!(topology.uses_tls());
        assert!(!format!("{topology:?}").contains("pw"));
    }

    #[test]
    fn malformed_urls_are_refused_without_echoing_them() {
        for url in [
            "http://h",
            "h:6379",
            "redis+sentinel://a,b",
            "redis+sentinel://a/",
            "redis+sentinel://a/m/x",
            "redis+sentinel://a/m/1/2",
            "redis+sentinel://a,,b/m",
            "redis+cluster://a/1",
            "redis+cluster://a?x=1",
            "redis+mesh://a",
        ] {
            let error = RedisTopology::parse(url)
                .err()
                .unwrap_or_else(|| panic!("{url} parsed"));
            assert!(!error.to_string().contains(url), "{url}");
        }
    }

    #[test]
    fn a_password_file_fills_every_data_node_but_never_overrides_the_url() {
        let cluster = RedisTopology::parse("redis+cluster://user@a,b")
            .unwrap()
            .with_password("filed")
            .unwrap();
        let RedisTopology::Cluster(nodes) = cluster else {
            panic!("not a cluster");
        };
        assert!(nodes.iter().all(|node| {
            node.redis_settings().password() == Some("filed")
                && node.redis_settings().username() == Some("user")
        }));
        let sentinel = RedisTopology::parse("redis+sentinel://a/m")
            .unwrap()
            .with_password("filed")
            .unwrap();
        let RedisTopology::Sentinel(group) = sentinel else {
            panic!("not sentinel");
        };
        assert_eq!(group.node.password(), Some("filed"));
        for url in [
            "redis://:p@h",
            "redis+sentinel://:p@a/m",
            "redis+cluster://:p@a",
        ] {
            assert!(
                RedisTopology::parse(url)
                    .unwrap()
                    .with_password("x")
                    .is_err(),
                "{url}"
            );
        }
    }

    #[test]
    fn sentinel_credentials_need_sentinels() {
        let auth = || SentinelAuth {
            username: None,
            password: "x".into(),
        };
        assert!(
            RedisTopology::parse("redis://h")
                .unwrap()
                .with_sentinel_auth(auth())
                .is_err()
        );
        assert!(
            RedisTopology::parse("redis+sentinel://a/m")
                .unwrap()
                .with_sentinel_auth(auth())
                .is_ok()
        );
    }
}
