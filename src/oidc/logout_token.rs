//! Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4, §2.6): a JWS the
//! provider posts to tell us a session ended, checked exactly as the specification says.
//!
//! Only the algorithms this client receives ID tokens under are accepted ([`super::signing_algs`]),
//! checked before anything else. The signature is checked with openidconnect's JOSE keys (the
//! provider's JWKS, or the client secret for a configured HS algorithm), with one re-fetch of
//! the JWKS when no key verifies (rotation). Anyone on the network can post here, so such a
//! re-fetch is paced as an unsolicited attempt ([`super::attempts`]) and never waited for: a
//! token arriving while one runs, or while discovery backs off after failures, is answered
//! `503` at once. Replay is the caller's business: it gets the `jti` and how long the token
//! would stay acceptable.

use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JwsSigningAlgorithm};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::discovery::{Discovered, Unsolicited};
use super::issuer::IssuerRule;
use super::jws::{CompactJws, JwsError, signed_by_provider_keys};
use super::{OidcError, Provider};
use crate::clock::unix_now;

/// The `events` member a logout token must carry.
pub const BACK_CHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How far in the future `iat` may lie (clock skew between the provider and us).
const MAX_FUTURE_SKEW_SECS: u64 = 30;

/// How old a token may be: `iat` older than this is refused, even with a later `exp`.
pub const MAX_AGE_SECS: u64 = 300;

/// Longest logout token accepted (a few KB at most in practice).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a valid logout token asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The user whose sessions end (all of them when `sid` is absent).
    pub sub: Option<String>,
    /// The provider session that ended.
    pub sid: Option<String>,
    /// The token's unique id, for replay detection.
    pub jti: String,
    /// When this token stops being acceptable (unix seconds): a replay record kept until then
    /// covers every later attempt.
    pub acceptable_until: u64,
}

/// Why a logout token was refused. Each reason is a fixed phrase (never token content), safe
/// to answer to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// Not a compact JWS with JSON header and payload (an encrypted token is refused too).
    #[error("the logout token is not a signed JWT")]
    Malformed,
    /// `alg` is missing, `none`, or not a signing algorithm we know.
    #[error("the logout token's algorithm is not accepted")]
    Algorithm,
    /// `typ` is present and is not `logout+jwt`.
    #[error("the logout token's typ is not logout+jwt")]
    Type,
    /// No key of the provider (nor the client secret, for HS) verifies the signature.
    #[error("the logout token's signature does not verify with the provider's keys")]
    Signature,
    /// `iss` is not the configured issuer.
    #[error("the logout token is from another issuer")]
    Issuer,
    /// `aud` is not (only) our client.
    #[error("the logout token is not addressed to this client")]
    Audience,
    /// `iat` is missing, too old, or in the future.
    #[error("the logout token's iat is missing or outside the accepted window")]
    IssuedAt,
    /// `exp` has passed (or is not a number).
    #[error("the logout token has expired")]
    Expired,
    /// `events` lacks the back-channel logout event.
    #[error("the logout token has no back-channel logout event")]
    Events,
    /// A `nonce` is present (it would make the token usable as an ID token).
    #[error("the logout token must not contain a nonce")]
    Nonce,
    /// Neither `sub` nor `sid`.
    #[error("the logout token names neither sub nor sid")]
    NoSubject,
    /// No `jti`.
    #[error("the logout token has no jti")]
    NoId,
    /// This `jti` was already accepted (§2.6 step 8, checked by the caller).
    #[error("the logout token was already used")]
    Replayed,
}

impl From<JwsError> for LogoutTokenError {
    fn from(error: JwsError) -> Self {
        match error {
            JwsError::Malformed => LogoutTokenError::Malformed,
            JwsError::Algorithm => LogoutTokenError::Algorithm,
        }
    }
}

