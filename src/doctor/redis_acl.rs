//! Redis reachable, with the ACL permissions Vestibule needs: every command it sends (directly
//! and from its Lua scripts) and every key family it touches, tried with the configured user.
//!
//! Each probe is a harmless command on a key of the doctor's own (`vestibule:doctor-probe:…`,
//! expiring within a minute and deleted at the end), or a read or a no-op write on a real key
//! name. Redis checks permissions *before* it runs a command, so `NOPERM` is the only answer
//! that means "not allowed": any other error (`WRONGTYPE`, `NOSCRIPT`) proves the command and
//! key were permitted. This works with the user's own rights on any Redis ≥ 6 (managed ones
//! included), where `ACL DRYRUN` and `ACL GETUSER` need administrative rights Vestibule's user
//! should not have.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};

use super::report::Check;
use crate::session::store::redis::cache::CACHED_KEY_PREFIXES;
use crate::session::store::{RedisTls, RedisTopology};

/// How long a probe (or the connection) may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The SHA1 of the script `return 1` (what `SCRIPT LOAD` answers for it).
const RETURN_ONE_SHA: &str = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";

/// The key families Vestibule uses: a prefix (ending in `:`) or a whole key name.
pub const KEY_FAMILIES: [&str; 15] = [
    "vestibule:session:",
    "vestibule:credential:",
    "vestibule:client-token:",
    "vestibule:cache-probe:",
    "vestibule:refresh-lock:",
    "vestibule:login:",
    "vestibule:login-browser:",
    "vestibule:pending-logins",
    "vestibule:logout-token:",
    "vestibule:user:",
    "vestibule:user-ended:",
    "vestibule:sid:",
    "vestibule:sid-ended:",
    "vestibule:live-sessions",
    "vestibule:id-token-algs",
];

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Redis ran the command, or refused it for a reason other than permissions.
    Allowed,
    /// `NOPERM`, with Redis's message.
    Denied(String),
}

