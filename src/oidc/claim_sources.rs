//! Aggregated and distributed claims (OIDC Core §5.6.2): a UserInfo answer's `_claim_names`
//! and `_claim_sources`, resolved only when they come from this provider itself.
//!
//! A source is a JWT in the answer (aggregated) or an endpoint to fetch one from
//! (distributed). Either JWT must verify under the provider's signing keys (the ID tokens'
//! JWKS; never `none`, never a MAC) and, when it names an `iss`, name this issuer. An endpoint
//! is fetched only on the issuer's origin or the discovery URL's (the back channel the
//! operator configured): never any other URL an answer names, so a provider answer (or one
//! passed through it) cannot make Vestibule call an internal service (SSRF). A source's claims
//! fill only the names `_claim_names` maps to it, never a protocol claim. What cannot be
//! resolved is skipped, never fatal. This file decides, verifies and merges without a network;
//! the fetch is [`Provider::resolve_claim_sources`]'s. A source's access token is used for its
//! fetch and dropped: never stored, never logged.

use openidconnect::JwsSigningAlgorithm;
use openidconnect::core::CoreJsonWebKeySet;
use serde_json::{Map, Value};
use url::{Origin, Url};

use super::discovery::Discovered;
use super::jws::{CompactJws, JwsError, signed_by_provider_keys};
use super::session_claims::{PROTOCOL_CLAIMS, oversize};
use super::{OidcError, Provider};
use crate::clock::unix_now;

/// The most sources one answer may name that are resolved (each may cost a request).
pub(super) const MAX_SOURCES: usize = 4;

/// The largest source JWT accepted, in the answer or fetched (bytes).
pub(super) const MAX_SOURCE_BYTES: usize = 16 * 1024;

/// Why a source was not resolved: a fixed phrase, never a claim or a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum SourceError {
    /// Neither a `JWT` nor an `endpoint`, or not a usable URL.
    #[error("the claim source is neither a JWT nor an endpoint URL")]
    Malformed,
    /// The endpoint is not on the provider's origin: never fetched.
    #[error("the claim source's endpoint is not on the provider's origin; not fetched")]
    OtherOrigin,
    /// More sources than [`MAX_SOURCES`].
    #[error("too many claim sources")]
    TooMany,
    /// Not a compact JWS, or too large.
    #[error("the claim source is not a signed JWT")]
    NotJwt,
    /// `alg` is `none`, a MAC, or unknown.
    #[error("the claim source's algorithm is not accepted")]
    Algorithm,
    /// No key of the provider verifies it.
    #[error("the claim source's signature does not verify with the provider's keys")]
    Signature,
    /// `iss` names another issuer.
    #[error("the claim source is from another issuer")]
    Issuer,
    /// `exp` has passed.
    #[error("the claim source has expired")]
    Expired,
    /// `sub` names another user, or `aud` leaves this client out: a token the provider
    /// signed for someone or something else.
    #[error("the claim source is about another user or for another audience")]
    NotForThisSession,
    /// The endpoint could not be fetched (unreachable, not 200, too large).
    #[error("the claim source's endpoint could not be fetched")]
    Fetch,
    /// Its claims would take the session's claims beyond their bound.
    #[error("the claim source's claims do not fit in the session")]
    TooLarge,
}

impl From<JwsError> for SourceError {
    fn from(error: JwsError) -> Self {
        match error {
            JwsError::Malformed => SourceError::NotJwt,
            JwsError::Algorithm => SourceError::Algorithm,
        }
    }
}

/// Where a source's claims come from.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Location {
    /// Aggregated: the JWT itself.
    Jwt(String),
    /// Distributed: an endpoint on the provider's origin (already routed through the back
    /// channel), with the source's own access token if it names one.
    Endpoint {
        url: Url,
        access_token: Option<String>,
    },
}

/// One source of a UserInfo answer and the claim names mapped to it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Source {
    /// The source's name in `_claim_sources`.
    pub(super) name: String,
    /// The claims `_claim_names` maps to it (protocol claims left out).
    pub(super) claims: Vec<String>,
    pub(super) location: Location,
}

/// The sources of an answer worth resolving, and those refused before any request.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) sources: Vec<Source>,
    pub(super) skipped: Vec<(String, SourceError)>,
}

/// The origins a distributed endpoint may be on: the issuer's, and the discovery URL's.
pub(super) struct ProviderOrigins(Vec<Origin>);

