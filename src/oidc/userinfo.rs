//! The UserInfo endpoint (OIDC Core §5.3): read with the access token of each login and refresh
//! (`oidc.userinfo`), checked, and merged into the session's claims by [`merge_claims`].
//!
//! The check is openidconnect's: the answer's `sub` must be the ID token's (§5.3.2), and a
//! signed answer (`application/jwt`) must verify with the provider's keys and name the issuer
//! and this client (`iss`, `aud`). An answer about another user is never used, whatever the
//! mode; any other failure is the caller's to weigh ([`Provider::user_info`]). Aggregated and
//! distributed claims (`_claim_names`, `_claim_sources`) are resolved by [`claim_sources`]
//! when they come from this provider, and never stored themselves (a source may carry an
//! access token); the protocol claims no answer may replace are dropped. The token is sent as
//! `oidc.userinfo_token_method` says, or, when it is DPoP-bound, as `Authorization: DPoP` with
//! a proof of the session's key (RFC 9449 §7.1: a bound token is never sent as Bearer).

use std::time::Duration;

use openidconnect::core::CoreGenderClaim;
use openidconnect::{AccessToken, AdditionalClaims, ClaimsVerificationError, SubjectIdentifier};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::claim_sources::{self, ProviderOrigins, SourceError};
use super::discovery::Discovered;
use super::dpop::DpopKey;
use super::dpop_client::{DpopHttp, HttpFuture};
use super::session_claims::{MAX_USERINFO_CLAIMS_BYTES, PROTOCOL_CLAIMS, oversize};
use super::{OidcError, Provider, TracedHttp, UserInfoMode, UserInfoTokenMethod};
use crate::clock::{OncePerInterval, unix_now};

/// Aggregated and distributed claims (OIDC Core §5.6.2): references, never stored (a source
/// may carry an access token); their values are resolved by [`claim_sources`].
const UNRESOLVED_CLAIMS: [&str; 2] = ["_claim_names", "_claim_sources"];

/// How often an unusable UserInfo endpoint is reported (not once a login).
const WARNING_INTERVAL: Duration = Duration::from_secs(3600);

/// Why a UserInfo answer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserInfoError {
    /// The endpoint refused the access token (`401`, `403`, another `4xx`): Entra ID's Graph
    /// UserInfo refuses a token issued for another API.
    #[error("the UserInfo endpoint refused the access token: {0}")]
    Refused(String),
    /// The answer is not usable UserInfo: not JSON or a signed JWT, a signature, `iss` or `aud`
    /// that does not verify, too large.
    #[error("the UserInfo answer is unusable: {0}")]
    Invalid(String),
    /// The answer is about another user than the ID token (§5.3.2: never used).
    #[error("the UserInfo answer names another subject than the ID token")]
    OtherSubject,
}

impl UserInfoError {
    /// The failure as a word of a small vocabulary (audit reasons and metric labels).
    pub fn reason(&self) -> &'static str {
        match self {
            UserInfoError::Refused(_) => "userinfo_refused",
            UserInfoError::Invalid(_) => "userinfo_invalid",
            UserInfoError::OtherSubject => "userinfo_subject_mismatch",
        }
    }
}

/// The warning gate of a provider client (UserInfo unusable; claim sources unresolved).
pub(super) fn warnings() -> OncePerInterval {
    OncePerInterval::new(WARNING_INTERVAL, 2)
}

/// When UserInfo is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Occasion {
    /// At a login: under `required`, any failure fails it.
    Login,
    /// At a refresh: the tokens are rotated already, so only another subject ends the session.
    Refresh,
}

/// Every claim beyond the standard ones, as the provider sent it.
#[derive(Debug, Deserialize, Serialize)]
struct OtherClaims(Map<String, Value>);

impl AdditionalClaims for OtherClaims {}

/// A checked UserInfo answer as openidconnect reads it.
type Claims = openidconnect::UserInfoClaims<OtherClaims, CoreGenderClaim>;