/// Why checking a logout token did not produce a request.
#[derive(Debug, thiserror::Error)]
pub enum LogoutCheckError {
    /// The token is invalid (answer `400`).
    #[error(transparent)]
    Invalid(#[from] LogoutTokenError),
    /// The provider's keys could not be fetched (answer `503`; the provider retries).
    #[error(transparent)]
    Provider(#[from] OidcError),
}

/// What a token is checked against.
pub(super) struct Expectations<'a> {
    /// Which `iss` values are the provider's (configured, aliases, an allowed tenant's).
    pub issuers: IssuerRule<'a>,
    /// Our client id.
    pub client_id: &'a str,
    /// Our client secret (the key of HS-signed tokens); `None`: no HS token verifies.
    pub client_secret: Option<&'a str>,
    /// The algorithms this client receives ID tokens under (configured, or learnt; HS only
    /// when configured): a token under any other is refused.
    pub allowed_algs: &'a [CoreJwsSigningAlgorithm],
    /// Now, unix seconds.
    pub now: u64,
}

impl Provider {
    /// Checks a back-channel logout token. `learnt` names the ID-token signing algorithms the
    /// instances learnt from verified ID tokens ([`Provider::learnable_alg`]); with
    /// `oidc.id_token_signed_response_alg` set, that one alone counts. On a signature failure,
    /// re-fetches the JWKS once if a stranger may cause that now, and tries again.
    pub async fn check_logout_token(
        &self,
        token: &str,
        learnt: &[String],
    ) -> Result<LogoutRequest, LogoutCheckError> {
        let mut allowed = self.logout_token_algs(learnt);
        if allowed.is_empty() {
            // Nothing configured and nothing learnt: no instance verified an ID token since the
            // shared set began (an upgrade from a version that kept none, a Redis that lost it),
            // yet sessions from before may live. Until a login or refresh records the real
            // algorithm, the provider's asymmetric ones stand in; never one keyed with the
            // client secret.
            allowed = self.provider_asymmetric_algs().await?;
        }
        let now = unix_now();
        let known = self.discovered.load_full();
        let expect = self.expectations(&allowed, now, known.as_deref());
        let screened = screen(token, &expect)?;
        if screened.jws.alg.uses_shared_secret() {
            // Keyed with the client secret: no key of the provider's is involved.
            return Ok(screened.verify(&CoreJsonWebKeySet::new(Vec::new()), &expect)?);
        }
        let discovered = self.current_unsolicited().await?;
        let expect = self.expectations(&allowed, now, Some(&discovered));
        match screened.verify(&discovered.jwks, &expect) {
            Err(LogoutTokenError::Signature) => {
                match self.rediscover_unsolicited(&discovered).await? {
                    Unsolicited::Newer(fresh) => Ok(screened
                        .verify(&fresh.jwks, &self.expectations(&allowed, now, Some(&fresh)))?),
                    // The keys are as fresh as they may be: no key of the provider signed it.
                    Unsolicited::Current => Err(LogoutTokenError::Signature.into()),
                }
            }
            other => Ok(other?),
        }
    }

    /// The asymmetric algorithms the provider says it signs ID tokens with.
    async fn provider_asymmetric_algs(&self) -> Result<Vec<CoreJwsSigningAlgorithm>, OidcError> {
        Ok(self
            .current_unsolicited()
            .await?
            .asymmetric_id_token_algs
            .clone())
    }

    /// What a logout token must match, under the algorithms `allowed` and the issuer rule of
    /// `discovered` (its tenant template, if any).
    fn expectations<'a>(
        &'a self,
        allowed: &'a [CoreJwsSigningAlgorithm],
        now: u64,
        discovered: Option<&'a Discovered>,
    ) -> Expectations<'a> {
        Expectations {
            issuers: self.issuer_rule(discovered),
            client_id: &self.settings.client_id,
            client_secret: self
                .settings
                .client_secret
                .as_ref()
                .map(ExposeSecret::expose_secret),
            allowed_algs: allowed,
            now,
        }
    }
}

