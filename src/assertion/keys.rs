//! Vestibule's own ES256 signing keys: read from a PEM (PKCS#8 or SEC1, P-256), or derived
//! from a 32-byte secret (the session key ring's purpose key), and published as public JWKs.
//!
//! The private scalar never leaves this module: not in `Debug`, not in an error, not in the
//! JWK (which carries `x` and `y` only).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The one JWS algorithm Vestibule signs with (RFC 7518 §3.4: ECDSA P-256 SHA-256).
pub const ALGORITHM: &str = "ES256";

/// A key a PEM could not provide.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not a PEM private key Vestibule can sign with.
    #[error(
        "is not a PEM-encoded P-256 private key (PKCS#8 \"BEGIN PRIVATE KEY\" or SEC1 \"BEGIN EC \
         PRIVATE KEY\"; e.g. openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256); \
         only ES256 is supported"
    )]
    NotAP256Key,
}

/// One signing key and the `kid` its signatures and its published JWK carry.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: p256::ecdsa::SigningKey,
}

impl SigningKey {
    /// The key a PEM holds (PKCS#8 or SEC1, curve P-256), named `kid`.
    pub fn from_pem(kid: &str, pem: &str) -> Result<Self, KeyError> {
        let secret = p256::SecretKey::from_pem(pem.trim()).map_err(|_| KeyError::NotAP256Key)?;
        Ok(Self {
            kid: kid.to_owned(),
            key: p256::ecdsa::SigningKey::from(&secret),
        })
    }

    /// The key a PEM holds, named by its RFC 7638 thumbprint (a single key configured
    /// without an id: the name changes exactly when the key does).
    pub fn from_pem_named_by_thumbprint(pem: &str) -> Result<Self, KeyError> {
        let mut key = Self::from_pem("", pem)?;
        key.kid = key.thumbprint();
        Ok(key)
    }

    /// The key derived from `seed` (32 secret bytes): the same seed always gives the same key,
    /// named by its RFC 7638 thumbprint. A seed that is not a valid scalar (below one in 2³²)
    /// is hashed again until it is.
    pub fn derived(seed: &[u8; 32]) -> Self {
        let mut candidate: [u8; 32] = *seed;
        let key = loop {
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&candidate) {
                break key;
            }
            candidate = Sha256::digest(candidate).into();
        };
        let mut derived = Self {
            kid: String::new(),
            key,
        };
        derived.kid = derived.thumbprint();
        derived
    }

    /// The key's id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key's affine coordinates, base64url: (`x`, `y`).
    fn coordinates(&self) -> (String, String) {
        let point = self.key.verifying_key().to_sec1_point(false);
        let encode = |coordinate: Option<&[u8]>| URL_SAFE_NO_PAD.encode(coordinate.unwrap_or(&[]));
        (
            encode(point.x().map(|x| x.as_slice())),
            encode(point.y().map(|y| y.as_slice())),
        )
    }

    /// The RFC 7638 JWK thumbprint of the public key: base64url of SHA-256 over the required
    /// members in lexicographic order, without whitespace.
    pub fn thumbprint(&self) -> String {
        let (x, y) = self.coordinates();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The public key as a JWK (RFC 7517) for a key set: `kty`, `crv`, `x`, `y`, `kid`,
    /// `alg`, `use`.
    pub fn public_jwk(&self) -> Value {
        let (x, y) = self.coordinates();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        })
    }

    /// The JWS signature of `signing_input` (RFC 7515 §5.1): ECDSA P-256 SHA-256, as the
    /// fixed 64 bytes `R ‖ S` RFC 7518 §3.4 asks for (not DER).
    pub fn sign(&self, signing_input: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.key.sign(signing_input);
        signature.to_bytes().to_vec()
    }

    /// `claims` as a compact JWS (RFC 7515 §7.1) under this key, header `alg` ES256, `typ`
    /// JWT and this key's `kid`: `base64url(header) . base64url(claims) . base64url(R ‖ S)`.
    pub fn sign_jwt(&self, claims: &Value) -> String {
        let header = json!({ "alg": ALGORITHM, "typ": "JWT", "kid": self.kid });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        token
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A P-256 key made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    pub(crate) const PKCS8_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+mCYmwTLJgU5m5JN
NaDUkDp0/3th4xOF2kWx6M9X4WyhRANCAASjGlhKDLkrxcGdhfNM8K2cabaUc9qi
4Pr80/AFU/A+dUDqWutJmxTwMwrXdJyfjuFBymB+6unS15fUIovnEPef
-----END PRIVATE KEY-----";

    #[test]
    fn a_pem_key_signs_and_publishes_its_public_half_only() {
        let key = SigningKey::from_pem("2026-12", PKCS8_PEM).unwrap();
        assert_eq!(key.kid(), "2026-12");
        let jwk = key.public_jwk();
        for member in ["kty", "crv", "x", "y", "kid", "alg", "use"] {
            assert!(jwk.get(member).is_some(), "{member} in {jwk}");
        }
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none(), "never the private scalar");
        assert_eq!(jwk["x"].as_str().unwrap().len(), 43);
        assert_eq!(key.sign(b"a.b").len(), 64);
        assert!(!format!("{key:?}").contains("key:"), "{key:?}");
    }

    #[test]
    fn an_rsa_or_malformed_pem_is_refused() {
        assert_eq!(
            SigningKey::from_pem("a", "not a pem").unwrap_err(),
            KeyError::NotAP256Key
        );
        let truncated = PKCS8_PEM.replacen("MIGH", "", 1);
        assert!(SigningKey::from_pem("a", &truncated).is_err());
    }

    #[test]
    fn a_derived_key_is_stable_and_named_by_its_thumbprint() {
        let one = SigningKey::derived(&[7; 32]);
        let again = SigningKey::derived(&[7; 32]);
        assert_eq!(one.kid(), again.kid());
        assert_eq!(one.public_jwk(), again.public_jwk());
        assert_ne!(one.kid(), SigningKey::derived(&[8; 32]).kid());
        assert_eq!(one.kid(), one.thumbprint());
        assert_eq!(one.kid().len(), 43, "base64url of SHA-256");
    }

    #[test]
    fn a_seed_that_is_no_scalar_still_gives_a_key() {
        // Zero and values at or above the group order are not scalars.
        let zero = SigningKey::derived(&[0; 32]);
        let above = SigningKey::derived(&[0xff; 32]);
        assert_ne!(zero.kid(), above.kid());
    }

    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        // RFC 7638 §3.1's procedure for an EC key: the required members in lexicographic
        // order, no whitespace, hashed with SHA-256; checked against the members it publishes.
        let key = SigningKey::from_pem("k", PKCS8_PEM).unwrap();
        let jwk = key.public_jwk();
        let canonical = serde_json::to_string(&json!({
            "crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"],
        }))
        .unwrap();
        assert!(canonical.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#));
        assert_eq!(
            key.thumbprint(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
    }
}
