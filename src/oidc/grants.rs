//! The token endpoint: the authorization-code grant (login), the refresh grant, and the one
//! request path both take (client-authentication fallback, error classification, token-type
//! check: Bearer, or DPoP when the request carried a proof).
//!
//! Grants return plain values ([`GrantedTokens`]): what the provider issued and what verified.
//! Merging them with tokens held from before is the session's business, not the protocol's.

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{CoreErrorResponseType, CoreTokenType};
use openidconnect::{
    AuthorizationCode, OAuth2TokenResponse, PkceCodeVerifier, RefreshToken, RequestTokenError,
    TokenResponse,
};
use serde_json::{Map, Value};

use super::discovery::Discovered;
use super::dpop::{DpopKey, DpopMode};
use super::id_token::{jwt_payload, nonce_equal_to, subject};
use super::token_response::LenientTokenResponse;
use super::userinfo::Occasion;
use super::{AuthenticationRequest, OidcError, Provider};
use crate::clock::unix_now;

/// What a token response granted besides the ID token. Not `Debug`: it holds secrets.
pub struct GrantedTokens {
    /// The bearer token for upstream APIs.
    pub access_token: String,
    /// When the access token expires (unix seconds), if the provider said so or a lifetime was
    /// assumed (see `access_expiry_assumed`).
    pub access_expires_at: Option<u64>,
    /// Whether `access_expires_at` is `oidc.assumed_token_lifetime_secs` from now rather than
    /// the provider's word: it says when to refresh, not that the token is dead.
    pub access_expiry_assumed: bool,
    /// When the tokens were obtained (unix seconds).
    pub obtained_at: u64,
    /// A refresh token, if the provider issued one (after a refresh, `None` means the previous
    /// one stays valid: RFC 6749 §6).
    pub refresh_token: Option<String>,
    /// Whether the access token is DPoP-bound (`token_type` `DPoP`, RFC 9449 §5).
    pub dpop_bound: bool,
}

/// A completed code exchange: the verified subject and ID token, and the granted tokens.
pub struct LoginTokens {
    /// The ID token's `sub`.
    pub sub: String,
    /// The ID token's `sid`: the provider's session, named again by back-channel logout.
    pub provider_session: Option<String>,
    /// The verified ID token, compact form.
    pub id_token: String,
    /// The claims UserInfo answered for this `sub` (`None`: not read, or unusable under
    /// `oidc.userinfo = "auto"`).
    pub userinfo: Option<Map<String, Value>>,
    /// The access and refresh tokens.
    pub granted: GrantedTokens,
    /// The session's DPoP key, when the provider bound the tokens to it (`granted.dpop_bound`).
    pub dpop_key: Option<DpopKey>,
}

/// A completed refresh grant.
pub struct RefreshedTokens {
    /// A new ID token for the same subject, if the response carried one and it verified; `None`
    /// when the previous one should stay.
    pub id_token: Option<String>,
    /// The claims UserInfo answered with the new access token; `None` when the previous ones
    /// should stay (not read, or unusable: a refresh never fails for UserInfo's sake).
    pub userinfo: Option<Map<String, Value>>,
    /// The access and refresh tokens.
    pub granted: GrantedTokens,
}

/// A failed token-endpoint request.
pub(super) type TokenRequestError<RE> =
    RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>;