/// A token whose header passed (§2.6 step 2, up to the signature), split into its parts.
struct Screened<'t> {
    jws: CompactJws<'t>,
    signature: Vec<u8>,
}

/// Checks `token` against the provider's `jwks` and `expect` (§2.6, steps 2 to 7; replay, the
/// last step, is the caller's).
#[cfg(test)]
pub(super) fn check(
    jwks: &CoreJsonWebKeySet,
    expect: &Expectations<'_>,
    token: &str,
) -> Result<LogoutRequest, LogoutTokenError> {
    screen(token, expect)?.verify(jwks, expect)
}

/// The `iss` a logout token claims, read before anything is verified: only to choose the
/// provider whose keys and expectations then verify it (which checks `iss` again).
pub fn unverified_issuer(token: &str) -> Result<String, LogoutTokenError> {
    let payload = CompactJws::parse(token, MAX_TOKEN_LEN)?.payload()?;
    payload
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(LogoutTokenError::Issuer)
}

/// The header's checks: a compact JWS under an allowed algorithm, of the right `typ`, with no
/// critical extension. Nothing here needs the provider's keys.
fn screen<'t>(token: &'t str, expect: &Expectations<'_>) -> Result<Screened<'t>, LogoutTokenError> {
    let jws = CompactJws::parse(token, MAX_TOKEN_LEN)?;
    if !expect.allowed_algs.contains(&jws.alg) {
        return Err(LogoutTokenError::Algorithm);
    }
    if let Some(typ) = jws.header.get("typ") {
        let typ = typ.as_str().ok_or(LogoutTokenError::Type)?;
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if !typ.eq_ignore_ascii_case("logout+jwt") {
            return Err(LogoutTokenError::Type);
        }
    }
    if jws.has_critical_extensions() {
        return Err(LogoutTokenError::Malformed);
    }
    let signature = jws.signature()?;
    Ok(Screened { jws, signature })
}

impl Screened<'_> {
    /// The signature (with `jwks`, or the client secret for HS) and then the claims.
    fn verify(
        &self,
        jwks: &CoreJsonWebKeySet,
        expect: &Expectations<'_>,
    ) -> Result<LogoutRequest, LogoutTokenError> {
        verify_signature(jwks, expect.client_secret, &self.jws, &self.signature)?;
        check_claims(&self.jws.payload()?, expect)
    }
}

/// The claims' checks (§2.6 steps 3 to 6), on a payload whose signature verified.
fn check_claims(
    claims: &Map<String, Value>,
    expect: &Expectations<'_>,
) -> Result<LogoutRequest, LogoutTokenError> {
    if expect.issuers.accept(claims).is_err() {
        return Err(LogoutTokenError::Issuer);
    }
    let audience_is_ours = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expect.client_id,
        // Several audiences: every one must be us, as for ID tokens (no untrusted audience).
        Some(Value::Array(auds)) => {
            !auds.is_empty()
                && auds
                    .iter()
                    .all(|aud| aud.as_str() == Some(expect.client_id))
        }
        _ => false,
    };
    if !audience_is_ours {
        return Err(LogoutTokenError::Audience);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(LogoutTokenError::IssuedAt)?;
    if iat > expect.now + MAX_FUTURE_SKEW_SECS || iat + MAX_AGE_SECS < expect.now {
        return Err(LogoutTokenError::IssuedAt);
    }
    let mut acceptable_until = iat + MAX_AGE_SECS;
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_u64().ok_or(LogoutTokenError::Expired)?;
        if exp <= expect.now {
            return Err(LogoutTokenError::Expired);
        }
        acceptable_until = acceptable_until.min(exp);
    }
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACK_CHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return Err(LogoutTokenError::Events);
    }
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    let jti = text("jti").ok_or(LogoutTokenError::NoId)?;
    Ok(LogoutRequest {
        sub,
        sid,
        jti,
        acceptable_until,
    })
}

