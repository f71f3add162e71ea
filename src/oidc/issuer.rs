//! Which `iss` values are this provider's: the configured issuer, the other spellings it is
//! known by (`oidc.issuer_aliases`: Google's `accounts.google.com`), and, when discovery names
//! a multi-tenant template (Entra ID's `https://login.microsoftonline.com/{tenantid}/v2.0`),
//! the template filled with the token's own tenant claim, for a tenant in
//! `oidc.allowed_tenants`.
//!
//! Pure rules over strings and verified claims: no network, no clock. It never accepts an `iss`
//! that no configured key names, and a template only with an allow-list (empty means
//! single-tenant: such a discovery document is refused).

use serde_json::{Map, Value};

/// Whether a discovery document naming `discovered` as its issuer fits a client configured with
/// `issuer` and `allowed_tenants`: `Ok(false)` the same issuer, `Ok(true)` a multi-tenant
/// template the issuer instantiates with tenants allowed, `Err` why not (as discovery refuses
/// it). For checks that run before any provider client exists (`vestibule doctor`).
pub fn discovered_issuer_fits(
    issuer: &str,
    allowed_tenants: &[String],
    discovered: &str,
) -> Result<bool, String> {
    IssuerRule::discovered(issuer, allowed_tenants, discovered).map(|template| template.is_some())
}

/// A placeholder a discovery issuer may hold, and the claim of a token that fills it.
#[derive(Debug, PartialEq, Eq)]
struct Placeholder {
    /// The text in the discovery document's `issuer`.
    text: &'static str,
    /// The token claim whose value stands in for it.
    claim: &'static str,
}

/// The placeholders known: Entra ID's multi-tenant issuer (`{tenantid}`, filled by `tid`).
const PLACEHOLDERS: &[Placeholder] = &[Placeholder {
    text: "{tenantid}",
    claim: "tid",
}];

/// A discovery issuer holding one placeholder (`…/{tenantid}/v2.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IssuerTemplate {
    /// The issuer up to the placeholder.
    prefix: String,
    /// The issuer after the placeholder.
    suffix: String,
    placeholder: &'static Placeholder,
}

impl IssuerTemplate {
    /// The template in `issuer`, if it holds exactly one known placeholder.
    pub(super) fn parse(issuer: &str) -> Option<Self> {
        PLACEHOLDERS.iter().find_map(|placeholder| {
            let (prefix, suffix) = issuer.split_once(placeholder.text)?;
            (!suffix.contains(placeholder.text)).then(|| Self {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
                placeholder,
            })
        })
    }

    /// The claim that fills the placeholder (`tid`).
    pub(super) fn claim(&self) -> &'static str {
        self.placeholder.claim
    }

    /// The template with `value` in place of the placeholder.
    fn fill(&self, value: &str) -> String {
        format!("{}{value}{}", self.prefix, self.suffix)
    }

    /// What `iss` holds where the template has its placeholder: one non-empty path segment.
    fn value_in<'a>(&self, iss: &'a str) -> Option<&'a str> {
        iss.strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)
            .filter(|value| !value.is_empty() && !value.contains(['/', '?', '#']))
    }
}

/// Whose issuer a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenIssuer {
    /// The configured issuer, or one of its aliases.
    Configured,
    /// The discovery template filled with this tenant (the token's own claim).
    Tenant(String),
}

/// The rule a token's `iss` is checked against: the configured issuer and aliases, and the
/// tenant template discovery named (if any) with its allow-list.
#[derive(Clone, Copy)]
pub(super) struct IssuerRule<'a> {
    /// `oidc.issuer`.
    pub issuer: &'a str,
    /// `oidc.issuer_aliases`.
    pub aliases: &'a [String],
    /// `oidc.allowed_tenants`.
    pub allowed_tenants: &'a [String],
    /// The template discovery named, if its `issuer` was one.
    pub template: Option<&'a IssuerTemplate>,
}