impl Provider {
    /// Exchanges an authorization code, validates the ID token (signature, `iss`, `aud`,
    /// `exp`, `nonce`, `at_hash`, and the `acr` and `auth_time` the login `asked` for) and reads
    /// UserInfo for its `sub` (`oidc.userinfo`). With the login's `dpop_key`, the exchange
    /// carries a proof of it: the tokens come back bound to it, or, under `oidc.dpop = "auto"`,
    /// as Bearer tokens (the key is then dropped); under `required` a Bearer answer fails.
    #[tracing::instrument(level = "debug", name = "code_exchange", skip_all)]
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        asked: &AuthenticationRequest,
        dpop_key: Option<DpopKey>,
    ) -> Result<LoginTokens, OidcError> {
        let key = dpop_key.as_ref();
        let exchange =
            self.token_request(key.is_some(), |discovered: Arc<Discovered>| async move {
                let mut request = discovered
                    .client
                    .exchange_code(AuthorizationCode::new(code.to_owned()))
                    .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()));
                // RFC 8707 §2.2: the resources the login asked for, asked again for the token.
                for resource in &self.settings.resources {
                    request = request.add_extra_param("resource", resource.clone());
                }
                if let Some(audience) = &self.settings.audience {
                    request = request.add_extra_param("audience", audience.clone());
                }
                for (name, value) in self.client_assertion_params() {
                    request = request.add_extra_param(name, value);
                }
                match key {
                    Some(key) => request.request_async(&self.dpop_http(key, None)).await,
                    None => request.request_async(&self.traced_http()).await,
                }
            });
        let (discovered, response) = super::observed("code_exchange", exchange).await?;
        let bound = is_dpop(&response);
        if key.is_some() && !bound && self.settings.dpop == DpopMode::Required {
            return Err(OidcError::DpopUnsupported(
                "the token endpoint answered a Bearer token to a code exchange with a proof".into(),
            ));
        }
        let bound_key = key.filter(|_| bound);
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Invalid("token response has no id_token".into()))?;
        let claims = self
            .verify_id_token(
                discovered.clone(),
                id_token,
                response.access_token(),
                nonce_equal_to(nonce),
            )
            .await?;
        asked
            .check(&claims, unix_now())
            .map_err(OidcError::NotAuthenticatedAsRequested)?;
        let sub = subject(&claims)?;
        let userinfo = self
            .user_info(
                &discovered,
                response.access_token(),
                bound_key,
                &sub,
                Occasion::Login,
            )
            .await?;
        Ok(LoginTokens {
            sub,
            provider_session: claims
                .get("sid")
                .and_then(Value::as_str)
                .filter(|sid| !sid.is_empty())
                .map(str::to_owned),
            id_token: id_token.to_string(),
            userinfo,
            granted: GrantedTokens::from_response(
                &response,
                // Assumed only when there is a refresh token to act on it: without one, an
                // assumed expiry would end a session whose token may well be valid.
                response
                    .refresh_token()
                    .map(|_| self.settings.assumed_token_lifetime),
            ),
            // Under `auto`, a Bearer answer leaves the session unbound: no key to keep.
            dpop_key: dpop_key.filter(|_| bound),
        })
    }

    /// Runs the refresh grant for the session of `sub` whose current ID token is
    /// `session_id_token` (verified when stored), checking that a returned ID token verifies
    /// and is for the same `sub` from the same issuer and tenant (OIDC Core §12.2), and
    /// re-reads UserInfo with the new access token (another `sub` there ends the session too).
    /// A session with a DPoP key (`dpop_key`) proves possession of it: the new access token
    /// is bound again, or, under `auto`, a Bearer one; under `required` a Bearer answer makes
    /// the refresh unusable.
    #[tracing::instrument(level = "debug", name = "refresh_grant", skip_all)]
    pub async fn refresh(
        &self,
        refresh_token: &str,
        sub: &str,
        session_id_token: &str,
        dpop_key: Option<&DpopKey>,
    ) -> Result<RefreshedTokens, OidcError> {
        let refresh_token = &RefreshToken::new(refresh_token.to_owned());
        let grant = self.token_request(
            dpop_key.is_some(),
            |discovered: Arc<Discovered>| async move {
                let mut request = discovered.client.exchange_refresh_token(refresh_token);
                for (name, value) in self.client_assertion_params() {
                    request = request.add_extra_param(name, value);
                }
                match dpop_key {
                    Some(key) => request.request_async(&self.dpop_http(key, None)).await,
                    None => request.request_async(&self.traced_http()).await,
                }
            },
        );
        let (discovered, response) = match super::observed("refresh", grant).await {
            // An ID token so broken the answer cannot even be read (no `sub`, no `iat`) is
            // as untrustworthy as one that fails verification below.
            Err(OidcError::Invalid(why)) => return Err(OidcError::RefreshedIdTokenInvalid(why)),
            other => other?,
        };
        let bound = is_dpop(&response);
        if dpop_key.is_some() && !bound && self.settings.dpop == DpopMode::Required {
            // Its refresh token may be spent already: the session cannot go on bound.
            return Err(OidcError::DpopUnsupported(
                "the token endpoint answered a Bearer token to a refresh with a proof".into(),
            ));
        }
        let mut new_id_token = None;
        if let Some(id_token) = response.id_token() {
            // Refreshed ID tokens need not carry a nonce (Keycloak omits it).
            match self
                .verify_id_token(
                    discovered.clone(),
                    id_token,
                    response.access_token(),
                    |_| Ok(()),
                )
                .await
            {
                Ok(verified) if subject(&verified)? != sub => {
                    return Err(OidcError::SubjectChanged);
                }
                Ok(verified) => {
                    let login = jwt_payload(session_id_token).unwrap_or_default();
                    self.issuer_rule(Some(&discovered))
                        .same_issuer(&login, &verified)
                        .map_err(OidcError::RefreshedIdTokenInvalid)?;
                    new_id_token = Some(id_token.to_string());
                }
                // An ID token that fails its checks (another issuer, audience, signature) makes
                // the whole answer untrustworthy (OIDC Core §12.2: its claims MUST match the
                // login's): none of its tokens is used, and UserInfo is not asked with them.
                Err(OidcError::Invalid(why)) => {
                    return Err(OidcError::RefreshedIdTokenInvalid(why));
                }
                // The keys could not be fetched to check it: an outage, tried again later.
                Err(error) => return Err(error),
            }
        }
        let userinfo = self
            .user_info(
                &discovered,
                response.access_token(),
                dpop_key.filter(|_| bound),
                sub,
                Occasion::Refresh,
            )
            .await?;
        Ok(RefreshedTokens {
            id_token: new_id_token,
            userinfo,
            granted: GrantedTokens::from_response(
                &response,
                Some(self.settings.assumed_token_lifetime),
            ),
        })
    }

    /// Runs a token-endpoint request, retrying once with the other client-authentication
    /// method when the auto-selected one is refused, and checks the token type: Bearer, or
    /// DPoP when the request carried a proof (`proof_sent`).
    async fn token_request<F, Fut, RE>(
        &self,
        proof_sent: bool,
        request: F,
    ) -> Result<(Arc<Discovered>, LenientTokenResponse), OidcError>
    where
        F: Fn(Arc<Discovered>) -> Fut,
        Fut: Future<Output = Result<LenientTokenResponse, TokenRequestError<RE>>>,
        RE: std::error::Error + 'static,
    {
        let mut discovered = self.current().await?;
        let response = match request(discovered.clone()).await {
            Err(error) if self.client_auth.may_switch(&error) => {
                discovered = self.switch_auth_method(&discovered);
                request(discovered.clone()).await
            }
            other => other,
        }
        .map_err(token_error)?;
        if *response.token_type() != CoreTokenType::Bearer && !(proof_sent && is_dpop(&response)) {
            return Err(OidcError::Invalid(format!(
                "token type {:?} is not Bearer{}",
                response.token_type().as_ref(),
                if proof_sent { " or DPoP" } else { "" }
            )));
        }
        Ok((discovered, response))
    }
}

