//! Which JWS algorithms this client accepts from its provider: for ID tokens, the configured one
//! (`oidc.id_token_signed_response_alg`, as registered) or any the provider supports; for
//! back-channel logout tokens, only the ones this client actually receives ID tokens under.
//!
//! A provider's `id_token_signing_alg_values_supported` lists every algorithm it *can* use
//! (Keycloak and Auth0 list HS256, keyed with each client's secret), not the one it uses for
//! us; accepting all of them would let a token under another algorithm (an HS256 MAC made
//! with the client secret, a key of the JWKS meant for other clients) end our users' sessions.
//! So logout tokens are accepted under the configured algorithm, else under the ones learnt
//! from verified ID tokens, never an HS one unless configured. Learning is shared between
//! instances by the caller (the session store); this file only says what counts. (While nothing
//! at all is learnt, sessions from before the shared set began may live: the provider's
//! asymmetric algorithms stand in until a login or refresh records the real one; see
//! `check_logout_token`.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::JwsSigningAlgorithm;
use openidconnect::core::CoreJwsSigningAlgorithm;

use super::Provider;

/// A JWS signing algorithm (`RS256`, `ES256`, `PS256`, `HS256`, …), never `none`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SigningAlg(pub(super) CoreJwsSigningAlgorithm);

impl SigningAlg {
    /// The algorithm named `name` as in a JOSE header; `None` for `none` and unknown names.
    pub fn parse(name: &str) -> Option<Self> {
        match serde_json::from_value(serde_json::Value::String(name.to_owned())) {
            Ok(CoreJwsSigningAlgorithm::None) | Err(_) => None,
            Ok(alg) => Some(Self(alg)),
        }
    }

    /// Its name as in a JOSE header.
    pub fn name(&self) -> String {
        name(&self.0)
    }

    /// Whether it is an HMAC keyed with the client secret (HS256/384/512).
    pub fn uses_client_secret(&self) -> bool {
        self.0.uses_shared_secret()
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The header name of `alg`.
pub(super) fn name(alg: &CoreJwsSigningAlgorithm) -> String {
    match serde_json::to_value(alg) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{alg:?}"),
    }
}

/// The `alg` of a compact JWS's header (not checked: for tokens that were verified).
fn header_alg(compact: &str) -> Option<SigningAlg> {
    let header = compact.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    SigningAlg::parse(header.get("alg")?.as_str()?)
}

impl Provider {
    /// The algorithm of `verified_id_token` (an ID token this client verified), when it is one
    /// logout tokens may be accepted under on that ground: asymmetric, and only while no
    /// algorithm is configured (then the configuration alone decides). The caller shares it
    /// with the other instances.
    pub fn learnable_alg(&self, verified_id_token: &str) -> Option<String> {
        if self.settings.id_token_alg.is_some() {
            return None;
        }
        let alg = header_alg(verified_id_token)?;
        if alg.uses_client_secret() {
            if !self
                .warned_client_secret_alg
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    alg = %alg,
                    "ID tokens are signed with the client secret; back-channel logout tokens \
                     under it are refused unless oidc.id_token_signed_response_alg = \"{alg}\""
                );
            }
            return None;
        }
        Some(alg.name())
    }

    /// The algorithms a logout token may be signed with: the configured one, else those in
    /// `learnt` (names, as shared by the instances) that are not keyed with the client secret.
    pub(super) fn logout_token_algs(&self, learnt: &[String]) -> Vec<CoreJwsSigningAlgorithm> {
        match &self.settings.id_token_alg {
            Some(configured) => vec![configured.0.clone()],
            None => learnt
                .iter()
                .filter_map(|name| SigningAlg::parse(name))
                .filter(|alg| !alg.uses_client_secret())
                .map(|alg| alg.0)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::ProviderSettings;

    fn provider(configured: Option<&str>) -> Provider {
        Provider::new(ProviderSettings {
            id_token_alg: configured.map(|name| SigningAlg::parse(name).unwrap()),
            ..ProviderSettings::for_testing("default", "https://op.example")
        })
        .unwrap()
    }

    fn token_under(alg: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#));
        format!("{header}.e30.c2ln")
    }

    fn names(algs: &[CoreJwsSigningAlgorithm]) -> Vec<String> {
        algs.iter().map(name).collect()
    }

    #[test]
    fn names_parse_both_ways_and_none_is_no_algorithm() {
        for alg in ["RS256", "PS384", "ES256", "ES512", "HS256", "EdDSA"] {
            assert_eq!(SigningAlg::parse(alg).unwrap().name(), alg);
        }
        for refused in ["none", "rs256", "", "RSA-OAEP"] {
            assert!(SigningAlg::parse(refused).is_none(), "{refused}");
        }
        assert!(SigningAlg::parse("HS512").unwrap().uses_client_secret());
        assert!(!SigningAlg::parse("ES256").unwrap().uses_client_secret());
    }

    #[test]
    fn without_configuration_asymmetric_id_token_algorithms_are_learnt_and_hs_never() {
        let provider = provider(None);
        assert_eq!(
            provider.learnable_alg(&token_under("RS256")).as_deref(),
            Some("RS256")
        );
        assert_eq!(
            provider.learnable_alg(&token_under("ES256")).as_deref(),
            Some("ES256")
        );
        assert_eq!(provider.learnable_alg(&token_under("HS256")), None);
        assert_eq!(provider.learnable_alg("not a token"), None);
        let learnt = ["RS256".to_owned(), "HS256".to_owned(), "bogus".to_owned()];
        assert_eq!(names(&provider.logout_token_algs(&learnt)), ["RS256"]);
        assert!(provider.logout_token_algs(&[]).is_empty(), "nothing learnt");
    }

    #[test]
    fn a_configured_algorithm_alone_decides_even_an_hs_one() {
        let provider = provider(Some("HS256"));
        assert_eq!(provider.learnable_alg(&token_under("RS256")), None);
        let learnt = ["RS256".to_owned(), "ES256".to_owned()];
        assert_eq!(names(&provider.logout_token_algs(&learnt)), ["HS256"]);
        assert_eq!(names(&provider.logout_token_algs(&[])), ["HS256"]);
    }
}
