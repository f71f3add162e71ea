//! ID-token validation (OIDC Core §3.1.3.7): signature, `iss`, `aud`, `azp`, `exp`, `nonce` and
//! `at_hash`, with one re-discovery when the signing key is unknown (key rotation); and reading
//! the claims of a JWT that was verified.
//!
//! An ID token that fails here is never stored. (Back-channel logout tokens, when they come,
//! get their own file beside this one: same JOSE stack, different claims.)

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreIdToken, CoreJsonWebKey, CoreJwsSigningAlgorithm};
use openidconnect::{AccessToken, AccessTokenHash, Nonce};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::discovery::{Client, Discovered};
use super::issuer::IssuerRule;
use super::signing_algs;
use super::{OidcError, Provider};

/// Why an ID token did not verify.
enum VerifyFailure {
    /// No key, several candidate keys, or a signature that does not verify with the known keys.
    Signature(String),
    /// Anything else: a claim, the `at_hash`, the payload.
    Invalid(String),
}

impl VerifyFailure {
    fn into_error(self) -> OidcError {
        match self {
            VerifyFailure::Signature(reason) => {
                OidcError::Invalid(format!("ID token signature: {reason}"))
            }
            VerifyFailure::Invalid(reason) => OidcError::Invalid(reason),
        }
    }
}

impl Provider {
    /// Verifies an ID token; on a signature failure, re-fetches the JWKS once (key rotation).
    pub(super) async fn verify_id_token<N>(
        &self,
        discovered: Arc<Discovered>,
        id_token: &CoreIdToken,
        access_token: &AccessToken,
        nonce_check: N,
    ) -> Result<Map<String, Value>, OidcError>
    where
        N: Fn(Option<&Nonce>) -> Result<(), String> + Clone,
    {
        let secret = self
            .settings
            .client_secret
            .as_ref()
            .map(ExposeSecret::expose_secret);
        let client_id = &self.settings.client_id;
        let configured = self.settings.id_token_alg.as_ref().map(|alg| &alg.0);
        let verify = |discovered: &Discovered| {
            verify_with(
                &discovered.client,
                Expected {
                    client_id,
                    client_secret: secret,
                    alg: configured,
                    issuers: self.issuer_rule(Some(discovered)),
                },
                id_token,
                access_token,
                nonce_check.clone(),
            )
        };
        match verify(&discovered) {
            Err(VerifyFailure::Signature(_)) => {
                // New kid, or a rotated key published under the old kid or none: fetch again.
                let fresh = self.rediscover(Some(&discovered)).await?;
                verify(&fresh).map_err(VerifyFailure::into_error)
            }
            other => other.map_err(VerifyFailure::into_error),
        }
    }
}

/// A nonce check that accepts exactly `expected` (compared in constant time).
pub(super) fn nonce_equal_to(
    expected: &str,
) -> impl Fn(Option<&Nonce>) -> Result<(), String> + Clone {
    let expected = expected.to_owned();
    move |found: Option<&Nonce>| match found {
        Some(found) if found.secret().len() == expected.len() => {
            use subtle::ConstantTimeEq;
            if bool::from(found.secret().as_bytes().ct_eq(expected.as_bytes())) {
                Ok(())
            } else {
                Err("nonce does not match".to_owned())
            }
        }
        _ => Err("nonce missing or wrong".to_owned()),
    }
}

/// What an ID token is checked against besides the discovered client.
#[derive(Clone, Copy)]
struct Expected<'a> {
    /// Our client id (`azp`).
    client_id: &'a str,
    /// Our client secret (the key of HS-signed tokens, for `at_hash`); `None`: no HS token
    /// verifies (`private_key_jwt` clients have no secret).
    client_secret: Option<&'a str>,
    /// `oidc.id_token_signed_response_alg`: the only algorithm accepted when set.
    alg: Option<&'a CoreJwsSigningAlgorithm>,
    /// Which `iss` values are the provider's (the library's exact match cannot take aliases
    /// or a tenant template, so it is switched off and this rule decides).
    issuers: IssuerRule<'a>,
}

