//! Pushed authorization requests (RFC 9126): whether a login's authorization request travels
//! over the back channel (`oidc.par` against discovery), the push itself, and the URL the
//! browser is then sent with, which carries `client_id` and `request_uri` only.
//!
//! It never falls back to the front channel: a push the provider refuses fails the login, as
//! the parameters it refused must not reach it through the browser instead (which is what an
//! attacker who can make pushes fail would want). The client secret leaves here only inside
//! the push, through [`super::client_authenticated_post`].

use serde::Deserialize;
use url::Url;

use super::discovery::Discovered;
use super::metadata::ExtraMetadata;
use super::{OidcError, Provider};

/// Whether authorization requests are pushed (`oidc.par`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParMode {
    /// Pushed when discovery names a `pushed_authorization_request_endpoint`.
    #[default]
    Auto,
    /// Always pushed; a provider without a PAR endpoint fails discovery.
    Required,
    /// Never pushed (a provider that requires PAR then refuses every login).
    Off,
}

impl ParMode {
    /// The configuration's spelling.
    pub fn name(self) -> &'static str {
        match self {
            ParMode::Auto => "auto",
            ParMode::Required => "required",
            ParMode::Off => "off",
        }
    }
}

/// What discovery says about PAR (RFC 9126 §5).
#[derive(Debug, Clone, Copy)]
pub(super) struct ParMetadata<'a> {
    /// `pushed_authorization_request_endpoint`.
    pub(super) endpoint: Option<&'a Url>,
    /// `require_pushed_authorization_requests`.
    pub(super) required_by_provider: bool,
}

/// Where authorization requests are pushed under `mode` with a provider that says `metadata`;
/// `None`: they go through the browser. An error names the key and what is missing.
pub(super) fn push_endpoint(
    mode: ParMode,
    metadata: ParMetadata<'_>,
) -> Result<Option<Url>, String> {
    match (mode, metadata.endpoint) {
        (ParMode::Off, _) => Ok(None),
        (_, Some(endpoint)) => Ok(Some(endpoint.clone())),
        (ParMode::Required, None) => Err(
            "oidc.par is \"required\", but the provider's discovery names no \
             pushed_authorization_request_endpoint (enable pushed authorization requests at \
             the provider, or set oidc.par = \"auto\")"
                .into(),
        ),
        (ParMode::Auto, None) if metadata.required_by_provider => Err(
            "the provider's discovery says require_pushed_authorization_requests but names no \
             pushed_authorization_request_endpoint: no login can succeed"
                .into(),
        ),
        (ParMode::Auto, None) => Ok(None),
    }
}

/// The form pushed for the authorization request `url` to `endpoint` (whose own query, such
/// as Azure AD B2C's `p`, stays on the URL the browser is sent to): every parameter the
/// request added, `client_id` left to the client authentication when it sends one.
fn pushed_form(
    endpoint: &Url,
    url: &Url,
    auth_sends_client_id: bool,
) -> Vec<(std::borrow::Cow<'static, str>, String)> {
    url.query_pairs()
        .skip(endpoint.query_pairs().count())
        .filter(|(name, _)| !(auth_sends_client_id && name == "client_id"))
        .map(|(name, value)| {
            (
                std::borrow::Cow::Owned(name.into_owned()),
                value.into_owned(),
            )
        })
        .collect()
}

/// The URL the browser is sent to after a push: the authorization endpoint with `client_id`
/// and `request_uri` only (RFC 9126 §4).
fn front_channel_url(endpoint: &Url, client_id: &str, request_uri: &str) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("request_uri", request_uri);
    url
}