impl GrantedTokens {
    /// The access and refresh tokens of a (checked) token response, obtained now; `assumed`
    /// is the access token's lifetime when the response names none.
    fn from_response(response: &LenientTokenResponse, assumed: Option<Duration>) -> Self {
        let now = unix_now();
        let named = expiry(now, response.expires_in(), response.access_token().secret());
        let assumed = assumed.filter(|_| named.is_none());
        Self {
            access_token: response.access_token().secret().clone(),
            access_expires_at: named
                .or(assumed.map(|lifetime| now.saturating_add(lifetime.as_secs()))),
            access_expiry_assumed: assumed.is_some(),
            obtained_at: now,
            refresh_token: response.refresh_token().map(|token| token.secret().clone()),
            dpop_bound: is_dpop(response),
        }
    }
}

/// Whether a token response's `token_type` is `DPoP` (case-insensitive, RFC 9449 §5).
fn is_dpop(response: &LenientTokenResponse) -> bool {
    response.token_type().as_ref().eq_ignore_ascii_case("dpop")
}

/// Access-token expiry: `expires_in` if given, else the `exp` of a JWT access token, else unknown.
pub(super) fn expiry(now: u64, expires_in: Option<Duration>, access_token: &str) -> Option<u64> {
    expires_in
        .map(|lifetime| now.saturating_add(lifetime.as_secs()))
        .or_else(|| {
            jwt_payload(access_token).and_then(|claims| claims.get("exp").and_then(Value::as_u64))
        })
}

/// Whether an `invalid_grant` description says the token was used before (Keycloak: "Maximum
/// allowed refresh token reuse exceeded"; others: "already used", "replayed").
fn reports_reuse(description: &str) -> bool {
    let description = description.to_ascii_lowercase();
    ["reuse", "already used", "already been used", "replay"]
        .iter()
        .any(|phrase| description.contains(phrase))
}

/// The claims OIDC Core §2 requires in every ID token.
const REQUIRED_ID_TOKEN_CLAIMS: [&str; 5] = ["iss", "sub", "aud", "exp", "iat"];

/// Whether a token response that did not parse (`body`) is a good one but for its ID token:
/// it parses once the `id_token` is taken out.
fn only_the_id_token_unreadable(body: &[u8]) -> bool {
    let Ok(Value::Object(mut response)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    response.remove("id_token").is_some()
        && serde_json::from_value::<LenientTokenResponse>(Value::Object(response)).is_ok()
}

/// Why the ID token of a token response (`body`) could not be read, naming the required claims
/// it lacks; never the token or a claim's value.
fn unreadable_id_token(body: &[u8]) -> String {
    let claims = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|response| response.get("id_token")?.as_str().and_then(jwt_payload));
    let Some(claims) = claims else {
        return "ID token is not a readable JWT".into();
    };
    let missing: Vec<&str> = REQUIRED_ID_TOKEN_CLAIMS
        .into_iter()
        .filter(|claim| !claims.contains_key(*claim))
        .collect();
    if missing.is_empty() {
        "ID token has a claim of the wrong type".into()
    } else {
        format!(
            "ID token lacks the required claim(s) {}",
            missing.join(", ")
        )
    }
}

