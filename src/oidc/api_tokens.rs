//! Tokens for one API at the token endpoint, beside the login's: RFC 8693 token exchange, a
//! refresh grant asking for one resource (Entra ID's model), and the client-credentials grant,
//! each with the route's `audience`, `scope` and `resource` (RFC 8707).
//!
//! These grants return plain values ([`ApiToken`]); keeping them per session and refreshing
//! them once across instances is [`crate::refresh`]'s. An ID token in such an answer is not
//! this module's business and is ignored: these grants never change who the user is.

use std::time::Duration;

use serde_json::{Map, Value};

use super::dpop::DpopKey;
use super::grants::expiry;
use super::token_response::lenient_expires_in;
use super::{OidcError, Provider};
use crate::clock::unix_now;
use crate::routes::TokenParameters;

/// RFC 8693's grant type.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693's token type of an access token (the subject, and what is asked for).
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Which grant obtains the API's token.
pub enum ApiGrant<'a> {
    /// Token exchange with the session's access token as the subject.
    Exchange {
        /// The session's current access token.
        subject_token: &'a str,
    },
    /// A refresh grant with the session's refresh token.
    Refresh {
        /// The session's refresh token.
        refresh_token: &'a str,
    },
    /// The client-credentials grant (no user).
    Client,
}

impl ApiGrant<'_> {
    /// The name used in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ApiGrant::Exchange { .. } => "token_exchange",
            ApiGrant::Refresh { .. } => "resource_refresh",
            ApiGrant::Client => "client_credentials",
        }
    }
}

/// A token one API accepts. Not `Debug`: it holds secrets.
pub struct ApiToken {
    /// The bearer token for the API.
    pub access_token: String,
    /// When it expires (unix seconds): `expires_in`, else a JWT's `exp`, else the assumed
    /// lifetime (`oidc.assumed_token_lifetime_secs`).
    pub expires_at: u64,
    /// When it was obtained (unix seconds).
    pub obtained_at: u64,
    /// A new refresh token, when a refresh grant rotated the session's.
    pub refresh_token: Option<String>,
    /// Whether it is DPoP-bound (`token_type` `DPoP`, RFC 9449 §5).
    pub dpop_bound: bool,
}

impl Provider {
    /// Obtains a token for one API with `grant` and `parameters`. A refusal by the provider is
    /// [`OidcError::Rejected`] (`invalid_grant`: the subject or refresh token is no longer
    /// good) or [`OidcError::Refused`] (anything else: the provider will not issue this
    /// token); an unreachable provider or an unreadable answer is [`OidcError::Unavailable`].
    /// With `dpop_key` (the session's), the request carries a proof of it and the token may
    /// come back bound to it ([`ApiToken::dpop_bound`]); without, it is a Bearer token.
    #[tracing::instrument(level = "debug", name = "api_token", skip_all, fields(grant = grant.name()))]
    pub async fn api_token(
        &self,
        grant: &ApiGrant<'_>,
        parameters: &TokenParameters,
        dpop_key: Option<&DpopKey>,
    ) -> Result<ApiToken, OidcError> {
        let mut discovered = self.current().await?;
        let started = std::time::Instant::now();
        let mut answer = self
            .post_api_grant(&discovered, grant, parameters, dpop_key)
            .await;
        if let Err(OidcError::Refused(code)) = &answer
            && code == "invalid_client"
            && self.client_auth.may_switch_on_refusal()
        {
            discovered = self.switch_auth_method(&discovered);
            answer = self
                .post_api_grant(&discovered, grant, parameters, dpop_key)
                .await;
        }
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(OidcError::Rejected(_) | OidcError::Refused(_)) => "rejected",
            Err(_) => "error",
        };
        crate::metrics::metrics().provider_request(grant.name(), outcome, started.elapsed());
        answer
    }

    /// One form POST of `grant` to the token endpoint, and its answer read.
    async fn post_api_grant(
        &self,
        discovered: &super::discovery::Discovered,
        grant: &ApiGrant<'_>,
        parameters: &TokenParameters,
        dpop_key: Option<&DpopKey>,
    ) -> Result<ApiToken, OidcError> {
        let endpoint = discovered.client.token_uri().url().clone();
        let form = grant_form(grant, parameters);
        let request = self.authenticated_form_post(discovered, endpoint, form);
        if let Some(key) = dpop_key {
            let response = self.send_with_proof(request, key).await?;
            return read_answer(
                response.status(),
                response.body(),
                unix_now(),
                self.settings.assumed_token_lifetime,
                true,
            );
        }
        let response = request.send().await.map_err(|error| {
            OidcError::Unavailable(format!(
                "token endpoint unreachable: {}",
                error.without_url()
            ))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            OidcError::Unavailable(format!(
                "token endpoint answer cut off: {}",
                error.without_url()
            ))
        })?;
        read_answer(
            status,
            &body,
            unix_now(),
            self.settings.assumed_token_lifetime,
            false,
        )
    }
}

