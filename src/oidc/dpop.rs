//! DPoP (RFC 9449): a session's own key pair, the proofs it signs, and the server nonces
//! learnt per origin.
//!
//! One ES256 key pair per session, generated at login and sealed in the session record like the
//! tokens (the record keeps it as PKCS#8 bytes: [`DpopKey::to_pkcs8`]); a proof is a JWT whose
//! header carries the public key and whose claims bind one request (`htm`, `htu`, `iat`, `jti`,
//! and `ath` for a call that carries an access token, `nonce` when the server asked for one).
//! Signing uses ring's P-256 (already in the tree for TLS): a proof is signed on every proxied
//! call to a DPoP upstream, and ring signs about four times faster than the pure-Rust curve.
//!
//! Owns no I/O and never logs: the private key leaves only through [`DpopKey::to_pkcs8`], for
//! the sealed record, and is not in `Debug`.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lru::LruCache;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The one algorithm Vestibule signs proofs with (RFC 7518 §3.4).
pub const ALGORITHM: &str = "ES256";

/// The header a DPoP-bound request carries its proof in (RFC 9449 §4.1).
pub const PROOF_HEADER: &str = "DPoP";

/// The header a server sends a fresh nonce in (RFC 9449 §8).
pub const NONCE_HEADER: &str = "DPoP-Nonce";

/// The error a server answers when a proof must carry its nonce (RFC 9449 §8, §9).
pub const USE_NONCE_ERROR: &str = "use_dpop_nonce";

/// The longest nonce kept: a server's nonce is a short opaque value; a longer one is refused so
/// a hostile server cannot grow every proof.
const MAX_NONCE_LEN: usize = 512;

/// `oidc.dpop`: whether the session's tokens are bound to a key of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// Never (the default: upstreams that only know `Bearer` keep working after an upgrade).
    #[default]
    Off,
    /// When discovery lists `dpop_signing_alg_values_supported` with ES256; a provider that
    /// answers a Bearer token anyway is accepted and the session's tokens stay unbound.
    Auto,
    /// Always; a provider that does not offer DPoP, or answers a Bearer token, fails the login.
    Required,
}

impl DpopMode {
    /// The key word, as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::Required => "required",
        }
    }

    /// Whether logins use DPoP with a provider whose discovery lists `algorithms`
    /// (`dpop_signing_alg_values_supported`, `None` when absent).
    pub fn applies(self, algorithms: Option<&[String]>) -> bool {
        match self {
            Self::Off => false,
            Self::Required => true,
            Self::Auto => algorithms.is_some_and(|listed| listed.iter().any(|a| a == ALGORITHM)),
        }
    }
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DpopError {
    /// The operating system's random source failed (key generation, proof `jti`, signing).
    #[error("the random source failed")]
    Random,
    /// Stored bytes are not a P-256 PKCS#8 key (a corrupt or foreign record).
    #[error("the stored DPoP key is not a P-256 key")]
    NotAKey,
}

/// One session's DPoP key pair. Not `Clone`: one session, one key, read from its record.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    /// The proof's protected header, base64url: the same for every proof of this key.
    header: String,
    /// The RFC 7638 thumbprint of the public key (`cnf.jkt`, `dpop_jkt`).
    thumbprint: String,
}

impl DpopKey {
    /// A fresh key pair, for a new login.
    pub fn generate() -> Result<Self, DpopError> {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| DpopError::Random)?;
        Self::from_pkcs8(document.as_ref())
    }

    /// The key pair a session record keeps (PKCS#8, as [`DpopKey::to_pkcs8`] gave it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, DpopError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| DpopError::NotAKey)?;
        let (x, y) = coordinates(pair.public_key().as_ref()).ok_or(DpopError::NotAKey)?;
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"{ALGORITHM}","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#
        );
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        Ok(Self {
            pair,
            pkcs8: pkcs8.to_vec(),
            header: URL_SAFE_NO_PAD.encode(header),
            thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        })
    }

    /// The private key as PKCS#8 bytes: only for sealing it in the session record.
    pub fn to_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The RFC 7638 JWK thumbprint of the public key: what a bound token's `cnf.jkt` and the
    /// authorization request's `dpop_jkt` name.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof for one request: `method` (`htm`) to `target` (`htu`: its query and fragment are
    /// left out, RFC 9449 §4.2), issued at `now` (unix seconds), with `ath` when the request
    /// carries `access_token` and `nonce` when the server asked for one.
    pub fn proof(
        &self,
        method: &str,
        target: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<String, DpopError> {
        let claims = ProofClaims {
            jti: &crate::random::url_safe_id(),
            htm: method,
            htu: target_without_query(target),
            iat: now,
            ath: access_token.map(access_token_hash),
            nonce,
        };
        // Serialising plain strings and a number cannot fail.
        let claims = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| DpopError::Random)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DpopKey")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// A proof's claims (RFC 9449 §4.2), in this order on the wire.
#[derive(Serialize)]
struct ProofClaims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

/// `ath`: base64url of the SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// The request URI without its query and fragment (`htu`).
fn target_without_query(target: &str) -> &str {
    target.find(['?', '#']).map_or(target, |cut| &target[..cut])
}

/// The affine coordinates of an uncompressed SEC1 point (`04 ‖ x ‖ y`), base64url.
fn coordinates(point: &[u8]) -> Option<(String, String)> {
    match point {
        [4, rest @ ..] if rest.len() == 64 => Some((
            URL_SAFE_NO_PAD.encode(&rest[..32]),
            URL_SAFE_NO_PAD.encode(&rest[32..]),
        )),
        _ => None,
    }
}

/// The `scheme://host[:port]` an absolute URL starts with: nonces are kept per origin (a
/// provider's token endpoint, an upstream API).
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| after_scheme + at);
    &url[..end]
}