/// Classifies a token-endpoint failure: `invalid_grant` means the grant is gone.
fn token_error<RE>(error: TokenRequestError<RE>) -> OidcError
where
    RE: std::error::Error + 'static,
{
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error().clone();
            let text = code.as_ref().to_string();
            let reused = response
                .error_description()
                .is_some_and(|description| reports_reuse(description));
            match code {
                CoreErrorResponseType::InvalidGrant if reused => OidcError::ReuseReported(text),
                CoreErrorResponseType::InvalidGrant => OidcError::Rejected(text),
                _ => OidcError::Refused(format!("token endpoint error: {text}")),
            }
        }
        RequestTokenError::Request(error) => {
            OidcError::Unavailable(format!("token endpoint unreachable: {error}"))
        }
        // The ID token is parsed with the response: one without a claim the library requires
        // (`sub`, `iat`, …) fails here, not in verification. It is a bad token, not an outage.
        RequestTokenError::Parse(_, body) if only_the_id_token_unreadable(&body) => {
            OidcError::Invalid(unreadable_id_token(&body))
        }
        RequestTokenError::Parse(_, _) => OidcError::Unavailable(
            "token endpoint answered something that is not a token response".into(),
        ),
        RequestTokenError::Other(text) => OidcError::Unavailable(format!("token endpoint: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_is_recognised_in_the_words_providers_use() {
        for reused in [
            "Maximum allowed refresh token reuse exceeded",
            "refresh token already used",
            "The token has already been used",
            "Token replay detected",
        ] {
            assert!(reports_reuse(reused), "{reused}");
        }
        for other in [
            "grant request is invalid",
            "Token is not active",
            "Session not active",
        ] {
            assert!(!reports_reuse(other), "{other}");
        }
    }
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn an_unreadable_id_token_is_described_by_the_claims_it_lacks_never_its_values() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"i","aud":"a","exp":2,"email":"e@x"}"#);
        let body =
            format!(r#"{{"access_token":"at","token_type":"Bearer","id_token":"h.{payload}.s"}}"#);
        let reason = unreadable_id_token(body.as_bytes());
        assert_eq!(reason, "ID token lacks the required claim(s) sub, iat");
        assert!(only_the_id_token_unreadable(body.as_bytes()));
        // No access token: not a token response at all, whatever its ID token.
        let without_access_token =
            format!(r#"{{"token_type":"Bearer","id_token":"h.{payload}.s"}}"#);
        assert!(!only_the_id_token_unreadable(
            without_access_token.as_bytes()
        ));
        assert!(!only_the_id_token_unreadable(
            b"<html>502 Bad Gateway</html>"
        ));
        assert_eq!(
            unreadable_id_token(br#"{"id_token":"not a jwt"}"#),
            "ID token is not a readable JWT"
        );
    }

    fn response(json: &str) -> LenientTokenResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_lifetime_is_assumed_only_when_the_provider_names_none() {
        let assumed = Some(Duration::from_secs(300));
        let unnamed = response(r#"{"access_token":"opaque","token_type":"Bearer"}"#);
        let granted = GrantedTokens::from_response(&unnamed, assumed);
        assert!(granted.access_expiry_assumed);
        assert_eq!(granted.access_expires_at, Some(granted.obtained_at + 300));
        let nothing_to_refresh_with = GrantedTokens::from_response(&unnamed, None);
        assert!(!nothing_to_refresh_with.access_expiry_assumed);
        assert_eq!(nothing_to_refresh_with.access_expires_at, None);
        let named = response(r#"{"access_token":"opaque","token_type":"Bearer","expires_in":60}"#);
        let granted = GrantedTokens::from_response(&named, assumed);
        assert!(!granted.access_expiry_assumed);
        assert_eq!(granted.access_expires_at, Some(granted.obtained_at + 60));
    }

    #[test]
    fn expiry_prefers_expires_in_then_jwt_exp() {
        assert_eq!(
            expiry(100, Some(Duration::from_secs(60)), "opaque"),
            Some(160)
        );
        assert_eq!(expiry(100, None, "opaque"), None);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":500}"#);
        assert_eq!(expiry(100, None, &format!("h.{payload}.s")), Some(500));
    }
}
