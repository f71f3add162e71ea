//! How a route's token rides on the request to its upstream: `Authorization: Bearer` (RFC
//! 6750 §2.1), or, for a DPoP-bound token, `Authorization: DPoP` with a fresh `DPoP` proof of
//! the session's key for this very request (RFC 9449 §7.1: `htm` its method, `htu` the URL
//! Vestibule sends it to without the query, `ath` the token's hash, and the upstream's nonce
//! when it handed one out). A bound token is never sent as `Bearer`: that is the downgrade DPoP
//! exists to stop.
//!
//! Never logs: the token, the proof and the key are secrets of the session.

use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};

use super::ProxyError;
use super::bearer_challenge::Scheme;
use crate::oidc::dpop::{DpopKey, DpopNonces, PROOF_HEADER, origin_of};
use crate::refresh::UpstreamToken;

/// The token a request carries, and how.
pub enum Authorization {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: DPoP <token>` with a proof signed by the key it is bound to.
    Dpop {
        /// The bound access token.
        token: String,
        /// The session's key (parsed once per call, reused for a retry's new proof; boxed: a
        /// parsed key is large beside a token).
        key: Box<DpopKey>,
    },
}

impl Authorization {
    /// The way `token` is sent: with proofs of its key when it is bound.
    pub fn of(token: UpstreamToken) -> Result<Self, ProxyError> {
        Ok(match token.dpop_key {
            None => Self::Bearer(token.token),
            Some(stored) => Self::Dpop {
                token: token.token,
                key: Box::new(stored.key().map_err(ProxyError::Proof)?),
            },
        })
    }

    /// The access token, whichever the scheme.
    pub fn token(&self) -> &str {
        match self {
            Self::Bearer(token) | Self::Dpop { token, .. } => token,
        }
    }

    /// The scheme it is sent with (the upstream's challenges are read under it).
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Bearer(_) => Scheme::Bearer,
            Self::Dpop { .. } => Scheme::Dpop,
        }
    }

    /// Puts it on the request of `method` to `uri` (the URL Vestibule sends it to): replaces
    /// any `Authorization` and `DPoP` there, and signs a new proof for a bound token, with the
    /// nonce `nonces` hold for the upstream's origin, issued at `now` (unix seconds).
    pub fn apply(
        &self,
        headers: &mut HeaderMap,
        method: &Method,
        uri: &Uri,
        nonces: &DpopNonces,
        now: u64,
    ) -> Result<(), ProxyError> {
        headers.remove(PROOF_HEADER);
        let (scheme, token) = match self {
            Self::Bearer(token) => ("Bearer", token),
            Self::Dpop { token, key } => {
                let target = uri.to_string();
                let nonce = nonces.get(origin_of(&target));
                let proof = key
                    .proof(method.as_str(), &target, Some(token), nonce.as_deref(), now)
                    .map_err(ProxyError::Proof)?;
                // Base64url and dots: always a valid header value.
                let mut proof =
                    HeaderValue::try_from(proof).map_err(|_| ProxyError::InvalidCredential)?;
                proof.set_sensitive(true);
                headers.insert(PROOF_HEADER, proof);
                ("DPoP", token)
            }
        };
        let mut value = HeaderValue::try_from(format!("{scheme} {token}"))
            .map_err(|_| ProxyError::InvalidCredential)?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::dpop::access_token_hash;
    use crate::session::dpop_key::StoredDpopKey;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    fn claims(proof: &str) -> Value {
        let payload = proof.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    fn bound(token: &str) -> Authorization {
        Authorization::of(UpstreamToken {
            token: token.into(),
            dpop_key: Some(StoredDpopKey::new(&DpopKey::generate().unwrap())),
        })
        .unwrap()
    }

    #[test]
    fn a_bound_token_goes_as_dpop_with_a_proof_of_this_request_never_as_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert(PROOF_HEADER, HeaderValue::from_static("forged"));
        let uri: Uri = "http://127.0.0.1:9/v1/orders?page=2".parse().unwrap();
        let nonces = DpopNonces::default();
        let dpop = bound("at-1");
        assert_eq!(dpop.scheme(), Scheme::Dpop);
        dpop.apply(&mut headers, &Method::PUT, &uri, &nonces, 1000)
            .unwrap();
        assert_eq!(headers.get(header::AUTHORIZATION).unwrap(), "DPoP at-1");
        let first = headers
            .get(PROOF_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let seen = claims(&first);
        assert_eq!(seen["htm"], "PUT");
        assert_eq!(seen["htu"], "http://127.0.0.1:9/v1/orders");
        assert_eq!(seen["iat"], 1000);
        assert_eq!(seen["ath"], access_token_hash("at-1"));
        assert!(seen.get("nonce").is_none());

        // Once the upstream's origin handed out a nonce, the next proof (a new one) has it.
        nonces.remember("http://127.0.0.1:9", "n-1");
        dpop.apply(&mut headers, &Method::PUT, &uri, &nonces, 1001)
            .unwrap();
        let second = headers.get(PROOF_HEADER).unwrap().to_str().unwrap();
        assert_eq!(claims(second)["nonce"], "n-1");
        assert_ne!(claims(second)["jti"], seen["jti"]);
        assert_eq!(headers.get_all(PROOF_HEADER).iter().count(), 1);
    }

    #[test]
    fn a_bearer_token_takes_any_proof_off_the_request() {
        let mut headers = HeaderMap::new();
        headers.insert(PROOF_HEADER, HeaderValue::from_static("stale"));
        let bearer = Authorization::of(UpstreamToken {
            token: "at".into(),
            dpop_key: None,
        })
        .unwrap();
        assert_eq!(bearer.scheme(), Scheme::Bearer);
        let uri: Uri = "http://up/x".parse().unwrap();
        bearer
            .apply(&mut headers, &Method::GET, &uri, &DpopNonces::default(), 1)
            .unwrap();
        assert_eq!(headers.get(header::AUTHORIZATION).unwrap(), "Bearer at");
        assert!(headers.get(PROOF_HEADER).is_none());
    }
}
