//! One `private_key_jwt` signing key: an EC P-256 key (ES256, through `assertion::SigningKey`)
//! or an RSA key of 2048 to 4096 bits (RS256 by default, or PS256; signed with ring), because
//! providers differ in what they accept (Auth0 and Entra ID take no ES256 client assertion).
//!
//! The RSA private key never leaves this file: not in `Debug`, not in an error, not in the JWK
//! (which carries `n` and `e` only).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::assertion::SigningKey;

/// The JWS algorithm of a client key (RFC 7518 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKeyAlg {
    /// ECDSA P-256 SHA-256: the only one of an EC key.
    Es256,
    /// RSASSA-PKCS1-v1_5 SHA-256: an RSA key's default.
    Rs256,
    /// RSASSA-PSS SHA-256 (MGF1 SHA-256, 32-byte salt).
    Ps256,
}

impl ClientKeyAlg {
    /// The algorithm named `name` (`ES256`, `RS256`, `PS256`), or `None`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            "PS256" => Some(Self::Ps256),
            _ => None,
        }
    }

    /// The `alg` value of the assertion's header and the JWK.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }
}

/// A client key a PEM could not provide, or an algorithm it cannot sign.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientKeyError {
    /// Neither a P-256 nor an RSA private key.
    #[error(
        "is not a PEM-encoded P-256 or RSA private key (PKCS#8 \"BEGIN PRIVATE KEY\", SEC1 \
         \"BEGIN EC PRIVATE KEY\" or PKCS#1 \"BEGIN RSA PRIVATE KEY\"; e.g. openssl genpkey \
         -algorithm EC -pkeyopt ec_paramgen_curve:P-256, or -algorithm RSA -pkeyopt \
         rsa_keygen_bits:2048)"
    )]
    NotAKey,
    /// An RSA modulus under 2048 bits (NIST SP 800-131A; providers refuse them too).
    #[error(
        "is an RSA key under 2048 bits; use at least 2048 (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)"
    )]
    RsaTooSmall,
    /// An RSA modulus over 4096 bits, which ring does not sign with.
    #[error("is an RSA key over 4096 bits; use 2048 to 4096 bits")]
    RsaTooLarge,
    /// An algorithm the key's type cannot sign.
    #[error(
        "is {alg}, which the {kind} key cannot sign: an EC P-256 key signs ES256, an RSA key \
         RS256 or PS256"
    )]
    AlgorithmMismatch {
        /// The algorithm asked for.
        alg: &'static str,
        /// `EC` or `RSA`.
        kind: &'static str,
    },
}

/// One client signing key and the `kid` its assertions and its published JWK carry.
#[derive(Clone)]
pub struct ClientKey(Kind);

#[derive(Clone)]
enum Kind {
    Ec(SigningKey),
    Rsa(RsaKey),
}

#[derive(Clone)]
struct RsaKey {
    kid: String,
    pair: Arc<RsaKeyPair>,
    alg: ClientKeyAlg,
    /// The public modulus and exponent, base64url of their big-endian bytes.
    n: String,
    e: String,
}

impl From<SigningKey> for ClientKey {
    fn from(key: SigningKey) -> Self {
        Self(Kind::Ec(key))
    }
}

