//! Compact JWS (RFC 7515) the provider signs outside openidconnect's token flows: back-channel
//! logout tokens ([`super::logout_token`]) and aggregated or distributed claims
//! ([`super::claim_sources`]). This file splits a token, reads its header and checks a
//! signature against the provider's keys; what the claims must say is each caller's.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyUse, JwsSigningAlgorithm};
use serde_json::{Map, Value};

/// Why a token is not a usable compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JwsError {
    /// Not three base64url parts, a header or payload that is not a JSON object, too long.
    Malformed,
    /// No `alg`, `none`, or one openidconnect does not verify.
    Algorithm,
}

/// A compact JWS split into its parts, its header read.
pub(super) struct CompactJws<'t> {
    /// The protected header.
    pub(super) header: Map<String, Value>,
    /// The header's `alg`: one openidconnect verifies, never `none`.
    pub(super) alg: CoreJwsSigningAlgorithm,
    /// What the signature covers: `header.payload`, as sent.
    pub(super) signing_input: &'t str,
    payload_b64: &'t str,
    signature_b64: &'t str,
}

impl<'t> CompactJws<'t> {
    /// `token` (at most `max_len` bytes) as three parts with a JSON-object header naming a
    /// signing algorithm. Five parts would be a JWE: no encryption is registered, so none is
    /// expected.
    pub(super) fn parse(token: &'t str, max_len: usize) -> Result<Self, JwsError> {
        if token.len() > max_len {
            return Err(JwsError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let header = json_object(header_b64)?;
        let alg = header.get("alg").cloned().ok_or(JwsError::Algorithm)?;
        let alg = match serde_json::from_value::<CoreJwsSigningAlgorithm>(alg) {
            Ok(CoreJwsSigningAlgorithm::None) | Err(_) => return Err(JwsError::Algorithm),
            Ok(alg) => alg,
        };
        Ok(Self {
            header,
            alg,
            signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
            payload_b64,
            signature_b64,
        })
    }

    /// The header's `kid`, if it names one.
    pub(super) fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// Whether the header names critical extensions: none is understood here (RFC 7515
    /// §4.1.11), so such a token is refused.
    pub(super) fn has_critical_extensions(&self) -> bool {
        self.header.contains_key("crit")
    }

    /// The signature's bytes.
    pub(super) fn signature(&self) -> Result<Vec<u8>, JwsError> {
        URL_SAFE_NO_PAD
            .decode(self.signature_b64)
            .map_err(|_| JwsError::Malformed)
    }

    /// The payload, a JSON object (read only once the signature verified).
    pub(super) fn payload(&self) -> Result<Map<String, Value>, JwsError> {
        json_object(self.payload_b64)
    }
}

/// A base64url segment holding a JSON object.
fn json_object(segment: &str) -> Result<Map<String, Value>, JwsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwsError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwsError::Malformed),
    }
}

/// Whether a key of the provider's `jwks` that fits `kid` (when given) and the asymmetric
/// `alg` verifies `signature` over `signing_input`.
pub(super) fn signed_by_provider_keys(
    jwks: &CoreJsonWebKeySet,
    alg: &CoreJwsSigningAlgorithm,
    kid: Option<&str>,
    signing_input: &str,
    signature: &[u8],
) -> bool {
    jwks.keys()
        .iter()
        .filter(|key| kid.is_none_or(|kid| key.key_id().map(|id| id.as_str()) == Some(kid)))
        .filter(|key| fits(key, alg))
        .any(|key| {
            key.verify_signature(alg, signing_input.as_bytes(), signature)
                .is_ok()
        })
}

/// Whether `key` may verify a signature under `alg`: a signing key (or one of no stated use)
/// of the algorithm's key type, naming that algorithm or none.
fn fits(key: &CoreJsonWebKey, alg: &CoreJwsSigningAlgorithm) -> bool {
    if key
        .key_use()
        .is_some_and(|key_use| !key_use.allows_signature())
    {
        return false;
    }
    if alg.key_type().as_ref() != Some(key.key_type()) {
        return false;
    }
    match key.signing_alg() {
        JsonWebKeyAlgorithm::Unspecified => true,
        JsonWebKeyAlgorithm::Algorithm(key_alg) => key_alg == alg,
        JsonWebKeyAlgorithm::Unsupported => false,
    }
}