/// Checks the ID token (OIDC Core §3.1.3.7: algorithm, signature, `iss`, `aud`, `azp`, `exp`,
/// `nonce`) and its `at_hash`, returning the raw claims of the verified token.
fn verify_with<N>(
    client: &Client,
    expected: Expected<'_>,
    id_token: &CoreIdToken,
    access_token: &AccessToken,
    nonce_check: N,
) -> Result<Map<String, Value>, VerifyFailure>
where
    N: Fn(Option<&Nonce>) -> Result<(), String>,
{
    use openidconnect::{ClaimsVerificationError, JsonWebKey, JwsSigningAlgorithm};
    let Expected {
        client_id,
        client_secret,
        alg: configured,
        issuers,
    } = expected;
    let mut verifier = client.id_token_verifier().require_issuer_match(false);
    if let Some(configured) = configured {
        // §3.1.3.7 step 7: the algorithm registered as id_token_signed_response_alg. Refused
        // as invalid, not as a signature failure: no new key would make it acceptable.
        let alg = id_token
            .signing_alg()
            .map_err(|error| VerifyFailure::Invalid(format!("ID token alg: {error}")))?;
        if alg != configured {
            return Err(VerifyFailure::Invalid(format!(
                "ID token signed with {}, not {} (oidc.id_token_signed_response_alg)",
                signing_algs::name(alg),
                signing_algs::name(configured)
            )));
        }
        verifier = verifier.set_allowed_algs([configured.clone()]);
    }
    check_mac_length(id_token)?;
    let claims = id_token
        .claims(&verifier, |nonce: Option<&Nonce>| nonce_check(nonce))
        .map_err(|error| match error {
            ClaimsVerificationError::SignatureVerification(reason) => {
                VerifyFailure::Signature(reason.to_string())
            }
            other => VerifyFailure::Invalid(format!("ID token: {other}")),
        })?;
    if claims
        .authorized_party()
        .is_some_and(|azp| azp.as_str() != client_id)
    {
        return Err(VerifyFailure::Invalid(
            "ID token azp is another client".into(),
        ));
    }
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token
            .signing_alg()
            .map_err(|error| VerifyFailure::Invalid(format!("ID token alg: {error}")))?;
        let shared_key;
        let key = if alg.uses_shared_secret() {
            // HS256/384/512 are keyed with the client secret, which is not in the JWKS.
            let client_secret = client_secret.ok_or_else(|| {
                VerifyFailure::Invalid("ID token is HS-signed and there is no client secret".into())
            })?;
            shared_key = CoreJsonWebKey::new_symmetric(client_secret.as_bytes().to_vec());
            &shared_key
        } else {
            id_token
                .signing_key(&verifier)
                .map_err(|error| VerifyFailure::Invalid(format!("ID token key: {error}")))?
        };
        let actual = AccessTokenHash::from_token(access_token, alg, key)
            .map_err(|error| VerifyFailure::Invalid(format!("at_hash: {error}")))?;
        if actual != *expected {
            return Err(VerifyFailure::Invalid(
                "at_hash does not match the access token".into(),
            ));
        }
    }
    let payload = jwt_payload(&id_token.to_string())
        .ok_or_else(|| VerifyFailure::Invalid("ID token payload is not a JSON object".into()))?;
    issuers
        .accept(&payload)
        .map_err(|why| VerifyFailure::Invalid(format!("ID token issuer: {why}")))?;
    Ok(payload)
}

/// HMAC signatures of the wrong length make the underlying crypto panic; refuse them first.
fn check_mac_length(id_token: &CoreIdToken) -> Result<(), VerifyFailure> {
    use openidconnect::core::CoreJwsSigningAlgorithm as Alg;
    let expected = match id_token.signing_alg() {
        Ok(Alg::HmacSha256) => 32,
        Ok(Alg::HmacSha384) => 48,
        Ok(Alg::HmacSha512) => 64,
        _ => return Ok(()),
    };
    let compact = id_token.to_string();
    let signature = compact.rsplit('.').next().unwrap_or_default();
    match URL_SAFE_NO_PAD.decode(signature) {
        Ok(bytes) if bytes.len() == expected => Ok(()),
        _ => Err(VerifyFailure::Signature(
            "HMAC signature has the wrong length".into(),
        )),
    }
}

/// The `sub` of verified claims; an ID token without one is invalid.
pub(super) fn subject(claims: &Map<String, Value>) -> Result<String, OidcError> {
    claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| !sub.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| OidcError::Invalid("ID token has no sub".into()))
}

