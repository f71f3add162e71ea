//! Provider profiles (`oidc.provider`): one table of the defaults each provider needs
//! (scopes, extra authorization parameters, logout strategy and template, the claim holding
//! the logout hint) and the issuer shapes that name a provider unambiguously.
//!
//! A profile is data, never a code path: nothing else asks which provider it talks to, only
//! what the settings (the profile's defaults, each overridable by its ordinary key) say.

use url::Url;

use super::LogoutStrategy;

/// One provider's defaults, applied to every `[oidc]` key the configuration leaves out.
#[derive(Debug, PartialEq, Eq)]
pub struct Profile {
    /// `oidc.provider`'s value.
    pub name: &'static str,
    /// `oidc.scopes`.
    pub scopes: &'static [&'static str],
    /// `oidc.prompt`; `None`: the generic rule (`consent` with `offline_access`).
    pub prompt: Option<&'static str>,
    /// `oidc.extra_auth_params`.
    pub extra_auth_params: &'static [(&'static str, &'static str)],
    /// `oidc.logout`.
    pub logout: LogoutStrategy,
    /// `oidc.logout_url`: the logout URL template.
    pub logout_url: Option<&'static str>,
    /// `oidc.logout_hint_claim`: the session claim sent as `logout_hint` on RP-initiated logout.
    pub logout_hint_claim: Option<&'static str>,
    /// Whether the provider issues an access token for APIs only when `oidc.audience` names
    /// one (Auth0: without it, an opaque token for its UserInfo alone). Warned about, at
    /// start-up and by `vestibule doctor`, when unset.
    pub audience_needed: bool,
    /// Issuers of this provider's shape; one matching only this profile names it.
    issuer_shapes: &'static [IssuerShape],
}

/// A shape of issuer URL that only one provider uses.
#[derive(Debug, PartialEq, Eq)]
enum IssuerShape {
    /// The host is exactly this.
    Host(&'static str),
    /// The host ends with this (a subdomain of the provider's).
    HostSuffix(&'static str),
    /// The host starts and ends with these (a region between them).
    HostAround(&'static str, &'static str),
    /// The path ends with these segments (`*`: any one non-empty segment), a trailing slash
    /// aside.
    PathEnd(&'static [&'static str]),
}

const SCOPES_WITH_OFFLINE_ACCESS: &[&str] = &["openid", "profile", "email", "offline_access"];
const SCOPES_WITHOUT_OFFLINE_ACCESS: &[&str] = &["openid", "profile", "email"];

/// The profile of a provider Vestibule knows nothing particular about: today's defaults.
pub const GENERIC: Profile = Profile {
    name: "generic",
    scopes: SCOPES_WITH_OFFLINE_ACCESS,
    prompt: None,
    extra_auth_params: &[],
    logout: LogoutStrategy::RpInitiated,
    logout_url: None,
    logout_hint_claim: None,
    audience_needed: false,
    issuer_shapes: &[],
};

/// Every profile, `generic` first.
pub const PROFILES: &[Profile] = &[
    GENERIC,
    Profile {
        name: "keycloak",
        // With offline_access Keycloak issues offline tokens, which outlive its SSO session,
        // its logout and an administrator's sign-out; it issues refresh tokens without it.
        scopes: SCOPES_WITHOUT_OFFLINE_ACCESS,
        issuer_shapes: &[IssuerShape::PathEnd(&["realms", "*"])],
        ..GENERIC
    },
    Profile {
        name: "entra",
        // No refresh token without offline_access.
        logout_hint_claim: Some("login_hint"),
        issuer_shapes: &[
            IssuerShape::Host("login.microsoftonline.com"),
            IssuerShape::HostSuffix(".b2clogin.com"),
        ],
        ..GENERIC
    },
    Profile {
        name: "auth0",
        // end_session_endpoint only when the tenant turned RP-initiated logout on.
        logout_url: Some(
            "{authorization_origin}/v2/logout?client_id={client_id}&returnTo={post_logout_redirect_uri}",
        ),
        // Without an audience Auth0 issues an opaque token good for /userinfo only.
        audience_needed: true,
        issuer_shapes: &[IssuerShape::HostSuffix(".auth0.com")],
        ..GENERIC
    },
    Profile {
        name: "google",
        // Google refuses offline_access; a refresh token needs access_type=offline, and comes
        // again after the first consent only with prompt=consent.
        scopes: SCOPES_WITHOUT_OFFLINE_ACCESS,
        prompt: Some("consent"),
        extra_auth_params: &[("access_type", "offline")],
        // No end_session_endpoint: the session ends here, the refresh token is revoked.
        logout: LogoutStrategy::Local,
        issuer_shapes: &[IssuerShape::Host("accounts.google.com")],
        ..GENERIC
    },
    Profile {
        name: "cognito",
        // Cognito refuses scopes an app client does not allow, offline_access among them,
        // and issues refresh tokens to the code flow without it.
        scopes: SCOPES_WITHOUT_OFFLINE_ACCESS,
        // Logout is at the hosted UI's domain (not the issuer's), not RP-initiated.
        logout: LogoutStrategy::UrlTemplate,
        logout_url: Some(
            "{authorization_origin}/logout?client_id={client_id}&logout_uri={post_logout_redirect_uri}",
        ),
        issuer_shapes: &[IssuerShape::HostAround("cognito-idp.", ".amazonaws.com")],
        ..GENERIC
    },
    Profile {
        name: "okta",
        issuer_shapes: &[
            IssuerShape::HostSuffix(".okta.com"),
            IssuerShape::HostSuffix(".oktapreview.com"),
        ],
        ..GENERIC
    },
    Profile {
        name: "zitadel",
        issuer_shapes: &[IssuerShape::HostSuffix(".zitadel.cloud")],
        ..GENERIC
    },
    Profile {
        name: "authentik",
        issuer_shapes: &[IssuerShape::PathEnd(&["application", "o", "*"])],
        ..GENERIC
    },
];

impl Profile {
    /// The profile called `name` (`oidc.provider`).
    pub fn named(name: &str) -> Option<&'static Profile> {
        PROFILES.iter().find(|profile| profile.name == name)
    }