/// The form of `grant` with the route's parameters (only those configured are sent).
fn grant_form(grant: &ApiGrant<'_>, parameters: &TokenParameters) -> Vec<(&'static str, String)> {
    let mut form = match grant {
        ApiGrant::Exchange { subject_token } => vec![
            ("grant_type", TOKEN_EXCHANGE.to_owned()),
            ("subject_token", (*subject_token).to_owned()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
            ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
        ],
        ApiGrant::Refresh { refresh_token } => vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", (*refresh_token).to_owned()),
        ],
        ApiGrant::Client => vec![("grant_type", "client_credentials".to_owned())],
    };
    for (name, value) in [
        ("audience", &parameters.audience),
        ("scope", &parameters.scope),
        ("resource", &parameters.resource),
    ] {
        if let Some(value) = value {
            form.push((name, value.clone()));
        }
    }
    form
}

/// Reads a token endpoint's answer (`status`, `body`) received at `now`; a token whose lifetime
/// the answer does not name lives `assumed` (`oidc.assumed_token_lifetime_secs`). A `DPoP`
/// token is taken only from a request that carried a proof (`proof_sent`).
fn read_answer(
    status: reqwest::StatusCode,
    body: &[u8],
    now: u64,
    assumed: Duration,
    proof_sent: bool,
) -> Result<ApiToken, OidcError> {
    let json: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        let error = json
            .as_ref()
            .and_then(|json| json.get("error"))
            .and_then(Value::as_str)
            .filter(|code| is_error_code(code));
        return Err(match error {
            Some("invalid_grant") => OidcError::Rejected("invalid_grant".into()),
            Some(code) if status.is_client_error() => OidcError::Refused(code.to_owned()),
            _ => OidcError::Unavailable(format!("token endpoint answered {status}")),
        });
    }
    let mut json = json.ok_or_else(|| {
        OidcError::Unavailable("token endpoint answered something that is not JSON".into())
    })?;
    // `expires_in` as a number, or as a string of digits (Entra ID's v1 endpoints): read as
    // the login's and the refreshes' are.
    lenient_expires_in(&mut json);
    let access_token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| OidcError::Invalid("token response has no access_token".into()))?;
    let token_type = json.get("token_type").and_then(Value::as_str).unwrap_or("");
    let dpop_bound = proof_sent && token_type.eq_ignore_ascii_case("dpop");
    if !token_type.eq_ignore_ascii_case("bearer") && !dpop_bound {
        return Err(OidcError::Invalid(format!(
            "token type {:?} is not Bearer{}",
            token_type.chars().take(32).collect::<String>(),
            if proof_sent { " or DPoP" } else { "" }
        )));
    }
    let expires_in = json.get("expires_in").and_then(Value::as_u64);
    let expires_at = expiry(now, expires_in.map(Duration::from_secs), access_token)
        .unwrap_or(now + assumed.as_secs());
    Ok(ApiToken {
        access_token: access_token.to_owned(),
        expires_at,
        obtained_at: now,
        refresh_token: json
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty())
            .map(str::to_owned),
        dpop_bound,
    })
}