impl Provider {
    /// The UserInfo claims to keep for the user `sub`, read with `access_token` as
    /// `oidc.userinfo` says. `None`: none to keep (off; no endpoint; or, except at a login
    /// under `required`, an endpoint that refused or failed, reported once an hour), so the
    /// session keeps the claims it has. An answer about another user is an error under every
    /// mode: at a login [`UserInfoError::OtherSubject`], at a refresh
    /// [`OidcError::SubjectChanged`] (the session ends, as for a refreshed ID token).
    /// `dpop_key`: the key the access token is bound to, if it is.
    pub(super) async fn user_info(
        &self,
        discovered: &Discovered,
        access_token: &AccessToken,
        dpop_key: Option<&DpopKey>,
        sub: &str,
        occasion: Occasion,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        let mode = self.settings.userinfo;
        if mode == UserInfoMode::Off {
            return Ok(None);
        }
        // Under `required`, a discovery without one fails, so no login gets this far.
        let Some(endpoint) = discovered.userinfo_endpoint.clone() else {
            return Ok(None);
        };
        let client = discovered.client.clone().set_user_info_url(endpoint);
        let request = async {
            let claims: Claims = client
                .user_info(
                    access_token.clone(),
                    Some(SubjectIdentifier::new(sub.to_owned())),
                )
                .request_async(&UserInfoHttp {
                    inner: self.traced_http(),
                    token_method: self.settings.userinfo_token_method,
                    dpop: dpop_key.map(|key| self.dpop_http(key, Some(access_token.secret()))),
                })
                .await
                .map_err(classify)?;
            let answer = answer_claims(&claims)?;
            let origins = ProviderOrigins::new(&self.settings.issuer, &self.settings.discovery_url);
            let sources =
                claim_sources::plan(&answer, &origins, |url| discovered.back_channel.route(url));
            Ok((kept_claims(answer)?, sources))
        };
        match super::observed("userinfo", request).await {
            Ok((mut claims, sources)) => {
                let skipped = self
                    .resolve_claim_sources(discovered, sub, sources, &mut claims)
                    .await;
                if !skipped.is_empty() {
                    self.report_unresolved(&skipped);
                }
                Ok(Some(claims))
            }
            Err(OidcError::UserInfo(UserInfoError::OtherSubject)) => Err(match occasion {
                Occasion::Login => UserInfoError::OtherSubject.into(),
                Occasion::Refresh => OidcError::SubjectChanged,
            }),
            Err(error) if occasion == Occasion::Login && mode == UserInfoMode::Required => {
                Err(error)
            }
            Err(error) => {
                self.report_unusable(&error, occasion);
                Ok(None)
            }
        }
    }

    /// Tells the operator, once an hour, that some aggregated or distributed claims were not
    /// resolved (the source names and fixed reasons only: never a claim or a token).
    fn report_unresolved(&self, skipped: &[(String, SourceError)]) {
        let sources = skipped
            .iter()
            .map(|(name, error)| format!("{name}: {error}"))
            .collect::<Vec<_>>()
            .join("; ");
        if self.userinfo_warnings.due("claim_sources", unix_now()) {
            tracing::warn!(
                issuer = %self.settings.issuer,
                sources = %sources,
                "UserInfo names aggregated or distributed claims that were not resolved: \
                 sessions keep the other claims (only sources of this provider, signed with its \
                 keys, are resolved; reported once an hour)"
            );
        } else {
            tracing::debug!(sources = %sources, "claim sources not resolved");
        }
    }

    /// Tells the operator, once an hour, that UserInfo answers nothing usable.
    fn report_unusable(&self, error: &OidcError, occasion: Occasion) {
        if self.userinfo_warnings.due("userinfo", unix_now()) {
            tracing::warn!(
                issuer = %self.settings.issuer,
                error = %error,
                occasion = ?occasion,
                "UserInfo is unusable: sessions keep the claims they have, the ID token's at a \
                 login (oidc.userinfo; reported once an hour; `off` stops the calls)"
            );
        } else {
            tracing::debug!(error = %error, occasion = ?occasion, "UserInfo is unusable");
        }
    }
}

/// The provider's HTTP client for UserInfo requests, sending the access token the way
/// `oidc.userinfo_token_method` says. openidconnect always builds an `Authorization: Bearer`
/// GET; under `body` that request is rewritten on its way out, so the answer is read and
/// checked exactly as under `header`. A DPoP-bound token goes in the header under the `DPoP`
/// scheme, with a proof, whatever the method.
struct UserInfoHttp<'a> {
    inner: TracedHttp<'a>,
    token_method: UserInfoTokenMethod,
    /// The proofs of the key the access token is bound to, if it is.
    dpop: Option<DpopHttp<'a>>,
}