/// Verifies the signature with the client secret (HS) or a JWKS key that fits the token's `kid`
/// and `alg`.
fn verify_signature(
    jwks: &CoreJsonWebKeySet,
    client_secret: Option<&str>,
    jws: &CompactJws<'_>,
    signature: &[u8],
) -> Result<(), LogoutTokenError> {
    let alg = &jws.alg;
    if alg.uses_shared_secret() {
        let Some(client_secret) = client_secret else {
            // No secret (`private_key_jwt`): nothing can key an HS signature.
            return Err(LogoutTokenError::Signature);
        };
        if signature.len() != mac_length(alg) {
            // A MAC of the wrong length makes the underlying crypto panic; refuse it first.
            return Err(LogoutTokenError::Signature);
        }
        let key = CoreJsonWebKey::new_symmetric(client_secret.as_bytes().to_vec());
        return key
            .verify_signature(alg, jws.signing_input.as_bytes(), signature)
            .map_err(|_| LogoutTokenError::Signature);
    }
    if signed_by_provider_keys(jwks, alg, jws.kid(), jws.signing_input, signature) {
        Ok(())
    } else {
        Err(LogoutTokenError::Signature)
    }
}

/// The MAC length of an HS algorithm.
fn mac_length(alg: &CoreJwsSigningAlgorithm) -> usize {
    match alg {
        CoreJwsSigningAlgorithm::HmacSha384 => 48,
        CoreJwsSigningAlgorithm::HmacSha512 => 64,
        _ => 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    use sha2::{Sha256, Sha512};

    const ISSUER: &str = "https://op.example";
    const CLIENT: &str = "vestibule";
    const SECRET: &str = "a-client-secret-of-thirty-two-bytes!";
    const NOW: u64 = 1_800_000_000;

    const ALGS: &[CoreJwsSigningAlgorithm] = &[
        CoreJwsSigningAlgorithm::HmacSha256,
        CoreJwsSigningAlgorithm::HmacSha512,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    ];

    fn expect() -> Expectations<'static> {
        Expectations {
            issuers: IssuerRule {
                issuer: ISSUER,
                aliases: &[],
                allowed_tenants: &[],
                template: None,
            },
            client_id: CLIENT,
            client_secret: Some(SECRET),
            allowed_algs: ALGS,
            now: NOW,
        }
    }

    fn no_keys() -> CoreJsonWebKeySet {
        CoreJsonWebKeySet::new(Vec::new())
    }

    fn claims(extra: Value) -> Value {
        let mut base = serde_json::json!({
            "iss": ISSUER, "aud": CLIENT, "iat": NOW - 2, "exp": NOW + 118,
            "jti": "jti-1", "sub": "alice", "sid": "op-session-1",
            "events": { BACK_CHANNEL_LOGOUT_EVENT: {} },
        });
        for (name, value) in extra.as_object().unwrap() {
            if value.is_null() {
                base.as_object_mut().unwrap().remove(name);
            } else {
                base[name] = value.clone();
            }
        }
        base
    }

    /// An HS-signed token with `header` and `claims` (keyed with `secret`).
    fn mint_with(header: Value, claims: &Value, secret: &str) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match header["alg"].as_str() {
            Some("HS512") => {
                let mut mac = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(signing_input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            _ => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(signing_input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn mint(claims: &Value) -> String {
        mint_with(
            serde_json::json!({ "alg": "HS256", "typ": "logout+jwt" }),
            claims,
            SECRET,
        )
    }

    #[test]
    fn a_valid_token_names_its_session_and_user_and_how_long_it_counts() {
        let request = check(&no_keys(), &expect(), &mint(&claims(serde_json::json!({})))).unwrap();
        assert_eq!(
            request,
            LogoutRequest {
                sub: Some("alice".into()),
                sid: Some("op-session-1".into()),
                jti: "jti-1".into(),
                acceptable_until: NOW + 118,
            }
        );
        // Without exp, the age limit bounds it; sid alone and sub alone are each enough.
        let only_sid = claims(serde_json::json!({ "exp": null, "sub": null }));
        let request = check(&no_keys(), &expect(), &mint(&only_sid)).unwrap();
        assert_eq!(request.acceptable_until, NOW - 2 + MAX_AGE_SECS);
        assert_eq!(
            (request.sub, request.sid.as_deref()),
            (None, Some("op-session-1"))
        );
        let only_sub = claims(serde_json::json!({ "sid": null }));
        assert!(check(&no_keys(), &expect(), &mint(&only_sub)).is_ok());
        // typ may be absent, or given with the media-type prefix; aud may be a list of us.
        let untyped = mint_with(
            serde_json::json!({ "alg": "HS256" }),
            &claims(serde_json::json!({})),
            SECRET,
        );
        assert!(check(&no_keys(), &expect(), &untyped).is_ok());
        let long_typ = mint_with(
            serde_json::json!({ "alg": "HS512", "typ": "application/logout+jwt" }),
            &claims(serde_json::json!({ "aud": [CLIENT] })),
            SECRET,
        );
        assert!(check(&no_keys(), &expect(), &long_typ).is_ok());
    }

    #[test]
    fn an_alias_or_an_allowed_tenant_is_the_issuer_too() {
        use crate::oidc::issuer::IssuerTemplate;
        let aliases = vec!["op.example".to_owned()];
        let tenants = vec!["t-1".to_owned()];
        let template = IssuerTemplate::parse("https://op.example/{tenantid}/v2.0").unwrap();
        let lenient = Expectations {
            issuers: IssuerRule {
                issuer: ISSUER,
                aliases: &aliases,
                allowed_tenants: &tenants,
                template: Some(&template),
            },
            ..expect()
        };
        let verdict = |extra: Value, expect: &Expectations<'_>| {
            check(&no_keys(), expect, &mint(&claims(extra)))
        };
        for accepted in [
            serde_json::json!({ "iss": "op.example" }),
            serde_json::json!({ "iss": "https://op.example/t-1/v2.0", "tid": "t-1" }),
        ] {
            assert!(verdict(accepted.clone(), &lenient).is_ok(), "{accepted}");
        }
        for refused in [
            serde_json::json!({ "iss": "https://op.example/t-2/v2.0", "tid": "t-2" }),
            serde_json::json!({ "iss": "https://op.example/t-1/v2.0" }),
            serde_json::json!({ "iss": "https://op.example/t-1/v2.0", "tid": "t-2" }),
        ] {
            assert!(
                matches!(
                    verdict(refused.clone(), &lenient),
                    Err(LogoutTokenError::Issuer)
                ),
                "{refused}"
            );
        }
        assert!(matches!(
            verdict(serde_json::json!({ "iss": "op.example" }), &expect()),
            Err(LogoutTokenError::Issuer)
        ));
    }

    #[test]
    fn each_rule_of_the_specification_refuses_its_own_violation() {
        use LogoutTokenError as E;
        let cases: Vec<(&str, Value, E)> = vec![
            (
                "another issuer",
                serde_json::json!({ "iss": "https://evil.example" }),
                E::Issuer,
            ),
            (
                "another audience",
                serde_json::json!({ "aud": "other" }),
                E::Audience,
            ),
            (
                "an extra audience",
                serde_json::json!({ "aud": [CLIENT, "other"] }),
                E::Audience,
            ),
            (
                "no audience",
                serde_json::json!({ "aud": null }),
                E::Audience,
            ),
            ("no iat", serde_json::json!({ "iat": null }), E::IssuedAt),
            (
                "iat in the future",
                serde_json::json!({ "iat": NOW + 3600 }),
                E::IssuedAt,
            ),
            (
                "iat long ago",
                serde_json::json!({ "iat": NOW - 3600, "exp": NOW + 60 }),
                E::IssuedAt,
            ),
            ("expired", serde_json::json!({ "exp": NOW - 1 }), E::Expired),
            (
                "expiring now",
                serde_json::json!({ "exp": NOW }),
                E::Expired,
            ),
            (
                "no events",
                serde_json::json!({ "events": null }),
                E::Events,
            ),
            (
                "another event",
                serde_json::json!({ "events": { "http://schemas.openid.net/event/other": {} } }),
                E::Events,
            ),
            (
                "an event that is not an object",
                serde_json::json!({ "events": { BACK_CHANNEL_LOGOUT_EVENT: "yes" } }),
                E::Events,
            ),
            ("a nonce", serde_json::json!({ "nonce": "n-1" }), E::Nonce),
            (
                "neither sub nor sid",
                serde_json::json!({ "sub": null, "sid": null }),
                E::NoSubject,
            ),
            (
                "empty sub and sid",
                serde_json::json!({ "sub": "", "sid": "" }),
                E::NoSubject,
            ),
            ("no jti", serde_json::json!({ "jti": null }), E::NoId),
        ];
        for (what, extra, expected) in cases {
            assert_eq!(
                check(&no_keys(), &expect(), &mint(&claims(extra))),
                Err(expected),
                "{what}"
            );
        }
    }

    #[test]
    fn headers_and_signatures_that_do_not_hold_are_refused() {
        use LogoutTokenError as E;
        let valid = claims(serde_json::json!({}));
        let token = |header: Value| mint_with(header, &valid, SECRET);
        assert_eq!(
            check(
                &no_keys(),
                &expect(),
                &token(serde_json::json!({ "alg": "HS256", "typ": "JWT" }))
            ),
            Err(E::Type)
        );
        assert_eq!(
            check(
                &no_keys(),
                &expect(),
                &token(serde_json::json!({ "alg": "none" }))
            ),
            Err(E::Algorithm)
        );
        assert_eq!(
            check(
                &no_keys(),
                &expect(),
                &token(serde_json::json!({ "typ": "logout+jwt" }))
            ),
            Err(E::Algorithm)
        );
        // An algorithm this client does not receive ID tokens under is refused, even with a
        // valid MAC: the client secret is no key for a client whose ID tokens are RS256.
        let only_rs256 = Expectations {
            allowed_algs: &[CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
            ..expect()
        };
        assert_eq!(
            check(&no_keys(), &only_rs256, &mint(&valid)),
            Err(E::Algorithm),
            "HS256 where the provider signs RS256"
        );
        assert_eq!(
            check(
                &no_keys(),
                &expect(),
                &mint_with(
                    serde_json::json!({ "alg": "HS256" }),
                    &valid,
                    "another-secret-of-thirty-two-bytes"
                )
            ),
            Err(E::Signature),
            "keyed with another secret"
        );
        // An RS256 token and no key in the JWKS: nothing verifies it.
        let mut rs256 = token(serde_json::json!({ "alg": "RS256", "kid": "k1" }));
        assert_eq!(check(&no_keys(), &expect(), &rs256), Err(E::Signature));
        rs256.push('A');
        assert!(check(&no_keys(), &expect(), &rs256).is_err());
        let original = mint(&valid);
        let payload =
            URL_SAFE_NO_PAD.encode(claims(serde_json::json!({ "sub": "mallory" })).to_string());
        let parts: Vec<&str> = original.split('.').collect();
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(check(&no_keys(), &expect(), &tampered), Err(E::Signature));
        for malformed in [
            "",
            "a.b",
            "a.b.c.d.e",
            "!!.!!.!!",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                check(&no_keys(), &expect(), malformed),
                Err(E::Malformed),
                "{malformed:.20}"
            );
        }
        // A MAC of the wrong length is refused before the crypto sees it.
        let short = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode([0u8; 5])
        );
        assert_eq!(check(&no_keys(), &expect(), &short), Err(E::Signature));
    }
}