impl ClientKey {
    /// The key a PEM holds (P-256: PKCS#8 or SEC1; RSA: PKCS#8 or PKCS#1), named `kid`, or by
    /// its RFC 7638 thumbprint when `kid` is `None`. ES256 for an EC key, RS256 for RSA.
    pub fn from_pem(kid: Option<&str>, pem: &str) -> Result<Self, ClientKeyError> {
        let ec = match kid {
            Some(kid) => SigningKey::from_pem(kid, pem),
            None => SigningKey::from_pem_named_by_thumbprint(pem),
        };
        if let Ok(key) = ec {
            return Ok(Self(Kind::Ec(key)));
        }
        let pair = match PrivateKeyDer::from_pem_slice(pem.trim().as_bytes()) {
            Ok(PrivateKeyDer::Pkcs8(der)) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Pkcs1(der)) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            _ => return Err(ClientKeyError::NotAKey),
        }
        .map_err(|rejected| match rejected.to_string().as_str() {
            "TooSmall" => ClientKeyError::RsaTooSmall,
            "TooLarge" => ClientKeyError::RsaTooLarge,
            _ => ClientKeyError::NotAKey,
        })?;
        let public: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
        let mut key = RsaKey {
            kid: kid.unwrap_or_default().to_owned(),
            pair: Arc::new(pair),
            alg: ClientKeyAlg::Rs256,
            n: URL_SAFE_NO_PAD.encode(&public.n),
            e: URL_SAFE_NO_PAD.encode(&public.e),
        };
        if kid.is_none() {
            key.kid = rsa_thumbprint(&key.n, &key.e);
        }
        Ok(Self(Kind::Rsa(key)))
    }

    /// This key signing with `alg` instead of its type's default.
    pub fn with_alg(self, alg: ClientKeyAlg) -> Result<Self, ClientKeyError> {
        match (self.0, alg) {
            (Kind::Ec(key), ClientKeyAlg::Es256) => Ok(Self(Kind::Ec(key))),
            (Kind::Rsa(key), ClientKeyAlg::Rs256 | ClientKeyAlg::Ps256) => {
                Ok(Self(Kind::Rsa(RsaKey { alg, ..key })))
            }
            (Kind::Ec(_), _) => Err(ClientKeyError::AlgorithmMismatch {
                alg: alg.name(),
                kind: "EC",
            }),
            (Kind::Rsa(_), _) => Err(ClientKeyError::AlgorithmMismatch {
                alg: alg.name(),
                kind: "RSA",
            }),
        }
    }

    /// The key's id (`kid`).
    pub fn kid(&self) -> &str {
        match &self.0 {
            Kind::Ec(key) => key.kid(),
            Kind::Rsa(key) => &key.kid,
        }
    }

    /// The algorithm its assertions are signed with.
    pub fn alg(&self) -> ClientKeyAlg {
        match &self.0 {
            Kind::Ec(_) => ClientKeyAlg::Es256,
            Kind::Rsa(key) => key.alg,
        }
    }

    /// The RFC 7638 JWK thumbprint of the public key.
    pub fn thumbprint(&self) -> String {
        match &self.0 {
            Kind::Ec(key) => key.thumbprint(),
            Kind::Rsa(key) => rsa_thumbprint(&key.n, &key.e),
        }
    }

    /// The public key as a JWK (RFC 7517) for the client key set: EC `crv`, `x`, `y` or RSA
    /// `n`, `e`, with `kty`, `kid`, `alg`, `use`.
    pub fn public_jwk(&self) -> Value {
        match &self.0 {
            Kind::Ec(key) => key.public_jwk(),
            Kind::Rsa(key) => json!({
                "kty": "RSA",
                "n": key.n,
                "e": key.e,
                "kid": key.kid,
                "alg": key.alg.name(),
                "use": "sig",
            }),
        }
    }

    /// `claims` as a compact JWS (RFC 7515 §7.1) under this key: header `alg`, `typ` JWT and
    /// `kid`. An RSA signature ring cannot make (only a failing system random source, for
    /// PS256's salt) leaves the signature empty and is logged: the provider refuses the
    /// assertion as it would any bad one.
    pub fn sign_jwt(&self, claims: &Value) -> String {
        let key = match &self.0 {
            Kind::Ec(key) => return key.sign_jwt(claims),
            Kind::Rsa(key) => key,
        };
        let header = json!({ "alg": key.alg.name(), "typ": "JWT", "kid": key.kid });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let padding: &'static dyn signature::RsaEncoding = match key.alg {
            ClientKeyAlg::Ps256 => &signature::RSA_PSS_SHA256,
            _ => &signature::RSA_PKCS1_SHA256,
        };
        let mut signature = vec![0; key.pair.public().modulus_len()];
        if key
            .pair
            .sign(
                padding,
                &SystemRandom::new(),
                token.as_bytes(),
                &mut signature,
            )
            .is_err()
        {
            tracing::error!(kid = %key.kid, "could not sign a client assertion");
            signature.clear();
        }
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        token
    }
}

