//! Ending things at the provider: the logout URL (RP-Initiated Logout 1.0, or the
//! provider's own logout by `oidc.logout`, see [`super::end_session`]) and token revocation
//! (RFC 7009).
//!
//! Both are best effort and never fail a logout: the session is already gone when they run.
//! Back-channel logout (the provider telling us) would validate its logout token in a
//! `logout_token.rs` beside `id_token.rs`.

use serde_json::{Map, Value};
use url::Url;

use super::discovery::Discovered;
use super::end_session::TemplateValues;
use super::{LogoutStrategy, Provider};

/// What one logout tells the provider about the session that just ended.
pub struct EndSession<'a> {
    /// The session's ID token.
    pub id_token_hint: &'a str,
    /// Where the provider sends the browser back (it must be registered there).
    pub post_logout_redirect_uri: &'a Url,
    /// The logout's `state`.
    pub state: &'a str,
    /// The session's claims, for the logout hint (`oidc.logout_hint_claim`).
    pub claims: &'a Map<String, Value>,
}

/// Where a logout sends the browser.
pub struct EndSessionUrl {
    /// The provider's logout URL.
    pub url: Url,
    /// Whether the provider is sent the `state` (RP-initiated logout, or a template with
    /// `{state}`), and so must send it back; Cognito's and Auth0's legacy logouts do not.
    pub sends_state: bool,
}

impl Provider {
    /// Where to send the browser to end its provider session, by `oidc.logout`: the discovered
    /// `end_session_endpoint` (RP-Initiated Logout 1.0; the provider sends `state` back to
    /// `post_logout_redirect_uri`, §3), the `oidc.logout_url` template, or nowhere (`None`:
    /// the session ends here only, as when discovery is unavailable).
    pub async fn end_session_url(&self, logout: &EndSession<'_>) -> Option<EndSessionUrl> {
        if self.settings.logout == LogoutStrategy::Local {
            return None;
        }
        let discovered = self.current().await.ok()?;
        let endpoint = discovered.extra.end_session_endpoint.clone();
        match (self.settings.logout, endpoint) {
            (LogoutStrategy::RpInitiated, Some(mut url)) => {
                url.query_pairs_mut()
                    .append_pair("id_token_hint", logout.id_token_hint)
                    .append_pair(
                        "post_logout_redirect_uri",
                        logout.post_logout_redirect_uri.as_str(),
                    )
                    .append_pair("client_id", &self.settings.client_id)
                    .append_pair("state", logout.state);
                if let Some(hint) = self.logout_hint(logout.claims) {
                    url.query_pairs_mut().append_pair("logout_hint", hint);
                }
                Some(EndSessionUrl {
                    url,
                    sends_state: true,
                })
            }
            _ => self.templated_logout(&discovered, logout),
        }
    }

    /// The `oidc.logout_url` template filled for `logout`; `None` without a template.
    fn templated_logout(
        &self,
        discovered: &Discovered,
        logout: &EndSession<'_>,
    ) -> Option<EndSessionUrl> {
        let template = self.settings.logout_url.as_ref()?;
        let authorization_origin = discovered
            .client
            .auth_uri()
            .url()
            .origin()
            .ascii_serialization();
        let url = template.render(&TemplateValues {
            authorization_origin: &authorization_origin,
            issuer: &self.settings.issuer,
            client_id: &self.settings.client_id,
            post_logout_redirect_uri: logout.post_logout_redirect_uri.as_str(),
            id_token_hint: logout.id_token_hint,
            state: logout.state,
            logout_hint: self.logout_hint(logout.claims).unwrap_or_default(),
        })?;
        Some(EndSessionUrl {
            url,
            sends_state: template.sends_state(),
        })
    }

    /// The session's logout hint: the string claim `oidc.logout_hint_claim` names (Entra ID's
    /// optional `login_hint` claim), when set and present.
    fn logout_hint<'c>(&self, claims: &'c Map<String, Value>) -> Option<&'c str> {
        let claim = self.settings.logout_hint_claim.as_deref()?;
        claims
            .get(claim)
            .and_then(Value::as_str)
            .filter(|hint| !hint.is_empty())
    }

    /// The origin whose pages may frame the front-channel logout page: the issuer's (the
    /// provider's logout page, which loads the relying parties' front-channel URIs). From the
    /// configuration alone, so every instance answers the same whatever its discovery state.
    pub fn logout_page_origin(&self) -> Option<String> {
        Url::parse(&self.settings.issuer)
            .ok()
            .map(|issuer| issuer.origin().ascii_serialization())
            .filter(|origin| origin != "null")
    }

    /// Whether `iss` names this client's issuer: the configured one, an alias
    /// (`oidc.issuer_aliases`), or a tenant's under the discovered template for a tenant in
    /// `oidc.allowed_tenants`.
    pub fn is_issuer(&self, iss: &str) -> bool {
        let discovered = self.discovered.load_full();
        self.issuer_rule(discovered.as_deref()).accepts_iss(iss)
    }

    /// Revokes a refresh token (RFC 7009) when the provider supports it; best effort (failures
    /// are logged). `true` when the provider accepted the revocation.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> bool {
        self.revoke(refresh_token, "refresh_token").await
    }

    /// Revokes an access token (RFC 7009) when the provider supports it, as
    /// [`Provider::revoke_refresh_token`] does a refresh token: a token held for one API,
    /// whose session ended.
    pub async fn revoke_access_token(&self, access_token: &str) -> bool {
        self.revoke(access_token, "access_token").await
    }

    /// RFC 7009 revocation of `token`, of the type `hint` names.
    async fn revoke(&self, token: &str, hint: &'static str) -> bool {
        let Ok(discovered) = self.current().await else {
            return false;
        };
        let Some(endpoint) = discovered.extra.revocation_endpoint.clone() else {
            return false;
        };
        let form = vec![
            ("token", token.to_owned()),
            ("token_type_hint", hint.to_owned()),
        ];
        let started = std::time::Instant::now();
        let shown = crate::redact::url(&endpoint);
        let result = self
            .authenticated_form_post(&discovered, endpoint, form)
            .send()
            .await;
        let (revoked, outcome) = match result {
            Ok(response) if response.status().is_success() => (true, "ok"),
            Ok(response) => {
                tracing::warn!(status = %response.status(), endpoint = %shown, "token revocation refused");
                (false, "rejected")
            }
            Err(error) => {
                // The error's own URL is left out: it is shown redacted.
                tracing::warn!(error = %error.without_url(), endpoint = %shown, "token revocation failed");
                (false, "error")
            }
        };
        crate::metrics::metrics().provider_request("revocation", outcome, started.elapsed());
        revoked
    }
}