/// Whether `nonce` may be put in a proof: 1 to 512 visible ASCII characters (RFC 9449 §8's
/// `NQCHAR`, which excludes `"` and `\`).
pub fn is_acceptable_nonce(nonce: &str) -> bool {
    (1..=MAX_NONCE_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|byte| matches!(byte, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// The nonces servers handed out, one per origin, kept in this instance only: a server's
/// nonce is learnt from its first challenge (one retried request per instance and nonce), so
/// the hot path never waits for Redis. Bounded: the least recently used origin is forgotten.
pub struct DpopNonces {
    by_origin: Mutex<LruCache<String, Arc<str>>>,
}

impl DpopNonces {
    /// Room for `capacity` origins.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            by_origin: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The latest nonce `origin` handed out, if any.
    pub fn get(&self, origin: &str) -> Option<Arc<str>> {
        self.lock().get(origin).cloned()
    }

    /// Keeps `nonce` for `origin` (from a `DPoP-Nonce` header); an unacceptable one is ignored.
    pub fn remember(&self, origin: &str, nonce: &str) {
        if !is_acceptable_nonce(nonce) {
            return;
        }
        let mut cache = self.lock();
        if cache.get(origin).is_some_and(|known| &**known == nonce) {
            return;
        }
        cache.put(origin.to_owned(), Arc::from(nonce));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<str>>> {
        self.by_origin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for DpopNonces {
    fn default() -> Self {
        Self::new(NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use serde_json::Value;

    fn decode(segment: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    /// Verifies a proof as a resource server would: with the key its own header carries.
    fn verify(proof: &str) -> (Value, Value) {
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        let jwk = &header["jwk"];
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the proof verifies with the key in its header");
        (header, decode(parts[1]))
    }

    #[test]
    fn a_proof_binds_the_request_and_verifies_with_the_public_key_it_carries() {
        let key = DpopKey::generate().unwrap();
        let proof = key
            .proof(
                "POST",
                "https://api.example/orders/7?x=1#f",
                Some("token-1"),
                Some("n-1"),
                1_700_000_000,
            )
            .unwrap();
        let (header, claims) = verify(&proof);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["kty"], "EC");
        assert_eq!(header["jwk"]["crv"], "P-256");
        assert!(header["jwk"].get("d").is_none(), "no private part");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://api.example/orders/7");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["nonce"], "n-1");
        // RFC 9449 §4.2's own example: ath of "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU".
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
        assert_eq!(claims["ath"], access_token_hash("token-1"));
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        let other = verify(&key.proof("POST", "https://a/b", None, None, 1).unwrap()).1;
        assert_ne!(other["jti"], claims["jti"], "every proof has its own jti");
        assert!(other.get("ath").is_none() && other.get("nonce").is_none());
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s_over_the_published_key_and_survives_the_record() {
        let key = DpopKey::generate().unwrap();
        let (header, _) = verify(&key.proof("GET", "https://a/", None, None, 1).unwrap());
        let jwk = &header["jwk"];
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(
            key.thumbprint(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
        let restored = DpopKey::from_pkcs8(key.to_pkcs8()).unwrap();
        assert_eq!(restored.thumbprint(), key.thumbprint());
        assert_ne!(DpopKey::generate().unwrap().thumbprint(), key.thumbprint());
        assert_eq!(DpopKey::from_pkcs8(b"junk").err(), Some(DpopError::NotAKey));
        assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(key.to_pkcs8())));
    }

    #[test]
    fn the_mode_applies_where_the_provider_offers_es256_unless_off_or_required() {
        let es256 = vec!["RS256".to_owned(), "ES256".to_owned()];
        let rs256 = vec!["RS256".to_owned()];
        assert!(!DpopMode::Off.applies(Some(&es256)));
        assert!(DpopMode::Auto.applies(Some(&es256)));
        assert!(!DpopMode::Auto.applies(Some(&rs256)));
        assert!(!DpopMode::Auto.applies(None));
        assert!(DpopMode::Required.applies(None));
        assert_eq!(DpopMode::default(), DpopMode::Off);
    }

    #[test]
    fn nonces_are_kept_per_origin_and_only_when_well_formed() {
        assert_eq!(
            origin_of("https://op.example:8443/token?x"),
            "https://op.example:8443"
        );
        assert_eq!(origin_of("http://127.0.0.1:9/"), "http://127.0.0.1:9");
        assert_eq!(origin_of("http://h"), "http://h");
        let nonces = DpopNonces::default();
        nonces.remember("https://a", "n-1");
        nonces.remember("https://b", "bad\"nonce");
        nonces.remember("https://b", "");
        assert_eq!(nonces.get("https://a").as_deref(), Some("n-1"));
        assert_eq!(nonces.get("https://b"), None);
        nonces.remember("https://a", "n-2");
        assert_eq!(nonces.get("https://a").as_deref(), Some("n-2"));
        assert!(!is_acceptable_nonce(&"n".repeat(513)));
        assert!(is_acceptable_nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v"));
    }
}