/// RFC 7638 §3.2 for an RSA key: SHA-256 over `{"e","kty","n"}` in that order, no whitespace.
fn rsa_thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientKey")
            .field("kid", &self.kid())
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Test-only keys (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`, the
    /// same key as PKCS#1 through `openssl rsa -traditional`, and a 1024-bit one).
    pub(crate) const RSA_2048: &str = include_str!("testdata/client-rsa-2048.pem");
    const RSA_2048_PKCS1: &str = include_str!("testdata/client-rsa-2048-pkcs1.pem");
    const RSA_1024: &str = include_str!("testdata/client-rsa-1024.pem");
    const EC: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+mCYmwTLJgU5m5JN
NaDUkDp0/3th4xOF2kWx6M9X4WyhRANCAASjGlhKDLkrxcGdhfNM8K2cabaUc9qi
4Pr80/AFU/A+dUDqWutJmxTwMwrXdJyfjuFBymB+6unS15fUIovnEPef
-----END PRIVATE KEY-----";

    fn part(token: &str, index: usize) -> Value {
        let segment = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    /// Whether `jwk` (RSA) verifies `token` under `alg` with ring.
    pub(crate) fn rsa_verifies(jwk: &Value, token: &str) -> bool {
        let decode = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        let public = signature::RsaPublicKeyComponents {
            n: decode("n"),
            e: decode("e"),
        };
        let algorithm = match jwk["alg"].as_str().unwrap() {
            "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
            "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
            other => panic!("{other}"),
        };
        let (input, sig) = token.rsplit_once('.').unwrap();
        public
            .verify(
                algorithm,
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(sig).unwrap(),
            )
            .is_ok()
    }

    #[test]
    fn an_rsa_key_signs_rs256_by_default_and_ps256_when_asked_verified_by_its_jwk() {
        let claims = json!({"iss": "vestibule"});
        let rs = ClientKey::from_pem(Some("r"), RSA_2048).unwrap();
        assert_eq!(rs.alg(), ClientKeyAlg::Rs256);
        let token = rs.sign_jwt(&claims);
        assert_eq!(
            part(&token, 0),
            json!({"alg": "RS256", "typ": "JWT", "kid": "r"})
        );
        assert_eq!(part(&token, 1), claims);
        assert!(rsa_verifies(&rs.public_jwk(), &token));

        let ps = rs.clone().with_alg(ClientKeyAlg::Ps256).unwrap();
        let token = ps.sign_jwt(&claims);
        assert_eq!(part(&token, 0)["alg"], "PS256");
        assert_eq!(ps.public_jwk()["alg"], "PS256");
        assert!(rsa_verifies(&ps.public_jwk(), &token));
        // The other padding does not verify: the header says what was signed.
        let mut as_rs = ps.public_jwk();
        as_rs["alg"] = json!("RS256");
        assert!(!rsa_verifies(&as_rs, &token));
    }

    #[test]
    fn the_rsa_jwk_carries_the_public_half_only_and_pkcs1_is_the_same_key() {
        let key = ClientKey::from_pem(Some("r"), RSA_2048).unwrap();
        let jwk = key.public_jwk();
        let mut members: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "e", "kid", "kty", "n", "use"], "{jwk}");
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(
            jwk["n"].as_str().unwrap().len(),
            342,
            "2048 bits, no leading zero"
        );
        let pkcs1 = ClientKey::from_pem(Some("r"), RSA_2048_PKCS1).unwrap();
        assert_eq!(pkcs1.public_jwk(), jwk);
        assert!(!format!("{key:?}").contains("pair"), "{key:?}");
    }

    #[test]
    fn an_rsa_key_without_an_id_is_named_by_its_rfc_7638_thumbprint() {
        let key = ClientKey::from_pem(None, RSA_2048).unwrap();
        let jwk = key.public_jwk();
        let canonical = serde_json::to_string(&json!({
            "e": jwk["e"], "kty": "RSA", "n": jwk["n"],
        }))
        .unwrap();
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        assert_eq!(key.kid(), expected);
        assert_eq!(key.thumbprint(), expected);
    }

    #[test]
    fn a_short_rsa_key_a_wrong_algorithm_and_garbage_are_refused() {
        assert_eq!(
            ClientKey::from_pem(Some("r"), RSA_1024).unwrap_err(),
            ClientKeyError::RsaTooSmall
        );
        assert!(
            ClientKeyError::RsaTooSmall
                .to_string()
                .contains("under 2048 bits")
        );
        assert_eq!(
            ClientKey::from_pem(Some("r"), "not a pem").unwrap_err(),
            ClientKeyError::NotAKey
        );
        let ec = ClientKey::from_pem(Some("e"), EC).unwrap();
        assert_eq!(ec.alg(), ClientKeyAlg::Es256);
        assert_eq!(
            ec.clone().with_alg(ClientKeyAlg::Ps256).unwrap_err(),
            ClientKeyError::AlgorithmMismatch {
                alg: "PS256",
                kind: "EC"
            }
        );
        assert!(ec.with_alg(ClientKeyAlg::Es256).is_ok());
        let rsa = ClientKey::from_pem(Some("r"), RSA_2048).unwrap();
        assert!(rsa.with_alg(ClientKeyAlg::Es256).is_err());
        assert_eq!(ClientKeyAlg::parse("PS256"), Some(ClientKeyAlg::Ps256));
        assert_eq!(ClientKeyAlg::parse("RS512"), None);
    }
}