impl<'c> openidconnect::AsyncHttpClient<'c> for UserInfoHttp<'_> {
    type Error = <TracedHttp<'c> as openidconnect::AsyncHttpClient<'c>>::Error;
    type Future = HttpFuture<'c>;

    fn call(&'c self, mut request: openidconnect::HttpRequest) -> Self::Future {
        if let Some(dpop) = &self.dpop {
            dpop_scheme(&mut request);
            return dpop.call(request);
        }
        let request = match self.token_method {
            UserInfoTokenMethod::Header => request,
            UserInfoTokenMethod::Body => token_in_body(request),
        };
        self.inner.call(request)
    }
}

/// `request`'s `Authorization: Bearer <token>` (as openidconnect builds it) as
/// `Authorization: DPoP <token>` (RFC 9449 §7.1).
fn dpop_scheme(request: &mut openidconnect::HttpRequest) {
    use openidconnect::http::{HeaderValue, header};
    let rewritten = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| &value[7..])
        })
        .and_then(|token| HeaderValue::from_str(&format!("DPoP {token}")).ok());
    if let Some(rewritten) = rewritten {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, rewritten);
    }
}

/// `request` with its bearer token moved from the `Authorization` header into a form-encoded
/// `POST` body (RFC 6750 §2.2): one token, in one place (a server must refuse two).
fn token_in_body(mut request: openidconnect::HttpRequest) -> openidconnect::HttpRequest {
    use openidconnect::http::{HeaderValue, Method, header};
    let token = request
        .headers_mut()
        .remove(header::AUTHORIZATION)
        .and_then(|value| {
            let value = value.to_str().ok()?;
            let token = value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| &value[7..])?;
            Some(token.to_owned())
        })
        .unwrap_or_default();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("access_token", &token)
        .finish();
    *request.method_mut() = Method::POST;
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    *request.body_mut() = body.into_bytes();
    request
}

/// A checked answer's claims, as a JSON object.
fn answer_claims(claims: &Claims) -> Result<Map<String, Value>, UserInfoError> {
    match serde_json::to_value(claims) {
        Ok(Value::Object(answer)) => Ok(answer),
        _ => Err(UserInfoError::Invalid(
            "the claims are not a JSON object".into(),
        )),
    }
}

/// What a session keeps of a checked answer: its claims without the protocol ones and the
/// claim-source references (resolved separately, see [`claim_sources`]), within
/// [`MAX_USERINFO_CLAIMS_BYTES`].
fn kept_claims(mut kept: Map<String, Value>) -> Result<Map<String, Value>, UserInfoError> {
    kept.retain(|name, _| {
        !PROTOCOL_CLAIMS.contains(&name.as_str()) && !UNRESOLVED_CLAIMS.contains(&name.as_str())
    });
    if let Some(size) = oversize(&kept) {
        return Err(UserInfoError::Invalid(format!(
            "its claims take {size} bytes, more than the {MAX_USERINFO_CLAIMS_BYTES} a session keeps"
        )));
    }
    Ok(kept)
}

