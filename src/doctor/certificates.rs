//! TLS certificate validity: the certificate a server presents (the provider's, a `rediss://`
//! server's), read in a handshake of our own and judged against the clock.
//!
//! The handshake trusts whatever it is shown: it only reads dates. Whether the certificate is
//! *trusted* is decided by the real connections (discovery, the Redis check), which fail with
//! the TLS error when it is not. Nothing is ever sent over this connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_cert::Certificate;
use x509_cert::der::Decode;

use super::report::Check;

/// A certificate expiring sooner than this is a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The validity period of a server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`, as seconds since the Unix epoch.
    pub not_before: u64,
    /// `notAfter`, as seconds since the Unix epoch.
    pub not_after: u64,
}

/// Judges `validity` (or why it could not be read) of `what` at `now` (Unix seconds).
pub fn judge(id: &'static str, what: &str, validity: &Result<Validity, String>, now: u64) -> Check {
    let validity = match validity {
        Ok(validity) => validity,
        Err(error) => {
            return Check::fail(
                id,
                format!("cannot read the certificate of {what}: {error}"),
                format!("make {what} reachable over TLS from here"),
            );
        }
    };
    if now < validity.not_before {
        return Check::fail(
            id,
            format!(
                "the certificate of {what} is not valid yet (not before {})",
                date(validity.not_before)
            ),
            "check this machine's clock, or reissue the certificate with a start date in the past",
        );
    }
    if now >= validity.not_after {
        return Check::fail(
            id,
            format!(
                "the certificate of {what} expired on {}",
                date(validity.not_after)
            ),
            format!("renew the certificate of {what} (TLS connections to it are refused)"),
        );
    }
    let left = validity.not_after - now;
    let days = left / 86_400;
    if left < EXPIRY_WARNING.as_secs() {
        return Check::warn(
            id,
            format!(
                "the certificate of {what} expires on {} (in {days} day(s))",
                date(validity.not_after)
            ),
            format!("renew the certificate of {what} before it expires"),
        );
    }
    Check::ok(
        id,
        format!(
            "the certificate of {what} is valid until {} ({days} days)",
            date(validity.not_after)
        ),
    )
}

/// The validity of the certificate `host:port` presents in a TLS handshake.
pub async fn read(host: &str, port: u16) -> Result<Validity, String> {
    let seen = Arc::new(SeenCertificate::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| error.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(seen.clone())
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|error| error.to_string())?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    // The handshake may fail after the certificate was seen (a server that requires a client
    // certificate); what matters is the certificate.
    let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
    let der = seen
        .end_entity
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    match (der, outcome) {
        (Some(der), _) => parse(&der),
        (None, Ok(Err(error))) => Err(error.to_string()),
        (None, Err(_)) => Err("no TLS handshake within 5 s".to_owned()),
        (None, Ok(Ok(_))) => Err("the server presented no certificate".to_owned()),
    }
}

/// The validity period of a DER certificate.
fn parse(der: &[u8]) -> Result<Validity, String> {
    let certificate = Certificate::from_der(der).map_err(|error| error.to_string())?;
    let validity = &certificate.tbs_certificate.validity;
    Ok(Validity {
        not_before: validity.not_before.to_unix_duration().as_secs(),
        not_after: validity.not_after.to_unix_duration().as_secs(),
    })
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn date(secs: u64) -> String {
    match x509_cert::der::DateTime::from_unix_duration(Duration::from_secs(secs)) {
        Ok(time) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            time.year(),
            time.month(),
            time.day(),
            time.hour(),
            time.minutes(),
            time.seconds()
        ),
        Err(_) => format!("{secs} s after 1970"),
    }
}

/// A verifier that accepts any certificate and keeps the server's own (dates only are read).
#[derive(Debug, Default)]
struct SeenCertificate {
    end_entity: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for SeenCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self
            .end_entity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    const DAY: u64 = 86_400;

    fn validity(not_before: u64, not_after: u64) -> Result<Validity, String> {
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    #[test]
    fn expired_and_future_certificates_fail_and_a_close_expiry_warns() {
        let now = 1_800_000_000;
        let expired = judge("t", "Redis", &validity(now - 30 * DAY, now - DAY), now);
        assert_eq!(expired.status, Status::Fail);
        assert!(expired.summary.contains("expired on"), "{expired:?}");
        let early = judge("t", "Redis", &validity(now + DAY, now + 90 * DAY), now);
        assert_eq!(early.status, Status::Fail);
        assert!(early.summary.contains("not valid yet"));
        let soon = judge("t", "Redis", &validity(now - DAY, now + 13 * DAY), now);
        assert_eq!(soon.status, Status::Warn);
        assert!(soon.summary.contains("in 13 day(s)"), "{soon:?}");
        let fine = judge("t", "Redis", &validity(now - DAY, now + 15 * DAY), now);
        assert_eq!(fine.status, Status::Ok);
        let unreadable = judge("t", "Redis", &Err("refused".into()), now);
        assert_eq!(unreadable.status, Status::Fail);
    }

    #[test]
    fn dates_are_shown_in_utc() {
        assert_eq!(date(1_706_745_600), "2024-02-01 00:00:00 UTC");
    }
}