/// The provider's answer to a push (RFC 9126 §2.2).
#[derive(Deserialize)]
struct PushAnswer {
    request_uri: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads the answer to a push: `request_uri` (with `201`, or leniently any `2xx`), an OAuth
/// error (`4xx`: the provider refused this request), or an outage.
fn read_answer(status: reqwest::StatusCode, body: &[u8]) -> Result<PushAnswer, OidcError> {
    if status.is_success() {
        return match serde_json::from_slice::<PushAnswer>(body) {
            Ok(answer) if !answer.request_uri.is_empty() => Ok(answer),
            _ => Err(OidcError::Invalid(
                "pushed authorization request answered without a request_uri".into(),
            )),
        };
    }
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("error")?.as_str().map(str::to_owned))
        .filter(|code| super::api_tokens::is_error_code(code));
    match code {
        Some(code) if status.is_client_error() => Err(OidcError::PushRefused(code)),
        _ => Err(OidcError::Unavailable(format!(
            "pushed authorization request endpoint answered {status}"
        ))),
    }
}

impl Provider {
    /// Where this provider's authorization requests are pushed, from its discovery `extra`
    /// (see [`push_endpoint`]); a provider that requires PAR while `oidc.par = "off"` is
    /// worth a warning, as every login will fail.
    pub(super) fn par_endpoint(&self, extra: &ExtraMetadata) -> Result<Option<Url>, OidcError> {
        let metadata = ParMetadata {
            endpoint: extra.pushed_authorization_request_endpoint.as_ref(),
            required_by_provider: extra.require_pushed_authorization_requests == Some(true),
        };
        if self.settings.par == ParMode::Off && metadata.required_by_provider {
            tracing::warn!(
                provider = self.settings.id,
                "the provider requires pushed authorization requests \
                 (require_pushed_authorization_requests), but oidc.par is \"off\": it will \
                 refuse every login; set oidc.par = \"auto\""
            );
        }
        push_endpoint(self.settings.par, metadata).map_err(OidcError::Invalid)
    }

    /// Pushes the authorization request `url` (built as for the front channel) to `endpoint`
    /// and answers the URL the browser is sent to instead. An auto-selected client
    /// authentication the provider refuses (`invalid_client`) is switched once, as at the
    /// token endpoint.
    pub(super) async fn push_authorization_request(
        &self,
        discovered: &std::sync::Arc<Discovered>,
        endpoint: &Url,
        url: &Url,
    ) -> Result<Url, OidcError> {
        super::observed("par", async {
            let mut discovered = discovered.clone();
            let mut answer = self.push_once(&discovered, endpoint, url).await;
            if let Err(OidcError::PushRefused(code)) = &answer
                && code == "invalid_client"
                && self.client_auth.may_switch_on_refusal()
            {
                discovered = self.switch_auth_method(&discovered);
                answer = self.push_once(&discovered, endpoint, url).await;
            }
            let answer = answer?;
            tracing::debug!(
                expires_in = answer.expires_in,
                "authorization request pushed (RFC 9126)"
            );
            let authorization_endpoint = discovered.client.auth_uri().url();
            Ok(front_channel_url(
                authorization_endpoint,
                &self.settings.client_id,
                &answer.request_uri,
            ))
        })
        .await
    }