/// Classifies a failed UserInfo request: unreachable or a server error is an outage; a `4xx`
/// a refusal of the token; anything else an unusable answer. Never a claim value in the text.
fn classify<RE>(error: openidconnect::UserInfoError<RE>) -> OidcError
where
    RE: std::error::Error + 'static,
{
    use openidconnect::UserInfoError as Failed;
    match error {
        Failed::ClaimsVerification(ClaimsVerificationError::InvalidSubject(_)) => {
            UserInfoError::OtherSubject.into()
        }
        Failed::ClaimsVerification(other) => {
            UserInfoError::Invalid(format!("signed answer: {other}")).into()
        }
        Failed::Parse(error) => {
            UserInfoError::Invalid(format!("not a UserInfo response (at `{}`)", error.path()))
                .into()
        }
        Failed::Request(error) => {
            OidcError::Unavailable(format!("UserInfo endpoint unreachable: {error}"))
        }
        Failed::Response(status, _, _) if status.is_server_error() => {
            OidcError::Unavailable(format!("UserInfo endpoint answered {status}"))
        }
        Failed::Response(status, _, _) if status.is_client_error() => {
            UserInfoError::Refused(format!("HTTP {status}")).into()
        }
        Failed::Response(_, _, message) | Failed::Other(message) => {
            UserInfoError::Invalid(message).into()
        }
        _ => UserInfoError::Invalid("unexpected failure".into()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checked(json: Value, sub: &str) -> Result<Map<String, Value>, OidcError> {
        let expected = SubjectIdentifier::new(sub.to_owned());
        let claims =
            Claims::from_json::<std::io::Error>(json.to_string().as_bytes(), Some(&expected))
                .map_err(classify)?;
        Ok(kept_claims(answer_claims(&claims)?)?)
    }

    #[test]
    fn a_checked_answer_keeps_its_claims_without_protocol_and_unresolved_ones() {
        let kept = checked(
            json!({
                "sub": "alice", "iss": "https://op", "aud": "vestibule",
                "name": "Alice", "email_verified": true, "groups": ["a", "b"],
                "_claim_names": { "credit": "src1" },
                "_claim_sources": { "src1": { "endpoint": "https://x", "access_token": "secret" } },
            }),
            "alice",
        )
        .unwrap();
        assert_eq!(
            Value::Object(kept),
            json!({ "name": "Alice", "email_verified": true, "groups": ["a", "b"] })
        );
    }

    #[test]
    fn an_answer_about_another_user_or_none_is_refused() {
        assert!(matches!(
            checked(json!({ "sub": "mallory", "name": "M" }), "alice"),
            Err(OidcError::UserInfo(UserInfoError::OtherSubject))
        ));
        assert!(matches!(
            checked(json!({ "name": "nobody" }), "alice"),
            Err(OidcError::UserInfo(UserInfoError::Invalid(_)))
        ));
    }

    #[test]
    fn an_answer_too_large_for_a_session_is_refused_whole() {
        let fits = "x".repeat(MAX_USERINFO_CLAIMS_BYTES - 100);
        assert!(checked(json!({ "sub": "alice", "bio": fits }), "alice").is_ok());
        let too_large = "x".repeat(MAX_USERINFO_CLAIMS_BYTES);
        let refused = checked(json!({ "sub": "alice", "bio": too_large }), "alice");
        assert!(
            matches!(&refused, Err(OidcError::UserInfo(UserInfoError::Invalid(reason))) if reason.contains("4096")),
            "{refused:?}"
        );
    }

    #[test]
    fn under_body_the_token_moves_from_the_header_into_a_form_post() {
        use openidconnect::http::{Method, Request, header};
        let request = Request::builder()
            .method(Method::GET)
            .uri("https://op.example/userinfo")
            .header(header::AUTHORIZATION, "Bearer a+b/c=")
            .header(header::ACCEPT, "application/json")
            .body(Vec::new())
            .unwrap();
        let moved = token_in_body(request);
        assert_eq!(moved.method(), Method::POST);
        assert_eq!(moved.uri(), "https://op.example/userinfo");
        assert!(
            moved.headers().get(header::AUTHORIZATION).is_none(),
            "one token, in the body only"
        );
        assert_eq!(
            moved.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(moved.headers()[header::ACCEPT], "application/json");
        assert_eq!(moved.body(), b"access_token=a%2Bb%2Fc%3D");
    }

    #[test]
    fn failures_are_outages_refusals_or_bad_answers() {
        use openidconnect::http::StatusCode;
        type Failed = openidconnect::UserInfoError<std::io::Error>;
        let response = |status| Failed::Response(status, Vec::new(), "status".into());
        assert!(matches!(
            classify(response(StatusCode::UNAUTHORIZED)),
            OidcError::UserInfo(UserInfoError::Refused(_))
        ));
        assert!(matches!(
            classify(response(StatusCode::FORBIDDEN)),
            OidcError::UserInfo(UserInfoError::Refused(_))
        ));
        assert!(matches!(
            classify(response(StatusCode::SERVICE_UNAVAILABLE)),
            OidcError::Unavailable(_)
        ));
        assert!(matches!(
            classify(Failed::Request(std::io::Error::other("refused"))),
            OidcError::Unavailable(_)
        ));
        assert!(matches!(
            classify(Failed::Response(
                StatusCode::OK,
                Vec::new(),
                "unexpected response Content-Type".into()
            )),
            OidcError::UserInfo(UserInfoError::Invalid(_))
        ));
    }
}