impl ProviderOrigins {
    /// The issuer's origin and the discovery URL's.
    pub(super) fn new(issuer: &str, discovery_url: &Url) -> Self {
        let mut origins = vec![discovery_url.origin()];
        if let Ok(issuer) = Url::parse(issuer) {
            origins.push(issuer.origin());
        }
        Self(
            origins
                .into_iter()
                .filter(Origin::is_tuple)
                .collect::<Vec<_>>(),
        )
    }

    fn contains(&self, url: &Url) -> bool {
        let origin = url.origin();
        origin.is_tuple() && self.0.contains(&origin)
    }
}

/// What of `answer`'s `_claim_names` / `_claim_sources` to resolve (no request made here).
/// Endpoints are passed through `route` (the back channel) once found on the provider's origin.
pub(super) fn plan(
    answer: &Map<String, Value>,
    origins: &ProviderOrigins,
    route: impl Fn(Url) -> Url,
) -> Plan {
    let mut plan = Plan::default();
    let (Some(Value::Object(names)), Some(Value::Object(sources))) =
        (answer.get("_claim_names"), answer.get("_claim_sources"))
    else {
        return plan;
    };
    for (name, source) in sources {
        let claims: Vec<String> = names
            .iter()
            .filter(|(claim, mapped)| {
                mapped.as_str() == Some(name.as_str()) && !PROTOCOL_CLAIMS.contains(&claim.as_str())
            })
            .map(|(claim, _)| claim.clone())
            .collect();
        if claims.is_empty() {
            continue;
        }
        if plan.sources.len() == MAX_SOURCES {
            plan.skipped.push((name.clone(), SourceError::TooMany));
            continue;
        }
        match location(source, origins, &route) {
            Ok(location) => plan.sources.push(Source {
                name: name.clone(),
                claims,
                location,
            }),
            Err(error) => plan.skipped.push((name.clone(), error)),
        }
    }
    plan
}