impl IssuerRule<'_> {
    /// What discovery's `issuer` means under this configuration: `None` when it is the
    /// configured issuer, a template when it is one that the configured issuer instantiates
    /// (`…/organizations/v2.0` for `…/{tenantid}/v2.0`) and tenants are allowed; else why not.
    pub(super) fn discovered(
        issuer: &str,
        allowed_tenants: &[String],
        discovered: &str,
    ) -> Result<Option<IssuerTemplate>, String> {
        if discovered == issuer {
            return Ok(None);
        }
        let differs = || {
            format!(
                "discovery issuer {discovered:?} differs from configured oidc.issuer {issuer:?}"
            )
        };
        let template = IssuerTemplate::parse(discovered).ok_or_else(differs)?;
        if template.value_in(issuer).is_none() {
            return Err(differs());
        }
        if allowed_tenants.is_empty() {
            return Err(format!(
                "discovery issuer {discovered:?} is a multi-tenant template (its tokens name \
                 their tenant in `{}`): list the tenants to accept in oidc.allowed_tenants, or \
                 configure a tenant's own issuer",
                template.claim()
            ));
        }
        Ok(Some(template))
    }

    /// Checks the `iss` of verified `claims`: the configured issuer or an alias, or the
    /// template filled with the token's own tenant claim, for an allowed tenant.
    pub(super) fn accept(&self, claims: &Map<String, Value>) -> Result<TokenIssuer, String> {
        let Some(iss) = claims.get("iss").and_then(Value::as_str) else {
            return Err("no iss".into());
        };
        if self.is_configured(iss) {
            return Ok(TokenIssuer::Configured);
        }
        let Some(template) = self.template else {
            return Err("iss names another issuer".into());
        };
        let claim = template.claim();
        let Some(tenant) = claims
            .get(claim)
            .and_then(Value::as_str)
            .filter(|tenant| !tenant.is_empty())
        else {
            return Err(format!("iss names another issuer, and there is no {claim}"));
        };
        if !self.allowed_tenants.iter().any(|allowed| allowed == tenant) {
            return Err(format!(
                "{claim} {:?} is not in oidc.allowed_tenants",
                tenant.chars().take(64).collect::<String>()
            ));
        }
        if template.fill(tenant) != iss {
            return Err(format!(
                "iss is not the discovery issuer for the token's own {claim}"
            ));
        }
        Ok(TokenIssuer::Tenant(tenant.to_owned()))
    }

    /// Whether a bare `iss` (front-channel logout, an authorization response, a third-party
    /// login) is this provider's: the configured issuer, an alias, or the template filled with
    /// an allowed tenant.
    pub(super) fn accepts_iss(&self, iss: &str) -> bool {
        self.is_configured(iss)
            || self
                .template
                .and_then(|template| template.value_in(iss))
                .is_some_and(|tenant| self.allowed_tenants.iter().any(|allowed| allowed == tenant))
    }

    /// Whether a refreshed ID token's `claims` are from the same issuer (and tenant) as the
    /// `previous` ID token's (OIDC Core §12.2); both must pass [`IssuerRule::accept`].
    pub(super) fn same_issuer(
        &self,
        previous: &Map<String, Value>,
        claims: &Map<String, Value>,
    ) -> Result<(), String> {
        let now = self.accept(claims)?;
        match self.accept(previous) {
            Ok(before) if before == now => Ok(()),
            Ok(_) => Err("the refreshed ID token is from another tenant than the login's".into()),
            Err(why) => Err(format!("the login's ID token no longer passes: {why}")),
        }
    }

    fn is_configured(&self, iss: &str) -> bool {
        iss == self.issuer || self.aliases.iter().any(|alias| alias == iss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIGURED: &str = "https://login.example/organizations/v2.0";
    const TEMPLATE: &str = "https://login.example/{tenantid}/v2.0";

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn tenants() -> Vec<String> {
        vec!["t-1".into(), "t-2".into()]
    }

    #[test]
    fn a_template_is_one_known_placeholder_and_fills_with_its_claim() {
        let template = IssuerTemplate::parse(TEMPLATE).unwrap();
        assert_eq!(template.claim(), "tid");
        assert_eq!(template.fill("t-1"), "https://login.example/t-1/v2.0");
        assert_eq!(
            template.value_in("https://login.example/t-1/v2.0"),
            Some("t-1")
        );
        assert_eq!(template.value_in("https://login.example//v2.0"), None);
        assert_eq!(template.value_in("https://login.example/a/b/v2.0"), None);
        assert_eq!(IssuerTemplate::parse("https://login.example/t/v2.0"), None);
        assert_eq!(
            IssuerTemplate::parse("https://x/{tenantid}/{tenantid}"),
            None
        );
    }

    #[test]
    fn discovery_names_the_configured_issuer_or_a_template_it_instantiates() {
        assert_eq!(
            IssuerRule::discovered(CONFIGURED, &[], CONFIGURED),
            Ok(None)
        );
        assert!(
            IssuerRule::discovered(CONFIGURED, &tenants(), TEMPLATE)
                .unwrap()
                .is_some()
        );
        let single_tenant = IssuerRule::discovered(CONFIGURED, &[], TEMPLATE).unwrap_err();
        assert!(
            single_tenant.contains("oidc.allowed_tenants"),
            "{single_tenant}"
        );
        let elsewhere = IssuerRule::discovered(
            CONFIGURED,
            &tenants(),
            "https://other.example/{tenantid}/v2.0",
        )
        .unwrap_err();
        assert!(elsewhere.contains("differs"), "{elsewhere}");
        assert!(IssuerRule::discovered(CONFIGURED, &tenants(), "https://other.example").is_err());
    }

    #[test]
    fn a_tenant_token_names_the_template_filled_with_its_own_allowed_tid() {
        let template = IssuerTemplate::parse(TEMPLATE).unwrap();
        let allowed = tenants();
        let rule = IssuerRule {
            issuer: CONFIGURED,
            aliases: &[],
            allowed_tenants: &allowed,
            template: Some(&template),
        };
        let ok = claims(json!({ "iss": "https://login.example/t-1/v2.0", "tid": "t-1" }));
        assert_eq!(rule.accept(&ok), Ok(TokenIssuer::Tenant("t-1".into())));
        let cases = [
            (
                "no tid",
                json!({ "iss": "https://login.example/t-1/v2.0" }),
                "no tid",
            ),
            (
                "tenant not allowed",
                json!({ "iss": "https://login.example/t-3/v2.0", "tid": "t-3" }),
                "not in oidc.allowed_tenants",
            ),
            (
                "iss of another allowed tenant",
                json!({ "iss": "https://login.example/t-2/v2.0", "tid": "t-1" }),
                "own tid",
            ),
            (
                "the raw template",
                json!({ "iss": TEMPLATE, "tid": "t-1" }),
                "own tid",
            ),
            ("no iss", json!({ "tid": "t-1" }), "no iss"),
        ];
        for (what, token, reason) in cases {
            let refused = rule.accept(&claims(token)).unwrap_err();
            assert!(refused.contains(reason), "{what}: {refused}");
        }
        assert!(rule.accepts_iss("https://login.example/t-2/v2.0"));
        assert!(!rule.accepts_iss("https://login.example/t-3/v2.0"));
        assert!(rule.accepts_iss(CONFIGURED));
    }

    #[test]
    fn without_a_template_only_the_issuer_and_its_aliases_are_accepted() {
        let aliases = vec!["accounts.example".to_owned()];
        let allowed = tenants();
        let rule = IssuerRule {
            issuer: "https://accounts.example",
            aliases: &aliases,
            allowed_tenants: &allowed,
            template: None,
        };
        for iss in ["https://accounts.example", "accounts.example"] {
            assert_eq!(
                rule.accept(&claims(json!({ "iss": iss }))),
                Ok(TokenIssuer::Configured)
            );
            assert!(rule.accepts_iss(iss));
        }
        assert!(
            rule.accept(&claims(json!({ "iss": "http://accounts.example" })))
                .is_err()
        );
        assert!(!rule.accepts_iss("https://accounts.example/"));
        let no_aliases = IssuerRule {
            aliases: &[],
            ..rule
        };
        assert!(!no_aliases.accepts_iss("accounts.example"));
    }

    #[test]
    fn a_refreshed_id_token_keeps_the_logins_tenant() {
        let template = IssuerTemplate::parse(TEMPLATE).unwrap();
        let allowed = tenants();
        let rule = IssuerRule {
            issuer: CONFIGURED,
            aliases: &[],
            allowed_tenants: &allowed,
            template: Some(&template),
        };
        let t1 = claims(json!({ "iss": "https://login.example/t-1/v2.0", "tid": "t-1" }));
        let t2 = claims(json!({ "iss": "https://login.example/t-2/v2.0", "tid": "t-2" }));
        assert_eq!(rule.same_issuer(&t1, &t1), Ok(()));
        assert!(
            rule.same_issuer(&t1, &t2)
                .unwrap_err()
                .contains("another tenant")
        );
        let removed = IssuerRule {
            allowed_tenants: &allowed[1..],
            ..rule
        };
        assert!(removed.same_issuer(&t1, &t2).is_err());
    }
}
