//! Split-horizon providers: the browser reaches the provider at the issuer's origin, Vestibule
//! at `oidc.discovery_url`'s (compose: `localhost:8081` versus `keycloak:8080`). When the
//! provider shows that it serves its back channel there (its token endpoint is on the discovery
//! origin), the back-channel endpoints it still advertises on the issuer's origin are called
//! through the discovery origin, which the operator told us this process can reach.
//!
//! Only origins move (scheme, host, port), never paths; never when the token endpoint is on
//! another origin (a copy of discovery served elsewhere, say); and never a front-channel
//! endpoint (authorization, end-session), which the browser must visit. Keycloak 26 needs
//! this: with `KC_HOSTNAME_BACKCHANNEL_DYNAMIC` its token, JWKS and userinfo URLs follow the
//! caller, but `revocation_endpoint` stays on the front-channel hostname.

use url::{Origin, Url};

/// Where back-channel calls go when discovery names the issuer's (browser-facing) origin.
#[derive(Debug, Clone)]
pub struct BackChannel {
    /// `Some((issuer origin, discovery URL))` when endpoints on the issuer's origin move.
    reroute: Option<(Origin, Url)>,
}

impl BackChannel {
    /// The routing for this issuer, discovery URL and the token endpoint discovery named.
    pub fn new(issuer: &str, discovery_url: &Url, token_endpoint: &Url) -> Self {
        let discovery = discovery_url.origin();
        let reroute = Url::parse(issuer)
            .ok()
            .map(|issuer| issuer.origin())
            .filter(|issuer| *issuer != discovery && token_endpoint.origin() == discovery)
            .map(|issuer| (issuer, discovery_url.clone()));
        Self { reroute }
    }

    /// `endpoint`, moved onto the discovery URL's origin when it is on the issuer's origin.
    pub fn route(&self, endpoint: Url) -> Url {
        let Some((issuer, discovery)) = &self.reroute else {
            return endpoint;
        };
        if endpoint.origin() != *issuer {
            return endpoint;
        }
        let mut routed = endpoint.clone();
        let moved = routed.set_scheme(discovery.scheme()).is_ok()
            && routed.set_host(discovery.host_str()).is_ok()
            && routed.set_port(discovery.port()).is_ok();
        if moved {
            tracing::debug!(
                from = %endpoint.origin().ascii_serialization(),
                to = %routed.origin().ascii_serialization(),
                path = endpoint.path(),
                "back-channel endpoint on the issuer's origin, called through the discovery origin"
            );
            routed
        } else {
            endpoint
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    const ISSUER: &str = "http://localhost:8081/realms/vestibule";

    fn compose() -> BackChannel {
        BackChannel::new(
            ISSUER,
            &url("http://keycloak:8080/realms/vestibule/.well-known/openid-configuration"),
            &url("http://keycloak:8080/realms/vestibule/protocol/openid-connect/token"),
        )
    }

    #[test]
    fn an_endpoint_on_the_issuer_origin_moves_to_the_discovery_origin_keeping_its_path() {
        let routed = compose().route(url(
            "http://localhost:8081/realms/vestibule/protocol/openid-connect/revoke?x=1",
        ));
        assert_eq!(
            routed.as_str(),
            "http://keycloak:8080/realms/vestibule/protocol/openid-connect/revoke?x=1"
        );
    }

    #[test]
    fn an_endpoint_already_on_another_origin_is_left_alone() {
        let token = url("http://keycloak:8080/realms/vestibule/protocol/openid-connect/token");
        assert_eq!(compose().route(token.clone()), token);
        let elsewhere = url("https://keys.example.com/jwks");
        assert_eq!(compose().route(elsewhere.clone()), elsewhere);
    }

    #[test]
    fn nothing_moves_when_discovery_is_on_the_issuer_origin() {
        let back_channel = BackChannel::new(
            ISSUER,
            &url("http://localhost:8081/realms/vestibule/.well-known/openid-configuration"),
            &url("http://localhost:8081/realms/vestibule/protocol/openid-connect/token"),
        );
        let revoke = url("http://localhost:8081/realms/vestibule/protocol/openid-connect/revoke");
        assert_eq!(back_channel.route(revoke.clone()), revoke);
    }

    #[test]
    fn nothing_moves_when_the_token_endpoint_is_not_on_the_discovery_origin() {
        // A copy of the discovery document served from elsewhere: its origin is no way to
        // the provider.
        let back_channel = BackChannel::new(
            ISSUER,
            &url("http://mirror.internal/vestibule/openid-configuration"),
            &url("http://localhost:8081/realms/vestibule/protocol/openid-connect/token"),
        );
        let revoke = url("http://localhost:8081/realms/vestibule/protocol/openid-connect/revoke");
        assert_eq!(back_channel.route(revoke.clone()), revoke);
        let jwks = url("http://localhost:8081/realms/vestibule/protocol/openid-connect/certs");
        assert_eq!(back_channel.route(jwks.clone()), jwks);
    }

    #[test]
    fn scheme_and_default_port_follow_the_discovery_url() {
        let back_channel = BackChannel::new(
            "https://login.example.com/tenant",
            &url("http://idp.internal/tenant/.well-known/openid-configuration"),
            &url("http://idp.internal/tenant/token"),
        );
        assert_eq!(
            back_channel
                .route(url("https://login.example.com/tenant/token"))
                .as_str(),
            "http://idp.internal/tenant/token"
        );
        // Same host, other port: a different origin, so it does not move.
        assert_eq!(
            back_channel
                .route(url("https://login.example.com:8443/tenant/token"))
                .as_str(),
            "https://login.example.com:8443/tenant/token"
        );
    }
}
