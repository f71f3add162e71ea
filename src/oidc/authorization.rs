//! The front channel: the authorization request the browser is sent with (PKCE S256, `state`,
//! `nonce`, `dpop_jkt` when DPoP applies, and what the login asks of the authentication:
//! `acr_values`, `max_age`, `prompt`) and the RFC 9207 check of the `iss` on the response it
//! comes back with. Where the request is pushed ([`super::par`]), it is built here all the
//! same and pushed whole.
//!
//! No token passes here; the code in the response is exchanged in [`super::grants`].

use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{AuthenticationContextClass, CsrfToken, Nonce, PkceCodeChallenge, Scope};
use url::Url;

use super::dpop::DpopKey;
use super::{AuthenticationRequest, OidcError, Provider};

/// A started authorization request: the URL to send the browser to and what to remember.
pub struct AuthorizationRequest {
    /// The provider's authorization URL with all parameters, or, when the request was pushed
    /// (RFC 9126), with `client_id` and `request_uri` only.
    pub url: Url,
    /// The `state` value.
    pub state: String,
    /// The `nonce` value.
    pub nonce: String,
    /// The PKCE verifier for the code exchange.
    pub pkce_verifier: String,
    /// The login's own DPoP key when DPoP applies (`oidc.dpop`): its thumbprint is the
    /// request's `dpop_jkt`, and the code exchange proves possession of it. A secret, kept
    /// with the pending login like the PKCE verifier.
    pub dpop_key: Option<DpopKey>,
}

impl Provider {
    /// Builds an authorization request with PKCE (S256), `state` and `nonce`, passing on a
    /// third party's `login_hint` (OIDC Core §3.1.2.1, §4) when given, and what `asked` of the
    /// authentication. The login's own `prompt` replaces `oidc.prompt` (`none` cannot be
    /// combined with another value, and the SPA asked for this one login).
    pub async fn authorization_request(
        &self,
        login_hint: Option<&str>,
        asked: &AuthenticationRequest,
    ) -> Result<AuthorizationRequest, OidcError> {
        let discovered = self.current().await?;
        let dpop_key = self.login_dpop_key(&discovered)?;
        let state = crate::random::url_safe_secret();
        let nonce = crate::random::url_safe_secret();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            {
                let state = state.clone();
                move || CsrfToken::new(state)
            },
            {
                let nonce = nonce.clone();
                move || Nonce::new(nonce)
            },
        );
        for scope in self
            .settings
            .scopes
            .iter()
            .filter(|scope| *scope != "openid")
        {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(prompt) = asked.prompt.as_ref().or(self.settings.prompt.as_ref()) {
            request = request.add_extra_param("prompt", prompt.clone());
        }
        for acr in &asked.acr_values {
            request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
        if let Some(max_age) = asked.max_age {
            request = request.set_max_age(std::time::Duration::from_secs(max_age));
        }
        if let Some(login_hint) = login_hint {
            request = request.add_extra_param("login_hint", login_hint.to_owned());
        }
        for resource in &self.settings.resources {
            request = request.add_extra_param("resource", resource.clone());
        }
        if let Some(audience) = &self.settings.audience {
            request = request.add_extra_param("audience", audience.clone());
        }
        // RFC 9449 §10: the code is bound to the key, so only its holder can redeem it.
        if let Some(key) = &dpop_key {
            request = request.add_extra_param("dpop_jkt", key.thumbprint().to_owned());
        }
        for (name, value) in &self.settings.extra_auth_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, _, _) = request.set_pkce_challenge(challenge).url();
        // Built as for the front channel, then pushed whole: whatever the request carries
        // travels over the back channel (RFC 9126), and the browser gets a reference only.
        let url = match &discovered.par_endpoint {
            Some(endpoint) => {
                self.push_authorization_request(&discovered, endpoint, &url)
                    .await?
            }
            None => url,
        };
        Ok(AuthorizationRequest {
            url,
            state,
            nonce,
            pkce_verifier: verifier.into_secret(),
            dpop_key,
        })
    }

    /// RFC 9207 mix-up defence: an `iss` on the authorization response must be our issuer, and
    /// must be present when the provider says it sends one.
    pub async fn check_response_issuer(&self, iss: Option<&str>) -> Result<(), OidcError> {
        match iss {
            Some(iss) if self.is_issuer(iss) => Ok(()),
            Some(_) => Err(OidcError::Invalid(
                "authorization response from another issuer".into(),
            )),
            None => {
                let discovered = self.current().await?;
                if discovered
                    .extra
                    .authorization_response_iss_parameter_supported
                    == Some(true)
                {
                    Err(OidcError::Invalid(
                        "authorization response without iss".into(),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}
