//! TLS towards Redis (`rediss://`): rustls, the same TLS stack as the rest of the binary
//! (reqwest), with the system's trust store by default, or a private CA
//! (`session.redis_ca_file`), and optionally a client certificate for mutual TLS.

use redis::{ClientTlsConfig, ConnectionInfo, TlsCertificates};

/// Certificates for `rediss://` connections, read from files by the configuration.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM of the CA(s) that signed the server's certificate; `None` trusts the system's store.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and private key this client presents (mutual TLS).
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("private_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_pem.is_some())
            .finish()
    }
}

impl RedisTls {
    /// A client for `info` with these certificates (plain `Client::open` when there are none).
    pub fn client(&self, info: ConnectionInfo) -> redis::RedisResult<redis::Client> {
        match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
    }

    /// These certificates in the `redis` crate's form; `None` when there are none (the
    /// system's trust store, no client certificate).
    pub fn certificates(&self) -> Option<TlsCertificates> {
        if self.ca_pem.is_none() && self.client_pem.is_none() {
            return None;
        }
        Some(TlsCertificates {
            client_tls: self.client_pem.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.ca_pem.clone(),
        })
    }
}