/// Where one `_claim_sources` entry's claims are.
fn location(
    source: &Value,
    origins: &ProviderOrigins,
    route: impl Fn(Url) -> Url,
) -> Result<Location, SourceError> {
    if let Some(jwt) = source.get("JWT") {
        return jwt
            .as_str()
            .map(|jwt| Location::Jwt(jwt.to_owned()))
            .ok_or(SourceError::Malformed);
    }
    let endpoint = source
        .get("endpoint")
        .and_then(Value::as_str)
        .and_then(|endpoint| Url::parse(endpoint).ok())
        .ok_or(SourceError::Malformed)?;
    if !origins.contains(&endpoint) || !endpoint.username().is_empty() {
        return Err(SourceError::OtherOrigin);
    }
    Ok(Location::Endpoint {
        url: route(endpoint),
        access_token: source
            .get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Who a source JWT must be from and about: the provider's issuer, this session's user and
/// this client.
pub(super) struct Expected<'a> {
    /// The configured issuer (`iss`, when the JWT has one).
    pub issuer: &'a str,
    /// The session's user (`sub`, when the JWT has one).
    pub sub: &'a str,
    /// This client (`aud`, when the JWT has one, must include it).
    pub client_id: &'a str,
}

/// The claims of a source JWT, verified under the provider's `jwks` (an asymmetric algorithm,
/// a key that fits it), from and about what `expected` names when it says, not expired at
/// `now`: any other JWT the provider signed (another user's ID token, an access token for
/// another audience) is not a claim source of this session.
pub(super) fn verify(
    jwt: &str,
    jwks: &CoreJsonWebKeySet,
    expected: &Expected<'_>,
    now: u64,
) -> Result<Map<String, Value>, SourceError> {
    let jws = CompactJws::parse(jwt.trim(), MAX_SOURCE_BYTES)?;
    if jws.alg.uses_shared_secret() {
        return Err(SourceError::Algorithm);
    }
    if jws.has_critical_extensions() {
        return Err(SourceError::NotJwt);
    }
    let signature = jws.signature()?;
    if !signed_by_provider_keys(jwks, &jws.alg, jws.kid(), jws.signing_input, &signature) {
        return Err(SourceError::Signature);
    }
    let claims = jws.payload()?;
    if let Some(iss) = claims.get("iss")
        && iss.as_str() != Some(expected.issuer)
    {
        return Err(SourceError::Issuer);
    }
    if let Some(sub) = claims.get("sub")
        && sub.as_str() != Some(expected.sub)
    {
        return Err(SourceError::NotForThisSession);
    }
    let for_this_client = |aud: &Value| aud.as_str() == Some(expected.client_id);
    match claims.get("aud") {
        None => {}
        Some(Value::Array(audiences)) if audiences.iter().any(for_this_client) => {}
        Some(aud) if for_this_client(aud) => {}
        Some(_) => return Err(SourceError::NotForThisSession),
    }
    if let Some(exp) = claims.get("exp")
        && exp.as_u64().is_none_or(|exp| exp <= now)
    {
        return Err(SourceError::Expired);
    }
    Ok(claims)
}

/// Adds to `kept` the claims of `source` that `_claim_names` mapped to it, where `kept` has
/// none of that name (UserInfo's own value stands), never a protocol claim; all or nothing,
/// within the session's bound ([`super::session_claims::MAX_USERINFO_CLAIMS_BYTES`]).
pub(super) fn merge(
    kept: &mut Map<String, Value>,
    source: &Source,
    claims: &Map<String, Value>,
) -> Result<(), SourceError> {
    let mut merged = kept.clone();
    for name in &source.claims {
        if PROTOCOL_CLAIMS.contains(&name.as_str()) || merged.contains_key(name) {
            continue;
        }
        if let Some(value) = claims.get(name) {
            merged.insert(name.clone(), value.clone());
        }
    }
    if oversize(&merged).is_some() {
        return Err(SourceError::TooLarge);
    }
    *kept = merged;
    Ok(())
}

impl Provider {
    /// Resolves `plan`'s sources into `kept` (the UserInfo claims the session of `sub` keeps):
    /// aggregated JWTs verified, distributed endpoints fetched with the source's own access
    /// token, if any. Returns the sources skipped and why; the caller reports them.
    pub(super) async fn resolve_claim_sources(
        &self,
        discovered: &Discovered,
        sub: &str,
        plan: Plan,
        kept: &mut Map<String, Value>,
    ) -> Vec<(String, SourceError)> {
        let mut skipped = plan.skipped;
        for source in plan.sources {
            let jwt = match &source.location {
                Location::Jwt(jwt) => Ok(jwt.clone()),
                Location::Endpoint {
                    url,
                    access_token: own,
                } => self.fetch_claim_source(url, own.as_deref()).await,
            };
            let expected = Expected {
                issuer: &self.settings.issuer,
                sub,
                client_id: &self.settings.client_id,
            };
            let resolved = jwt
                .and_then(|jwt| verify(&jwt, &discovered.jwks, &expected, unix_now()))
                .and_then(|claims| merge(kept, &source, &claims));
            if let Err(error) = resolved {
                skipped.push((source.name, error));
            }
        }
        skipped
    }

    /// GETs a distributed source's JWT from `url` (on the provider's origin) with the
    /// source's own `token` if it names one (never the session's: an origin may host other
    /// realms, tenants or applications), through the provider's client (timeouts, no
    /// redirects), observed as `claims`.
    async fn fetch_claim_source(
        &self,
        url: &Url,
        token: Option<&str>,
    ) -> Result<String, SourceError> {
        let request = async {
            let failed = |what: String| OidcError::Unavailable(format!("claims endpoint {what}"));
            let mut request = self.http.get(url.clone()).headers(crate::traces::headers());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let mut response = request
                .header(reqwest::header::ACCEPT, "application/jwt")
                .send()
                .await
                .map_err(|error| failed(format!("unreachable: {}", error.without_url())))?;
            if response.status() != reqwest::StatusCode::OK {
                return Err(failed(format!("answered {}", response.status())));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|error| failed(format!("body: {}", error.without_url())))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_SOURCE_BYTES {
                    return Err(failed("answer too large".into()));
                }
            }
            String::from_utf8(body).map_err(|_| failed("answer is not text".into()))
        };
        super::observed("claims", request).await.map_err(|error| {
            tracing::debug!(error = %error, "claim source not fetched");
            SourceError::Fetch
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use openidconnect::core::CoreJsonWebKey;
    use openidconnect::core::CoreJwsSigningAlgorithm;

    use crate::oidc::session_claims::MAX_USERINFO_CLAIMS_BYTES;
    use openidconnect::{JsonWebKeyId, PrivateSigningKey};
    use serde_json::json;

    const ISSUER: &str = "https://op.example/tenant";

    const EXPECTED: Expected<'static> = Expected {
        issuer: ISSUER,
        sub: "alice",
        client_id: "vestibule",
    };

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn origins() -> ProviderOrigins {
        ProviderOrigins::new(
            ISSUER,
            &Url::parse("http://op.internal:8080/tenant/.well-known/openid-configuration").unwrap(),
        )
    }

    /// The back channel of [`origins`]: the issuer's origin moves to the discovery URL's.
    fn route(url: Url) -> Url {
        let mut url = url;
        if url.origin() == Url::parse(ISSUER).unwrap().origin() {
            url.set_scheme("http").unwrap();
            url.set_host(Some("op.internal")).unwrap();
            url.set_port(Some(8080)).unwrap();
        }
        url
    }

    /// The provider's signing key in these tests (a throwaway RSA key, test data only).
    fn key() -> openidconnect::core::CoreRsaPrivateSigningKey {
        openidconnect::core::CoreRsaPrivateSigningKey::from_pem(
            include_str!("testdata/claim-source-test-key.pem"),
            Some(JsonWebKeyId::new("k1".into())),
        )
        .unwrap()
    }

    fn jwks() -> CoreJsonWebKeySet {
        CoreJsonWebKeySet::new(vec![key().as_verification_key()])
    }

    fn signed(header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = key()
            .sign(
                &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                input.as_bytes(),
            )
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn rs256(claims: Value) -> String {
        signed(json!({ "alg": "RS256", "kid": "k1" }), claims)
    }

    #[test]
    fn an_endpoint_on_the_providers_origin_is_planned_and_routed_and_others_are_not() {
        let answer = map(json!({
            "sub": "alice",
            "_claim_names": {
                "credit": "own", "team": "discovery", "ssrf": "elsewhere", "port": "other_port",
                "http": "other_scheme", "nothing": "missing",
            },
            "_claim_sources": {
                "own": { "endpoint": "https://op.example/claims", "access_token": "t" },
                "discovery": { "endpoint": "http://op.internal:8080/claims" },
                "elsewhere": { "endpoint": "http://169.254.169.254/latest/meta-data" },
                "other_port": { "endpoint": "https://op.example:8443/claims" },
                "other_scheme": { "endpoint": "http://op.example/claims" },
                "unmapped": { "endpoint": "http://evil.example/" },
            },
        }));
        let plan = plan(&answer, &origins(), route);
        assert_eq!(
            plan.sources,
            vec![
                Source {
                    name: "discovery".into(),
                    claims: vec!["team".into()],
                    location: Location::Endpoint {
                        url: Url::parse("http://op.internal:8080/claims").unwrap(),
                        access_token: None,
                    },
                },
                Source {
                    name: "own".into(),
                    claims: vec!["credit".into()],
                    location: Location::Endpoint {
                        url: Url::parse("http://op.internal:8080/claims").unwrap(),
                        access_token: Some("t".into()),
                    },
                },
            ]
        );
        let mut skipped = plan.skipped;
        skipped.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            skipped,
            vec![
                ("elsewhere".into(), SourceError::OtherOrigin),
                ("other_port".into(), SourceError::OtherOrigin),
                ("other_scheme".into(), SourceError::OtherOrigin),
            ],
            "no source maps `nothing`; `unmapped` serves no claim: neither is looked at"
        );
    }

    #[test]
    fn protocol_claims_are_never_mapped_to_a_source() {
        let answer = map(json!({
            "_claim_names": { "sub": "src", "iss": "src", "team": "src" },
            "_claim_sources": { "src": { "JWT": "x.y.z" } },
        }));
        let plan = plan(&answer, &origins(), route);
        assert_eq!(plan.sources[0].claims, vec!["team".to_owned()]);
        let mut kept = map(json!({ "name": "Alice" }));
        let source = Source {
            name: "src".into(),
            claims: vec!["sub".into(), "acr".into(), "team".into(), "name".into()],
            location: Location::Jwt(String::new()),
        };
        merge(
            &mut kept,
            &source,
            &map(json!({ "sub": "mallory", "acr": "9", "team": "blue", "name": "Mallory", "other": 1 })),
        )
        .unwrap();
        assert_eq!(
            Value::Object(kept),
            json!({ "name": "Alice", "team": "blue" }),
            "only mapped names, never protocol claims, UserInfo's own value stands"
        );
    }

    #[test]
    fn a_source_signed_by_the_provider_verifies_and_others_do_not() {
        let now = 1_000;
        let good = rs256(json!({ "iss": ISSUER, "team": "blue", "exp": now + 60 }));
        assert_eq!(
            verify(&good, &jwks(), &EXPECTED, now).unwrap()["team"],
            "blue"
        );
        let no_iss = rs256(json!({ "credit_score": 650 }));
        assert_eq!(
            verify(&no_iss, &jwks(), &EXPECTED, now).unwrap()["credit_score"],
            650
        );
        let other_issuer = rs256(json!({ "iss": "https://evil.example", "team": "red" }));
        assert_eq!(
            verify(&other_issuer, &jwks(), &EXPECTED, now),
            Err(SourceError::Issuer)
        );
        let expired = rs256(json!({ "team": "red", "exp": now }));
        assert_eq!(
            verify(&expired, &jwks(), &EXPECTED, now),
            Err(SourceError::Expired)
        );
        let (input, _) = good.rsplit_once('.').unwrap();
        let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(vec![0u8; 256]));
        assert_eq!(
            verify(&tampered, &jwks(), &EXPECTED, now),
            Err(SourceError::Signature)
        );
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({ "alg": "none" }).to_string()),
            URL_SAFE_NO_PAD.encode(json!({ "team": "red" }).to_string())
        );
        assert_eq!(
            verify(&unsigned, &jwks(), &EXPECTED, now),
            Err(SourceError::Algorithm)
        );
        let mac = signed(json!({ "alg": "HS256" }), json!({ "team": "red" }));
        assert_eq!(
            verify(&mac, &jwks(), &EXPECTED, now),
            Err(SourceError::Algorithm)
        );
        assert_eq!(
            verify(
                &good,
                &CoreJsonWebKeySet::new(Vec::<CoreJsonWebKey>::new()),
                &EXPECTED,
                now
            ),
            Err(SourceError::Signature),
            "no key of the provider's: not verified"
        );
        assert_eq!(
            verify("not a jwt", &jwks(), &EXPECTED, now),
            Err(SourceError::NotJwt)
        );
    }

    #[test]
    fn a_source_about_another_user_or_for_another_audience_is_not_this_sessions() {
        let now = 1_000;
        for (payload, accepted) in [
            (
                json!({ "sub": "alice", "aud": "vestibule", "team": "blue" }),
                true,
            ),
            (
                json!({ "aud": ["other", "vestibule"], "team": "blue" }),
                true,
            ),
            (json!({ "sub": "mallory", "team": "red" }), false),
            (json!({ "aud": "another-client", "team": "red" }), false),
            (json!({ "aud": ["another-client"], "team": "red" }), false),
        ] {
            let verified = verify(&rs256(payload.clone()), &jwks(), &EXPECTED, now);
            if accepted {
                assert_eq!(verified.unwrap()["team"], "blue", "{payload}");
            } else {
                assert_eq!(verified, Err(SourceError::NotForThisSession), "{payload}");
            }
        }
    }

    #[test]
    fn a_source_that_would_overflow_the_session_is_skipped_whole() {
        let mut kept = map(json!({ "name": "Alice" }));
        let source = Source {
            name: "src".into(),
            claims: vec!["bio".into(), "team".into()],
            location: Location::Jwt(String::new()),
        };
        let big = map(json!({ "bio": "x".repeat(MAX_USERINFO_CLAIMS_BYTES), "team": "blue" }));
        assert_eq!(merge(&mut kept, &source, &big), Err(SourceError::TooLarge));
        assert_eq!(Value::Object(kept), json!({ "name": "Alice" }));
    }

    #[test]
    fn no_more_than_max_sources_are_resolved() {
        let mut names = Map::new();
        let mut sources = Map::new();
        for i in 0..MAX_SOURCES + 2 {
            names.insert(format!("c{i}"), json!(format!("s{i}")));
            sources.insert(format!("s{i}"), json!({ "JWT": "x.y.z" }));
        }
        let answer = map(json!({ "_claim_names": names, "_claim_sources": sources }));
        let plan = plan(&answer, &origins(), route);
        assert_eq!(plan.sources.len(), MAX_SOURCES);
        assert_eq!(plan.skipped.len(), 2);
        assert!(plan.skipped.iter().all(|(_, e)| *e == SourceError::TooMany));
    }
}