    /// One push, authenticated as the token endpoint currently accepts.
    async fn push_once(
        &self,
        discovered: &Discovered,
        endpoint: &Url,
        url: &Url,
    ) -> Result<PushAnswer, OidcError> {
        let form = pushed_form(
            discovered.client.auth_uri().url(),
            url,
            self.auth_sends_client_id(discovered),
        );
        let response = self
            .authenticated_form_post(discovered, endpoint.clone(), form)
            .send()
            .await
            .map_err(|error| {
                OidcError::Unavailable(format!(
                    "pushed authorization request endpoint unreachable: {}",
                    error.without_url()
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            OidcError::Unavailable(format!(
                "pushed authorization request answer cut off: {}",
                error.without_url()
            ))
        })?;
        read_answer(status, &body)
    }

    /// Whether authorization requests are pushed (`None`: not discovered yet), for readiness.
    pub fn pushes_authorization_requests(&self) -> Option<bool> {
        self.discovered
            .load()
            .as_ref()
            .map(|discovered| discovered.par_endpoint.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn auto_pushes_where_discovery_names_an_endpoint_and_off_never() {
        let endpoint = url("https://op.example/par");
        let with = |required_by_provider| ParMetadata {
            endpoint: Some(&endpoint),
            required_by_provider,
        };
        let without = |required_by_provider| ParMetadata {
            endpoint: None,
            required_by_provider,
        };
        for mode in [ParMode::Auto, ParMode::Required] {
            assert_eq!(
                push_endpoint(mode, with(false)).unwrap(),
                Some(endpoint.clone())
            );
            assert_eq!(
                push_endpoint(mode, with(true)).unwrap(),
                Some(endpoint.clone())
            );
        }
        assert_eq!(push_endpoint(ParMode::Auto, without(false)).unwrap(), None);
        assert_eq!(push_endpoint(ParMode::Off, with(true)).unwrap(), None);
        assert_eq!(push_endpoint(ParMode::Off, without(false)).unwrap(), None);
        let required = push_endpoint(ParMode::Required, without(false)).unwrap_err();
        assert!(required.contains("oidc.par"), "{required}");
        assert!(push_endpoint(ParMode::Auto, without(true)).is_err());
    }

    #[test]
    fn every_parameter_the_request_added_is_pushed_and_the_endpoints_own_query_stays() {
        let endpoint = url("https://op.example/authorize?p=b2c_1_signin");
        let request = url(
            "https://op.example/authorize?p=b2c_1_signin&response_type=code&client_id=vestibule\
             &state=s&nonce=n&code_challenge=c&code_challenge_method=S256&resource=https%3A%2F%2Fa\
             &resource=https%3A%2F%2Fb&prompt=login",
        );
        let names = |form: Vec<(std::borrow::Cow<'static, str>, String)>| {
            form.into_iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(pushed_form(&endpoint, &request, false)),
            [
                "response_type=code",
                "client_id=vestibule",
                "state=s",
                "nonce=n",
                "code_challenge=c",
                "code_challenge_method=S256",
                "resource=https://a",
                "resource=https://b",
                "prompt=login",
            ]
        );
        // client_secret_post sends client_id itself: never twice.
        assert!(
            !names(pushed_form(&endpoint, &request, true))
                .iter()
                .any(|pair| pair.starts_with("client_id="))
        );
        let front = front_channel_url(
            &endpoint,
            "vestibule",
            "urn:ietf:params:oauth:request_uri:x",
        );
        let pairs: Vec<(String, String)> = front.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("p".to_owned(), "b2c_1_signin".to_owned()),
                ("client_id".to_owned(), "vestibule".to_owned()),
                (
                    "request_uri".to_owned(),
                    "urn:ietf:params:oauth:request_uri:x".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_refused_push_is_the_providers_error_and_an_outage_is_unavailable() {
        use reqwest::StatusCode;
        let answer = read_answer(
            StatusCode::CREATED,
            br#"{"request_uri":"urn:ietf:params:oauth:request_uri:x","expires_in":60}"#,
        )
        .unwrap();
        assert_eq!(answer.request_uri, "urn:ietf:params:oauth:request_uri:x");
        assert_eq!(answer.expires_in, Some(60));
        assert!(matches!(
            read_answer(StatusCode::BAD_REQUEST, br#"{"error":"invalid_request"}"#),
            Err(OidcError::PushRefused(code)) if code == "invalid_request"
        ));
        assert!(matches!(
            read_answer(StatusCode::BAD_GATEWAY, br#"{"error":"server_error"}"#),
            Err(OidcError::Unavailable(_))
        ));
        assert!(matches!(
            read_answer(StatusCode::BAD_REQUEST, b"<html>"),
            Err(OidcError::Unavailable(_))
        ));
        assert!(matches!(
            read_answer(StatusCode::CREATED, br#"{"expires_in":60}"#),
            Err(OidcError::Invalid(_))
        ));
    }
}