/// What the probes found, for [`judge`].
#[derive(Debug, Clone)]
pub struct AclFacts {
    /// The ACL user (`default` when the URL names none).
    pub user: String,
    /// Per command (ACL names: `get`, `script|load`, `client|tracking`): allowed or not.
    pub commands: Vec<(&'static str, Outcome)>,
    /// Per key family: reading and writing allowed or not.
    pub keys: Vec<(&'static str, Outcome, Outcome)>,
}

/// Judges reachability and permissions.
pub fn judge(facts: &Result<AclFacts, String>, described: &str) -> Vec<Check> {
    let facts = match facts {
        Ok(facts) => facts,
        Err(error) => {
            return vec![Check::fail(
                "redis.reachable",
                format!("cannot reach Redis ({described}): {error}"),
                "check session.redis_url (host, port, user, password), the network path from \
                 here, and for rediss:// the certificate settings (session.redis_ca_file, \
                 session.redis_client_cert_file)",
            )];
        }
    };
    let mut checks = vec![Check::ok(
        "redis.reachable",
        format!("Redis answers ({described}) as user \"{}\"", facts.user),
    )];
    // A command probed twice (`CLIENT TRACKING` on and off) is named once.
    let mut denied: Vec<&str> = facts
        .commands
        .iter()
        .filter(|(_, outcome)| *outcome != Outcome::Allowed)
        .map(|(command, _)| *command)
        .collect();
    denied.dedup();
    if denied.is_empty() {
        let mut names: Vec<&str> = facts.commands.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        checks.push(Check::ok(
            "redis.acl_commands",
            format!("all {} commands Vestibule uses are permitted", names.len()),
        ));
    } else {
        let grants: Vec<String> = denied.iter().map(|command| format!("+{command}")).collect();
        checks.push(Check::fail(
            "redis.acl_commands",
            format!(
                "user \"{}\" may not run: {}",
                facts.user,
                denied.join(", ").to_ascii_uppercase()
            ),
            format!(
                "ACL SETUSER {} {} (or grant the whole list in docs/deploying.md)",
                facts.user,
                grants.join(" ")
            ),
        ));
    }
    let mut keys_denied = Vec::new();
    for (family, read, write) in &facts.keys {
        let pattern = key_pattern(family);
        match (read, write) {
            (Outcome::Allowed, Outcome::Allowed) => {}
            (Outcome::Allowed, _) => keys_denied.push(format!("{pattern} (write)")),
            (_, Outcome::Allowed) => keys_denied.push(format!("{pattern} (read)")),
            _ => keys_denied.push(pattern),
        }
    }
    if keys_denied.is_empty() {
        checks.push(Check::ok(
            "redis.acl_keys",
            "keys vestibule:* may be read and written",
        ));
    } else {
        checks.push(Check::fail(
            "redis.acl_keys",
            format!(
                "user \"{}\" may not access keys {}",
                facts.user,
                keys_denied.join(", ")
            ),
            format!("ACL SETUSER {} ~vestibule:*", facts.user),
        ));
    }
    checks
}

/// `vestibule:session:` as `vestibule:session:*`; a whole key name as itself.
fn key_pattern(family: &str) -> String {
    if family.ends_with(':') {
        format!("{family}*")
    } else {
        family.to_owned()
    }
}

/// Connects to the one server of `topology` and runs every probe.
pub async fn gather(topology: &RedisTopology, tls: &RedisTls) -> Result<AclFacts, String> {
    let RedisTopology::Server(info) = topology else {
        return Err("only a single server is probed".to_owned());
    };
    let user = info
        .redis_settings()
        .username()
        .unwrap_or("default")
        .to_owned();
    let client = tls
        .client(info.clone())
        .map_err(|error| error.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|error| error.to_string())?;
    let probe_id = crate::random::url_safe_id();
    let mut commands = Vec::new();
    for (name, command) in command_probes(&probe_id) {
        commands.push((name, run(&mut connection, &command).await?));
    }
    let mut keys = Vec::new();
    for family in KEY_FAMILIES {
        let key = if family.ends_with(':') {
            format!("{family}doctor-probe-{probe_id}")
        } else {
            family.to_owned()
        };
        let read = run(&mut connection, redis::cmd("EXISTS").arg(&key)).await?;
        // Removing a member nobody added changes nothing, whatever the key holds.
        let write = run(
            &mut connection,
            redis::cmd("SREM")
                .arg(&key)
                .arg(format!("doctor-probe-{probe_id}")),
        )
        .await?;
        keys.push((family, read, write));
    }
    let mut cleanup = redis::cmd("DEL");
    for kind in ["string", "hash", "set", "zset"] {
        cleanup.arg(probe_key(&probe_id, kind));
    }
    let _ = run(&mut connection, &cleanup).await;
    Ok(AclFacts {
        user,
        commands,
        keys,
    })
}

/// One probe: allowed, denied, or (`Err`) Redis did not answer.
async fn run(connection: &mut MultiplexedConnection, command: &Cmd) -> Result<Outcome, String> {
    match command.query_async::<Value>(connection).await {
        Ok(_) => Ok(Outcome::Allowed),
        Err(error) if error.code() == Some("NOPERM") => Ok(Outcome::Denied(error.to_string())),
        Err(error) if error.code().is_some() => Ok(Outcome::Allowed),
        Err(error) => Err(error.to_string()),
    }
}

/// The doctor's own key of one type.
fn probe_key(probe_id: &str, kind: &str) -> String {
    format!("vestibule:doctor-probe:{probe_id}:{kind}")
}

/// Every command Vestibule sends (see `session/store/redis` and its Lua scripts), each as a
/// harmless call on the doctor's keys, under its ACL name.
fn command_probes(probe_id: &str) -> Vec<(&'static str, Cmd)> {
    let string = probe_key(probe_id, "string");
    let hash = probe_key(probe_id, "hash");
    let set = probe_key(probe_id, "set");
    let zset = probe_key(probe_id, "zset");
    let cmd = |parts: &[&str]| {
        let mut command = redis::cmd(parts[0]);
        for part in &parts[1..] {
            command.arg(*part);
        }
        command
    };
    let mut tracking_on = cmd(&["CLIENT", "TRACKING", "ON", "BCAST"]);
    for prefix in CACHED_KEY_PREFIXES
        .iter()
        .chain([&"vestibule:cache-probe:"])
    {
        tracking_on.arg("PREFIX").arg(prefix);
    }
    vec![
        ("ping", cmd(&["PING"])),
        ("set", cmd(&["SET", &string, "probe", "PX", "60000"])),
        ("get", cmd(&["GET", &string])),
        ("getex", cmd(&["GETEX", &string, "PX", "60000"])),
        ("pexpire", cmd(&["PEXPIRE", &string, "60000"])),
        ("expire", cmd(&["EXPIRE", &string, "60"])),
        ("pttl", cmd(&["PTTL", &string])),
        ("ttl", cmd(&["TTL", &string])),
        ("exists", cmd(&["EXISTS", &string])),
        ("getdel", cmd(&["GETDEL", &string])),
        ("hset", cmd(&["HSET", &hash, "field", "probe"])),
        ("hsetnx", cmd(&["HSETNX", &hash, "other", "probe"])),
        ("hget", cmd(&["HGET", &hash, "field"])),
        ("hmget", cmd(&["HMGET", &hash, "field", "other"])),
        ("hgetall", cmd(&["HGETALL", &hash])),
        ("hlen", cmd(&["HLEN", &hash])),
        ("hexists", cmd(&["HEXISTS", &hash, "field"])),
        ("hincrby", cmd(&["HINCRBY", &hash, "count", "1"])),
        ("hscan", cmd(&["HSCAN", &hash, "0", "COUNT", "10"])),
        ("hdel", cmd(&["HDEL", &hash, "other"])),
        ("sadd", cmd(&["SADD", &set, "probe"])),
        ("smembers", cmd(&["SMEMBERS", &set])),
        ("srem", cmd(&["SREM", &set, "probe"])),
        ("zadd", cmd(&["ZADD", &zset, "1", "probe"])),
        ("zcard", cmd(&["ZCARD", &zset])),
        ("zcount", cmd(&["ZCOUNT", &zset, "0", "2"])),
        ("zrangebyscore", cmd(&["ZRANGEBYSCORE", &zset, "0", "2"])),
        (
            "zremrangebyscore",
            cmd(&["ZREMRANGEBYSCORE", &zset, "5", "6"]),
        ),
        ("zpopmin", cmd(&["ZPOPMIN", &zset])),
        ("zrem", cmd(&["ZREM", &zset, "probe"])),
        ("time", cmd(&["TIME"])),
        ("del", cmd(&["DEL", &string])),
        ("script|load", cmd(&["SCRIPT", "LOAD", "return 1"])),
        ("evalsha", cmd(&["EVALSHA", RETURN_ONE_SHA, "1", &string])),
        ("client|tracking", tracking_on),
        ("client|tracking", cmd(&["CLIENT", "TRACKING", "OFF"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    fn facts(denied_command: Option<&'static str>, denied_key: Option<&'static str>) -> AclFacts {
        let outcome = |denied: bool| {
            if denied {
                Outcome::Denied("NOPERM".into())
            } else {
                Outcome::Allowed
            }
        };
        AclFacts {
            user: "vestibule".into(),
            commands: command_probes("x")
                .into_iter()
                .map(|(name, _)| (name, outcome(Some(name) == denied_command)))
                .collect(),
            keys: KEY_FAMILIES
                .iter()
                .map(|family| {
                    (
                        *family,
                        Outcome::Allowed,
                        outcome(Some(*family) == denied_key),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_denied_command_or_key_fails_naming_it_with_the_acl_remedy() {
        let checks = judge(&Ok(facts(Some("evalsha"), None)), "server 127.0.0.1:6379");
        let commands = checks
            .iter()
            .find(|c| c.id == "redis.acl_commands")
            .unwrap();
        assert_eq!(commands.status, Status::Fail);
        assert!(commands.summary.contains("EVALSHA"), "{commands:?}");
        assert_eq!(
            commands.remedy.as_deref(),
            Some("ACL SETUSER vestibule +evalsha (or grant the whole list in docs/deploying.md)")
        );
        let checks = judge(&Ok(facts(None, Some("vestibule:session:"))), "s");
        let keys = checks.iter().find(|c| c.id == "redis.acl_keys").unwrap();
        assert_eq!(keys.status, Status::Fail);
        assert!(
            keys.summary.contains("vestibule:session:* (write)"),
            "{keys:?}"
        );
        let fine = judge(&Ok(facts(None, None)), "s");
        assert!(fine.iter().all(|c| c.status == Status::Ok), "{fine:?}");
        assert!(
            fine[1].summary.starts_with("all 35 commands"),
            "{:?}",
            fine[1]
        );
        let tracking = judge(&Ok(facts(Some("client|tracking"), None)), "s");
        assert!(
            tracking[1]
                .summary
                .ends_with("may not run: CLIENT|TRACKING"),
            "{:?}",
            tracking[1]
        );
        let down = judge(&Err("connection refused".into()), "s");
        assert_eq!(down[0].status, Status::Fail);
    }
}