/// The payload of a compact JWT as a JSON object (no signature check: callers pass tokens
/// that were verified, or only read an expiry hint).
pub fn jwt_payload(compact: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&payload_bytes(compact)?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The `iss` a compact JWT names, read as [`jwt_payload`] reads it (a session's ID token, which
/// was verified when it was stored).
pub fn jwt_issuer(compact: &str) -> Option<String> {
    /// Only the claim wanted: the others are skipped, not collected.
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    serde_json::from_slice::<Issuer>(&payload_bytes(compact)?)
        .ok()
        .map(|claims| claims.iss)
}

/// The decoded payload segment of a compact JWT.
fn payload_bytes(compact: &str) -> Option<Vec<u8>> {
    let payload = compact.split('.').nth(1)?;
    URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;
    use crate::oidc::metadata::ProviderMetadata;
    use hmac::{Hmac, Mac};
    use openidconnect::{ClientId, ClientSecret};
    use sha2::{Digest, Sha256};

    const ISSUER: &str = "https://op.example";
    const SECRET: &str = "a-client-secret-of-thirty-two-bytes!";

    /// A client for an HS256 provider: ID tokens are keyed with the client secret, so tests can
    /// mint them without a network or key pair.
    fn hs256_client() -> Client {
        let metadata: ProviderMetadata = serde_json::from_value(serde_json::json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["HS256"],
        }))
        .unwrap();
        let token_uri = metadata.token_endpoint().cloned().unwrap();
        openidconnect::Client::from_provider_metadata(
            metadata,
            ClientId::new("vestibule".into()),
            Some(ClientSecret::new(SECRET.into())),
        )
        .set_token_uri(token_uri)
    }

    fn mint(claims: serde_json::Value) -> CoreIdToken {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        serde_json::from_value(serde_json::Value::String(format!(
            "{signing_input}.{signature}"
        )))
        .unwrap()
    }

    fn at_hash(access_token: &str) -> String {
        URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16])
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let now = unix_now();
        let mut base = serde_json::json!({
            "iss": ISSUER, "aud": "vestibule", "sub": "alice", "nonce": "n-1",
            "iat": now, "exp": now + 300,
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    }

    /// Verifies as a login would: the nonce must be `n-1`.
    fn check(token: &CoreIdToken, access: &str) -> Result<Map<String, Value>, VerifyFailure> {
        check_configured(token, access, None)
    }

    /// Like [`check`], with `oidc.id_token_signed_response_alg` set to `alg`.
    fn check_configured(
        token: &CoreIdToken,
        access: &str,
        alg: Option<&CoreJwsSigningAlgorithm>,
    ) -> Result<Map<String, Value>, VerifyFailure> {
        check_issued(
            token,
            access,
            alg,
            IssuerRule {
                issuer: ISSUER,
                aliases: &[],
                allowed_tenants: &[],
                template: None,
            },
        )
    }

    /// Like [`check_configured`], under the issuer rule `issuers`.
    fn check_issued(
        token: &CoreIdToken,
        access: &str,
        alg: Option<&CoreJwsSigningAlgorithm>,
        issuers: IssuerRule<'_>,
    ) -> Result<Map<String, Value>, VerifyFailure> {
        let expected = Expected {
            client_id: "vestibule",
            client_secret: Some(SECRET),
            alg,
            issuers,
        };
        verify_with(
            &hs256_client(),
            expected,
            token,
            &AccessToken::new(access.into()),
            nonce_equal_to("n-1"),
        )
    }

    #[test]
    fn a_configured_algorithm_is_the_only_one_accepted() {
        let token = mint(claims(serde_json::json!({})));
        assert!(
            check_configured(&token, "at-1", Some(&CoreJwsSigningAlgorithm::HmacSha256)).is_ok()
        );
        // The provider supports HS256, but this client registered RS256: refused as invalid
        // (no re-discovery could change that), not as a signature failure.
        assert!(matches!(
            check_configured(
                &token,
                "at-1",
                Some(&CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256)
            ),
            Err(VerifyFailure::Invalid(reason)) if reason.contains("signed with HS256, not RS256")
        ));
    }

    #[test]
    fn the_issuer_rule_decides_iss_aliases_and_tenants_included() {
        use crate::oidc::issuer::IssuerTemplate;
        let aliases = vec!["https://alias.example".to_owned()];
        let tenants = vec!["t-1".to_owned()];
        let template = IssuerTemplate::parse("https://op.example/{tenantid}/v2.0").unwrap();
        let rule = IssuerRule {
            issuer: ISSUER,
            aliases: &aliases,
            allowed_tenants: &tenants,
            template: Some(&template),
        };
        let verdict = |extra: serde_json::Value, rule: IssuerRule<'_>| {
            check_issued(&mint(claims(extra)), "at-1", None, rule)
        };
        for accepted in [
            serde_json::json!({}),
            serde_json::json!({ "iss": "https://alias.example" }),
            serde_json::json!({ "iss": "https://op.example/t-1/v2.0", "tid": "t-1" }),
        ] {
            assert!(verdict(accepted.clone(), rule).is_ok(), "{accepted}");
        }
        for refused in [
            serde_json::json!({ "iss": "https://op.example/t-2/v2.0", "tid": "t-2" }),
            serde_json::json!({ "iss": "https://op.example/t-1/v2.0" }),
            serde_json::json!({ "iss": "https://op.example/t-1/v2.0", "tid": "t-2" }),
        ] {
            assert!(
                matches!(
                    verdict(refused.clone(), rule),
                    Err(VerifyFailure::Invalid(reason)) if reason.starts_with("ID token issuer")
                ),
                "{refused}"
            );
        }
        let without_aliases = IssuerRule {
            aliases: &[],
            ..rule
        };
        assert!(
            verdict(
                serde_json::json!({ "iss": "https://alias.example" }),
                without_aliases
            )
            .is_err()
        );
    }

    #[test]
    fn valid_id_token_with_at_hash_is_accepted() {
        let token = mint(claims(
            serde_json::json!({ "at_hash": at_hash("at-1"), "email": "a@x" }),
        ));
        let verified = check(&token, "at-1").ok().unwrap();
        assert_eq!(verified["email"], "a@x");
        assert_eq!(subject(&verified).unwrap(), "alice");
    }

    #[test]
    fn id_token_validation_rejects_each_broken_claim() {
        let cases = [
            (
                "at_hash of another token",
                claims(serde_json::json!({ "at_hash": at_hash("other") })),
            ),
            (
                "wrong issuer",
                claims(serde_json::json!({ "iss": "https://evil.example" })),
            ),
            (
                "wrong audience",
                claims(serde_json::json!({ "aud": "someone-else" })),
            ),
            (
                "untrusted extra audience",
                claims(serde_json::json!({ "aud": ["vestibule", "other"], "azp": "vestibule" })),
            ),
            (
                "azp of another client",
                claims(serde_json::json!({ "azp": "other" })),
            ),
            (
                "expired",
                claims(serde_json::json!({ "exp": unix_now() - 600 })),
            ),
            ("wrong nonce", claims(serde_json::json!({ "nonce": "n-2" }))),
            ("no nonce", claims(serde_json::json!({ "nonce": null }))),
        ];
        for (what, claims) in cases {
            assert!(
                check(&mint(claims), "at-1").is_err(),
                "{what} must be rejected"
            );
        }
        let mut tampered = mint(claims(serde_json::json!({}))).to_string();
        tampered.push('A');
        let tampered: CoreIdToken =
            serde_json::from_value(serde_json::Value::String(tampered)).unwrap();
        assert!(matches!(
            check(&tampered, "at-1"),
            Err(VerifyFailure::Signature(_))
        ));
    }

    #[test]
    fn unsigned_id_tokens_are_rejected() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims(serde_json::json!({})).to_string());
        let token: CoreIdToken =
            serde_json::from_value(serde_json::Value::String(format!("{header}.{payload}.")))
                .unwrap();
        assert!(check(&token, "at-1").is_err());
    }

    #[test]
    fn jwt_payload_reads_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":10}"#);
        let claims = jwt_payload(&format!("h.{payload}.s")).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert!(jwt_payload("not-a-jwt").is_none());
        assert!(jwt_payload(&format!("h.{}.s", URL_SAFE_NO_PAD.encode(b"[1]"))).is_none());
    }

    #[test]
    fn jwt_issuer_reads_iss_alone() {
        let token = |json: &str| format!("h.{}.s", URL_SAFE_NO_PAD.encode(json));
        assert_eq!(
            jwt_issuer(&token(
                r#"{"sub":"a","iss":"https://op.example","aud":["x"]}"#
            ))
            .as_deref(),
            Some("https://op.example")
        );
        assert_eq!(jwt_issuer(&token(r#"{"sub":"a"}"#)), None);
        assert_eq!(jwt_issuer(&token(r#"{"iss":7}"#)), None);
        assert_eq!(jwt_issuer("not-a-jwt"), None);
    }
}
