//! Ending things at the provider: the RP-initiated logout URL (RP-Initiated Logout 1.0) and
//! refresh-token revocation (RFC 7009).
//!
//! Both are best effort and never fail a logout: the session is already gone when they run.
//! Back-channel logout (the provider telling us) would validate its logout token in a
//! `logout_token.rs` beside `id_token.rs`.

use url::Url;

use super::Provider;

impl Provider {
    /// The provider's end-session URL for RP-initiated logout, when it advertises one; the
    /// provider sends `state` back to `post_logout_redirect_uri` (RP-Initiated Logout 1.0 §3).
    pub async fn end_session_url(
        &self,
        id_token_hint: &str,
        post_logout_redirect_uri: &Url,
        state: &str,
    ) -> Option<Url> {
        let discovered = self.current().await.ok()?;
        let mut url = discovered.extra.end_session_endpoint.clone()?;
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token_hint)
            .append_pair(
                "post_logout_redirect_uri",
                post_logout_redirect_uri.as_str(),
            )
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("state", state);
        Some(url)
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