/// Whether `code` looks like an OAuth error code (RFC 6749 §5.2: printable ASCII without
/// quotes or backslash), so a provider's text never reaches a log or an answer unchecked.
pub(super) fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|byte| (0x20..=0x7e).contains(&byte) && byte != b'"' && byte != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    /// The lifetime a token gets when its answer names none, in these tests.
    const ASSUMED: Duration = Duration::from_secs(300);

    #[test]
    fn an_exchange_sends_the_subject_as_an_access_token_and_only_the_configured_parameters() {
        let parameters = TokenParameters {
            audience: Some("orders-api".into()),
            scope: None,
            resource: Some("https://orders.example/".into()),
            ..TokenParameters::default()
        };
        let form = grant_form(
            &ApiGrant::Exchange {
                subject_token: "subject",
            },
            &parameters,
        );
        let names: Vec<&str> = form.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "grant_type",
                "subject_token",
                "subject_token_type",
                "requested_token_type",
                "audience",
                "resource"
            ]
        );
        assert_eq!(form[0].1, TOKEN_EXCHANGE);
        assert_eq!(form[2].1, ACCESS_TOKEN_TYPE);
        let client = grant_form(&ApiGrant::Client, &TokenParameters::default());
        assert_eq!(client, [("grant_type", "client_credentials".to_owned())]);
    }

    #[test]
    fn answers_are_read_leniently_but_only_bearer_tokens_are_taken() {
        let ok = read_answer(
            StatusCode::OK,
            br#"{"access_token":"t","token_type":"bearer","expires_in":"300","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            1_000, ASSUMED, false,
        )
        .unwrap();
        assert_eq!((ok.access_token.as_str(), ok.expires_at), ("t", 1_300));
        assert!(ok.refresh_token.is_none());
        let unnamed = read_answer(
            StatusCode::OK,
            br#"{"access_token":"t","token_type":"Bearer","refresh_token":"r2"}"#,
            1_000,
            ASSUMED,
            false,
        )
        .unwrap();
        assert_eq!(unnamed.expires_at, 1_300, "the assumed lifetime");
        assert_eq!(unnamed.refresh_token.as_deref(), Some("r2"));
        assert!(matches!(
            read_answer(
                StatusCode::OK,
                br#"{"access_token":"t","token_type":"N_A"}"#,
                0,
                ASSUMED,
                true
            ),
            Err(OidcError::Invalid(_))
        ));
        let dpop = br#"{"access_token":"t","token_type":"DPoP"}"#;
        assert!(
            read_answer(StatusCode::OK, dpop, 0, ASSUMED, true)
                .unwrap()
                .dpop_bound
        );
        assert!(!unnamed.dpop_bound && !ok.dpop_bound);
        assert!(
            matches!(
                read_answer(StatusCode::OK, dpop, 0, ASSUMED, false),
                Err(OidcError::Invalid(_))
            ),
            "a DPoP token answered to a request without a proof is not taken"
        );
    }

    #[test]
    fn refusals_are_told_from_outages() {
        let refused = read_answer(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_target","error_description":"no"}"#,
            0,
            ASSUMED,
            false,
        );
        assert!(matches!(refused, Err(OidcError::Refused(code)) if code == "invalid_target"));
        let rejected = read_answer(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant"}"#,
            0,
            ASSUMED,
            false,
        );
        assert!(matches!(rejected, Err(OidcError::Rejected(_))));
        let outage = read_answer(StatusCode::BAD_GATEWAY, b"<html>", 0, ASSUMED, false);
        assert!(matches!(outage, Err(OidcError::Unavailable(_))));
        let odd = read_answer(
            StatusCode::BAD_REQUEST,
            br#"{"error":"a\"b"}"#,
            0,
            ASSUMED,
            false,
        );
        assert!(matches!(odd, Err(OidcError::Unavailable(_))));
    }
}
