//! The Redis part of `[session]`: which deployment (`redis_url`, see [`RedisTopology`]), the
//! data nodes' password from a file, the Sentinels' own credentials, and the TLS certificates.
//! Every error names its key and never echoes a URL or a secret.

use std::path::PathBuf;

use secrecy::ExposeSecret;

use super::error::ConfigError;
use super::file::SessionSection;
use super::secret_files;
use crate::session::store::{RedisTls, RedisTopology, SentinelAuth};

/// The Redis deployment of `session`, or `None` for the in-memory store.
pub(super) fn topology(session: &SessionSection) -> Result<Option<RedisTopology>, ConfigError> {
    let sentinel_password = secret_files::value_or_file(
        "session.redis_sentinel_password",
        session.redis_sentinel_password.clone(),
        session.redis_sentinel_password_file.as_deref(),
    )?;
    let Some(url) = &session.redis_url else {
        let orphan = [
            (
                "session.redis_password_file",
                session.redis_password_file.is_some(),
            ),
            (
                "session.redis_sentinel_password",
                sentinel_password.is_some(),
            ),
            (
                "session.redis_sentinel_username",
                session.redis_sentinel_username.is_some(),
            ),
        ];
        return match orphan.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(ConfigError::new(*key, "needs session.redis_url")),
            None => Ok(None),
        };
    };
    let url_error = |error: crate::session::store::TopologyError| {
        ConfigError::new("session.redis_url", error.to_string())
    };
    let mut topology = RedisTopology::parse(url.expose_secret()).map_err(url_error)?;
    if let Some(path) = &session.redis_password_file {
        let password = secret_files::required("session.redis_password", None, Some(path))?;
        topology = topology
            .with_password(password.expose_secret())
            .map_err(url_error)?;
    }
    match (sentinel_password, &session.redis_sentinel_username) {
        (Some(password), username) => {
            let auth = SentinelAuth {
                username: username.clone(),
                password: password.expose_secret().to_owned(),
            };
            topology = topology.with_sentinel_auth(auth).map_err(|error| {
                ConfigError::new("session.redis_sentinel_password", error.to_string())
            })?;
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "session.redis_sentinel_username",
                "needs session.redis_sentinel_password (or its _file)",
            ));
        }
        (None, None) => {}
    }
    Ok(Some(topology))
}

/// The certificates for TLS towards Redis: only with a `rediss…` URL, client certificate and
/// key together.
pub(super) fn tls(
    session: &SessionSection,
    topology: Option<&RedisTopology>,
) -> Result<RedisTls, ConfigError> {
    let files: [(&str, &Option<PathBuf>); 3] = [
        ("session.redis_ca_file", &session.redis_ca_file),
        (
            "session.redis_client_cert_file",
            &session.redis_client_cert_file,
        ),
        (
            "session.redis_client_key_file",
            &session.redis_client_key_file,
        ),
    ];
    let Some((key, _)) = files.iter().find(|(_, file)| file.is_some()) else {
        return Ok(RedisTls::default());
    };
    if !topology.is_some_and(RedisTopology::uses_tls) {
        return Err(ConfigError::new(
            *key,
            "needs a rediss:// (or rediss+sentinel://, rediss+cluster://) session.redis_url",
        ));
    }
    let read = |(key, file): (&str, &Option<PathBuf>)| {
        file.as_deref()
            .map(|path| secret_files::read_bytes(key, path))
            .transpose()
    };
    let [ca, cert, key] = files;
    let client_pem = match (read(cert)?, read(key)?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::new(
                "session.redis_client_cert_file",
                "needs session.redis_client_key_file, and the other way round",
            ));
        }
    };
    Ok(RedisTls {
        ca_pem: read(ca)?,
        client_pem,
    })
}