    /// The names of every profile, for an error message.
    pub fn names() -> String {
        PROFILES
            .iter()
            .map(|profile| format!("\"{}\"", profile.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The profile an issuer's shape names, when exactly one does (a custom domain names
    /// none: `generic`).
    pub fn detect(issuer: &Url) -> Option<&'static Profile> {
        let mut matching = PROFILES.iter().filter(|profile| {
            profile
                .issuer_shapes
                .iter()
                .any(|shape| shape.matches(issuer))
        });
        let profile = matching.next()?;
        matching.next().is_none().then_some(profile)
    }
}

impl IssuerShape {
    fn matches(&self, issuer: &Url) -> bool {
        let host = issuer.host_str().unwrap_or_default();
        match self {
            IssuerShape::Host(name) => host == *name,
            IssuerShape::HostSuffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            IssuerShape::HostAround(prefix, suffix) => {
                host.len() > prefix.len() + suffix.len()
                    && host.starts_with(prefix)
                    && host.ends_with(suffix)
                    && !host[prefix.len()..host.len() - suffix.len()].contains('.')
            }
            IssuerShape::PathEnd(expected) => {
                let path = issuer.path();
                let segments: Vec<&str> =
                    path.strip_suffix('/').unwrap_or(path).split('/').collect();
                segments.len() > expected.len()
                    && segments[segments.len() - expected.len()..]
                        .iter()
                        .zip(expected.iter())
                        .all(|(segment, wanted)| {
                            !segment.is_empty() && (*wanted == "*" || segment == wanted)
                        })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detected(issuer: &str) -> &'static str {
        Profile::detect(&Url::parse(issuer).unwrap()).map_or("generic", |profile| profile.name)
    }

    #[test]
    fn an_issuer_names_its_provider_where_its_shape_is_unambiguous() {
        for (issuer, profile) in [
            (
                "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
                "entra",
            ),
            ("https://login.microsoftonline.com/{tenantid}/v2.0", "entra"),
            (
                "https://contoso.b2clogin.com/tfp/contoso.onmicrosoft.com/b2c_1_signin/v2.0/",
                "entra",
            ),
            ("https://accounts.google.com", "google"),
            (
                "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123",
                "cognito",
            ),
            ("https://dev-abc123.us.auth0.com/", "auth0"),
            ("https://example.auth0.com/", "auth0"),
            ("https://dev-123456.okta.com/oauth2/default", "okta"),
            ("https://dev-123456.oktapreview.com", "okta"),
            ("https://my-org-abc.zitadel.cloud", "zitadel"),
            ("https://sso.example.com/realms/staff", "keycloak"),
            ("https://sso.example.com/auth/realms/staff/", "keycloak"),
            ("http://localhost:8081/realms/vestibule", "keycloak"),
            (
                "https://authentik.example.com/application/o/vestibule/",
                "authentik",
            ),
            // Custom domains and look-alikes name nobody.
            ("https://login.example.com", "generic"),
            ("https://auth.example.com/oauth2/default", "generic"),
            ("https://login.microsoftonline.com.evil.example", "generic"),
            ("https://auth0.com/", "generic"),
            ("https://notauth0.com/", "generic"),
            ("https://cognito-idp.a.b.amazonaws.com/pool", "generic"),
            ("https://sso.example.com/realms/", "generic"),
            ("https://sso.example.com/realms/staff/extra", "generic"),
            ("https://authentik.example.com/application/o/", "generic"),
            ("http://127.0.0.1:9000", "generic"),
            // Two shapes at once (Keycloak on an Okta host) are ambiguous: generic.
            ("https://x.okta.com/realms/staff", "generic"),
        ] {
            assert_eq!(detected(issuer), profile, "{issuer}");
        }
    }

    #[test]
    fn every_profile_has_a_unique_name_and_generic_keeps_todays_defaults() {
        for profile in PROFILES {
            assert_eq!(Profile::named(profile.name), Some(profile));
            assert!(profile.scopes.contains(&"openid"), "{}", profile.name);
        }
        assert_eq!(Profile::named("Google"), None);
        assert_eq!(
            GENERIC.scopes,
            ["openid", "profile", "email", "offline_access"]
        );
        assert_eq!(GENERIC.logout, LogoutStrategy::RpInitiated);
        assert!(GENERIC.extra_auth_params.is_empty() && GENERIC.logout_url.is_none());
        assert!(GENERIC.prompt.is_none() && GENERIC.logout_hint_claim.is_none());
        assert_eq!(PROFILES.len(), 9);
    }
}
